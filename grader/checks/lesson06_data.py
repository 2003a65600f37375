"""Checks for 06_data: datasets, collate functions, splits, streaming statistics, worker sharding, samplers.

Every learner object is exercised by a driver below with a real DataLoader (and, for CSVImageDataset, real PNG
files written into a temporary folder); drivers return plain data only.
"""
from __future__ import annotations

import csv
import math
import re
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, IterableDataset, Subset, TensorDataset, WeightedRandomSampler, \
    random_split

from grader.compare import Mismatch, expect_tensor, expect_value, known_mistake
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, untraced
from grader.tracing import MixedDevices


def _says_why(message: str) -> bool:
    """The message already names a mistake or an action (a dash, a "should", or a "→ " diagnosis line)."""
    first, *rest = message.splitlines() or [""]
    return " — " in first or " should " in f" {first}" or any(line.startswith("→ ") for line in rest)


def _explained(e: Mismatch, advice: str) -> Mismatch:
    """`e` with the check's diagnosis on a "→ " line, unless its message already says why."""
    return e if _says_why(e.message) else Mismatch(f"{e.message}\n→ {advice}", e.detail)


# ----------------------------------------------------------------------------------------------------------
# pad_collate
# ----------------------------------------------------------------------------------------------------------


def _pad_by_hand(batch, pad_value=0):
    """Oracle: a loop that copies each sequence into a tensor filled with pad_value."""
    seqs = [s for s, _ in batch]
    longest = max(s.shape[0] for s in seqs)
    padded = torch.full((len(seqs), longest, *seqs[0].shape[1:]), pad_value, dtype=seqs[0].dtype,
                        device=seqs[0].device)
    for i, s in enumerate(seqs):
        padded[i, :s.shape[0]] = s
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.int64)
    labels = torch.tensor([y for _, y in batch], dtype=torch.int64)
    return padded, lengths, labels


def pad_collate_run(fn, batch, kwargs):
    """Driver: fn(batch, **kwargs), and whether it modified a sequence of the batch."""
    with untraced():
        before = [s.clone() for s, _ in batch]
    out = fn(batch, **kwargs)
    with untraced():
        mutated = any(s.shape != b.shape or not torch.equal(s, b) for (s, _), b in zip(batch, before))
    return {"out": out, "mutated": mutated}


def collate_in_loader(fn, sequences, labels, batch_size):
    """Driver: a real DataLoader over (sequence, label) pairs with collate_fn=fn; every batch it yields."""
    data = list(zip(sequences, labels))
    return [tuple(b) for b in DataLoader(data, batch_size=batch_size, collate_fn=fn)]


def _expect_collated(got, expected, device, batch) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise Mismatch("should return a tuple (padded, lengths, labels), got "
                       + (f"{type(got).__name__} of length {len(got)}" if isinstance(got, (tuple, list))
                          else type(got).__name__))
    padded, lengths, labels = got
    exp_p, exp_len, exp_lab = expected
    if isinstance(padded, torch.Tensor) and padded.ndim >= 2 and padded.shape != exp_p.shape \
            and padded.shape == (exp_p.shape[1], exp_p.shape[0], *exp_p.shape[2:]):
        raise Mismatch(f"padded has shape {tuple(padded.shape)}, expected (B, L_max, ...) = {tuple(exp_p.shape)} "
                       "— pad_sequence puts time first unless batch_first=True")
    for name, g, e in (("lengths", lengths, exp_len), ("labels", labels, exp_lab)):
        if isinstance(g, (list, tuple)):
            raise Mismatch(f"{name} should be an int64 tensor, got a Python {type(g).__name__} — "
                           f"torch.tensor({name}, dtype=torch.int64)")
        if isinstance(g, torch.Tensor) and g.dtype != torch.int64:
            raise Mismatch(f"{name} should be int64, got {g.dtype} — torch.tensor(..., dtype=torch.int64) "
                           "(cross-entropy wants int64 class indices; pack_padded_sequence int64 lengths)")
    if isinstance(lengths, torch.Tensor) and lengths.shape == exp_len.shape and \
            not torch.equal(lengths.cpu(), exp_len) and \
            torch.equal(lengths.cpu().sort(descending=True).values, exp_len.sort(descending=True).values):
        raise Mismatch("the batch came back in another order (sorted by length?) — keep the input order: "
                       "labels and lengths must line up with the samples as given")
    if isinstance(padded, torch.Tensor) and padded.ndim >= 2 and padded.shape == exp_p.shape \
            and padded.dtype == exp_p.dtype and not torch.equal(padded.cpu(), exp_p) \
            and torch.equal(padded.cpu(), exp_p.transpose(0, 1)):
        raise Mismatch(f"padded holds (L_max, B, ...), the sequences in its columns — here B = L_max = "
                       f"{exp_p.shape[0]} hides it in the shape: pad_sequence puts time first unless "
                       "batch_first=True")
    if isinstance(padded, torch.Tensor) and padded.dtype != exp_p.dtype:
        why = "; torch.full with a Python float makes float32" if padded.dtype == torch.float32 else ""
        raise Mismatch(f"padded is {padded.dtype}, the sequences are {exp_p.dtype} — keep the sequences' dtype "
                       f"(dtype=seqs[0].dtype, or seqs[0].new_full(...)){why}")
    try:
        expect_tensor(padded, exp_p, device=device, what="padded")
    except Mismatch as e:
        raise _explained(e, "row i of padded should be sequence i of the batch, then pad_value up to L_max") \
            from None
    for name, g, e, advice in (
            ("lengths", lengths, exp_len, "lengths[i] should be sequence i's length, s.shape[0], in input order"),
            ("labels", labels, exp_lab, "labels[i] should be the label of sample i, in the input order")):
        try:
            expect_tensor(g.cpu() if isinstance(g, torch.Tensor) else g, e, what=name)
        except Mismatch as err:
            raise _explained(err, advice) from None


def _padding_advice(got, exp_p, pad_value, batch) -> str | None:
    """When only the padded positions are wrong: pad_value ignored?"""
    mask = torch.zeros(exp_p.shape[:2], dtype=torch.bool)
    for i, (s, _) in enumerate(batch):
        mask[i, :s.shape[0]] = True
    g = got.cpu()
    if torch.equal(g[mask], exp_p.cpu()[mask]) and not torch.equal(g[~mask], exp_p.cpu()[~mask]):
        return f"the real values are right but the padding is not {pad_value!r} — fill with pad_value " \
               "(pad_sequence(..., padding_value=pad_value))"
    return None


