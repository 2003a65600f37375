# %% [markdown]
# # 01 · Tensors: the one data structure everything else is built from
#
# A tensor is a block of numbers with a **shape** (how many along each axis), a **dtype** (what kind of
# number) and a **device** (which memory it lives in). Models, images, batches of text, gradients and
# optimiser state are all tensors, so nearly every bug you will meet in deep learning is one of three:
# the wrong shape, the wrong dtype, or the wrong device. This lesson trains your eye for all three.
#
# Work through it in order. Each section is short: read, run, then change the example and run it again.
# Seven exercises are spread through the lesson, each placed right after the idea it needs.
#
# Keep each exercise self-contained: a helper function or an extra import your answer uses belongs in that
# exercise's cell, because graders run only the answer cells, on top of the lesson's imports.

# %%
from grader import check, hint

import numpy as np
import matplotlib.pyplot as plt
import torch

torch.manual_seed(0)  # the random examples print the same numbers every time you run them

# %% [markdown]
# ## 1. Making tensors
#
# | you want | write |
# | --- | --- |
# | a tensor from Python data | `torch.tensor([[1, 2], [3, 4]])` |
# | all zeros / all ones of a shape | `torch.zeros(2, 3)`, `torch.ones(2, 3)` |
# | integers 0, 1, …, n-1 (or with a step) | `torch.arange(5)`, `torch.arange(2, 10, 3)` |
# | n evenly spaced points, both ends included | `torch.linspace(0, 1, 5)` |
# | uniform in [0, 1) / standard normal | `torch.rand(2, 3)`, `torch.randn(2, 3)` |
# | random integers in [low, high) | `torch.randint(0, 10, (2, 3))` — the shape is a tuple here |
# | the same shape, dtype and device as `x` | `torch.zeros_like(x)`, `torch.ones_like(x)`, `torch.randn_like(x)` |
#
# Note that `arange` stops **before** its end, like Python's `range`, while `linspace` includes both ends.

# %%
print(torch.tensor([[1, 2], [3, 4]]))
print(torch.zeros(2, 3))
print(torch.arange(2, 10, 3))           # 2, 5, 8 — 10 is not included
print(torch.linspace(0, 1, 5))          # 0, 0.25, 0.5, 0.75, 1
print(torch.randint(0, 10, (2, 3)))
x = torch.randn(2, 3)
print(torch.ones_like(x))               # (2, 3) float32, like x

# %% [markdown]
# ### Default dtypes, and a trap in `torch.Tensor`
#
# `torch.tensor` looks at the data: Python ints give **int64**, Python floats give **float32**, bools give
# **bool**. The capitalised `torch.Tensor(...)` is an old constructor that always makes float32 — and when
# you pass it *integers instead of a list* it reads them as a **shape** and hands back uninitialised memory.
# Use lower-case `torch.tensor` for data and `torch.zeros`/`torch.empty` for shapes.

# %%
print(torch.tensor([1, 2]).dtype)       # torch.int64
print(torch.tensor([1.0, 2]).dtype)     # torch.float32: one float makes it all float
print(torch.Tensor([1, 2]).dtype)       # torch.float32, even though the data are ints
print(torch.Tensor(2, 3).shape)         # (2, 3) of whatever was in memory — not the values 2 and 3!

# %% [markdown]
# ### NumPy: `from_numpy` shares memory, `torch.tensor` copies
#
# `torch.from_numpy(a)` wraps the NumPy array's memory without copying: change one and the other changes too
# (`t.numpy()` goes the other way and shares as well). `torch.tensor(a)` always makes an independent copy.
# NumPy's default float is float64, so arrays come over as float64 — while PyTorch layers use float32. Mixing
# the two is a classic error:

# %%
a = np.arange(4.0)
shared = torch.from_numpy(a)            # same memory as a
copied = torch.tensor(a)                # its own memory
a[0] = 100.0
print(shared)                           # tensor([100., 1., 2., 3.], dtype=torch.float64)
print(copied)                           # tensor([0., 1., 2., 3.], dtype=torch.float64)

w = torch.randn(4, 2)                   # float32, like a layer's weights
try:
    shared @ w
except RuntimeError as e:
    print("RuntimeError:", e)
print((shared.float() @ w).dtype)       # convert once, at the boundary: float32

# %% [markdown]
# ### `t.numpy()`: the way back, and when it refuses
#
# `t.numpy()` is `from_numpy` in reverse: the array it returns is a window onto the tensor's memory, so a
# write through either one shows up in the other. It refuses in two cases, each with an error that says what
# to do:
#
# - the tensor **requires grad**: NumPy knows nothing about autograd, so PyTorch will not let the array
#   escape the graph silently — `.detach()` first (a tensor that shares the data but has no graph);
# - the tensor lives on a **GPU** (or any device but the CPU): NumPy arrays live in the CPU's memory, so the
#   data has to be copied over with `.cpu()` first.
#
# `t.detach().cpu().numpy()` works for every tensor, and is what you write for logging and plotting. On a
# CPU tensor `.cpu()` returns the tensor itself, so that array still shares memory; on a GPU tensor it is a copy.

# %%
t = torch.zeros(3)
arr = t.numpy()                          # shares t's memory
arr[0] = 7.0                             # write through NumPy...
t[1] = 8.0                               # ...and through torch
print(t, arr)                            # both see [7, 8, 0]

