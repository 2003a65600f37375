# %% [markdown]
# # 05 · Optimizers: how parameters actually move
#
# Autograd (lesson 02) fills every parameter's `.grad`. An **optimizer** turns those gradients into a change of
# the parameters. This lesson opens the box: you will write `SGD` and `AdamW` yourself, as real
# `torch.optim.Optimizer` subclasses whose every step matches PyTorch's to many digits, and the tools that
# surround them in every training script: learning-rate schedules, gradient clipping and gradient
# accumulation.
#
# What you will be able to do afterwards:
#
# - write the three-line training step and say why each line is there and in that order;
# - read and change an optimizer's **param groups** (a different learning rate for the head, no weight decay
#   on biases);
# - explain momentum, dampening, Nesterov, weight decay, Adagrad, Adam and AdamW with one formula each;
# - schedule the learning rate, clip gradients, accumulate them over micro-batches, and checkpoint an
#   optimizer so a run resumes exactly where it stopped.
#
# Each exercise's cell must stand on its own: anything your answer uses besides the lesson's imports (a helper, a
# constant, another import) goes in that cell, because graders run only the answer cells.

# %%
from grader import check, hint

# %%
import io
import math
import warnings

import matplotlib.pyplot as plt
import torch
from torch import nn

torch.manual_seed(0)

# %% [markdown]
# ## 1. The training step: `zero_grad`, `backward`, `step`
#
# Every training loop in PyTorch repeats the same three calls:
#
# ```python
# optimizer.zero_grad()   # forget the previous batch's gradients
# loss.backward()         # autograd writes d(loss)/d(p) into p.grad for every parameter p
# optimizer.step()        # the optimizer reads p.grad and changes p in place
# ```
#
# The first line is there because **`backward()` adds into `.grad`, it does not overwrite it**. That is a
# feature: a parameter used twice in one graph collects both contributions, and it is what makes gradient
# accumulation (section 8) possible. But it also means that forgetting `zero_grad()` silently sums the
# gradients of every batch seen so far. Watch the gradient grow when the same loss is back-propagated three
# times:

# %%
w = torch.tensor([1.0, -2.0], requires_grad=True)
x = torch.tensor([3.0, 0.5])
for i in range(3):
    loss = (w * x).sum()          # d(loss)/dw = x = [3.0, 0.5]
    loss.backward()
    print(f"after backward #{i + 1}: w.grad = {w.grad}")

# %% [markdown]
# The update itself must not be recorded by autograd: `w` is a leaf that requires a gradient, and changing it
# in place while autograd watches is an error. That is why optimizers run their update under
# `torch.no_grad()`. Here is the error you get without it:

# %%
try:
    w -= 0.1 * w.grad
except RuntimeError as e:
    print("RuntimeError:", e)

with torch.no_grad():
    w -= 0.1 * w.grad             # fine: not recorded
print(w)

# %% [markdown]
# ## 2. Inside `torch.optim.Optimizer`: param groups, defaults and state
#
# An optimizer holds three things:
#
# - **`param_groups`**: a list of dicts. Each has a `"params"` list and its own copy of every option (`lr`,
#   `momentum`, `weight_decay`, ...). You pass either a plain iterable of tensors (one group) or a list of
#   dicts; options missing from a dict are filled in from the constructor's arguments, the **defaults**.
# - **`defaults`**: the constructor's options, used only to fill in groups.
# - **`state`**: a dict from each parameter tensor to that parameter's own memory (a momentum buffer, Adam's
#   moment estimates, a step count). For most optimizers it starts empty and fills in during `step()`
#   (Adagrad, in section 4, fills it in its constructor).
#
# A common use of groups: a smaller learning rate for a pretrained body than for a new head.

# %%
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
optimizer = torch.optim.SGD([
    {"params": model[0].parameters(), "lr": 0.01},    # the body: its own lr
    {"params": model[2].parameters()},                 # the head: lr, momentum, weight_decay from the defaults
], lr=0.1, momentum=0.9, weight_decay=1e-4)

for i, group in enumerate(optimizer.param_groups):
    options = {k: v for k, v in group.items() if k in ("lr", "momentum", "weight_decay")}
    print(f"group {i}: {len(group['params'])} tensors, {options}")
print("state before the first step:", dict(optimizer.state))

x, y = torch.randn(16, 4), torch.randn(16, 2)     # (B, 4), (B, 2)
optimizer.zero_grad()
nn.functional.mse_loss(model(x), y).backward()
optimizer.step()
first = model[0].weight
print("state keys of the first weight after one step:", list(optimizer.state[first]))

