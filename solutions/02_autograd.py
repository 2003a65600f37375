# %% [markdown]
# # 02 · Autograd: how PyTorch computes gradients for you
#
# Training a network means nudging its numbers in the direction that lowers a loss, and that direction is a
# gradient. Writing gradients by hand for a model with millions of numbers is hopeless; **autograd** does it
# for you. While your code runs, PyTorch records every operation on tensors that need gradients; afterwards
# it walks that record backwards, applying the chain rule at each step.
#
# This lesson takes that machine apart: what is recorded, when, where gradients land, the errors you will
# meet, and how to plug in your own operations. You will write seven small tools, ending with gradient descent.
#
# Write each tool entirely in its exercise cell, with any helper or extra import it needs: graders run only the
# exercise cells, after the lesson's imports.

# %%
from grader import check, hint

import math

import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)

# %% [markdown]
# ## 1. `requires_grad`, leaves and `grad_fn`
#
# A tensor created by you (with `torch.tensor`, `torch.randn`, …) is a **leaf**. Setting
# `requires_grad=True` on a leaf tells autograd: *I will want the derivative with respect to this one*.
# From then on, every result computed from it also has `requires_grad=True` and carries a `grad_fn`: the
# node that knows how to send a gradient back to that result's inputs. Tensors that don't need gradients
# (your data, usually) have `grad_fn=None` and cost autograd nothing.

# %%
w = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)   # (3,) a leaf we want gradients for
x = torch.tensor([0.5, 4.0, -1.0])                         # (3,) plain data
y = w * x                                                  # (3,)
loss = y.sum()                                             # () a scalar

for name, t in [("w", w), ("x", x), ("y", y), ("loss", loss)]:
    print(f"{name:5} requires_grad={t.requires_grad!s:5} is_leaf={t.is_leaf!s:5} grad_fn={t.grad_fn}")

# %% [markdown]
# `grad_fn` nodes are linked to the nodes of their inputs through `next_functions`: following them from
# `loss` walks the whole **graph** back to the leaves. `AccumulateGrad` is the node at a leaf: it is where
# a gradient finally gets stored, in the leaf's `.grad`.

# %%
def show_graph(node, depth=0):
    """Print a grad_fn and, indented, the nodes it sends gradients to."""
    print("    " * depth + type(node).__name__)
    for child, _ in node.next_functions:
        if child is not None:
            show_graph(child, depth + 1)


show_graph(loss.grad_fn)

# %% [markdown]
# ### Only floating-point (and complex) tensors can require grad
#
# A gradient measures what a *tiny* change of a number does to the result, and an integer cannot change by a
# tiny amount. PyTorch therefore refuses `requires_grad=True` on integer and bool tensors; convert first
# (`.float()`, `.double()`) when a count or a label has to become something you differentiate. Complex tensors
# are fine.

# %%
try:
    torch.tensor([1, 2, 3], requires_grad=True)          # int64
except RuntimeError as e:
    print("RuntimeError:", e)

counts = torch.tensor([1, 2, 3])
print("converted first:", counts.float().requires_grad_(True))
print("complex:", torch.tensor([1 + 2j, 3 - 1j], requires_grad=True))

# %% [markdown]
# The same rule explains a quieter surprise: operations whose result is an integer or bool (`argmax`,
# comparisons such as `x > 0`, `round` followed by `.long()`) end the graph there. Their results have no
# `grad_fn`, and nothing flows back through them.
#
# ### The graph, drawn
#
# Walking `next_functions` is all a drawing needs: collect the nodes, put each one a row below its lowest
# parent, and draw an arrow for every link. Here is a slightly bigger loss, in which `w` is used twice: its
# `AccumulateGrad` node receives two arrows, and the two contributions are **added** into `w.grad`.

# %%
def graph_rows(root):
    """The grad_fn nodes below root in rows (each node one row below its lowest parent), and the edges."""
    order, seen = [], set()

    def visit(node):                                   # depth first: a node is listed after every node below it
        seen.add(node)
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                visit(child)
        order.append(node)

    visit(root)
    row, edges = {root: 0}, []
    for node in reversed(order):                       # parents come before their children
        for child, _ in node.next_functions:
            if child is not None:
                edges.append((node, child))
                row[child] = max(row.get(child, 0), row[node] + 1)
    rows = {}
    for node in reversed(order):
        rows.setdefault(row[node], []).append(node)
    return rows, edges


