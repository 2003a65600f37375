# %% [markdown]
# # 07 · Training: the loop, evaluation, checkpoints and watching a run
#
# You can already build a model, compute a loss and take an optimizer step. This lesson turns those pieces into
# the routine that every PyTorch project repeats: **train for an epoch, evaluate, save, repeat** — and the
# habits that keep that routine honest: switching the model between training and evaluation mode, not building
# graphs you do not need, making runs reproducible, resuming a run that was interrupted, stopping when the model
# stops improving, and watching it all happen.
#
# By the end you will train a classifier for handwritten digits that gets more than 95% of unseen images right,
# in a few seconds on a laptop CPU.
#
# As before, write each exercise so that its cell stands alone: graders run only the answer cells (with the
# lesson's imports), so your helpers and extra imports go inside them.

# %%
from grader import check, hint

import copy
import csv
import os
import random
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from grader.data import datasets_dir

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("device:", device)

# %% [markdown]
# ## 1. The data: 1,797 tiny handwritten digits
#
# The course ships a small image set in `datasets/digits/`: 8×8 grayscale pictures of the digits 0–9, already
# split into a **training** part (1,437 images) and a **test** part (360 images). Each image is a PNG file, and
# a CSV file per split lists `filename,label`:
#
# ```
# datasets/digits/train.csv          filename,label  →  train/3/0003.png,3
# datasets/digits/train/<label>/<index>.png
# datasets/digits/test/<label>/<index>.png
# ```
#
# The helper below reads one split into two tensors. Two details matter for everything that follows:
#
# - A PNG stores pixels as integers 0..255 (`torch.uint8`). A network wants **floating-point** inputs on a
#   **small scale**, so we divide by 255 and get values in [0, 1].
# - We keep the channel dimension: an image batch is `(B, C, H, W)`, here `(B, 1, 8, 8)`.

