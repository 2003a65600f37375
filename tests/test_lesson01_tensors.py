"""01_tensors: each check accepts an independent correct answer and rejects the usual mistakes by name."""
import pytest
import torch
import torch.nn.functional as F
from numpy import broadcast_shapes as np_broadcast_shapes  # aliases bound before any check runs
from torch import broadcast_shapes as torch_broadcast_shapes

from verdicts import assert_passes, assert_rejects
from grader import evaluate


# --- broadcast_shape ---------------------------------------------------------------------------------------

def broadcast_shape_ok(a, b):
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        p = a[-i] if i <= len(a) else 1
        q = b[-i] if i <= len(b) else 1
        if p != q and 1 not in (p, q):
            raise ValueError(f"sizes {p} and {q} do not broadcast")
        out.append(q if p == 1 else p)
    return tuple(reversed(out))


def bs_left_aligned(a, b):
    n = max(len(a), len(b))
    a, b = tuple(a) + (1,) * (n - len(a)), tuple(b) + (1,) * (n - len(b))
    return broadcast_shape_ok(a, b)


def bs_zip_truncates(a, b):
    out = []
    for p, q in zip(reversed(a), reversed(b)):
        if p != q and 1 not in (p, q):
            raise ValueError("incompatible")
        out.append(max(p, q))
    return tuple(reversed(out))


def bs_max(a, b):
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b)):
        raise ValueError("incompatible")
    return tuple(max(p, q) for p, q in zip(a, b))


def bs_never_raises(a, b):
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return tuple(q if p == 1 else p for p, q in zip(a, b))


def bs_runtime_error(a, b):
    try:
        return broadcast_shape_ok(a, b)
    except ValueError:
        raise RuntimeError("shapes do not broadcast") from None


def bs_returns_size(a, b):
    return torch.Size(broadcast_shape_ok(a, b))


def bs_returns_list(a, b):
    return list(broadcast_shape_ok(a, b))


def bs_uses_numpy(a, b):
    import numpy as np
    return tuple(int(d) for d in np.broadcast_shapes(a, b))


def bs_uses_torch(a, b):
    try:
        return tuple(torch.broadcast_shapes(a, b))
    except RuntimeError as e:
        raise ValueError(str(e)) from None


def bs_torch_alias(a, b):
    try:
        return tuple(torch_broadcast_shapes(a, b))
    except RuntimeError as e:
        raise ValueError(str(e)) from None


def bs_numpy_alias(a, b):
    return tuple(int(d) for d in np_broadcast_shapes(a, b))


def bs_swallows_refusal(a, b):
    try:
        return tuple(torch_broadcast_shapes(a, b))
    except BaseException:  # catches the refusal itself; the call is still on record
        return broadcast_shape_ok(a, b)


# --- pairwise_sq_dists -------------------------------------------------------------------------------------

def sq_dists_ok(x, y):
    d = x.unsqueeze(1) - y.unsqueeze(0)  # (n, m, d)
    return (d * d).sum(dim=2)


def sq_dists_expanded(x, y):
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ y.T + y.pow(2).sum(1)).clamp_min(0)


def sq_dists_not_squared(x, y):
    return (x[:, None] - y[None]).pow(2).sum(-1).sqrt()


def sq_dists_cdist(x, y):
    return torch.cdist(x, y) ** 2


def sq_dists_loop(x, y):
    rows = [((x[i] - y) ** 2).sum(1) for i in range(x.shape[0])]
    return torch.stack(rows) if rows else x.new_zeros(0, y.shape[0])


def sq_dists_cross_term(x, y):
    return (x * x).sum(1, keepdim=True) - x @ y.T + (y * y).sum(1)


def sq_dists_no_keepdim(x, y):
    return (x * x).sum(1) - 2 * x @ y.T + (y * y).sum(1)  # (n,) broadcasts as a row, not a column


def sq_dists_forgot_sum(x, y):
    return (x[:, None] - y[None]) ** 2


def sq_dists_float32(x, y):
    return ((x[:, None] - y[None]) ** 2).sum(-1).float()


# --- one_hot -----------------------------------------------------------------------------------------------