@exercise("06_data", points=2, difficulty=2, minutes=15, hints=[
    "Split the batch first: seqs = [s for s, _ in batch], labels = [y for _, y in batch]. The lengths are "
    "s.shape[0] (or len(s)).",
    "Make the padded tensor with torch.full((B, L_max, *seqs[0].shape[1:]), pad_value, dtype=..., "
    "device=...) and copy each sequence in: padded[i, :len(s)] = s — or use "
    "torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_value).",
    "Return torch.tensor(lengths, dtype=torch.int64) and torch.tensor(labels, dtype=torch.int64), in the "
    "input order: no sorting.",
])
def pad_collate(t, fn):
    d = t.integer(2, 5)
    cases = [
        ("4 float64 sequences of lengths 3, 7, 1, 5 (1-D), default pad_value", [3, 7, 1, 5], (), torch.float64, {}),
        (f"3 sequences (L_i, {d}, 2), pad_value=-1.5", [4, 2, 6], (d, 2), torch.float32, {"pad_value": -1.5}),
        ("token ids (int64), pad_value=-1, one empty sequence", [5, 0, 2, 5, 3], (), torch.int64,
         {"pad_value": -1}),
        ("a batch of one (B=1), pad_value=9", [4], (3,), torch.float64, {"pad_value": 9}),
    ]
    for name, lengths, trailing, dtype, kwargs in cases:
        if dtype == torch.int64:
            seqs = [t.randint(0, 50, (n, *trailing)) for n in lengths]
        else:
            seqs = [t.randn(n, *trailing, dtype=dtype) for n in lengths]
        batch = [(s, t.integer(0, 10)) for s in seqs]
        expected = _pad_by_hand(batch, **kwargs)
        for device in t.devices:
            with t.case(f"{device}: {name}"):
                dev_batch = [(s.to(device), y) for s, y in batch]
                run = t.call(pad_collate_run, fn, dev_batch, kwargs)
                if run["mutated"]:
                    raise Mismatch("your code modified a sequence of the batch in place — build a new tensor")
                try:
                    _expect_collated(run["out"], expected, device, batch)
                except Mismatch as e:
                    got = run["out"][0] if isinstance(run["out"], (tuple, list)) and run["out"] else None
                    if isinstance(got, torch.Tensor) and got.shape == expected[0].shape \
                            and got.dtype == expected[0].dtype:
                        advice = _padding_advice(got, expected[0], kwargs.get("pad_value", 0), batch)
                        if advice:
                            raise Mismatch(f"{e.message}\n→ {advice}", e.detail) from None
                    raise
        if "cuda" not in t.devices:
            with t.case(f"device check: {name}"):
                meta_batch = [(s.to("meta"), y) for s, y in batch]
                try:
                    out = t.call(fn, meta_batch, watch_devices=True, **kwargs)
                except MixedDevices as e:
                    raise Mismatch(f"`{e.name}` mixes a CPU tensor with the sequences' device: on a GPU this fails "
                                   "— create padded with device=seqs[0].device") from None
                except (LearnerError, Mismatch) as e:
                    raise Inconclusive(f"could not run on the meta device: {e}") from None
                padded = out[0] if isinstance(out, (tuple, list)) and out else out
                if isinstance(padded, torch.Tensor) and padded.device.type != "meta":
                    raise Mismatch("padded stays on the CPU when the sequences are on another device (a GPU) — "
                                   "create it with device=seqs[0].device")
    with t.case("as collate_fn of a DataLoader (batch_size=3, 7 samples: batches of 3, 3, 1)"):
        seqs = [t.randn(n, 2, dtype=torch.float32) for n in (2, 5, 1, 3, 3, 6, 4)]
        labels = [t.integer(0, 5) for _ in seqs]
        got = t.call(collate_in_loader, fn, seqs, labels, 3)
        if len(got) != 3:
            raise Mismatch(f"the DataLoader should yield 3 batches, got {len(got)} — return one "
                           "(padded, lengths, labels) tuple per call")
        for k, start in enumerate((0, 3, 6)):
            batch = list(zip(seqs[start:start + 3], labels[start:start + 3]))
            _expect_collated(got[k], _pad_by_hand(batch), "cpu", batch)


# ----------------------------------------------------------------------------------------------------------
# BucketBatchSampler
# ----------------------------------------------------------------------------------------------------------


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiouAEIOU" else f"a {noun}"


_SINGLE = ("each batch should be a list of int indices, which the DataLoader hands one by one to dataset[index] "
           "(a batch sampler yields lists, a sampler single indices)")
_NOT_LIST = ("yield lists of Python ints (order.tolist()), not tensors — a batch sampler yields lists of indices, "
             "as torch.utils.data.BatchSampler does, and a dataset backed by a dict or a list of files cannot be "
             "indexed with a tensor")


def _as_indices(batch) -> tuple[list[int] | None, str]:
    """A batch as a list of Python ints, as torch.utils.data.BatchSampler yields it (each index goes to
    dataset[index]); or None and a message that says what it was instead and what to do."""
    if isinstance(batch, (str, bytes)) or not hasattr(batch, "__iter__"):
        return None, f"a batch is {_a(type(batch).__name__)} ({batch!r}) — {_SINGLE}"
    if type(batch) is not list:
        shown = repr(batch.tolist() if isinstance(batch, torch.Tensor) else batch)[:60]
        return None, f"a batch is {_a(type(batch).__name__)} ({shown}), not a list: {_NOT_LIST}"
    for i in batch:
        if type(i) is not int:
            return None, f"a batch is a list holding {_a(type(i).__name__)} ({i!r}), not Python ints: {_NOT_LIST}"
    return list(batch), ""


def bucket_run(cls, lengths, batch_size, drop_last, seed, global_seed, epochs):
    """Driver: build cls(lengths, batch_size, drop_last[, generator]) after seeding the global RNG with
    global_seed; its len() and the batches of `epochs` full passes, as lists of ints. seed=None passes no
    generator (the sampler then draws from the global RNG)."""
    with untraced():
        torch.manual_seed(global_seed)  # the runner restores the learner's global RNG state afterwards
        kwargs = {} if seed is None else {"generator": torch.Generator().manual_seed(seed)}
    sampler = cls(lengths, batch_size, drop_last, **kwargs)
    size = len(sampler)
    passes, bad = [], ""
    for _ in range(epochs):
        batches = []
        for batch in iter(sampler):
            indices, bad = _as_indices(batch)
            if indices is None:
                return {"len": size, "epochs": passes, "bad": bad}
            batches.append(indices)
        passes.append(batches)
    return {"len": size, "epochs": passes, "bad": ""}


def bucket_build(cls, lengths, batch_size) -> None:
    """Driver: only build cls(lengths, batch_size) (the constructor itself should refuse a bad batch_size)."""
    cls(lengths, batch_size)


def _pad_labelled(batch):
    """The check's own collate_fn: (sequence, label) pairs -> (padded (B, L_max), labels (B,))."""
    return pad_sequence([s for s, _ in batch], batch_first=True), torch.tensor([y for _, y in batch])


def bucket_loader_run(cls, lengths, batch_size, seed):
    """Driver: DataLoader(batch_sampler=cls(...)) over sequences whose values are their own index; for one epoch,
    each batch's labels (the indices the loader fetched) and padded width; and len(loader)."""
    data = [(torch.full((n,), float(i)), i) for i, n in enumerate(lengths)]
    sampler = cls(lengths, batch_size, False, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=_pad_labelled)
    batches = [{"labels": [int(y) for y in labels], "width": int(padded.shape[1])} for padded, labels in loader]
    return {"len": len(loader), "batches": batches}


def _stable_order(lengths) -> list[int]:
    return sorted(range(len(lengths)), key=lambda i: lengths[i])  # sorted() is stable: ties keep index order


def _cut(order: list[int], batch_size: int, drop_last: bool) -> list[list[int]]:
    batches = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    return batches[:-1] if drop_last and batches and len(batches[-1]) < batch_size else batches