# %%
def load_digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped digits split ('train' or 'test'): x (N, 1, 8, 8) float32 in [0, 1], y (N,) int64."""
    root = datasets_dir() / "digits"
    with open(root / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pixels = [np.array(Image.open(root / row["filename"])) for row in rows]  # each (8, 8) uint8
    x = torch.from_numpy(np.stack(pixels)).unsqueeze(1)                      # (N, 1, 8, 8) uint8
    y = torch.tensor([int(row["label"]) for row in rows])                    # (N,) int64
    return x.float() / 255, y


x_train_all, y_train_all = load_digits_split("train")
print(x_train_all.shape, x_train_all.dtype, x_train_all.min().item(), x_train_all.max().item())
print(y_train_all.shape, y_train_all.dtype, "labels:", y_train_all[:12].tolist())

fig, axes = plt.subplots(2, 8, figsize=(8, 2.3))
for ax, image, label in zip(axes.flat, x_train_all, y_train_all):
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title(int(label), fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Pitfall: raw `uint8` pixels.** Forgetting the conversion is the first error most people meet with images:

# %%
raw = torch.from_numpy(np.array(Image.open(datasets_dir() / "digits" / "train" / "0" / "0000.png")))  # (8, 8)
try:
    nn.Linear(64, 10)(raw.reshape(1, 64))
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# Converting with `.float()` alone silences the error but leaves values up to 255: the first layer's outputs
# are then hundreds of times larger than with inputs in [0, 1], the gradients too, and a learning rate that
# works for one scale makes the other diverge. Dividing by 255 is the simplest normalisation; whatever you
# choose, **apply exactly the same transformation at training and at test time**.
#
# We never look at the test split while developing. For choices such as "how many epochs?" we hold out part of
# the training split as a **validation** set (a seeded permutation, so the split is the same every run):

# %%
perm = torch.randperm(len(x_train_all), generator=torch.Generator().manual_seed(0))
train_idx, val_idx = perm[:1150], perm[1150:]
x_train, y_train = x_train_all[train_idx], y_train_all[train_idx]   # (1150, 1, 8, 8), (1150,)
x_val, y_val = x_train_all[val_idx], y_train_all[val_idx]           # (287, 1, 8, 8), (287,)
print(len(x_train), "training images,", len(x_val), "validation images")

# %% [markdown]
# ## 2. Reproducibility: seeds, generators, deterministic algorithms
#
# Training uses randomness everywhere: initial weights, the shuffling order of the data, dropout masks, data
# augmentation. A **seed** fixes where a random generator starts, so the same program gives the same numbers.
# Three libraries keep three **separate** generators, and each must be seeded on its own:
#
# | generator | used by | seed it with |
# | --- | --- | --- |
# | Python's `random` | your own code, some data pipelines | `random.seed(seed)` |
# | NumPy's global generator | `np.random.rand`, `np.random.shuffle`, older libraries | `np.random.seed(seed)` |
# | torch's default generators | `torch.randn`, `nn.Linear` initialisation, dropout, `shuffle=True` | `torch.manual_seed(seed)` |
#
# `torch.manual_seed` seeds the CPU generator **and** the generator of every GPU (it calls
# `torch.cuda.manual_seed_all` for you).

# %%
torch.manual_seed(0)
a = torch.rand(3)
torch.manual_seed(0)
b = torch.rand(3)
print(a, b, torch.equal(a, b))

# %% [markdown]
# **Pitfall: `np.random.default_rng(seed)` does not seed NumPy's global generator.** It *creates* a new,
# independent generator. That is the modern, better style — but only the numbers you draw from that object are
# reproducible; `np.random.rand()` keeps using the global one:

# %%
np.random.default_rng(0)
first = np.random.rand()
np.random.default_rng(0)
second = np.random.rand()
print(first == second, "← the global generator was never seeded")

rng = np.random.default_rng(0)
print(rng.random() == np.random.default_rng(0).random(), "← numbers drawn from the seeded generator object")

# %% [markdown]
# ### Generators: randomness you can hand around
#
# A global seed makes a whole program reproducible, but any extra random call (a new layer, a debugging
# `torch.randn`) shifts everything drawn after it. A `torch.Generator` is a private stream you pass explicitly,
# so the shuffling order of a `DataLoader` stays the same whatever else the program draws:

# %%
def shuffled_order(seed: int) -> list[int]:
    """The order in which a shuffling DataLoader with its own seeded generator visits 10 samples."""
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=10, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    (batch,) = next(iter(loader))  # one batch holding all 10 samples, in the shuffled order
    return batch.tolist()


print(shuffled_order(1))
torch.randn(1000)  # draws from the global generator do not disturb the loader's own
print(shuffled_order(1))

# %% [markdown]
# ### Deterministic algorithms
#
# Seeds fix the *random numbers*; they do not fix the *order of floating-point additions*. Some GPU kernels
# (for example, scatter-adds and some convolution algorithms) add in whatever order threads finish, so two runs
# with the same seed can differ in the last bits, and those differences grow during training. Two switches ask
# for repeatable kernels, at some cost in speed:
#
# ```python
# torch.use_deterministic_algorithms(True)   # ops without a deterministic version now raise an error
# torch.backends.cudnn.benchmark = False     # do not pick convolution algorithms by timing them
# # and, for some CUDA matrix products, set CUBLAS_WORKSPACE_CONFIG=:4096:8 before the program starts
# ```
#
# An op with no deterministic implementation then raises a `RuntimeError` that names it, so you know exactly
# what to replace. On the CPU almost every op is already deterministic for a fixed number of threads.

# %%
torch.use_deterministic_algorithms(True)
print("deterministic:", torch.are_deterministic_algorithms_enabled())
torch.use_deterministic_algorithms(False)  # back to the default for the rest of the lesson

# %% [markdown]
# ## Exercise: `set_seed`
#
# Write `set_seed(seed)` that seeds Python's `random`, NumPy's global generator and torch (the CPU and every
# CUDA device). It returns nothing.
#
# The check scrambles every generator, calls your function, draws one number from each and compares with what a
# freshly seeded generator gives; different seeds must give different numbers.

# %%
def set_seed(seed: int) -> None:
    """Seed Python's random, NumPy's global generator and torch (CPU and every CUDA device)."""
    ### BEGIN SOLUTION
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    ### END SOLUTION


# %%
check(set_seed)

# %% [markdown]
# ## 3. One epoch of training
#
# An **epoch** is one pass over the training data. Its skeleton never changes:
#
# ```python
# model.train()                          # training behaviour for dropout and batch norm
# for x, y in loader:                    # x (B, 1, 8, 8), y (B,)
#     x, y = x.to(device), y.to(device)  # the batch goes where the model is
#     logits = model(x)                  # (B, 10)
#     loss = loss_fn(logits, y)          # a 0-dim tensor: the mean over the batch
#     optimizer.zero_grad()              # forget the previous batch's gradients
#     loss.backward()                    # fill p.grad for every parameter
#     optimizer.step()                   # update the parameters
# ```
#
# Each line has a classic way to go wrong.
#
# **Forgetting `optimizer.zero_grad()`.** `backward()` *adds* into `.grad`. Without zeroing, every step uses the
# sum of all gradients so far:

# %%
w = torch.ones(2, requires_grad=True)
for step in range(3):
    loss = (w * torch.tensor([1.0, 2.0])).sum()
    loss.backward()
    print("step", step, "w.grad =", w.grad.tolist())  # grows: [1, 2], [2, 4], [3, 6]

# %% [markdown]
# **Moving data to the device.** `model.to(device)` moves a module's parameters *in place* and is done once,
# before the optimizer is created. A loss module that holds tensors of its own — class weights in
# `nn.CrossEntropyLoss(weight=w)` — is a module too and needs the same `.to(device)`. For a tensor, `.to(device)` returns a **new** tensor, so the result must be
# assigned: a bare `x.to(device)` changes nothing. Mixing devices in one op is an error (shown here with
# PyTorch's `meta` device, which behaves like a GPU for this purpose):

# %%
x = torch.ones(4, 2)
x.to("meta")                      # returns a new tensor, which is thrown away
print("x is still on", x.device)
layer = nn.Linear(2, 3).to("meta")
try:
    layer(x)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# **Averaging the loss over the epoch.** A mean-reduced loss is the mean over *its batch*. Batches are not all the
# same size: with 1,150 images in batches of 64 the last batch has only 62, and with other sizes it can hold a
# single sample. The epoch's mean loss weights every **sample** equally, so weight every batch by its size:

# %%
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64)
sizes = [len(xb) for xb, _ in loader]
print(len(loader), "batches; the last ones:", sizes[-3:], "; samples:", len(loader.dataset))

batch_losses = torch.tensor([2.0, 2.0, 0.5])      # mean losses of batches of 64, 64 and 2 samples
batch_sizes = torch.tensor([64, 64, 2])
print("plain mean of batch means:", batch_losses.mean().item())
print("per-sample mean:          ", ((batch_losses * batch_sizes).sum() / batch_sizes.sum()).item())

# %% [markdown]
# **Accumulating the loss tensor.** `total += loss` keeps every batch's graph alive until the epoch ends (and
# memory grows with every batch). `loss.item()` gives a plain Python number with no graph attached:

# %%
model = nn.Linear(3, 1)
total = 0
for _ in range(3):
    total = total + model(torch.randn(5, 3)).pow(2).mean()
print("total still holds a graph:", total.grad_fn is not None)
print("loss.item() is a float:   ", type(model(torch.randn(5, 3)).pow(2).mean().item()).__name__)

# %% [markdown]
# ## Exercise: `train_one_epoch`
#
# Write `train_one_epoch(model, loader, loss_fn, optimizer, device)` that trains `model` for one epoch and
# returns the epoch's mean loss as a Python `float`:
#
# - put the model in training mode (it may have just been evaluated);
# - for every batch `(x, y)` of `loader`: move `x` and `y` to `device`, compute `loss_fn(model(x), y)` (a
#   mean over the batch), zero the gradients, backpropagate, step the optimizer;
# - return the **sample-weighted** mean of the batch losses: the sum of `loss.item() * len(x)` divided by the
#   number of samples. The last batch may be smaller than the others.
#
# The model is already on `device`. The check runs your loop on a small classifier with dropout, with an uneven
# last batch, and compares the parameters after the epoch with its own loop.

# %%
def train_one_epoch(model, loader, loss_fn, optimizer, device) -> float:
    """Train for one pass over `loader`; return the mean loss over samples."""
    ### BEGIN SOLUTION
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / count
    ### END SOLUTION


# %%
check(train_one_epoch)

# %% [markdown]
# ## 4. Evaluation: `model.eval()` and `torch.no_grad()`
#
# Some layers behave differently while training:
#
# - **Dropout** zeroes a random fraction `p` of its inputs and scales the rest by `1 / (1 - p)` in training mode;
#   in evaluation mode it passes everything through unchanged.
# - **Batch norm** normalises with the statistics of the current batch in training mode (and updates its
#   running averages); in evaluation mode it uses the running averages, so each sample's output no longer
#   depends on the other samples in the batch.
#
# `model.train()` and `model.eval()` set the `training` flag of the model and of every submodule. They change
# nothing else — in particular, **`eval()` does not turn off gradients**.

# %%
torch.manual_seed(0)
drop = nn.Dropout(p=0.5)
v = torch.ones(8)
print("train:", drop(v).tolist())
print("train:", drop(v).tolist(), "← a different random mask every call")
drop.eval()
print("eval: ", drop(v).tolist())

# %% [markdown]
# **Pitfall: batch norm in training mode on a batch of one.** The statistics of a single sample are undefined,
# so a model with batch norm left in training mode fails on the last, one-sample batch of an evaluation:

# %%
bn_model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
try:
    bn_model(torch.randn(1, 4))
except ValueError as e:
    print("ValueError:", e)
bn_model.eval()
print("in eval mode:", bn_model(torch.randn(1, 4)).shape)

# %% [markdown]
# **`torch.no_grad()`.** During evaluation nothing calls `backward()`, so recording the graph only costs memory
# and time. Inside `with torch.no_grad():` results carry no graph. (`torch.inference_mode()` is a stricter,
# slightly faster variant: its results can never enter a graph later.)

# %%
net = nn.Linear(4, 2)
print("graph recorded:  ", net(torch.randn(3, 4)).requires_grad)
with torch.no_grad():
    print("under no_grad:   ", net(torch.randn(3, 4)).requires_grad)

# %% [markdown]
# **Accuracy** is the fraction of samples whose predicted class — the index of the largest logit,
# `logits.argmax(dim=1)` — equals the label. Count correct predictions over all batches and divide by the number
# of samples (not by the number of batches, and not by averaging per-batch accuracies, for the same reason as
# the loss).

# %%
logits = torch.tensor([[2.0, 0.1, -1.0],     # (B, C) = (4, 3)
                       [0.3, 0.2, 0.9],
                       [1.5, 1.7, 0.0],
                       [0.0, -2.0, 0.5]])
y = torch.tensor([0, 2, 0, 2])               # (B,)
preds = logits.argmax(dim=1)                 # (B,)
print(preds.tolist(), "correct:", (preds == y).sum().item(), "of", len(y))

# %% [markdown]
# ## Exercise: `evaluate_accuracy`
#
# Write `evaluate_accuracy(model, loader, device)` that returns the model's accuracy on `loader` as a Python
# `float` in [0, 1]:
#
# - switch the model to evaluation mode, and run the whole loop without building a graph;
# - move each batch to `device`; the prediction for a sample is the argmax of its logits;
# - count correct predictions over **samples** (the last batch may be smaller) and divide by the number of
#   samples.
#
# The check uses a model with dropout and batch norm, handed to you in training mode, and watches whether a graph
# is recorded during the forward passes.

# %%
def evaluate_accuracy(model, loader, device) -> float:
    """Fraction of samples in `loader` whose argmax logit equals the label, in eval mode and without a graph."""
    ### BEGIN SOLUTION
    model.eval()
    correct, count = 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += (model(x).argmax(dim=1) == y).sum().item()
            count += len(y)
    return correct / count
    ### END SOLUTION


# %%
check(evaluate_accuracy)

# %% [markdown]
# ## 5. Checkpoints: saving and resuming
#
# A long run gets interrupted: a time limit on a shared machine, a crash, a laptop lid. A **checkpoint** holds
# everything needed to continue as if nothing had happened:
#
# - the model's `state_dict()`: a dict from parameter (and buffer) names to tensors;
# - the optimizer's `state_dict()`: its hyper-parameters **and its state** — momentum buffers for SGD, the
#   running averages and step count for Adam. Without it, the optimizer restarts cold and the run diverges from
#   the uninterrupted one;
# - the epoch (and anything else you need, e.g. the best validation score so far).

# %%
model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss = F.cross_entropy(model(x_train[:32].flatten(1)), y_train[:32])
loss.backward()
optimizer.step()

print({name: tuple(t.shape) for name, t in model.state_dict().items()})
opt_state = optimizer.state_dict()
print(opt_state.keys(), "· per parameter:", list(opt_state["state"][0].keys()))

# %% [markdown]
# `torch.save(obj, path)` writes tensors and plain containers; `torch.load(path, weights_only=True)` reads them
# back **without running any code from the file**. Since PyTorch 2.6 `weights_only=True` is the default, and
# you should keep it: loading with `weights_only=False` unpickles arbitrary Python objects, so a checkpoint
# downloaded from someone else could run code on your machine.
#
# **Pitfall: saving the model object.** `torch.save(model, path)` pickles the module's class, which
# `weights_only=True` refuses to load (and which breaks as soon as the class's code moves). Save state dicts:

# %%
folder = tempfile.mkdtemp()
whole = os.path.join(folder, "whole_model.pt")
torch.save(model, whole)
try:
    torch.load(whole, weights_only=True)
except Exception as e:
    print(type(e).__name__ + ":", str(e).splitlines()[0])

# %% [markdown]
# Resuming follows one pattern: build the model and optimizer exactly as before, load both state dicts into them
# (`load_state_dict` copies **in place** into the existing objects), and continue with the next epoch:
#
# ```python
# model, optimizer = build_model(), build_optimizer()
# start = load_checkpoint("run/last.pt", model, optimizer) + 1
# for epoch in range(start, n_epochs):
#     train_one_epoch(model, loader, loss_fn, optimizer, device)
#     save_checkpoint("run/last.pt", model, optimizer, epoch)
# ```

# %% [markdown]
# **Pitfall: saving the parameters instead of the state dict.** `model.state_dict()` holds the parameters *and
# the buffers*: tensors a module keeps that the optimizer does not train, such as batch norm's running mean and
# variance. `model.parameters()` and `model.named_parameters()` leave the buffers out, so a model restored from
# a checkpoint built from them keeps the running statistics of a freshly built one, and in eval mode it computes
# something else than the model you saved:

# %%
bn_net = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
in_state_dict = set(bn_net.state_dict())
in_parameters = {name for name, _ in bn_net.named_parameters()}
print("only in state_dict():", sorted(in_state_dict - in_parameters))

# %% [markdown]
# ### Loading on another device: `map_location`
#
# `torch.save` records, next to every tensor's numbers, the device the tensor was on, and `torch.load` puts it
# back on that device. A checkpoint written while training on a GPU therefore says `cuda:0` for every tensor,
# and on a machine without a GPU (or on a CPU-only build of PyTorch) loading it fails with
#
# ```
# RuntimeError: Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is False.
# If you are running on a CPU-only machine, please use torch.load with map_location=torch.device('cpu') ...
# ```
#
# `map_location` says where the tensors go instead, *while the file is read*, so they never touch the device
# they were saved from. It takes a device name (`"cpu"`, `"cuda:1"`), a `torch.device`, a dict from saved to
# new locations (`{"cuda:1": "cuda:0"}` for a checkpoint from a second GPU), or a function of
# `(storage, location)`. The function form also shows what the file recorded:

# %%
path = os.path.join(folder, "state.pt")
torch.save(model.state_dict(), path)
recorded = set()


def note_location(storage, location):
    """A map_location function: note the device the file recorded, keep the tensor where it is."""
    recorded.add(location)
    return storage


torch.load(path, map_location=note_location, weights_only=True)
print("devices recorded in the file:", recorded)

# %% [markdown]
# Our checkpoint was written on the CPU, so to *see* tensors move we send them to the `meta` device, then load
# with a `torch.device` object — in a script, `map_location=device` loads straight onto whatever device this
# run uses:

# %%
on_meta = torch.load(path, map_location="meta", weights_only=True)
print("map_location='meta':                ", {name: str(t.device) for name, t in on_meta.items()})
state = torch.load(path, map_location=torch.device("cpu"), weights_only=True)
print("map_location=torch.device('cpu'):   ", {name: str(t.device) for name, t in state.items()})
state = torch.load(path, map_location=device, weights_only=True)
model.to(device).load_state_dict(state)
print("map_location=device, loaded into a model on", next(model.parameters()).device)

# %% [markdown]
# `model.load_state_dict` copies the values into the model's own tensors, wherever those live, and
# `optimizer.load_state_dict` moves its state to the device of the parameters it is attached to, so the usual
# recipe for resuming on another machine is: build the model, move it to `device`, create the optimizer, then
# load the checkpoint with `map_location=device`.

# %% [markdown]
# ## Exercise: `save_checkpoint`
#
# Write `save_checkpoint(path, model, optimizer, epoch)` that writes, with `torch.save`, the dict
# `{"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}` to `path` (a `str` or
# `pathlib.Path`). The file must load with `torch.load(path, weights_only=True)` and hold exactly those three
# keys, the epoch as a Python `int`.

# %%
def save_checkpoint(path, model, optimizer, epoch: int) -> None:
    """Write model and optimizer state dicts and the epoch to `path`."""
    ### BEGIN SOLUTION
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)
    ### END SOLUTION


# %%
check(save_checkpoint)

# %% [markdown]
# ## Exercise: `load_checkpoint`
#
# Write `load_checkpoint(path, model, optimizer) -> int` that reads a checkpoint written by `save_checkpoint`
# (with `weights_only=True`), restores the model's and the optimizer's state dicts into the objects it is given,
# and returns the saved epoch as an `int`.
#
# The check trains a model with Adam for a few steps, saves it, gives your function a *fresh* model and
# optimizer, continues training, and requires exactly the parameters of a run that was never interrupted.

# %%
def load_checkpoint(path, model, optimizer) -> int:
    """Restore model and optimizer from `path` (weights only); return the saved epoch."""
    ### BEGIN SOLUTION
    checkpoint = torch.load(path, weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    return int(checkpoint["epoch"])
    ### END SOLUTION


# %%
check(load_checkpoint)

# %% [markdown]
# ## 6. Watching a run: batch size, early stopping, curves, TensorBoard
#
# A training run should tell you how it is going while it runs, and leave a record you can compare with other
# runs. Below, a small network trains on the 1,150 training images and is validated after every epoch on the
# 287 held-out ones.
#
# **One CPU thread.** On a CPU, PyTorch splits each operation between threads, one per core. For operations as
# small as ours, sharing out the work costs more than it saves, and on a busy machine a thread that waits for a
# descheduled partner can make training many times slower. One thread is the better choice for networks this
# small (keep the default for large ones); the checks run your code that way too.
#
# ### Full batch or mini-batches?
#
# A data set this small fits in one batch, so we could take **full-batch** steps: one step per epoch, along the
# gradient of the loss over all 1,150 images. **Mini-batch** training takes one step per batch of, say, 64
# images instead: 18 steps per epoch, each along a noisier estimate of that gradient, each much cheaper.
#
# `fit` trains the same network from the same initial weights either way and records, after every epoch, the
# training time so far (the validation is not counted) and the validation loss. It shuffles and slices the
# tensors itself, which is what a `DataLoader` over a `TensorDataset` does, without its per-sample overhead.
# (Its `writer` argument is for TensorBoard, further down.)

# %%
import time

torch.set_num_threads(1)


def make_mlp() -> nn.Module:
    """A small classifier for (B, 1, 8, 8) digit images, returning (B, 10) logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))


