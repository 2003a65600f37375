"""Checks for 01_tensors."""
import functools

import torch
import torch.nn.functional as F

from grader.compare import Mismatch, expect_tensor, expect_value, known_mistake
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, untraced
from grader.tracing import Tracer

LESSON = "01_tensors"


# --- broadcast_shape ---------------------------------------------------------------------------------------

def _left_aligned(a, b):
    n = max(len(a), len(b))
    a, b = list(a) + [1] * (n - len(a)), list(b) + [1] * (n - len(b))
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _left_clash(a, b) -> tuple[int, int] | None:
    """The first pair of sizes that clash when the shapes are (wrongly) lined up from the left."""
    for p, q in zip(a, b):
        if p != q and 1 not in (p, q):
            return p, q
    return None


_RULE = "compare the sizes from the right, one pair at a time: equal → that size, one of them 1 → the other"


def _broadcast_diagnosis(got, a, b) -> str:
    if isinstance(got, (tuple, list)):
        got = tuple(got)
        if len(got) == min(len(a), len(b)) and len(a) != len(b):
            return " — the leading dimensions of the longer shape are missing: zip() stops at the shorter " \
                   "shape, so pad the shorter one with 1s on the left first"
        try:
            if got == _left_aligned(a, b) and got != tuple(torch.broadcast_shapes(a, b)):
                return " — the shapes were lined up from the left: broadcasting aligns the trailing " \
                       "(rightmost) dimensions"
        except RuntimeError:
            pass
        if 0 in a + b and 0 not in got:
            return " — a size-0 dimension against a size-1 one gives 0 (the 1 is stretched to 0); max() gives 1"
    return f" — {_RULE} (even to 0)"


_OWN_SHAPE = "compute the shape yourself, one dimension at a time"


def _random_shapes(t, compatible: bool):
    """Two random shapes that broadcast (or, with compatible=False, do not), often of different lengths."""
    ndim = t.unseen(t.integer(1, 5), 5, 8)
    out = [t.unseen(t.integer(2, 7), 10, 40) for _ in range(ndim)]
    a = [d if t.integer(0, 3) else 1 for d in out]
    b = [d if t.integer(0, 3) else 1 for d in out]
    cut = t.integer(0, ndim)  # leading dims dropped from one shape (right alignment keeps the rest in place)
    if not compatible:
        i = t.integer(cut, ndim)  # a dim that survives the cut
        a[i], b[i] = out[i], out[i] + t.integer(1, 4)
    if t.integer(0, 2):
        a = a[cut:]
    else:
        b = b[cut:]
    return tuple(a), tuple(b)


BROADCAST_OK = [((3, 1), (1, 4)), ((), ()), ((), (3,)), ((2, 3), ()), ((5, 1, 4), (3, 1)), ((1, 1), (1,)),
                ((7, 1, 1, 2), (6, 1)), ((0,), (1,)), ((1,), (0,)), ((2, 0, 3), (1, 3)), ((4, 1), (1, 0))]
BROADCAST_BAD = [((3,), (4,)), ((0,), (3,)), ((2, 3), (3, 2)), ((4, 2, 3), (3, 3)), ((1, 2), (8, 4, 3))]


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "Line the shapes up on the right: pad the shorter one with 1s on the left until both have the same "
    "length, then compare them one dimension at a time.",
    "For each pair of sizes (p, q): equal → that size; one of them is 1 → the other one (even if it is 0); "
    "otherwise raise ValueError.",
    "n = max(len(a), len(b)); a = (1,) * (n - len(a)) + tuple(a); same for b; then build the result with a "
    "loop over zip(a, b) and return tuple(result).",
], forbidden={"broadcast_tensors": _OWN_SHAPE, "broadcast_to": _OWN_SHAPE,
              # plain-Python helpers that would answer the question outright, under any alias
              "torch.broadcast_shapes": _OWN_SHAPE, "numpy.broadcast_shapes": _OWN_SHAPE,
              "numpy.broadcast_arrays": _OWN_SHAPE, "numpy.broadcast_to": _OWN_SHAPE})