def _perms(n: int, seed: int, epochs: int) -> list[list[int]]:
    """Oracle: torch.randperm(n, generator) drawn once per epoch, in sequence, from one generator."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g).tolist() for _ in range(epochs)]


def _num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def _expect_num_batches(got, n: int, batch_size: int, drop_last: bool, what: str) -> None:
    exp = _num_batches(n, batch_size, drop_last)
    if got == exp:
        return
    if type(got) is not int:
        raise Mismatch(f"{what} should be the int {exp}, got {type(got).__name__}")
    if drop_last and n % batch_size == 0 and got == exp - 1:
        raise Mismatch(f"{what} is {got}: a full last batch was dropped — drop_last drops only a short last "
                       f"batch; when len % batch_size == 0 nothing falls off ({n} % {batch_size} == 0, so {exp})")
    if drop_last and got == math.ceil(n / batch_size):
        raise Mismatch(f"{what} is {got}, counting the short last batch that drop_last=True drops — it should be "
                       f"n // batch_size = {exp}")
    if not drop_last and got == n // batch_size:
        raise Mismatch(f"{what} is {got}, leaving out the short last batch — without drop_last it counts: "
                       f"ceil(n / batch_size) = {exp}")
    if got == n and n != exp:
        raise Mismatch(f"{what} is {got}, the number of samples — it should be the number of batches, {exp}")
    raise Mismatch(f"{what} should be {exp}, the number of batches of {n} indices cut into batch_size "
                   f"{batch_size}{' with drop_last' if drop_last else ''}, got {got}")


def _batches_advice(got: list[list[int]], lengths, batch_size: int, drop_last: bool) -> str:
    """What is wrong with the content of one pass (its batches taken in any order)."""
    n, exp = len(lengths), _cut(_stable_order(lengths), batch_size, drop_last)

    def length_rows(batches):  # each batch as the lengths of its indices, in the batch's order
        return sorted(tuple(lengths[i] for i in b) for b in batches)

    flat = [i for b in got for i in b]
    if any(not 0 <= i < n for i in flat):
        return f"indices outside range({n}) came out — a batch holds positions in lengths, 0 .. len(lengths) - 1"
    descending = _cut(sorted(range(n), key=lambda i: -lengths[i]), batch_size, drop_last)
    if length_rows(got) == length_rows(descending) != length_rows(exp):
        return "the indices are sorted by descending length — sort them ascending (shortest first)"
    if len(got) != len(exp):
        if drop_last and n % batch_size == 0 and len(got) == len(exp) - 1:
            return "a full last batch was dropped — drop_last drops only a short last batch; when len % " \
                   "batch_size == 0 nothing falls off"
        if drop_last and len(got) == math.ceil(n / batch_size):
            return f"the short last batch came out although drop_last=True — drop a last batch shorter than " \
                   f"batch_size ({len(got)} batches instead of {len(exp)})"
        if not drop_last and len(got) == n // batch_size:
            return "the short last batch is missing although drop_last=False — keep it"
        return f"a pass should yield {len(exp)} batches, got {len(got)} — cut the sorted indices into batches of " \
               "batch_size"
    if len(flat) != len(set(flat)):
        dup = sorted({i for i in flat if flat.count(i) > 1})
        return f"indices {dup[:5]} came more than once in one pass — each index should appear in exactly one batch"
    if sorted(flat) != sorted(i for b in exp for i in b):
        return "the batches hold other indices than the stable sort's batches — with drop_last, the indices that " \
               "fall off are those of the short last batch of the sorted order (the longest sequences)"
    sizes = sorted(len(b) for b in got)
    if sizes != sorted(len(b) for b in exp):
        return f"the batch sizes are {sizes}, expected {sorted(len(b) for b in exp)} — every batch has batch_size " \
               "indices except the last one of the sorted order"
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in got)
    if any(hi > nxt_lo for (_, hi), (nxt_lo, _) in zip(spans, spans[1:])):
        return "the batches mix short and long sequences — sort the indices by length first, cut them into " \
               "consecutive batches, and shuffle only the order of the batches, never the indices"
    if length_rows(got) == length_rows(exp):
        return "sequences of equal length are not in index order — the sort must be stable (sorted(..., key=...) " \
               "or torch.argsort(..., stable=True)), so that ties keep their index order"
    if {tuple(sorted(b)) for b in got} == {tuple(sorted(b)) for b in exp}:
        return "each batch holds the right indices, but not in the sorted order — keep each batch the consecutive " \
               "slice of the sorted indices, ascending length"
    return "the batches should be the indices sorted stably by ascending length, cut into consecutive batches " \
           "of batch_size"


def _order_advice(orders: list[list[int]], perms: list[list[int]], nb: int, seed, global_seed: int) -> str:
    """The batches are right; their order per pass (orders[e][k]: which sorted batch came k-th) is not."""
    if nb > 1 and orders and all(o == list(range(nb)) for o in orders):
        return "the batches come in sorted order — shuffle their order in each iter(): yield batches[i] for i in " \
               "torch.randperm(num_batches, generator=generator)"
    if len(orders) > 1 and all(o == orders[0] for o in orders) and any(p != perms[0] for p in perms):
        return "every pass yields the batches in the same order — draw the permutation in __iter__ (once per " \
               "pass), not once in __init__"
    inverse = []
    for p in perms:
        inv = [0] * len(p)
        for k, i in enumerate(p):
            inv[i] = k
        inverse.append(inv)
    if orders == inverse and orders != perms:
        return "batch i was put at position perm[i] — yield batches[perm[k]] for k = 0, 1, ... (the inverse order)"
    if seed is not None and orders == _perms(nb, global_seed, len(orders)):
        return "the order comes from the global random generator — pass the sampler's generator: " \
               "torch.randperm(num_batches, generator=self.generator)"
    if seed is None and orders == _perms(nb, torch.Generator().initial_seed(), len(orders)):
        return "the order comes from a new torch.Generator(), the same in every run — with generator=None, " \
               "torch.randperm(num_batches, generator=None) draws from the global generator"
    if seed is not None and orders[0] == perms[0]:
        return "the first pass is right, a later one is not — draw exactly one torch.randperm per iter() from " \
               "the same generator, and nothing else from it"
    return "the batches should come in the order torch.randperm(num_batches, generator=generator) gives, one " \
           "permutation drawn per iter() (not random.shuffle, not a fresh generator)"


def _expect_passes(run, lengths, batch_size: int, drop_last: bool, seed, global_seed: int, epochs: int) -> None:
    n = len(lengths)
    _expect_num_batches(run["len"], n, batch_size, drop_last, "len(sampler)")
    if run["bad"]:
        raise Mismatch(run["bad"])
    batches = _cut(_stable_order(lengths), batch_size, drop_last)
    nb = len(batches)
    perms = _perms(nb, global_seed if seed is None else seed, epochs)
    expected = [[batches[i] for i in p] for p in perms]
    got = run["epochs"]
    if got == expected:
        return
    e = next((k for k, (g, x) in enumerate(zip(got, expected)) if g != x), 0)
    if e > 0 and not got[e] and nb:
        raise Mismatch(f"pass {e + 1} (a new iter()) yielded nothing — __iter__ should start over each time: write "
                       "it with yield, or return a new iterator")
    if sorted(map(tuple, got[e])) != sorted(map(tuple, batches)):
        raise Mismatch(f"pass {e + 1}: " + _batches_advice(got[e], lengths, batch_size, drop_last),
                       f"expected (in some order) {batches}, got {got[e]}")
    orders = []
    for g in got:
        if sorted(map(tuple, g)) != sorted(map(tuple, batches)):
            break
        orders.append([batches.index(b) for b in g])
    raise Mismatch(f"pass {e + 1} has the right batches in another order: "
                   + _order_advice(orders, perms[:len(orders)], nb, seed, global_seed),
                   f"expected the order {perms[e]}, got {orders[e] if e < len(orders) else '?'}")


@exercise("06_data", points=3, difficulty=2, minutes=25, hints=[
    "In __init__: check batch_size (raise ValueError if < 1); order = sorted(range(len(lengths)), key=lambda i: "
    "lengths[i]) is a stable sort; cut it into self.batches = [order[k:k + batch_size] for k in range(0, "
    "len(order), batch_size)], and drop the last one if drop_last and it is short.",
    "__len__ returns len(self.batches). __iter__ draws a new permutation every time it runs: "
    "for i in torch.randperm(len(self.batches), generator=self.generator).tolist(): yield self.batches[i]",
    "Draw nothing in __init__: the permutation belongs in __iter__, so that each epoch gets a new order; with "
    "generator=None, torch.randperm uses the global generator by itself.",
])
def BucketBatchSampler(t, cls):
    def lengths_of(n, top):
        return [t.integer(1, top) for _ in range(n)]

    n = t.unseen(37, 60, 120)
    cases = [  # name, lengths, batch_size, drop_last, epochs
        (f"{n} lengths in 1..6 (many ties), batch_size 5", lengths_of(n, 7), 5, False, 3),
        ("23 lengths, batch_size 4, drop_last=True (the 3 longest fall off)", lengths_of(t.unseen(23, 41, 80), 30),
         4, True, 2),
        ("20 lengths, batch_size 5, drop_last=True (nothing to drop)", lengths_of(20, 12), 5, True, 2),
        ("all 10 lengths equal: ties keep index order", [4] * t.unseen(10, 11, 30), 3, False, 2),
        ("batch_size 1: every index its own batch", lengths_of(t.unseen(6, 7, 20), 9), 1, False, 2),
        ("batch_size 8 larger than 5 lengths: one batch", lengths_of(5, 9), 8, False, 2),
        ("batch_size 8 larger than 5 lengths, drop_last=True: no batch at all", lengths_of(5, 9), 8, True, 1),
    ]
    for name, lengths, batch_size, drop_last, epochs in cases:
        seed, global_seed = t.integer(0, 10_000), t.integer(0, 10_000)
        with t.case(f"{name}, {epochs} passes with one generator seeded {seed}"):
            run = t.call(bucket_run, cls, lengths, batch_size, drop_last, seed, global_seed, epochs)
            _expect_passes(run, lengths, batch_size, drop_last, seed, global_seed, epochs)
    global_seed = t.integer(0, 10_000)
    with t.case(f"generator=None: draws from the global generator (seeded {global_seed}), 3 passes"):
        lengths = lengths_of(t.unseen(15, 16, 40), 10)
        run = t.call(bucket_run, cls, lengths, 4, False, None, global_seed, 3)
        _expect_passes(run, lengths, 4, False, None, global_seed, 3)
    with t.case("in a DataLoader(batch_sampler=...) with a padding collate_fn"):
        lengths, seed = lengths_of(t.unseen(17, 20, 50), 25), t.integer(0, 10_000)
        run = t.call(bucket_loader_run, cls, lengths, 4, seed)
        _expect_num_batches(run["len"], len(lengths), 4, False, "len(DataLoader)")
        batches = _cut(_stable_order(lengths), 4, False)
        expected = [batches[i] for i in _perms(len(batches), seed, 1)[0]]
        got = [b["labels"] for b in run["batches"]]
        if got != expected:
            raise Mismatch("the DataLoader fetched other batches than the sampler should give — yield lists of "
                           "indices, sorted by length and in torch.randperm order", f"expected {expected}, got {got}")
        widths = [b["width"] for b in run["batches"]]
        if widths != [max(lengths[i] for i in b) for b in expected]:
            raise Mismatch("the padded widths differ from the longest sequence of each batch — yield the indices "
                           "themselves, in sorted order", f"widths {widths}")
    for bad in (0, -2):
        with t.case(f"BucketBatchSampler([3, 1, 2], batch_size={bad}) raises ValueError in the constructor"):
            t.raises(ValueError, bucket_build, cls, [3, 1, 2], bad)


# ----------------------------------------------------------------------------------------------------------
# split_dataset
# ----------------------------------------------------------------------------------------------------------


def split_run(fn, n, fractions, seed):
    """Driver: split a TensorDataset of n items; describe each part, and say if the global RNG was touched."""
    with untraced():
        dataset = TensorDataset(torch.arange(n))
        state = torch.get_rng_state()
    with warnings.catch_warnings():  # an empty part is part of the test
        warnings.filterwarnings("ignore", message="Length of split at index")
        parts = fn(dataset, fractions, seed)
    with untraced():
        reseeded = not torch.equal(state, torch.get_rng_state())
    if not isinstance(parts, (list, tuple)):
        return {"kind": type(parts).__name__, "parts": None, "reseeded": reseeded}
    described = []
    for p in parts:
        ok = isinstance(p, Subset)
        described.append({"type": type(p).__name__, "subset": ok,
                          "same_dataset": ok and p.dataset is dataset,
                          "indices": [int(i) for i in p.indices] if ok else None})
    return {"kind": type(parts).__name__, "parts": described, "reseeded": reseeded}


@exercise("06_data", points=1, difficulty=1, minutes=10, hints=[
    "torch.utils.data.random_split accepts fractions that sum to 1 as well as lengths.",
    "Make the randomness explicit and local: generator = torch.Generator().manual_seed(seed).",
    "return random_split(dataset, fractions, generator=torch.Generator().manual_seed(seed)) — and do not call "
    "torch.manual_seed, which would reset everyone else's randomness too.",
])
def split_dataset(t, fn):
    cases = [(10, [0.8, 0.2]), (7, [0.5, 0.3, 0.2]), (23, [0.1, 0.2, 0.3, 0.4]), (1, [0.5, 0.5]),
             (100, [0.7, 0.15, 0.15])]
    for n, fractions in cases:
        seed = t.integer(0, 10_000)
        n = t.unseen(n, 101, 1000)  # hidden round: sizes no public case has
        with t.case(f"{n} items into {fractions}, seed {seed}"):
            got = t.call(split_run, fn, n, fractions, seed)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Length of split at index")
                expected = [list(s.indices) for s in
                            random_split(range(n), fractions, generator=torch.Generator().manual_seed(seed))]
            if got["parts"] is None:
                raise Mismatch(f"should return a list of Subset, got {got['kind']}")
            if got["reseeded"]:
                raise Mismatch("your function changed the global random state (torch.manual_seed?) — seed a "
                               "private torch.Generator().manual_seed(seed) instead and pass it as generator=")
            if len(got["parts"]) != len(expected):
                raise Mismatch(f"should return one part per fraction ({len(expected)}), got {len(got['parts'])}")
            for k, (part, exp) in enumerate(zip(got["parts"], expected)):
                if not part["subset"]:
                    raise Mismatch(f"part {k} is a {part['type']}, expected a torch.utils.data.Subset — return "
                                   "the parts random_split gives, not their indices or data")
                if not part["same_dataset"]:
                    raise Mismatch(f"part {k} is a Subset of another dataset — wrap the dataset you were given")
            sizes, exp_sizes = [len(p["indices"]) for p in got["parts"]], [len(e) for e in expected]
            if sum(sizes) < n:
                raise Mismatch(f"the parts have sizes {sizes}, which leave out {n - sum(sizes)} of the {n} items — "
                               "flooring n * fraction loses the remainder; random_split hands it out one by one")
            if sizes != exp_sizes:
                raise Mismatch(f"the parts have sizes {sizes}, expected {exp_sizes} — random_split floors "
                               "n * fraction and gives the remainder to the first parts, one item each")
            if [p["indices"] for p in got["parts"]] != expected:
                raise Mismatch("the sizes are right but the indices differ from random_split with "
                               "torch.Generator().manual_seed(seed) — a different shuffle (Python's random, "
                               "numpy, or the global generator)?",
                               f"expected {expected}, got {[p['indices'] for p in got['parts']]}")


# ----------------------------------------------------------------------------------------------------------
# channel_mean_std
# ----------------------------------------------------------------------------------------------------------


class _CountingLoader(DataLoader):
    """A DataLoader that counts how many times it is iterated."""

    passes = 0

    def __iter__(self):
        self.passes += 1
        return super().__iter__()


def mean_std_run(fn, images, labels, batch_size):
    """Driver: fn(loader) for a DataLoader over (images, labels); its result and how many passes it made."""
    loader = _CountingLoader(TensorDataset(images, labels), batch_size=batch_size)
    out = fn(loader)
    return {"out": tuple(out) if isinstance(out, (tuple, list)) else out, "passes": loader.passes}


def _mean_std_oracle(images):
    x = images.double().transpose(0, 1).reshape(images.shape[1], -1)  # (C, N*H*W)
    return x.mean(1).float(), x.std(1, correction=0).float()


def _mean_std_advice(mean, std, images, batch_size) -> str | None:
    x = images.double()
    batch_means = torch.stack([b.transpose(0, 1).reshape(x.shape[1], -1).mean(1) for b in x.split(batch_size)])
    if mean is not None and torch.allclose(mean.double(), batch_means.mean(0), rtol=1e-5, atol=1e-6) and \
            not torch.allclose(batch_means.mean(0), x.mean((0, 2, 3)), rtol=1e-5, atol=1e-6):
        return "the mean of the batch means weights the short last batch like a full one — sum the pixels and " \
               "count them, then divide once at the end"
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    if std is not None and torch.allclose(std.double(), flat.std(1, correction=1), rtol=1e-5, atol=1e-6):
        return "that is the sample std (divides by n - 1); the population std divides by n (correction=0)"
    per_image = x.std((2, 3), correction=0).mean(0)
    if std is not None and torch.allclose(std.double(), per_image, rtol=1e-4, atol=1e-6):
        return "that is the average of per-image stds; the std of all pixels together also counts how " \
               "image means differ — accumulate sum(x) and sum(x**2) over everything"
    return None


@exercise("06_data", points=2, difficulty=2, minutes=20, hints=[
    "Keep three running totals per channel while you loop over the loader once: the pixel count, the sum of "
    "x and the sum of x**2 (sum over dims (0, 2, 3) gives a (C,) tensor).",
    "Accumulate in float64 (x = images.double()): with float32, sum(x**2) of large values loses the digits "
    "that the variance lives in.",
    "At the end: mean = s / n, var = s2 / n - mean**2, std = var.clamp(min=0).sqrt(); return "
    "(mean.float(), std.float()).",
])
def channel_mean_std(t, fn):
    cases = [
        ("10 RGB images (3, 5, 4) in [0, 1), batch_size 4 (last batch 2)", (10, 3, 5, 4), 4, 0.0, 1.0),
        ("7 one-channel images (1, 3, 6), batch_size 3 (last batch 1)", (7, 1, 3, 6), 3, 0.5, 2.0),
        ("24 images (2, 16, 16) around 4000, batch_size 10 — float32 sums lose precision", (24, 2, 16, 16), 10,
         4000.0, 1.0),
        ("5 images (4, 2, 3) in one batch", (5, 4, 2, 3), 5, -3.0, 10.0),
    ]
    for name, shape, batch_size, offset, scale in cases:
        images = (offset + scale * t.rand(*shape)).float()  # (N, C, H, W)
        images[:, 0] += 2.0 * scale  # channels differ
        labels = t.randint(0, 10, (shape[0],))
        exp_mean, exp_std = _mean_std_oracle(images)
        with t.case(name):
            run = t.call(mean_std_run, fn, images, labels, batch_size)
            out = run["out"]
            if not isinstance(out, tuple) or len(out) != 2:
                raise Mismatch(f"should return a tuple (mean, std), got {type(out).__name__}")
            mean, std = out
            if run["passes"] > 1:
                raise Mismatch(f"your code iterated over the loader {run['passes']} times — compute both in one "
                               "streaming pass (running sums of x and x**2)")
            for what, got, exp in (("mean", mean, exp_mean), ("std", std, exp_std)):
                if isinstance(got, torch.Tensor) and got.shape == exp.shape and got.dtype == torch.float64:
                    raise Mismatch(f"{what}: expected dtype torch.float32, got torch.float64 — accumulate in "
                                   f"float64, then return {what}.float()")
                try:
                    expect_tensor(got, exp, atol=1e-4 * scale, rtol=1e-5, what=what)
                except Mismatch as e:
                    with untraced():
                        advice = _mean_std_advice(mean if isinstance(mean, torch.Tensor) else None,
                                                  std if isinstance(std, torch.Tensor) else None,
                                                  images, batch_size)
                    if advice is None and offset > 1000 and e.message.startswith(f"{what}: wrong values"):
                        advice = "with values this large, float32 accumulation of x**2 has no digits left for " \
                                 "the variance — accumulate in float64 (images.double())"
                    if advice:
                        raise Mismatch(f"{e.message}\n→ {advice}", e.detail) from None
                    raise _explained(e, "per channel c: mean = sum(x) / n and std = sqrt(sum(x**2) / n - mean**2), "
                                        "summed over dims (0, 2, 3) of every batch, n the pixel count") from None


# ----------------------------------------------------------------------------------------------------------
# CSVImageDataset
# ----------------------------------------------------------------------------------------------------------


def _image_to_float(img):
    """A transform the check hands in: uint8 (C, H, W) -> float32 in [-1, 1], mirrored left-right."""
    if isinstance(img, int):
        raise TypeError("transform was applied to the label (an int) — transform is for the image, "
                        "target_transform for the label")
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"transform received a {type(img).__name__} — pass it the uint8 tensor that "
                        "torchvision.io.read_image returns")
    return img.flip(-1).to(torch.float32) / 127.5 - 1.0


def _one_hot_label(label):
    """A target transform the check hands in: int label -> one-hot float32 (10,), made with scatter_."""
    if isinstance(label, torch.Tensor) and label.ndim >= 2:  # no tensor dump: it would fill the message
        raise TypeError("target_transform was applied to the image — transform is for the image, "
                        "target_transform for the label")
    if type(label) is not int:
        raise TypeError(f"target_transform received {_a(type(label).__name__)} — pass it the label as a Python "
                        "int (int() of the CSV field)")
    return torch.zeros(10).scatter_(0, torch.tensor([label]), 1.0)


class _Jitter:
    """A stand-in for a random augmentation: call k adds k to the pixels (as floats), so no two calls agree."""

    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        if isinstance(img, int):
            return _image_to_float(img)  # raises: transform was applied to the label
        self.calls += 1
        return img.to(torch.float32) + self.calls


TRANSFORMS = {None: None, "to_float": _image_to_float, "one_hot": _one_hot_label}


def _write_images(root: Path, images, filenames) -> None:
    """Each uint8 (C, H, W) image as a PNG file root/images/<name>."""
    for img, name in zip(images, filenames):
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = img.permute(1, 2, 0).numpy()  # (H, W, C)
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path)


def _write_files(root: Path, images, filenames, labels) -> None:
    """PNG files under root/images and root/labels.csv (header filename,label), rows in the given order."""
    _write_images(root, images, filenames)
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["filename", "label"])
        writer.writerows(zip(filenames, labels))


def csv_dataset_run(cls, images, filenames, labels, transform, target_transform, what):
    """Driver: write the files, build cls(csv, dir, ...); return its len (what='len') or every item.

    what='lazy' changes the files under the dataset's feet: after construction every image is inverted
    (255 - x) before dataset[0] is read, then put back before the other items are read. A dataset that reads
    each image in __getitem__ sees the file as it is at that moment.

    what='twice' hands in a _Jitter transform and reads dataset[0], dataset[1], dataset[0]: the two reads of
    item 0 should differ, as a random augmentation's do; returns those images and how often transform ran."""
    with untraced():
        root = Path(tempfile.mkdtemp(prefix="torchdojo-csv-"))
        _write_files(root, images, filenames, labels)
    try:
        kwargs = {}
        if transform is not None:
            kwargs["transform"] = TRANSFORMS[transform]
        if target_transform is not None:
            kwargs["target_transform"] = TRANSFORMS[target_transform]
        jitter = _Jitter()
        if what == "twice":
            kwargs["transform"] = jitter
        dataset = cls(str(root / "labels.csv"), str(root / "images"), **kwargs)
        if what == "len":
            return len(dataset)
        if what == "twice":
            reads = [dataset[0], dataset[1], dataset[0]]
            return {"images": [r[0] if isinstance(r, (tuple, list)) and len(r) == 2 else None for r in reads],
                    "calls": jitter.calls}
        if what == "lazy":
            with untraced():
                _write_images(root, [255 - img for img in images], filenames)
            first = dataset[0]
            with untraced():
                _write_images(root, images, filenames)
            return [first] + [dataset[i] for i in range(1, len(labels))]
        return [dataset[i] for i in range(len(labels))]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _expected_items(images, labels, transform, target_transform):
    tf, ttf = TRANSFORMS[transform], TRANSFORMS[target_transform]
    return [((tf(img) if tf else img), (ttf(int(y)) if ttf else int(y))) for img, y in zip(images, labels)]