def _one_hot_compare(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    return (labels.unsqueeze(-1) == torch.arange(k, device=labels.device)).to(torch.int64)


def one_hot_ok(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be in [0, {k})")
    return _one_hot_compare(labels, k)


def one_hot_no_range_check(labels, num_classes=-1):
    return _one_hot_compare(labels, num_classes)  # a label >= num_classes gives an all-zero row


def one_hot_eye_wraps(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    return torch.eye(k, dtype=torch.int64, device=labels.device)[labels]  # -1 picks the last row


def one_hot_scatter_off_by_one(labels, num_classes=-1):
    k = int(labels.max()) if num_classes == -1 else num_classes  # scatter_ then raises: index out of bounds
    return torch.zeros(*labels.shape, k, dtype=torch.int64, device=labels.device).scatter_(-1, labels[..., None], 1)


def one_hot_only_2d(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    out = torch.zeros(len(labels), k, dtype=torch.int64, device=labels.device)
    out[torch.arange(len(labels), device=labels.device), labels] = 1
    return out


def one_hot_scatter(labels, num_classes=-1):
    k = labels.max().item() + 1 if num_classes < 0 else num_classes
    out = torch.zeros(*labels.shape, k, dtype=torch.long, device=labels.device)
    return out.scatter_(-1, labels[..., None], 1)


def one_hot_eye(labels, num_classes=-1):
    k = labels.max().item() + 1 if num_classes < 0 else num_classes
    return torch.eye(k, device=labels.device)[labels]  # float32


def one_hot_off_by_one(labels, num_classes=-1):
    k = labels.max().item() if num_classes < 0 else num_classes
    return _one_hot_compare(labels, k)


def one_hot_class_dim_first(labels, num_classes=-1):
    return _one_hot_compare(labels, num_classes).movedim(-1, 0)


def one_hot_ignores_num_classes(labels, num_classes=-1):
    return _one_hot_compare(labels, -1)


def one_hot_forbidden(labels, num_classes=-1):
    return F.one_hot(labels, num_classes)


def one_hot_cpu_zeros(labels, num_classes=-1):
    k = labels.max().item() + 1 if num_classes < 0 else num_classes
    return torch.zeros(*labels.shape, k, dtype=torch.long).scatter_(-1, labels[..., None], 1)


def one_hot_unsqueeze_in_place(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    labels.unsqueeze_(-1)
    return torch.zeros(*labels.shape[:-1], k, dtype=torch.long, device=labels.device).scatter_(-1, labels, 1)


# --- causal_mask -------------------------------------------------------------------------------------------

def causal_mask_ok(n, device=None):
    i = torch.arange(n, device=device)
    return i.view(1, n) > i.view(n, 1)


def causal_mask_inverted(n, device=None):
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def causal_mask_diagonal(n, device=None):
    return torch.ones(n, n, dtype=torch.bool, device=device).triu()


def causal_mask_transposed(n, device=None):
    return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)


def causal_mask_ignores_device(n, device=None):
    return torch.ones(n, n, dtype=torch.bool).triu(1)


def causal_mask_float_inf(n, device=None):
    return torch.full((n, n), float("-inf"), device=device).triu(1)


# --- batched_matmul ----------------------------------------------------------------------------------------

def bmm_ok(a, b):
    return (a.unsqueeze(-1) * b.unsqueeze(1)).sum(dim=-2)  # (B, n, k, 1) * (B, 1, k, m) -> sum over k


def bmm_loop_over_k(a, b):
    out = a[:, :, :1] * b[:, :1, :]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k:k + 1] * b[:, k:k + 1, :]
    return out if a.shape[2] else out.zero_()


def bmm_at(a, b):
    return a @ b


def bmm_einsum(a, b):
    return torch.einsum("bik,bkj->bij", a, b)


def bmm_wrong_dim(a, b):
    return (a[:, :, :, None] * b[:, None, :, :]).sum(-1)


def bmm_swapped(a, b):
    return (b.unsqueeze(-1) * a.unsqueeze(1)).sum(dim=-2)


def bmm_b_as_rows(a, b):
    return (a[:, :, None, :] * b[:, None, :, :]).sum(-1)  # pairs a's rows with b's rows: a @ b.mT


def bmm_no_sum(a, b):
    return a[:, :, :, None] * b[:, None, :, :]


def bmm_cpu_accumulator(a, b):
    out = torch.zeros(a.shape[0], a.shape[1], b.shape[2], dtype=a.dtype)  # no device=: stays on the CPU
    for k in range(a.shape[2]):
        out = out + a[:, :, k, None] * b[:, None, k, :]
    return out


def bmm_baddbmm(a, b):
    return torch.baddbmm(a.new_zeros(a.shape[0], a.shape[1], b.shape[2]), a, b)


# --- gather_rows -------------------------------------------------------------------------------------------

def gather_rows_ok(x, idx):
    return x[torch.arange(x.shape[0], device=x.device), idx]


def gather_rows_gather(x, idx):
    return torch.gather(x, 1, idx.view(-1, 1)).view(-1)


def gather_rows_columns(x, idx):
    return x[:, idx]


def gather_rows_no_squeeze(x, idx):
    return x.gather(1, idx[:, None])


def gather_rows_dim0(x, idx):
    return x.gather(0, idx[:, None]).squeeze(1)


def gather_rows_tensor_of_items(x, idx):
    return torch.tensor([x[i, idx[i]].item() for i in range(len(idx))], dtype=x.dtype, device=x.device)


def gather_rows_masked_sum(x, idx):
    mask = torch.zeros_like(x)
    mask[torch.arange(len(idx), device=x.device), idx] = 1
    return (x * mask).sum(1)  # inf * 0 is nan


def gather_rows_cpu_arange(x, idx):
    rows = torch.arange(x.shape[0])
    return x.flatten()[rows * x.shape[1] + idx]


def gather_rows_cpu_arange_index(x, idx):
    return x[torch.arange(len(idx)), idx]  # a CPU index tensor: CUDA indexing accepts it (copies it over)


def gather_rows_index_through_a_list(x, idx):  # .tolist() has no values on meta: the rerun uses stand-ins
    return x.gather(1, torch.tensor(idx.tolist())[:, None])[:, 0]


def gather_rows_cpu_index(x, idx):
    index = torch.zeros(len(idx), 1, dtype=torch.long)  # made on the CPU: gather on a GPU refuses it
    index[:, 0] = idx
    return x.gather(1, index).squeeze(1)


# --- normalize ---------------------------------------------------------------------------------------------

def normalize_ok(x, dim=-1, eps=1e-12):
    norm = torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True)
    return x / torch.maximum(norm, torch.tensor(eps, dtype=x.dtype, device=x.device))


def normalize_method(x, dim=-1, eps=1e-12):
    return x / x.norm(dim=dim, keepdim=True).clamp(min=eps)


def normalize_plus_eps(x, dim=-1, eps=1e-12):
    return x / (torch.linalg.vector_norm(x, dim=dim, keepdim=True) + eps)


def normalize_no_keepdim(x, dim=-1, eps=1e-12):
    return x / torch.linalg.vector_norm(x, dim=dim).clamp_min(eps)


def normalize_sqrt(x, dim=-1, eps=1e-12):
    return x / (x * x).sum(dim, keepdim=True).sqrt().clamp_min(eps)


def normalize_ignores_dim(x, dim=-1, eps=1e-12):
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def normalize_in_place(x, dim=-1, eps=1e-12):
    x /= torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps)
    return x


def normalize_cpu_eps(x, dim=-1, eps=1e-12):
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return x / torch.maximum(norm, torch.full(norm.shape, eps, dtype=x.dtype))  # made on the CPU


def normalize_hand_sqrt(x, dim=-1, eps=1e-12):
    return x / torch.sqrt((x * x).sum(dim, keepdim=True))


def normalize_sqrt_clamped_before(x, dim=-1, eps=1e-12):
    return x / (x * x).sum(dim, keepdim=True).clamp_min(eps ** 2).sqrt()  # = max(norm, eps): right, finite


def normalize_forbidden(x, dim=-1, eps=1e-12):
    return F.normalize(x, dim=dim, eps=eps)


def normalize_no_clamp(x, dim=-1, eps=1e-12):
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True)


