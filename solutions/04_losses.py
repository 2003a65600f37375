# %% [markdown]
# # 04 · Losses: turning "how wrong" into one number you can differentiate
#
# A model makes predictions; a **loss** compares them with the right answers and returns a single number
# that is large when the predictions are bad and small when they are good. Training is nothing more than
# nudging the parameters, again and again, in the direction that makes this number smaller — so the loss
# *defines* what the model learns. Choose it carelessly and the model learns something else, or nothing.
#
# In this lesson you will write, from scratch, the losses you will use for years: mean squared error, Huber,
# softmax and log-softmax, cross-entropy (with class weights, ignored targets, label smoothing and image-shaped
# inputs) and binary cross-entropy on logits. Each must agree with `torch.nn.functional` in value *and*
# gradient, also when the logits are as large as 10 000 — which is where most hand-written losses break.
#
# Put everything a loss needs (a helper function, an extra import) in its own exercise cell: graders run only those
# cells, on top of the lesson's imports.

# %%
from grader import check, hint

# %%
import warnings

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F

_ = torch.manual_seed(0)  # the same random examples on every run

# %% [markdown]
# ## 1. What a loss must be
#
# Three properties matter:
#
# - **One number (a 0-dim tensor).** `loss.backward()` needs a scalar to start from: it computes
#   d(loss)/d(parameter) for every parameter. The loss of a batch is therefore *reduced*: usually the mean of
#   the per-sample losses, so that its size does not depend on the batch size.
# - **Differentiable where it matters.** Gradients flow from the loss back into the model. A loss built from
#   `argmax`, comparisons or `.item()` has no useful gradient, however well it measures quality — that is
#   why we train on cross-entropy but *report* accuracy.
# - **Lower is better, and the minimum is the thing you want.** The mean squared error is minimised by
#   predicting the mean of the targets; the mean absolute error by predicting their median. Same data,
#   different losses, different models.
#
# Let us make this concrete with a batch of four predictions of a house price (in units of 100 000).

# %%
pred = torch.tensor([2.5, 0.0, 2.1, 7.8], requires_grad=True)    # (N,) what the model said
target = torch.tensor([3.0, -0.5, 2.0, 7.0])                      # (N,) the truth

per_sample = (pred - target) ** 2                                 # (N,) one loss per sample
loss = per_sample.mean()                                          # ()   one number for the batch
loss.backward()
print("per-sample:", per_sample.detach())
print("loss:      ", loss.item())
print("d loss / d pred:", pred.grad)   # 2 * (pred - target) / N: pushes each prediction toward its target

# %% [markdown]
# ## 2. Regression losses and `reduction`
#
# With the residual $d = \text{input} - \text{target}$, the three classic regression losses are
#
# | loss | per element | gradient w.r.t. the input | PyTorch |
# | --- | --- | --- | --- |
# | mean squared error | $d^2$ | $2d$ | `nn.MSELoss`, `F.mse_loss` |
# | mean absolute error | $\lvert d\rvert$ | $\operatorname{sign}(d)$ | `nn.L1Loss`, `F.l1_loss` |
# | Huber | $\tfrac12 d^2$ if $\lvert d\rvert < \delta$, else $\delta(\lvert d\rvert - \tfrac12\delta)$ | $d$, clipped to $[-\delta, \delta]$ | `nn.HuberLoss`, `F.huber_loss` |
#
# The squared error punishes a residual of 10 a hundred times more than a residual of 1, so a single
# outlier can dominate the whole batch (and its gradient is 10 times larger, too). The absolute error treats
# all residuals alike, but its gradient is ±1 even for a tiny residual, so it never "slows down" near the
# answer. Huber is the compromise: quadratic near zero (smooth, gradients shrink as you approach the target),
# linear far away (an outlier pulls with force at most $\delta$).
#
# Every built-in loss takes `reduction`:
#
# - `"mean"` (the default): the average over **every element** — not just over the batch dimension;
# - `"sum"`: the total;
# - `"none"`: the per-element losses, same shape as the input, for when you want to weight or mask them
#   yourself before reducing.

# %%
pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.5, 9.0]])          # (N=2, D=3)
target = torch.tensor([[1.5, 2.0, 2.0], [0.0, 0.0, 1.0]])        # (N, D)
for reduction in ["none", "sum", "mean"]:
    print(f"{reduction:>4}:", F.mse_loss(pred, target, reduction=reduction))
print("Huber, delta=1:", F.huber_loss(pred, target, delta=1.0, reduction="none"))

# %% [markdown]
# Here is the picture: the three losses (left) and their gradients (right) as a function of the residual.
# Look at the gradients: the squared error's grows without bound, L1's jumps from -1 to +1, Huber's is the
# squared error's near zero and is capped at ±δ.

# %%
d = torch.linspace(-3, 3, 601, requires_grad=True)                # (601,) residuals
zero = torch.zeros(601)
curves = {
    "MSE  d²": F.mse_loss(d, zero, reduction="none"),
    "L1  |d|": F.l1_loss(d, zero, reduction="none"),
    "Huber δ=1": F.huber_loss(d, zero, delta=1.0, reduction="none"),
}
fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.5))
for label, values in curves.items():
    (grad,) = torch.autograd.grad(values.sum(), d)                # elementwise derivative
    ax_loss.plot(d.detach(), values.detach(), label=label)
    ax_grad.plot(d.detach(), grad, label=label)