def _expect_len(n, rows: int) -> None:
    if n == rows + 1:
        raise Mismatch(f"len(dataset) is {n} for a CSV of {rows} rows — the header line `filename,label` was "
                       "counted as a sample: skip it (csv.DictReader does)")
    if isinstance(n, int) and not isinstance(n, bool) and n != rows:
        raise Mismatch(f"len(dataset) should be {rows}, the number of rows under the header, got {n} — "
                       "return len() of the rows read from the CSV in __init__")
    expect_value(n, rows, what="len(dataset)")


def _same(a, b) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _image_advice(image, i: int, raw, transform) -> str:
    """What went wrong with the image of dataset[i]: no transform, or PIL's float scaling."""
    if not isinstance(image, torch.Tensor):
        return "return the tensor torchvision.io.read_image(path) gives, passed through transform if one is given"
    if image.shape == raw[i].shape and image.is_floating_point() and torch.allclose(
            image.double(), raw[i].double() / 255, atol=1e-6):
        return "that is the file scaled to [0, 1] (PIL + ToTensor?) — read the file with read_image (uint8) and " \
               "leave any conversion to the transform"
    return "dataset[i] should be read_image(os.path.join(img_dir, filename)) for row i's filename, passed " \
           "through transform when one is given"


def _expect_item(got, exp, i: int, gray: bool, raw=None, expected=None, transform=None) -> None:
    what = f"dataset[{i}]"
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Mismatch(f"{what} should be a pair (image, label), got {type(got).__name__}"
                       + (f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""))
    image, label = got
    others = [j for j, (e, _) in enumerate(expected or []) if j != i and _same(image, e)]
    if others and not _same(image, exp[0]):
        raise Mismatch(f"the image of {what} is the image of row {others[0]} — dataset[i] reads the file named in "
                       "row i of the CSV, rows in file order")
    if transform is not None and raw is not None and _same(image, raw[i]) and not _same(image, exp[0]):
        raise Mismatch(f"the image of {what} is the file as read, but a transform was given — "
                       "image = self.transform(image) when a transform is given")
    if isinstance(image, torch.Tensor) and image.is_floating_point() and not exp[0].is_floating_point():
        raise Mismatch(f"{what}: the image is {image.dtype}, expected uint8 — read it with "
                       "torchvision.io.read_image(path) and leave the conversion to the transform "
                       "(PIL + ToTensor scales to floats in [0, 1])")
    if isinstance(image, torch.Tensor) and gray and image.ndim == 3 and image.shape[0] == 3 \
            and exp[0].shape[0] == 1:
        raise Mismatch(f"{what}: a grayscale PNG gave 3 channels, expected 1 — call read_image in its default "
                       "mode (ImageReadMode.UNCHANGED), not mode=RGB")
    if isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape != exp[0].shape \
            and image.shape == exp[0].shape[1:] + exp[0].shape[:1]:
        raise Mismatch(f"{what}: the image has shape {tuple(image.shape)}, expected (C, H, W) "
                       f"{tuple(exp[0].shape)} — read_image already returns channels first")
    try:
        expect_tensor(image, exp[0], atol=1e-6, rtol=1e-6, what=f"the image of {what}")
    except Mismatch as e:
        with untraced():
            advice = _image_advice(image, i, raw, transform) if raw is not None else \
                "dataset[i] should be read_image(path) for row i, passed through transform when one is given"
        raise _explained(e, advice) from None
    labels = [y for _, y in expected] if expected is not None else []
    if isinstance(exp[1], int):
        if isinstance(label, str):
            raise Mismatch(f"the label of {what} is the string {label!r} — convert the CSV field with int()")
        if isinstance(label, np.integer):
            raise Mismatch(f"the label of {what} is a numpy {type(label).__name__} — convert it with int()")
        try:
            expect_value(label, exp[1], what=f"the label of {what}")
        except Mismatch as e:
            others = [j for j, y in enumerate(labels) if j != i and y == label]
            raise _explained(e, f"that is the label of row {others[0]} — item i takes row i's label"
                             if others and label not in (exp[1],) else
                             "the label should be int() of row i's label field, in the CSV's row order") from None
    else:
        if isinstance(label, int):
            raise Mismatch(f"the label of {what} is the int {label}, but a target_transform was given — "
                           "label = self.target_transform(label) when one is given")
        try:
            expect_tensor(label, exp[1], what=f"the label of {what} (after target_transform)")
        except Mismatch as e:
            raise _explained(e, "the label should be target_transform(int(label)) for row i") from None


