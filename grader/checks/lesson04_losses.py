"""Checks for 04_losses: softmax, log_softmax and four losses, each matched against torch.nn.functional
in value and gradient, including logits with magnitudes up to 1e4."""

import torch
import torch.nn.functional as F

from grader.compare import Mismatch, known_mistake
from grader.registry import exercise
from grader.runner import LearnerError, untraced

# --- forbidden functions ---------------------------------------------------------------------------------
# Canonical traced names (a function's __name__ without leading/trailing underscores). torch.special's
# aliases report names of their own (special_log_softmax), so they are listed too.
_STABLE = "write the numerically stable formula yourself with exp, log, log1p, max/amax, sum"
FORBIDDEN = {
    "softmax": "exponentiate the shifted logits and divide by their sum yourself",
    "special_softmax": "exponentiate the shifted logits and divide by their sum yourself",
    "softmin": "exponentiate the shifted logits and divide by their sum yourself",
    "gumbel_softmax": "exponentiate the shifted logits and divide by their sum yourself",
    "log_softmax": "compute x - max - log(sum(exp(x - max))) yourself",
    "special_log_softmax": "compute x - max - log(sum(exp(x - max))) yourself",
    "logsumexp": "compute max + log(sum(exp(x - max))) yourself",
    "special_logsumexp": "compute max + log(sum(exp(x - max))) yourself",
    "logaddexp": _STABLE,
    "logaddexp2": _STABLE,
    "cross_entropy": "build it from log-probabilities, gather and a (weighted) mean",
    "cross_entropy_loss": "build it from log-probabilities, gather and a (weighted) mean",
    "nll_loss": "pick the target's log-probability with gather (or indexing) yourself",
    "nll_loss2d": "pick the target's log-probability with gather (or indexing) yourself",
    "nll_loss_nd": "pick the target's log-probability with gather (or indexing) yourself",
    "kl_div": _STABLE,
    "binary_cross_entropy": "use the stable form max(x, 0) - x*y + log1p(exp(-|x|))",
    "binary_cross_entropy_with_logits": "use the stable form max(x, 0) - x*y + log1p(exp(-|x|))",
    "soft_margin_loss": "use the stable form max(x, 0) - x*y + log1p(exp(-|x|))",
    "multilabel_soft_margin_loss": "use the stable form max(x, 0) - x*y + log1p(exp(-|x|))",
    "log_sigmoid": "-log(1 + exp(-x)) overflows; use -(max(-x, 0) + log1p(exp(-|x|)))",
    "logsigmoid": "-log(1 + exp(-x)) overflows; use -(max(-x, 0) + log1p(exp(-|x|)))",
    "softplus": "log(1 + exp(x)) overflows; use max(x, 0) + log1p(exp(-|x|))",
}

NONFINITE = ("exp() overflowed (exp(89) is already inf in float32, exp(710) in float64) — subtract the max "
             "along the dimension first: the log-sum-exp trick, m + log(sum(exp(x - m)))")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss.sum() if reduction == "sum" else loss.mean() if reduction == "mean" else loss


TOL32 = dict(atol=1e-5, rtol=1e-4)  # the reference computes in float32 too, in its own order

def result_traits(fn, x, y):
    """Driver: the dtype of fn(x, y) and whether it tracks gradients, with x requiring grad."""
    with untraced():
        x = x.detach().clone().requires_grad_(True)
    out = fn(x, y)
    if not isinstance(out, torch.Tensor):
        return {"dtype": None, "graph": False}
    return {"dtype": str(out.dtype), "graph": bool(out.requires_grad)}


# --- mse_loss --------------------------------------------------------------------------------------------


def _mse_ref(input, target, reduction="mean"):
    return F.mse_loss(input, target, reduction=reduction)  # F.mse_loss's third positional is size_average


def _mse_explain(got, expected, args, reduction="mean"):
    x, y = args[0].double(), args[1].double()
    r = args[2] if len(args) > 2 else reduction
    d = x - y
    return known_mistake(got.double(), [
        ("the mean divided by len(input), the size of the first dimension only — divide by numel(), not len(): "
         "sq.mean() or sq.sum() / sq.numel()", lambda: (d ** 2).sum() / len(x) if r == "mean" else None),
        ("looks like you summed where the mean was asked for (or the other way round) — reduction='mean' "
         "divides by the number of elements", lambda: _reduce(d ** 2, {"mean": "sum", "sum": "mean"}.get(r, r))),
        ("looks like the absolute error (L1), not the squared error", lambda: _reduce(d.abs(), r)),
        ("looks like the root of the mean (RMSE) — mse_loss takes no square root", lambda: _reduce(d ** 2, r).sqrt()),
        ("looks like the error was not squared", lambda: _reduce(d, r)),
        ("looks like you squared the summed/averaged error instead of averaging the squares",
         lambda: _reduce(d, r) ** 2),
    ], rtol=1e-4)


