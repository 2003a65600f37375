# %% [markdown]
# # 03 · Modules: how PyTorch models hold their parameters
#
# In lesson 02 you computed gradients of plain tensors. A real model has thousands of such tensors, grouped
# into layers, layers grouped into blocks, blocks into a network. `torch.nn.Module` is the class that does
# this bookkeeping. A module
#
# - **registers** its learnable tensors (parameters) and the modules inside it (submodules), so that
#   `model.parameters()` finds every one of them, however deeply nested;
# - defines the computation in `forward`, and is **called** like a function: `y = model(x)`;
# - can be **saved and restored** as a dictionary of tensors (`state_dict`);
# - moves as a whole to a device or dtype (`model.to(device)`), and switches as a whole between training
#   and evaluation behaviour (`model.train()`, `model.eval()`).
#
# Everything in this lesson is about that bookkeeping: what gets registered, how, and what goes wrong when
# something is not.
#
# As in every lesson, an exercise's cell must be self-contained: if your answer uses a helper function, an import
# or a constant of your own, define it in that same cell — the grader runs only the exercise cells, after the
# lesson's imports.

# %%
from grader import check, hint

# %%
import math
import tempfile
from collections import OrderedDict
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

# %% [markdown]
# ## 1. Your first module: `__init__` builds, `forward` computes
#
# A module is a Python class that subclasses `nn.Module`:
#
# - `__init__` first calls `super().__init__()` (this creates the registries that hold parameters and
#   submodules), then creates the parameters and submodules and assigns them to attributes;
# - `forward(x)` says how the output is computed from the input, using those attributes.
#
# Here is a module that scales and shifts every feature: `y = x * scale + shift`, with one learnable
# `scale` and `shift` per feature.

# %%
class ScaleShift(nn.Module):
    """y = x * scale + shift, one learnable scale and shift per feature."""

    def __init__(self, num_features: int):
        super().__init__()  # always first: it sets up the registries
        self.scale = nn.Parameter(torch.ones(num_features))   # (F,)
        self.shift = nn.Parameter(torch.zeros(num_features))  # (F,)

    def forward(self, x):  # x: (..., F)
        return x * self.scale + self.shift  # broadcasts over the leading dims


layer = ScaleShift(3)
x = torch.randn(4, 3)  # (N, F)
y = layer(x)           # call the module, not layer.forward(x): see section 2
print(layer)
print(y.shape, y.grad_fn)

# %% [markdown]
# **Pitfall: forgetting `super().__init__()`.** Assigning a parameter or submodule needs the registries that
# `nn.Module.__init__` creates, so the very first assignment fails:

# %%
class Forgetful(nn.Module):
    def __init__(self):
        # super().__init__() is missing
        self.weight = nn.Parameter(torch.ones(2))


try:
    Forgetful()
except AttributeError as e:
    print("AttributeError:", e)

# %% [markdown]
# ## 2. Call the module, not `forward`
#
# `model(x)` runs `nn.Module.__call__`, which calls your `forward` **and** the hooks registered on the module
# (functions that PyTorch tools attach to watch or change inputs and outputs: profilers, pruning, activation
# checkpointing, your own debugging code). `model.forward(x)` skips all of them, silently. Here a hook prints
# the shapes that go through a layer:

# %%
def show_shapes(module, inputs, output):
    print(f"  hook: {type(module).__name__} {tuple(inputs[0].shape)} -> {tuple(output.shape)}")


handle = layer.register_forward_hook(show_shapes)
print("layer(x):")
_ = layer(x)
print("layer.forward(x):")
_ = layer.forward(x)  # nothing printed: the hook never ran
handle.remove()

# %% [markdown]
# ## 3. `nn.Parameter` versus a plain tensor
#
# Assigning an `nn.Parameter` to an attribute of a module **registers** it: it appears in `parameters()`,
# `named_parameters()` and `state_dict()`, is moved by `.to(device)`, and an optimizer built from
# `model.parameters()` updates it. An `nn.Parameter` is a tensor with `requires_grad=True` and this one extra
# property.
#
# A plain tensor attribute is none of that, even with `requires_grad=True`: the module does not know it exists.

# %%
class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))           # registered
        self.v = torch.randn(3, requires_grad=True)     # NOT registered: just a Python attribute

    def forward(self, x):
        return x * self.w + self.v


leaky = Leaky()
print("parameters:", [name for name, _ in leaky.named_parameters()])
print("state_dict:", list(leaky.state_dict()))

# %% [markdown]
# The most common symptom: a model whose tensors all live in a plain attribute (or a Python list, see
# section 5) has no parameters, and the optimizer refuses to start.

