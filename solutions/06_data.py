# %% [markdown]
# # 06 · Data: datasets, loaders, samplers and transforms
#
# A model only ever sees **batches**: a tensor of inputs `(B, ...)` and a tensor of targets `(B,)`. Getting from
# files on a disk to those batches is the job of two small classes in `torch.utils.data`:
#
# - a **`Dataset`** knows how many samples there are and how to produce sample `i` (or how to stream them);
# - a **`DataLoader`** asks the dataset for samples, groups them into batches, shuffles, and can do the work in
#   parallel worker processes.
#
# Everything else in this lesson — samplers, collate functions, splits, transforms — plugs into one of those two.
# The lesson uses the handwritten digits shipped with the course in `datasets/digits/` (8x8 grayscale PNG files,
# so everything runs offline in seconds); FashionMNIST appears at the end as the optional online path.
#
# One rule for the exercises: each answer cell is graded on its own, with only the lesson's imports around it, so a
# helper function or an import your answer needs belongs in that cell.

# %%
from grader import check, hint

# %%
import csv
import multiprocessing
import os
import time
import warnings
from collections import Counter

import matplotlib
import matplotlib.pyplot as plt
import torch
import torchvision
from torch.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset, IterableDataset, RandomSampler,
                              Sampler, SequentialSampler, Subset, TensorDataset, WeightedRandomSampler,
                              default_collate, get_worker_info, random_split)
from PIL import Image
from torchvision.io import read_image
from torchvision.transforms import v2

from grader.data import datasets_dir

DIGITS = datasets_dir() / "digits"
print(DIGITS)
print(sorted(os.listdir(DIGITS)))

# %% [markdown]
# ## 1. A map-style `Dataset`: `__len__` and `__getitem__`
#
# A map-style dataset is anything with two methods: `__len__()` returns the number of samples and
# `__getitem__(i)` returns sample `i` for `0 <= i < len`. Subclassing `torch.utils.data.Dataset` documents the
# intent (and gives you `dataset_a + dataset_b` for concatenation), but the DataLoader only relies on the two
# methods. A sample can be anything; by convention it is a tuple `(x, y)`.
#
# The class below makes samples *on demand*: nothing is stored except the size. That is the usual shape of a
# real dataset too — `__init__` keeps a cheap index (file names, offsets), `__getitem__` does the expensive
# work (read, decode, transform) for one sample only.

# %%
class Squares(Dataset):
    """Sample i is (i, i**2) as float32 scalars."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:  # without this check, squares[10] would quietly return a sample
            raise IndexError(f"index {i} out of range for {self.n} samples")
        x = torch.tensor(float(i))
        return x, x ** 2


squares = Squares(10)
print(len(squares), squares[3])

# %% [markdown]
# When your data already sits in tensors, `TensorDataset(x, y)` is that class ready-made: sample `i` is
# `(x[i], y[i])`, and all the tensors must agree on their first dimension.

# %%
x = torch.randn(100, 4)            # (N, features)
y = torch.randint(0, 3, (100,))    # (N,)
data = TensorDataset(x, y)
print(len(data), data[0])

try:
    TensorDataset(torch.randn(100, 4), torch.randint(0, 3, (99,)))
except AssertionError as e:  # first dimensions differ
    print("AssertionError:", e)

# %% [markdown]
# ### `dataset_a + dataset_b`: `ConcatDataset`
#
# `Dataset` defines `+`: it returns a `ConcatDataset`, which chains its parts without copying them. Its length is
# the sum of theirs, and an index past the end of the first part continues into the second. `cumulative_sizes`
# holds the running totals the lookup uses. Handy for merging a training set with extra data, or several shards
# stored as separate datasets; the parts should return samples of the same structure, since they end up in the
# same batches.

# %%
low = TensorDataset(torch.arange(0, 3))       # samples (0,), (1,), (2,)
high = TensorDataset(torch.arange(100, 104))  # samples (100,) .. (103,)
both = low + high
print(type(both).__name__, len(both), both.cumulative_sizes)  # ConcatDataset 7 [3, 7]
print(both[2], both[3], both[-1])  # the end of low, the start of high, the last of high
print(isinstance(ConcatDataset([low, high, low]), Dataset), len(ConcatDataset([low, high, low])))

# %% [markdown]
# ## 2. `DataLoader`: batches, shuffling, and how many batches an epoch has
#
# An **epoch** is one pass over the dataset; an **iteration** (a "step") is one batch. With `N` samples and
# `batch_size=B` an epoch has `ceil(N / B)` batches, and the last one is smaller when `B` does not divide `N`.
# `drop_last=True` throws that short batch away: `N // B` batches, all full. Drop it when a short batch would
# hurt (batch norm with a batch of 1, a model compiled for a fixed shape); keep it at evaluation time, where
# every sample must count.
#
# The **default collate function** stacks the samples' tensors along a new first dimension: a batch of 32
# samples `(x (4,), y ())` becomes `(x (32, 4), y (32,))`.

# %%
loader = DataLoader(data, batch_size=32)
xb, yb = next(iter(loader))
print(xb.shape, yb.shape)  # (32, 4) (32,)

for drop_last in (False, True):
    loader = DataLoader(data, batch_size=32, drop_last=drop_last)
    sizes = [len(yb) for _, yb in loader]
    print(f"drop_last={drop_last}: len(loader) = {len(loader)} batches of sizes {sizes}")

# %% [markdown]
# `shuffle=True` draws a new random order at the start of **every** epoch (each `iter(loader)`), which is what
# you want for training; for evaluation keep the order fixed. To make the order reproducible, give the loader
# its own `generator` instead of reseeding the global random state, which would also change everything else
# random in your program (dropout, initialisation).

# %%
def first_ids(loader):
    return next(iter(loader))[1][:8].tolist()


ids = TensorDataset(torch.arange(20), torch.arange(20))  # (index, index): shows the order
loader = DataLoader(ids, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
print("epoch 1:", first_ids(loader))
print("epoch 2:", first_ids(loader))  # another order: a new permutation per epoch
again = DataLoader(ids, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
print("same seed, epoch 1:", first_ids(again))

# %% [markdown]
# ### Samplers decide the order; `shuffle` is only a shortcut
#
# Behind the scenes a **sampler** yields the indices the loader asks the dataset for. `shuffle=False` means a
# `SequentialSampler` (0, 1, 2, ...), `shuffle=True` a `RandomSampler`. Pass your own `sampler=` to control the
# order — but then `shuffle` must stay off, since the sampler already decides:

# %%
print(list(SequentialSampler(range(5))))
print(list(RandomSampler(range(5), generator=torch.Generator().manual_seed(1))))

try:
    DataLoader(ids, sampler=SequentialSampler(ids), shuffle=True)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ### Writing your own sampler
#
# A sampler is any iterable of indices; subclass `torch.utils.data.Sampler` and give it two methods:
#
# - `__iter__` yields the indices of one epoch. The loader calls `iter(sampler)` at the start of **every**
#   epoch, so write it as a generator (with `yield`): each call then starts a fresh pass. Anything random
#   belongs here, drawn anew each epoch.
# - `__len__` says how many indices one pass yields; `len(loader)` is computed from it.
#
# Here is a sampler that shows the even indices first, then the odd ones, in a random order within each half
# that changes from epoch to epoch:

# %%
class EvensThenOdds(Sampler):
    """Indices 0, 2, 4, ... then 1, 3, 5, ..., each half shuffled anew per epoch."""

    def __init__(self, n, generator=None):
        self.n, self.generator = n, generator

    def __iter__(self):
        for start in (0, 1):
            half = torch.arange(start, self.n, 2)
            yield from half[torch.randperm(len(half), generator=self.generator)].tolist()

    def __len__(self):
        return self.n


evens_odds = EvensThenOdds(9, generator=torch.Generator().manual_seed(0))
print(list(evens_odds))
print(list(evens_odds))  # a new pass: a new order within each half
loader = DataLoader(ids, batch_size=4, sampler=evens_odds)
print(len(loader), [yb.tolist() for _, yb in loader])  # ceil(9 / 4) = 3 batches of sample indices

# %% [markdown]
# A **batch sampler** yields whole lists of indices, one list per batch. `batch_sampler=` replaces `batch_size`,
# `shuffle`, `sampler` and `drop_last` together; it is how you build batches with a rule, for example
# "sequences of similar length together". `BatchSampler` wraps an ordinary sampler:

# %%
batches = BatchSampler(SequentialSampler(range(10)), batch_size=4, drop_last=False)
print(list(batches))  # [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
loader = DataLoader(ids, batch_sampler=batches)
print([yb.tolist() for _, yb in loader])

# %% [markdown]
# Your own batch sampler is written the same way as a sampler: `__iter__` yields **lists** of indices, one list
# per batch, and `__len__` is the number of batches. This one puts only samples of the same class in a batch
# (useful when a loss compares samples within a class), with the order of the batches shuffled each epoch:

# %%
class SameLabelBatches(Sampler):
    """Batches of up to batch_size indices that all share one label; batch order shuffled per epoch."""

    def __init__(self, labels, batch_size, generator=None):
        self.batches = []
        for label in sorted(set(labels)):
            members = [i for i, y in enumerate(labels) if y == label]
            self.batches += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
        self.generator = generator

    def __iter__(self):
        for k in torch.randperm(len(self.batches), generator=self.generator).tolist():
            yield self.batches[k]

    def __len__(self):
        return len(self.batches)


labels = [2, 0, 1, 0, 2, 2, 1, 0, 2, 2]
by_label = SameLabelBatches(labels, batch_size=3, generator=torch.Generator().manual_seed(0))
print(len(by_label), list(by_label))
loader = DataLoader(TensorDataset(torch.arange(10), torch.tensor(labels)), batch_sampler=by_label)
print([yb.tolist() for _, yb in loader])  # each batch holds one label only

# %% [markdown]
# ### What the default collate function does with other samples
#
# `default_collate` works recursively on the structure of a sample: tensors are stacked, Python numbers become a
# tensor, strings are gathered into a list, and a tuple, list or **dict** is collated field by field, keeping its
# structure. Returning dicts from `__getitem__` is common when a sample has many parts; the batch is then a dict
# of batched fields:

# %%
class NamedPoints(Dataset):
    """Sample i is a dict: a point (2,), an int label and a name."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i), -float(i)]), "label": i % 2, "name": f"point-{i}"}