ax_loss.set(title="loss", xlabel="residual d = input - target", ylim=(0, 5))
ax_grad.set(title="gradient d loss / d input", xlabel="residual d", ylim=(-4, 4))
ax_loss.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Pitfall: a target of the wrong shape is broadcast, silently
#
# A model with one output produces predictions of shape `(N, 1)`; the targets are usually `(N,)`. Subtracting
# them broadcasts to `(N, N)`: every prediction is compared with *every* target. The loss is a perfectly
# finite number, training runs, and the model learns to predict the mean. PyTorch only warns:

# %%
pred = torch.randn(4, 1)      # (N, 1) — a Linear(…, 1) output
target = torch.randn(4)       # (N,)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    wrong = F.mse_loss(pred, target)                              # compares (4, 1) with (4,) → (4, 4)
print("silently broadcast:", wrong.item())
print("warning:", caught[0].message)
print("right:             ", F.mse_loss(pred.squeeze(1), target).item())   # (N,) vs (N,)

# %% [markdown]
# The fix is to make the shapes equal yourself — `pred.squeeze(1)` or `target.unsqueeze(1)` — and to
# `print(pred.shape, target.shape)` whenever a regression model refuses to learn.
#
# ## 3. `nn` classes and `nn.functional`
#
# Every loss exists twice: as a function in `torch.nn.functional` (`F.mse_loss(pred, target)`) and as a
# class in `torch.nn` (`nn.MSELoss()`), whose object stores the options and calls the function. They
# compute the same thing. The class is handy when the loss is part of a configuration (`criterion =
# nn.CrossEntropyLoss(label_smoothing=0.1)` once, `criterion(logits, y)` in the loop) and when it holds a
# tensor such as class weights, which then moves with `.to(device)`; the function is handy everywhere
# else.
#
# The classic slip is to pass the tensors to the *constructor*:

# %%
pred, target = torch.randn(4), torch.randn(4)
try:
    nn.MSELoss(pred, target)               # the constructor's arguments are options, not data
except RuntimeError as e:
    print("RuntimeError:", e)
criterion = nn.MSELoss()                   # make the loss object once…
print(criterion(pred, target), F.mse_loss(pred, target))          # …then call it: same value

# %% [markdown]
# ### Retired arguments: `size_average` and `reduce`
#
# Before `reduction` existed (PyTorch 0.4), every loss took two booleans, and old code and old answers online
# still use them. `reduce=False` meant "no reduction at all", whatever `size_average` said; otherwise
# `size_average=False` meant "add up" and `size_average=True` (the default) meant "average". They map onto
# `reduction` like this:
#
# | old arguments | `reduction=` |
# | --- | --- |
# | `reduce=False` (any `size_average`) | `"none"` |
# | `size_average=False` | `"sum"` |
# | `size_average=True` or neither | `"mean"` |
#
# PyTorch still accepts them, translates them and warns. The trap: in `F.mse_loss(input, target, ...)` the
# **third positional argument is still `size_average`**, so `F.mse_loss(pred, target, "sum")` reads the
# string `"sum"` as a true `size_average` and returns the **mean**. Always pass `reduction=` by keyword.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for legacy in [dict(reduce=False), dict(size_average=False), dict(size_average=True)]:
        print(f"nn.MSELoss(**{legacy}) -> reduction={nn.MSELoss(**legacy).reduction!r}")
    positional = F.mse_loss(pred, target, "sum")                  # "sum" lands in size_average
print("the warning:", caught[-1].message)
print("F.mse_loss(pred, target, 'sum'):   ", positional.item())
print("F.mse_loss(..., reduction='sum'):  ", F.mse_loss(pred, target, reduction="sum").item())
print("F.mse_loss(..., reduction='mean'): ", F.mse_loss(pred, target, reduction="mean").item())

# %% [markdown]
# ## Exercise: `mse_loss`
#
# Write `mse_loss(input, target, reduction="mean")`: the squared error $(\text{input} - \text{target})^2$ of
# each element, then reduced — `"mean"` averages over all elements, `"sum"` adds them up and `"none"`
# returns them with the input's shape. `input` and `target` have the same shape. It must match
# `F.mse_loss` in value and in the gradients with respect to both `input` and `target`, for float32 and
# float64, and must not modify its inputs. `F.mse_loss` itself is off limits.