# %%
class AllPlain(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.randn(3, requires_grad=True)


try:
    torch.optim.SGD(AllPlain().parameters(), lr=0.1)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## 4. Looking inside: `parameters()`, `named_parameters()`, `children()`, `modules()`
#
# - `parameters()` yields every parameter of the module and of all its submodules, recursively; each shared
#   parameter only once. `named_parameters()` yields `(qualified name, parameter)` pairs, where the name is the
#   path of attributes: `"encoder.0.weight"`.
# - `children()` yields the **direct** submodules; `modules()` yields the module itself and **every** module
#   below it (depth first). Their `named_` versions give the names too.

# %%
model = nn.Sequential(
    nn.Linear(4, 8),                                    # "0"
    nn.ReLU(),                                          # "1"
    nn.Sequential(nn.Linear(8, 8), nn.Tanh()),          # "2", with "2.0" and "2.1" inside
    nn.Linear(8, 2),                                    # "3"
)
print(model)

print("\nchildren():", [type(m).__name__ for m in model.children()])
print("modules(): ", [type(m).__name__ for m in model.modules()])

# %% [markdown]
# A table of `named_parameters()` is the quickest way to understand a model you did not write:

# %%
def parameter_table(module: nn.Module) -> None:
    """Print name, shape, number of elements and trainability of every parameter."""
    total = 0
    print(f"{'name':<12} {'shape':<10} {'numel':>6}  trainable")
    for name, p in module.named_parameters():
        print(f"{name:<12} {str(tuple(p.shape)):<10} {p.numel():>6}  {p.requires_grad}")
        total += p.numel()
    print(f"{'total':<23} {total:>6}")


parameter_table(model)

# %% [markdown]
# `parameters()` and `named_parameters()` take `recurse=False` to list only the parameters a module owns
# **itself**, without those of its submodules. Going over `modules()` with `recurse=False` meets every parameter
# at the module that owns it (a weight shared by two layers at both): the way to apply a rule per kind of layer,
# say no weight decay on normalisation layers.

# %%
class Gated(nn.Module):
    """A learnable gate of its own next to a child layer."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(dim))  # owned by Gated itself
        self.proj = nn.Linear(dim, dim)              # owned by the child

    def forward(self, x):  # (N, dim)
        return self.proj(x) * torch.sigmoid(self.gate)


gated = Gated()
print("recurse=True: ", [n for n, _ in gated.named_parameters()])
print("recurse=False:", [n for n, _ in gated.named_parameters(recurse=False)])
for name, m in gated.named_modules():
    print(f"  {name or '(the model)':<12} owns {[n for n, _ in m.named_parameters(recurse=False)]}")

# %% [markdown]
# **`model.zero_grad()` versus `optimizer.zero_grad()`.** Gradients live on the parameters (`p.grad`), and
# `backward()` adds to them. Both calls clear them (by default they set `p.grad = None`, which frees the memory),
# but over different sets: `model.zero_grad()` clears **every** parameter of the model, `optimizer.zero_grad()`
# only the parameters the optimizer was given. They differ as soon as an optimizer holds part of a model (only
# a new head is trained) or several models share one loss (a GAN's generator and discriminator, each with
# its own optimizer): the parameters outside the optimizer keep accumulating gradients from every backward.

# %%
net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
head_optimizer = torch.optim.SGD(net[2].parameters(), lr=0.1)  # trains the last layer only
for _ in range(2):
    net(torch.randn(8, 3)).sum().backward()
head_optimizer.zero_grad()
print("after optimizer.zero_grad(): head cleared:", net[2].weight.grad is None,
      "· body cleared:", net[0].weight.grad is None)
net.zero_grad()
print("after model.zero_grad():     head cleared:", net[2].weight.grad is None,
      "· body cleared:", net[0].weight.grad is None)

# %% [markdown]
# ## 5. Containers: `nn.Sequential`, `nn.ModuleList`, `nn.ModuleDict`, `add_module`
#
# **`nn.Sequential(*modules)`** runs its modules one after another: each output is the next input. Its
# submodules are named `"0"`, `"1"`, … unless you pass an `OrderedDict` of names. It is indexable and sliceable
# (`seq[0]`, `seq[:2]`, `seq.fc1` with names).

# %%
named = nn.Sequential(OrderedDict([
    ("fc1", nn.Linear(4, 8)),
    ("act", nn.ReLU()),
    ("fc2", nn.Linear(8, 2)),
]))
print(named)
print([name for name, _ in named.named_parameters()])
print(named.fc1 is named[0], named(torch.randn(5, 4)).shape)  # (N, 2)

# %% [markdown]
# An `nn.Sequential` can be edited like a list, and every module you put in is registered at once:
# `append(m)` adds at the end, `insert(i, m)` before position `i`, `seq[i] = m` replaces one, `seq.pop(i)`
# removes one and returns it, `del seq[i]` removes it for good. Slicing (`seq[:2]`) makes a new `nn.Sequential`
# that **shares** the modules (and so the parameters) with the original.

# %%
seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
seq.append(nn.Softmax(dim=-1))  # Linear, ReLU, Linear, Softmax
seq.insert(2, nn.Dropout(0.1))  # Linear, ReLU, Dropout, Linear, Softmax
seq[1] = nn.GELU()              # Linear, GELU, Dropout, Linear, Softmax
last = seq.pop(-1)              # takes the Softmax back out
del seq[2]                      # Linear, GELU, Linear
print(seq)
print("removed:", last, "· the slice shares its layers:", seq[:2][0] is seq[0])

# %% [markdown]
# The same editing replaces a **head**, the usual first step of fine-tuning: keep the trained body, put a new
# last layer with as many outputs as the new task has classes. The new layer is a new module with new
# parameters: it starts on the CPU in float32 (move the model again), and an optimizer built before the swap
# still holds the old head's parameters, so build the optimizer **after** editing the model.

# %%
seq[-1] = nn.Linear(8, 10)  # a named model does the same with model.head = nn.Linear(...)
print(seq[-1], "· input (5, 4) ->", tuple(seq(torch.randn(5, 4)).shape))

# %% [markdown]
# A linear layer wants one feature vector per example, an image batch is `(N, C, H, W)`. `nn.Flatten()`
# flattens from `start_dim=1` to the end, so the batch dimension survives: `(N, C·H·W)`. The function
# `torch.flatten(x)` starts at dimension 0 and would merge the whole batch into one long vector; inside a
# model write `nn.Flatten()` or `x.flatten(1)`.

# %%
images = torch.randn(5, 1, 28, 28)  # (N, C, H, W)
print("nn.Flatten():     ", tuple(nn.Flatten()(images).shape))        # (5, 784)
print("torch.flatten(x): ", tuple(torch.flatten(images).shape))       # (3920,): the batch is gone
classifier = nn.Sequential(nn.Flatten(start_dim=1), nn.Linear(28 * 28, 10))
print("classifier:       ", tuple(classifier(images).shape))          # (5, 10)

# %% [markdown]
# **`nn.ModuleList`** is a list that registers what it holds; you write the loop in `forward` yourself, which
# is what you need when the layers do not simply chain (skip connections, several outputs, a loop over time).
# **`nn.ModuleDict`** is the same as a dictionary, for picking a module by key.
#
# **Pitfall: a Python list of modules.** A plain list is invisible to the module: its layers have no entries
# in `parameters()`, are not saved, and stay on the CPU after `.to("cuda")`. No error tells you.

# %%
class Residual(nn.Module):
    """x + f(x) for each block in turn; the blocks live in an nn.ModuleList."""

    def __init__(self, dim: int, depth: int, registered: bool = True):
        super().__init__()
        blocks = [nn.Linear(dim, dim) for _ in range(depth)]
        self.blocks = nn.ModuleList(blocks) if registered else blocks

    def forward(self, x):  # (N, dim)
        for block in self.blocks:
            x = x + torch.relu(block(x))
        return x


print("ModuleList: ", sum(p.numel() for p in Residual(6, 3).parameters()), "parameters")
print("Python list:", sum(p.numel() for p in Residual(6, 3, registered=False).parameters()), "parameters")

heads = nn.ModuleDict({"classify": nn.Linear(6, 3), "regress": nn.Linear(6, 1)})
print(heads["regress"](torch.randn(2, 6)).shape)  # (2, 1)

# %% [markdown]
# **`add_module(name, module)`** registers a submodule under a name chosen at run time; it is what the
# attribute assignment `self.name = module` does for you. `register_parameter(name, p)` is the same for a
# parameter, and accepts `None` to declare "this parameter is absent" (this is how `nn.Linear(..., bias=False)`
# records that it has no bias).

# %%
stack = nn.Module()
for k in range(3):
    stack.add_module(f"layer{k}", nn.Linear(2, 2))
stack.register_parameter("temperature", None)
print([name for name, _ in stack.named_children()], stack.temperature)

# %% [markdown]
# ## 6. Buffers: state that is not learned
#
# Some tensors belong to a module without being trained: the running statistics of `nn.BatchNorm1d`, a fixed
# positional table, a mask. `self.register_buffer(name, tensor)` registers such a tensor:
#
# | | in `parameters()` (optimizer trains it) | in `state_dict()` (saved) | moved by `.to()` |
# | --- | --- | --- | --- |
# | `nn.Parameter` | yes | yes | yes |
# | `register_buffer(name, t)` | no | yes | yes |
# | `register_buffer(name, t, persistent=False)` | no | no | yes |
# | plain tensor attribute | no | no | **no** |
#
# Use `persistent=False` for things you can recompute at any time (a causal mask, a table of sines), so
# checkpoints stay small and do not break when you change how they are computed.

# %%
class WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))        # saved
        self.register_buffer("mask", torch.tril(torch.ones(3, 3)), persistent=False)  # not saved


wb = WithBuffers()
print("parameters:", [n for n, _ in wb.named_parameters()])
print("buffers:   ", [n for n, _ in wb.named_buffers()])
print("state_dict:", list(wb.state_dict()))
print("BatchNorm1d buffers:", [n for n, _ in nn.BatchNorm1d(4).named_buffers()])

# %% [markdown]
# ## 7. Initialisation: `nn.init`, `apply`, `reset_parameters`, lazy modules
#
# Every built-in layer initialises itself in its constructor. `nn.Linear(in, out)` draws its weight and bias
# uniformly from `(-1/sqrt(in), 1/sqrt(in))`, which keeps the output's scale similar to the input's. The
# functions in `torch.nn.init` re-initialise a tensor **in place** (their names end in `_`) without recording
# gradients: `uniform_`, `normal_`, `zeros_`, `xavier_uniform_`, `kaiming_normal_`, …
#
# `model.apply(fn)` calls `fn(m)` on every submodule and then the model itself, so one function that looks at
# the type of `m` initialises a whole network. The picture shows how the choice changes the spread of the
# weights of a `Linear(256, 256)`.

# %%
def show_inits():
    """Histograms of the weights of one Linear(256, 256) under three initialisations."""
    inits = {
        "default (±1/sqrt(in))": lambda w: None,
        "xavier_uniform_": nn.init.xavier_uniform_,
        "kaiming_normal_": nn.init.kaiming_normal_,
    }
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.6), sharey=True)
    for ax, (name, init) in zip(axes, inits.items()):
        lin = nn.Linear(256, 256)
        init(lin.weight)
        w = lin.weight.detach().flatten()
        ax.hist(w.numpy(), bins=60, color="tab:blue")
        ax.set_title(f"{name}\nstd {w.std():.3f}", fontsize=9)
        ax.set_xlim(-0.35, 0.35)
    fig.tight_layout()
    plt.show()


show_inits()

# %% [markdown]
# Read the widths off the picture: the default is flat on ±1/sqrt(256) = ±0.0625; Xavier-uniform is flat on
# ±sqrt(6 / (fan_in + fan_out)) = ±0.108, chosen so that activations *and* gradients keep their scale through
# a layer; Kaiming-normal is a bell curve with std sqrt(2 / fan_in) = 0.088, made for ReLU networks, where half
# of the signal is cut at zero. Which one trains best depends on the activation and the depth; what matters
# here is that each is just a rule for filling a tensor, applied in place.
#
# An init function for `apply` checks the module's type and fills the tensors it owns:

# %%
def small_normal(m: nn.Module) -> None:
    """An init function for apply: N(0, 0.02) weights and zero biases for Linear layers only."""
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4))
net.apply(small_normal)
print(f"Linear weight std: {net[0].weight.std():.4f} (asked for 0.02)")
print(f"largest |bias|:    {net[0].bias.abs().max():.1f}")
print(f"LayerNorm weight untouched (all ones): {bool((net[1].weight == 1).all())}")

# %% [markdown]
# **Pitfall: changing a parameter in place outside `torch.no_grad()`.** A parameter is a leaf that requires
# grad, and autograd refuses in-place changes to such leaves. The `nn.init` functions switch gradients off
# for you; your own in-place code must do it itself.

# %%
lin = nn.Linear(3, 2)
try:
    lin.bias.fill_(0.0)
except RuntimeError as e:
    print("RuntimeError:", e)
with torch.no_grad():
    lin.bias.fill_(0.0)  # fine
print(lin.bias)

# %% [markdown]
# **`reset_parameters()`.** Built-in layers (`nn.Linear`, `nn.Conv2d`, `nn.LayerNorm`, `nn.Embedding`, …) have a
# method `reset_parameters()` that draws their default initialisation again, in place: the parameter objects
# stay the same, only their values change. It is what their constructor calls, and the quickest way to
# re-initialise a model between two experiments. It is a convention, not a method of `nn.Module`: containers do
# not have it, so test for it; a module of your own can define one too.

# %%
lin = nn.Linear(4, 3)
weight = lin.weight
nn.init.constant_(lin.weight, 5.0)
lin.reset_parameters()
print("same object:", lin.weight is weight, "· back within ±1/sqrt(4):", bool(lin.weight.abs().max() <= 0.5))


def reset_all(m: nn.Module) -> None:
    """For apply: redraw the default initialisation of every layer that has one."""
    if hasattr(m, "reset_parameters"):
        m.reset_parameters()


net.apply(reset_all)

# %% [markdown]
# **Lazy modules.** `nn.LazyLinear(out_features)` leaves `in_features` open: its weight is an
# `UninitializedParameter` without a shape until the first forward, which reads the size of the input's last
# dimension, creates and initialises the weight, and turns the module into an ordinary `nn.Linear`. Convenient
# when the input size is tedious to work out (after a stack of convolutions), but everything that needs the
# shapes must wait for one forward with a dummy batch: counting parameters, your own initialisation,
# `load_state_dict`, and building the optimizer.

# %%
lazy = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(3))
print("before:", lazy[0], type(lazy[0].weight).__name__)
try:
    sum(p.numel() for p in lazy.parameters())
except ValueError as e:
    print("ValueError:", str(e)[:70], "…")
lazy(torch.randn(2, 10))  # the dummy batch: (N, 10) fixes in_features = 10
print("after: ", lazy[0], type(lazy[0]).__name__, tuple(lazy[0].weight.shape))
print("parameters:", sum(p.numel() for p in lazy.parameters()))

# %% [markdown]
# ## 8. `state_dict`, `load_state_dict`, saving and loading
#
# `model.state_dict()` is an ordered dictionary from qualified names to tensors: every parameter and every
# persistent buffer. `load_state_dict(state)` copies such a dictionary back, matching by name and shape.
# With `strict=True` (the default) a missing or unexpected key is an error; that strictness is your friend:
# it tells you at once that the checkpoint and the model disagree.

# %%
a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
b.load_state_dict(a.state_dict())
x = torch.randn(2, 3)
print("same outputs:", torch.equal(a(x), b(x)))

renamed = nn.Sequential(OrderedDict(fc1=nn.Linear(3, 4), act=nn.ReLU(), fc2=nn.Linear(4, 1)))
try:
    renamed.load_state_dict(a.state_dict())
except RuntimeError as e:
    print("RuntimeError:", str(e)[:230], "…")

# %% [markdown]
# To save, write the **state_dict** (not the model object) with `torch.save`, and read it back with
# `torch.load(path, weights_only=True)`. `weights_only=True` only accepts tensors and plain containers, so
# loading a file cannot run code hidden inside it; recent PyTorch releases make it the default. To restore,
# build the model from code, then load the weights into it.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.pt"
    torch.save(a.state_dict(), path)
    restored = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    restored.load_state_dict(torch.load(path, weights_only=True))
    print("restored:", torch.equal(restored(x), a(x)))

    # Pitfall: a whole pickled model is not "weights only".
    torch.save(a, Path(tmp) / "whole.pt")
    try:
        torch.load(Path(tmp) / "whole.pt", weights_only=True)
    except Exception as e:
        print(f"{type(e).__name__}:", str(e).split(".")[0], "…")

# %% [markdown]
# ## 9. `train()` and `eval()`
#
# A few layers behave differently while training: `nn.Dropout` zeroes random entries (and scales the others by
# `1 / (1 - p)`) only in training mode; `nn.BatchNorm*` normalises with the batch's statistics and updates its
# running averages while training, and uses the running averages when evaluating. Every module has a flag
# `self.training`; `model.train()` and `model.eval()` set it on the model and all its submodules. Modules start
# in training mode.
#
# **Pitfall: evaluating in training mode.** Predictions become random and BatchNorm's statistics drift with
# every evaluation batch. Call `model.eval()` before evaluating (and `model.train()` before training again).
# `eval()` does not switch off gradients: that is `torch.no_grad()`, a separate matter.

# %%
drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
x = torch.randn(1, 4)
print("training:", drop.training, drop(x), drop(x), sep="\n")
drop.eval()
print("eval:", drop.training, drop(x), drop(x), sep="\n")

# %% [markdown]
# ## 10. `.to(device)` and `.to(dtype)` for modules
#
# `model.to(device)` moves every parameter and buffer (registered ones!) and returns the model itself: unlike
# `tensor.to(...)`, it changes the module in place. `.double()`, `.half()` and `.to(torch.float64)` convert the
# floating-point parameters and buffers. The `meta` device holds shapes without data, handy to see where
# things end up without a GPU:

# %%
wb.to("meta")
print({n: t.device.type for n, t in wb.state_dict().items()}, wb.mask.device)
leaky.to("meta")
print("registered w:", leaky.w.device, "· plain v:", leaky.v.device)  # v was left behind

# %% [markdown]
# On a GPU, `leaky(x.cuda())` would now fail with "Expected all tensors to be on the same device": the
# usual consequence of a tensor that was not registered.
#
# `model.cuda()` and `model.cpu()` are shorthands: `model.to("cuda")` (the current GPU; `model.cuda(1)` is
# `model.to("cuda:1")`) and `model.to("cpu")`. Like `.to`, they move the module in place and return it; on a
# tensor they return a moved copy. Code sprinkled with `.cuda()` only runs where there is an NVIDIA GPU: pick a
# `device` once and write `.to(device)` everywhere, and the same notebook runs on a laptop, on Apple's `mps`
# and on a GPU server.

# %%
small = nn.Linear(2, 2).cpu()  # the same as .to("cpu"): here a no-op that returns the module
try:
    small.cuda()
    print("moved to", small.weight.device)
except (RuntimeError, AssertionError) as e:  # no GPU, or a PyTorch built without CUDA
    print(f"{type(e).__name__}: {str(e)[:70]} …")
device = "cuda" if torch.cuda.is_available() else "cpu"
print("device-agnostic:", small.to(device).weight.device)

# %% [markdown]
# ## 11. `nn.functional` versus `nn`
#
# `torch.nn.functional` (imported as `F`) holds the computations as plain functions: `F.relu(x)`,
# `F.linear(x, w, b)`, `F.dropout(x, p, training)`, `F.cross_entropy(logits, y)`. The classes in `torch.nn`
# wrap them in modules that **own** state: `nn.Linear` owns its weight, `nn.Dropout` knows whether the model is
# training. Rules of thumb:
#
# - anything with parameters or buffers → a module, created in `__init__`;
# - stateless activations → either; a module makes them visible in `print(model)` and in `modules()`;
# - `F.dropout(x, p)` defaults to `training=True`: inside `forward` write
#   `F.dropout(x, p, training=self.training)`, or simply use `nn.Dropout`.

# %%
x = torch.randn(2, 3)
lin = nn.Linear(3, 2)
print(torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias)), torch.equal(nn.ReLU()(x), F.relu(x)))

# %% [markdown]
# ## 12. Activation functions
#
# **Why a network needs them.** A linear layer computes `x @ W.T + b`. Two of them in a row compute
# `(x @ W1.T + b1) @ W2.T + b2 = x @ (W2 @ W1).T + (W2 @ b1 + b2)`: again one linear layer. However many you
# stack, without something non-linear in between the whole network is a single matrix and a shift, and can only
# draw straight lines (planes) through the data.

# %%
first, second = nn.Linear(3, 5), nn.Linear(5, 2)
merged = nn.Linear(3, 2)
with torch.no_grad():
    merged.weight.copy_(second.weight @ first.weight)             # (2, 5) @ (5, 3) -> (2, 3)
    merged.bias.copy_(second.weight @ first.bias + second.bias)   # (2,)
x = torch.randn(4, 3)
print("two stacked Linear layers == one Linear:", torch.allclose(second(first(x)), merged(x), atol=1e-6))

# %% [markdown]
# An activation function between the layers breaks the collapse. A small example of what it buys: `|x|` is not
# linear, so no stack of linear layers computes it, but one hidden layer of two ReLUs does, since
# `|x| = relu(x) + relu(-x)`.

# %%
absolute = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
with torch.no_grad():
    absolute[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))  # hidden units: x and -x
    absolute[2].weight.copy_(torch.tensor([[1.0, 1.0]]))     # their sum after the ReLU
x = torch.tensor([[-2.0], [-0.5], [0.0], [1.5]])             # (N, 1)
print(absolute(x).flatten().tolist())                        # |x|

# %% [markdown]
# **The usual ones**, each an element-wise function (and a module class of the same name):
#
# - `ReLU`: `max(0, x)`. Cheap, does not saturate for x > 0; its gradient is exactly 0 for x < 0, so a unit
#   whose inputs are always negative stops learning ("dead" ReLU).
# - `LeakyReLU(negative_slope)`: `x` for x > 0, `slope·x` below; the small slope keeps a gradient everywhere
#   (the default slope 0.01 is hard to see, the picture uses 0.1).
# - `Sigmoid`: `1 / (1 + e^-x)`, squashes into (0, 1). Its gradient is at most 0.25 and vanishes for large
#   |x|: fine for a gate or a probability at the output, a poor choice between deep layers.
# - `Tanh`: squashes into (-1, 1), centred on 0, gradient at most 1, and it saturates like the sigmoid.
# - `GELU`: `x·Φ(x)`, with Φ the standard normal distribution function: a smooth ReLU that lets a little
#   through below 0 (the default in transformers such as BERT and GPT-2).
# - `SiLU` (also called swish): `x·sigmoid(x)`, another smooth ReLU, used in many vision models and in the
#   gated layers of recent language models.
#
# The picture draws each function and its derivative. The derivatives are not typed in: autograd computes
# them from the functions, as it would inside a network.

# %%
def show_activations():
    """Each activation (solid) and its derivative from autograd (dashed), on the same axes."""
    acts = {"ReLU": nn.ReLU(), "LeakyReLU(0.1)": nn.LeakyReLU(0.1), "Sigmoid": nn.Sigmoid(),
            "Tanh": nn.Tanh(), "GELU": nn.GELU(), "SiLU": nn.SiLU()}
    x = torch.linspace(-4, 4, 401, requires_grad=True)
    fig, axes = plt.subplots(1, 6, figsize=(15, 2.6), sharey=True)
    for ax, (name, act) in zip(axes, acts.items()):
        y = act(x)
        (dy,) = torch.autograd.grad(y.sum(), x)  # each y[i] depends on x[i] only: the sum's gradient is dy/dx
        ax.plot(x.detach(), y.detach(), label="f(x)")
        ax.plot(x.detach(), dy, "--", label="f'(x)")
        ax.axhline(0, color="gray", lw=0.5)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_title(name, fontsize=10)
        ax.set_ylim(-1.5, 4)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    plt.show()


show_activations()

# %% [markdown]
# Read the dashed lines: ReLU's gradient jumps from 0 to 1; the sigmoid's never exceeds 0.25 and, like tanh's,
# fades to 0 on both sides (saturation: a unit deep in either flat part barely learns); GELU and SiLU dip
# slightly below 0 left of the origin and have gradients a little above 1 to the right of it.
#
# **`nn.ReLU` or `F.relu`?** They compute the same thing. The module version shows up in `print(model)` and in
# `modules()`, can carry hooks, and can be passed around as a class, which is how the `MLP` exercise below
# receives its `activation`. `F.relu` inside `forward` is shorter, and just as good when nothing needs to see
# the activation. `inplace=True` (on the module or the function) overwrites the input to save memory: when
# that input is still needed (by autograd, or by your own code, say a residual `x + act(x)`), you get an error
# or a wrong value, so leave it off unless memory is tight.

# %%
block = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
x = torch.randn(2, 3)
print(block)
print("same values:", torch.equal(block(x), F.relu(block[0](x))))

# %% [markdown]
# ## Exercise 1: `gelu`
#
# Write `gelu(x, approximate="none")`, the function behind `nn.GELU`:
#
# - `approximate="none"`: the exact form `x·Φ(x)`, where `Φ(x) = 0.5·(1 + erf(x / √2))` is the standard
#   normal distribution function (`torch.erf` is there);
# - `approximate="tanh"`: the cheaper approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`;
# - any other value of `approximate` raises `ValueError`.
#
# The check compares values and gradients with `F.gelu` in float32 and float64, over ordinary values, far into
# both tails and at large magnitudes. The tolerance is relative to `|x|`, which is also how exactly `F.gelu`
# itself is computed: far in the negative tail both answers are 0 up to rounding. `F.gelu` and `nn.GELU` are off
# limits here (the check notices).

# %%
def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU, x·Φ(x): exact with erf ("none") or with the tanh approximation ("tanh")."""
    ### BEGIN SOLUTION
    if approximate == "none":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))  # Φ(x) = 0.5·(1 + erf(x / √2))
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        return 0.5 * x * (1 + torch.tanh(inner))
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    ### END SOLUTION


