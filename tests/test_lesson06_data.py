"""06_data: each check accepts an independent correct answer and rejects the mistakes learners really make."""
import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import BatchSampler, Dataset, IterableDataset, Sampler, Subset, WeightedRandomSampler, \
    get_worker_info, random_split
from torchvision.io import ImageReadMode, decode_image, read_file, read_image

from grader import evaluate
from verdicts import assert_passes, assert_rejects


# --- CSVImageDataset ---------------------------------------------------------------------------------------
class CSVImagesRight(Dataset):
    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        with open(annotations_file, newline="") as f:
            reader = csv.reader(f)
            next(reader)  # header
            self.items = [(name, int(label)) for name, label in reader]
        self.root = Path(img_dir)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        name, label = self.items[index]
        image = read_image(str(self.root / name))
        image = self.transform(image) if self.transform else image
        label = self.target_transform(label) if self.target_transform else label
        return image, label


class HeaderCounted(CSVImagesRight):
    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        super().__init__(annotations_file, img_dir, transform, target_transform)
        self.items = [("filename", "label")] + self.items


class LabelAsString(CSVImagesRight):
    def __getitem__(self, index):
        image, _ = super().__getitem__(index)
        return image, self.items[index][1].__str__()


class ReadAsRGB(CSVImagesRight):
    def __getitem__(self, index):
        name, label = self.items[index]
        return read_image(str(self.root / name), mode=ImageReadMode.RGB), label


class PILToFloat(CSVImagesRight):
    def __getitem__(self, index):
        name, label = self.items[index]
        pixels = np.asarray(Image.open(self.root / name), dtype=np.float32) / 255
        image = torch.from_numpy(pixels).unsqueeze(0) if pixels.ndim == 2 else torch.from_numpy(pixels).permute(2, 0, 1)
        return image, label


class ChannelsLast(CSVImagesRight):
    def __getitem__(self, index):
        name, label = self.items[index]
        pixels = np.array(Image.open(self.root / name))  # uint8 (H, W) or (H, W, C)
        return torch.from_numpy(pixels.reshape(*pixels.shape[:2], -1)), label


class IgnoresTransform(CSVImagesRight):
    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        super().__init__(annotations_file, img_dir, None, target_transform)


class TargetTransformOnImage(CSVImagesRight):
    def __getitem__(self, index):
        name, label = self.items[index]
        image = read_image(str(self.root / name))
        image = self.transform(image) if self.transform else image
        return image, label


class CSVImagesDictReaderPIL(Dataset):
    """Another correct answer: csv.DictReader, PIL to open each file when it is asked for."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        with open(annotations_file, newline="") as f:
            self.rows = list(csv.DictReader(f))
        self.img_dir, self.transform, self.target_transform = img_dir, transform, target_transform

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        with Image.open(Path(self.img_dir) / row["filename"]) as im:
            pixels = np.array(im)  # uint8 (H, W) or (H, W, C)
        image = torch.from_numpy(pixels).unsqueeze(-1) if pixels.ndim == 2 else torch.from_numpy(pixels)
        image = image.permute(2, 0, 1).contiguous()  # (C, H, W)
        label = int(row["label"])
        return (self.transform(image) if self.transform else image,
                self.target_transform(label) if self.target_transform else label)


class CSVImagesDecode(CSVImagesRight):
    """Another correct answer: the file's bytes with read_file, then decode_image."""

    def __getitem__(self, index):
        name, label = self.items[index]
        image = decode_image(read_file(str(self.root / name)))
        image = self.transform(image) if self.transform else image
        return image, self.target_transform(label) if self.target_transform else label