# %%
def mse_loss(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error between input and target, reduced by 'mean', 'sum' or 'none'."""
    ### BEGIN SOLUTION
    squared = (input - target) ** 2                               # same shape as input
    if reduction == "none":
        return squared
    if reduction == "sum":
        return squared.sum()
    return squared.mean()
    ### END SOLUTION


# %%
check(mse_loss)

# %% [markdown]
# ## Exercise: `huber_loss`
#
# Write `huber_loss(input, target, delta=1.0, reduction="mean")`. With $d = \text{input} - \text{target}$,
# each element's loss is $\tfrac12 d^2$ where $\lvert d\rvert < \delta$ and
# $\delta\,(\lvert d\rvert - \tfrac12\delta)$ elsewhere; then reduce as in `mse_loss`. The two pieces meet
# at $\lvert d\rvert = \delta$ with the same value and the same slope.
#
# Careful: `F.smooth_l1_loss` with `beta = delta` is a *different* loss (it is Huber divided by delta), so the
# two agree only for `delta = 1`. The check uses other deltas too. `F.huber_loss` and `F.smooth_l1_loss` are
# off limits; `torch.where(condition, a, b)` picks elementwise between two tensors.

# %%
def huber_loss(input: torch.Tensor, target: torch.Tensor, delta: float = 1.0,
               reduction: str = "mean") -> torch.Tensor:
    """Huber loss: quadratic for residuals below delta, linear above, then reduced."""
    ### BEGIN SOLUTION
    d = (input - target).abs()                                    # same shape as input
    per_element = torch.where(d < delta, 0.5 * d ** 2, delta * (d - 0.5 * delta))
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return per_element.sum()
    return per_element.mean()
    ### END SOLUTION


# %%
check(huber_loss)

# %% [markdown]
# ## 4. Logits and probabilities
#
# A classifier with $C$ classes ends with a `Linear(…, C)` layer and outputs, for each sample, $C$ real
# numbers of any size and sign: the **logits**. They are scores, not probabilities. **Softmax** turns a
# vector of logits $z$ into a probability distribution:
#
# $$\operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_j e^{z_j}}$$
#
# Every entry is positive and they sum to 1. Softmax only cares about *differences* between logits: adding
# the same constant to all of them multiplies numerator and denominator by the same $e^c$. And it is a
# "soft" version of argmax: the largest logit gets the largest probability, and when the gaps grow, the
# probabilities approach one-hot.
#
# For two classes (or for many independent yes/no questions) one logit per question is enough, and the
# **sigmoid** $\sigma(x) = 1 / (1 + e^{-x})$ turns it into the probability of "yes"; it is exactly a softmax
# over the two logits $[x, 0]$.
#
# PyTorch's classification losses take **logits**, not probabilities. The reason is numerical, and it is
# the heart of this lesson.

# %%
logits = torch.tensor([[2.0, 1.0, -1.0],          # (N=2, C=3)
                       [0.5, 0.5, 3.0]])
probs = F.softmax(logits, dim=1)                   # (N, C): softmax over the class dimension
print(probs)
print("rows sum to", probs.sum(dim=1))
print("shift-invariant:", torch.allclose(F.softmax(logits + 100, dim=1), probs))
print("sigmoid(x) == softmax([x, 0])[0]:", torch.sigmoid(torch.tensor(1.3)).item(),
      F.softmax(torch.tensor([1.3, 0.0]), dim=0)[0].item())

# %% [markdown]
# ## 5. Softmax overflows — unless you subtract the max
#
# `exp` grows fast: in float32 the largest finite number is about $3.4 \times 10^{38}$, so $e^{89}$ is
# already `inf`; in float64, $e^{710}$ is. Logits of a few hundred are common (an untrained network, a
# large learning rate, a temperature of 0.01), and then the naive formula computes
# $\infty / \infty = $ `nan`. Very negative logits fail the other way: $e^{-104}$ is 0 in float32, and a
# row whose entries are *all* very negative becomes $0/0$.
#
# The fix uses the shift invariance: subtract the row's maximum $m$ before exponentiating.
#
# $$\operatorname{softmax}(z)_i = \frac{e^{z_i - m}}{\sum_j e^{z_j - m}}, \qquad m = \max_j z_j$$
#
# Now the largest exponent is $e^0 = 1$, nothing overflows, and the denominator is at least 1, so nothing
# divides by 0. The entries that do underflow to 0 are the ones whose true probability is below $10^{-38}$
# anyway.
#
# The picture: logits $[a, 0, -a]$ for growing $a$. Left, the stable softmax saturates smoothly toward
# $[1, 0, 0]$; right, the reason the naive formula fails: in float32, $e^{a}$ passes the largest representable
# number at $a \approx 88.7$, becomes `inf`, and the naive softmax returns `inf / inf = nan` — while the
# shifted exponential never exceeds 1.

# %%
a = torch.linspace(0, 120, 481)                                   # (A,)
z = torch.stack([a, torch.zeros_like(a), -a], dim=1)              # (A, 3) logits [a, 0, -a], float32
stable = F.softmax(z, dim=1)                                      # (A, 3)
naive = z.exp() / z.exp().sum(dim=1, keepdim=True)                # (A, 3) inf / inf = nan for large a

fig, (ax_s, ax_n) = plt.subplots(1, 2, figsize=(10, 3.5))
for i, label in enumerate(["p(a)", "p(0)", "p(-a)"]):
    ax_s.plot(a, stable[:, i], label=label)
ax_s.set(title="stable softmax of [a, 0, -a]", xlabel="a", xlim=(0, 10))
ax_s.legend()
broken = torch.isnan(naive[:, 0])                                 # (A,) where the naive softmax is nan
ax_n.semilogy(a, z.exp()[:, 0], label="naive: exp(a)")           # inf is not drawn: the line just stops
ax_n.semilogy(a, (z - z.amax(dim=1, keepdim=True)).exp()[:, 0], label="shifted: exp(a - max) = 1")
ax_n.axhline(torch.finfo(torch.float32).max, color="gray", ls=":", label="largest float32 ≈ 3.4e38")
ax_n.axvspan(a[broken].min().item(), a.max().item(), color="red", alpha=0.1, label="naive softmax is nan")
ax_n.set(title="the largest exponential, in float32", xlabel="a")
ax_n.legend(loc="center left", fontsize=8)
plt.tight_layout()
plt.show()
print("naive breaks from a =", a[broken].min().item(), "· exp(88.7) =", torch.tensor(88.7).exp().item(),
      "· exp(88.8) =", torch.tensor(88.8).exp().item())

# %% [markdown]
# In code, the max goes along the same dimension as the sum, with `keepdim=True` so that it broadcasts
# back: `x.amax(dim=dim, keepdim=True)` has shape `(N, 1)` for an `(N, C)` input and `dim=1`. One global
# `x.max()` is not enough: a row far below the global maximum still underflows to `0 / 0`.

# %%
x = torch.tensor([[1000.0, 999.0, 990.0],       # (N=2, C=3): one row of huge logits,
                  [-1000.0, -1001.0, -1010.0]])  # one of very negative ones
m_row = x.amax(dim=1, keepdim=True)                                # (N, 1)
e = (x - m_row).exp()                                              # (N, C), every entry in (0, 1]
print("per-row max:", e / e.sum(dim=1, keepdim=True))
e_global = (x - x.max()).exp()                                     # second row: exp(-2000) = 0
print("global max: ", e_global / e_global.sum(dim=1, keepdim=True))

# %% [markdown]
# ## Exercise: `softmax`
#
# Write `softmax(x, dim=-1)`: the softmax of `x` along dimension `dim`, for inputs of any number of
# dimensions and any `dim` (negative ones included). It must stay finite and exact for logits as large as
# ±10 000, in float32 and float64, and handle `-inf` entries (masked-out logits get probability 0). Match
# `F.softmax` in value and gradient, keep the input's dtype, and don't modify `x`. `softmax`,
# `log_softmax`, `logsumexp` and the losses built on them are off limits, in every namespace (`torch.`,
# `F.`, `torch.special.`, tensor methods).

# %%
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of x along dim, computed stably by subtracting the max first."""
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)                   # largest entry along dim becomes 0
    e = shifted.exp()                                             # in [0, 1]
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %%
check(softmax)