# %%
check(gelu)

# %% [markdown]
# The two forms never differ by more than 5e-4 (the largest gap is near |x| ≈ 2.7). The tanh form was proposed
# as a faster stand-in for `erf`, and some pretrained models (GPT-2 among them) were trained with it: to
# reproduce their outputs, use the same `approximate` they were trained with.

# %% [markdown]
# ## Exercise 2: `Linear`
#
# Write the class `Linear(in_features, out_features, bias=True)`, your own `nn.Linear`:
#
# - parameters `weight` of shape `(out_features, in_features)` and `bias` of shape `(out_features,)`, both
#   float32 and initialised uniformly in `(-1/sqrt(in_features), 1/sqrt(in_features))`, as `nn.Linear` does;
# - with `bias=False` there is no bias parameter: like `nn.Linear`, register it as `None`
#   (`self.register_parameter("bias", None)`), so that `self.bias is None` and `state_dict()` has no `"bias"`;
# - `forward(x)` computes `x @ weight.T + bias` for `x` of shape `(..., in_features)` — any number of leading
#   dimensions, including none — and returns `(..., out_features)`;
# - the `state_dict` must load into `nn.Linear` with `strict=True`, and `nn.Linear`'s into yours.
#
# `nn.Linear` and `F.linear` are off limits here (the check notices).

