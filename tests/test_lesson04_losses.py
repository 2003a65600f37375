"""04_losses: independent implementations pass; the usual mistakes fail with a message naming them; every
forbidden function is caught whatever namespace it is called from."""
import pytest
import torch
import torch.nn.functional as F

from grader import evaluate
from grader.registry import get
from grader.tracing import ForbiddenCall, Tracer
from verdicts import assert_passes, assert_rejects

NAMES = ["mse_loss", "huber_loss", "softmax", "log_softmax", "cross_entropy", "binary_cross_entropy_with_logits"]


def _reduce(loss, reduction):
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"unknown reduction {reduction!r}")
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.sum() / loss.numel()


# --- independent correct implementations ----------------------------------------------------------------
def mse_other(input, target, reduction="mean"):
    return _reduce(torch.square(input - target), reduction)


def huber_other(input, target, delta=1.0, reduction="mean"):
    a = (input - target).abs()
    q = a.clamp(max=delta)                      # the quadratic part saturates at delta
    return _reduce(0.5 * q * q + delta * (a - q), reduction)


def softmax_other(x, dim=-1):
    z = x.movedim(dim, -1)
    z = (z - z.max(dim=-1, keepdim=True).values.detach()).exp()
    return (z / z.sum(-1, keepdim=True)).movedim(-1, dim)


def log_softmax_other(x, dim=-1):
    m = x.max(dim=dim, keepdim=True).values
    lse = m + torch.log(torch.sum(torch.exp(x - m), dim=dim, keepdim=True))
    return x - lse


def cross_entropy_other(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    c = logits.shape[1]
    flat = logits.movedim(1, -1).reshape(-1, c)                          # (M, C)
    y = target.reshape(-1)                                               # (M,)
    logp = log_softmax_other(flat, dim=1)
    valid = (y != ignore_index).to(logits.dtype)
    y0 = y * (y != ignore_index)                                         # ignored -> class 0
    w = weight if weight is not None else logits.new_ones(c)
    rows = torch.arange(y.shape[0], device=logits.device)
    per = -(1 - label_smoothing) * w[y0] * logp[rows, y0] - label_smoothing / c * (logp * w).sum(1)
    per = per * valid
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction)
    if reduction == "none":
        return per.reshape(target.shape)
    if reduction == "sum":
        return per.sum()
    return per.sum() / (w[y0] * valid).sum()


def bce_other(logits, target, pos_weight=None, reduction="mean"):
    lw = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * logits + lw * (torch.log1p(torch.exp(-logits.abs())) + torch.relu(-logits))
    return _reduce(loss, reduction)


@pytest.mark.parametrize("impl, name", [
    (mse_other, "mse_loss"), (huber_other, "huber_loss"), (softmax_other, "softmax"),
    (log_softmax_other, "log_softmax"), (cross_entropy_other, "cross_entropy"),
    (bce_other, "binary_cross_entropy_with_logits"),
])
def test_independent_implementation_passes(impl, name):
    assert_passes(impl, name)


# --- mse_loss mistakes ----------------------------------------------------------------------------------
def mse_sum_for_mean(input, target, reduction="mean"):
    sq = (input - target) ** 2
    return sq if reduction == "none" else sq.sum()


def mse_abs(input, target, reduction="mean"):
    return _reduce((input - target).abs(), reduction)


def mse_rmse(input, target, reduction="mean"):
    sq = (input - target) ** 2
    return sq if reduction == "none" else _reduce(sq, reduction).sqrt()


def mse_len(input, target, reduction="mean"):
    sq = (input - target) ** 2
    return sq.sum() / len(input) if reduction == "mean" else _reduce(sq, reduction)


def mse_item(input, target, reduction="mean"):
    return torch.tensor(_reduce((input - target) ** 2, reduction).item()) if reduction != "none" else \
        (input - target) ** 2


def mse_in_place(input, target, reduction="mean"):
    input -= target
    return _reduce(input ** 2, reduction)


def mse_in_place_no_grad(input, target, reduction="mean"):
    with torch.no_grad():                       # silences autograd's error, still changes the caller's tensor
        input -= target
    return _reduce(input ** 2, reduction)