class ReadsAllInInit(CSVImagesRight):
    """Eager: every image decoded in __init__ and kept in memory."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        super().__init__(annotations_file, img_dir, transform, target_transform)
        self.images = [read_image(str(self.root / name)) for name, _ in self.items]

    def __getitem__(self, index):
        image, label = self.images[index], self.items[index][1]
        image = self.transform(image) if self.transform else image
        return image, self.target_transform(label) if self.target_transform else label


class ReadsAllOnFirstAccess(CSVImagesRight):
    """Loads every image the first time any item is asked for."""

    def __getitem__(self, index):
        if not hasattr(self, "images"):
            self.images = [read_image(str(self.root / name)) for name, _ in self.items]
        image, label = self.images[index], self.items[index][1]
        image = self.transform(image) if self.transform else image
        return image, self.target_transform(label) if self.target_transform else label


class TransformsSwapped(CSVImagesRight):
    def __getitem__(self, index):
        name, label = self.items[index]
        image = read_image(str(self.root / name))
        if self.target_transform:
            image = self.target_transform(image)
        if self.transform:
            label = self.transform(label)
        return image, label


class ColumnsSwapped(CSVImagesRight):
    """Takes the label column for the file name: `label, name = row`."""

    def __init__(self, annotations_file, img_dir, transform=None, target_transform=None):
        super().__init__(annotations_file, img_dir, transform, target_transform)
        self.items = [(str(label), name) for name, label in self.items]

    def __getitem__(self, index):
        name, label = self.items[index]
        image = read_image(str(self.root / name))
        return image, int(label) if label.isdigit() else label


class CachesTransformed(CSVImagesRight):
    """Reads lazily, but keeps each transformed image: a random augmentation is frozen after the first epoch."""

    def __getitem__(self, index):
        self.__dict__.setdefault("done", {})
        if index not in self.done:
            self.done[index] = super().__getitem__(index)
        return self.done[index]


class CSVImagesRawCache(CSVImagesRight):
    """Also right: caches what read_image returned (lazily), and transforms on every access."""

    def __getitem__(self, index):
        self.__dict__.setdefault("raw", {})
        name, label = self.items[index]
        if index not in self.raw:
            self.raw[index] = read_image(str(self.root / name))
        image = self.transform(self.raw[index]) if self.transform else self.raw[index]
        return image, self.target_transform(label) if self.target_transform else label


class RowsShifted(CSVImagesRight):
    def __getitem__(self, index):
        return super().__getitem__((index + 1) % len(self))


@pytest.mark.parametrize("right", [CSVImagesRight, CSVImagesDictReaderPIL, CSVImagesDecode, CSVImagesRawCache])
def test_csv_dataset_right(right):
    assert_passes(right, "CSVImageDataset")


@pytest.mark.parametrize("wrong, fragments", [
    (HeaderCounted, ("header",)),
    (LabelAsString, ("string", "int()")),
    (ReadAsRGB, ("3 channels", "mode=rgb")),
    (PILToFloat, ("expected uint8",)),
    (ChannelsLast, ("channels first",)),
    (IgnoresTransform, ("but a transform was given", "self.transform(image)")),
    (TargetTransformOnImage, ("is the int", "target_transform was given")),
    (ReadsAllInInit, ("__init__ read every image", "does not fit in memory", "each image in __getitem__")),
    (ReadsAllOnFirstAccess, ("the first access read every image",)),
    (RowsShifted, ("is the image of row 1", "row i of the csv")),
    (TransformsSwapped, ("target_transform was applied to the image", "transform is for the image")),
    (TransformsSwapped, ("transform was applied to the label", "target_transform for the label")),
    (ColumnsSwapped, ("the image path ends in a label", "read the columns by name", "csv.dictreader")),
    (CachesTransformed, ("transform must run on every access", "do not cache transformed images")),
])
def test_csv_dataset_wrong(wrong, fragments):
    assert_rejects(wrong, "CSVImageDataset", *fragments)


# --- pad_collate -------------------------------------------------------------------------------------------
def pad_right(batch, pad_value=0):
    seqs, labels = zip(*batch)
    padded = pad_sequence(list(seqs), batch_first=True, padding_value=pad_value)
    return padded, torch.tensor([len(s) for s in seqs]), torch.tensor(labels)


def pad_time_first(batch, pad_value=0):
    seqs, labels = zip(*batch)
    return pad_sequence(list(seqs), padding_value=pad_value), torch.tensor([len(s) for s in seqs]), \
        torch.tensor(labels)


def pad_ignores_value(batch, pad_value=0):
    return pad_right(batch, 0)


def pad_lengths_list(batch, pad_value=0):
    padded, lengths, labels = pad_right(batch, pad_value)
    return padded, lengths.tolist(), labels


def pad_sorted(batch, pad_value=0):
    return pad_right(sorted(batch, key=lambda pair: -len(pair[0])), pad_value)


def pad_float_labels(batch, pad_value=0):
    padded, lengths, labels = pad_right(batch, pad_value)
    return padded, lengths, labels.float()


def pad_on_cpu(batch, pad_value=0):
    seqs = [s for s, _ in batch]
    padded = torch.full((len(seqs), max(len(s) for s in seqs), *seqs[0].shape[1:]), pad_value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    return padded, torch.tensor([len(s) for s in seqs]), torch.tensor([y for _, y in batch])


def pad_float_fill(batch, pad_value=0):
    seqs = [s for s, _ in batch]
    shape = (len(seqs), max(len(s) for s in seqs), *seqs[0].shape[1:])
    padded = torch.full(shape, float(pad_value), device=seqs[0].device)  # float32, whatever the sequences are
    for i, s in enumerate(seqs):
        padded[i, :len(s)] = s
    return padded, torch.tensor([len(s) for s in seqs]), torch.tensor([y for _, y in batch])


def test_pad_collate_right():
    assert_passes(pad_right, "pad_collate")


@pytest.mark.parametrize("wrong, fragments", [
    (pad_time_first, ("batch_first",)),
    (pad_ignores_value, ("padding is not",)),
    (pad_lengths_list, ("int64 tensor",)),
    (pad_sorted, ("sorted by length",)),
    (pad_float_labels, ("labels should be int64",)),
    (pad_on_cpu, ("stays on the cpu",)),
    (pad_float_fill, ("token ids (int64)", "keep the sequences' dtype (dtype=seqs[0].dtype",
                      "torch.full with a Python float makes float32")),
])
def test_pad_collate_wrong(wrong, fragments):
    assert_rejects(wrong, "pad_collate", *fragments)


# --- split_dataset -----------------------------------------------------------------------------------------
def split_right(dataset, fractions, seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return list(random_split(dataset, fractions, generator=g))


def split_global_seed(dataset, fractions, seed):
    torch.manual_seed(seed)
    return random_split(dataset, fractions)


def split_floor(dataset, fractions, seed):
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    parts, start = [], 0
    for f in fractions:
        size = math.floor(f * len(dataset))
        parts.append(Subset(dataset, order[start:start + size]))
        start += size
    return parts


def split_python_random(dataset, fractions, seed):
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    sizes = [math.floor(f * len(dataset)) for f in fractions]
    for i in range(len(dataset) - sum(sizes)):
        sizes[i % len(sizes)] += 1
    parts, start = [], 0
    for size in sizes:
        parts.append(Subset(dataset, order[start:start + size]))
        start += size
    return parts


def split_index_lists(dataset, fractions, seed):
    return [list(s.indices) for s in split_right(dataset, fractions, seed)]


def test_split_dataset_right():
    assert_passes(split_right, "split_dataset")


@pytest.mark.parametrize("wrong, fragments", [
    (split_global_seed, ("global random state",)),
    (split_floor, ("leave out",)),
    (split_python_random, ("indices differ",)),
    (split_index_lists, ("expected a torch.utils.data.subset",)),
])
def test_split_dataset_wrong(wrong, fragments):
    assert_rejects(wrong, "split_dataset", *fragments)


# --- channel_mean_std --------------------------------------------------------------------------------------
def stats_welford(loader):
    """Chan et al.'s parallel update, batch by batch, in float64."""
    n, mean, m2 = 0, None, None
    for images, _ in loader:
        x = images.double().transpose(0, 1).flatten(1)  # (C, pixels)
        k = x.shape[1]
        b_mean, b_m2 = x.mean(1), ((x - x.mean(1, keepdim=True)) ** 2).sum(1)
        if mean is None:
            n, mean, m2 = k, b_mean, b_m2
            continue
        delta = b_mean - mean
        mean = mean + delta * k / (n + k)
        m2 = m2 + b_m2 + delta ** 2 * n * k / (n + k)
        n += k
    return mean.float(), (m2 / n).sqrt().float()


