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
import os
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torchvision
from torch.utils.data import (BatchSampler, DataLoader, Dataset, IterableDataset, RandomSampler,
                              SequentialSampler, Subset, TensorDataset, WeightedRandomSampler, default_collate,
                              get_worker_info, random_split)
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
# A **batch sampler** yields whole lists of indices, one list per batch. `batch_sampler=` replaces `batch_size`,
# `shuffle`, `sampler` and `drop_last` together; it is how you build batches with a rule, for example
# "sequences of similar length together". `BatchSampler` wraps an ordinary sampler:

# %%
batches = BatchSampler(SequentialSampler(range(10)), batch_size=4, drop_last=False)
print(list(batches))  # [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
loader = DataLoader(ids, batch_sampler=batches)
print([yb.tolist() for _, yb in loader])

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
# Read the CSV once, in `__init__`; read each image only when it is asked for, in `__getitem__`.

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
# ### Worker processes
#
# `num_workers=k` starts `k` worker processes; each one gets a **copy of the dataset** and prepares whole batches,
# while the main process trains on the previous ones. For a map-style dataset this just works: the loader sends
# every worker different indices. Related options:
#
# - `worker_init_fn(worker_id)` runs once at the start of each worker (seed a library, open a file handle);
# - `persistent_workers=True` keeps the workers alive between epochs instead of restarting them each time;
# - `pin_memory=True` puts batches in page-locked memory, which makes the copy to a CUDA GPU faster (it only
#   helps when a GPU is used);
# - each worker's torch random state is seeded from the loader's `generator`, so random transforms differ per
#   worker and are reproducible.
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
# - Samples that cannot be stacked need a `collate_fn`; pad and return the lengths.
# - Seed a private `torch.Generator` for splits and shuffles; never make the test set part of your statistics.
# - Transforms: `ToImage` + `ToDtype(scale=True)` before `Normalize`; random augmentation on training data only.
# - With `num_workers > 0`, an `IterableDataset` must split its work with `get_worker_info()`.