@exercise("04_losses", points=1, difficulty=1, minutes=5, hints=[
    "The mean squared error is the average of (input - target) ** 2 over every element.",
    "Compute the elementwise squared errors once, then reduce: 'none' returns them as they are, 'sum' adds "
    "them up, 'mean' averages them.",
    "sq = (input - target) ** 2; return sq if reduction == 'none' else sq.sum() if reduction == 'sum' "
    "else sq.mean()",
], forbidden={**FORBIDDEN, "mse_loss": "square the difference and reduce it yourself"})
def mse_loss(t, fn):
    with t.case("float64 (5, 3), reduction='mean': the result keeps the input's dtype and its graph"):
        traits = t.call(result_traits, fn, t.randn(5, 3), t.randn(5, 3))
        if traits["dtype"] not in (None, "torch.float64") and not traits["graph"]:
            raise Mismatch(f"the result is a new {traits['dtype']} tensor without a graph — it went through "
                           ".item() (or a Python number), which keeps only the value and loses the graph and the "
                           "dtype: return the tensor you computed, sq.mean(), not torch.tensor(sq.mean().item())")
    cases = [
        ("float64 (5, 3), reduction='mean'", (t.randn(5, 3), t.randn(5, 3)), {}),
        ("float64 (7,), reduction='sum'", (t.randn(7), t.randn(7), "sum"), {}),
        ("float64 (4, 2, 3), reduction='none'", (t.randn(4, 2, 3), t.randn(4, 2, 3), "none"), {}),
        ("float32 (6, 5), default reduction", (t.randn(6, 5, dtype=torch.float32),
                                               t.randn(6, 5, dtype=torch.float32)), {}),
        ("float32 magnitudes ~1e4 (3, 4), reduction='mean'", (t.randn(3, 4, dtype=torch.float32) * 1e4,
                                                             t.randn(3, 4, dtype=torch.float32) * 1e4, "mean"), {}),
        ("size-1 (1,), keyword reduction='sum'", (t.randn(1), t.randn(1)), {"reduction": "sum"}),
        ("float64 (2, 9), keyword reduction='none'", (t.randn(2, 9), t.randn(2, 9)), {"reduction": "none"}),
    ]
    for name, args, kwargs in cases:
        tol = TOL32 if args[0].dtype == torch.float32 else {}
        explain = lambda got, exp, a, kw=kwargs: _mse_explain(got, exp, a, kw.get("reduction", "mean"))
        t.compare(name, fn, args, _mse_ref, grad=True, wrt=(0, 1), kwargs=kwargs, explain=explain, **tol)


# --- huber_loss ------------------------------------------------------------------------------------------


def _huber_explain(got, expected, args, delta, reduction):
    x, y = args[0].double(), args[1].double()
    d = (x - y).abs()
    small = d < delta
    flip = {"mean": "sum", "sum": "mean"}.get(reduction, reduction)
    return known_mistake(got.double(), [
        ("the linear branch must be scaled by delta: delta * (|d| - 0.5*delta), not |d| - 0.5*delta",
         lambda: _reduce(torch.where(small, 0.5 * d ** 2, d - 0.5 * delta), reduction)),
        ("looks like smooth_l1_loss (quadratic part divided by delta, linear part |d| - delta/2) — Huber keeps "
         "0.5*d**2 and scales the linear part: delta * (|d| - 0.5*delta); the two agree only for delta=1",
         lambda: _reduce(torch.where(small, 0.5 * d ** 2 / delta, d - 0.5 * delta), reduction)),
        ("the quadratic part is missing its factor 0.5 (0.5 * d**2 for |d| < delta)",
         lambda: _reduce(torch.where(small, d ** 2, delta * (d - 0.5 * delta)), reduction)),
        ("the linear part should be delta * (|d| - 0.5*delta), so that it meets the parabola at |d| = delta",
         lambda: _reduce(torch.where(small, 0.5 * d ** 2, delta * d - 0.5 * delta), reduction)),
        ("the linear part should be delta * (|d| - 0.5*delta), so that it meets the parabola at |d| = delta",
         lambda: _reduce(torch.where(small, 0.5 * d ** 2, delta * d), reduction)),
        ("the branches are swapped: small errors (|d| < delta) are quadratic, large ones linear",
         lambda: _reduce(torch.where(~small, 0.5 * d ** 2, delta * (d - 0.5 * delta)), reduction)),
        ("looks like delta was ignored (always 1.0)",
         lambda: F.huber_loss(x, y, reduction=reduction, delta=1.0)),
        ("looks like you summed where the mean was asked for (or the other way round)",
         lambda: F.huber_loss(x, y, reduction=flip, delta=delta)),
    ], rtol=1e-4)