def stats_batch_means(loader):
    means, sq = [], []
    for images, _ in loader:
        x = images.double()
        means.append(x.mean((0, 2, 3)))
        sq.append((x ** 2).mean((0, 2, 3)))
    mean, m2 = torch.stack(means).mean(0), torch.stack(sq).mean(0)
    return mean.float(), (m2 - mean ** 2).sqrt().float()


def _sums(loader, dtype):
    n, s, s2 = 0, 0, 0
    for images, _ in loader:
        x = images.to(dtype)
        s, s2 = s + x.sum((0, 2, 3)), s2 + (x ** 2).sum((0, 2, 3))
        n += x.numel() // x.shape[1]
    return n, s, s2


def stats_unbiased(loader):
    n, s, s2 = _sums(loader, torch.float64)
    mean = s / n
    return mean.float(), ((s2 - n * mean ** 2) / (n - 1)).sqrt().float()


def stats_float32(loader):
    n, s, s2 = _sums(loader, torch.float32)
    mean = s / n
    return mean, (s2 / n - mean ** 2).clamp(min=0).sqrt()


def stats_two_passes(loader):
    n, s, _ = _sums(loader, torch.float64)
    mean = s / n
    sq = sum(((images.double() - mean[:, None, None]) ** 2).sum((0, 2, 3)) for images, _ in loader)
    return mean.float(), (sq / n).sqrt().float()