def draw_graph(root, names):
    """Draw the backward graph from root: a box per node, arrows the way gradients flow."""
    rows, edges = graph_rows(root)
    pos = {node: (i - (len(nodes) - 1) / 2, -r) for r, nodes in rows.items() for i, node in enumerate(nodes)}
    fig, ax = plt.subplots(figsize=(7, 0.9 * len(rows) + 0.6))
    for a, b in edges:
        ax.annotate("", xy=pos[b], xytext=pos[a],
                    arrowprops=dict(arrowstyle="-|>", color="gray", shrinkA=12, shrinkB=20))
    for node, (x, y) in pos.items():
        leaf = getattr(node, "variable", None)         # an AccumulateGrad node holds the leaf it fills
        label = type(node).__name__ if leaf is None else f"AccumulateGrad\ninto {names[id(leaf)]}.grad"
        ax.text(x, y, label, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round", fc="lightyellow" if leaf is None else "lightgreen", ec="gray"))
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-len(rows) + 0.5, 0.5)
    ax.axis("off")
    ax.set_title("backward runs from the loss (top) to the leaves (green)")
    plt.show()


w2 = torch.randn(3, requires_grad=True)                     # (3,)
b2 = torch.tensor(0.5, requires_grad=True)                  # ()
x2 = torch.randn(3)                                         # (3,) data
loss2 = torch.tanh(w2 * x2 + b2).pow(2).mean() + 0.1 * (w2 ** 2).sum()
draw_graph(loss2.grad_fn, {id(w2): "w", id(b2): "b"})

# %% [markdown]
# ### The graph is built as the code runs
#
# PyTorch records the operations that *actually* run, so ordinary Python control flow just works: an `if`
# or a loop whose length depends on the data records a different graph on each call. This is the
# **dynamic graph** (define-by-run). Every forward pass builds a new one, and `backward()` frees it.

# %%
def bumpy(v):
    """Doubles v until its norm passes 10: the number of multiplications depends on v."""
    while v.norm() < 10:
        v = v * 2
    return v.sum()


for start in [3.0, 0.1]:
    v = torch.tensor([start, start], requires_grad=True)
    out = bumpy(v)
    out.backward()
    print(f"start {start}: gradient {v.grad.tolist()}  (2 ** number of doublings)")

# %% [markdown]
# ## 2. `backward()` on a scalar
#
# `loss.backward()` computes d loss / d leaf for every leaf that requires grad and stores it in the leaf's
# `.grad`, which has the leaf's shape. Here loss = Σ wᵢ xᵢ, so d loss / d w = x.

# %%
loss.backward()
print("w.grad:", w.grad)          # (3,) equal to x
print("y.grad:", y.grad)          # None: only leaves keep their gradient (y.retain_grad() would keep it)

# %% [markdown]
# Non-leaf tensors do not keep `.grad`: it would cost memory for every intermediate result. (PyTorch even
# prints a `UserWarning` when you read it.) Call `y.retain_grad()` before `backward()` if you need it.
#
# ## 3. Gradients accumulate: `zero_()`
#
# `backward()` **adds** into `.grad`; it never overwrites. Accumulation is useful (summing gradients over
# several small batches), but forgetting it is the most common autograd bug: a training loop that never
# clears `.grad` steps with the sum of every gradient so far.

# %%
w = torch.tensor([1.0, 2.0], requires_grad=True)
for step in range(3):
    (3 * w).sum().backward()
    print(f"after backward #{step + 1}: w.grad = {w.grad.tolist()}")   # 3, then 6, then 9

w.grad.zero_()                    # clear in place (optimizer.zero_grad() does this, or sets .grad = None)
(3 * w).sum().backward()
print("after zero_() and one more backward:", w.grad.tolist())

# %% [markdown]
# ### Only some leaves: `backward(inputs=...)`
#
# By default `backward()` fills the `.grad` of *every* leaf that requires grad and took part. Pass
# `inputs=[...]` to fill only the ones you list: the others keep their `.grad` as it was (here: `None`). Handy
# when two parts of a model take turns (a GAN's generator and discriminator) or when part of it is frozen
# for a while.

# %%
w = torch.tensor([1.0, 2.0], requires_grad=True)
b = torch.tensor(0.5, requires_grad=True)
(3 * w + b).sum().backward(inputs=[w])
print("w.grad:", w.grad, "| b.grad:", b.grad)

# %% [markdown]
# ## 4. The graph is freed after `backward()`: `retain_graph`
#
# To save memory, `backward()` throws away the tensors the graph saved for it (like `x` in `w * x`). A
# second `backward()` through the same graph therefore fails, unless the first call kept them with
# `retain_graph=True`. You rarely need it: usually you recompute the forward pass instead.

# %%
a = torch.tensor(2.0, requires_grad=True)
b = a ** 3
b.backward()
try:
    b.backward()
except RuntimeError as e:
    print("RuntimeError:", str(e).split(".")[0])