_MISSING_FILE = re.compile(r"No such file or directory: ['\"]([^'\"]+)['\"]")


def _items_run(t, cls, images, filenames, labels, tf, ttf, what):
    """t.call(csv_dataset_run, ...), with a diagnosis when the image path the dataset built ends in a label."""
    try:
        return t.call(csv_dataset_run, cls, images, filenames, labels, tf, ttf, what)
    except LearnerError as e:
        missing = _MISSING_FILE.search(str(e))
        name = missing and Path(missing.group(1)).name
        if name == "filename":
            raise Mismatch("the header line `filename,label` was read as a row, so its path ends in 'filename' — "
                           "skip the header (csv.DictReader does, or next(reader) before the rows)", str(e)) from None
        if name and name in {str(y) for y in labels} and name not in {Path(f).name for f in filenames}:
            raise Mismatch(f"the image path ends in a label ({name!r}), so the columns were read the wrong way "
                           "round — read the columns by name (filename, label), e.g. csv.DictReader: "
                           "row['filename'], int(row['label'])", str(e)) from None
        raise


def _random_images(t, sizes_channels):
    return [t.randint(0, 256, (c, h, w)).to(torch.uint8) for c, h, w in sizes_channels]


@exercise("06_data", points=2, difficulty=2, minutes=20, hints=[
    "__init__ reads the CSV once (csv.DictReader, or csv.reader and skip the header) into a list of "
    "(filename, int(label)) rows; __len__ is the number of rows. Do not open any image there.",
    "__getitem__(i): path = os.path.join(img_dir, filename); image = torchvision.io.read_image(path) gives a "
    "uint8 (C, H, W) tensor; keep the label a Python int.",
    "Apply the optional transforms last: `if self.transform: image = self.transform(image)` and the same for "
    "target_transform on the label; return (image, label).",
])
def CSVImageDataset(t, cls):
    h, w = t.integer(3, 9), t.integer(10, 16)
    cases = [
        ("4 grayscale PNGs, no transforms", [(1, h + i, w - i) for i in range(4)],
         ["a.png", "b.png", "c.png", "d.png"], None, None),
        ("5 RGB PNGs in sub-folders, rows not in file order", [(3, h, w), (3, 1, 7), (3, w, h), (3, 5, 5),
                                                                (3, 2, 9)],
         ["zebra/img_9.png", "apple/img_1.png", "mango/img_5.png", "zebra/img_2.png", "b.png"], None, None),
        ("grayscale and RGB, transform and target_transform", [(1, h, w), (3, w, h), (1, 6, 1), (3, 4, 11)],
         ["x/p0.png", "x/p1.png", "y/p2.png", "p3.png"], "to_float", "one_hot"),
        ("target_transform only", [(3, h, h), (1, w, w), (3, 3, 2)], ["q.png", "r.png", "s.png"], None, "one_hot"),
        ("transform only", [(1, 7, 5), (3, 5, 7)], ["m.png", "n.png"], "to_float", None),
    ]
    for name, shapes, filenames, tf, ttf in cases:
        images = _random_images(t, shapes)
        labels = [t.integer(0, 10) for _ in shapes]
        gray = any(c == 1 for c, _, _ in shapes)
        with t.case(f"{name}: len"):
            _expect_len(t.call(csv_dataset_run, cls, images, filenames, labels, tf, ttf, "len"), len(labels))
        with t.case(f"{name}: items (image, label)"):
            got = _items_run(t, cls, images, filenames, labels, tf, ttf, "items")
            with untraced():
                expected = _expected_items(images, labels, tf, ttf)
            for i, (g, e) in enumerate(zip(got, expected)):
                _expect_item(g, e, i, gray, images, expected, TRANSFORMS[tf])
    with t.case("a CSV with only its header: len 0"):
        _expect_len(t.call(csv_dataset_run, cls, [], [], [], None, None, "len"), 0)
    with t.case("each image is read when it is asked for: the files change after the dataset is built"):
        images = _random_images(t, [(1, h, w), (3, w, h), (1, 5, 4)])
        labels = [t.integer(0, 10) for _ in images]
        got = _items_run(t, cls, images, ["u.png", "v/w.png", "z.png"], labels, None, None, "lazy")
        now = [255 - images[0]] + images[1:]  # what each file held when its item was read
        for i, g in enumerate(got):
            image = g[0] if isinstance(g, (tuple, list)) and len(g) == 2 else None
            if i == 0 and _same(image, images[0]):
                raise Mismatch("dataset[0] returned the pixels its file had when the dataset was built, not what "
                               "the file holds now — __init__ read every image up front\n→ read only the CSV in "
                               "__init__ and each image in __getitem__, when it is asked for: a real dataset "
                               "does not fit in memory, reading every file first delays the start of training, "
                               "and each DataLoader worker would get its own copy of all the images")
            if i > 0 and _same(image, 255 - images[i]):
                raise Mismatch(f"dataset[{i}] returned what its file held when dataset[0] was read — the first "
                               "access read every image\n→ dataset[i] should read only the file of row i, in "
                               "__getitem__: reading them all costs the memory and start-up time that a lazy "
                               "dataset saves")
            _expect_item(g, (now[i], labels[i]), i, True, now, list(zip(now, labels)))
    with t.case("transform runs on every access: dataset[0] read twice through a random transform"):
        images = _random_images(t, [(1, h, w), (3, 4, 6)])
        run = _items_run(t, cls, images, ["r0.png", "r1.png"], [t.integer(0, 10), t.integer(0, 10)], None, None,
                         "twice")
        first, _, again = run["images"]
        if run["calls"] == 0:
            raise Mismatch("transform was never called — image = self.transform(image) in __getitem__ when a "
                           "transform is given")
        if _same(first, again) or run["calls"] < 3:
            raise Mismatch(f"dataset[0] read twice gave the same transformed image (transform ran {run['calls']} "
                           "times for 3 reads) — transform must run on every access: do not cache transformed "
                           "images, or a random augmentation is frozen after the first epoch (caching what "
                           "read_image returns is fine)")