def stats_float64_out(loader):
    n, s, s2 = _sums(loader, torch.float64)
    mean = s / n
    return mean, (s2 / n - mean ** 2).sqrt()


def test_channel_mean_std_right():
    assert_passes(stats_welford, "channel_mean_std")


@pytest.mark.parametrize("wrong, fragments", [
    (stats_batch_means, ("batch means",)),
    (stats_unbiased, ("n - 1",)),
    (stats_float32, ("float64",)),
    (stats_two_passes, ("2 times",)),
    (stats_float64_out, ("expected dtype torch.float32",)),
])
def test_channel_mean_std_wrong(wrong, fragments):
    assert_rejects(wrong, "channel_mean_std", *fragments)


# --- ShardedRange ------------------------------------------------------------------------------------------
class StridedRange(IterableDataset):
    def __init__(self, start, end):
        self.start, self.end = start, end

    def __iter__(self):
        info = get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        for v in range(self.start + k, self.end, n):
            yield v


class UnshardedRange(StridedRange):
    def __iter__(self):
        return iter(range(self.start, self.end))


class FloorChunks(StridedRange):
    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.start, self.end))
        per = (self.end - self.start) // info.num_workers
        lo = self.start + info.id * per
        return iter(range(lo, lo + per))


class CeilChunksUnclamped(StridedRange):
    def __iter__(self):
        info = get_worker_info()
        if info is None:
            return iter(range(self.start, self.end))
        per = math.ceil((self.end - self.start) / info.num_workers)
        lo = self.start + info.id * per
        return iter(range(lo, lo + per))  # the last chunk runs past end


class NoMainProcessCase(StridedRange):
    def __iter__(self):
        info = get_worker_info()
        return iter(range(self.start + info.id, self.end, info.num_workers))


class EndInclusive(StridedRange):
    def __iter__(self):
        return iter(range(self.start, self.end + 1))


class MapStyleRange(Dataset):
    def __init__(self, start, end):
        self.start, self.end = start, end

    def __len__(self):
        return self.end - self.start

    def __getitem__(self, i):
        return self.start + i


def test_sharded_range_right():
    assert_passes(StridedRange, "ShardedRange")


@pytest.mark.parametrize("wrong, fragments", [
    (UnshardedRange, ("every worker iterates",)),
    (FloorChunks, ("remainder",)),
    (CeilChunksUnclamped, ("outside [start, end)", "clamp the last chunk: min(lo + per, end)")),
    (NoMainProcessCase, ("returns none",)),
    (EndInclusive, ("end is exclusive",)),
    (MapStyleRange, ("iterabledataset",)),
])
def test_sharded_range_wrong(wrong, fragments):
    assert_rejects(wrong, "ShardedRange", *fragments)


# --- make_balanced_sampler ---------------------------------------------------------------------------------
def balanced_right(labels, num_samples=None, generator=None):
    labels = [int(y) for y in labels]
    freq = {y: labels.count(y) for y in set(labels)}
    weights = [len(labels) / freq[y] for y in labels]  # a constant factor is fine
    return WeightedRandomSampler(weights, num_samples or len(labels), replacement=True, generator=generator)


def balanced_class_weights(labels, num_samples=None, generator=None):
    counts = torch.bincount(torch.as_tensor(labels))
    return WeightedRandomSampler(1.0 / counts.double(), num_samples or len(labels), generator=generator)


def balanced_by_count(labels, num_samples=None, generator=None):
    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels)
    return WeightedRandomSampler(counts[labels].double(), num_samples or len(labels), generator=generator)


def balanced_no_replacement(labels, num_samples=None, generator=None):
    sampler = balanced_right(labels, None, generator)
    return WeightedRandomSampler(sampler.weights, num_samples or len(labels), replacement=False,
                                 generator=generator)