batch = next(iter(DataLoader(NamedPoints(), batch_size=3)))
print(batch["x"].shape, batch["label"], batch["name"])  # (3, 2), int64 (3,), a list of 3 strings
print(default_collate([(torch.zeros(2), 1.5), (torch.ones(2), 2.5)]))  # tuples: position by position, as a list

# %% [markdown]
# ### `collate_fn`: when samples cannot simply be stacked
#
# `torch.stack` needs equal shapes. Sentences, audio clips and time series have different lengths, and the
# default collate function fails on them:

# %%
sentences = [(torch.tensor([5, 2, 9]), 1), (torch.tensor([7, 1, 4, 4, 8]), 0)]
try:
    default_collate(sentences)
except RuntimeError as e:
    print("RuntimeError:", e)

# %% [markdown]
# The fix is your own `collate_fn(batch)`: it receives the **list** of samples the sampler picked, and returns
# whatever the training loop wants. For sequences that means padding them to the longest one, and returning the
# true lengths so that the model (or `pack_padded_sequence`, used with recurrent networks) can ignore the padding.
#
# ## Exercise: `pad_collate`
#
# Write `pad_collate(batch, pad_value=0)`. `batch` is a non-empty list of `(sequence, label)` pairs; each
# sequence has shape `(L_i, ...)` — the trailing dimensions, if any, are the same for every sequence — and each
# label is a Python int. Return a tuple
#
# - `padded` of shape `(B, L_max, ...)`, the sequences' dtype and device, where row `i` holds sequence `i`
#   followed by `pad_value`;
# - `lengths`, int64 `(B,)`, the `L_i`;
# - `labels`, int64 `(B,)`;
#
# all in the **input order** (do not sort by length). Do not modify the input sequences.

# %%
def pad_collate(batch, pad_value=0):
    """Pad (sequence, label) pairs to the longest sequence: (padded (B, L_max, ...), lengths (B,), labels (B,))."""
    ### BEGIN SOLUTION
    seqs = [s for s, _ in batch]
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    labels = torch.tensor([y for _, y in batch], dtype=torch.int64)
    padded = torch.full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), pad_value,
                        dtype=seqs[0].dtype, device=seqs[0].device)  # (B, L_max, ...)
    for i, s in enumerate(seqs):
        padded[i, :s.shape[0]] = s
    return padded, lengths, labels
    ### END SOLUTION


# %%
check(pad_collate)

# %% [markdown]
# ### Bucketing: batches of similar lengths waste less padding
#
# Every padded cell is work the model does for nothing (and memory it holds). A batch is as wide as its longest
# sequence, so a random batch that happens to contain one long sequence pads all the others up to it. If the
# sequences of a batch have similar lengths, there is little left to pad. The trick: sort the indices by length,
# cut the sorted list into batches, and shuffle only the **order of the batches** — the model still sees the
# batches in a random order, but each one is made of neighbours in length. (The batches themselves are then the
# same every epoch, only their order changes; larger projects add some randomness before sorting — shuffle, then
# sort within large chunks — so that the members of a batch vary too.)
#
# Let us count the padding of one epoch of 256 sequences, most short and a few long, in batches of 16:

# %%
g = torch.Generator().manual_seed(0)
seq_lengths = (3 + 60 * torch.rand(256, generator=g) ** 3).long().tolist()  # skewed: many short, few long


def cut(order, batch_size):
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def padded_cells(batch):
    """How many cells of the batch's padded tensor are padding."""
    longest = max(seq_lengths[i] for i in batch)
    return sum(longest - seq_lengths[i] for i in batch)


random_batches = cut(torch.randperm(256, generator=g).tolist(), 16)
bucket_batches = cut(sorted(range(256), key=lambda i: seq_lengths[i]), 16)
real = sum(seq_lengths)
for name, batches in (("random batches", random_batches), ("buckets", bucket_batches)):
    pad = sum(padded_cells(b) for b in batches)
    print(f"{name:15}: {pad:5} padded cells for {real} real ones ({pad / (pad + real):.0%} of the tensors)")

# %%
def padding_map(batches, width):
    """One row per sample, grouped by batch: 0 real cell, 1 padding, 2 outside the batch's tensor."""
    rows = []
    for b in batches:
        longest = max(seq_lengths[i] for i in b)
        for i in b:
            row = torch.full((width,), 2)
            row[:longest] = 1
            row[:seq_lengths[i]] = 0
            rows.append(row)
    return torch.stack(rows)  # (256, width)