w = torch.ones(2, requires_grad=True)
try:
    w.numpy()
except RuntimeError as e:
    print("RuntimeError:", e)

# On a machine without a GPU, the meta device (shapes, no data) stands in: the refusal is the same.
elsewhere = torch.zeros(2, device="cuda" if torch.cuda.is_available() else "meta")
try:
    elsewhere.numpy()
except TypeError as e:
    print("TypeError:", e)
print(w.detach().cpu().numpy())          # the form that always works

# %% [markdown]
# ### Back to Python: `item` and `tolist`
#
# `.item()` turns a tensor with exactly one element into a Python number; `.tolist()` turns any tensor into
# nested lists. Both copy the values out of the tensor (and, on a GPU, wait for it), so keep them out of
# inner loops.

# %%
total = torch.tensor([1.5, 2.5]).sum()
print(total.item(), type(total.item()))  # 4.0 <class 'float'>
print(torch.arange(6).reshape(2, 3).tolist())
try:
    torch.tensor([1.5, 2.5]).item()
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## 2. What a tensor knows about itself
#
# `x.shape` (also `x.size()`) is a `torch.Size`, a tuple; `x.ndim` is the number of axes; `x.numel()` the
# number of elements; `x.dtype` and `x.device` are what they say. Print these four whenever a line of code
# surprises you: it is the fastest debugging tool there is.
#
# `.to(...)` changes dtype and/or device and returns a **new** tensor (or `x` itself when nothing changes) —
# it never modifies `x`, so write `x = x.to(...)`. `.type(torch.float64)` converts dtype the older way;
# `x.type()` with no argument returns a string such as `'torch.FloatTensor'`.

# %%
x = torch.zeros(2, 3, 4)
print(x.shape, x.ndim, x.numel(), x.dtype, x.device)   # torch.Size([2, 3, 4]) 3 24 torch.float32 cpu
y = x.to(torch.float64)
print(y.dtype, x.dtype)                                 # float64 float32: x itself is unchanged
print(x.type(), x.type(torch.int32).dtype)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print(x.to(device).device)

# %% [markdown]
# ### Bytes per element, and what a model weighs
#
# The dtype fixes how many bytes each element takes: `x.element_size()` says it, and `x.nbytes` is
# `numel() * element_size()`, the size of the data. float32 takes 4 bytes, float16 and bfloat16 take 2,
# int64 takes 8, bool 1. A model's weights are just tensors, so its memory is its number of parameters times
# the bytes per parameter: a model with 7 billion parameters needs 28 GB in float32 and 14 GB in float16 —
# before any activations. Training needs more: the gradients take as much again, and the Adam optimiser keeps
# two more numbers per parameter.

# %%
for dtype in [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]:
    x = torch.zeros(1000, dtype=dtype)
    print(f"{str(dtype):15} {x.element_size()} bytes each, {x.nbytes:>5} bytes for 1000")

layer = torch.nn.Linear(1024, 1024)          # a layer (lesson 03): a weight (1024, 1024) and a bias (1024,)
n_params = sum(p.numel() for p in layer.parameters())
float32_bytes = sum(p.nbytes for p in layer.parameters())
layer = layer.to(torch.float16)              # converts every parameter
float16_bytes = sum(p.nbytes for p in layer.parameters())
print(f"{n_params} parameters: {float32_bytes / 2**20:.2f} MiB in float32, {float16_bytes / 2**20:.2f} MiB in float16")
print(f"7 billion parameters in float16: {7e9 * 2 / 1e9:.0f} GB")

# %% [markdown]
# ## 3. Indexing and slicing
#
# Indexing works like NumPy: one index per axis, `:` for "all of this axis", negative indices count from
# the end, and `...` stands for "as many `:` as needed" — `x[..., 0]` is the first entry of the **last** axis
# whatever the number of axes. `None` inserts a new axis of size 1.
#
# Basic indexing (integers and slices) returns a **view** that shares memory with `x`: writing into it
# writes into `x`. Indexing with a tensor or list of indices, or with a boolean mask, returns a **copy**.

# %%
x = torch.arange(24).reshape(2, 3, 4)   # (2, 3, 4)
print(x[0].shape)                        # (3, 4)
print(x[:, 1].shape)                     # (2, 4)
print(x[..., -1])                        # (2, 3): the last entry along the last axis
print(x[:, None].shape)                  # (2, 1, 3, 4)
print(x[x % 5 == 0])                     # a boolean mask gives a flat (k,) copy

row = x[1, 2]                            # a view
row[0] = -1
print(x[1, 2])                           # the -1 is in x too

# %% [markdown]
# ## 4. `reshape`, `view` and `contiguous`
#
# A tensor is a flat block of memory plus **strides**: how many elements to skip to move one step along each
# axis. `transpose`, `permute` and `.T` only swap strides, so they are free — but the result is no longer laid
# out row by row in memory ("not contiguous").
#
# - `view(shape)` reinterprets the same memory with new strides; it never copies, so it **fails** when the
#   memory layout does not allow the new shape.
# - `reshape(shape)` returns a view when it can and a copy when it must. It always works.
# - `contiguous()` copies into row-by-row layout (or returns `x` itself if it already is).
#
# A `-1` in a shape means "whatever makes the element count fit".