# %% [markdown]
# Options live in the group dicts, so you can change them during training, and that is exactly what a
# learning-rate scheduler does: `for g in optimizer.param_groups: g["lr"] = new_lr`. An optimizer you write
# must therefore read every option **from the group** inside `step()`, never from the constructor's
# arguments.

# ### Groups from `named_parameters()`: no weight decay on biases and norms
#
# Weight decay pulls every parameter toward zero. That is a sensible prior for a weight matrix (smaller
# weights, a smoother function), but not for a bias, which only shifts an output, nor for the scale and shift
# of a normalisation layer (`LayerNorm`, `BatchNorm`), whose natural value is 1 and 0: decaying a norm's scale
# toward 0 fights the very thing the layer is for. So the usual recipe, in most transformer training scripts,
# splits the parameters into two groups by walking `model.named_parameters()`. Biases and norm parameters are
# exactly the 1-dimensional ones, so `p.ndim <= 1` is the common test (the names, `"bias" in name`, or the
# owning module's type via `named_modules()` are other ways to say the same thing).

# %%
model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
decay, no_decay = [], []
for name, p in model.named_parameters():
    if not p.requires_grad:
        continue                                  # frozen parameters stay out of the optimizer
    (decay if p.ndim >= 2 else no_decay).append(p)
    print(f"{name:9} {str(tuple(p.shape)):7} {'decay' if p.ndim >= 2 else 'no decay'}")
optimizer = torch.optim.AdamW([
    {"params": decay, "weight_decay": 0.5},
    {"params": no_decay, "weight_decay": 0.0},
], lr=0.1)

# %% [markdown]
# To see the groups at work, give every parameter a zero gradient and take one step. AdamW's Adam part then
# moves nothing (its moments are zero), so what changes is the decay alone: every weight matrix shrinks by
# $1 - \eta\lambda = 1 - 0.1 \cdot 0.5 = 0.95$, and the biases and the `LayerNorm` scale and shift stay where
# they were.

# %%
before = {name: p.detach().clone() for name, p in model.named_parameters()}
for p in model.parameters():
    p.grad = torch.zeros_like(p)
optimizer.step()
for name, p in model.named_parameters():
    if torch.equal(p.detach(), before[name]):
        print(f"{name:9} unchanged")
    else:
        print(f"{name:9} multiplied by {(p.detach() / before[name]).mean().item():.3f}")

# %% [markdown]
# ## 3. SGD and its options
#
# Write $g$ for a parameter's gradient, $p$ for the parameter and $\eta$ for the learning rate. Plain SGD is
# $p \leftarrow p - \eta\, g$. `torch.optim.SGD` adds four options, applied in this order on every step:
#
# 1. **maximize**: use $-g$ (gradient *ascent*, e.g. for a reward).
# 2. **weight decay** $\lambda$: $d = g + \lambda p$, the gradient of an extra $\tfrac{\lambda}{2}\lVert p\rVert^2$
#    term in the loss. It pulls weights toward zero.
# 3. **momentum** $\mu$ with **dampening** $\tau$: a running buffer $b$ per parameter. On the parameter's
#    first step $b = d$ (a plain copy: no dampening yet); afterwards $b \leftarrow \mu b + (1 - \tau) d$.
#    The step direction becomes $b$, or with **Nesterov** $d + \mu b$ (a look-ahead: the gradient plus where
#    the buffer is about to carry us).
# 4. **update**: $p \leftarrow p - \eta \cdot \text{direction}$.
#
# Momentum helps most when the loss is a long narrow valley: plain SGD bounces between the steep walls and
# crawls along the floor, while the buffer averages out the bouncing and builds up speed along the floor.
# Below, the loss is $\tfrac12(x^2 + 25 y^2)$, a valley 25 times steeper across than along.

# %%
def valley(p):
    """An ill-conditioned quadratic: curvature 1 along x, 25 along y."""
    return 0.5 * (p[0] ** 2 + 25.0 * p[1] ** 2)