colours = matplotlib.colors.ListedColormap(["tab:blue", "tab:orange", "white"])
width = max(seq_lengths)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6]})
for ax, name, batches in ((axes[0], "random batches", random_batches), (axes[1], "buckets", bucket_batches)):
    ax.imshow(padding_map(batches, width), cmap=colours, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
    ax.set_title(f"{name}: blue real, orange padding", fontsize=9)
    ax.set_xlabel("position in the sequence")
    ax.set_ylabel("sample (16 per batch)")
step = torch.arange(len(random_batches))
axes[2].bar(step - 0.2, [padded_cells(b) for b in random_batches], width=0.4, label="random batches")
axes[2].bar(step + 0.2, [padded_cells(b) for b in bucket_batches], width=0.4, label="buckets (sorted order)")
axes[2].set_xlabel("batch")
axes[2].set_ylabel("padded cells")
axes[2].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# A batch sampler is the natural home for this rule: it sees the whole epoch, decides the batches, and the
# `collate_fn` (your `pad_collate`) then pads each batch only to its own longest sequence.
#
# ## Exercise: `BucketBatchSampler`
#
# Write `BucketBatchSampler(lengths, batch_size, drop_last=False, generator=None)`, a
# `torch.utils.data.Sampler` to pass as `DataLoader(dataset, batch_sampler=..., collate_fn=pad_collate)`.
# `lengths[i]` is the length of sample `i`.
#
# - In the constructor, raise `ValueError` if `batch_size < 1`. Sort the indices `0 .. len(lengths) - 1` by
#   ascending length with a **stable** sort (indices of equal length keep their index order) and cut the sorted
#   list into consecutive batches of `batch_size` indices; the last batch is shorter, or left out when
#   `drop_last=True`.
# - Each `iter(sampler)` yields those batches, each a list of ints, in the order
#   `torch.randperm(num_batches, generator=generator)` gives: batch `perm[0]` first, then `perm[1]`, ...,
#   with a new permutation drawn for every pass (so with one generator, two epochs come in two orders). With
#   `generator=None`, `torch.randperm` draws from the global random generator, as it does by itself.
# - `len(sampler)` is the number of batches.

# %%
class BucketBatchSampler(Sampler):
    """Batches of indices of similar length (a stable sort, cut in order), yielded in a new random order per pass."""

    def __init__(self, lengths: list[int], batch_size: int, drop_last: bool = False, generator=None):
        ### BEGIN SOLUTION
        if batch_size < 1:
            raise ValueError(f"batch_size should be at least 1, got {batch_size}")
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # sorted() is stable
        self.batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        if drop_last and self.batches and len(self.batches[-1]) < batch_size:
            self.batches.pop()
        self.generator = generator
        ### END SOLUTION

    def __iter__(self):
        ### BEGIN SOLUTION
        for k in torch.randperm(len(self.batches), generator=self.generator).tolist():
            yield self.batches[k]
        ### END SOLUTION

    def __len__(self):
        ### BEGIN SOLUTION
        return len(self.batches)
        ### END SOLUTION


# %%
check(BucketBatchSampler)

# %% [markdown]
# ## 3. Splitting a dataset: `random_split` with a seeded generator
#
# `random_split(dataset, lengths_or_fractions, generator=...)` shuffles the indices once and cuts them into
# pieces, returning one `Subset` per piece. A `Subset` holds a reference to the original dataset and a list of
# indices; `subset[k]` is `dataset[indices[k]]`, so nothing is copied.
#
# Fractions must add up to 1. `random_split` takes `floor(n * fraction)` samples for each part and then hands
# the leftover samples out one at a time, starting with the first part, so that nothing is lost.
#
# **Always pass a seeded `generator`.** A split that changes every time you restart the notebook means that
# samples you trained on yesterday are in today's validation set, and your validation numbers lie.

# %%
train_part, val_part = random_split(range(10), [0.7, 0.3], generator=torch.Generator().manual_seed(42))
print(type(train_part).__name__, list(train_part.indices), list(val_part.indices))

try:
    random_split(range(10), [0.5, 0.4])  # 0.9: read as lengths, not fractions
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# `random_split` also takes **integer lengths**, the sizes of the parts; they must add up to `len(dataset)`
# exactly. Use them when the sizes are fixed by a protocol ("the last 1,000 samples are the test set" is better
# done with `Subset`, but "exactly 1,000 random validation samples" is a split by lengths). With the same seed,
# lengths and the fractions they correspond to give the same split:

# %%
by_length = random_split(range(10), [7, 3], generator=torch.Generator().manual_seed(42))
print([list(part.indices) for part in by_length])  # the same split as [0.7, 0.3] above
try:
    random_split(range(10), [7, 2])  # 9 != 10
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ## Exercise: `split_dataset`
#
# Write `split_dataset(dataset, fractions, seed)` that returns the list of `Subset`s that
# `random_split(dataset, fractions, generator=torch.Generator().manual_seed(seed))` returns: same sizes, same
# indices. Leave the global random state alone (no `torch.manual_seed`).

# %%
def split_dataset(dataset, fractions: list[float], seed: int) -> list[Subset]:
    """Split dataset into Subsets of the given fractions, reproducibly from seed."""
    ### BEGIN SOLUTION
    return random_split(dataset, fractions, generator=torch.Generator().manual_seed(seed))
    ### END SOLUTION


# %%
check(split_dataset)

# %% [markdown]
# ## 4. Images: `ImageFolder`, transforms, and looking at a batch
#
# `torchvision.datasets.ImageFolder(root)` turns a folder tree `root/<class>/<file>` into a dataset: the class
# names are the sorted sub-folder names, and each sample is `(image, class_index)`. Our digits are laid out
# that way:
#
# ```
# datasets/digits/train/0/0000.png
# datasets/digits/train/0/0010.png
# ...
# datasets/digits/train/9/1796.png
# ```
#
# By default `ImageFolder` opens each file with PIL and returns a `PIL.Image`, which a model cannot use. A
# **transform** turns it into a tensor. torchvision's `transforms.v2` are the current API:
#
# - `v2.ToImage()` turns a PIL image (or an array) into a uint8 tensor `(C, H, W)`, channels first;
# - `v2.ToDtype(torch.float32, scale=True)` converts to float **and** rescales 0..255 to 0..1;
# - `v2.Compose([...])` applies transforms in order.
#
# The older `transforms.ToTensor()` does both steps at once; you will meet it in many scripts.

# %%
to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
train_digits = torchvision.datasets.ImageFolder(DIGITS / "train", transform=to_tensor)
print(len(train_digits), "samples; classes:", train_digits.classes)
image, label = train_digits[0]
print(image.shape, image.dtype, float(image.min()), float(image.max()), "label", label)  # (3, 8, 8)

# %% [markdown]
# ### `ToTensor` in v2 terms
#
# Old scripts write `transforms.ToTensor()`. It takes a PIL image or an `(H, W, C)` uint8 array and returns a
# float32 `(C, H, W)` tensor in `[0, 1]` — two steps in one. In v2 the two steps are separate transforms, so
# `ToTensor()` becomes `v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])`. Check on a real file
# that they agree:

# %%
pil_image = Image.open(DIGITS / "train" / "3" / "0003.png").convert("RGB")  # a PIL image, (W, H) = (8, 8)
old_style = torchvision.transforms.ToTensor()(pil_image)  # (3, 8, 8) float32
new_style = to_tensor(pil_image)                          # (3, 8, 8) float32
print(type(new_style).__name__, new_style.shape, new_style.dtype, old_style.shape, old_style.dtype)
print("largest difference:", (old_style - new_style).abs().max().item())
torch.testing.assert_close(new_style.as_subclass(torch.Tensor), old_style)  # equal up to float32 rounding

# %% [markdown]
# Two details. The difference, if any, is in the last bit of float32 (ToTensor divides by 255, ToDtype multiplies
# by 1/255): the same tensor for any practical purpose. And `ToImage` returns a `tv_tensors.Image`, a tensor
# subclass that tells later v2 transforms "this is an image" (as opposed to, say, a bounding box); it works
# wherever a tensor does, and `.as_subclass(torch.Tensor)` turns it into a plain one. Splitting the steps also
# lets you do what `ToTensor` could not: `v2.ToDtype(torch.float16, scale=True)`, or uint8 augmentations
# (cheaper) before the conversion to float.

# %% [markdown]
# Pitfall: the image has **3** channels although the PNG files are grayscale. `ImageFolder`'s default loader
# converts every image to RGB. For grayscale data add `v2.Grayscale()` (or read with your own loader), or your
# first layer will expect 3 input channels for nothing.

# %%
to_gray_tensor = v2.Compose([v2.ToImage(), v2.Grayscale(), v2.ToDtype(torch.float32, scale=True)])
train_digits = torchvision.datasets.ImageFolder(DIGITS / "train", transform=to_gray_tensor)
print(train_digits[0][0].shape)  # (1, 8, 8)

# %% [markdown]
# ### Looking at a batch
#
# Before training anything, look at what the loader gives you: it catches wrong labels, wrong scaling and
# transposed images at once. Matplotlib wants `(H, W)` or `(H, W, C)`; our tensors are `(C, H, W)`:

# %%
loader = DataLoader(train_digits, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(3))
images, labels = next(iter(loader))
print(images.shape, labels.shape)  # (16, 1, 8, 8) (16,)

try:
    plt.imshow(images[0].numpy())  # (1, 8, 8): channels first
except TypeError as e:
    print("TypeError:", e)
plt.close()

# %%
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for ax, img, y in zip(axes.flat, images, labels):
    ax.imshow(img.permute(1, 2, 0).squeeze(-1), cmap="gray")  # (C, H, W) -> (H, W, C) -> (H, W)
    ax.set_title(train_digits.classes[y], fontsize=9)
    ax.axis("off")
fig.suptitle("a batch of 16 training digits, with their labels")
plt.tight_layout()
plt.show()

# %% [markdown]
# `torchvision.utils.make_grid` does the tiling for you, returning one `(C, H', W')` image of the whole batch:

# %%
grid = torchvision.utils.make_grid(images, nrow=8, padding=1, pad_value=1.0)  # (3, H', W')
plt.figure(figsize=(6, 1.8))
plt.imshow(grid.permute(1, 2, 0))
plt.axis("off")
plt.show()

# %% [markdown]
# ### `Normalize`, and computing the statistics it needs
#
# `v2.Normalize(mean, std)` maps each channel `c` to `(x[c] - mean[c]) / std[c]`, so that inputs are centred
# with unit spread, which makes optimisation easier. It needs float input — a common slip is to normalise
# before converting:

# %%
try:
    v2.Normalize(mean=[0.5], std=[0.25])(read_image(str(DIGITS / "train" / "0" / "0000.png")))
except TypeError as e:
    print("TypeError:", e)

# %% [markdown]
# The mean and std come from the **training** set only (the test set must stay unseen). The digits are tiny, so
# we can stack all of them and ask torch directly:

# %%
everything = torch.stack([img for img, _ in train_digits])  # (N, 1, 8, 8)
mean = everything.mean(dim=(0, 2, 3))                           # (C,)
std = everything.std(dim=(0, 2, 3), correction=0)              # (C,)
print("mean", mean, "std", std)

# %% [markdown]
# For ImageNet-sized data that does not fit in memory. Then you stream: one pass over a loader, keeping
# running sums. For every channel, with `n` pixels seen so far,
#
# $$\text{mean} = \frac{\sum x}{n}, \qquad \text{var} = \frac{\sum x^2}{n} - \text{mean}^2, \qquad
# \text{std} = \sqrt{\text{var}}.$$
#
# That formula subtracts two large, nearly equal numbers when the values are large compared to their spread,
# so the sums need float64: float32 keeps only about 7 significant digits, and the variance lives in the
# digits that are lost. Watch:

# %%
pixels = 4000 + torch.rand(200_000, generator=torch.Generator().manual_seed(0))  # true std ≈ 0.289
for dtype in (torch.float32, torch.float64):
    p = pixels.to(dtype)
    var = (p ** 2).mean() - p.mean() ** 2
    print(f"{dtype}: var = {var.item():.6f}, std = {var.clamp(min=0).sqrt().item():.4f}")
print("torch.std:", pixels.double().std(correction=0).item())

# %% [markdown]
# ## Exercise: `channel_mean_std`
#
# Write `channel_mean_std(loader)`. The loader yields `(images, labels)` with float images `(B, C, H, W)`; the
# last batch may be smaller. Return `(mean, std)`: the per-channel mean and **population** std
# (`correction=0`) over every pixel of every image, as float32 tensors of shape `(C,)`. Go over the loader
# **once**, keeping running sums in float64 — do not collect all the batches.

# %%
def channel_mean_std(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std of every pixel the loader yields, in one float64 pass."""
    ### BEGIN SOLUTION
    n, total, total_sq = 0, None, None
    for images, _ in loader:
        x = images.double()                          # (B, C, H, W)
        s, s2 = x.sum(dim=(0, 2, 3)), (x ** 2).sum(dim=(0, 2, 3))  # (C,)
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        n += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (total_sq / n - mean ** 2).clamp(min=0).sqrt()
    return mean.float(), std.float()
    ### END SOLUTION


# %%
check(channel_mean_std)

# %% [markdown]
# ### More transforms, and target transforms
#
# A few transforms you will use constantly (all in `torchvision.transforms.v2`):
#
# | transform | what it does | when |
# | --- | --- | --- |
# | `Resize(size)` | rescales (an int resizes the shorter side) | make inputs one size |
# | `RandomCrop(size, padding=...)` | a random window, optionally after padding | augmentation, training only |
# | `RandomHorizontalFlip()` | mirrors half the time | augmentation (not for digits: a mirrored 2 is no 2) |
# | `Lambda(fn)` | any function of yours | small custom steps |
#
# Random transforms draw new randomness every time a sample is read, so each epoch sees a slightly different
# version of every image; that is the point of augmentation. Use them on the training set only.
#
# The `target_transform=` argument of a dataset does the same for labels. A classic one turns the class index
# into a **one-hot** vector with `scatter_`: `zeros(10).scatter_(0, index, 1.0)` writes 1.0 at position `index`.
# (Cross-entropy in PyTorch wants the integer index, so you only need one-hot for other losses.)

# %%
augment = v2.Compose([
    v2.ToImage(),
    v2.Grayscale(),
    v2.Resize(16),                              # (1, 8, 8) -> (1, 16, 16)
    v2.RandomCrop(16, padding=2),               # shift by up to 2 pixels
    v2.ToDtype(torch.float32, scale=True),
    v2.Normalize(mean=mean.tolist(), std=std.tolist()),
    v2.Lambda(lambda img: img.clamp(-3, 3)),    # cut off rare extreme values
])
one_hot = v2.Lambda(lambda y: torch.zeros(10).scatter_(0, torch.tensor([y]), 1.0))  # int -> (10,)
augmented = torchvision.datasets.ImageFolder(DIGITS / "train", transform=augment, target_transform=one_hot)

img, target = augmented[0]
print(img.shape, img.dtype, target)

fig, axes = plt.subplots(1, 6, figsize=(7, 1.5))
for ax in axes:  # the same sample, read six times
    ax.imshow(augmented[0][0][0], cmap="gray")
    ax.axis("off")
fig.suptitle("one training image, six random crops")
plt.show()

# %% [markdown]
# ### `Resize`: interpolation and antialiasing; `CenterCrop`
#
# Resizing computes new pixels from old ones; `interpolation=` says how. `NEAREST` copies the closest old pixel
# (blocky, but it never invents values — the only right choice for label masks), `BILINEAR` (v2's default)
# blends the 2x2 nearest pixels, `BICUBIC` a 4x4 neighbourhood (smoother; on float images it can overshoot the
# original range a little, uint8 results are clipped to 0..255).
#
# Shrinking has a second problem. A pixel of the small image stands for a whole block of the large one, but
# plain interpolation only reads the few pixels nearest its centre; fine detail between them is skipped, and
# stripes finer than the new pixel size reappear as coarse false patterns (aliasing, the moiré of a photographed
# screen). `antialias=True` (v2's default) first averages over the whole block. It only affects
# `BILINEAR`/`BICUBIC` downscaling; old `transforms.Resize` code on tensors defaulted to no antialiasing, one
# reason a model trained with PIL-resized images can see slightly different inputs in production.
#
# `CenterCrop(size)` keeps the central `size` window (evaluation's counterpart of `RandomCrop`); `Resize(256)`
# then `CenterCrop(224)` is the classic ImageNet evaluation pipeline.

# %%
yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
rings = ((1 + torch.cos(((xx - 64) ** 2 + (yy - 64) ** 2) / 40)) * 127.5).to(torch.uint8)[None]  # (1, 128, 128)
digit = read_image(str(DIGITS / "train" / "3" / "0003.png"))                                        # (1, 8, 8)
nearest, bilinear, bicubic = (v2.InterpolationMode.NEAREST, v2.InterpolationMode.BILINEAR,
                              v2.InterpolationMode.BICUBIC)
panels = [
    ("rings (1, 128, 128)", rings),
    ("→ 32, bilinear, antialias=False", v2.Resize(32, bilinear, antialias=False)(rings)),
    ("→ 32, bilinear, antialias=True", v2.Resize(32, bilinear, antialias=True)(rings)),
    ("CenterCrop(48) of rings", v2.CenterCrop(48)(rings)),
    ("digit → 48, nearest", v2.Resize(48, nearest)(digit)),
    ("digit → 48, bilinear", v2.Resize(48, bilinear)(digit)),
    ("digit → 48, bicubic", v2.Resize(48, bicubic)(digit)),
    ("digit, CenterCrop(6)", v2.CenterCrop(6)(digit)),
]
fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
for ax, (title, img) in zip(axes.flat, panels):
    ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. A dataset from a CSV of file names and labels
#
# Real data rarely comes as an `ImageFolder` tree. Often there is a table — a CSV with a file name and a label
# per row — next to a folder of images. The course ships such a table for the digits:

# %%
with open(DIGITS / "train.csv") as f:
    print("".join(f.readline() for _ in range(4)))

# %% [markdown]
# `torchvision.io.read_image(path)` reads a PNG or JPEG file straight into a **uint8 tensor `(C, H, W)`**: 1
# channel for a grayscale file, 3 for RGB (4 with transparency) — no PIL image in between, no scaling to 0..1.
# (torchvision 0.29 announces that its image decoders will move to the separate `torchcodec` package; the
# function still works as shown.)

# %%
img = read_image(str(DIGITS / "train" / "3" / "0003.png"))
print(img.shape, img.dtype, img.min().item(), img.max().item())  # (1, 8, 8) uint8

# %% [markdown]
# ## Exercise: `CSVImageDataset`
#
# Write a map-style dataset `CSVImageDataset(annotations_file, img_dir, transform=None, target_transform=None)`:
#
# - `annotations_file` is a CSV file with the header `filename,label`; each file name is relative to `img_dir`
#   (it may contain sub-folders, such as `train/3/0042.png`);
# - `len(dataset)` is the number of rows (the header is not a sample);
# - `dataset[i]` is `(image, label)` for row `i`: the image read with `torchvision.io.read_image(path)` in its
#   default mode (uint8 `(C, H, W)`) and then passed through `transform` if one is given; the label a Python
#   `int`, passed through `target_transform` if one is given.
#
# Read the CSV once, in `__init__`; read each image only when it is asked for, in `__getitem__` (a real dataset
# does not fit in memory, and the check notices an `__init__` that reads the images).

# %%
class CSVImageDataset(Dataset):
    """Images listed in a CSV (filename,label), read with torchvision.io.read_image."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        ### BEGIN SOLUTION
        with open(annotations_file, newline="") as f:
            self.rows = [(row["filename"], int(row["label"])) for row in csv.DictReader(f)]
        self.img_dir = img_dir
        self.transform, self.target_transform = transform, target_transform
        ### END SOLUTION

    def __len__(self):
        ### BEGIN SOLUTION
        return len(self.rows)
        ### END SOLUTION

    def __getitem__(self, i):
        ### BEGIN SOLUTION
        filename, label = self.rows[i]
        image = read_image(os.path.join(self.img_dir, filename))  # uint8 (C, H, W)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
        ### END SOLUTION


# %%
check(CSVImageDataset)

# %% [markdown]
# With it, `CSVImageDataset(DIGITS / "train.csv", DIGITS, transform=v2.ToDtype(torch.float32, scale=True))`
# gives the same samples as the `ImageFolder` above, with one channel and no PIL in between.
#
# ## 6. Samplers that change the class balance
#
# When one class is rare, a shuffled loader shows the model that class rarely, and the model learns that
# predicting it is rarely worth it. `WeightedRandomSampler(weights, num_samples, replacement=True)` draws sample
# `i` with probability proportional to `weights[i]`; the weights need not sum to 1. With replacement a rare
# sample can be drawn several times in one epoch, which is how a rare class gets its fair share.

# %%
weights = torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0])  # sample 4 is four times as likely as each other one
sampler = WeightedRandomSampler(weights, num_samples=8000, replacement=True,
                                generator=torch.Generator().manual_seed(0))