# %% [markdown]
# ## 6. Log-probabilities and the log-sum-exp trick
#
# Losses need $\log p$, not $p$. Computing `softmax(x).log()` is a trap: a probability that underflowed to 0
# becomes $\log 0 = -\infty$, although the true log-probability, say $-1500$, is a perfectly ordinary number.
# Worse, the gradient of the log at 0 is infinite, so one such entry turns the whole backward pass into
# `nan`.
#
# Take the logarithm on paper instead:
#
# $$\log \operatorname{softmax}(z)_i = z_i - \log \sum_j e^{z_j} = (z_i - m) - \log \sum_j e^{z_j - m}$$
#
# The term $\log\sum_j e^{z_j}$ is called **log-sum-exp**, and computing it as
# $m + \log \sum_j e^{z_j - m}$ is the **log-sum-exp trick**. The sum is at least 1, so its log is finite,
# and no exponential can overflow. This is `F.log_softmax`.

# %%
z = torch.tensor([800.0, 0.0, -700.0])                            # (C,) float32
print("log(softmax(z)):", F.softmax(z, dim=0).log())              # -inf where p underflowed
print("log_softmax(z): ", F.log_softmax(z, dim=0))                # exact: 0, -800, -1500

zg = z.clone().requires_grad_()
F.softmax(zg, dim=0).log()[2].backward()
print("gradient through log(softmax):", zg.grad)                  # nan: 0 * inf inside the backward

# %% [markdown]
# ## Exercise: `log_softmax`
#
# Write `log_softmax(x, dim=-1)`: the logarithm of the softmax along `dim`, computed with the log-sum-exp
# trick, so that it is exact where `softmax(x).log()` gives `-inf`. Same requirements as `softmax`:
# any `dim`, logits up to ±10 000, float32 and float64, `-inf` entries, value and gradient equal to
# `F.log_softmax`, the same forbidden functions.