def balanced_ignores_generator(labels, num_samples=None, generator=None):
    return balanced_right(labels, num_samples, None)


def balanced_num_classes(labels, num_samples=None, generator=None):
    sampler = balanced_right(labels, None, generator)
    return WeightedRandomSampler(sampler.weights, num_samples or len(set(int(y) for y in labels)),
                                 generator=generator)


def test_balanced_sampler_right():
    assert_passes(balanced_right, "make_balanced_sampler")


@pytest.mark.parametrize("wrong, fragments", [
    (balanced_class_weights, ("per-class",)),
    (balanced_class_weights, ("classes 0, 4, 9", "weights contain inf", "a class with count 0?",
                              "1 / count of its own label")),
    (balanced_by_count, ("grow with the class count",)),
    (balanced_no_replacement, ("replacement=true",)),
    (balanced_ignores_generator, ("generator=generator",)),
    (balanced_num_classes, ("defaults to len(labels)",)),
])
def test_balanced_sampler_wrong(wrong, fragments):
    assert_rejects(wrong, "make_balanced_sampler", *fragments)


# --- BucketBatchSampler ----------------------------------------------------------------------------------
class BucketsRight(Sampler):
    """An independent correct answer: a stable argsort, tensor split, a permutation per iter()."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        order = torch.argsort(torch.tensor(lengths, dtype=torch.int64), stable=True)
        self.batches = [b.tolist() for b in order.split(batch_size)] if len(lengths) else []
        if drop_last and self.batches and len(self.batches[-1]) < batch_size:
            self.batches.pop()
        self.generator = generator

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for k in torch.randperm(len(self.batches), generator=self.generator):
            yield self.batches[k]


class BucketsBatchSampler(Sampler):
    """Also correct: BatchSampler cuts the sorted order into lists of ints."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        if batch_size < 1:
            raise ValueError("batch_size < 1")
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        self.batches = list(BatchSampler(order, batch_size, drop_last))
        self.generator = generator

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        perm = torch.randperm(len(self), generator=self.generator).tolist()
        return iter([self.batches[i] for i in perm])


class BucketsTensorBatches(BucketsBatchSampler):
    """Batches as int64 tensors: a DataLoader over a tensor-indexable dataset copes, a dict-backed one does not."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator)
        self.batches = [torch.tensor(b) for b in self.batches]


class BucketsTensorIndices(BucketsRight):
    """Lists, but of 0-d tensors (iterating over a tensor without .tolist())."""

    def __iter__(self):
        for batch in super().__iter__():
            yield list(torch.tensor(batch))


class BucketsNegativeAccepted(BucketsRight):
    """Refuses only batch_size == 0: a negative one gets through the constructor."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        if batch_size == 0:
            raise ValueError("batch_size must not be 0")
        self.lengths, self.batch_size, self.drop_last, self.generator = lengths, batch_size, drop_last, generator
        if batch_size > 0:
            super().__init__(lengths, batch_size, drop_last, generator)

    def __len__(self):
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class BucketsDropsFullBatch(BucketsRight):
    """drop_last drops the last batch whether it is short or full."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, False, generator)
        if drop_last:
            self.batches = self.batches[:-1]


class BucketsDescending(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__([-n for n in lengths], batch_size, drop_last, generator)


class BucketsUnstable(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator)
        order = torch.argsort(torch.tensor(lengths))  # not stable: ties in any order
        self.batches = [b.tolist() for b in order.split(batch_size)][:len(self.batches)]


class BucketsShuffledIndices(BucketsRight):
    def __iter__(self):
        flat = [i for b in self.batches for i in b]
        perm = torch.randperm(len(flat), generator=self.generator).tolist()
        shuffled = [flat[i] for i in perm]
        sizes = [len(b) for b in self.batches]
        start = 0
        for size in sizes:
            yield shuffled[start:start + size]
            start += size


class BucketsLenIgnoresDropLast(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator)
        self.size = math.ceil(len(lengths) / batch_size)

    def __len__(self):
        return self.size


class BucketsOrderInInit(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator)
        self.order = torch.randperm(len(self.batches), generator=generator).tolist()

    def __iter__(self):
        return iter([self.batches[i] for i in self.order])


class BucketsIgnoresGenerator(BucketsRight):
    def __iter__(self):
        for k in torch.randperm(len(self.batches)).tolist():
            yield self.batches[k]


class BucketsInversePermutation(BucketsRight):
    def __iter__(self):
        out = [None] * len(self.batches)
        for batch, k in zip(self.batches, torch.randperm(len(self.batches), generator=self.generator).tolist()):
            out[k] = batch
        return iter(out)


class BucketsFreshGenerator(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator or torch.Generator())


class BucketsPythonShuffle(BucketsRight):
    def __iter__(self):
        batches = list(self.batches)
        random.shuffle(batches)
        return iter(batches)


class BucketsKeepsShortBatch(BucketsRight):
    """len() follows drop_last; the batches do not."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, False, generator)
        self.size = len(lengths) // batch_size if drop_last else len(self.batches)

    def __len__(self):
        return self.size