@exercise("04_losses", points=2, difficulty=1, minutes=10, hints=[
    "Huber is quadratic for small errors and linear for large ones: with d = input - target, "
    "0.5 * d**2 where |d| < delta, else delta * (|d| - 0.5 * delta).",
    "Compute both branches for every element and choose with torch.where(d.abs() < delta, quadratic, linear); "
    "then reduce as in mse_loss.",
    "With delta != 1 it is not smooth_l1: the linear part is delta * (|d| - 0.5*delta), and nothing is divided "
    "by delta.",
], forbidden={**FORBIDDEN, "huber_loss": "build it with torch.where from the two branches",
              "smooth_l1_loss": "build it with torch.where from the two branches (and it is not the same loss)"})
def huber_loss(t, fn):
    cases = [
        ("float64 (6, 4) errors on both sides of delta=1, defaults", (t.randn(6, 4) * 2, t.randn(6, 4)), {}),
        ("float64 (5, 3), delta=0.5, reduction='sum'", (t.randn(5, 3) * 1.5, t.randn(5, 3), 0.5, "sum"), {}),
        ("float64 (4, 5, 2), delta=2.0, reduction='none'", (t.randn(4, 5, 2) * 3, t.randn(4, 5, 2), 2.0, "none"),
         {}),
        ("float32 magnitudes ~1e4 (3, 4), delta=1.0", (t.randn(3, 4, dtype=torch.float32) * 1e4,
                                                     t.randn(3, 4, dtype=torch.float32) * 1e4), {}),
        ("float32 (9,), delta=0.1, reduction='mean'", (t.randn(9, dtype=torch.float32),
                                                      t.randn(9, dtype=torch.float32), 0.1, "mean"), {}),
        ("float64 (3, 7), keywords delta=3.0, reduction='none'", (t.randn(3, 7) * 4, t.randn(3, 7)),
         {"delta": 3.0, "reduction": "none"}),
        ("size-1 (1, 1), delta=0.25, keyword reduction='sum'", (t.randn(1, 1), t.randn(1, 1), 0.25),
         {"reduction": "sum"}),
    ]
    for name, args, kwargs in cases:
        delta = args[2] if len(args) > 2 else kwargs.get("delta", 1.0)
        reduction = args[3] if len(args) > 3 else kwargs.get("reduction", "mean")
        ref = lambda x, y, dl=delta, r=reduction, **_: F.huber_loss(x, y, reduction=r, delta=dl)
        explain = lambda got, exp, a, dl=delta, r=reduction: _huber_explain(got, exp, a, dl, r)
        tol = TOL32 if args[0].dtype == torch.float32 else {}
        t.compare(name, fn, args, ref, grad=True, wrt=(0, 1), kwargs=kwargs, explain=explain, **tol)


# --- softmax and log_softmax -----------------------------------------------------------------------------


def _softmax_cases(t):
    """(name, x, dim or None for the default) — shared by softmax and log_softmax."""
    rows = torch.cat([1e4 + t.randn(1, 6), -1e4 + t.randn(1, 6), t.randn(1, 6)])  # one row far from the others
    masked = t.randn(3, 5)
    masked[0, 1] = masked[2, 0] = masked[2, 4] = float("-inf")
    return [
        ("float64 (4, 7), default dim", t.randn(4, 7), None),
        ("float64 (3, 5, 2), dim=0", t.randn(3, 5, 2), 0),
        ("float64 (3, 5, 2), dim=1", t.randn(3, 5, 2), 1),
        ("float32 (2, 3, 4), dim=-2", t.randn(2, 3, 4, dtype=torch.float32), -2),
        ("float32 magnitudes ~1e4 (6, 9), dim=-1", t.randn(6, 9, dtype=torch.float32) * 1e4, -1),
        ("float64 magnitudes ~1e4 (5, 3), dim=0", t.randn(5, 3) * 1e4, 0),
        ("float64 rows around +1e4, -1e4 and 0 (3, 6), dim=1", rows, 1),
        ("float64 with -inf entries (masked logits) (3, 5), dim=-1", masked, -1),
        ("size-1 dims (1, 1), dim=-1", t.randn(1, 1), -1),
        ("empty batch (0, 5), dim=-1", t.randn(0, 5), -1),
    ]