# %%
x = torch.arange(6).reshape(2, 3)        # (2, 3)
print(x.stride(), x.is_contiguous())     # (3, 1) True
t = x.T                                  # (3, 2), strides swapped, no copy
print(t.stride(), t.is_contiguous())     # (1, 3) False
try:
    t.view(6)
except RuntimeError as e:
    print("RuntimeError:", e)
print(t.reshape(6))                      # works: copies, since it must
print(t.contiguous().view(-1))           # the same, spelled out

# %% [markdown]
# The picture shows what that means. The six numbers sit once in memory, in a row (the **storage**). Every
# tensor below is a view of that same storage: element `(i, j)` is read at position
# `storage_offset + i * stride[0] + j * stride[1]`, written under each value, and each storage slot has its
# own colour. `x.T` reads the same slots in another order (strides `(1, 3)`), and the slice `x[:, 1:]` only
# starts one slot later (`storage_offset() == 1`). Nothing was copied: `data_ptr()` of `x` and `x.T` is the
# same address. `view` can only choose new strides; reading `x.T` row by row means jumping back and forth in
# memory, which no single stride describes, hence the error above.

# %%
x = torch.arange(10, 70, 10).reshape(2, 3)   # (2, 3): values 10 … 60 in storage slots 0 … 5
print(x.data_ptr() == x.T.data_ptr(), x[:, 1:].storage_offset(), x[:, 1:].stride())
colours = plt.cm.tab10(range(6))             # one colour per storage slot


def draw_view(ax, v, title):
    """Each element of a 2-D view as a square: its value, and the storage slot (@k) it is read from."""
    rows, cols = v.shape
    for i in range(rows):
        for j in range(cols):
            k = v.storage_offset() + i * v.stride(0) + j * v.stride(1)
            ax.add_patch(plt.Rectangle((j, rows - 1 - i), 1, 1, facecolor=colours[k], alpha=0.45,
                                       edgecolor="black"))
            ax.text(j + 0.5, rows - 0.5 - i, f"{v[i, j].item()}\n@{k}", ha="center", va="center")
    ax.set_xlim(0, cols), ax.set_ylim(0, rows), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title(title, fontsize=10)