# %%
def log_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Log of the softmax of x along dim, via the log-sum-exp trick."""
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)                   # (…, 1 along dim) max subtracted
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()
    ### END SOLUTION


# %%
check(log_softmax)

# %% [markdown]
# ## 7. Cross-entropy = log-softmax + negative log-likelihood
#
# For a classifier, the natural loss is the **negative log-likelihood** of the right answer: if the model
# gives the true class $y$ probability $p_y$, the loss is $-\log p_y$. It is 0 for a certain, correct
# prediction and grows without bound as $p_y \to 0$: confident mistakes cost the most.
#
# `F.cross_entropy(logits, target)` is exactly this, in two steps you already know:
#
# 1. `logp = F.log_softmax(logits, dim=1)` — the class dimension is dimension 1;
# 2. `F.nll_loss(logp, target)` — pick $-\text{logp}[n, y_n]$ for each sample and average.
#
# `target` holds **class indices**: an integer (`torch.long`) tensor of shape `(N,)` with values in
# `0 … C-1` — not one-hot vectors. (`cross_entropy` also accepts a float tensor of class *probabilities*
# with the logits' shape, shown at the end of this section; indices are by far the common case, and the
# exercise uses them.) Its gradient is beautifully simple: for each sample,
# $\partial \text{loss} / \partial \text{logits} = \text{softmax}(\text{logits}) - \text{onehot}(y)$ (divided
# by $N$ for the mean): push the right class up, everything else down, in proportion to how much
# probability it wrongly holds.

# %%
logits = torch.tensor([[2.0, 0.5, -1.0],        # (N=4, C=3)
                       [0.1, 0.2, 3.0],
                       [1.0, 1.0, 1.0],
                       [-2.0, 4.0, 0.0]], requires_grad=True)
y = torch.tensor([0, 2, 1, 0])                  # (N,) class indices, dtype long

logp = F.log_softmax(logits, dim=1)                               # (N, C)
picked = logp[torch.arange(4), y]                                 # (N,) log p of each true class
print("by hand:      ", -picked.mean().item())
print("nll_loss:     ", F.nll_loss(logp, y).item())
print("cross_entropy:", F.cross_entropy(logits, y).item())

F.cross_entropy(logits, y).backward()
expected_grad = (F.softmax(logits, dim=1) - F.one_hot(y, 3)) / 4
print("gradient is (softmax - onehot) / N:", torch.allclose(logits.grad, expected_grad))

# %% [markdown]
# ### Pitfalls with targets
#
# The target must be an integer tensor of class indices, each in range. Float targets of a different shape
# than the logits, and indices that are out of range, both fail:

# %%
logits = torch.randn(3, 4)                                        # (N=3, C=4)
for bad in [torch.tensor([0.0, 2.0, 1.0]), torch.tensor([0, 4, 1])]:
    try:
        F.cross_entropy(logits, bad)
    except (RuntimeError, IndexError) as e:
        print(f"{type(e).__name__}: {e}")
print("fixed:", F.cross_entropy(logits, torch.tensor([0.0, 2.0, 1.0]).long()))

# %% [markdown]
# ### Pitfall: softmax *before* `cross_entropy`
#
# `cross_entropy` applies log-softmax itself. Feeding it probabilities runs without any error, but it takes a
# softmax of a softmax: the "logits" it sees are squeezed into $[0, 1]$, so the loss can no longer go near 0,
# and a confidently wrong prediction barely produces a gradient. Compare:

# %%
logits = torch.tensor([[8.0, -4.0, 0.0]], requires_grad=True)    # (1, 3): sure of class 0…
y = torch.tensor([1])                                             # …but the answer is class 1
for name, inputs in [("logits (right)", logits), ("softmax(logits) (wrong)", F.softmax(logits, dim=1))]:
    loss = F.cross_entropy(inputs, y)
    (grad,) = torch.autograd.grad(loss, logits)
    print(f"{name:24} loss {loss.item():7.3f}   |gradient| {grad.norm().item():.5f}")

# %% [markdown]
# ### Class weights, ignored targets, label smoothing
#
# `F.cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0)`
# has three options you will meet in real projects. Write $\ell_n = -\log p_{n, y_n}$ for the loss of sample
# $n$ and $w_{y_n}$ for the weight of its target class ($1$ without weights):
#
# - **`weight`**, a `(C,)` tensor, rescales each sample's loss by the weight of its *target* class:
#   $w_{y_n}\,\ell_n$. Rare classes get large weights so they are not drowned out. The `"mean"` is then a
#   **weighted mean**: $\sum_n w_{y_n} \ell_n / \sum_n w_{y_n}$ — divided by the total weight, not by $N$.
# - **`ignore_index`**: samples whose target equals it contribute 0 to the loss and **leave the
#   denominator** of the mean. Padding tokens in a batch of sentences are the classic use; the default
#   `-100` is a value that can never be a real class.
# - **`label_smoothing`** $\varepsilon$: instead of asking for probability 1 on the true class, the target
#   distribution puts $1 - \varepsilon$ there plus $\varepsilon / C$ on **every** class (the true one
#   included). The loss becomes
#   $(1-\varepsilon)\,w_{y}\,\ell + \tfrac{\varepsilon}{C}\sum_c w_c\,(-\log p_c)$, and with weights the
#   smoothing term weighs each class $c$ by its own $w_c$. Ignored targets still contribute 0, and the mean
#   still divides by $\sum_n w_{y_n}$ over the kept targets. It keeps a model from becoming
#   overconfident.

# %%
logits = torch.randn(5, 3)                                        # (N=5, C=3)
y = torch.tensor([0, 2, -100, 1, 2])                              # (N,), the third target is ignored
w = torch.tensor([1.0, 2.0, 0.5])                                 # (C,) class weights

nll = -F.log_softmax(logits, dim=1)[torch.arange(5), y.clamp(min=0)]   # (N,), clamp makes -100 a valid index
keep = y != -100                                                  # (N,) bool
wy = w[y.clamp(min=0)] * keep                                     # (N,) weight of each kept target, else 0
print("weighted mean, by hand:", ((wy * nll).sum() / wy.sum()).item())
print("F.cross_entropy:       ", F.cross_entropy(logits, y, weight=w).item())
print("per sample ('none'):   ", F.cross_entropy(logits, y, weight=w, reduction="none"))
print("with label smoothing:  ", F.cross_entropy(logits, y, weight=w, label_smoothing=0.1).item())

# %% [markdown]
# ### Class-probability ("soft") targets
#
# The target can also be a whole distribution per sample: a float tensor $q$ with the logits' shape, each row
# non-negative and summing to 1. The loss of a sample is then the cross-entropy between the two
# distributions,
#
# $$\ell_n = -\sum_c q_{n,c} \log p_{n,c},$$
#
# which is $-\log p_{n, y_n}$ again when $q_n$ is one-hot. Soft targets come from a teacher model's
# probabilities (distillation), from mixing two images and their labels (mixup), or from several annotators
# who disagreed. PyTorch tells the two kinds of target apart by dtype and shape: integer `(N,)` means indices,
# float `(N, C)` means probabilities.
#
# Label smoothing is one such distribution, written down once for all samples:
# $q = (1 - \varepsilon)\,\text{onehot}(y) + \varepsilon / C$. Building it by hand gives exactly the loss of
# `label_smoothing=ε`:

# %%
logits = torch.randn(6, 4, dtype=torch.float64)                  # (N=6, C=4)
y = torch.tensor([0, 3, 1, 1, 2, 0])                              # (N,) class indices
eps = 0.1
q = (1 - eps) * F.one_hot(y, num_classes=4).double() + eps / 4   # (N, C), every row sums to 1
by_hand = -(q * F.log_softmax(logits, dim=1)).sum(dim=1).mean()  # mean over samples of -sum_c q_c log p_c
print("soft targets q:          ", F.cross_entropy(logits, q).item())
print("by hand:                 ", by_hand.item())
print("indices, label_smoothing:", F.cross_entropy(logits, y, label_smoothing=eps).item())
print("rows of q sum to", q.sum(dim=1))

# %% [markdown]
# Two differences remain between the kinds of target. `ignore_index` exists only for indices (a distribution
# cannot be "ignored"; give that sample zero weight yourself). And with class `weight`s, the `"mean"` of
# probability targets divides by $N$, while that of index targets divides by the sum of the target classes'
# weights — so with weights the two agree for `reduction="sum"` but not for `"mean"`:

# %%
w = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)      # (C,)
for reduction in ["sum", "mean"]:
    soft = F.cross_entropy(logits, q, weight=w, reduction=reduction).item()
    hard = F.cross_entropy(logits, y, weight=w, reduction=reduction, label_smoothing=eps).item()
    print(f"{reduction:>4}: soft targets {soft:.6f}   indices + label_smoothing {hard:.6f}")

# %% [markdown]
# ### Inputs with extra dimensions
#
# For dense predictions — a class per pixel in segmentation, a token per position in language modelling —
# logits have shape `(N, C, d1, d2, …)` and targets `(N, d1, d2, …)`: the class dimension is **always
# dimension 1**, and everything else is just more samples. `"mean"` averages over all `N·d1·d2·…` of them.
#
# The pitfall: a language model naturally produces `(B, T, C)` (class last). Pass it as it is and PyTorch
# reads T as the class dimension. Either move the classes to dimension 1, or flatten to `(B·T, C)`:

# %%
B, T, C = 2, 5, 7
logits = torch.randn(B, T, C)                                     # (B, T, C) — classes last
tokens = torch.randint(0, C, (B, T))                              # (B, T)
try:
    F.cross_entropy(logits, tokens)                               # reads T=5 as the number of classes
except (RuntimeError, ValueError) as e:
    print(f"{type(e).__name__}: {e}")
a = F.cross_entropy(logits.transpose(1, 2), tokens)               # (B, C, T) and (B, T)
b = F.cross_entropy(logits.reshape(B * T, C), tokens.reshape(B * T))   # (B·T, C) and (B·T,)
print(a.item(), b.item())

# %% [markdown]
# ## Exercise: `cross_entropy`
#
# Write `cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
# label_smoothing=0.0)` with the exact semantics of `F.cross_entropy` for class-index targets:
#
# - `logits` is `(N, C)` or `(N, C, d1, …)`, `target` is `(N,)` or `(N, d1, …)` (dtype long), the classes
#   are along dimension 1;
# - `weight` is `None` or a `(C,)` tensor; targets equal to `ignore_index` contribute 0 and leave the
#   mean's denominator (which is the sum of the kept targets' weights);
# - `reduction` is `"mean"`, `"sum"` or `"none"` (then the result has the target's shape, 0 where ignored);
# - `label_smoothing` as described above, with and without weights.
#
# Value and gradient (w.r.t. `logits`) must match for logits up to ±10 000. `softmax`, `log_softmax`,
# `logsumexp`, `cross_entropy`, `nll_loss` and the other loss functions are off limits — you may of course
# copy the idea of your own `log_softmax` into it. Advice: a target equal to `-100` is not a valid index for
# `gather`, so replace ignored targets by 0 *before* gathering and zero their loss afterwards; and create any
# new tensor on the logits' device (`device=logits.device`).

# %%
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of class-index targets, with class weights, ignore_index and label smoothing."""
    ### BEGIN SOLUTION
    n_classes = logits.shape[1]
    shifted = logits - logits.amax(dim=1, keepdim=True)           # (N, C, *)
    logp = shifted - shifted.exp().sum(dim=1, keepdim=True).log() # (N, C, *) log-probabilities
    keep = target != ignore_index                                 # (N, *) bool
    safe = torch.where(keep, target, torch.zeros_like(target))    # (N, *) every index valid
    nll = -logp.gather(1, safe.unsqueeze(1)).squeeze(1)           # (N, *) -log p of the target class
    if weight is None:
        weight = torch.ones(n_classes, dtype=logits.dtype, device=logits.device)
    w_target = weight[safe] * keep                                # (N, *) 0 for ignored targets
    class_shape = [1, n_classes] + [1] * (logits.ndim - 2)        # (1, C, 1, …) to broadcast over logp
    smooth = -(logp * weight.view(class_shape)).sum(dim=1)        # (N, *) sum_c w_c * -log p_c
    loss = (1 - label_smoothing) * w_target * nll \
        + (label_smoothing / n_classes) * smooth * keep          # (N, *)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w_target.sum()
    ### END SOLUTION