def _softmax_explain(got, expected, args, log: bool):
    x = args[0].double()
    dim = args[1] if len(args) > 1 else -1
    if not torch.isfinite(got[torch.isfinite(expected)]).all():
        whole_slice = (torch.isneginf(got) & torch.isfinite(expected)).all(dim=dim).any() if got.numel() else False
        if log and torch.isneginf(got).any() and not torch.isnan(got).any() and not whole_slice:
            return ("-inf: log of a probability that underflowed to 0 — don't take log(softmax(x)); compute "
                    "x - m - log(sum(exp(x - m))) with m the max along dim")
        return ("nan/inf: " + NONFINITE + " (the max along `dim` with keepdim=True, not one global max: a row "
                "far below the global max underflows to 0/0)")
    g = got.double()
    candidates = []
    for other in range(x.ndim):
        if other != dim % x.ndim:
            candidates.append((f"normalised along dim {other} instead of dim={dim}",
                               lambda o=other: (F.log_softmax if log else F.softmax)(x, dim=o)))
    if log:
        exp = expected.double()
        off = ~torch.isclose(g, exp, rtol=1e-4, atol=1e-5)
        if off.any() and torch.allclose(g[off], g[off].max().expand(int(off.sum())), rtol=1e-6) \
                and (exp[off] < g[off]).all():
            return (f"clamping caps the result at log(eps) (here {g[off].max().item():.4g}); compute "
                    "x - m - log Σ exp(x - m), with m the max along dim")
        m = x.amax(dim=dim, keepdim=True)
        candidates += [
            ("the max you subtracted must be added back: logsumexp(x) = m + log(sum(exp(x - m)))",
             lambda: x - (x - m).exp().sum(dim, keepdim=True).log()),
            ("looks like x - m without the log-sum-exp term: subtract log(sum(exp(x - m))) too", lambda: x - m),
            ("looks like softmax, not its logarithm", lambda: F.softmax(x, dim=dim)),
        ]
    else:
        candidates += [
            ("divided by the sum of all elements, not the sum along dim (keepdim=True)",
             lambda: (x - x.max()).exp() / (x - x.max()).exp().sum()),
            ("looks like log_softmax, not softmax", lambda: F.log_softmax(x, dim=dim)),
        ]
    return known_mistake(g, candidates, rtol=1e-4)


def _check_softmax(t, fn, ref, log: bool):
    for name, x, dim in _softmax_cases(t):
        args = (x,) if dim is None else (x, dim)
        tol = TOL32 if x.dtype == torch.float32 else {}
        t.compare(name, fn, args, lambda x, dim=-1: ref(x, dim=dim), grad=True,
                  explain=lambda got, exp, a: _softmax_explain(got, exp, a, log), **tol)


@exercise("04_losses", points=2, difficulty=2, minutes=10, hints=[
    "softmax(x)_i = exp(x_i) / sum_j exp(x_j) along `dim`. Try it with x = 1000 * torch.ones(3) first and "
    "see what exp does.",
    "Subtracting the same number from every entry along `dim` does not change the result, so subtract the "
    "max: m = x.amax(dim=dim, keepdim=True). Now the largest exponent is exp(0) = 1.",
    "e = (x - x.amax(dim=dim, keepdim=True)).exp(); return e / e.sum(dim=dim, keepdim=True)",
], forbidden=FORBIDDEN)
def softmax(t, fn):
    _check_softmax(t, fn, F.softmax, log=False)


@exercise("04_losses", points=2, difficulty=2, minutes=10, hints=[
    "log_softmax(x) = x - log(sum(exp(x))) along `dim` — but exp overflows, and log(softmax(x)) underflows "
    "to log(0) = -inf for very unlikely classes.",
    "Use the log-sum-exp trick: with m = x.amax(dim=dim, keepdim=True), "
    "log(sum(exp(x))) = m + log(sum(exp(x - m))).",
    "z = x - x.amax(dim=dim, keepdim=True); return z - z.exp().sum(dim=dim, keepdim=True).log()",
], forbidden=FORBIDDEN)
def log_softmax(t, fn):
    _check_softmax(t, fn, F.log_softmax, log=True)


# --- cross_entropy ---------------------------------------------------------------------------------------