# ----------------------------------------------------------------------------------------------------------
# make_balanced_sampler
# ----------------------------------------------------------------------------------------------------------


def sampler_run(fn, labels, num_samples, seed):
    """Driver: fn(labels, [num_samples=], [generator=]) and what the sampler holds and draws."""
    kwargs = {}
    if num_samples is not None:
        kwargs["num_samples"] = num_samples
    if seed is not None:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    sampler = fn(labels, **kwargs)
    if not isinstance(sampler, WeightedRandomSampler):
        return {"type": type(sampler).__name__, "ok": False}
    with untraced():
        weights = torch.as_tensor(sampler.weights).detach().clone()
        if not bool(torch.isfinite(weights).all()):  # drawing would only fail in multinomial
            return {"type": type(sampler).__name__, "ok": True, "finite": False, "weights": weights}
    draws = [int(i) for i in sampler]
    return {"type": type(sampler).__name__, "ok": True, "finite": True, "weights": weights,
            "replacement": bool(sampler.replacement), "num_samples": int(sampler.num_samples), "draws": draws}


def _expect_sampler(got) -> None:
    """A WeightedRandomSampler with finite weights."""
    if not got["ok"]:
        raise Mismatch(f"should return a torch.utils.data.WeightedRandomSampler, got {got['type']}")
    if not got["finite"]:
        raise Mismatch("the sampler's weights contain inf (or nan) — a class with count 0? weight each sample by "
                       "1 / count of its own label: counts[labels], so that only classes that occur are used")