def broadcast_shape(t, fn):
    pairs = BROADCAST_OK + [_random_shapes(t, True) for _ in range(4)]
    for a, b in pairs:
        expected = tuple(int(d) for d in torch.broadcast_shapes(a, b))
        with t.case(f"broadcast_shape({a}, {b}) → {expected}"):
            try:
                got = t.call(fn, a, b)
            except LearnerError as e:
                clash = _left_clash(a, b) if len(a) != len(b) else None
                if clash is None:
                    raise Mismatch(f"{e}\n→ these shapes do broadcast, to {expected} — {_RULE} (even to 0)") \
                        from None
                raise Mismatch(f"{e}\n→ these shapes do broadcast: shapes line up on the right (trailing "
                               f"dimensions), so pad the shorter one with 1s on the left — lined up from the left, "
                               f"{clash[0]} would meet {clash[1]}") from None
            try:
                expect_value(got, expected, what=f"broadcast_shape({a}, {b})")
            except Mismatch as e:
                raise Mismatch(e.message + _broadcast_diagnosis(got, a, b), e.detail) from None
    for a, b in BROADCAST_BAD + [_random_shapes(t, False) for _ in range(2)]:
        with t.case(f"broadcast_shape({a}, {b}) raises ValueError"):
            try:
                t.raises(ValueError, fn, a, b)
            except Mismatch as e:
                extra = ""
                if "returned normally" in e.message:
                    extra = " — two sizes that differ and are both not 1 cannot broadcast"
                    if 0 in a + b:
                        extra += " (0 against 3 is such a pair: only a 1 stretches)"
                raise Mismatch(e.message + extra) from None
    with t.case("a torch.Size works as an input, and the result is a plain tuple"):
        a, b = torch.Size([2, 1, 3]), torch.Size([4, 1])
        got = t.call(fn, a, b)
        try:
            expect_value(got, (2, 4, 3), what="broadcast_shape(torch.Size([2, 1, 3]), torch.Size([4, 1]))")
        except Mismatch as e:
            if "should" in e.message:
                raise Mismatch(f"{e.message} — build a tuple of ints: tuple(result)", e.detail) from None
            raise Mismatch(e.message + _broadcast_diagnosis(got, tuple(a), tuple(b)), e.detail) from None


# --- pairwise_sq_dists -------------------------------------------------------------------------------------

def count_torch_calls(fn, *args) -> int:
    """Driver: how many torch functions and Tensor methods fn(*args) calls."""
    with Tracer() as tracer:
        fn(*args)
    return len(tracer.called)


def _sq_dists(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # (n, 1, d) - (1, m, d) -> (n, m, d) -> (n, m)


def _explain_sq_dists(got, expected, args):
    x, y = args
    xx, yy, xy = (x * x).sum(1)[:, None], (y * y).sum(1)[None, :], x @ y.T
    return known_mistake(got, [
        ("distances, not squared distances — drop the sqrt",
         lambda: expected.sqrt()),
        ("the cross term is -2 x·y, not -x·y: |x - y|² = |x|² - 2 x·y + |y|²",
         lambda: xx + yy - xy),
        ("the sign of the cross term: |x - y|² = |x|² - 2 x·y + |y|²",
         lambda: xx + yy + 2 * xy),
        ("that is the L1 (Manhattan) distance — square the "
         "differences instead of taking abs",
         lambda: (x[:, None] - y[None]).abs().sum(-1)),
        ("|x|² lost its dimension: (x * x).sum(1) is (n,) and broadcasts as a row, so row i got every |x_j|² — "
         "keepdim=True keeps it a column (n, 1)",
         lambda: (xx.T + yy - 2 * xy) if len(x) == len(y) else None),
    ])


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Give x and y dimensions of size 1 so that they broadcast against each other: x[:, None, :] is (n, 1, d) "
    "and y[None, :, :] is (1, m, d).",
    "Their difference is (n, m, d): square it and sum over the last dimension to get (n, m). No Python loop.",
    "For big inputs the (n, m, d) difference is huge; the same numbers come from "
    "|x|² - 2 x·yᵀ + |y|²: (x * x).sum(1, keepdim=True) - 2 * x @ y.T + (y * y).sum(1) — clamp_min(0) "
    "removes tiny negative round-off.",
], forbidden={"cdist": "build it from broadcasting: (x[:, None] - y[None]) ** 2, summed over the last dim"})
def pairwise_sq_dists(t, fn):
    for n, m, d in [(5, 7, 3), (1, 4, 2), (6, 1, 1), (4, 4, 5), (0, 3, 2)]:
        x, y = t.randn(n, d), t.randn(m, d)
        t.compare(f"x {(n, d)}, y {(m, d)}", fn, (x, y), _sq_dists, grad=True, explain=_explain_sq_dists)
    x = t.randn(6, 4) * 1e3
    t.compare("large values (x and y around 1e3)", fn, (x, t.randn(5, 4) * 1e3), _sq_dists,
              explain=_explain_sq_dists)
    x = t.randn(4, 3)
    y = torch.cat([x[[2, 0]], t.randn(3, 3)])
    t.compare("y shares rows with x: those distances are exactly 0", fn, (x, y), _sq_dists, grad=True,
              explain=_explain_sq_dists)
    t.compare("float32 stays float32", fn, (t.randn(3, 2, dtype=torch.float32), t.randn(5, 2, dtype=torch.float32)),
              _sq_dists, explain=_explain_sq_dists)
    with t.case("vectorised: the number of torch calls does not grow with n and m"):
        small = t.call(count_torch_calls, fn, t.randn(4, 3), t.randn(3, 3))
        large = t.call(count_torch_calls, fn, t.randn(32, 3), t.randn(24, 3))
        if large > small + 16:
            raise Mismatch(f"looks like a Python loop over rows: {small} torch calls for n=4, m=3 but {large} for "
                           "n=32, m=24 — vectorise with broadcasting (n = m = 2000 must take well under a second)")