# %%
check(cross_entropy)

# %% [markdown]
# ## 8. Binary cross-entropy: `BCELoss` vs `BCEWithLogitsLoss`
#
# For yes/no targets — or many independent yes/no labels per sample ("multi-label": is there a cat? a dog?
# a car?) — the model outputs one logit $x$ per label, the probability is $p = \sigma(x)$, and the loss for a
# target $y \in [0, 1]$ is
#
# $$\ell = -\bigl(y \log p + (1-y)\log(1-p)\bigr).$$
#
# PyTorch has it twice:
#
# - `nn.BCELoss` / `F.binary_cross_entropy` takes **probabilities**. You apply the sigmoid yourself, and
#   when $\sigma(x)$ rounds to exactly 0 or 1 the log is infinite; PyTorch clamps each log at $-100$ to
#   avoid `inf`, which means the loss stops growing and its gradient vanishes.
# - `nn.BCEWithLogitsLoss` / `F.binary_cross_entropy_with_logits` takes **logits** and never forms
#   $\sigma(x)$. Use it.
#
# How? $-\log \sigma(x) = \log(1 + e^{-x})$ and $-\log(1 - \sigma(x)) = \log(1 + e^{x})$. The function
# $\log(1 + e^{z})$ (called *softplus*) overflows for large $z$ if written literally, but
# $\log(1 + e^{z}) = \max(z, 0) + \log(1 + e^{-\lvert z\rvert})$ never does: the exponent is never positive.
# Same idea as subtracting the max in softmax. `torch.log1p(u)` computes $\log(1 + u)$ accurately for tiny
# $u$.
#
# The picture: the loss for $y = 1$ as the logit goes very negative (a confident mistake), in float32.