CORRECT = [
    (broadcast_shape_ok, "broadcast_shape"),
    (sq_dists_ok, "pairwise_sq_dists"), (sq_dists_expanded, "pairwise_sq_dists"),
    (one_hot_ok, "one_hot"), (one_hot_scatter, "one_hot"),
    (causal_mask_ok, "causal_mask"),
    (bmm_ok, "batched_matmul"), (bmm_loop_over_k, "batched_matmul"),
    (gather_rows_ok, "gather_rows"), (gather_rows_gather, "gather_rows"),
    (gather_rows_cpu_arange_index, "gather_rows"),
    (normalize_ok, "normalize"), (normalize_method, "normalize"), (normalize_sqrt_clamped_before, "normalize"),
]


@pytest.mark.parametrize("impl, name", CORRECT, ids=[f.__name__ for f, _ in CORRECT])
def test_independent_implementation_passes(impl, name):
    assert_passes(impl, name)


WRONG = [
    (bs_left_aligned, "broadcast_shape", ("lined up from the left",)),
    (bs_left_aligned, "broadcast_shape", ("sizes 5 and 3", "shapes line up on the right (trailing dimensions)")),
    (bs_zip_truncates, "broadcast_shape", ("zip() stops at the shorter",)),
    (bs_max, "broadcast_shape", ("size-0 dimension against a size-1",)),
    (bs_never_raises, "broadcast_shape", ("should raise ValueError", "returned normally")),
    (bs_runtime_error, "broadcast_shape", ("should raise ValueError", "RuntimeError")),
    (bs_returns_size, "broadcast_shape", ("should be a tuple, got Size",)),
    (bs_returns_list, "broadcast_shape", ("should be a tuple, got list",)),
    (bs_uses_torch, "broadcast_shape", ("called `torch.broadcast_shapes`, which this exercise forbids",)),
    (bs_uses_numpy, "broadcast_shape", ("called `numpy.broadcast_shapes`, which this exercise forbids",)),
    (bs_torch_alias, "broadcast_shape", ("called `torch.broadcast_shapes`, which this exercise forbids",)),
    (bs_numpy_alias, "broadcast_shape", ("called `numpy.broadcast_shapes`, which this exercise forbids",)),
    (bs_swallows_refusal, "broadcast_shape", ("called `torch.broadcast_shapes`, which this exercise forbids",)),
    (sq_dists_not_squared, "pairwise_sq_dists", ("not squared", "drop the sqrt")),
    (sq_dists_cdist, "pairwise_sq_dists", ("cdist", "forbids")),
    (sq_dists_loop, "pairwise_sq_dists", ("python loop over rows", "vectorise with broadcasting")),
    (sq_dists_cross_term, "pairwise_sq_dists", ("cross term is -2",)),
    (sq_dists_no_keepdim, "pairwise_sq_dists", ("without keepdim=true", "dropped")),
    (sq_dists_no_keepdim, "pairwise_sq_dists", ("|x|² lost its dimension", "keepdim=True")),
    (sq_dists_forgot_sum, "pairwise_sq_dists", ("extra trailing dimensions",)),
    (sq_dists_float32, "pairwise_sq_dists", ("expected dtype torch.float64", "float32")),
    (one_hot_eye, "one_hot", ("expected dtype torch.int64, got torch.float32",)),
    (one_hot_off_by_one, "one_hot", ("labels.max() + 1, not labels.max()",)),
    (one_hot_class_dim_first, "one_hot", ("the class dimension goes last",)),
    (one_hot_ignores_num_classes, "one_hot", ("num_classes=6 was given",)),
    (one_hot_forbidden, "one_hot", ("one_hot", "forbids")),
    (one_hot_no_range_check, "one_hot", ("all-zero row", "labels must be in [0, num_classes)", "raise")),
    (one_hot_eye_wraps, "one_hot", ("wraps -1", "labels must be in [0, num_classes)", "as f.one_hot does")),
    (one_hot_scatter_off_by_one, "one_hot", ("with num_classes=-1 there are labels.max() + 1 classes",)),
    (one_hot_only_2d, "one_hot", ("labels can have any shape, even 0-d",
                                  "labels.shape + (num_classes,)")),
    (one_hot_cpu_zeros, "one_hot", ("device=x.device",)),
    (one_hot_unsqueeze_in_place, "one_hot", ("changed input 0 in place — compute a new tensor",)),
    (causal_mask_inverted, "causal_mask", ("inverted",)),
    (causal_mask_diagonal, "causal_mask", ("the diagonal is masked", "attend to itself", "diagonal=1")),
    (causal_mask_transposed, "causal_mask", ("transposed",)),
    (causal_mask_ignores_device, "causal_mask", ("device='meta' was asked for", "on cpu")),
    (causal_mask_float_inf, "causal_mask", ("expected dtype torch.bool",)),
    (bmm_at, "batched_matmul", ("`matmul`", "forbids")),
    (bmm_einsum, "batched_matmul", ("`einsum`", "forbids")),
    (bmm_baddbmm, "batched_matmul", ("`baddbmm`", "forbids")),
    (bmm_cpu_accumulator, "batched_matmul", ("device=x.device",)),
    (bmm_wrong_dim, "batched_matmul", ("summed over m instead of k",)),
    (bmm_swapped, "batched_matmul", ("operands are swapped",)),
    (bmm_b_as_rows, "batched_matmul", ("b was transposed",)),
    (bmm_no_sum, "batched_matmul", ("the sum over k is missing",)),
    (gather_rows_columns, "gather_rows", ("x[:, idx] picks the idx columns of every row", "(n, n)",
                                          "pair each row with its own index")),
    (gather_rows_no_squeeze, "gather_rows", ("squeeze",)),
    (gather_rows_dim0, "gather_rows", ("gathered along dim 0",)),
    (gather_rows_masked_sum, "gather_rows", ("inf*0 into nan", "select the element")),
    (gather_rows_tensor_of_items, "gather_rows", ("does not track gradients",)),
    (gather_rows_cpu_arange, "gather_rows", ("device=x.device",)),
    (gather_rows_cpu_index, "gather_rows", ("`gather` combines a CPU tensor", "on a GPU this fails")),
    (gather_rows_index_through_a_list, "gather_rows", ("`gather` combines a CPU tensor", "on a GPU this fails")),
    (normalize_plus_eps, "normalize", ("norm + eps",)),
    (normalize_no_keepdim, "normalize", ("keepdim=True",)),
    (normalize_sqrt, "normalize", ("rows of zeros", "nan", "derivative of sqrt at 0 is infinite", "clamp")),
    (normalize_hand_sqrt, "normalize", ("0 / 0 at the all-zero vectors", "clamp_min(eps)")),
    (normalize_hand_sqrt, "normalize", ("derivative of sqrt at 0 is infinite", "vector_norm")),
    (normalize_ignores_dim, "normalize", ("normalised along dim 1", "use dim=0")),
    (normalize_in_place, "normalize", ("changed your input in place — compute a new tensor", "x /= n")),
    (normalize_cpu_eps, "normalize", ("device=x.device",)),
    (normalize_forbidden, "normalize", ("`normalize`", "forbids")),
    (normalize_no_clamp, "normalize", ("rows of zeros", "nan", "0 / 0 at the all-zero vectors")),
    (normalize_no_clamp, "normalize", ("divided by the norm itself", "max(norm, eps)")),
]


@pytest.mark.parametrize("wrong, name, fragments", WRONG,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(WRONG)])
def test_wrong_implementation_is_rejected(wrong, name, fragments):
    assert_rejects(wrong, name, *fragments)


def _failure_messages(obj, name: str) -> list[str]:
    return [c.message for c in evaluate(obj, name=name).cases if not c.passed and not c.skipped]


def test_a_masked_diagonal_is_never_called_inverted():
    """With n = 1 the whole mask is its diagonal: the message names the diagonal, never an inverted mask."""
    messages = _failure_messages(causal_mask_diagonal, "causal_mask")
    assert messages and not any("inverted" in m.splitlines()[0] for m in messages), messages


def test_hand_written_sqrt_is_diagnosed_as_sqrt_not_where():
    """The learner wrote no torch.where: the gradient message must not talk about one."""
    messages = _failure_messages(normalize_sqrt, "normalize")
    assert messages and not any("where" in m for m in messages), messages


def _stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["broadcast_shape", "pairwise_sq_dists", "one_hot", "causal_mask",
                                  "batched_matmul", "gather_rows", "normalize"])
def test_stub_is_not_attempted(name):
    report = evaluate(_stub, name=name)
    assert report.status == "not_attempted" and report.points == 0