# --- batched_matmul ----------------------------------------------------------------------------------------

def _explain_bmm(got, expected, args):
    a, b = args
    return known_mistake(got, [
        ("the operands are swapped: a comes first, (B, n, k) @ (B, k, m)",
         lambda: torch.bmm(b, a)),
        ("b was transposed: out[:, i, j] sums a[:, i, k] * b[:, k, j] over k",
         lambda: torch.bmm(a, b.mT)),
        ("summed over the wrong dimension — with a as (B, n, k, 1) and b as (B, 1, k, m), sum over dim=2 (k)",
         lambda: (a[:, :, :, None] * b[:, None, :, :]).sum(-1)),
        ("that is the element-wise product a * b, not the matrix product",
         lambda: a * b),
    ])


_NO_MATRIX_PRODUCT = "multiply broadcast views and sum: (a[:, :, :, None] * b[:, None, :, :]).sum(2)"


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "out[b, i, j] = sum over k of a[b, i, k] * b[b, k, j]. Give every index its own dimension so that "
    "broadcasting lines them up.",
    "a[:, :, :, None] is (B, n, k, 1) and b[:, None, :, :] is (B, 1, k, m); their product is (B, n, k, m).",
    "(a[:, :, :, None] * b[:, None, :, :]).sum(dim=2) → (B, n, m).",
], forbidden={name: _NO_MATRIX_PRODUCT for name in [
    "matmul", "linalg_matmul", "bmm", "mm", "einsum", "tensordot", "addmm", "baddbmm", "addbmm", "linear",
    "mv", "addmv", "dot", "vdot", "inner", "linalg_vecdot", "linalg_multi_dot", "chain_matmul"]})
def batched_matmul(t, fn):
    with t.case("shape: (2, 3, 4) and (2, 4, 5) give (2, 3, 5)"):
        got = t.call(fn, t.randn(2, 3, 4), t.randn(2, 4, 5))
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (2, 3, 5):
            where = {(2, 3, 4): "summed over m instead of k", (2, 4, 5): "summed over n instead of k",
                     (2, 3, 4, 5): "the sum over k is missing", (2, 3, 5, 4): "the sum over k is missing"}
            raise Mismatch(f"expected shape (2, 3, 5), got {tuple(got.shape)} — "
                           f"{where[tuple(got.shape)] + ': ' if tuple(got.shape) in where else ''}"
                           "line up a as (B, n, k, 1) and b as (B, 1, k, m), then sum over dim=2")
    # square matrices first: every shape fits, so a wrong formula shows as wrong values that `explain` can name
    a, b = t.randn(2, 4, 4), t.randn(2, 4, 4)
    t.compare("a (2, 4, 4), b (2, 4, 4)", fn, (a, b), torch.bmm, grad=True, explain=_explain_bmm)
    if any(not r.passed and not r.skipped for r in t.results):
        return  # the cases below would only repeat what is wrong above
    for B, n, k, m in [(3, 4, 5, 2), (1, 2, 3, 4), (4, 1, 6, 1), (2, 3, 1, 5), (0, 2, 3, 4)]:
        a, b = t.randn(B, n, k), t.randn(B, k, m)
        t.compare(f"a {(B, n, k)}, b {(B, k, m)}", fn, (a, b), torch.bmm, grad=True, explain=_explain_bmm)
    t.compare("float32 stays float32", fn, (t.randn(2, 3, 4, dtype=torch.float32),
                                            t.randn(2, 4, 2, dtype=torch.float32)),
              torch.bmm, explain=_explain_bmm)