xt, yt, xv, yv = x_train.to(device), y_train.to(device), x_val.to(device), y_val.to(device)


def fit(batch_size: int, epochs: int, lr: float = 0.01, writer=None) -> dict:
    """Train make_mlp() with Adam on shuffled batches; per epoch: training seconds so far, losses, accuracy."""
    torch.manual_seed(0)                                    # the same initial weights for every run
    model = make_mlp().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(0)                # the same shuffling for every run
    log = {"seconds": [], "train_loss": [], "val_loss": [], "val_acc": []}
    seconds = 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        total = 0.0
        for idx in torch.randperm(len(xt), generator=order).split(batch_size):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])  # a batch (B, 1, 8, 8) -> (B, 10) logits
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        seconds += time.perf_counter() - start
        model.eval()
        with torch.no_grad():
            val_logits = model(xv)                          # (287, 10)
        log["seconds"].append(seconds)
        log["train_loss"].append(total / len(xt))
        log["val_loss"].append(F.cross_entropy(val_logits, yv).item())
        log["val_acc"].append((val_logits.argmax(dim=1) == yv).float().mean().item())
        if writer is not None:                              # see "TensorBoard" below
            writer.add_scalar("loss/train", log["train_loss"][-1], epoch)
            writer.add_scalar("loss/val", log["val_loss"][-1], epoch)
            writer.add_scalar("accuracy/val", log["val_acc"][-1], epoch)
    return log