def _ce_variant(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                denominator="weights", smooth_weight="class", smooth_classes=None, probs=False,
                smooth_ignored=False):
    """Cross-entropy and its usual wrong variants, computed in float64 from F.log_softmax (check-side)."""
    x, n_classes = logits.double(), logits.shape[1]
    logp = F.log_softmax(x, dim=1)                                        # (N, C, *)
    score = F.softmax(x, dim=1) if probs else logp
    keep = target != ignore_index                                         # (N, *)
    safe = torch.where(keep, target, torch.zeros_like(target))
    w = torch.ones(n_classes, dtype=torch.float64) if weight is None else weight.double()
    wy = w[safe]                                                          # (N, *)
    nll = -score.gather(1, safe.unsqueeze(1)).squeeze(1)                  # (N, *)
    shape = [1, n_classes] + [1] * (x.ndim - 2)
    if smooth_weight == "class":
        smooth = -(score * w.view(shape)).sum(1)
    elif smooth_weight == "target":
        smooth = -score.sum(1) * wy
    else:
        smooth = -score.sum(1)
    k = smooth_classes or n_classes
    if k != n_classes:  # (1 - eps) on the target, eps / (C - 1) on every other class
        smooth = smooth - (-(score.gather(1, safe.unsqueeze(1)).squeeze(1)) * wy)
    eps = label_smoothing
    loss = ((1 - eps) * wy * nll + eps / k * smooth) * keep
    if smooth_ignored:  # the smoothing term left in at ignored targets
        loss = (1 - eps) * wy * nll * keep + eps / k * smooth
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    denom = {"weights": (wy * keep).sum(), "count": keep.sum(), "all": torch.tensor(float(target.numel())),
             "all_weights": wy.sum(), "raw_weights": w[target.clamp(0, n_classes - 1)].sum()}[denominator]
    return loss.sum() / denom


def _ce_explain(got, expected, args):
    logits, target, weight, ignore_index, reduction, eps = args
    ignored = bool((target == ignore_index).any())
    if not torch.isfinite(got).all():
        return "nan/inf: " + NONFINITE + " (the max over the class dimension, dim=1, keepdim=True)"
    v = lambda **kw: lambda: _ce_variant(logits, target, weight, ignore_index, reduction, eps, **kw)
    f = lambda **kw: lambda: F.cross_entropy(logits.double(), target, **{
        "weight": None if weight is None else weight.double(), "ignore_index": ignore_index,
        "reduction": reduction, "label_smoothing": eps, **kw})
    candidates = [
        ("probabilities instead of log-probabilities: the loss is -log p[target], with log p from "
         "log_softmax", v(probs=True)),
    ]
    if reduction == "mean":
        if ignored:
            candidates += [
                ("looks like you averaged over all targets including ignored ones — divide by the number (or "
                 "the total weight) of the targets that are not ignore_index", v(denominator="all")),
                ("looks like you averaged over all targets including ignored ones — divide by the total weight "
                 "of the targets that are not ignore_index", v(denominator="all_weights")),
                ("looks like you averaged over all targets including ignored ones — divide by the total weight "
                 "of the targets that are not ignore_index", v(denominator="raw_weights")),
            ]
        if weight is not None:
            candidates.append(("weight not applied to the mean's denominator: with weights the mean divides "
                               "by sum(weight[target]) over the non-ignored targets, not by their count",
                               v(denominator="count")))
        candidates.append(("looks like you summed where the mean was asked for", f(reduction="sum")))
    if reduction == "sum":
        candidates.append(("looks like you averaged where the sum was asked for", f(reduction="mean")))
    if weight is not None:
        candidates.append(("looks like the class weights were not applied (loss_i is weight[target_i] * "
                           "-log p[target_i])", f(weight=None)))
    if ignored and ignore_index >= 0:
        candidates.append(("targets equal to ignore_index were not ignored (their loss must be 0 and they "
                           "leave the mean's denominator)", f(ignore_index=-100)))
    if eps > 0:
        if ignored:
            candidates.append(("ignored targets still add the label-smoothing term — zero the label-smoothing "
                               "term at ignored targets too", v(smooth_ignored=True)))
        candidates += [
            ("label_smoothing ignored", f(label_smoothing=0.0)),
            ("label smoothing spreads eps over all C classes (the target included): eps / C each, plus "
             "1 - eps on the target", v(smooth_classes=logits.shape[1] - 1)),
        ]
        if weight is not None:
            candidates += [
                ("with weights, the smoothing term weighs each class's -log p by that class's weight: "
                 "sum_c weight[c] * -log p[c] * eps / C", v(smooth_weight="target")),
                ("with weights, the smoothing term weighs each class's -log p by that class's weight: "
                 "sum_c weight[c] * -log p[c] * eps / C", v(smooth_weight="none")),
            ]
    return known_mistake(got.double(), candidates, rtol=1e-4)