# --- gather_rows -------------------------------------------------------------------------------------------

def _explain_gather(got, expected, args):
    x, idx = args
    return known_mistake(got, [
        ("gathered along dim 0 (rows) — idx picks a column in each row: x.gather(1, idx[:, None])",
         lambda: x.gather(0, idx[:, None]).squeeze(1)),
        ("rows and columns swapped: the element is x[i, idx[i]]",
         lambda: x[idx, torch.arange(len(idx))]),
        ("that is each row's maximum — use idx to pick the element",
         lambda: x.max(1).values),
        ("that is the first column — use idx to pick the element of each row",
         lambda: x[:, 0]),
    ])


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "Row i contributes exactly one number, x[i, idx[i]]: pair each row number with its own column number.",
    "x.gather(1, index) needs an index with as many dimensions as x: idx[:, None] is (n, 1); the result is "
    "(n, 1) too, so squeeze it.",
    "x.gather(1, idx.unsqueeze(1)).squeeze(1) — or with advanced indexing: "
    "x[torch.arange(len(idx), device=x.device), idx].",
])
def gather_rows(t, fn):
    wrong_shape = False
    with t.case("shape: x (5, 7), idx (5,) gives (5,)"):
        got = t.call(fn, t.randn(5, 7), t.randint(0, 7, (5,)))
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (5,):
            wrong_shape = True
            advice = {(5, 5): "x[:, idx] picks the idx columns of every row, an (n, n) table; pair each row with "
                              "its own index instead: x[torch.arange(n, device=x.device), idx] or "
                              "x.gather(1, idx[:, None]).squeeze(1)",
                      (5, 1): "gather keeps the gathered dimension: squeeze(1) it"}
            raise Mismatch(f"expected shape (5,), got {tuple(got.shape)} — "
                           + advice.get(tuple(got.shape), "one number per row: the result has idx's shape (n,)"))
    if wrong_shape:
        return  # the cases below would only repeat it
    for n, c in [(5, 7), (8, 3), (1, 1), (6, 6), (0, 4)]:
        x, idx = t.randn(n, c), t.randint(0, c, (n,))
        t.compare(f"x {(n, c)}, idx {(n,)}", fn, (x, idx), lambda x, idx: x[torch.arange(len(idx)), idx],
                  grad=True, explain=_explain_gather)
    with t.case("inf and nan elsewhere in a row: the result is still exactly x[i, idx[i]]"):
        x, idx = t.randn(4, 5), torch.tensor([1, 4, 0, 2])
        x[0, 0], x[1, 2], x[2, 3], x[3, 4] = float("inf"), float("nan"), float("-inf"), float("nan")
        got = t.call(fn, x.clone(), idx)
        expected = x[torch.arange(4), idx]
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype == expected.dtype \
                and not torch.isfinite(got).all():
            raise Mismatch("got nan/inf although every chosen element is finite — multiplying by a mask turns "
                           "inf*0 into nan — select the element (gather / advanced indexing) instead of masking "
                           "and summing")
        try:
            expect_tensor(got, expected)
        except Mismatch as e:
            raise Mismatch(f"{e.message} — pick x[i, idx[i]] itself: x.gather(1, idx[:, None]).squeeze(1)",
                           e.detail) from None
    x = t.randint(-50, 50, (4, 9))
    t.compare("int64 x stays int64", fn, (x, t.randint(0, 9, (4,))), lambda x, idx: x[torch.arange(len(idx)), idx],
              explain=_explain_gather)