full = fit(batch_size=len(xt), epochs=200)
mini = fit(batch_size=64, epochs=20)

fig, (ax_epochs, ax_seconds) = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
for log, label in [(full, "full batch: 1 step per epoch"), (mini, "batches of 64: 18 steps per epoch")]:
    ax_epochs.plot(range(1, len(log["val_loss"]) + 1), log["val_loss"], label=label)
    ax_seconds.plot(log["seconds"], log["val_loss"], label=label)
    print(f"{label}: {len(log['val_loss'])} epochs in {log['seconds'][-1]:.2f} s, "
          f"lowest validation loss {min(log['val_loss']):.3f}")
ax_epochs.set_xlabel("epoch")
ax_epochs.set_ylabel("validation loss")
ax_epochs.set_yscale("log")
ax_epochs.legend()
ax_seconds.set_xlabel("training time (s)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Per epoch**, the mini-batches are far ahead: 18 updates per pass over the data instead of one. **Per
# second**, what you actually pay for, the race is much closer: a full-batch step costs more than a step on 64
# images, but far less than 18 of them, because one large matrix product uses the hardware better than many
# small ones and the fixed cost of a step (Python, launching the operations) is paid once. Where the balance
# falls depends on the machine — a GPU runs a batch of 1,150 images about as fast as a batch of 64 — and on the
# data: millions of images do not fit in one batch at all, and the noise of small batches often helps a model
# generalise. Batches of 32 to 512 are the usual choice; when you compare settings, compare them against time.
#
# ### Early stopping
#
# The validation loss falls, flattens, and eventually — as the network starts memorising the training set —
# rises again. **Early stopping** watches a validation metric and ends the run when it has not improved for
# `patience` epochs in a row; separately, we keep a copy of the best weights seen so far and restore it at the
# end. Two details make it robust: `min_delta`, the smallest change that counts as an improvement (so that noise
# in the last digits does not keep a run going), and `mode`: a loss should go down (`"min"`), an accuracy up
# (`"max"`). (`torch.optim.lr_scheduler.ReduceLROnPlateau` watches a metric the same way, to lower the learning
# rate instead of stopping.)

# %% [markdown]
# ## Exercise: `EarlyStopping`
#
# Write a class `EarlyStopping(patience, min_delta=0.0, mode="min")` whose method `step(metric)` is called once
# per epoch with the validation metric and returns `True` when training should stop:
#
# - An **improvement** is `metric < best - min_delta` in mode `"min"` and `metric > best + min_delta` in mode
#   `"max"` — strictly: a gain of exactly `min_delta` is not enough. The first call is always an improvement.
# - Two attributes: `best` is `None` until the first call, then the metric of the latest improvement; it moves
#   **only** on an improvement (a gain smaller than `min_delta` leaves it where it is). `num_bad_epochs` counts
#   the calls since the last improvement (0 right after one).
# - `step` updates both, then returns `num_bad_epochs >= patience`: `True` on the `patience`-th call in a row
#   without improvement and on every call after it, `False` again after an improvement.
# - Raise `ValueError` for a `mode` other than `"min"` and `"max"`, for `patience < 1` and for a negative
#   `min_delta`.
#
# For example, with `patience=2` in mode `"min"` the losses `1.0, 0.8, 0.8, 0.9, 0.7` make `step` return
# `False, False, False, True, False`, and `best` ends at `0.7`.

# %%
class EarlyStopping:
    """Says when to stop: after `patience` calls in a row without an improvement of the metric."""

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min"):
        ### BEGIN SOLUTION
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must not be negative, got {min_delta}")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = None
        self.num_bad_epochs = 0
        ### END SOLUTION

    def step(self, metric: float) -> bool:
        """Record this epoch's metric; True when training should stop."""
        ### BEGIN SOLUTION
        if self.best is None:
            improved = True
        elif self.mode == "min":
            improved = metric < self.best - self.min_delta
        else:
            improved = metric > self.best + self.min_delta
        if improved:
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience
        ### END SOLUTION


# %%
check(EarlyStopping)

# %% [markdown]
# ### Early stopping in a training loop, with a progress bar
#
# The loop below trains on batches of 64 for at most 100 epochs and asks an `EarlyStopping` on the validation
# loss after each one. (Until you have written `EarlyStopping`, it runs all 100 epochs.)
#
# **A progress bar.** `tqdm` wraps any iterable and draws a bar with the speed and the time left;
# `set_postfix` shows the latest numbers on the bar. `tqdm.auto` picks a notebook widget or a text bar.

# %%
from tqdm.auto import tqdm

torch.manual_seed(0)
model = make_mlp().to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
try:
    stopper = EarlyStopping(patience=8, min_delta=0.002, mode="min")
except NotImplementedError:
    stopper = None
    print("EarlyStopping is not written yet: this run goes on for all 100 epochs")

history = {"train_loss": [], "val_loss": [], "val_acc": []}
best_loss, best_state, best_epoch = float("inf"), None, 0
order = torch.Generator().manual_seed(0)
bar = tqdm(range(100), desc="training")
for epoch in bar:
    model.train()
    total = 0.0
    for idx in torch.randperm(len(xt), generator=order).split(64):
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)

    model.eval()
    with torch.no_grad():
        val_logits = model(xv)                                    # (287, 10)
        val_loss = F.cross_entropy(val_logits, yv).item()
        val_acc = (val_logits.argmax(dim=1) == yv).float().mean().item()
    history["train_loss"].append(total / len(xt))
    history["val_loss"].append(val_loss)
    history["val_acc"].append(val_acc)
    bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", val_loss=f"{val_loss:.3f}")

    if val_loss < best_loss:                                      # the best weights so far, copied
        best_loss, best_epoch = val_loss, epoch
        best_state = copy.deepcopy(model.state_dict())            # a copy, not a live view (see below)
    if stopper is not None and stopper.step(val_loss):
        print(f"stopping after epoch {epoch}: no improvement larger than {stopper.min_delta} "
              f"for {stopper.patience} epochs")
        break