@exercise("04_losses", points=3, difficulty=3, minutes=30, hints=[
    "Start with the plain case: logp = log_softmax(logits) over dim=1 (the class dimension), then the "
    "loss of each target is -logp[n, target[n]] (gather along dim=1), and the mean averages them.",
    "weight and ignore_index: each target gets the weight w = weight[target] (1 without weights) and w = 0 "
    "where target == ignore_index (replace those targets by 0 before gathering, so the index is valid). "
    "'mean' is sum(w * nll) / sum(w) — not divided by the number of targets.",
    "label_smoothing eps: loss = (1 - eps) * w_target * nll + eps / C * sum_c weight[c] * -logp[c], still 0 "
    "for ignored targets, and the 'mean' divides that total by the same sum(w). For (N, C, d1, ...) inputs "
    "everything happens along dim=1: gather with target.unsqueeze(1), and view the weight as (1, C, 1, ...).",
], forbidden=FORBIDDEN)
def cross_entropy(t, fn):
    def targets(n, c, *rest, ignore=None, share=0.3):
        y = t.randint(0, c, (n, *rest))
        if ignore is not None:  # a share of the targets ignored, but never all of them
            drop = t.rand(n, *rest) < share
            drop.view(-1)[0] = False
            y = torch.where(drop, torch.full_like(y, ignore), y)
        return y

    def weight(c):
        return t.rand(c) * 2 + 0.1

    big = t.randn(8, 10, dtype=torch.float32) * 1e4
    cases = [
        ("(6, 5) defaults", (t.randn(6, 5), targets(6, 5)), {}),
        ("(7, 3), reduction='sum'", (t.randn(7, 3), targets(7, 3), None, -100, "sum"), {}),
        ("(5, 4), reduction='none'", (t.randn(5, 4), targets(5, 4), None, -100, "none"), {}),
        ("float32 logits ~1e4 (8, 10), defaults", (big, targets(8, 10)), {}),
        ("float64 logits ~1e4 (4, 6) with weight, reduction='sum'",
         (t.randn(4, 6) * 1e4, targets(4, 6), weight(6), -100, "sum"), {}),
        ("K-dim (3, 4, 5), target (3, 5)", (t.randn(3, 4, 5), targets(3, 4, 5)), {}),
        ("K-dim (2, 3, 4, 5), target (2, 4, 5), reduction='none'",
         (t.randn(2, 3, 4, 5), targets(2, 3, 4, 5), None, -100, "none"), {}),
        ("(9, 4) with weight, mean", (t.randn(9, 4), targets(9, 4), weight(4)), {}),
        ("(6, 3) with weight, reduction='none'", (t.randn(6, 3), targets(6, 3), weight(3), -100, "none"), {}),
        ("(10, 5) some targets = -100 (ignored), mean", (t.randn(10, 5), targets(10, 5, ignore=-100)), {}),
        ("(10, 4) ignore_index=2 with weight, mean",
         (t.randn(10, 4), targets(10, 4, ignore=2), weight(4), 2), {}),
        ("(8, 5) ignore_index=-100 with weight, mean",
         (t.randn(8, 5), targets(8, 5, ignore=-100, share=0.4), weight(5), -100, "mean"), {}),
        ("K-dim (2, 3, 6) ignore_index=-1, reduction='none'",
         (t.randn(2, 3, 6), targets(2, 3, 6, ignore=-1), None, -1, "none"), {}),
        ("(7, 6) label_smoothing=0.1, mean", (t.randn(7, 6), targets(7, 6)), {"label_smoothing": 0.1}),
        ("(8, 4) label_smoothing=0.2 with weight, mean",
         (t.randn(8, 4), targets(8, 4), weight(4), -100, "mean", 0.2), {}),
        ("(9, 5) label_smoothing=0.3, weight and ignored targets, mean",
         (t.randn(9, 5), targets(9, 5, ignore=-100), weight(5), -100, "mean", 0.3), {}),
        ("(9, 5) label_smoothing=0.3, weight and ignored targets, reduction='sum'",
         (t.randn(9, 5), targets(9, 5, ignore=-100), weight(5), -100, "sum", 0.3), {}),
        ("K-dim (2, 4, 3, 2) label_smoothing=0.15 with weight, reduction='none'",
         (t.randn(2, 4, 3, 2), targets(2, 4, 3, 2), weight(4), -100, "none", 0.15), {}),
        ("(1, 2) a single sample", (t.randn(1, 2), targets(1, 2)), {}),
        ("empty batch (0, 5), reduction='sum'", (t.randn(0, 5), targets(0, 5), None, -100, "sum"), {}),
    ]
    with t.case("K-dim logits (2, 3, 4), target (2, 4), reduction='none': classes on dim 1"):
        kdim = "logits may be (N, C, d1, ...): classes are on dim 1 and target is (N, d1, ...) — log_softmax " \
               "over dim=1, gather with target.unsqueeze(1), and view the weight as (1, C, 1, ...)"
        try:
            got = t.call(fn, t.randn(2, 3, 4), targets(2, 3, 4), None, -100, "none")
        except LearnerError as e:
            if str(e).startswith("called `"):
                raise
            raise Mismatch(f"{e}\n→ {kdim}") from None
        if isinstance(got, torch.Tensor) and tuple(got.shape) != (2, 4):
            raise Mismatch(f"expected shape (2, 4), got {tuple(got.shape)} — {kdim}")
    on_meta = {0, 6, 8, 9, 15}  # defaults, K-dim, weight, ignored targets, everything at once
    for i, (name, args, kwargs) in enumerate(cases):
        full = args + (None, -100, "mean", 0.0)[len(args) - 2:]
        full = full[:5] + (kwargs.get("label_smoothing", full[5]),)

        def ref(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
            return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                                   label_smoothing=label_smoothing)

        tol = TOL32 if args[0].dtype == torch.float32 else {}
        t.compare(name, fn, args, ref, grad=True, wrt=(0,), kwargs=kwargs, device_check=i in on_meta,
                  explain=lambda got, exp, a, full=full: _ce_explain(got, exp, full), **tol)