# --- one_hot -----------------------------------------------------------------------------------------------

@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "The result has shape labels.shape + (num_classes,), dtype torch.int64, on labels.device: start from "
    "zeros of that shape and put a 1 at each label's position.",
    "With num_classes == -1, use int(labels.max()) + 1 (classes are 0 … max). To place the ones: "
    "out.scatter_(-1, labels.unsqueeze(-1), 1) writes a 1 at index labels[...] along the last dimension.",
    "Another way: compare against every class at once — (labels.unsqueeze(-1) == torch.arange(k, "
    "device=labels.device)) is a (…, k) bool tensor; .long() makes it int64.",
], forbidden={"one_hot": "build it from zeros + scatter_, or by comparing labels[..., None] with arange"})
def one_hot(t, fn):
    top = t.unseen(4, 7, 30)  # the largest label
    k = top + 2  # num_classes, one more than the labels need
    labels = t.randint(0, top, (7,))
    labels[t.integer(0, 7)] = top  # the largest class is present: top + 1 classes
    wrong = []  # shape or dtype mistakes found below: the value cases would only repeat them
    with t.case("the class dimension is the last one, of size num_classes"):
        got = t.call(fn, labels.clone(), k)
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (7, k):
            wrong.append("shape")
            why = {(k, 7): "the class dimension goes last: labels.shape + (num_classes,)",
                   (7, top + 1): f"num_classes={k} was given: use it instead of inferring the number of classes"}
            raise Mismatch(f"expected shape (7, {k}), got {tuple(got.shape)} — "
                           + why.get(tuple(got.shape), "one_hot adds one trailing dimension of size num_classes: "
                                                       "labels.shape + (num_classes,)"))
    with t.case("num_classes=-1 infers labels.max() + 1 classes"):
        try:
            got = t.call(fn, labels.clone())
        except LearnerError as e:
            if str(e).startswith("called `"):
                raise
            wrong.append("raised")
            raise Mismatch(f"{e}\n→ labels.max() is {top}: with num_classes=-1 there are labels.max() + 1 classes "
                           f"(0 … {top}) — use int(labels.max()) + 1") from None
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (7, top + 1):
            wrong.append("shape")
            first, last = (got.shape[0], got.shape[-1]) if got.ndim else (None, None)
            why = ("labels.max() + 1, not labels.max()" if last == top else
                   "the class dimension goes last: labels.shape + (num_classes,)" if first == top + 1 else
                   "with num_classes=-1 the class dimension has size labels.max() + 1")
            raise Mismatch(f"labels.max() is {top}, so there are {top + 1} classes (0 … {top}): expected shape "
                           f"(7, {top + 1}), got {tuple(got.shape)} — {why}")
    with t.case("the result is int64, like F.one_hot's"):
        got = t.call(fn, labels.clone(), k)
        if isinstance(got, torch.Tensor) and got.dtype != torch.int64:
            wrong.append("dtype")
            raise Mismatch(f"expected dtype torch.int64, got {got.dtype} — create the result with "
                           "dtype=torch.int64 (torch.eye and torch.zeros make floats by default), or convert a "
                           "comparison with .long()")
    with t.case("labels of any shape, even 0-d: the result is labels.shape + (num_classes,)"):
        fix = "labels can have any shape, even 0-d: the result's shape is labels.shape + (num_classes,) — " \
              "build it with zeros(*labels.shape, k) and scatter_ along the last dimension, or compare " \
              "labels[..., None] with arange(k)"
        for shape in [(2, 3), ()]:
            try:
                got = t.call(fn, t.randint(0, 4, shape), 4)
            except LearnerError as e:
                if str(e).startswith("called `"):
                    raise
                wrong.append("shape")
                raise Mismatch(f"{e}\n→ with labels of shape {shape}: {fix}") from None
            if isinstance(got, torch.Tensor) and tuple(got.shape) != shape + (4,):
                wrong.append("shape")
                raise Mismatch(f"labels of shape {shape}, num_classes=4: expected shape {shape + (4,)}, got "
                               f"{tuple(got.shape)} — {fix}")
    if wrong:
        return  # the value cases would only repeat the shape or dtype
    t.compare(f"labels (7,), num_classes={k}", fn, (labels, k), F.one_hot)
    t.compare("labels (7,), num_classes=-1", fn, (labels, -1), F.one_hot)
    t.compare("labels (7,), num_classes left out", fn, (labels,), F.one_hot)
    c = t.unseen(4, 5, 30)
    t.compare(f"labels (2, 3), num_classes={c}", fn, (t.randint(0, c, (2, 3)), c), F.one_hot)
    t.compare("labels (2, 1, 5), num_classes=-1", fn, (t.randint(0, t.unseen(3, 4, 30), (2, 1, 5)),), F.one_hot)
    label = t.unseen(2, 3, 30)
    t.compare(f"a single label (a 0-dim tensor), num_classes={label + 1}", fn, (torch.tensor(label), label + 1),
              F.one_hot)
    t.compare("no labels: shape (0,), num_classes=3", fn, (torch.zeros(0, dtype=torch.int64), 3), F.one_hot)
    for bad, what in [(-1, "a label of -1"), (k, f"a label of {k} with num_classes={k}")]:
        with t.case(f"{what} raises, as F.one_hot does"):
            labels, i = t.randint(0, k, (6,)), t.integer(0, 6)
            labels[i] = bad
            try:
                got = t.call(fn, labels, k)
            except LearnerError as e:
                if str(e).startswith("called `"):
                    raise
                continue  # any error will do
            how = ""
            if isinstance(got, torch.Tensor) and tuple(got.shape) == (6, k):
                row = got[i].cpu()
                how = " (an all-zero row)" if not row.any() else \
                    " (indexing wraps -1 round to the last class)" if bad < 0 and row[-1] == 1 else ""
            raise Mismatch(f"{what} gave a result instead of an error{how} — labels must be in [0, num_classes): "
                           "raise for negative or too-large labels, as F.one_hot does")