drawn = Counter(list(sampler))
print({i: round(drawn[i] / 8000, 3) for i in range(5)})  # about 1/8, 1/8, 1/8, 1/8, 1/2

# %% [markdown]
# Let us make an unbalanced version of the digits, keeping all 0s and 1s but only a few of the other digits, and
# count what a shuffled loader shows the model:

# %%
targets = torch.tensor(train_digits.targets)  # (N,)
keep = [i for i, y in enumerate(targets.tolist()) if y < 2 or i % 10 == 0]
unbalanced = Subset(train_digits, keep)
unbalanced_labels = targets[keep]
print(len(unbalanced), "samples; per class:", torch.bincount(unbalanced_labels, minlength=10).tolist())

plt.figure(figsize=(5, 2))
plt.bar(range(10), torch.bincount(unbalanced_labels, minlength=10))
plt.xticks(range(10))
plt.title("class counts of the unbalanced subset")
plt.show()

# %% [markdown]
# ## Exercise: `make_balanced_sampler`
#
# Write `make_balanced_sampler(labels, num_samples=None, generator=None)`. `labels` is a list or 1-D tensor of
# ints (one per sample). Return a `WeightedRandomSampler` that, in expectation, draws every class equally often:
# the weight of sample `i` is `1 / count(labels[i])` (any constant factor is fine), drawing **with
# replacement**, `num_samples` samples (default `len(labels)`), using `generator`.