# %%
x = torch.linspace(-150, 5, 311, requires_grad=True)             # (L,) logits, float32
one = torch.ones(311)                                             # (L,) targets y = 1
via_probs = F.binary_cross_entropy(torch.sigmoid(x), one, reduction="none")
via_logits = F.binary_cross_entropy_with_logits(x, one, reduction="none")
(g_probs,) = torch.autograd.grad(via_probs.sum(), x)
(g_logits,) = torch.autograd.grad(via_logits.sum(), x)

fig, (ax_l, ax_g) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_l.plot(x.detach(), via_logits.detach(), label="with logits: exactly -x for x ≪ 0")
ax_l.plot(x.detach(), via_probs.detach(), "--", label="BCE(sigmoid(x)): stuck at 100")
ax_l.set(title="loss for target y = 1", xlabel="logit x")
ax_l.legend()
ax_g.plot(x.detach(), g_logits, label="with logits")
ax_g.plot(x.detach(), g_probs, "--", label="BCE(sigmoid(x))")
ax_g.set(title="gradient d loss / d x", xlabel="logit x")
ax_g.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The dashed gradient is 0 exactly where the model is most wrong — already from $x \approx -30$, long before
# the loss itself gets stuck: a model that lands there never learns its way out.
#
# **`pos_weight`** (a tensor broadcast over the **last** dimension: one weight per label) multiplies only the
# *positive* term: $\ell = -\bigl(\text{pos\_weight}\cdot y \log p + (1-y)\log(1-p)\bigr)$. With 1 positive
# example for every 9 negatives of a label, `pos_weight = 9` for that label makes the two kinds of mistakes
# cost the same in total. It is not the same as the `weight` argument, which scales both terms.
#
# And BCE wants **float** targets, of the logits' shape:

# %%
logits = torch.randn(4, 3)                                        # (N, L): 3 independent labels
labels = torch.tensor([[1, 0, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]])   # (N, L) integers
try:
    F.binary_cross_entropy_with_logits(logits, labels)
except RuntimeError as e:
    print("RuntimeError:", e)
pos_weight = torch.tensor([1.0, 3.0, 0.5])                        # (L,) one per label, last dim
print(F.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=pos_weight))
try:
    F.binary_cross_entropy(torch.tensor([1.5, 0.2]), torch.tensor([1.0, 0.0]))   # not probabilities
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## Exercise: `binary_cross_entropy_with_logits`
#
# Write `binary_cross_entropy_with_logits(logits, target, pos_weight=None, reduction="mean")`: the binary
# cross-entropy of `sigmoid(logits)` against float targets in $[0, 1]$ of the same shape, computed from the
# logits without overflow (logits of ±10 000 must give finite, exact losses such as 10 000). `pos_weight`,
# when given, multiplies only the positive term and broadcasts over the last dimension. Reduce as before.
# Match `F.binary_cross_entropy_with_logits` in value and in the gradients w.r.t. `logits` and `target`.
# `softplus`, `logsigmoid`, `logaddexp` and every (binary) cross-entropy function are off limits; `exp`,
# `log1p`, `abs`, `clamp` are yours.