# --- causal_mask -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _reference_mask(n: int) -> torch.Tensor:
    """True strictly above the diagonal (cached: never modified by the check)."""
    return torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)


def _expect_mask(got, n: int, device: str) -> None:
    expected = _reference_mask(n)
    if isinstance(got, torch.Tensor) and got.device.type != device:
        raise Mismatch(f"device={device!r} was asked for, but the mask is on {got.device.type} — pass the device "
                       "argument on to the tensor you create (torch.ones(n, n, device=device, ...))")
    if isinstance(got, torch.Tensor) and got.dtype != torch.bool:
        float_mask = " (a float mask of 0 and -inf is another convention; this one is bool)" \
            if got.dtype.is_floating_point else ""
        raise Mismatch(f"the mask: expected dtype torch.bool, got {got.dtype} — True marks what a query may not "
                       f"see: create it with dtype=torch.bool, or return a comparison{float_mask}")
    if isinstance(got, torch.Tensor) and got.device.type == "meta":  # a meta tensor has no values to compare
        if tuple(got.shape) != (n, n):
            raise Mismatch(f"the mask: expected shape ({n}, {n}), got {tuple(got.shape)} — one row and one "
                           "column per position")
        return
    try:
        expect_tensor(got, expected, device=device, what="the mask")
    except Mismatch as e:
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
            raise
        got = got.cpu()
        # The diagonal comes first: with n = 1 the mask is its diagonal, and "inverted" would be a wrong claim.
        better = known_mistake(got.long(), [
            ("the diagonal is masked — a position may attend to itself: only j > i is True (triu with diagonal=1)",
             lambda: torch.triu(torch.ones(n, n, dtype=torch.long))),
            ("the mask is inverted — True marks what a query may NOT see (j > i); False what it may",
             lambda: (~expected).long()),
            ("the mask is transposed — True where the column index j is greater than the row index i",
             lambda: expected.T.long()),
        ])
        if better:
            raise Mismatch(better, e.detail) from None
        raise Mismatch(f"{e.message} — True exactly where j > i: torch.ones(n, n, dtype=torch.bool).triu(1)",
                       e.detail) from None


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "Entry (i, j) is True when j > i: above the main diagonal.",
    "torch.triu(x, diagonal=1) keeps what is strictly above the diagonal; start from a bool tensor of ones "
    "created on the requested device.",
    "torch.ones(n, n, dtype=torch.bool, device=device).triu(1) — or compare index grids: "
    "i = torch.arange(n, device=device); i[None, :] > i[:, None].",
])
def causal_mask(t, fn):
    sizes = [1, 2, 5, t.unseen(t.integer(6, 12), 13, 40), 0]
    for n in sizes:
        with t.case(f"causal_mask({n}) on the default device (cpu)"):
            _expect_mask(t.call(fn, n), n, "cpu")
    for dev in t.devices:
        n = t.unseen(t.integer(3, 9), 13, 40)
        with t.case(f"causal_mask({n}, device={dev!r})"):
            _expect_mask(t.call(fn, n, dev), n, dev)
        with t.case(f"causal_mask({n}, device=torch.device({dev!r}))"):
            _expect_mask(t.call(fn, n, torch.device(dev)), n, dev)
        with t.case(f"causal_mask({n}, device=None)"):
            _expect_mask(t.call(fn, n, None), n, "cpu")
    n = t.unseen(t.integer(3, 9), 13, 40)
    with t.case(f"causal_mask({n}, device='meta') honours the device argument"):
        try:
            got = t.call(fn, n, "meta")
        except LearnerError as e:
            raise Inconclusive(f"could not run on the meta device: {e}") from None
        _expect_mask(got, n, "meta")