def mse_none_ignored(input, target, reduction="mean"):
    sq = (input - target) ** 2
    return sq.sum() if reduction == "sum" else sq.mean()


def mse_float32(input, target, reduction="mean"):
    return _reduce((input.float() - target.float()) ** 2, reduction)


def mse_forbidden(input, target, reduction="mean"):
    return F.mse_loss(input, target, reduction=reduction)


@pytest.mark.parametrize("wrong, fragments", [
    (mse_sum_for_mean, ("summed where the mean was asked for",)),
    (mse_abs, ("absolute error",)),
    (mse_len, ("divide by numel(), not len()",)),
    (mse_item, (".item()", "loses the graph and the dtype")),
    (mse_rmse, ("rmse",)),
    (mse_in_place, ("changed your input",)),
    (mse_in_place_no_grad, ("in place — compute a new tensor",)),
    (mse_none_ignored, ("expected shape (4, 2, 3), got ()", "reduction='none' ignored")),
    (mse_float32, ("expected dtype torch.float64", "float32")),
    (mse_forbidden, ("mse_loss", "forbids")),
])
def test_mse_loss_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "mse_loss", *fragments)


# --- huber_loss mistakes --------------------------------------------------------------------------------
def _huber_with(quad, lin):
    def impl(input, target, delta=1.0, reduction="mean"):
        d = (input - target).abs()
        return _reduce(torch.where(d < delta, quad(d, delta), lin(d, delta)), reduction)
    return impl


huber_smooth_l1 = _huber_with(lambda d, b: 0.5 * d ** 2 / b, lambda d, b: d - 0.5 * b)
huber_no_half = _huber_with(lambda d, b: d ** 2, lambda d, b: b * (d - 0.5 * b))
huber_bad_linear = _huber_with(lambda d, b: 0.5 * d ** 2, lambda d, b: b * d - 0.5 * b)


def huber_linear_not_scaled(input, target, delta=1.0, reduction="mean"):
    a = (input - target).abs()
    return _reduce(torch.where(a < delta, 0.5 * a ** 2, a - 0.5 * delta), reduction)


def huber_ignores_delta(input, target, delta=1.0, reduction="mean"):
    return huber_other(input, target, 1.0, reduction)


def huber_full_on_cpu(input, target, delta=1.0, reduction="mean"):
    d = (input - target).abs()
    threshold = torch.full(d.shape, delta, dtype=d.dtype)      # no device=
    return _reduce(torch.where(d < threshold, 0.5 * d ** 2, delta * (d - 0.5 * delta)), reduction)


def huber_forbidden(input, target, delta=1.0, reduction="mean"):
    return F.smooth_l1_loss(input, target, reduction=reduction, beta=delta) * delta


@pytest.mark.parametrize("wrong, fragments", [
    (huber_smooth_l1, ("smooth_l1",)),
    (huber_no_half, ("factor 0.5",)),
    (huber_bad_linear, ("linear part should be delta * (|d| - 0.5*delta)",)),
    (huber_ignores_delta, ("delta was ignored",)),
    (huber_linear_not_scaled, ("the linear branch must be scaled by delta",)),
    (huber_full_on_cpu, ("device=x.device",)),
    (huber_forbidden, ("smooth_l1_loss", "forbids")),
])
def test_huber_loss_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "huber_loss", *fragments)


# --- softmax mistakes -----------------------------------------------------------------------------------
def softmax_naive(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim, keepdim=True)


def softmax_global_max(x, dim=-1):
    e = (x - x.max()).exp()
    return e / e.sum(dim, keepdim=True)


def softmax_last_dim(x, dim=-1):
    return softmax_other(x, -1)


def softmax_no_keepdim(x, dim=-1):
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim)


def softmax_sum_all(x, dim=-1):
    e = (x - x.max()).exp()
    return e / e.sum()


def softmax_torch(x, dim=-1):
    return torch.softmax(x, dim)


def softmax_method(x, dim=-1):
    return x.softmax(dim)


def softmax_via_log_softmax(x, dim=-1):
    return F.log_softmax(x, dim).exp()