c = a ** 3
c.backward(retain_graph=True)
c.backward()                      # fine: the saved tensors were kept
print("a.grad after three backward calls: 3·a² three times =", a.grad.item())

# %% [markdown]
# ## 5. Non-scalar outputs need an upstream gradient
#
# `backward()` without arguments only works on a scalar: "the gradient of a vector" has no single meaning.
# What autograd really computes is a **vector-Jacobian product**. For y = f(x) with y of shape (m,) and x of
# shape (n,), the Jacobian J has shape (m, n), and given an *upstream gradient* v of shape (m,) — how much
# a final loss changes with each yᵢ — backward computes vᵀJ, shape (n,): how much the loss changes with each
# xⱼ. That is the chain rule, and it never builds J.
#
# `y.backward(v)` is the same as `(y * v).sum().backward()`.

# %%
x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)   # (3,)
y = x ** 2                                                # (3,) not a scalar
try:
    y.backward()
except RuntimeError as e:
    print("RuntimeError:", e)

v = torch.tensor([1.0, 0.1, 0.01])                        # (3,) upstream gradient, shape of y
y.backward(v)
print("vᵀJ =", x.grad, " (J is diagonal with 2x, so this is v * 2x)")

# %% [markdown]
# ## Exercise: `numerical_grad`
#
# Autograd can be checked without autograd: the slope of a function between two nearby points. The
# **central difference** for element i of x is
#
# $$\frac{\partial f}{\partial x_i} \approx \frac{f(x + \varepsilon e_i) - f(x - \varepsilon e_i)}{2\varepsilon}$$
#
# where $e_i$ is 1 at element i and 0 elsewhere. Its error shrinks like ε², while the *forward* difference
# (f(x + εeᵢ) − f(x)) / ε is only accurate to about ε · f''. See the picture below.
#
# Write `numerical_grad(f, x, eps=1e-6)` for a scalar-valued `f`:
#
# - the result has the shape of `x` (any shape) and dtype **float64**, and is computed in float64 (convert a
#   copy of `x` first: in float32, adding 1e-6 to a number near 1 is mostly rounded away);
# - `x` is unchanged afterwards — values, `requires_grad` and `.grad` (perturb a copy, not `x`).

# %%
def slope_errors(eps_values, x0=1.0):
    """|forward - exact| and |central - exact| for d/dx sin(3x) at x0, in float64."""
    f = lambda z: torch.sin(3 * z)
    x = torch.tensor(x0, dtype=torch.float64)
    exact = 3 * math.cos(3 * x0)
    forward = [abs(((f(x + e) - f(x)) / e).item() - exact) for e in eps_values]
    central = [abs(((f(x + e) - f(x - e)) / (2 * e)).item() - exact) for e in eps_values]
    return forward, central


eps_values = [10.0 ** -k for k in range(1, 13)]
forward, central = slope_errors(eps_values)
plt.figure(figsize=(6.5, 3.8))
plt.loglog(eps_values, forward, "o-", label="forward difference")
plt.loglog(eps_values, central, "s-", label="central difference")
plt.xlabel("eps")
plt.ylabel("error of the slope")
plt.title("Central differences: far smaller error, best near eps = 1e-6 to 1e-5")
plt.legend()
plt.gca().invert_xaxis()
plt.show()

# %% [markdown]
# For tiny ε the error grows again: f(x+ε) and f(x−ε) agree in almost every digit, and subtracting them
# leaves mostly rounding noise. That is why gradient checks use float64 and an ε around 1e-6.