def _oracle_weights(labels) -> torch.Tensor:
    labels = [int(y) for y in labels]
    counts = Counter(labels)
    return torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.float64)


@exercise("06_data", points=2, difficulty=2, minutes=15, hints=[
    "Count each class (collections.Counter, or torch.bincount on a tensor), then give every sample the weight "
    "1 / count(its label): rare classes get large weights.",
    "labels may be a list or a tensor: torch.as_tensor(labels) makes both a tensor; counts[labels] then gives "
    "one count per sample.",
    "return WeightedRandomSampler(weights, num_samples=len(labels) if num_samples is None else num_samples, "
    "replacement=True, generator=generator)",
])
def make_balanced_sampler(t, fn):
    n1 = t.integer(5, 9)
    cases = [
        ("a list of labels, 3 classes (counts {0}, 3, 2), default num_samples".format(n1),
         [0] * n1 + [1] * 3 + [2] * 2, None, "list"),
        ("an int64 tensor of labels with classes 0, 4, 9, num_samples=50", [4, 9, 4, 0, 4, 4, 9, 4, 0, 4, 4],
         50, "tensor"),
        ("one class only, num_samples=5", [3] * 7, 5, "list"),
        ("a tensor of 40 random labels in 0..5", None, None, "tensor"),
    ]
    for name, labels, num_samples, kind in cases:
        if labels is None:
            labels = t.randint(0, 6, (40,)).tolist()
        order = torch.randperm(len(labels), generator=t.gen).tolist()
        labels = [labels[i] for i in order]  # classes interleaved, not in blocks
        arg = torch.tensor(labels, dtype=torch.int64) if kind == "tensor" else list(labels)
        seed = t.integer(0, 10_000)
        n = len(labels) if num_samples is None else num_samples
        with t.case(f"{name}, generator seeded with {seed}"):
            got = t.call(sampler_run, fn, arg, num_samples, seed)
            _expect_sampler(got)
            w, exp_w = got["weights"].double(), _oracle_weights(labels)
            if w.shape != exp_w.shape:
                raise Mismatch(f"the sampler has {w.numel()} weights, expected one per sample ({exp_w.numel()})"
                               + (" — those look like per-class weights: index them with the labels, "
                                  "weights = class_weight[labels]" if w.numel() == len(set(labels)) else
                                  " — give each sample the weight 1 / count(its label)"))
            if not got["replacement"]:
                raise Mismatch("replacement=False: each sample can then be drawn once only, so rare classes "
                               "cannot be repeated — use replacement=True")
            scaled = w / w.sum()
            if not torch.allclose(scaled, exp_w / exp_w.sum(), rtol=1e-9, atol=1e-12):
                c = torch.tensor([Counter(labels)[y] for y in labels], dtype=torch.float64)
                grows = torch.allclose(scaled, c / c.sum(), rtol=1e-9)
                advice = " — they grow with the class count; use 1 / count" if grows else \
                    " — weight sample i by 1 / (how many samples share its label)"
                raise Mismatch(f"the weights are not proportional to 1 / count(label){advice}",
                               f"expected (normalised) {(exp_w / exp_w.sum()).tolist()[:8]}…, "
                               f"got {scaled.tolist()[:8]}…")
            if got["num_samples"] != n:
                raise Mismatch(f"num_samples is {got['num_samples']}, expected {n}"
                               + (" — it defaults to len(labels)" if num_samples is None else
                                  " — pass num_samples on to the sampler"))
            reference = WeightedRandomSampler(exp_w, n, replacement=True,
                                              generator=torch.Generator().manual_seed(seed))
            if got["draws"] != list(reference):
                raise Mismatch("the indices drawn differ from a sampler using the given generator — pass "
                               "generator=generator to WeightedRandomSampler")
    with t.case("generator=None: draws len(labels) valid indices"):
        labels = [1, 0, 1, 1, 2, 1]
        got = t.call(sampler_run, fn, list(labels), None, None)
        _expect_sampler(got)
        if len(got["draws"]) != len(labels):
            raise Mismatch(f"should draw len(labels) = {len(labels)} indices when num_samples is None, drew "
                           f"{len(got['draws'])} — num_samples defaults to len(labels)")
        if not all(0 <= i < len(labels) for i in got["draws"]):
            raise Mismatch("drew indices outside range(len(labels)) — give one weight per sample, so that the "
                           "sampler draws sample indices")