# %%
class Linear(nn.Module):
    """A fully connected layer, y = x @ weight.T + bias, initialised like nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        ### BEGIN SOLUTION
        k = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-k, k))  # (out, in)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k))  # (out,)
        else:
            self.register_parameter("bias", None)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        y = x @ self.weight.T  # (..., in) @ (in, out) -> (..., out)
        return y if self.bias is None else y + self.bias
        ### END SOLUTION


# %%
check(Linear)

# %% [markdown]
# ## Exercise 3: `MLP`
#
# Write the class `MLP(sizes, activation=nn.ReLU, dropout=0.0)`: a multilayer perceptron with one `nn.Linear`
# for each pair of consecutive sizes (`sizes = [4, 16, 16, 3]` gives `Linear(4, 16)`, `Linear(16, 16)`,
# `Linear(16, 3)`). After every layer **except the last** comes a fresh `activation()` (a new instance each
# time; `activation` is a class such as `nn.ReLU` or `nn.Tanh`), followed by `nn.Dropout(dropout)` when
# `dropout > 0`. The last layer's output is returned as it is.
#
# How you organise the inside is up to you (an `nn.Sequential`, `nn.ModuleList`s, attributes, …), as long as
# every module is registered and runs as a module: the check runs one forward, lists the modules in the order
# they ran and compares the outputs with an `nn.Sequential` built the same way, in `eval()` and in `train()`
# mode.

# %%
class MLP(nn.Module):
    """Linear layers between consecutive sizes, with activation (and dropout) between them."""

    def __init__(self, sizes: list[int], activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0):
        super().__init__()
        ### BEGIN SOLUTION
        layers = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            if k < len(sizes) - 2:  # not after the last layer
                layers.append(activation())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        return self.net(x)  # (N, sizes[0]) -> (N, sizes[-1])
        ### END SOLUTION


# %%
check(MLP)

# %% [markdown]
# ## Exercise 4: `count_parameters`
#
# Write `count_parameters(module, trainable_only=True)` that returns, as a Python `int`, the number of
# elements in the module's parameters: only those with `requires_grad=True` when `trainable_only`, all of them
# otherwise. A parameter shared by two layers (say, an embedding whose weight is reused by the output layer)
# counts once, as `module.parameters()` yields it once. Buffers are not parameters.

# %%
def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """The number of parameter elements (each shared parameter once), optionally only the trainable ones."""
    ### BEGIN SOLUTION
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
    ### END SOLUTION


# %%
check(count_parameters)

# %% [markdown]
# ## Exercise 5: `init_weights`
#
# Write `init_weights(module)`, meant for `model.apply(init_weights)`: when `module` is an `nn.Linear`, give
# its weight the Xavier-uniform initialisation (uniform in `±sqrt(6 / (fan_in + fan_out))`) and set its bias,
# if it has one, to zero. Any other module (convolutions, normalisation layers, embeddings, …) is left exactly
# as it was. Change the existing tensors in place; do not replace them: an optimizer built before
# `model.apply(init_weights)` holds the old parameter objects and would go on training those.

# %%
def init_weights(module: nn.Module) -> None:
    """For model.apply: Xavier-uniform weights and zero biases in nn.Linear layers, nothing else."""
    ### BEGIN SOLUTION
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    ### END SOLUTION


# %%
check(init_weights)

# %% [markdown]
# ## Exercise 6: `RunningMean`
#
# Write the class `RunningMean(num_features, momentum=0.1)`, a small cousin of BatchNorm:
#
# - a persistent buffer `mean` of shape `(num_features,)`, zeros at first: it appears in `state_dict()`, not
#   in `parameters()`, and follows `.to(device)`;
# - in training mode, `forward(x)` with `x` of shape `(N, num_features)` first updates
#   `mean = (1 - momentum) * mean + momentum * x.mean(0)` and then returns `x - mean` with the **updated**
#   mean;
# - in eval mode it returns `x - mean` and leaves `mean` unchanged;
# - the buffer holds numbers, not a history: update it without recording gradients.

# %%
class RunningMean(nn.Module):
    """Subtract a running mean of the features, updated in training mode only."""

    def __init__(self, num_features: int, momentum: float = 0.1):
        super().__init__()
        ### BEGIN SOLUTION
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(num_features))  # (F,)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        if self.training:
            with torch.no_grad():  # the buffer stores numbers, not a graph
                self.mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0))  # (F,)
        return x - self.mean  # (N, F) - (F,) -> (N, F)
        ### END SOLUTION


# %%
check(RunningMean)

# %% [markdown]
# ## Exercise 7: `freeze`
#
# Fine-tuning often trains only part of a pretrained model. Write `freeze(module, prefixes)` that sets
# `requires_grad = False` on every parameter whose qualified name (from `named_parameters()`) **equals** one
# of the prefixes or **starts with a prefix followed by a dot**. So `"layer1"` freezes `layer1.weight` and
# `layer1.bias`, but not `layer10.weight`; `"layer2.0"` freezes only the first module inside `layer2`. Leave
# every other parameter exactly as it is (one that was frozen already stays frozen).

# %%
def freeze(module: nn.Module, prefixes: list[str]) -> None:
    """Set requires_grad=False on the parameters named by `prefixes` (whole name parts only)."""
    ### BEGIN SOLUTION
    for name, p in module.named_parameters():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            p.requires_grad_(False)
    ### END SOLUTION


# %%
check(freeze)

# %% [markdown]
# An optimizer only needs the trainable parameters; pass them explicitly after freezing:
#
# ```python
# optimizer = torch.optim.AdamW((p for p in model.parameters() if p.requires_grad), lr=1e-4)
# ```
#
# ## Summary
#
# - Subclass `nn.Module`, call `super().__init__()` first, create parameters and submodules in `__init__`,
#   compute in `forward`, and call the module: `model(x)`.
# - Only registered tensors count: `nn.Parameter` for learned ones, `register_buffer` for the rest; modules in
#   attributes, `nn.Sequential`, `nn.ModuleList` or `nn.ModuleDict`, never in a Python list.
# - `named_parameters()` and `print(model)` tell you what a model holds; `apply` plus `nn.init` (or
#   `reset_parameters()`) sets it up, in place; lazy modules get their shapes at the first forward.
# - Without activation functions stacked linear layers collapse into one; ReLU, GELU and SiLU are the usual
#   choices between layers, sigmoid and tanh saturate.
# - Edit an `nn.Sequential` like a list; build the optimizer after the model is final.
# - Save `state_dict()`, load with `torch.load(..., weights_only=True)` and `load_state_dict` (strict).
# - `model.eval()` before evaluating, `model.train()` before training; `model.to(device)` moves everything
#   registered.