# --- normalize ---------------------------------------------------------------------------------------------

def _explain_normalize(got, expected, args, dim=-1, eps=1e-12):
    x = args[0]
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    others = [(f"normalised along dim {d} — use dim={dim}", lambda d=d: F.normalize(x, dim=d))
              for d in range(x.ndim) if d != dim % x.ndim]
    zero = (norm == 0).expand_as(x)
    if zero.any() and torch.isnan(got[zero]).all() and not torch.isnan(got[~zero]).any():
        return "0 / 0 at the all-zero vectors — divide by the norm clamped to eps, as F.normalize does: " \
               "norm.clamp_min(eps)"
    return known_mistake(got, [
        ("divided by norm + eps — F.normalize divides by max(norm, eps): "
         "norm.clamp_min(eps)",
         lambda: x / (norm + eps)),
        ("divided by the norm itself — F.normalize divides by max(norm, eps), so norms below eps count as eps: "
         "norm.clamp_min(eps)",
         lambda: x / norm),
        ("divided by the squared norm — take the square root of the sum "
         "of squares",
         lambda: x / norm.clamp_min(eps) ** 2),
        ("that is the L1 norm (sum of |x|) — the L2 norm is sqrt(sum of squares)",
         lambda: x / x.abs().sum(dim, keepdim=True).clamp_min(eps)),
        ("the norms lost their dimension and broadcast along the wrong "
         "axis — keepdim=True",
         lambda: x / norm.squeeze(dim).clamp_min(eps)),
    ] + others)


def _reference_normalize(x, dim=-1, eps=1e-12):
    return F.normalize(x, p=2.0, dim=dim, eps=eps)  # F.normalize's own default is dim=1: pass dim explicitly


def _normalize_case(t, fn, name, x, dim=None, eps=None, grad=True):
    kwargs = {}
    if dim is not None:
        kwargs["dim"] = dim
    if eps is not None:
        kwargs["eps"] = eps
    d, e = kwargs.get("dim", -1), kwargs.get("eps", 1e-12)
    t.compare(name, fn, (x,), _reference_normalize, kwargs=kwargs, grad=grad,
              explain=lambda got, exp, args: _explain_normalize(got, exp, args, d, e))


def gradient_and_ops(fn, x, upstream):
    """Driver: the gradient of (fn(x) * upstream).sum() with respect to x (None when the result has no graph),
    and the names of the torch functions fn called."""
    with untraced():
        x = x.detach().clone().requires_grad_(True)
    with Tracer() as tracer:
        out = fn(x)
    with untraced():
        if not (isinstance(out, torch.Tensor) and out.requires_grad and out.shape == upstream.shape):
            return {"grad": None, "ops": sorted(set(tracer.called))}
        (grad,) = torch.autograd.grad((out * upstream).sum(), x, allow_unused=True)
    return {"grad": torch.zeros_like(x) if grad is None else grad.detach(), "ops": sorted(set(tracer.called))}