# --- binary_cross_entropy_with_logits --------------------------------------------------------------------


def _bce_explain(got, expected, args):
    x, y = args[0].double(), args[1].double()
    pw = None if len(args) < 3 or args[2] is None else args[2].double()
    reduction = args[3] if len(args) > 3 else "mean"
    if not torch.isfinite(got).all():
        return ("nan/inf for large |logits|: log(sigmoid(x)) and log(1 + exp(-x)) overflow or hit log(0) — "
                "use the stable form max(x, 0) - x*y + log1p(exp(-|x|)) (the same trick as subtracting the "
                "max first)")
    sp_neg = (-x).clamp(min=0) + (-x.abs()).exp().log1p()    # -log sigmoid(x)
    sp_pos = sp_neg + x                                      # -log(1 - sigmoid(x))
    one = torch.ones((), dtype=torch.float64)
    p = one if pw is None else pw
    flip = {"mean": "sum", "sum": "mean"}.get(reduction, reduction)
    x0 = args[0].detach()
    sig = torch.sigmoid(x0)
    candidates = []
    if reduction == "mean" and x.ndim > 1:
        candidates.append(("summed over the last dimension and averaged over the rest — mean averages over every "
                           "element: loss.mean()", lambda: F.binary_cross_entropy_with_logits(
                               x, y, pos_weight=pw, reduction="none").sum(-1).mean()))
    for e in (1e-7, 1e-8, 1e-12, 1e-6, 1e-10, 1e-15, 1e-5):
        for add in (True, False):
            lg = (lambda q, e=e: (q + e).log()) if add else (lambda q, e=e: q.clamp_min(e).log())
            candidates.append((
                "log(p + eps) caps the loss at -log(eps) — use the stable form max(x, 0) - x*y + log1p(exp(-|x|))",
                lambda lg=lg: _reduce(-(p * y * lg(sig).double() + (1 - y) * lg(1 - sig).double()), reduction)))
    if pw is not None:
        candidates += [
            ("the positive term is weighted by pos_weight: 1 + (pos_weight - 1) * y, not 1 + pos_weight * y",
             lambda: _reduce((1 - y) * x + (1 + p * y) * sp_neg, reduction)),
            ("pos_weight multiplies the positive term only: pos_weight * y * -log σ(x) + (1 - y) * "
             "-log(1 - σ(x))", lambda: _reduce(p * (y * sp_neg + (1 - y) * sp_pos), reduction)),
            ("pos_weight multiplies the positive term (the y * -log σ(x) part), not the negative one",
             lambda: _reduce(y * sp_neg + p * (1 - y) * sp_pos, reduction)),
            ("pos_weight was ignored", lambda: F.binary_cross_entropy_with_logits(x, y, reduction=reduction)),
        ]
    candidates += [
        ("the terms are swapped: y multiplies -log σ(x), (1 - y) multiplies -log(1 - σ(x))",
         lambda: _reduce(p * (1 - y) * sp_neg + y * sp_pos, reduction)),
        ("looks like the loss was not negated: -(y log σ(x) + (1 - y) log(1 - σ(x)))",
         lambda: -_reduce(p * y * sp_neg + (1 - y) * sp_pos, reduction)),
        ("looks like you summed where the mean was asked for (or the other way round)",
         lambda: F.binary_cross_entropy_with_logits(x, y, reduction=flip, pos_weight=pw)),
    ]
    return known_mistake(got.double(), candidates, rtol=1e-4)