# ----------------------------------------------------------------------------------------------------------
# ShardedRange
# ----------------------------------------------------------------------------------------------------------


def sharded_run(cls, start, end, num_workers):
    """Driver: every value a DataLoader(cls(start, end), num_workers=...) yields, in order."""
    dataset = cls(start, end)
    if not isinstance(dataset, IterableDataset):
        return {"iterable": False, "values": None}
    with warnings.catch_warnings():  # more workers than this machine's cores is the point here
        warnings.filterwarnings("ignore", message=".*worker processes in total")
        loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, timeout=30 if num_workers else 0)
        values = [int(v) for v in loader]
    return {"iterable": True, "values": values}


@exercise("06_data", points=3, difficulty=3, minutes=25, hints=[
    "Subclass torch.utils.data.IterableDataset and yield from range(...) in __iter__. Without workers that is "
    "already right; with workers, every worker process runs __iter__ on its own copy.",
    "Inside __iter__, info = torch.utils.data.get_worker_info() is None in the main process; in a worker it has "
    "info.id and info.num_workers. Give each worker its own part of [start, end).",
    "A chunk per worker: per = math.ceil((end - start) / info.num_workers); lo = start + info.id * per; "
    "hi = min(lo + per, end); yield from range(lo, hi). (Or stride: range(start + info.id, end, "
    "info.num_workers).)",
], budget_s=1.5)  # it starts real DataLoader worker processes
def ShardedRange(t, cls):
    a = t.unseen(t.integer(-5, 5), 100, 10_000)  # hidden round: starts no public case has,
    d = t.unseen(0, 1, 20)  # and longer ranges
    cases = [(0, a, a + 9 + d), (0, a, a), (1, a, a + 6 + d), (2, a + 10, a + 21 + d),  # workers are slow
             (3, a, a + 23 + d)]
    for num_workers, start, end in cases:
        with t.case(f"num_workers={num_workers}: ShardedRange({start}, {end})"):
            try:
                run = t.call(sharded_run, cls, start, end, num_workers)
            except LearnerError as e:
                if "NoneType" in str(e) and num_workers == 0:
                    raise Mismatch(f"{e}\n→ without workers get_worker_info() returns None: yield the whole "
                                   "range in that case") from None
                raise
            if not run["iterable"]:
                raise Mismatch("ShardedRange should subclass torch.utils.data.IterableDataset")
            values, want = run["values"], list(range(start, end))
            counts = Counter(values)
            extra = sorted(v for v in counts if v not in set(want))
            missing = [v for v in want if v not in counts]
            dup = sorted(v for v, c in counts.items() if c > 1)
            if dup and num_workers > 1 and all(counts[v] == num_workers for v in want):
                raise Mismatch(f"each integer came {num_workers} times — every worker iterates over the whole "
                               "range: use torch.utils.data.get_worker_info() to give each worker its share")
            if dup:
                raise Mismatch(f"some integers came more than once: {dup[:5]} — the workers' shares overlap")
            if extra and num_workers > 1 and all(v >= end for v in extra):
                raise Mismatch(f"integers outside [start, end) came out: {extra[:5]} — the last worker's chunk "
                               "runs past end: clamp the last chunk: min(lo + per, end)")
            if extra:
                raise Mismatch(f"integers outside [start, end) came out: {extra[:5]} — end is exclusive")
            if missing:
                raise Mismatch(f"integers missing: {missing[:5]} — when {end - start} is not a multiple of "
                               f"{num_workers} workers, the remainder must go to some worker (round up the "
                               "chunk size, or clamp the last chunk to end)"
                               if num_workers > 1 else f"integers missing: {missing[:5]} — every integer of "
                               "[start, end) should come out once")