def run(make_optimizer, steps=60):
    """Losses and positions of an optimizer started at (-4, 1) on the valley."""
    p = torch.tensor([-4.0, 1.0], requires_grad=True)
    opt = make_optimizer([p])
    losses, path = [], [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss = valley(p)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        path.append(p.detach().clone())
    return losses, torch.stack(path)        # (steps,), (steps + 1, 2)


runs = {
    "SGD lr=0.07": run(lambda ps: torch.optim.SGD(ps, lr=0.07)),
    "SGD lr=0.05, momentum=0.7": run(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.7)),
    "AdamW lr=0.2, betas=(0.5, 0.9)": run(lambda ps: torch.optim.AdamW(ps, lr=0.2, betas=(0.5, 0.9),
                                                                      weight_decay=0.0)),
}
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
gx, gy = torch.meshgrid(torch.linspace(-4.5, 1.5, 120), torch.linspace(-1.3, 1.3, 80), indexing="xy")
right.contour(gx, gy, 0.5 * (gx ** 2 + 25 * gy ** 2), levels=15, colors="0.8", linewidths=0.7)
for label, (losses, path) in runs.items():
    left.semilogy(losses, label=label)
    right.plot(path[:, 0], path[:, 1], ".-", ms=3, label=label)
left.set(xlabel="step", ylabel="loss (log scale)", title="the same valley, three optimizers")
right.set(xlabel="x", ylabel="y", title="paths from (-4, 1) to the minimum (0, 0)")
left.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Plain SGD cannot take a larger step: at `lr` above $2/25 = 0.08$ it would diverge along the steep $y$
# direction, so it is stuck crawling along $x$, losing only 7% of the distance per step. Momentum swings across
# the valley a few times, but its buffer keeps the speed it built up along the floor: after 60 steps its loss is
# about five orders of magnitude lower. AdamW divides each coordinate's step by that coordinate's recent
# gradient size, so the steep and the flat direction move at about the same pace from the very first step
# (its path heads straight for the middle). Its steps stay close to `lr` in size until the gradient's sign
# starts to flip, which is why it needs a few wiggles to settle (shorter memories, `betas=(0.5, 0.9)`, settle
# faster on a problem this small; the defaults suit noisy mini-batch gradients).
#
# Two option combinations make no sense, and `torch.optim.SGD` refuses them at construction, as your `SGD`
# will: Nesterov needs a momentum, and it assumes no dampening.

# %%
for options in [dict(nesterov=True), dict(momentum=0.9, dampening=0.5, nesterov=True), dict(momentum=-0.9)]:
    try:
        torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, **options)
    except ValueError as e:
        print(f"{options}: ValueError: {e}")

# %% [markdown]
# The momentum buffer is state: it lives in `optimizer.state[p]["momentum_buffer"]`, and after the first step
# it is exactly the first gradient.

# %%
p = torch.tensor([1.0, 2.0], requires_grad=True)
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
p.grad = torch.tensor([0.5, -1.0])
opt.step()
print("buffer after step 1:", opt.state[p]["momentum_buffer"])   # = the gradient, no dampening
opt.step()
print("buffer after step 2:", opt.state[p]["momentum_buffer"])   # 0.9 * b + 0.5 * g

# %% [markdown]
# ## 4. Adaptive methods: Adagrad, Adam, and why AdamW exists
#
# SGD uses one learning rate for every coordinate. **Adagrad** keeps, per coordinate, the sum $s$ of all
# squared gradients so far and steps by $\eta\, g / (\sqrt{s} + \epsilon)$: coordinates with large gradients
# get smaller steps. Since $s$ only grows, the effective step shrinks forever, which suits convex problems and
# sparse features but often stops deep networks too early.

# %%
p = torch.zeros(1, requires_grad=True)
opt = torch.optim.Adagrad([p], lr=1.0)
for step in range(1, 6):
    p.grad = torch.tensor([2.0])        # the same gradient every step
    before = p.item()
    opt.step()
    print(f"step {step}: moved by {before - p.item():.3f}  (1/sqrt(step) = {1 / math.sqrt(step):.3f})")

# %% [markdown]
# With a constant gradient $g$, after $t$ steps $s = t g^2$, so the step is $\eta\, g / \sqrt{t g^2} =
# \eta / \sqrt{t}$: whatever the gradient's size, the step shrinks like $1/\sqrt{t}$ (the size of $g$ cancels,
# which is Adagrad's other virtue: no need to tune `lr` to the scale of the gradients).
#
# In full, `torch.optim.Adagrad(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps)` does, for
# each parameter with a gradient $g$ on its own $t$-th step ($t = 1, 2, \dots$):
#
# 1. $g \leftarrow g + \lambda p$ (weight decay, the L2 kind, as in SGD);
# 2. $s \leftarrow s + g^2$, elementwise; $s$ starts at `initial_accumulator_value`;
# 3. $\eta_t = \eta / (1 + (t - 1) \cdot \text{lr\_decay})$, so the first step uses $\eta$ itself;
# 4. $p \leftarrow p - \eta_t\, g / (\sqrt{s} + \epsilon)$, with $\epsilon$ outside the root.
#
# Its per-parameter state is `"step"` ($t$) and `"sum"` ($s$). Unlike SGD's and Adam's, which appear on a
# parameter's first step, Adagrad creates both **in its constructor**, for every parameter: `sum` is already
# filled with `initial_accumulator_value` before any step, and a `state_dict` saved right away contains it.