bar.close()
model.load_state_dict(best_state)
print(f"best validation loss {best_loss:.3f} at epoch {best_epoch} "
      f"(accuracy {history['val_acc'][best_epoch]:.3f})")

# %% [markdown]
# **A loss curve** shows at a glance whether training works (the training loss falls), whether it has converged
# (it flattens) and whether it overfits (the validation loss turns up while the training loss keeps falling).

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
ax_loss.plot(history["train_loss"], label="training loss")
ax_loss.plot(history["val_loss"], label="validation loss")
ax_loss.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch ({best_epoch})")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("cross-entropy")
ax_loss.set_yscale("log")
ax_loss.legend()
ax_acc.plot(history["val_acc"], color="tab:green")
ax_acc.axvline(best_epoch, color="gray", linestyle="--")
ax_acc.set_xlabel("epoch")
ax_acc.set_ylabel("validation accuracy")
ax_acc.set_ylim(0.8, 1.0)
plt.tight_layout()
plt.show()

# %% [markdown]
# **Pitfall: `best = model.state_dict()` is not a copy.** A state dict holds the model's own tensors, so a
# "snapshot" taken this way keeps changing as training continues, and restoring it restores nothing. Copy it with
# `copy.deepcopy(model.state_dict())` (or `{k: v.clone() for k, v in ...}`), or save it to a file:

# %%
snapshot = model.state_dict()
copied = copy.deepcopy(model.state_dict())
model.train()
loss = F.cross_entropy(model(xt), yt)
optimizer.zero_grad()
loss.backward()
optimizer.step()
weight = model[1].weight
print("'snapshot' followed the step:", torch.equal(snapshot["1.weight"], weight))
print("the deep copy did not:       ", torch.equal(copied["1.weight"], weight))

# %% [markdown]
# ### TensorBoard: one log folder per run
#
# TensorBoard reads event files that your program writes and shows them in a browser: curves of every scalar you
# log, images, histograms. `SummaryWriter(log_dir)` writes them; `add_scalar(tag, value, step)` logs one
# number, and `add_image(tag, image, step)` one `(C, H, W)` picture — `torchvision.utils.make_grid` tiles a
# batch into one. Tags with a slash (`loss/train`, `loss/val`) are grouped together.
#
# TensorBoard treats every folder under the directory you point it at as one **run**, and draws the runs'
# curves on top of each other. So give each run its own folder, named after what makes it different:
# `SummaryWriter(log_dir="runs/adam-lr0.01")`. (`SummaryWriter()` without `log_dir` makes a new folder
# `runs/<date>_<host>` for every run: unique, but you have to remember which was which.) Two runs written into
# one folder mix their points into a single zig-zag curve.
#
# Here two learning rates each log into their own folder while they train (`fit` logs when it gets a writer),
# under a temporary directory; in a project, `runs/` sits next to your code.