@pytest.mark.parametrize("wrong, fragments", [
    (softmax_naive, ("subtract the max",)),
    (softmax_global_max, ("not one global max",)),
    (softmax_last_dim, ("instead of dim=",)),
    (softmax_no_keepdim, ("keepdim",)),
    (softmax_sum_all, ("sum of all elements",)),
    (softmax_torch, ("`softmax`", "forbids")),
    (softmax_method, ("`softmax`", "forbids")),
    (softmax_via_log_softmax, ("`log_softmax`", "forbids")),
])
def test_softmax_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "softmax", *fragments)


# --- log_softmax mistakes -------------------------------------------------------------------------------
def log_softmax_of_softmax(x, dim=-1):
    return softmax_other(x, dim).log()


def log_softmax_clamped_log(x, dim=-1):
    return softmax_other(x, dim).clamp_min(1e-12).log()


def log_softmax_naive(x, dim=-1):
    return x - x.exp().sum(dim, keepdim=True).log()


def log_softmax_max_not_added_back(x, dim=-1):
    m = x.amax(dim, keepdim=True)
    return x - (x - m).exp().sum(dim, keepdim=True).log()


def log_softmax_special(x, dim=-1):
    return torch.special.log_softmax(x, dim)


def log_softmax_logsumexp(x, dim=-1):
    return x - x.logsumexp(dim, keepdim=True)


@pytest.mark.parametrize("wrong, fragments", [
    (log_softmax_of_softmax, ("log of a probability that underflowed",)),
    (log_softmax_naive, ("subtract the max",)),
    (log_softmax_max_not_added_back, ("must be added back",)),
    (log_softmax_special, ("special_log_softmax", "forbids")),
    (log_softmax_logsumexp, ("logsumexp", "forbids")),
])
def test_log_softmax_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "log_softmax", *fragments)


def test_log_softmax_clamped_log_named():
    assert_rejects(log_softmax_clamped_log, "log_softmax", "clamping caps the result at log(eps)", "x - m - log")


# --- cross_entropy mistakes -----------------------------------------------------------------------------
def _ce_parts(logits, target, weight, ignore_index, log=True, naive=False):
    c = logits.shape[1]
    if naive:
        logp = logits - logits.exp().sum(1, keepdim=True).log()
    else:
        logp = log_softmax_other(logits, 1)
    score = logp if log else logp.exp()
    keep = target != ignore_index
    y0 = torch.where(keep, target, torch.zeros_like(target))
    nll = -score.gather(1, y0.unsqueeze(1)).squeeze(1)
    w = weight if weight is not None else torch.ones(c, dtype=logits.dtype, device=logits.device)
    return logp, keep, y0, nll, w