# %%
w = torch.zeros(2, 3, requires_grad=True)
opt = torch.optim.Adagrad([w], lr=0.5, initial_accumulator_value=0.1)
print("before any step:", dict(opt.state[w]))
w.grad = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.0, 3.0]])
opt.step()
print("after one step: sum =", opt.state[w]["sum"])             # 0.1 + g**2

# %% [markdown]
# The picture: the effective rate $\eta / (\sqrt{s} + \epsilon)$ of two coordinates. A "frequent" feature
# gets a gradient of about 1 on every step; a "rare" one gets a gradient of the same size, but only on one step
# in ten (a word that seldom appears, say). Both rates only ever go down. But the rare coordinate's sum grows
# ten times more slowly, so its rate stays about $\sqrt{10} \approx 3$ times larger, and when its gradient
# does come, it moves that coordinate further: Adagrad lets rare features catch up.

# %%
steps = 200
g = torch.zeros(steps, 2)                                         # (steps, 2) gradients per step
g[:, 0] = 1.0 + 0.3 * torch.randn(steps)                          # frequent: every step, size ~1
g[::10, 1] = 1.0                                                  # rare: every 10th step, size 1
s = torch.cumsum(g ** 2, dim=0)                                   # (steps, 2) Adagrad's sum after each step
rate = 1.0 / (s.sqrt() + 1e-10)                                   # (steps, 2) effective rate for lr = 1
t = torch.arange(1, steps + 1)
plt.figure(figsize=(7, 3.2))
plt.loglog(t, rate[:, 0], label="frequent feature")
plt.loglog(t, rate[:, 1], label="rare feature (a gradient every 10th step)")
plt.loglog(t, 1 / t.sqrt(), "k:", label="1 / sqrt(t)")
plt.xlabel("step t")
plt.ylabel("lr / (sqrt(sum) + eps), lr = 1")
plt.title("Adagrad: the step size of each coordinate only shrinks")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Adam** replaces the ever-growing sum by exponential moving averages: $m$ of the gradient (momentum, weight
# $\beta_1$) and $v$ of its square (weight $\beta_2$). Both start at zero, so early on they are biased toward
# zero; dividing by $1 - \beta_1^t$ and $1 - \beta_2^t$ (with $t$ the parameter's own step count) removes that
# bias. The step is
#
# $$p \leftarrow p - \eta\, \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}.$$
#
# With **amsgrad**, $v$ in the denominator is replaced by the largest $v$ seen so far, so the step size never
# grows back.
#
# **Weight decay in Adam vs AdamW.** `torch.optim.Adam(weight_decay=λ)` adds $\lambda p$ to the gradient, as
# SGD does. But Adam then divides by $\sqrt{v}$, so the decay is rescaled per coordinate: weights with large
# gradients are barely decayed. **AdamW** (decoupled weight decay) instead shrinks the weights directly,
# $p \leftarrow p\,(1 - \eta\lambda)$, before and apart from the Adam step. The difference is plain when the
# data gradient is zero: Adam's "decay" becomes a step of about $\eta$ whatever the weight's size, AdamW's is
# proportional to the weight.

# %%
for cls in (torch.optim.Adam, torch.optim.AdamW):
    p = torch.tensor([100.0, 0.01], requires_grad=True)
    opt = cls([p], lr=0.01, weight_decay=0.1)
    for _ in range(10):
        p.grad = torch.zeros(2)          # no signal from the data: only the decay acts
        opt.step()
    print(f"{cls.__name__:>5}: {p.detach()}  (started at [100.0, 0.01])")

# %% [markdown]
# Adam moved the large weight by about $10 \times 0.01 = 0.1$ (a tenth of a percent of it) and wiped out most
# of the small one. AdamW shrank both by the same factor $(1 - 0.01 \cdot 0.1)^{10} \approx 0.99$, which is
# what "weight decay" promises. AdamW is the usual choice for transformers today.
#
# ## 5. `zero_grad(set_to_none=True)`
#
# `optimizer.zero_grad()` sets every `.grad` to `None` by default (`set_to_none=True`) instead of filling it
# with zeros. It saves memory and a kernel launch, and it means something: **a parameter whose `.grad` is
# `None` is skipped by `step()`**, untouched, with no state created. A zero gradient is different: weight
# decay and momentum still move the parameter. Here is a parameter that the loss does not use (a frozen
# branch, say), after a first step that gave it momentum:

# %%
for set_to_none in (True, False):
    unused = torch.ones(2, requires_grad=True)
    opt = torch.optim.SGD([unused], lr=0.1, momentum=0.9)
    unused.grad = torch.ones(2)
    opt.step()                                   # builds a momentum buffer
    for _ in range(3):
        opt.zero_grad(set_to_none=set_to_none)
        opt.step()                               # nothing new flowed into .grad
    print(f"set_to_none={set_to_none}: grad={unused.grad}, parameter={unused.detach()}")

# %% [markdown]
# With zeros, the momentum buffer keeps pushing the unused parameter. With `None`, it stays put. Your own
# optimizers must skip `p.grad is None` the same way.
#
# ## 6. Learning-rate schedules
#
# A scheduler changes `group["lr"]` in every param group, once per call of `scheduler.step()`:
#
# - `StepLR(step_size, gamma)`: multiply by `gamma` every `step_size` steps;
# - `CosineAnnealingLR(T_max, eta_min)`: half a cosine from the initial lr down to `eta_min`;
# - `LinearLR` for a **warm-up** (start small, ramp up: early gradients of a fresh network are large and
#   noisy, and Adam's $v$ estimate is poor in the first steps), chained with `SequentialLR`;
# - `LambdaLR(lr_lambda)`: any rule you write, as a factor of the initial lr.
#
# The order matters: **`optimizer.step()` first, then `scheduler.step()`**. The other way round skips the
# first value of the schedule, and PyTorch warns about it:

# %%
p = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([p], lr=1.0)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sched.step()                          # wrong: before any optimizer.step()
    opt.step()
print("UserWarning:", str(caught[0].message)[:150], "...")


# %%
def lr_curve(make_scheduler, steps=100, lr=1.0):
    """The lr used at each step under a scheduler (a fresh optimizer with one dummy parameter)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()                         # (a real loop computes a loss and calls backward first)
        sched.step()
    return lrs


S = torch.optim.lr_scheduler
curves = {
    "StepLR(step_size=30, gamma=0.3)": lr_curve(lambda o: S.StepLR(o, step_size=30, gamma=0.3)),
    "CosineAnnealingLR(T_max=100)": lr_curve(lambda o: S.CosineAnnealingLR(o, T_max=100)),
    "warm-up 10 steps, then cosine to 0.05": lr_curve(lambda o: S.SequentialLR(o, [
        S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
        S.CosineAnnealingLR(o, T_max=90, eta_min=0.05)], milestones=[10])),
}
plt.figure(figsize=(7, 3.2))
for label, lrs in curves.items():
    plt.plot(lrs, label=label)
plt.xlabel("step")
plt.ylabel("learning rate (base lr = 1)")
plt.title("three learning-rate schedules")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Schedulers are stateful objects tied to an optimizer. Large training codebases often prefer a plain
# function `lr(step)` and set `group["lr"]` themselves each step: easy to test, to plot, and to resume
# from any step. You will write the warm-up + cosine one as such a function.
#
# ## 7. Gradient clipping
#
# One bad batch can produce a huge gradient and throw a network far away from where it was. **Clipping by
# norm** looks at all gradients as one long vector: if its norm exceeds `max_norm`, every gradient is scaled
# by the same factor so that the norm becomes `max_norm`; the direction is kept. The call goes **between
# `backward()` and `step()`** (before backward there is nothing to clip; after step it is too late), and it
# returns the norm *before* clipping, which is worth logging: spikes in it announce trouble.

# %%
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(8, 3), torch.randn(8, 1) * 1000      # (B, 3), (B, 1): absurd targets, huge gradients
optimizer.zero_grad()
nn.functional.mse_loss(model(x), y).backward()
norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
print(f"norm before clipping: {norm.item():.1f}, after: {after.item():.4f}")
optimizer.step()

# %% [markdown]
# ## 8. Gradient accumulation
#
# When a batch of 64 does not fit in memory, run 4 micro-batches of 16 and step once. Because `backward()`
# adds into `.grad`, the gradients add up by themselves; the only thing to get right is the scale. A
# mean-reduced loss on the full batch is the average of the micro-batch means (for equal sizes), so each
# micro-batch loss must be **divided by the number of micro-batches** before `backward()`:

# %%
model = nn.Linear(5, 1)
x, y = torch.randn(64, 5), torch.randn(64, 1)            # (B, 5), (B, 1)

model.zero_grad()
nn.functional.mse_loss(model(x), y).backward()
full = model.weight.grad.clone()                        # (1, 5)

model.zero_grad()
for xb, yb in zip(x.split(16), y.split(16)):            # 4 micro-batches of (16, 5), (16, 1)
    (nn.functional.mse_loss(model(xb), yb) / 4).backward()
print("same gradient as the full batch:", torch.allclose(model.weight.grad, full, atol=1e-6))

# %% [markdown]
# Two caveats. Layers that look at the whole batch, like `BatchNorm` in training mode, see only 16 samples at a
# time, so accumulation is not exactly a bigger batch for them. And a loss reduced with `sum` instead of `mean`
# must not be divided.
#
# ## 9. Optimizer `state_dict`: resuming training exactly
#
# `optimizer.state_dict()` returns `{"state": ..., "param_groups": ...}`, with the parameters replaced by
# their positions (0, 1, 2, ... across all groups in order). Saving it with the model's `state_dict` is what
# makes a resumed run continue as if it had never stopped: without it, momentum buffers and Adam's moments
# restart from zero.

# %%
model = nn.Linear(2, 1)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
model(torch.randn(4, 2)).pow(2).mean().backward()
optimizer.step()
sd = optimizer.state_dict()
print("param_groups[0]['params']:", sd["param_groups"][0]["params"])
print("state of parameter 0:", {k: tuple(v.shape) for k, v in sd["state"][0].items()})

buffer = io.BytesIO()                     # stands in for a checkpoint file
torch.save({"model": model.state_dict(), "optimizer": sd}, buffer)
buffer.seek(0)
checkpoint = torch.load(buffer, weights_only=True)
resumed = torch.optim.AdamW(model.parameters(), lr=1e-2)
resumed.load_state_dict(checkpoint["optimizer"])
print("resumed step count:", resumed.state[model.weight]["step"])

# %% [markdown]
# The saved groups must line up with the new optimizer's groups: same number of groups, same number of
# tensors in each. Otherwise loading fails:

# %%
try:
    torch.optim.AdamW([model.weight], lr=1e-2).load_state_dict(sd)     # bias missing
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# Because the state is keyed by position and stored under fixed names (`momentum_buffer` for SGD; `step` and
# `sum` for Adagrad; `step`, `exp_avg`, `exp_avg_sq` and `max_exp_avg_sq` for Adam and AdamW), a state_dict from an optimizer you write
# with the same names loads into PyTorch's. The checks below test exactly that.

# %% [markdown]
# ## Exercise: `SGD`
#
# Write `SGD(params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)`, a
# subclass of `torch.optim.Optimizer` whose every step matches `torch.optim.SGD` (section 3):
#
# - `__init__` raises `ValueError` for `lr < 0`, `momentum < 0`, `weight_decay < 0`, and for `nesterov=True`
#   with `momentum <= 0` or `dampening != 0`; otherwise it calls `super().__init__(params, defaults)` with the
#   options in a dict, under the argument names.
# - `step(closure=None)` updates every parameter of every group with that group's options, skips parameters
#   whose `.grad` is `None` (no update, no state), keeps the buffer in `self.state[p]["momentum_buffer"]`
#   (only when momentum is nonzero), must not change `p.grad`, and returns `closure()`'s loss when a closure
#   is given (else `None`).
#
# The check runs your optimizer and PyTorch's side by side for up to 20 steps with several param groups,
# compares every parameter after every step and the state at the end, saves your `state_dict` halfway and
# continues both in a fresh `SGD` of yours and in `torch.optim.SGD`. `torch.optim.SGD` and `torch.optim.sgd.sgd`
# are off limits.

# %%
class SGD(torch.optim.Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov, weight decay and maximize."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False):
        ### BEGIN SOLUTION
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError("nesterov needs a positive momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)
        ### END SOLUTION

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; return the closure's loss, if a closure is given."""
        ### BEGIN SOLUTION
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = -p.grad if group["maximize"] else p.grad
                if group["weight_decay"] != 0:
                    d_p = d_p + group["weight_decay"] * p          # a new tensor: p.grad stays as it was
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d_p.clone()
                    else:
                        buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                    d_p = d_p + momentum * buf if group["nesterov"] else buf
                p.add_(d_p, alpha=-lr)
        return loss
        ### END SOLUTION


# %%
check(SGD)

# %% [markdown]
# ## Exercise: `Adagrad`
#
# Write `Adagrad(params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10)`,
# a subclass of `torch.optim.Optimizer` whose every step matches `torch.optim.Adagrad` (section 4):
#
# - `__init__` raises `ValueError` when any of the five numbers is negative, calls
#   `super().__init__(params, defaults)`, and then, as PyTorch does, creates the state of **every** parameter
#   right away: `self.state[p]["step"]` (0; PyTorch keeps it as a 0-dim float tensor, `torch.tensor(0.0)`) and
#   `self.state[p]["sum"]`, a tensor like `p` filled with `initial_accumulator_value`. That value is a
#   constructor argument, not an option of each group.
# - `step(closure=None)` applies the four rules of section 4 to every parameter with a gradient, with its
#   group's `lr`, `lr_decay`, `weight_decay` and `eps` and its own step count; it skips parameters whose
#   `.grad` is `None`, must not change `p.grad`, and returns the closure's loss as in `SGD`.
#
# The check compares whole runs with `torch.optim.Adagrad` (several param groups, missing gradients, a
# `state_dict` saved halfway and loaded by both), and the `state_dict` right after the constructor.
# `torch.optim.Adagrad` and `torch.optim.adagrad.adagrad` are off limits.

# %%
class Adagrad(torch.optim.Optimizer):
    """Adagrad: each coordinate's step is divided by the root of its accumulated squared gradients."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        ### BEGIN SOLUTION
        for name, value in [("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                            ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)]:
            if value < 0.0:
                raise ValueError(f"invalid {name}: {value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                        initial_accumulator_value=initial_accumulator_value)
        super().__init__(params, defaults)
        for group in self.param_groups:                       # state exists before the first step
            for p in group["params"]:
                self.state[p]["step"] = torch.tensor(0.0)
                self.state[p]["sum"] = torch.full_like(p, initial_accumulator_value)
        ### END SOLUTION

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; return the closure's loss, if a closure is given."""
        ### BEGIN SOLUTION
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                t = float(state["step"])
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p              # a new tensor: p.grad stays as it was
                state["sum"].addcmul_(g, g)                        # sum += g * g
                clr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
                p.addcdiv_(g, state["sum"].sqrt() + group["eps"], value=-clr)
        return loss
        ### END SOLUTION


# %%
check(Adagrad)

# %% [markdown]
# ## Exercise: `AdamW`
#
# Write `AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False)`, a subclass
# of `torch.optim.Optimizer` matching `torch.optim.AdamW` (section 4). For each parameter with a gradient $g$,
# with its own step count $t$ (starting at 1 on its first step):
#
# 1. $p \leftarrow p\,(1 - \eta\lambda)$ (decoupled weight decay, with the parameter before this step);
# 2. $m \leftarrow \beta_1 m + (1 - \beta_1) g$, $\;v \leftarrow \beta_2 v + (1 - \beta_2) g^2$;
# 3. with amsgrad: $v_{\max} \leftarrow \max(v_{\max}, v)$, and use $v_{\max}$ instead of $v$ below;
# 4. $p \leftarrow p - \dfrac{\eta}{1 - \beta_1^t}\cdot\dfrac{m}{\sqrt{v}/\sqrt{1 - \beta_2^t} + \epsilon}$.
#
# Keep the state in `self.state[p]` under `"step"`, `"exp_avg"` ($m$), `"exp_avg_sq"` ($v$) and, with amsgrad,
# `"max_exp_avg_sq"` ($v_{\max}$), all starting at zero. `__init__` raises `ValueError` for `lr < 0`, `eps < 0`,
# either beta outside $[0, 1)$ and `weight_decay < 0`. `step(closure=None)` behaves as in `SGD`.
# `torch.optim.Adam`, `torch.optim.AdamW` and their functional forms are off limits.

# %%
class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay (and optional AMSGrad)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        ### BEGIN SOLUTION
        if lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"invalid eps: {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}, each must be in [0, 1)")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)
        ### END SOLUTION

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter that has a gradient; return the closure's loss, if a closure is given."""
        ### BEGIN SOLUTION
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:                                     # the parameter's first step
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = int(state["step"])            # int(): a state loaded from torch.optim.AdamW holds a tensor
                p.mul_(1 - lr * group["weight_decay"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                    v = state["max_exp_avg_sq"]
                denom = v.sqrt() / math.sqrt(1 - beta2 ** t) + eps
                p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** t))
        return loss
        ### END SOLUTION