class BucketsNoValueError(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, max(batch_size, 1), drop_last, generator)


class BucketsYieldIndices(BucketsRight):
    def __iter__(self):
        for batch in super().__iter__():
            yield from batch


class BucketsOneIterator(BucketsRight):
    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        super().__init__(lengths, batch_size, drop_last, generator)
        self.it = super().__iter__()

    def __iter__(self):
        return self.it


@pytest.mark.parametrize("right", [BucketsRight, BucketsBatchSampler])
def test_bucket_batch_sampler_right(right):
    assert_passes(right, "BucketBatchSampler")


@pytest.mark.parametrize("wrong, fragments", [
    (BucketsDescending, ("descending length",)),
    (BucketsUnstable, ("stable",)),
    (BucketsShuffledIndices, ("mix short and long", "never the indices")),
    (BucketsLenIgnoresDropLast, ("drop_last=true drops", "n // batch_size")),
    (BucketsOrderInInit, ("same order", "not once in __init__")),
    (BucketsIgnoresGenerator, ("global random generator", "generator=self.generator")),
    (BucketsInversePermutation, ("batches[perm[k]]",)),
    (BucketsFreshGenerator, ("new torch.generator()",)),
    (BucketsPythonShuffle, ("torch.randperm(num_batches, generator=generator)",)),
    (BucketsKeepsShortBatch, ("although drop_last=true",)),
    (BucketsNoValueError, ("should raise valueerror",)),
    (BucketsYieldIndices, ("a batch is an int", "list of int indices")),
    (BucketsOneIterator, ("yielded nothing", "start over")),
    (BucketsTensorBatches, ("a batch is a tensor", "yield lists of python ints (order.tolist()), not tensors")),
    (BucketsTensorIndices, ("holding a tensor", "yield lists of python ints (order.tolist())")),
    (BucketsNegativeAccepted, ("batch_size=-2", "in the constructor", "should raise valueerror")),
    (BucketsDropsFullBatch, ("full last batch was dropped", "drop_last drops only a short last batch",
                             "nothing falls off")),
])
def test_bucket_batch_sampler_wrong(wrong, fragments):
    assert_rejects(wrong, "BucketBatchSampler", *fragments)


class BucketsTable(BucketsRight):
    """Right only for the numbers of lengths the public round uses (a stand-in for tabulated answers)."""

    def __init__(self, lengths, batch_size, drop_last=False, generator=None):
        if len(lengths) not in {3, 5, 6, 10, 15, 17, 20, 23, 37}:
            raise KeyError(len(lengths))
        super().__init__(lengths, batch_size, drop_last, generator)


@pytest.mark.parametrize("seed", ["1", "918273645"])
def test_bucket_batch_sampler_hidden_round_draws_new_sizes(seed, monkeypatch):
    assert_passes(BucketsTable, "BucketBatchSampler")
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
    table = evaluate(BucketsTable, name="BucketBatchSampler")
    assert table.status == "failed" and all(c.hidden for c in table.cases if not c.passed), table.text()
    right = evaluate(BucketsRight, name="BucketBatchSampler")
    assert right.passed and any(c.hidden for c in right.cases), right.text()


# --- stubs -------------------------------------------------------------------------------------------------
def stub_function(*args, **kwargs):
    raise NotImplementedError()


class StubClass(IterableDataset):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError()

    def __iter__(self):
        raise NotImplementedError()


@pytest.mark.parametrize("name, stub", [
    ("CSVImageDataset", StubClass), ("pad_collate", stub_function), ("split_dataset", stub_function),
    ("channel_mean_std", stub_function), ("ShardedRange", StubClass), ("make_balanced_sampler", stub_function),
    ("BucketBatchSampler", StubClass),
])
def test_stub_is_not_attempted(name, stub):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()