@exercise("04_losses", points=3, difficulty=2, minutes=20, hints=[
    "With p = sigmoid(x), the loss is -(y * log p + (1 - y) * log(1 - p)). Written in logits: "
    "-log σ(x) = log(1 + exp(-x)) and -log(1 - σ(x)) = log(1 + exp(x)). Which of those overflows for "
    "x = -1e4?",
    "log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)) never overflows: the exponent is never positive. "
    "So -log σ(x) = max(-x, 0) + log1p(exp(-|x|)), and -log(1 - σ(x)) is the same plus x.",
    "loss = pos_weight * y * a + (1 - y) * (a + x) with a = (-x).clamp(min=0) + (-x.abs()).exp().log1p(); "
    "pos_weight (default 1) multiplies only the positive term and broadcasts over the last dimension. "
    "Then reduce.",
], forbidden=FORBIDDEN)
def binary_cross_entropy_with_logits(t, fn):
    def labels(*shape):
        return (t.rand(*shape) < 0.4).double()

    def ref(logits, target, pos_weight=None, reduction="mean"):
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)

    sign = torch.where(t.rand(4, 5) < 0.5, -1.0, 1.0)
    huge = (sign * (1e4 + t.rand(4, 5) * 100)).to(torch.float32)      # (4, 5) logits around ±1e4
    huge_y = (t.rand(4, 5) < 0.5).to(torch.float32)                    # half of them badly wrong: loss ~1e4
    cases = [
        ("float64 (6, 4) 0/1 targets, defaults", (t.randn(6, 4) * 3, labels(6, 4)), {}),
        ("float64 (5, 3) soft targets in [0, 1], reduction='sum'", (t.randn(5, 3), t.rand(5, 3), None, "sum"),
         {}),
        ("float64 (4, 3), reduction='none'", (t.randn(4, 3) * 2, labels(4, 3), None, "none"), {}),
        ("float64 (8, 3) with pos_weight (3,), mean", (t.randn(8, 3) * 2, labels(8, 3), t.rand(3) * 4 + 0.2),
         {}),
        ("float64 (2, 5, 3) with pos_weight (3,), reduction='none'",
         (t.randn(2, 5, 3) * 2, t.rand(2, 5, 3), t.rand(3) * 4 + 0.2, "none"), {}),
        ("float32 logits ±1e4 (4, 5), mean", (huge, huge_y), {}),
        ("float32 logits ±1e4 (4, 5) with pos_weight (5,), reduction='none'",
         (huge, huge_y, (t.rand(5) * 3 + 0.5).to(torch.float32), "none"), {}),
        ("float64 logits ~1e4 (3, 4) with pos_weight (4,), reduction='sum'",
         (t.randn(3, 4) * 1e4, labels(3, 4), t.rand(4) * 3 + 0.5, "sum"), {}),
        ("float32 (7,) soft targets", (t.randn(7, dtype=torch.float32), t.rand(7, dtype=torch.float32)), {}),
        ("size-1 (1,), keyword reduction='sum'", (t.randn(1), labels(1)), {"reduction": "sum"}),
    ]
    on_meta = {0, 3, 6}  # without pos_weight, with it, with it for large logits
    for i, (name, args, kwargs) in enumerate(cases):
        tol = TOL32 if args[0].dtype == torch.float32 else {}
        full = args + (None, "mean")[len(args) - 2:]
        full = full[:3] + (kwargs.get("reduction", full[3]),)
        t.compare(name, fn, args, ref, grad=True, wrt=(0, 1), kwargs=kwargs, device_check=i in on_meta,
                  explain=lambda got, exp, a, full=full: _bce_explain(got, exp, full), **tol)