# %%
def make_balanced_sampler(labels, num_samples=None, generator=None) -> WeightedRandomSampler:
    """A sampler that draws every class equally often: weight 1 / count(label), with replacement."""
    ### BEGIN SOLUTION
    labels = torch.as_tensor(labels, dtype=torch.int64)      # (N,)
    counts = torch.bincount(labels)                           # (num_classes,)
    weights = 1.0 / counts[labels].double()                   # (N,)
    n = len(labels) if num_samples is None else num_samples
    return WeightedRandomSampler(weights, num_samples=n, replacement=True, generator=generator)
    ### END SOLUTION


# %%
check(make_balanced_sampler)

# %% [markdown]
# Pass it as `DataLoader(unbalanced, batch_size=64, sampler=make_balanced_sampler(unbalanced_labels))` (and no
# `shuffle`): each class then makes up about a tenth of every epoch. The price: samples of the rare classes repeat
# within an epoch, so watch for overfitting on them; augmentation helps.
#
# ## 7. `IterableDataset`: streams, and what workers do to them
#
# Some data has no `__getitem__`: lines of a huge log file, records from a database cursor, samples generated on
# the fly. An `IterableDataset` only has `__iter__`, and the DataLoader simply batches what it yields. There are
# no indices, so there is no sampler and no `shuffle`.