# %%
check(AdamW)

# %% [markdown]
# ## Exercise: `clip_grad_norm_`
#
# Write `clip_grad_norm_(parameters, max_norm, norm_type=2.0)` that behaves like
# `torch.nn.utils.clip_grad_norm_` (section 7):
#
# - `parameters` is an iterable of tensors (a list, or a generator such as `model.parameters()`, which can be
#   read only once) or a single tensor; tensors whose `.grad` is `None` are ignored;
# - the total norm is the `norm_type`-norm of the vector of per-gradient `norm_type`-norms (`float("inf")`
#   means the largest absolute value);
# - every gradient is multiplied **in place** by `min(1, max_norm / (total_norm + 1e-6))` (the `1e-6` avoids a
#   division by zero);
# - it returns `total_norm`, the norm before clipping, as a 0-dim tensor; `torch.tensor(0.0)` when no
#   parameter has a gradient.
#
# `torch.nn.utils.clip_grad_norm_`, `clip_grads_with_norm_` and `get_total_norm` are off limits.

# %%
def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Scale all gradients together so their total norm is at most max_norm; return the norm before."""
    ### BEGIN SOLUTION
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads])   # (number of grads,)
    total = torch.linalg.vector_norm(norms, norm_type)                              # ()
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)                         # ()
    with torch.no_grad():
        for g in grads:
            g.mul_(scale)
    return total
    ### END SOLUTION


# %%
check(clip_grad_norm_)

# %% [markdown]
# ## Exercise: `warmup_cosine_lr`
#
# Write `warmup_cosine_lr(step, total_steps, base_lr, warmup_steps, min_lr=0.0)`, the learning rate for
# (0-based) step `step`, as a Python `float`:
#
# - for `step < warmup_steps`: `base_lr * (step + 1) / warmup_steps` (a linear ramp; this rule wins over the
#   next two);
# - otherwise, for `step >= total_steps`: `min_lr`;
# - otherwise a half cosine from `base_lr` down to `min_lr`:
#   `min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * progress))` with
#   `progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)`.
#
# Use `math`, not `torch`: this is plain arithmetic on Python numbers, and the result must be a `float`
# (careful: `min_lr` may be passed as the integer `0`).

# %%
def warmup_cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Linear warm-up to base_lr, then a half cosine down to min_lr at total_steps."""
    ### BEGIN SOLUTION
    if step < warmup_steps:
        return float(base_lr * (step + 1) / warmup_steps)
    if step >= total_steps:
        return float(min_lr)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return float(min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    ### END SOLUTION


# %%
check(warmup_cosine_lr)

# %% [markdown]
# To use such a function in a training loop, set the rate before each step:
#
# ```python
# for step, (x, y) in enumerate(loader):
#     for group in optimizer.param_groups:
#         group["lr"] = warmup_cosine_lr(step, total_steps, base_lr, warmup_steps, min_lr)
#     ...zero_grad, backward, step...
# ```
#
# ## Exercise: `accumulated_step`
#
# Write `accumulated_step(model, loss_fn, micro_batches, optimizer)` for a mean-reduced `loss_fn` and a list
# of equally sized `(x, y)` micro-batches (section 8):
#
# - zero the gradients first (stale gradients may be sitting in `.grad`);
# - accumulate over the micro-batches so that the update equals **one** optimizer step on the concatenated
#   batch;
# - call `optimizer.step()` once;
# - return the mean of the micro-batch losses as a Python `float`;
# - leave the model's train/eval mode as it was (the caller decides it).

# %%
def accumulated_step(model, loss_fn, micro_batches, optimizer) -> float:
    """One optimizer step with gradients accumulated over micro-batches; the mean loss."""
    ### BEGIN SOLUTION
    optimizer.zero_grad()
    k = len(micro_batches)
    total = 0.0
    for x, y in micro_batches:
        loss = loss_fn(model(x), y)
        (loss / k).backward()        # .grad collects the average over micro-batches
        total += loss.item()
    optimizer.step()
    return total / k
    ### END SOLUTION


# %%
check(accumulated_step)

# %% [markdown]
# ## Summary
#
# - `zero_grad()` → `backward()` → (clip) → `step()` → `scheduler.step()`: `backward()` adds into `.grad`,
#   so zeroing comes first; the optimizer updates parameters in place under `torch.no_grad()`.
# - Options live in `param_groups`, per-parameter memory in `state`; both are saved by `state_dict()`.
# - A `None` gradient means "skip me"; a zero gradient still lets momentum and weight decay act.
# - Give biases and normalisation parameters a group of their own without weight decay.
# - Adagrad divides each coordinate's step by the root of its summed squared gradients, so steps only shrink.
# - AdamW decays the weights directly; Adam's `weight_decay` is an L2 term that gets rescaled.
# - Accumulating over `k` micro-batches: divide each loss by `k`, step once.
#
# Next, lesson `06_data` feeds all of this with real batches: `Dataset`, `DataLoader` and friends.