# %%
def binary_cross_entropy_with_logits(logits: torch.Tensor, target: torch.Tensor,
                                     pos_weight: torch.Tensor | None = None,
                                     reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) and target, computed stably from the logits."""
    ### BEGIN SOLUTION
    neg_log_p = (-logits).clamp(min=0) + (-logits.abs()).exp().log1p()   # -log σ(x), never overflows
    neg_log_not_p = neg_log_p + logits                            # -log(1 - σ(x)) = -log σ(x) + x
    positive = target * neg_log_p
    if pos_weight is not None:
        positive = pos_weight * positive                          # (L,) broadcasts over the last dim
    loss = positive + (1 - target) * neg_log_not_p                # same shape as logits
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean()
    ### END SOLUTION


# %%
check(binary_cross_entropy_with_logits)

# %% [markdown]
# ## 9. Why a loss becomes `nan`
#
# Sooner or later a training run prints `loss: nan`, and from then on every parameter is `nan` too. The usual
# suspects, roughly in order of frequency:
#
# 1. **A hand-written loss that exponentiates or takes a log without care**: `exp` of a large logit, `log`
#    of a probability that rounded to 0. Use the log-space functions (`F.cross_entropy`,
#    `F.binary_cross_entropy_with_logits`, `F.log_softmax`) or the tricks of this lesson.
# 2. **Divergence**: a learning rate too large makes the weights, then the logits, grow each step until
#    something overflows. The loss usually climbs for a while first — plot it.
# 3. **A mean over nothing**: every target of a batch equal to `ignore_index` (a batch of padding), or a
#    mask that selects no element, gives $0/0$.
# 4. **Bad data**: a `nan` or `inf` in the inputs or targets, e.g. from a division by a zero standard
#    deviation during normalisation. `torch.isfinite(x).all()` on a batch finds it.
#
# `torch.autograd.set_detect_anomaly(True)` makes the backward pass stop at the first operation that
# produces `nan`, and names it — slow, but only for debugging.

# %%
print("all targets ignored:", F.cross_entropy(torch.randn(2, 3), torch.tensor([-100, -100])))
print("empty mean:         ", torch.tensor([]).mean())
data = torch.tensor([[1.0, 2.0], [1.0, 5.0]])                     # the first feature is constant
normalised = (data - data.mean(0)) / data.std(0)                  # 0 / 0 in the first column
print("normalised:", normalised, "· all finite:", torch.isfinite(normalised).all().item())

# %% [markdown]
# ### `torch.nan_to_num` hides the bug, it does not fix it
#
# `torch.nan_to_num(x)` replaces `nan` by 0, `inf` by the largest finite number of the dtype and `-inf` by the
# most negative one (each replacement can be chosen with `nan=`, `posinf=`, `neginf=`). It is tempting to
# wrap a loss in it "to get rid of the nans". Don't: it only repaints the forward pass. Below, a naive
# log-softmax overflows on one sample (float32, `exp(120) = inf`). With `nan_to_num` the loss prints as an
# ordinary number, but the backward pass still goes through the `inf / inf`, and every gradient of that sample
# is `nan` — one optimizer step later, the weights are too.

# %%
print(torch.nan_to_num(torch.tensor([float("nan"), float("inf"), -float("inf"), 1.5])))

logits = torch.tensor([[120.0, 0.0, -3.0],                       # (N=2, C=3) float32: exp(120) overflows
                       [1.0, 2.0, 3.0]], requires_grad=True)
y = torch.tensor([0, 2])                                          # (N,)
e = logits.exp()
logp = (e / e.sum(dim=1, keepdim=True)).log()                     # naive: nan and -inf in row 0
loss = -torch.nan_to_num(logp).gather(1, y[:, None]).mean()      # looks finite…
loss.backward()
print("loss:", loss.item())
print("gradient:", logits.grad)                                   # …but row 0 is nan
print("the real loss:", F.cross_entropy(logits, y).item())

# %% [markdown]
# Replacing a `nan` by 0 also turns a broken sample into a perfect one (loss 0, no gradient): the model quietly
# stops learning from it, and the one signal that something was wrong is gone. Fix the cause instead — compute
# in log space, subtract the max, clamp a denominator, mask out what should not count — and keep
# `nan_to_num` for data you know has gaps (a missing sensor reading, replaced deliberately, ideally with a mask
# that says so) and for what you only print or plot.

# %% [markdown]
# ## Summary
#
# - A loss is one differentiable number; `reduction` decides how per-element losses become that number
#   (`"mean"` averages over every element — a weighted mean when there are class weights).
# - MSE punishes outliers hard, L1 treats them gently but has a kink at 0, Huber is quadratic near 0 and
#   linear beyond δ.
# - Classifiers output logits. Softmax is shift-invariant; subtract the max before `exp`, and compute
#   log-probabilities with the log-sum-exp trick, never as `log(softmax(x))`.
# - `cross_entropy` = `log_softmax` + `nll_loss`, on **logits** with **class-index** targets, class
#   dimension 1; don't apply softmax first.
# - For yes/no labels use `binary_cross_entropy_with_logits` with float targets; `pos_weight` scales the
#   positive term of each label.
# - `cross_entropy` also takes class-probability targets; label smoothing is one such target distribution.
# - Pass `reduction=` by keyword: `size_average` and `reduce` are retired, and the third positional argument
#   of `F.mse_loss` is still `size_average`.
# - A `nan` loss has a cause; find it (`torch.isfinite`, anomaly detection) instead of painting over it with
#   `torch.nan_to_num`.
#
# Next, in `05_optim`, the loss meets the optimizer that minimises it.