# %%
def numerical_grad(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Central-difference gradient of scalar f at x, computed and returned in float64."""
    ### BEGIN SOLUTION
    xd = x.detach().to(torch.float64).clone()    # our own copy: x is never touched
    flat = xd.view(-1)                           # (n,) a view: writing flat[i] changes xd
    grad = torch.zeros_like(flat)                # (n,) float64
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(xd)
        flat[i] = old - eps
        down = f(xd)
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad.view(x.shape)
    ### END SOLUTION


# %%
check(numerical_grad)

# %% [markdown]
# ## 6. Turning the recording off: `detach`, `torch.no_grad()`, `torch.inference_mode()`
#
# Three tools, three jobs:
#
# - **`t.detach()`** returns a tensor with the same data (the *same memory*) but no history: a leaf with
#   `requires_grad=False`. Use it to use a value without differentiating through it (a target, a logged
#   number, a copy for plotting).
# - **`with torch.no_grad():`** stops recording for a block of code: results have `requires_grad=False`.
#   Use it for evaluation and for updating weights by hand.
# - **`with torch.inference_mode():`** is a stricter, faster `no_grad` for pure inference: tensors made
#   inside are *inference tensors* that may never enter autograd later.

# %%
w = torch.tensor([1.0, 2.0], requires_grad=True)

d = w.detach()
print("detach:", d.requires_grad, "| same memory as w:", d.data_ptr() == w.data_ptr())

with torch.no_grad():
    n = w * 2
print("no_grad:", n.requires_grad, n.grad_fn)

with torch.inference_mode():
    i = w * 2
print("inference_mode:", i.requires_grad, "| is inference tensor:", i.is_inference())
try:
    (i * w).sum().backward()       # an inference tensor cannot be saved for backward
except RuntimeError as e:
    print("RuntimeError:", str(e).split(".")[0])

# %% [markdown]
# Because `detach()` shares memory, changing the detached tensor in place changes the original too. Use
# `t.detach().clone()` when you want an independent copy.

# %%
d[0] = 100.0
print("w after changing its detached view:", w)

# %% [markdown]
# ### `@torch.no_grad()` on a whole function
#
# `torch.no_grad()` also works as a **decorator**: every call of the function then runs without recording,
# whoever calls it and from wherever. That suits functions that only ever evaluate or update weights by hand.
# (`@torch.inference_mode()` works the same way.) Inside such a function, `with torch.enable_grad():`
# switches recording back on for a block.

# %%
@torch.no_grad()
def predict(w, x):
    """Evaluate w·x without recording a graph."""
    return (w * x).sum()


w = torch.tensor([1.0, 2.0], requires_grad=True)
out = predict(w, torch.tensor([3.0, 4.0]))
print(out, "| requires_grad:", out.requires_grad)

# %% [markdown]
# ## 7. In-place operations and autograd
#
# Two in-place mistakes come up again and again.
#
# **Changing a leaf that requires grad.** `w += 1` would rewrite the very value the graph needs as its
# starting point, so PyTorch refuses. Weight updates are done inside `torch.no_grad()`, where nothing is
# recorded, and that is exactly what optimizers do.

# %%
w = torch.tensor([1.0, 2.0], requires_grad=True)
try:
    w += 1
except RuntimeError as e:
    print("RuntimeError:", e)

(w ** 2).sum().backward()
with torch.no_grad():
    w -= 0.1 * w.grad              # allowed: not recorded
print("after one manual step:", w)

# %% [markdown]
# **Changing a tensor that backward still needs.** `exp` saves its output for backward (d eˣ/dx = eˣ).
# Modifying that output in place afterwards is noticed through a version counter on every tensor, and
# backward refuses rather than silently using the wrong number.

# %%
x = torch.tensor([0.0, 1.0], requires_grad=True)
y = x.exp()                        # y is saved for backward
y.add_(1)                          # ... and then changed in place
try:
    y.sum().backward()
except RuntimeError as e:
    print("RuntimeError:", str(e)[:170], "...")

# %% [markdown]
# ### The legacy `.data`, and why `detach()` and `no_grad()` replaced it
#
# Older code (and many tutorials) reaches for `t.data`: the same memory as `t`, without history, like
# `detach()`. The difference is what autograd is told. A tensor from `detach()` shares the **version
# counter** of `t`, so an in-place change through it is noticed, and backward refuses as above. `.data` has a
# counter of its own: the change goes unnoticed and backward **silently** uses the altered value.

# %%
x = torch.tensor([0.0, 1.0], requires_grad=True)
y = x.exp()
y.data.add_(1)                     # the same change as above, hidden from autograd
y.sum().backward()                 # no error ...
print("gradient through .data:", x.grad, "| the true gradient eˣ:", x.detach().exp())

x = torch.tensor([0.0, 1.0], requires_grad=True)
y = x.exp()
y.detach().add_(1)                 # the same change through detach(): autograd sees it
try:
    y.sum().backward()
except RuntimeError as e:
    print("RuntimeError:", str(e)[:120], "...")

# %% [markdown]
# The old weight update `w.data -= lr * w.grad` does work, but so would a mistake written the same way. Today
# the two jobs have their own tools: `detach()` to use a value without its history, and `with torch.no_grad():`
# to change weights in place. Leave `.data` to old code you read.

# %% [markdown]
# ## 8. `torch.autograd.grad`: gradients as return values
#
# `backward()` writes into `.grad` of every leaf. `torch.autograd.grad(outputs, inputs)` instead *returns*
# the gradients with respect to the `inputs` you list, as a tuple, and touches no `.grad` at all. That makes
# it the right tool inside functions that must not disturb their caller's tensors. It takes the same
# `grad_outputs` (the upstream gradient) and `retain_graph` arguments as `backward`.

# %%
x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)   # (3,)
(g,) = torch.autograd.grad((x ** 3).sum(), x)              # one input -> a tuple of one gradient
print("gradient:", g, " (3x²)")
print("x.grad is still:", x.grad)

# %% [markdown]
# A function that needs gradients *of its input* without changing it makes its own leaf:
# `xg = x.detach().requires_grad_(True)`. The caller's `x` keeps its `requires_grad` and its `.grad`.
#
# ## Exercise: `grad_of`
#
# Write `grad_of(f, x)`: the gradient of the scalar `f` at `x`, computed with `torch.autograd.grad`. It
# returns a plain tensor of `x`'s shape and dtype (no graph attached), and afterwards `x.grad` and
# `x.requires_grad` are exactly what they were — whether `x` required grad or not, whether it already had a
# `.grad` or not. `backward()` is not allowed here.

# %%
def grad_of(f, x: torch.Tensor) -> torch.Tensor:
    """Gradient of scalar f at x via torch.autograd.grad, leaving x's grad state untouched."""
    ### BEGIN SOLUTION
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xg), xg)
    return g
    ### END SOLUTION