def ce_mean_over_all(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    out = cross_entropy_other(logits, target, weight, ignore_index, "none", label_smoothing)
    if reduction == "mean":
        keep = target != ignore_index
        if weight is None:
            return out.sum() / target.numel()
        return out.sum() / (weight[torch.where(keep, target, 0)]).sum()
    return _reduce(out, reduction)


def ce_count_denominator(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    out = cross_entropy_other(logits, target, weight, ignore_index, "none", label_smoothing)
    if reduction == "mean":
        return out.sum() / (target != ignore_index).sum()
    return _reduce(out, reduction)


def ce_probabilities(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    logp, keep, y0, nll, w = _ce_parts(logits, target, weight, ignore_index, log=False)
    shape = [1, -1] + [1] * (logits.ndim - 2)
    smooth = -(logp.exp() * w.view(shape)).sum(1)
    per = ((1 - label_smoothing) * w[y0] * nll + label_smoothing / logits.shape[1] * smooth) * keep
    if reduction == "mean":
        return per.sum() / (w[y0] * keep).sum()
    return _reduce(per, reduction)


def ce_naive_exp(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    logp, keep, y0, nll, w = _ce_parts(logits, target, weight, ignore_index, naive=True)
    shape = [1, -1] + [1] * (logits.ndim - 2)
    smooth = -(logp * w.view(shape)).sum(1)
    per = ((1 - label_smoothing) * w[y0] * nll + label_smoothing / logits.shape[1] * smooth) * keep
    if reduction == "mean":
        return per.sum() / (w[y0] * keep).sum()
    return _reduce(per, reduction)


def ce_smoothing_unweighted(logits, target, weight=None, ignore_index=-100, reduction="mean",
                            label_smoothing=0.0):
    logp, keep, y0, nll, w = _ce_parts(logits, target, weight, ignore_index)
    smooth = -logp.sum(1)                                     # forgets the class weights
    per = ((1 - label_smoothing) * w[y0] * nll + label_smoothing / logits.shape[1] * smooth) * keep
    if reduction == "mean":
        return per.sum() / (w[y0] * keep).sum()
    return _reduce(per, reduction)


def ce_smoothing_c_minus_1(logits, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    logp, keep, y0, nll, w = _ce_parts(logits, target, weight, ignore_index)
    c = logits.shape[1]
    shape = [1, -1] + [1] * (logits.ndim - 2)
    others = -(logp * w.view(shape)).sum(1) - w[y0] * nll     # every class but the target
    per = ((1 - label_smoothing) * w[y0] * nll + label_smoothing / (c - 1) * others) * keep
    if reduction == "mean":
        return per.sum() / (w[y0] * keep).sum()
    return _reduce(per, reduction)


def ce_ones_on_cpu(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if weight is None:
        weight = torch.ones(logits.shape[1], dtype=logits.dtype)    # no device=
    return cross_entropy_other(logits, target, weight, ignore_index, reduction, label_smoothing)


def ce_only_2d(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    rows = torch.arange(logits.shape[0], device=logits.device)
    logits[rows, target.clamp(min=0)]       # (N, C) assumed: picking logits[n, target[n]] fails for (N, d1) targets
    return cross_entropy_other(logits, target, weight, ignore_index, reduction, label_smoothing)


def ce_smoothing_at_ignored(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    c = logits.shape[1]
    logp = log_softmax_other(logits, 1)
    keep = target != ignore_index
    y0 = torch.where(keep, target, 0)
    w = weight if weight is not None else logits.new_ones(c)
    shape = [1, c] + [1] * (logits.dim() - 2)
    nll = -logp.gather(1, y0.unsqueeze(1)).squeeze(1) * w[y0] * keep
    smooth = -(logp * w.view(shape)).sum(1)                               # not zeroed where ignored
    per = (1 - label_smoothing) * nll + label_smoothing / c * smooth
    if reduction == "mean":
        return per.sum() / (w[y0] * keep).sum()
    return _reduce(per, reduction)


def ce_ignored_weight_in_mean(logits, target, weight=None, ignore_index=-100, reduction="mean",
                              label_smoothing=0.0):
    per = cross_entropy_other(logits, target, weight, ignore_index, "none", label_smoothing)
    if reduction != "mean":
        return _reduce(per, reduction)
    w = weight if weight is not None else logits.new_ones(logits.shape[1])
    return per.sum() / w[target.clamp(0, logits.shape[1] - 1)].sum()     # ignored targets' weight counted


def ce_default_weight_on_cpu(logits, target, weight=None, ignore_index=-100, reduction="mean",
                             label_smoothing=0.0):
    """Per-target weights picked from a default made without device= (and a CPU index): right on a CPU only."""
    if weight is None and reduction == "none":
        w = torch.ones(logits.shape[1], dtype=logits.dtype)
        per = cross_entropy_other(logits, target, None, ignore_index, "none", label_smoothing)
        return per * w[target.clamp(0, logits.shape[1] - 1).cpu()]
    return cross_entropy_other(logits, target, weight, ignore_index, reduction, label_smoothing)


def ce_nll_loss(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    return F.nll_loss(log_softmax_other(logits, 1), target, weight=weight, ignore_index=ignore_index,
                      reduction=reduction)


@pytest.mark.parametrize("wrong, fragments", [
    (ce_mean_over_all, ("averaged over all targets including ignored ones",)),
    (ce_count_denominator, ("weight not applied to the mean's denominator",)),
    (ce_probabilities, ("probabilities instead of log-probabilities",)),
    (ce_naive_exp, ("subtract the max",)),
    (ce_smoothing_unweighted, ("smoothing term weighs each class",)),
    (ce_smoothing_c_minus_1, ("spreads eps over all c classes",)),
    (ce_ones_on_cpu, ("device=",)),
    (ce_only_2d, ("logits may be (n, c, d1, ...): classes are on dim 1",)),
    (ce_smoothing_at_ignored, ("zero the label-smoothing term at ignored targets too",)),
    (ce_ignored_weight_in_mean, ("ignore_index=2 with weight", "averaged over all targets including ignored")),
    (ce_default_weight_on_cpu, ("device check", "combines a cpu tensor")),
    (ce_nll_loss, ("`nll_loss`", "forbids")),
])
def test_cross_entropy_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "cross_entropy", *fragments)


# --- binary_cross_entropy_with_logits mistakes ----------------------------------------------------------
def bce_naive(logits, target, pos_weight=None, reduction="mean"):
    p = torch.sigmoid(logits)
    pw = 1 if pos_weight is None else pos_weight
    return _reduce(-(pw * target * p.log() + (1 - target) * (1 - p).log()), reduction)


def bce_pos_weight_everywhere(logits, target, pos_weight=None, reduction="mean"):
    loss = bce_other(logits, target, None, "none")
    return _reduce(loss if pos_weight is None else pos_weight * loss, reduction)


def bce_pos_weight_on_negatives(logits, target, pos_weight=None, reduction="mean"):
    a = torch.log1p(torch.exp(-logits.abs())) + torch.relu(-logits)     # -log σ(x)
    pw = 1 if pos_weight is None else pos_weight
    return _reduce(target * a + pw * (1 - target) * (a + logits), reduction)


def bce_zeros_on_cpu(logits, target, pos_weight=None, reduction="mean"):
    zero = torch.zeros(logits.shape, dtype=logits.dtype)                # no device=
    a = torch.log1p(torch.exp(-logits.abs())) + torch.maximum(-logits, zero)
    pw = 1 if pos_weight is None else pos_weight
    return _reduce(pw * target * a + (1 - target) * (a + logits), reduction)


def bce_mean_of_row_sums(logits, target, pos_weight=None, reduction="mean"):
    loss = bce_other(logits, target, pos_weight, "none")
    return loss.sum(-1).mean() if reduction == "mean" else _reduce(loss, reduction)


def bce_eps_log(logits, target, pos_weight=None, reduction="mean"):
    p, pw = torch.sigmoid(logits), 1 if pos_weight is None else pos_weight
    return _reduce(-(pw * target * (p + 1e-7).log() + (1 - target) * (1 - p + 1e-7).log()), reduction)


def bce_softplus(logits, target, pos_weight=None, reduction="mean"):
    pw = 1 if pos_weight is None else pos_weight
    return _reduce(pw * target * F.softplus(-logits) + (1 - target) * F.softplus(logits), reduction)


def bce_logaddexp(logits, target, pos_weight=None, reduction="mean"):
    zero = torch.zeros_like(logits)
    pw = 1 if pos_weight is None else pos_weight
    return _reduce(pw * target * torch.logaddexp(zero, -logits) + (1 - target) * torch.logaddexp(zero, logits),
                   reduction)


@pytest.mark.parametrize("wrong, fragments", [
    (bce_naive, ("stable form",)),
    (bce_pos_weight_everywhere, ("pos_weight multiplies the positive term only",)),
    (bce_pos_weight_on_negatives, ("positive term",)),
    (bce_zeros_on_cpu, ("device=",)),
    (bce_mean_of_row_sums, ("mean averages over every element",)),
    (bce_eps_log, ("log(p + eps) caps the loss", "use the stable form")),
    (bce_softplus, ("`softplus`", "forbids")),
    (bce_logaddexp, ("`logaddexp`", "forbids")),
])
def test_bce_mistakes_rejected(wrong, fragments):
    assert_rejects(wrong, "binary_cross_entropy_with_logits", *fragments)


# --- forbidden functions, in every namespace ------------------------------------------------------------
_x = torch.randn(3, 4)
_p = torch.rand(3, 4)
_y = torch.randint(0, 4, (3,))
SPELLINGS = {
    "torch.softmax": lambda: torch.softmax(_x, -1),
    "F.softmax": lambda: F.softmax(_x, -1),
    "x.softmax": lambda: _x.softmax(-1),
    "torch.special.softmax": lambda: torch.special.softmax(_x, -1),
    "nn.Softmax": lambda: torch.nn.Softmax(-1)(_x),
    "F.softmin": lambda: F.softmin(_x, -1),
    "torch.log_softmax": lambda: torch.log_softmax(_x, -1),
    "F.log_softmax": lambda: F.log_softmax(_x, -1),
    "x.log_softmax": lambda: _x.log_softmax(-1),
    "torch.special.log_softmax": lambda: torch.special.log_softmax(_x, -1),
    "nn.LogSoftmax": lambda: torch.nn.LogSoftmax(-1)(_x),
    "torch.logsumexp": lambda: torch.logsumexp(_x, -1),
    "x.logsumexp": lambda: _x.logsumexp(-1),
    "torch.special.logsumexp": lambda: torch.special.logsumexp(_x, -1),
    "torch.logaddexp": lambda: torch.logaddexp(_x, _x),
    "F.cross_entropy": lambda: F.cross_entropy(_x, _y),
    "nn.CrossEntropyLoss": lambda: torch.nn.CrossEntropyLoss()(_x, _y),
    "F.nll_loss": lambda: F.nll_loss(_x, _y),
    "nn.NLLLoss": lambda: torch.nn.NLLLoss()(_x, _y),
    "F.binary_cross_entropy": lambda: F.binary_cross_entropy(_p, _p),
    "nn.BCELoss": lambda: torch.nn.BCELoss()(_p, _p),
    "F.binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(_x, _p),
    "torch.binary_cross_entropy_with_logits": lambda: torch.binary_cross_entropy_with_logits(_x, _p),
    "nn.BCEWithLogitsLoss": lambda: torch.nn.BCEWithLogitsLoss()(_x, _p),
    "F.soft_margin_loss": lambda: F.soft_margin_loss(_x, _p),
    "F.logsigmoid": lambda: F.logsigmoid(_x),
    "nn.LogSigmoid": lambda: torch.nn.LogSigmoid()(_x),
    "F.softplus": lambda: F.softplus(_x),
    "nn.Softplus": lambda: torch.nn.Softplus()(_x),
}
OWN = {
    "huber_loss": {"F.huber_loss": lambda: F.huber_loss(_x, _p), "nn.HuberLoss": lambda: torch.nn.HuberLoss()(_x, _p),
                   "F.smooth_l1_loss": lambda: F.smooth_l1_loss(_x, _p),
                   "nn.SmoothL1Loss": lambda: torch.nn.SmoothL1Loss()(_x, _p)},
    "mse_loss": {"F.mse_loss": lambda: F.mse_loss(_x, _p), "nn.MSELoss": lambda: torch.nn.MSELoss()(_x, _p)},
}


@pytest.mark.parametrize("name", NAMES)
def test_every_forbidden_spelling_is_caught(name):
    forbidden = get(name).forbidden
    for spelling, call in {**SPELLINGS, **OWN.get(name, {})}.items():
        with pytest.raises(ForbiddenCall):
            with Tracer(forbidden):
                call()
    with Tracer(forbidden) as tracer:   # the building blocks stay allowed
        (_x - _x.amax(-1, keepdim=True)).exp().sum(-1).log()
        _x.max(-1).values.abs().clamp(min=0).log1p()
        torch.where(_x > 0, _x, -_x).gather(1, _y[:, None])
        torch.sigmoid(_x)
    assert tracer.violation is None


# --- the stubs ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted(name):
    def stub(*args, **kwargs):
        raise NotImplementedError()
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0


def test_diagnosis_variants_agree_with_torch():
    """The check's reconstruction of cross-entropy (the base of its diagnoses) matches F.cross_entropy."""
    from grader.checks.lesson04_losses import _ce_variant
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 4, 3, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (7, 3), generator=g)
    target[0, 0] = target[3, 2] = 1
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.1
    for reduction in ["mean", "sum", "none"]:
        for w in [None, weight]:
            for eps in [0.0, 0.2]:
                ours = _ce_variant(logits, target, w, 1, reduction, eps)
                ref = F.cross_entropy(logits, target, weight=w, ignore_index=1, reduction=reduction,
                                      label_smoothing=eps)
                assert torch.allclose(ours, ref), (reduction, w is not None, eps)