def _expect_zero_row_gradient(run: dict, x: torch.Tensor, upstream: torch.Tensor) -> None:
    x = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((_reference_normalize(x) * upstream).sum(), x)
    got, ops = run["grad"], run["ops"]
    if got is None:
        raise Mismatch("the result does not track gradients — a .detach(), torch.no_grad(), .item() or a round "
                       "trip through numpy cut the graph")
    if not torch.isfinite(got).all():
        fix = "use torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps), as F.normalize does: its " \
              "gradient at 0 is finite"
        if {"sqrt", "rsqrt"} & set(ops):
            raise Mismatch("the gradient at an all-zero vector is nan — you take the square root of the sum of "
                           "squares yourself, and the derivative of sqrt at 0 is infinite (1 / (2·sqrt(0))); what "
                           "follows multiplies it by 0, and 0 × inf = nan. Clamp before the square root "
                           "((x * x).sum(dim, keepdim=True).clamp_min(eps ** 2).sqrt() is max(norm, eps)), or "
                           + fix)
        if {"pow", "float_power"} & set(ops):
            raise Mismatch("the gradient at an all-zero vector is nan — a power below 1 (such as ** 0.5) has an "
                           "infinite derivative at 0, and 0 × inf = nan. Clamp what you raise to the power with "
                           "clamp_min(eps ** 2) first, or " + fix)
        if "where" in ops:
            raise Mismatch("the gradient at an all-zero vector is nan — torch.where chooses a branch but "
                           "back-propagates through both, and the one that divides by the zero norm gives nan: "
                           "clamp the norm instead of branching, " + fix.replace("use ", "", 1))
        raise Mismatch("the gradient at an all-zero vector is not finite — the norm there is 0: divide by "
                       "torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps), as F.normalize does")
    try:
        expect_tensor(got, expected, atol=1e-5, rtol=1e-4, what="the gradient (x has rows of zeros)")
    except Mismatch as e:
        raise Mismatch(f"{e.message} — where the norm is below eps, F.normalize divides by eps itself, so the "
                       "gradient there is upstream / eps: clamp the norm with clamp_min(eps)", e.detail) from None


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Divide x by its L2 norm along dim, kept as a size-1 dimension so that it broadcasts back over x.",
    "torch.linalg.vector_norm(x, dim=dim, keepdim=True) gives the norms; clamp_min(eps) makes tiny and zero "
    "norms equal to eps, which is what F.normalize divides by (max(norm, eps), not norm + eps).",
    "return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps) — avoid "
    "(x * x).sum().sqrt(): sqrt has an infinite slope at 0, so zero vectors get nan gradients.",
], forbidden={"normalize": "divide by torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(eps)"})
def normalize(t, fn):
    _normalize_case(t, fn, "x (4, 5), default dim and eps", t.randn(4, 5))
    _normalize_case(t, fn, "x (5, 5), dim=-1 (square: a missing keepdim broadcasts wrongly)", t.randn(5, 5))
    _normalize_case(t, fn, "x (3, 4, 6), dim=1", t.randn(3, 4, 6), dim=1)
    _normalize_case(t, fn, "x (6, 3), dim=0", t.randn(6, 3), dim=0)
    _normalize_case(t, fn, "a single vector (7,)", t.randn(7))
    x = t.randn(5, 4)
    x[[1, 3]] = 0.0
    _normalize_case(t, fn, "rows of zeros give zeros", x, grad=False)
    with t.case("rows of zeros: the gradient is finite, like F.normalize's"):
        upstream = t.randn(5, 4)
        run = t.call(gradient_and_ops, fn, x, upstream)
        _expect_zero_row_gradient(run, x, upstream)
    x = t.randn(6, 3) * torch.tensor([[0.1], [2.0], [0.01], [3.0], [0.2], [1.0]], dtype=torch.float64)
    _normalize_case(t, fn, "eps=0.5, larger than some norms: those rows are divided by eps", x, eps=0.5)
    _normalize_case(t, fn, "large values (around 1e100)", t.randn(3, 4) * 1e100, grad=False)
    _normalize_case(t, fn, "float32 stays float32", t.randn(4, 3, dtype=torch.float32), dim=0)