# %%
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

runs = os.path.join(tempfile.mkdtemp(prefix="tb-"), "runs")
for lr in (0.001, 0.01):
    writer = SummaryWriter(log_dir=os.path.join(runs, f"adam-lr{lr}"))
    writer.add_image("validation images", make_grid(x_val[:32], nrow=8, pad_value=1.0), 0)  # (3, H, W)
    fit(batch_size=64, epochs=15, lr=lr, writer=writer)
    writer.close()
for name in sorted(os.listdir(runs)):
    print(os.path.join("runs", name), os.listdir(os.path.join(runs, name)))

# %% [markdown]
# To look at the logs, start TensorBoard **in a terminal** (it is a server that keeps running) and open the
# address it prints, usually http://localhost:6006:
#
# ```bash
# tensorboard --logdir runs
# ```
#
# Inside Jupyter you can instead run these two lines in a cell; they start the same server and embed it:
#
# ```python
# %load_ext tensorboard
# %tensorboard --logdir runs
# ```
#
# (This notebook does not start a server itself, so that it also runs unattended; use the folder it printed
# above instead of `runs`.)
#
# **Reading the logs back.** The event files are data you can also read without a server. TensorBoard's
# `EventAccumulator` loads one run's folder: `Tags()` lists what was logged, and `Scalars(tag)` returns the
# points as `ScalarEvent(wall_time, step, value)`. That is how the curves below — the ones TensorBoard would show
# — get into this notebook:

# %%
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
for name in sorted(os.listdir(runs)):
    events = EventAccumulator(os.path.join(runs, name))
    events.Reload()                                    # read the run's event files
    for ax, tag in zip(axes, ["loss/train", "loss/val", "accuracy/val"]):
        points = events.Scalars(tag)                   # [ScalarEvent(wall_time, step, value), ...]
        ax.plot([p.step for p in points], [p.value for p in points], label=name)
        ax.set_title(tag)
        ax.set_xlabel("step (epoch)")
print("scalars:", events.Tags()["scalars"], "· images:", events.Tags()["images"])
axes[0].set_yscale("log")
axes[1].set_yscale("log")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercise: `train_digits_classifier`
#
# Write `train_digits_classifier()` that trains a classifier on the shipped digits **training** split and returns
# the trained model (an `nn.Module`). Use the lesson's pieces: `load_digits_split("train")`, a `DataLoader` with
# `shuffle=True`, your `train_one_epoch`, and (for your own information) `evaluate_accuracy` on a validation
# part.
#
# - The model takes a float32 batch of shape `(B, 1, 8, 8)` with pixel values in **[0, 1]** (the PNG value / 255,
#   as `load_digits_split` returns it) and returns logits of shape `(B, 10)`.
# - **Budget: training must finish in under 30 seconds on a 2-core CPU** (a small MLP needs a few seconds; the
#   check fails runs over 60 s to leave room for a busy machine). The check runs your training on one CPU
#   thread, which for networks this small is as fast as two.
# - The check calls your function (so it trains), switches the returned model to `eval()`, and requires an
#   accuracy of at least **0.95** on the 360 test images, which your training never sees.

# %%
def train_digits_classifier() -> nn.Module:
    """Train a classifier for the shipped 8x8 digits; return the trained model."""
    ### BEGIN SOLUTION
    set_seed(1)
    x, y = load_digits_split("train")                       # (1437, 1, 8, 8), (1437,)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Flatten(),                     # (B, 64)
                          nn.Linear(64, 128), nn.ReLU(),    # (B, 128)
                          nn.Linear(128, 64), nn.ReLU(),    # (B, 64)
                          nn.Linear(64, 10)).to(device)     # (B, 10) logits
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(20):
        train_one_epoch(model, loader, loss_fn, optimizer, device)
    return model
    ### END SOLUTION


# %%
check(train_digits_classifier)

# %% [markdown]
# ## Where next
#
# You now have the full routine: a reproducible setup, an epoch of training, an honest evaluation, checkpoints
# you can resume from, early stopping, and logs to watch. Every later lesson reuses it; only the model and the
# data change.