fig, axes = plt.subplots(1, 4, figsize=(12, 2.6), gridspec_kw={"width_ratios": [6, 3, 2, 2]})
draw_view(axes[0], x.view(1, 6), "storage: 6 numbers in a row")
draw_view(axes[1], x, "x (2, 3)\nstrides (3, 1)")
draw_view(axes[2], x.T, "x.T (3, 2)\nstrides (1, 3)")
draw_view(axes[3], x[:, 1:], "x[:, 1:] (2, 2)\noffset 1, strides (3, 1)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. `squeeze` and `unsqueeze`
#
# `unsqueeze(d)` inserts an axis of size 1 at position `d` (same as indexing with `None`); `squeeze(d)`
# removes axis `d` if it has size 1. **Pitfall:** `squeeze()` with no argument removes *every* size-1 axis —
# including a batch axis that happens to have size 1 — so a batch of one silently loses its batch dimension.
# Always name the axis.

# %%
x = torch.zeros(1, 3, 1)                 # a batch of 1, 3 features, 1 channel
print(x.squeeze().shape)                 # (3,): the batch axis is gone too!
print(x.squeeze(-1).shape)               # (1, 3): only the axis we meant
print(torch.zeros(3).unsqueeze(0).shape, torch.zeros(3).unsqueeze(1).shape)   # (1, 3) (3, 1)

# %% [markdown]
# ## 6. `cat` vs `stack`, and `unbind`
#
# `torch.cat(tensors, dim)` glues tensors along an **existing** axis: the shapes must agree on every other
# axis, and the result has as many axes as the inputs. `torch.stack(tensors, dim)` creates a **new** axis:
# the inputs must have identical shapes. `unbind(dim)` is the inverse of `stack`: a tuple of slices.

# %%
a, b = torch.zeros(2, 3), torch.ones(2, 3)
print(torch.cat([a, b], dim=0).shape)    # (4, 3)
print(torch.cat([a, b], dim=1).shape)    # (2, 6)
print(torch.stack([a, b], dim=0).shape)  # (2, 2, 3): a new leading axis
print([t.shape for t in torch.stack([a, b]).unbind(0)])
try:
    torch.stack([a, torch.ones(2, 4)])
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## 7. Broadcasting
#
# When an element-wise operation gets two tensors of different shapes, PyTorch tries to **broadcast** them to
# a common shape without copying any data:
#
# 1. Line the shapes up on the **right**. If one has fewer axes, pretend it has extra size-1 axes on the left.
# 2. Compare the axes pair by pair. Equal sizes are fine. A size of **1 is stretched** to match the other
#    size (even to 0). Any other pair of different sizes is an error.
#
# So `(3, 1)` with `(1, 4)` gives `(3, 4)`; `(5, 1, 4)` with `(3, 1)` gives `(5, 3, 4)`; `(3,)` with `(4,)`
# fails. The picture shows the first case: the real entries are solid, the stretched copies are faded —
# PyTorch never materialises them, it just reads the same number again (a stride of 0).

# %%
col = torch.tensor([[0], [10], [20]])    # (3, 1)
row = torch.tensor([[1, 2, 3, 4]])       # (1, 4)
total = col + row                        # (3, 4)


def draw(ax, values, real, title):
    """Draw a 2-D grid of numbers; cells where `real` is False are faded (they are broadcast copies)."""
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            alpha = 1.0 if real[i, j] else 0.25
            ax.add_patch(plt.Rectangle((j, rows - 1 - i), 1, 1, facecolor="tab:blue", alpha=alpha * 0.6,
                                       edgecolor="black"))
            ax.text(j + 0.5, rows - 0.5 - i, str(values[i, j].item()), ha="center", va="center", alpha=alpha)
    ax.set_xlim(0, 4), ax.set_ylim(0, 3), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title(title)


fig, axes = plt.subplots(1, 3, figsize=(10, 2.8))
draw(axes[0], col.expand(3, 4), (torch.arange(4) == 0).expand(3, 4), "col (3, 1) → (3, 4)")
draw(axes[1], row.expand(3, 4), (torch.arange(3) == 0)[:, None].expand(3, 4), "row (1, 4) → (3, 4)")
draw(axes[2], total, torch.ones(3, 4, dtype=torch.bool), "col + row (3, 4)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **The classic broadcasting bug** is not an error at all. A model outputs predictions of shape `(n, 1)`, the
# targets have shape `(n,)`, and `pred - target` silently becomes an `(n, n)` table of every prediction minus
# every target. The loss is then a number, just the wrong one. Check the shape of anything you subtract:

# %%
pred = torch.randn(4, 1)                 # (n, 1)
target = torch.randn(4)                  # (n,)
print((pred - target).shape)             # (4, 4) — not what anyone meant
print((pred.squeeze(1) - target).shape)  # (4,)
try:
    torch.ones(2, 3) + torch.ones(2, 4)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## Exercise: `broadcast_shape`
#
# Write `broadcast_shape(a, b)` that takes two shapes as tuples of ints and returns the shape of the
# broadcast result as a **tuple of Python ints**, following the two rules above. If the shapes do not
# broadcast, raise `ValueError` (with a message saying which sizes clash). No tensors are needed — this is
# pure Python, and `torch.broadcast_shapes` is of course off limits.
#
# ```
# broadcast_shape((3, 1), (1, 4))    → (3, 4)
# broadcast_shape((5, 1, 4), (3, 1)) → (5, 3, 4)
# broadcast_shape((), (2,))          → (2,)
# broadcast_shape((0,), (1,))        → (0,)        a 1 stretches, even to 0
# broadcast_shape((0,), (3,))        → ValueError
# ```

# %%
def broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """The shape that a tensor of shape a and a tensor of shape b broadcast to; ValueError if they don't."""
    ### BEGIN SOLUTION
    n = max(len(a), len(b))
    a_padded = (1,) * (n - len(a)) + tuple(a)   # line the shapes up on the right
    b_padded = (1,) * (n - len(b)) + tuple(b)
    out = []
    for p, q in zip(a_padded, b_padded):
        if p == q or q == 1:
            out.append(int(p))
        elif p == 1:
            out.append(int(q))
        else:
            raise ValueError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast: sizes {p} and {q} clash")
    return tuple(out)
    ### END SOLUTION


# %%
check(broadcast_shape)

# %% [markdown]
# ## 8. Reductions: `dim` and `keepdim`
#
# `sum`, `mean`, `max`, `min`, `prod`, `std`, `argmax`, … reduce over every element, or over the axis you name
# with `dim`. The reduced axis disappears, unless `keepdim=True` keeps it with size 1 — which is exactly what
# you need to broadcast the result back against the input (for example to subtract each row's mean).
#
# With a `dim`, `max` returns two tensors at once, the values and their positions (`.values`, `.indices`);
# `argmax` returns only the positions. `mean` needs a floating dtype: on integers it is an error.

# %%
x = torch.tensor([[1.0, 5.0, 3.0],
                  [4.0, 2.0, 6.0]])          # (2, 3)
print(x.sum(), x.sum(dim=0), x.sum(dim=1))     # (), (3,), (2,)
print(x.mean(dim=1, keepdim=True).shape)       # (2, 1)
centred = x - x.mean(dim=1, keepdim=True)      # (2, 3) - (2, 1): each row minus its own mean
print(centred)
values, indices = x.max(dim=1)
print(values, indices, x.argmax(dim=1))        # tensor([5., 6.]) tensor([1, 2]) tensor([1, 2])
try:
    torch.arange(4).mean()
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## Exercise: `pairwise_sq_dists`
#
# Given points `x` of shape `(n, d)` and `y` of shape `(m, d)`, return the `(n, m)` tensor whose entry
# `[i, j]` is the squared Euclidean distance `sum_k (x[i, k] - y[j, k]) ** 2`. This is the heart of
# k-nearest neighbours, k-means and RBF kernels.
#
# - No Python loops: make the axes line up with `None` / `unsqueeze` and let broadcasting do the work. The
#   check counts your torch calls on two input sizes, and a count that grows with `n` means a loop.
# - `torch.cdist` is forbidden.
# - Keep the input dtype, and let gradients flow.
#
# The broadcast difference `x[:, None, :] - y[None, :, :]` is an `(n, m, d)` tensor: fine for small inputs,
# but for `n = m = 2000, d = 64` that is 256 million numbers. Expanding the square,
# `|x - y|² = |x|² - 2 x·y + |y|²`, gives the same table from one matrix product and two small sums — fast
# even for large inputs (round-off can make entries a hair below 0, so clamp at 0).

# %%
def pairwise_sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of x (n, d) and y (m, d): an (n, m) tensor."""
    ### BEGIN SOLUTION
    x_sq = (x * x).sum(dim=1, keepdim=True)     # (n, 1)
    y_sq = (y * y).sum(dim=1)                   # (m,), broadcasts as (1, m)
    return (x_sq - 2 * x @ y.T + y_sq).clamp_min(0)   # (n, m)
    ### END SOLUTION


# %%
check(pairwise_sq_dists)

# %% [markdown]
# ## 9. Products: `*`, `@`, `matmul`, `mm`, `bmm`
#
# - `a * b` is **element-wise** (with broadcasting), never a matrix product.
# - `a @ b` is `torch.matmul(a, b)`: a matrix product over the last two axes, with broadcasting over any
#   leading (batch) axes; 1-D operands are treated as vectors.
# - `torch.mm(a, b)` is strictly 2-D × 2-D; `torch.bmm(a, b)` is strictly 3-D × 3-D with equal batch sizes.
#   They are less flexible than `@`, and that is their point: a wrong shape fails loudly.
#
# The rule for shapes: `(…, n, k) @ (…, k, m) → (…, n, m)`, the inner sizes must agree.

# %%
a, b = torch.randn(2, 3), torch.randn(3, 4)
print((a @ b).shape, torch.mm(a, b).shape)     # (2, 4) (2, 4)
print((a * a).shape)                           # (2, 3): element-wise
batch_a, batch_b = torch.randn(5, 2, 3), torch.randn(5, 3, 4)
print(torch.bmm(batch_a, batch_b).shape)       # (5, 2, 4)
print((batch_a @ b).shape)                     # (5, 2, 4): b is broadcast over the batch
try:
    a @ a
except RuntimeError as e:
    print("RuntimeError:", e)
print((a @ a.T).shape)                         # (2, 2)

# %% [markdown]
# ### `matmul` with 1-D operands: the dimensions it drops
#
# A 1-D operand is not a row or a column: `matmul` treats it as a matrix for the product and then removes
# the dimension it added, so the result has **fewer** dimensions than you might expect.
#
# | `a` | `b` | `a @ b` | what happens |
# | --- | --- | --- | --- |
# | `(k,)` | `(k,)` | `()` | the dot product, a 0-dim tensor |
# | `(n, k)` | `(k,)` | `(n,)` | `b` is used as a column `(k, 1)`, then that 1 is dropped |
# | `(k,)` | `(k, m)` | `(m,)` | `a` is used as a row `(1, k)`, then that 1 is dropped |
# | `(B, n, k)` | `(k,)` | `(B, n)` | the same, broadcast over the batch |
#
# So `W @ v` for a weight matrix and a single vector gives `(n,)`, not `(n, 1)`: keep that in mind when you
# subtract it from something of shape `(n, 1)` (section 7's silent `(n, n)` table). Write `v[:, None]` when
# you want a column.

# %%
W, v = torch.randn(4, 3), torch.randn(3)
print((v @ v).shape, (W @ v).shape, (torch.randn(4) @ W).shape, (torch.randn(5, 4, 3) @ v).shape)
print((W @ v[:, None]).shape)                  # (4, 1): a real column stays a column
print(((W @ v) - torch.randn(4, 1)).shape)     # (4, 4): the dropped dimension broadcast against a column

# %% [markdown]
# ## Exercise: `batched_matmul`
#
# Write `batched_matmul(a, b)` for `a` of shape `(B, n, k)` and `b` of shape `(B, k, m)` (equal batch sizes,
# both 3-D) that returns the `(B, n, m)` batch of matrix products — using **only broadcasting and sums**.
# `matmul`, `@`, `bmm`, `mm`, `einsum`, `tensordot` (and the other matrix-product shortcuts) are forbidden.
#
# Think of `out[b, i, j] = sum_k a[b, i, k] * b[b, k, j]`: give `i`, `k` and `j` each their own axis so
# the product broadcasts, then sum the `k` axis away. Gradients must flow and the dtype must be kept.

# %%
def batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, n, k) x (B, k, m) -> (B, n, m) using broadcasting and a sum only."""
    ### BEGIN SOLUTION
    return (a[:, :, :, None] * b[:, None, :, :]).sum(dim=2)   # (B, n, k, 1) * (B, 1, k, m) -> (B, n, m)
    ### END SOLUTION


# %%
check(batched_matmul)

# %% [markdown]
# ## 10. In-place operations
#
# A method ending in `_` (`add_`, `mul_`, `zero_`, `clamp_`, `fill_`, …) modifies its tensor in place and
# returns it; `x += 1` is in place too, while `x = x + 1` makes a new tensor and rebinds the name. In-place
# ops save memory, but:
#
# - every **view** of the tensor sees the change (and so does a NumPy array from `from_numpy`);
# - a function that modifies its argument in place surprises its caller — the checks in this course fail
#   any exercise that changes its inputs;
# - on a leaf tensor that requires a gradient (a model's weight), they are refused, because autograd would
#   lose the value it needs (lesson 02 explains why; optimisers do it inside `torch.no_grad()`).

# %%
x = torch.ones(3)
view = x[:2]
x.add_(1)                                # x is now [2, 2, 2], and so is the view
print(x, view)
y = x                                    # y is the *same* tensor, not a copy
y += 10
print(x)                                 # [12, 12, 12]
x = x + 1                                # a new tensor; y still holds the old one
print(x, y)

w = torch.ones(3, requires_grad=True)
try:
    w.mul_(2)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ### The `out=` argument
#
# Most functions of the `torch` namespace accept `out=`: instead of allocating a new tensor, they write the
# result into one you already have (and return it). Loops that run millions of times use it to reuse one
# buffer. Three rules: the result must be castable to `out`'s dtype (a float result does not go into an int64
# buffer); an `out` of the wrong shape is resized, with a warning, unless it is empty; and autograd does not
# track `out=` — with an input that requires grad it is an error, so keep `out=` for code that needs no
# gradients.

# %%
a, b = torch.ones(3), torch.arange(3.0)
buffer = torch.empty(3)
result = torch.add(a, b, out=buffer)           # writes into buffer, and returns it
print(buffer, result is buffer)
try:
    torch.add(a, b, out=torch.empty(3, dtype=torch.int64))
except RuntimeError as e:
    print("RuntimeError:", e)
try:
    torch.add(torch.ones(3, requires_grad=True), b, out=buffer)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# ## 11. Picking and placing: `gather`, `scatter_`, `masked_fill`
#
# `x.gather(dim, index)` reads, for every position of `index`, the element of `x` whose coordinate along
# `dim` is the number stored in `index` (the other coordinates are the position's own). `index` has the same
# number of axes as `x`, and the result has the shape of `index`. For a 2-D `x` and `dim=1`:
# `out[i, j] = x[i, index[i, j]]` — "in row i, take column index[i, j]".
#
# `out.scatter_(dim, index, value)` is the reverse: it **writes** `value` (a number or a tensor of
# `index`'s shape) to those positions. `masked_fill(mask, value)` replaces the entries where a bool mask is
# True (the mask broadcasts against the tensor).

# %%
scores = torch.tensor([[0.1, 0.7, 0.2],
                       [0.5, 0.3, 0.2]])        # (2, 3): two rows, three classes
chosen = torch.tensor([[1], [0]])              # (2, 1): one column number per row
print(scores.gather(1, chosen))                # [[0.7], [0.5]]

grid = torch.zeros(2, 3)
grid.scatter_(1, chosen, 1.0)                  # write 1.0 at (0, 1) and (1, 0)
print(grid)
print(scores.masked_fill(scores < 0.25, 0.0))  # small scores zeroed; scores itself is unchanged
try:
    scores.gather(1, torch.tensor([1, 0]))     # index must have as many axes as scores
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# In pictures: `gather` reads the highlighted cells of `scores` (row i, column `chosen[i]`) into a tensor of
# `chosen`'s shape; `scatter_` goes the other way and writes into those same cells.

# %%
def draw_grid(ax, values, marked, title):
    """A 2-D tensor as a grid of numbers; the marked cells are highlighted."""
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(plt.Rectangle((j, rows - 1 - i), 1, 1, edgecolor="black", linewidth=1,
                                       facecolor="tab:orange" if marked[i, j] else "white", alpha=0.6))
            ax.text(j + 0.5, rows - 0.5 - i, f"{values[i, j].item():g}", ha="center", va="center")
    ax.set_xlim(0, 3), ax.set_ylim(0, rows), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title(title, fontsize=10)


picked = torch.zeros(2, 3, dtype=torch.bool).scatter_(1, chosen, True)   # where gather reads
fig, axes = plt.subplots(1, 4, figsize=(12, 2.8))
draw_grid(axes[0], chosen, torch.ones(2, 1, dtype=torch.bool), "index: chosen (2, 1)")
draw_grid(axes[1], scores, picked, "scores (2, 3): cell (i, chosen[i])")
draw_grid(axes[2], scores.gather(1, chosen), torch.ones(2, 1, dtype=torch.bool), "scores.gather(1, chosen)")
draw_grid(axes[3], grid, picked, "zeros.scatter_(1, chosen, 1.0)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Index tensors and devices.** Indexing with `[]` accepts index tensors on the CPU even for a tensor on a
# GPU: PyTorch copies them over (a small transfer on every call). `gather`, `scatter_`, `index_select` and
# arithmetic on index tensors do not: there, an index made on the CPU next to data on the GPU is an error.
# Make index tensors where the data is, `torch.arange(n, device=x.device)`, and neither question arises.

# %% [markdown]
# ## Exercise: `gather_rows`
#
# Given `x` of shape `(n, c)` (for example a model's scores for `c` classes) and `idx` of shape `(n,)`
# holding one column number per row, return the `(n,)` tensor with `out[i] = x[i, idx[i]]` — the score
# each row gave to its correct class, the first step of a cross-entropy loss. Use `gather` (or advanced
# indexing with a row-number tensor on `x`'s device). Keep `x`'s dtype and let gradients flow.

# %%
def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """out[i] = x[i, idx[i]] for x (n, c) and idx (n,)."""
    ### BEGIN SOLUTION
    return x.gather(1, idx.unsqueeze(1)).squeeze(1)   # (n, 1) index -> (n, 1) values -> (n,)
    ### END SOLUTION


# %%
check(gather_rows)

# %% [markdown]
# ## Exercise: `one_hot`
#
# Write `one_hot(labels, num_classes=-1)`: for integer class labels of any shape, return an **int64** tensor
# of shape `labels.shape + (num_classes,)` holding a 1 at each label's class and 0 elsewhere — the same as
# `F.one_hot`, which is forbidden here. With `num_classes=-1`, use `labels.max() + 1` classes (labels are
# 0, 1, …, max). Create the result on `labels.device`, and do not modify `labels`.
#
# ```
# one_hot(torch.tensor([2, 0]), 3) → [[0, 0, 1],
#                                     [1, 0, 0]]
# ```

# %%
def one_hot(labels: torch.Tensor, num_classes: int = -1) -> torch.Tensor:
    """int64 one-hot encoding of labels with a trailing class dimension."""
    ### BEGIN SOLUTION
    if num_classes == -1:
        num_classes = int(labels.max()) + 1
    out = torch.zeros(*labels.shape, num_classes, dtype=torch.int64, device=labels.device)  # (..., C)
    return out.scatter_(-1, labels.unsqueeze(-1), 1)
    ### END SOLUTION


# %%
check(one_hot)

# %% [markdown]
# ## 12. Triangles: `triu` and `tril`
#
# `triu(x, diagonal=0)` keeps the upper triangle (on and above the main diagonal) and zeroes the rest;
# `tril` keeps the lower one. `diagonal=1` moves the border one step up: strictly above the diagonal.
# Attention models use exactly this to stop a position from looking at later ones.

# %%
ones = torch.ones(5, 5)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, (title, m) in zip(axes, [("tril(ones)", ones.tril()), ("triu(ones)", ones.triu()),
                                 ("triu(ones, diagonal=1)", ones.triu(diagonal=1))]):
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1.5)
    ax.set_title(title), ax.set_xlabel("column j"), ax.set_ylabel("row i")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercise: `causal_mask`
#
# In a language model, position `i` may attend to positions `0 … i` but not to the future. Write
# `causal_mask(n, device=None)` returning an `(n, n)` **bool** tensor that is True where `j > i` — the
# positions to hide, which is the meaning of a boolean `attn_mask` in `nn.MultiheadAttention`.
#
# Create it directly on `device` (`None` means the default, the CPU; a string such as `"cuda"` and a
# `torch.device` both work when passed to a factory's `device=`). The check also asks for `device="meta"`, a
# device with shapes but no data, to see that you pass the argument on.

# %%
def causal_mask(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n, n) bool mask, True where j > i (the future a query may not see), created on device."""
    ### BEGIN SOLUTION
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(diagonal=1)
    ### END SOLUTION


# %%
check(causal_mask)

# %% [markdown]
# ## 13. `repeat` vs `repeat_interleave` (and `expand`)
#
# `x.repeat(k)` tiles the **whole** tensor k times: `[1, 2, 3] → [1, 2, 3, 1, 2, 3]`.
# `x.repeat_interleave(k)` repeats **each element** k times in place: `[1, 2, 3] → [1, 1, 2, 2, 3, 3]`.
# Both copy data. When you only need a bigger *view* of size-1 axes, `expand` is free (no copy, stride 0) —
# it is what broadcasting does for you behind the scenes.

# %%
x = torch.tensor([1, 2, 3])
print(x.repeat(2))                              # [1, 2, 3, 1, 2, 3]
print(x.repeat_interleave(2))                   # [1, 1, 2, 2, 3, 3]
print(x.repeat(2, 1))                           # (2, 3): tiled along a new leading axis
col = x[:, None]                                # (3, 1)
print(col.expand(3, 4).stride())                # (1, 0): the second axis is not stored at all

# %% [markdown]
# ## 14. Randomness you can reproduce
#
# `torch.manual_seed(s)` resets the global random generator. For randomness that should not disturb (or be
# disturbed by) anything else, make your own `torch.Generator` and pass `generator=g` to the sampling
# function. A generator's state can be saved and restored, which replays exactly the same numbers.
#
# Besides `rand`/`randn`/`randint`, there are **in-place samplers** that refill an existing tensor:
# `x.uniform_(low, high)` and `x.normal_(mean, std)` (this is how weight initialisers work).
# `torch.multinomial(weights, k)` draws category indices with probability proportional to `weights`
# (they need not sum to 1); without `replacement=True` each category can be drawn once only.

# %%
g = torch.Generator().manual_seed(42)
state = g.get_state()                           # a snapshot of the generator
first = torch.rand(3, generator=g)
g.set_state(state)                              # rewind
again = torch.rand(3, generator=g)
print(first, again, torch.equal(first, again))  # identical

w = torch.empty(2, 3).uniform_(-0.1, 0.1, generator=g)  # refill in place
print(w)
probs = torch.tensor([0.1, 0.6, 0.3])
draws = torch.multinomial(probs, 5000, replacement=True, generator=g)   # (5000,) indices in {0, 1, 2}
print(torch.bincount(draws, minlength=3) / 5000)                        # close to [0.1, 0.6, 0.3]
try:
    torch.multinomial(probs, 5)                 # 5 draws from 3 categories, without replacement
except RuntimeError as e:
    print("RuntimeError:", e)

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
axes[0].hist(torch.rand(5000, generator=g).numpy(), bins=40)
axes[0].set_title("rand: uniform on [0, 1)")
axes[1].hist(torch.empty(5000).normal_(2.0, 0.5, generator=g).numpy(), bins=40)
axes[1].set_title("normal_(mean=2, std=0.5)")
axes[2].bar(["0", "1", "2"], (torch.bincount(draws, minlength=3) / 5000).numpy(), label="drawn")
axes[2].plot(["0", "1", "2"], probs.numpy(), "ko", label="weights")
axes[2].set_title("multinomial: frequencies"), axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ### More in-place samplers
#
# `uniform_` and `normal_` have siblings, each refilling a tensor with draws from another distribution. They
# are how you make random masks, waiting times or heavy-tailed noise without a loop:
#
# | method | draws | typical use |
# | --- | --- | --- |
# | `bernoulli_(p)` | 1 with probability `p`, else 0 | random masks (dropout), coin flips |
# | `exponential_(lambd)` | waiting times, mean `1 / lambd` | time between random events |
# | `geometric_(p)` | the number of tries up to the first success: 1, 2, 3, … | counts |
# | `log_normal_(mean, std)` | `exp` of a normal(`mean`, `std`): positive, skewed | sizes, prices |
# | `cauchy_(median, sigma)` | very heavy tails: its mean does not even exist | robustness tests |
# | `random_(low, high)` | integers in `[low, high)`, in the tensor's dtype | random labels, indices |
#
# All of them take `generator=` too, and keep the tensor's shape, dtype and device.

# %%
print(torch.empty(8).bernoulli_(0.25, generator=g))
print(torch.empty(5, dtype=torch.int64).random_(0, 10, generator=g))
samplers = {
    "bernoulli_(0.25)": torch.empty(5000).bernoulli_(0.25, generator=g),
    "exponential_(2.0)": torch.empty(5000).exponential_(2.0, generator=g),
    "geometric_(0.3)": torch.empty(5000).geometric_(0.3, generator=g),
    "log_normal_(0, 0.5)": torch.empty(5000).log_normal_(0.0, 0.5, generator=g),
    "cauchy_(0, 1), clipped to ±10": torch.empty(5000).cauchy_(0.0, 1.0, generator=g).clamp(-10, 10),
}
fig, axes = plt.subplots(1, len(samplers), figsize=(14, 2.6))
for ax, (title, sample) in zip(axes, samplers.items()):
    ax.hist(sample.numpy(), bins=40)
    ax.set_title(title, fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 15. Lengths of vectors: `torch.linalg.vector_norm`
#
# `torch.linalg.vector_norm(x, ord=2, dim=None, keepdim=False)` computes `(sum |x|^ord) ** (1/ord)` over all
# elements or over `dim`: `ord=2` is the usual Euclidean length, `ord=1` the sum of absolute values,
# `ord=float("inf")` the largest absolute value. `keepdim=True` again keeps the axis so that you can divide
# by the result.
#
# **Pitfall:** writing the 2-norm yourself as `(x * x).sum().sqrt()` gives the right value but a `nan`
# gradient at the zero vector, because the slope of `sqrt` at 0 is infinite. `vector_norm` knows this case
# and returns a gradient of 0 there.

# %%
v = torch.tensor([[3.0, 4.0],
                  [1.0, -1.0]])                            # (2, 2)
print(torch.linalg.vector_norm(v, dim=1))                  # [5.0, 1.4142]
print(torch.linalg.vector_norm(v, ord=1, dim=1))           # [7.0, 2.0]
print(torch.linalg.vector_norm(v, dim=1, keepdim=True).shape)   # (2, 1)

zero = torch.zeros(2, requires_grad=True)
(zero * zero).sum().sqrt().backward()
print("hand-written norm, gradient at 0:", zero.grad)      # nan
zero.grad = None
torch.linalg.vector_norm(zero).backward()
print("vector_norm, gradient at 0:      ", zero.grad)      # 0

# %% [markdown]
# ## Exercise: `normalize`
#
# Write `normalize(x, dim=-1, eps=1e-12)` that scales the vectors along `dim` to unit L2 length, exactly like
# `F.normalize(x, p=2, dim=dim, eps=eps)` (forbidden here): divide `x` by `max(norm, eps)`, where `norm` is
# the L2 norm along `dim` kept as a size-1 axis. The `eps` only matters for tiny vectors: a zero vector must
# come out as zeros, not `nan` — and its gradient must be finite too. Keep the dtype; don't modify `x`.

# %%
def normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """x divided by max(its L2 norm along dim, eps), like F.normalize."""
    ### BEGIN SOLUTION
    norm = torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True)   # size 1 along dim
    return x / norm.clamp_min(eps)
    ### END SOLUTION


# %%
check(normalize)

# %% [markdown]
# ## Summary
#
# - Know the **shape, dtype and device** of every tensor; print them when in doubt.
# - `torch.tensor` copies data, `from_numpy` shares it; ints become int64, floats float32, NumPy floats float64.
# - `view` never copies and may fail; `reshape` always works; name the axis you `squeeze`.
# - Broadcasting lines shapes up on the right and stretches size-1 axes — and `(n, 1) - (n,)` is `(n, n)`.
# - Reduce with `dim=`, keep the axis with `keepdim=True` when you will broadcast back.
# - `*` is element-wise, `@` is the matrix product.
# - Methods ending in `_` modify in place; every view sees it.
# - Own generators (`torch.Generator`) make randomness reproducible without global side effects.
#
# Next, lesson `02_autograd`: how PyTorch computes gradients of everything you just learned to compute.