# %%
check(grad_of)

# %% [markdown]
# ## 9. Higher derivatives: `create_graph=True`
#
# A gradient is itself computed by tensor operations. Normally they are not recorded (a gradient is an end
# product), but with `create_graph=True` they are, so the gradient gets a `grad_fn` and can be
# differentiated again. For f(x) = x³: f' = 3x², f'' = 6x.

# %%
x = torch.tensor(2.0, requires_grad=True)
(d1,) = torch.autograd.grad(x ** 3, x, create_graph=True)
print("f'(2)  =", d1.item(), "| has a graph:", d1.grad_fn is not None)
(d2,) = torch.autograd.grad(d1, x)
print("f''(2) =", d2.item())

# without create_graph, the first gradient is a dead end
(d1_plain,) = torch.autograd.grad(x ** 3, x)
try:
    torch.autograd.grad(d1_plain, x)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# The same error appears for a good reason when f is **linear**: f(x) = 3x − 1 has f' = 3, a constant that
# does not depend on x at all, so even with `create_graph=True` the first derivative has no graph. The
# second derivative is then simply 0. Test `d1.requires_grad` before differentiating again.
#
# For an **element-wise** f (each output element depends only on the same input element), the gradient of
# `f(x).sum()` is the vector of element-wise derivatives, so one `grad` call gives f' at every element.

# %%
x = torch.linspace(-3, 3, 200, requires_grad=True)        # (200,)
y = torch.sin(x) * x ** 2                                  # (200,) element-wise
(dy,) = torch.autograd.grad(y.sum(), x, create_graph=True)  # (200,) f'(x) at each point
plt.figure(figsize=(5.5, 3.5))
plt.plot(x.detach(), y.detach(), label="f(x) = sin(x)·x²")
plt.plot(x.detach(), dy.detach(), label="f'(x) from autograd")
plt.axhline(0, color="gray", lw=0.5)
plt.legend()
plt.title("One grad call gives the derivative everywhere")
plt.show()

# %% [markdown]
# ## Exercise: `second_derivative`
#
# Write `second_derivative(f, x)` for an element-wise `f`: the tensor of d²f/dx² at every element of `x`,
# shape and dtype of `x`, using `create_graph=True`. Where `f` is linear the answer is 0 — and when `f` is
# linear everywhere, return zeros rather than raising. Leave `x` (values, `requires_grad`, `.grad`) as it was.

# %%
def second_derivative(f, x: torch.Tensor) -> torch.Tensor:
    """Element-wise d²f/dx² of an element-wise f at x, via create_graph=True."""
    ### BEGIN SOLUTION
    xg = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(f(xg).sum(), xg, create_graph=True)
    if not d1.requires_grad:                     # f is linear: f' is a constant
        return torch.zeros_like(x)
    (d2,) = torch.autograd.grad(d1.sum(), xg)
    return d2
    ### END SOLUTION


# %%
check(second_derivative)

# %% [markdown]
# ## Exercise: `vjp`
#
# Write `vjp(f, x, v)`: the vector-Jacobian product vᵀ J_f(x) for any `f` (scalar, vector or matrix
# valued), where `v` has the shape of `f(x)`. The result has the shape of `x`. Section 5 showed what it
# is; here return it with `torch.autograd.grad` (its `grad_outputs` argument is the upstream gradient),
# leaving `x` as it was. `torch.autograd.functional.vjp` and `torch.func.vjp` do this in one call and are
# not allowed.