# %%
class Countdown(IterableDataset):
    """The integers from n down to 1."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        yield from range(self.n, 0, -1)


print([b.tolist() for b in DataLoader(Countdown(7), batch_size=3)])

# %% [markdown]
# The loader refuses everything that needs indices, with a `ValueError` when it is built:

# %%
for option in ({"shuffle": True}, {"sampler": SequentialSampler(range(7))}, {"batch_sampler": [[0, 1], [2]]}):
    try:
        DataLoader(Countdown(7), **option)
    except ValueError as e:
        print("ValueError:", e)

# %% [markdown]
# Shuffling a stream has to happen in the stream itself: read a buffer of items and yield them in a random
# order, or shuffle the list of files the stream reads from, once per epoch.
#
# `len(loader)` needs `len(dataset)`. An `IterableDataset` has no `__len__` unless you write one; then the loader
# trusts it (`ceil(len / batch_size)` batches) but cannot check it in advance; if you asked for `len(loader)`, it
# warns once it has fetched more batches than that — which is what happens when workers do not split the stream
# (more on that below):

# %%
try:
    len(DataLoader(Countdown(7), batch_size=3))
except TypeError as e:
    print("TypeError:", e)


class SizedCountdown(Countdown):
    """Countdown that also reports its length."""

    def __len__(self):
        return self.n


print(len(DataLoader(SizedCountdown(7), batch_size=3)))  # ceil(7 / 3) = 3

loader = DataLoader(SizedCountdown(7), batch_size=None, num_workers=2)  # items one by one
print(len(loader))  # 7
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    items = [int(v) for v in loader]  # both workers yield the whole countdown
print(len(items), "items came; the loader warns:", str(caught[0].message)[:150] if caught else "nothing")

# %% [markdown]
# ### Worker processes
#
# `num_workers=k` starts `k` worker processes; each one gets a **copy of the dataset** and prepares whole batches,
# while the main process trains on the previous ones. For a map-style dataset this just works: the loader sends
# every worker different indices. Related options:
#
# - `worker_init_fn(worker_id)` runs once at the start of each worker (seed a library, open a file handle);
# - `persistent_workers=True` keeps the workers alive between epochs instead of restarting them each time;
# - `prefetch_factor` (default 2) is how many batches each worker prepares ahead: the loader keeps
#   `num_workers * prefetch_factor` batches in flight;
# - `pin_memory=True` puts batches in page-locked memory, which makes the copy to a CUDA GPU faster (it only
#   helps when a GPU is used);
# - each worker's torch random state is seeded from the loader's `generator`, so random transforms differ per
#   worker and are reproducible.
#
# Starting workers costs time (a new process, a copy of the dataset) at the start of **every** epoch, unless
# they persist. Let us time three short epochs over a dataset whose samples take a millisecond to read:

# %%
class SlowSquares(Dataset):
    """Sample i is (i, i**2) as float32 scalars; reading it takes `cost` seconds (samples 16..19 of every 32: 20x)."""

    def __init__(self, n, cost):
        self.n, self.cost = n, cost

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.cost * (20 if 16 <= i % 32 < 20 else 1))  # stands for reading and decoding a file
        x = torch.tensor(float(i))
        return x, x ** 2


def epoch_seconds(loader, epochs):
    """Wall-clock time of each of `epochs` full passes over the loader."""
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            pass
        times.append(time.perf_counter() - start)
    return times


slow = SlowSquares(64, cost=0.001)
for persistent in (False, True):
    loader = DataLoader(slow, batch_size=8, num_workers=2, persistent_workers=persistent)
    print(f"persistent_workers={persistent}:", [f"{1000 * t:.0f} ms" for t in epoch_seconds(loader, 3)])
del loader  # persistent workers live as long as their loader

# %% [markdown]
# With persistent workers only the first epoch pays for the start. (On macOS and Windows, where workers are
# started fresh instead of forked, the difference is larger still.)
#
# `prefetch_factor` sets how far ahead the workers read. Count the samples read while the training loop holds
# its first batch and spends 0.3 s on it: the workers have then prepared `num_workers * prefetch_factor` more
# batches and stopped, waiting for the loop to take one.

# %%
class CountedReads(Dataset):
    """Sample i is i; every read adds 1 to a counter shared with the worker processes."""

    def __init__(self, n):
        self.n, self.reads = n, multiprocessing.Value("i", 0)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        with self.reads.get_lock():
            self.reads.value += 1
        return i


counted = CountedReads(100)
for prefetch in (1, 4):
    counted.reads.value = 0
    batches = iter(DataLoader(counted, batch_size=4, num_workers=2, prefetch_factor=prefetch))
    first = next(batches)
    time.sleep(0.3)  # a slow training step on the first batch
    print(f"prefetch_factor={prefetch}: {counted.reads.value} samples read = 4 in hand + "
          f"{counted.reads.value - 4} in {(counted.reads.value - 4) // 4} batches ready")
    del batches  # stops its workers

# %% [markdown]
# Reading ahead matters when reading is uneven: a few slow batches (a large file, a slow disk) stall training
# unless they were started early enough. Below, a training step of 15 ms consumes batches of 4 samples, and every
# 8th batch takes 80 ms to read. We time how long the loop waits for data (on a busy machine the numbers jump
# around; run the cell twice):

# %%
def seconds_waiting(loader, step_seconds):
    """Time the training loop spends waiting for the next batch, and the whole epoch's time."""
    waited, start = 0.0, time.perf_counter()
    batches = iter(loader)
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        waited += time.perf_counter() - asked
        if batch is None:
            return waited, time.perf_counter() - start
        time.sleep(step_seconds)  # stands for forward, backward and step


slow = SlowSquares(128, cost=0.001)
for prefetch in (1, 4):
    loader = DataLoader(slow, batch_size=4, num_workers=2, prefetch_factor=prefetch, persistent_workers=True)
    seconds_waiting(loader, 0.0)  # a first epoch to start the workers
    waited, total = seconds_waiting(loader, 0.015)
    print(f"prefetch_factor={prefetch}: waited {1000 * waited:.0f} ms of {1000 * total:.0f} ms")
del loader

# %% [markdown]
# More prefetching costs memory (`num_workers * prefetch_factor` batches held at once) and cannot help when
# reading is slower than training on average — then you need more workers, or cheaper samples.
#
# ### `pin_memory` and `non_blocking=True`
#
# The operating system may move ordinary ("pageable") memory around, so a copy to the GPU first goes through a
# page-locked staging buffer. `pin_memory=True` makes the loader put each batch in page-locked ("pinned")
# memory directly; the GPU can then read it by itself (DMA), and `x.to("cuda", non_blocking=True)` returns at
# once while the copy runs in the background. Kernels queued afterwards on the same CUDA stream wait for the copy,
# so using the result is safe; the CPU meanwhile goes on preparing the next step. From pageable memory,
# `non_blocking=True` has nothing to overlap. The reverse direction needs care: a GPU-to-CPU copy with
# `non_blocking=True` may still be running when you read the CPU tensor — call `torch.cuda.synchronize()` first.
#
# This cell runs its example only when a CUDA GPU is present:

# %%
if torch.cuda.is_available():
    loader = DataLoader(TensorDataset(torch.randn(1024, 256), torch.randint(0, 10, (1024,))), batch_size=256,
                        pin_memory=True)
    xb, yb = next(iter(loader))
    print("batch pinned:", xb.is_pinned())
    xb, yb = xb.to("cuda", non_blocking=True), yb.to("cuda", non_blocking=True)  # (256, 256), (256,)
    print("on", xb.device, "mean of the batch:", xb.mean().item())  # .item() waits for the copy and the kernel

    pageable = torch.randn(16, 1024, 1024)  # 64 MB
    pinned = pageable.pin_memory()
    pinned.to("cuda")  # warm-up: the first copy also sets up CUDA
    for name, src in (("pageable", pageable), ("pinned", pinned)):
        torch.cuda.synchronize()
        start = time.perf_counter()
        on_gpu = src.to("cuda", non_blocking=True)
        returned = time.perf_counter() - start  # how long the CPU was held up
        torch.cuda.synchronize()
        done = time.perf_counter() - start
        print(f"{name:8}: to() returned after {1000 * returned:.1f} ms, copy done after {1000 * done:.1f} ms")
else:
    print("No CUDA GPU here, so nothing to pin: DataLoader(pin_memory=True) only warns, and .to(device, "
          "non_blocking=True) is an ordinary copy on the CPU. On a GPU machine this cell shows a pinned batch and "
          "times a 64 MB copy from pageable and from pinned memory.")

# %% [markdown]
# ### Workers and an `IterableDataset`
#
# With an `IterableDataset`, every worker runs the **same** `__iter__` on its own copy. Unless the dataset
# splits the work, you get every item once per worker:

# %%
loader = DataLoader(Countdown(6), batch_size=None, num_workers=2)  # batch_size=None: items one by one
print(sorted(int(v) for v in loader))  # each number twice!

# %% [markdown]
# Inside a worker, `torch.utils.data.get_worker_info()` says who you are: `info.id` (0 .. k-1),
# `info.num_workers` and `info.dataset` (this worker's copy); in the main process it returns `None`. One way to
# split the work is a `worker_init_fn` that narrows each worker's copy to its own share:

# %%
class Every(IterableDataset):
    """The integers in [lo, hi) with a step: lo, lo + step, lo + 2 * step, ..."""

    def __init__(self, lo, hi, step=1):
        self.lo, self.hi, self.step = lo, hi, step

    def __iter__(self):
        yield from range(self.lo, self.hi, self.step)


def keep_my_share(worker_id):
    """worker_init_fn: worker k of n keeps every n-th integer, starting at lo + k."""
    info = get_worker_info()
    copy = info.dataset  # this worker's own copy: changing it does not affect the others
    copy.lo, copy.step = copy.lo + worker_id, info.num_workers


loader = DataLoader(Every(0, 11), batch_size=None, num_workers=2, worker_init_fn=keep_my_share)
values = [int(v) for v in loader]
print(values)  # worker 0 yields 0, 2, 4, ...; worker 1 yields 1, 3, 5, ...; the loader takes from each in turn
print(sorted(values) == list(range(11)))

# %% [markdown]
# A note on platforms: on Linux the workers are made with `fork` and see everything defined in the notebook. On
# macOS and Windows they are started fresh (`spawn`) and must import the dataset class, so in scripts put your
# classes in a module (a `.py` file) and the loop under `if __name__ == "__main__":`; lambdas in transforms then
# fail to pickle — use named functions.
#
# ## Exercise: `ShardedRange`
#
# Write `ShardedRange(start, end)`, an `IterableDataset` of the integers in `[start, end)` that splits the work
# in its own `__iter__` (no `worker_init_fn`): with any `num_workers` — 0, 1, or more than there are integers —
# a DataLoader over it yields every integer exactly once. Ranges whose length is not a multiple of the number of
# workers must work too.

# %%
class ShardedRange(IterableDataset):
    """The integers in [start, end), split between DataLoader workers so that each comes exactly once."""

    def __init__(self, start: int, end: int):
        ### BEGIN SOLUTION
        self.start, self.end = start, end
        ### END SOLUTION

    def __iter__(self):
        ### BEGIN SOLUTION
        info = get_worker_info()
        if info is None:  # the main process: everything
            return iter(range(self.start, self.end))
        per = -(-(self.end - self.start) // info.num_workers)  # ceil division
        lo = self.start + info.id * per
        return iter(range(lo, min(lo + per, self.end)))
        ### END SOLUTION


# %%
check(ShardedRange)

# %% [markdown]
# ## 8. FashionMNIST: the online path (optional)
#
# torchvision can download classic datasets. FashionMNIST (70,000 grayscale 28x28 pictures of clothes in 10
# classes) is a drop-in upgrade from our digits. It needs internet access and about 30 MB of disk, so this
# cell only runs when you set `DOWNLOAD = True`; everything in the course works without it.

# %%
DOWNLOAD = False  # set to True to fetch FashionMNIST (about 30 MB) into ./data

if DOWNLOAD:
    fashion = torchvision.datasets.FashionMNIST(root="data", train=True, download=True,
                                                transform=v2.Compose([v2.ToImage(),
                                                                      v2.ToDtype(torch.float32, scale=True)]))
    images, labels = next(iter(DataLoader(fashion, batch_size=16, shuffle=True)))
    fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
    for ax, img, y in zip(axes.flat, images, labels):
        ax.imshow(img[0], cmap="gray")
        ax.set_title(fashion.classes[y], fontsize=7)
        ax.axis("off")
    plt.show()
else:
    print("skipped: the shipped digits are used instead")

# %% [markdown]
# ## Summary
#
# - A map-style `Dataset` is `__len__` + `__getitem__`; an `IterableDataset` is `__iter__`. Read cheap metadata in
#   `__init__`, do the expensive work per sample.
# - `DataLoader` batches: `ceil(N / B)` batches per epoch, `N // B` with `drop_last=True`. `shuffle` or a
#   `sampler`, never both; `batch_sampler` replaces all the batching options.
# - A sampler is `__iter__` (a fresh pass per epoch, randomness drawn there) + `__len__`; a batch sampler yields
#   lists of indices. Bucketing by length cuts padding; shuffle the batches, not the indices.
# - `default_collate` stacks tensors and keeps tuples and dicts as they are; samples that cannot be stacked need a
#   `collate_fn`: pad and return the lengths.
# - `dataset_a + dataset_b` is a `ConcatDataset`. Seed a private `torch.Generator` for splits (fractions or
#   integer lengths) and shuffles; never make the test set part of your statistics.
# - Transforms: `ToImage` + `ToDtype(scale=True)` (the old `ToTensor`) before `Normalize`; `Resize` antialiases
#   when shrinking; random augmentation on training data only, `CenterCrop` for evaluation.
# - `persistent_workers` saves the workers' start-up each epoch, `prefetch_factor` absorbs slow batches,
#   `pin_memory` + `non_blocking=True` overlap the copy to the GPU with other work.
# - An `IterableDataset` has no sampler or `shuffle`, a `len` only if you give it one, and with
#   `num_workers > 0` it must split its work with `get_worker_info()`.