# %%
def vjp(f, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vector-Jacobian product vᵀ J_f(x), shape of x."""
    ### BEGIN SOLUTION
    xg = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xg), xg, grad_outputs=v)
    return g
    ### END SOLUTION


# %%
check(vjp)

# %% [markdown]
# ## 10. Whole Jacobians, one row at a time
#
# A vector-Jacobian product with a **one-hot** v (1 at output element i, 0 elsewhere) picks row i of the
# Jacobian: the gradient of the single output yᵢ with respect to every input. So m backward passes, one per
# output element, give the whole (m, n) Jacobian. Each pass needs the graph again: keep it with
# `retain_graph=True` on every pass (or all but the last).
#
# For tensors of any shape the Jacobian keeps both shapes: `J[i..., j...]` = ∂ f(x)[i...] / ∂ x[j...], shape
# `f(x).shape + x.shape`. A scalar-valued f has the shape of x (its gradient); a 0-d x gives the shape of f(x).

# %%
x = torch.tensor([1.0, 2.0], requires_grad=True)           # (2,)
y = torch.stack([x[0] * x[1], torch.sin(x[1]), x.sum()])  # (3,)
(row1,) = torch.autograd.grad(y[1], x, retain_graph=True)  # the vjp with v = (0, 1, 0)
print("row 1 of the (3, 2) Jacobian:", row1, "= (0, cos 2)")

# %% [markdown]
# `torch.autograd.grad(..., is_grads_batched=True)` runs several vector-Jacobian products in one call: the
# first dimension of `grad_outputs` counts the v's, and the result gets the same extra first dimension.

# %%
vs = torch.tensor([[1.0, 0.0, 0.0],
                   [1.0, 1.0, 1.0]])                       # (2, 3) two v's, each of f(x)'s shape
(two,) = torch.autograd.grad(y, x, grad_outputs=vs, is_grads_batched=True)
print("two vjps at once, shape", tuple(two.shape), ":\n", two)

# %% [markdown]
# Two more things decide what your code meets. An output that does not depend on `x` has a zero row — but
# autograd says so in its own way: `torch.autograd.grad` raises unless you pass `allow_unused=True`, and then
# returns `None` for that input, not zeros. And if nothing in `f(x)` depends on `x` at all, `f(x)` has no
# graph (`requires_grad` is False) and cannot be differentiated: the answer is simply all zeros.
#
# ## Exercise: `jacobian`
#
# Write `jacobian(f, x)`: the full Jacobian of a tensor-to-tensor `f` at `x`, a tensor of shape
# `f(x).shape + x.shape` and of `x`'s dtype and device, built from vector-Jacobian products with
# `torch.autograd.grad` (one per output element, or batched with `is_grads_batched=True`).
#
# - Return it detached (no graph), with zeros wherever an output does not depend on `x` — no error, even when
#   no output depends on it.
# - Leave `x` as it was: values, `requires_grad` and `.grad`.
# - Work inside `torch.no_grad()` too, as `torch.autograd.functional.jacobian` does: build the graph under
#   `torch.enable_grad()`.
# - It must match `torch.autograd.functional.jacobian(f, x)`. That function is not allowed here, nor
#   `torch.autograd.functional.hessian`, `torch.func.jacrev` / `jacfwd` / `hessian`, `torch.vmap`, or forward
#   mode (`torch.func.jvp`, `torch.autograd.forward_ad`); the `is_grads_batched` option of
#   `torch.autograd.grad` is.

# %%
def jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """The Jacobian of f at x, shape f(x).shape + x.shape, from one vector-Jacobian product per output element."""
    ### BEGIN SOLUTION
    with torch.enable_grad():                    # record even when the caller is inside torch.no_grad()
        xg = x.detach().requires_grad_(True)
        y = f(xg)
        jac = torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)   # zeros where nothing flows back
        if not y.requires_grad:                  # no output depends on x
            return jac
        rows = jac.view(y.numel(), *x.shape)      # (m, *x.shape) a view: filling rows fills jac
        flat = y.reshape(-1)                      # (m,)
        for i in range(flat.numel()):
            (g,) = torch.autograd.grad(flat[i], xg, retain_graph=True, allow_unused=True)
            if g is not None:                    # None: output i does not depend on x
                rows[i] = g
    return jac
    ### END SOLUTION


# %%
check(jacobian)

# %% [markdown]
# ## 11. The ready-made tools: `torch.autograd.functional` and `torch.func`
#
# What you just built exists in PyTorch, twice.
#
# - **`torch.autograd.functional`** works on a function and a point: `jacobian(f, x)` does what your
#   `jacobian` does (with `vectorize=True` it batches the products like `is_grads_batched`), and
#   `hessian(f, x)` gives the matrix of second derivatives of a scalar f.
# - **`torch.func`** (inspired by JAX) turns functions into functions. `grad(f)` is the function that returns
#   the gradient of a scalar f. `jacrev(f)` builds the Jacobian row by row with vector-Jacobian products,
#   exactly your recipe; `jacfwd(f)` builds it column by column with forward-mode Jacobian-vector products,
#   cheaper when x has fewer elements than f(x). `vmap(g)` runs a function written for one example over a
#   whole batch, without a Python loop.

# %%
def pair_to_triple(x):
    """(2,) -> (3,), the f of section 10."""
    return torch.stack([x[0] * x[1], torch.sin(x[1]), x.sum()])


import warnings

# the first forward-mode call loads helpers inside torch that warn about torch's own use of torch.jit: not ours
warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)

x = torch.tensor([1.0, 2.0])
print("autograd.functional.jacobian:\n", torch.autograd.functional.jacobian(pair_to_triple, x))
print("torch.func.jacrev equals jacfwd:",
      torch.allclose(torch.func.jacrev(pair_to_triple)(x), torch.func.jacfwd(pair_to_triple)(x)))

def cubes(x):
    """(2,) -> (): a scalar with mixed second derivatives."""
    return (x ** 3).sum() + x[0] * x[1]


print("gradient by torch.func.grad:", torch.func.grad(cubes)(x))          # 3x² + (x₁, x₀)
print("Hessian by autograd.functional:\n", torch.autograd.functional.hessian(cubes, x))

xs = torch.randn(5, 2)                                        # (5, 2) a batch of five points
per_point = torch.func.vmap(torch.func.jacrev(pair_to_triple))(xs)
print("one Jacobian per point:", tuple(per_point.shape))     # (5, 3, 2)

# %% [markdown]
# `torch.func` functions are pure: they never touch `.grad`, and the function you give them should not
# either (no `backward()` inside, no in-place changes of its inputs). A classic use is **per-example
# gradients**, `vmap(grad(loss_of_one_example))`, which plain autograd only gives with one backward per example.

# %% [markdown]
# ## 12. Your own operation: `torch.autograd.Function`
#
# Autograd knows the derivative of every built-in operation. For one of your own (a faster kernel, a
# numerically safer formula, a deliberately altered gradient), subclass `torch.autograd.Function` with two
# static methods:
#
# - `forward(ctx, x)` computes the result (autograd is *off* inside it) and stores what backward will need
#   with `ctx.save_for_backward(...)`;
# - `backward(ctx, grad_output)` receives the upstream gradient d loss / d output and returns
#   d loss / d input, one per input of forward: the chain rule, by hand.
#
# You call it as `MyFunction.apply(x)`, never `forward` directly (that would record nothing). Here is
# x³, which must save its *input*, because its derivative 3x² needs x:

# %%
class Cube(torch.autograd.Function):
    """x³ with a hand-written derivative."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 3 * x ** 2      # chain rule: upstream times the local derivative


x = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
y = Cube.apply(x)
print(y, y.grad_fn)
y.sum().backward()
print("gradient:", x.grad, " (3x²)")

# %% [markdown]
# Save tensors with `ctx.save_for_backward`, not as attributes like `ctx.x = x`: saved tensors are checked
# for in-place changes (section 7) and freed with the graph.
#
# ### `gradcheck`: is my backward right?
#
# `torch.autograd.gradcheck(fn, inputs)` compares the Jacobian your backward produces with central
# differences of your forward — the `numerical_grad` idea. Give it **float64** inputs that require grad
# (float32 is too coarse for finite differences). It returns `True`, or raises and shows both Jacobians.

# %%
x64 = torch.randn(4, dtype=torch.float64, requires_grad=True)
print("Cube passes gradcheck:", torch.autograd.gradcheck(Cube.apply, (x64,)))


class WrongCube(Cube):
    """The same forward with a wrong backward (2x² instead of 3x²)."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 2 * x ** 2


try:
    torch.autograd.gradcheck(WrongCube.apply, (x64,))
except RuntimeError as e:              # GradcheckError, a kind of RuntimeError
    print(type(e).__name__, str(e))    # both Jacobians: 3x² expected on the diagonal, 2x² found

# %% [markdown]
# ## Exercise: `Sigmoid`
#
# The logistic sigmoid σ(x) = 1 / (1 + e⁻ˣ) has a neat derivative: σ'(x) = σ(x)(1 − σ(x)). So backward needs
# only the **output** y = σ(x), not the input. Write `Sigmoid`, a `torch.autograd.Function`:
#
# - `forward(ctx, x)` returns σ(x) (it may call `torch.sigmoid`) and saves the output with
#   `ctx.save_for_backward` — the output, not the input;
# - `backward(ctx, grad_output)` computes the gradient from the saved output with element-wise arithmetic
#   only: no `torch.sigmoid` and no autograd inside it.
#
# It is used as `Sigmoid.apply(x)` and must pass `gradcheck`.

# %%
class Sigmoid(torch.autograd.Function):
    """σ(x), with a backward that reuses the saved output: dσ/dx = y·(1 - y)."""

    @staticmethod
    def forward(ctx, x):
        ### BEGIN SOLUTION
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad_output):
        ### BEGIN SOLUTION
        (y,) = ctx.saved_tensors
        return grad_output * y * (1 - y)
        ### END SOLUTION


# %%
check(Sigmoid)

# %% [markdown]
# ## 13. Gradient descent, by hand
#
# Everything so far adds up to the core of training. To lower f, step from x against its gradient, scaled by
# a **learning rate** `lr`: x ← x − lr · ∇f(x), and repeat. Below is a stretched bowl,
# f(p) = ½(p₀² + 10 p₁²): steep along p₁, shallow along p₀. Each step makes a fresh leaf, asks
# `torch.autograd.grad` for the gradient and takes the step outside the graph (`.detach()`), so no history
# piles up from step to step.

# %%
def bowl(p):
    """A stretched quadratic bowl; p has shape (2,)."""
    return 0.5 * (p[0] ** 2 + 10 * p[1] ** 2)


def descent_path(lr, steps=25, start=(-4.0, 1.5)):
    """The points visited by plain gradient descent on the bowl, shape (steps + 1, 2)."""
    p = torch.tensor(start)
    path = [p]
    for _ in range(steps):
        p = p.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(bowl(p), p)
        p = (p - lr * g).detach()
        path.append(p)
    return torch.stack(path)


g0, g1 = torch.meshgrid(torch.linspace(-5, 5, 101), torch.linspace(-2, 2, 81), indexing="xy")
z = 0.5 * (g0 ** 2 + 10 * g1 ** 2)                      # (81, 101) f on a grid
plt.figure(figsize=(7, 3.5))
plt.contour(g0, g1, z, levels=20, cmap="Greys")
for lr, color in [(0.05, "tab:blue"), (0.18, "tab:red")]:
    path = descent_path(lr)
    plt.plot(path[:, 0], path[:, 1], "o-", ms=3, color=color, label=f"lr = {lr}")
plt.plot(0, 0, "k*", ms=12)
plt.legend()
plt.title("Gradient descent on a stretched bowl")
plt.show()

# %% [markdown]
# With the small learning rate, the path slides smoothly but slowly along the shallow direction. With the
# larger one, it zigzags across the steep direction: each step overshoots the valley floor. One step more
# (lr > 0.2 here, where 1 − 10·lr < −1) and it would bounce ever higher and diverge. Choosing `lr` is the
# first tuning decision of every training run.
#
# ## Exercise: `gradient_descent`
#
# Write `gradient_descent(f, x0, lr, steps)`: `steps` plain gradient-descent updates on the scalar `f`,
# starting from `x0`. Return the final point as a **new, detached** tensor (shape and dtype of `x0`, no
# graph, not sharing memory with `x0`). Never modify `x0`: its values, `requires_grad` and `.grad` stay as
# they were. With `steps = 0` the answer is a copy of `x0`.

# %%
def gradient_descent(f, x0: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """`steps` updates x <- x - lr * grad f(x) from x0; returns a new detached tensor."""
    ### BEGIN SOLUTION
    x = x0.detach().clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        x = (x - lr * g).detach()
    return x
    ### END SOLUTION


# %%
check(gradient_descent)

# %% [markdown]
# ## Summary
#
# - `requires_grad=True` on a floating-point (or complex) leaf makes autograd record every operation on it;
#   results carry a `grad_fn`, linked through `next_functions` down to the leaves.
# - `backward()` on a scalar fills `.grad` of the leaves (only those in `inputs=[...]` if given), **adding**
#   to what is there: zero it every step.
# - Non-scalar outputs need an upstream gradient: backward computes vector-Jacobian products; one per output
#   element gives the whole Jacobian (`torch.autograd.functional.jacobian`, `torch.func.jacrev` / `jacfwd`).
# - The graph is freed by `backward()` (`retain_graph=True` keeps it) and rebuilt by every forward pass.
# - `detach()` (same memory, no history), `no_grad()` (no recording; also a decorator), `inference_mode()`
#   (no recording, ever). `.data` is their unsafe ancestor: changes through it escape the version counter.
# - `torch.autograd.grad` returns gradients instead of storing them; `create_graph=True` allows derivatives
#   of derivatives.
# - A `torch.autograd.Function` brings your own backward; `gradcheck` in float64 tells you if it is right.
# - No in-place changes to leaves that require grad (except under `no_grad`), nor to tensors saved for backward.
#
# Next, `03_modules` packs parameters and their forward pass into `nn.Module`s, and optimizers do the update
# step for you.
