"""Checks for 07_training: seeding, one training epoch, accuracy, checkpoints, and a trained digits classifier.

Every learner-made object stays inside a driver (a module-level function below whose first argument is the
learner's code); drivers build small models from trusted nn pieces, run the learner's code and hand back plain
data. The expected answers are computed here with the same loop written out in full.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.data import DataLoader, TensorDataset, default_collate

from grader.compare import Mismatch, expect_tensor
from grader.data import digits
from grader.registry import exercise
from grader.runner import Inconclusive, untraced
from grader.tracing import MIXED_DEVICE_OK, canonical_name

LESSON = "07_training"


# --- shared helpers --------------------------------------------------------------------------------------------
def _plain(value):
    """What a learner's function returned, as plain data: the value itself, or its type's name."""
    if isinstance(value, torch.Tensor):
        return {"type": "Tensor", "value": value.detach().cpu().clone()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"type": type(value).__name__, "value": value}
    return {"type": type(value).__name__, "value": None}


def _expect_python(returned: dict, kind: type, what: str, advice: str) -> None:
    """The learner returned a plain Python `kind` (bool is not an int here)."""
    name = returned["type"]
    if name == kind.__name__:
        return
    if name == "Tensor":
        raise Mismatch(f"{what} should be a Python {kind.__name__}, got a tensor — {advice}")
    if name == "NoneType":
        raise Mismatch(f"{what} should be a Python {kind.__name__}, got None — a missing `return`?")
    raise Mismatch(f"{what} should be a Python {kind.__name__}, got {name} — {advice}")


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


def _moves_to_device(name: str, args: tuple, kwargs: dict) -> bool:
    """Does this .to(...) / .cuda() call name a device (and not only a dtype)?"""
    if name == "cuda":
        return True
    return "device" in kwargs or any(isinstance(a, (str, torch.device, int, torch.Tensor)) for a in args)


# Ops that may take an unmoved batch tensor beside the device's tensors: the tracer's own list, and .cuda().
_MOVES = MIXED_DEVICE_OK | {"cuda"}


class BatchMoves(TorchFunctionMode):
    """Watches the batches a DataLoader hands out: was each batch's x and y moved with .to(device), and was the
    moved copy used, or the unmoved batch?

    Use `collate` as the loader's collate_fn; while the mode is active it notes every .to / .cuda call made on
    the latest batch's tensors. A move from the CPU to the CPU returns the same tensor, which would hide a
    result thrown away (`x.to(device)` on its own line); here it returns a copy instead, as a real move does,
    so an op that later mixes the unmoved batch with other tensors shows the mistake on a CPU-only machine too.
    (On the meta device, loss.item() and the like get stand-in values from the grader's tracer.)
    """

    def __init__(self):
        super().__init__()
        self.moved: list[list[bool]] = []  # one [x moved, y moved] per batch
        self.discarded = [False, False]    # [x, y]: the unmoved tensor was used after a move
        self._current: tuple = ()

    def collate(self, samples):
        x, y = default_collate(samples)
        self._current = (x, y)
        self.moved.append([False, False])
        return [x, y]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        if not self.moved:
            return func(*args, **kwargs)
        if name in ("to", "cuda") and args:
            out = func(*args, **kwargs)
            for i, batch_tensor in enumerate(self._current):
                if args[0] is batch_tensor and _moves_to_device(name, args[1:], kwargs):
                    self.moved[-1][i] = True
                    if out is batch_tensor:  # a CPU "move": hand back a copy, as a move to another device does
                        with untraced():
                            out = batch_tensor.clone()
            return out
        if name not in _MOVES:
            tensors = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
            for i, batch_tensor in enumerate(self._current):
                if self.moved[-1][i] and any(a is batch_tensor for a in tensors) and any(
                        a is not batch_tensor and a.ndim > 0 for a in tensors):
                    self.discarded[i] = True
        return func(*args, **kwargs)

    def summary(self) -> dict:
        return {"batches": len(self.moved), "x": all(m[0] for m in self.moved), "y": all(m[1] for m in self.moved),
                "x_discarded": self.discarded[0], "y_discarded": self.discarded[1]}


def _expect_moved(moves: dict) -> None:
    if moves["batches"] == 0:
        raise Mismatch("your code never iterated over the loader — loop with `for x, y in loader:`")
    if moves.get("x_discarded"):
        raise Mismatch("the inputs were moved, but the unmoved batch was used — x.to(device) returns a new tensor; "
                       "assign it: x = x.to(device) (on a GPU the model's weights and the CPU batch would not mix)")
    if moves.get("y_discarded"):
        raise Mismatch("the labels were moved, but the unmoved ones were used — y.to(device) returns a new tensor; "
                       "assign it: y = y.to(device) (on a GPU the loss would mix a GPU tensor with a CPU one)")
    if not moves["x"]:
        raise Mismatch("the inputs of a batch were not moved to `device` — x = x.to(device) before the forward "
                       "pass (on a GPU the model's weights and a CPU batch would not mix)")
    if not moves["y"]:
        raise Mismatch("the labels of a batch were not moved to `device` — y = y.to(device) too, or the loss "
                       "mixes a GPU tensor with a CPU one")


def _loader(x, y, batch_size, moves: BatchMoves | None = None) -> DataLoader:
    """A loader in a fixed order that does not touch the global random generator."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False,
                      collate_fn=moves.collate if moves else None, generator=torch.Generator().manual_seed(0))


def _random_state(t, template: nn.Module) -> dict:
    """Seeded weights (and batch-norm statistics) for a copy of `template`, drawn from the Tester."""
    state = {}
    for key, value in template.state_dict().items():
        if not value.dtype.is_floating_point:
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = t.rand(*value.shape, dtype=value.dtype) + 0.5
        else:
            state[key] = t.randn(*value.shape, dtype=value.dtype) * 0.7
    return state


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().cpu().clone() for p in model.parameters()]


def _same(got: list, expected: list) -> bool:
    return len(got) == len(expected) and all(
        g.shape == e.shape and torch.allclose(g, e, atol=1e-5, rtol=1e-4) for g, e in zip(got, expected))


# --- set_seed --------------------------------------------------------------------------------------------------
def seeded_draws(fn, seed: int) -> dict:
    """Driver: scramble every generator, call set_seed(seed), then draw once from Python, NumPy and torch.

    torch.cuda.manual_seed_all / manual_seed are wrapped to record their calls (torch.manual_seed calls
    manual_seed_all itself, so either way of seeding every GPU shows up). The learner's global Python and
    NumPy states are restored afterwards (torch's is restored by the runner).
    """
    with untraced():
        saved = random.getstate(), np.random.get_state()
        random.seed(seed + 7919), np.random.seed(seed + 7919), torch.manual_seed(seed + 7919)
    calls: list[tuple[str, int]] = []
    real_all, real_one = torch.cuda.manual_seed_all, torch.cuda.manual_seed

    def record_all(s):
        calls.append(("manual_seed_all", int(s)))
        real_all(s)

    def record_one(s):
        calls.append(("manual_seed", int(s)))
        real_one(s)

    try:
        with mock.patch("torch.cuda.manual_seed_all", record_all), mock.patch("torch.cuda.manual_seed", record_one):
            out = fn(seed)
        with untraced():
            draws = {"random": random.random(), "numpy": float(np.random.rand()), "torch": torch.rand(3)}
            if torch.cuda.is_available():
                draws["cuda"] = torch.rand(3, device="cuda").cpu()
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return {"returned": _plain(out), "draws": draws, "cuda_calls": calls}


def _expected_draws(seed: int) -> dict:
    """What each generator gives first after being seeded with `seed`, computed on private generators."""
    draws = {"random": random.Random(seed).random(), "numpy": float(np.random.RandomState(seed).rand()),
             "torch": torch.rand(3, generator=torch.Generator().manual_seed(seed))}
    if torch.cuda.is_available():
        draws["cuda"] = torch.rand(3, device="cuda", generator=torch.Generator("cuda").manual_seed(seed)).cpu()
    return draws


_UNSEEDED = {
    "random": "Python's `random` module is not seeded — random.seed(seed)",
    "numpy": "NumPy's global generator is not seeded — np.random.seed(seed) (np.random.default_rng(seed) makes a "
             "new generator and leaves the global one, which np.random.rand uses, alone)",
    "torch": "torch's generator is not seeded — torch.manual_seed(seed) (a new torch.Generator() seeds only "
             "itself, not the default generator)",
    "cuda": "the GPU generators are not seeded — torch.cuda.manual_seed_all(seed) (or torch.manual_seed)",
}


@exercise(LESSON, points=1, difficulty=1, minutes=5, hints=[
    "Three libraries keep three separate random generators, and each has its own seeding function.",
    "random.seed(seed), np.random.seed(seed) and torch.manual_seed(seed).",
    "torch.manual_seed already seeds every CUDA device; calling torch.cuda.manual_seed_all(seed) as well "
    "is harmless and makes the intent explicit.",
])
def set_seed(t, fn):
    seeds = [0, 1, 2024, t.integer(3, 2**31 - 1)]
    results = {}
    for seed in seeds:
        with t.case(f"set_seed({seed}) then random.random(), np.random.rand(), torch.rand(3)"):
            run = t.call(seeded_draws, fn, seed)
            results[seed] = run["draws"]
            expected = _expected_draws(seed)
            for source in expected:
                got, want = run["draws"][source], expected[source]
                same = torch.equal(got, want) if isinstance(want, torch.Tensor) else got == want
                if not same:
                    raise Mismatch(_UNSEEDED[source], f"first draw after set_seed({seed}): expected {want}, "
                                   f"got {got}")
    with t.case("different seeds give different numbers"):
        if 0 in results and 1 in results and torch.equal(results[0]["torch"], results[1]["torch"]):
            raise Mismatch("set_seed(0) and set_seed(1) give the same torch numbers — is the seed hard-coded "
                           "instead of using the `seed` argument?")
    with t.case("every CUDA device is seeded (torch.manual_seed or torch.cuda.manual_seed_all)"):
        calls = t.call(seeded_draws, fn, 5)["cuda_calls"]
        if ("manual_seed_all", 5) not in calls:
            if ("manual_seed", 5) in calls:
                raise Mismatch("torch.cuda.manual_seed seeds only the current GPU — use "
                               "torch.cuda.manual_seed_all(seed), or torch.manual_seed(seed), which seeds them all")
            raise Mismatch(_UNSEEDED["cuda"] + " — seeding torch.default_generator alone leaves the GPUs unseeded")


# --- train_one_epoch -------------------------------------------------------------------------------------------
def _epoch_net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))


def _epoch_setup(state: dict, device: str):
    model = _epoch_net()
    model.load_state_dict(state)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    return model, optimizer


def epoch_run(fn, state: dict, x, y, batch_size: int, start_in_eval: bool, device: str, dropout_seed: int) -> dict:
    """Driver: train_one_epoch on a small classifier with dropout; its return value, the parameters after the
    epoch, the mode it was left in and whether every batch was moved to the device.

    With device "meta" (the device check) the model and optimizer go to meta while the loader's batches stay on
    the CPU, as they would with a GPU; only the moves and the type of the returned loss come back."""
    with untraced():
        model, optimizer = _epoch_setup(state, device)
        if start_in_eval:
            model.eval()  # as if the model had just been evaluated
        moves = BatchMoves()
        loader = _loader(x, y, batch_size, moves)
        loss_fn = nn.CrossEntropyLoss()
        torch.manual_seed(dropout_seed)  # the dropout masks
    with moves:
        out = fn(model, loader, loss_fn, optimizer, torch.device(device))
    with untraced():
        if device == "meta":
            return {"loss": {"type": type(out).__name__, "value": None}, "moves": moves.summary()}
        return {"loss": _plain(out), "params": _params(model), "training": model.training,
                "moves": moves.summary()}


def _reference_epoch(state, x, y, batch_size, device, dropout_seed, variant="right"):
    """The epoch written out: (parameters after it, each batch's loss, each batch's size).

    Variants that reproduce learner mistakes, for the diagnosis (see _EPOCH_MISTAKES): 'no_zero_grad', 'eval'
    (dropout off), 'zero_before_step' (zero_grad between backward and step), 'step_once' (gradients summed over
    the epoch, one step after the loop) and 'step_once_last' (zero_grad per batch, one step after the loop).
    """
    model, optimizer = _epoch_setup(state, device)
    torch.manual_seed(dropout_seed)
    model.train(variant != "eval")
    losses, sizes = [], []
    optimizer.zero_grad()
    for xb, yb in _loader(x, y, batch_size):
        xb, yb = xb.to(device), yb.to(device)
        loss = F.cross_entropy(model(xb), yb)
        if variant not in ("no_zero_grad", "zero_before_step", "step_once"):
            optimizer.zero_grad()
        loss.backward()
        if variant == "zero_before_step":
            optimizer.zero_grad()
        if not variant.startswith("step_once"):
            optimizer.step()
        losses.append(loss.item())
        sizes.append(len(xb))
    if variant.startswith("step_once"):
        optimizer.step()
    return _params(model), losses, sizes


_EPOCH_MISTAKES = {
    "no_zero_grad": "the gradients pile up from batch to batch — call optimizer.zero_grad() before "
                    "loss.backward() in every batch",
    "eval": "the model trained with dropout switched off — it must be in training mode (model.train()) for the "
            "whole epoch",
    "zero_before_step": "the parameters did not move: optimizer.zero_grad() ran between loss.backward() and "
                        "optimizer.step(), so every step saw no gradient — per batch: zero_grad(), forward, loss, "
                        "backward(), then step()",
    "step_once": "optimizer.step() ran once per epoch, after the loop, instead of once per batch — call "
                 "optimizer.step() inside the loop, right after loss.backward()",
    "step_once_last": "optimizer.step() ran once per epoch, after the loop, so only the last batch's gradients "
                      "were used — call optimizer.step() inside the loop, right after loss.backward()",
}


_SEEN = "the number of samples seen (sum of len(x) over the batches)"


def _explain_epoch_loss(got: float, losses: list, sizes: list) -> str:
    n, total = sum(sizes), sum(l * s for l, s in zip(losses, sizes))
    guesses = [
        (sum(losses) / len(losses), "the plain mean of the batch losses: the last batch is smaller, so weight each "
         f"batch by its size — total += loss.item() * len(x), then divide by {_SEEN}"),
        (losses[-1], "the loss of the last batch only — accumulate over every batch"),
        (sum(losses), f"the sum of the batch losses — weight each by len(x) and divide by {_SEEN}"),
        (total, f"the sum over samples without dividing — divide by {_SEEN}"),
        (total / len(losses), f"the sample-weighted sum divided by the number of batches — divide by {_SEEN}"),
        (sum(losses) / n, "the sum of the batch means divided by the number of samples — multiply each batch's "
         "mean loss by len(x) first"),
    ]
    for value, advice in guesses:
        if _close(got, value):
            return f"wrong epoch loss: you returned {advice}"
    return ("wrong epoch loss — return the sample-weighted mean: the sum of loss.item() * len(x) over the batches, "
            f"divided by {_SEEN}")


@exercise(LESSON, points=3, difficulty=2, minutes=20, hints=[
    "The epoch has a fixed shape: model.train(); then for each (x, y) in the loader: move x and y to device, "
    "forward, loss, zero the gradients, backward, step.",
    "loss_fn returns the mean over the batch. To get the mean over the whole epoch, add loss.item() * len(x) "
    "for each batch and divide by the number of samples seen (add up len(x) too) — the last batch can be "
    "smaller, and with drop_last or a sampler len(loader.dataset) is not what the loop saw.",
    "for x, y in loader:\n        x, y = x.to(device), y.to(device)\n        loss = loss_fn(model(x), y)\n"
    "        optimizer.zero_grad(); loss.backward(); optimizer.step()\n        total += loss.item() * len(x)",
])
def train_one_epoch(t, fn):
    cases = [(21, 8, False, "21 samples in batches of 8, 8, 5"),
             (25, 6, True, "25 samples in batches of 6 (the last has 1), model handed over in eval mode"),
             (7, 7, False, "one batch of 7")]
    for device in t.devices:
        for n, batch_size, start_in_eval, words in cases:
            x, y = t.randn(n, 5, dtype=torch.float32), t.randint(0, 3, (n,))
            state = _random_state(t, _epoch_net())
            seed = t.integer(0, 10_000)
            with t.case(f"{device}: {words}"):
                run = t.call(epoch_run, fn, state, x, y, batch_size, start_in_eval, device, seed)
                _expect_moved(run["moves"])
                _expect_python(run["loss"], float, "the returned loss",
                               "use loss.item() to turn each batch's loss into a number")
                if not run["training"]:
                    raise Mismatch("the model is in eval mode after the epoch — call model.train() at the start "
                                   "(a model that was just evaluated is still in eval mode), and do not switch "
                                   "to eval inside the training loop")
                params, losses, sizes = _reference_epoch(state, x, y, batch_size, device, seed)
                if not _same(run["params"], params):
                    for variant, message in _EPOCH_MISTAKES.items():
                        if _same(run["params"], _reference_epoch(state, x, y, batch_size, device, seed, variant)[0]):
                            raise Mismatch(message)
                    detail = ""
                    for i, (g, e) in enumerate(zip(run["params"], params)):
                        try:
                            expect_tensor(g, e, atol=1e-5, rtol=1e-4, what=f"parameter {i} after the epoch")
                        except Mismatch as wrong:
                            detail = f"{wrong.message}\n{wrong.detail}".strip()
                            break
                    raise Mismatch("the parameters after the epoch differ from the reference epoch — one "
                                   "optimizer.zero_grad(), forward, loss_fn, loss.backward(), optimizer.step() per "
                                   "batch, in the loader's order, with each batch used once", detail)
                got, want = run["loss"]["value"], sum(l * s for l, s in zip(losses, sizes)) / sum(sizes)
                if not _close(got, want):
                    raise Mismatch(_explain_epoch_loss(got, losses, sizes),
                                   f"expected {want:.6f}, got {got:.6f}")
    if "cuda" not in t.devices:
        # The model on meta, the batches on the CPU: a batch that was not moved, or whose moved copy was thrown
        # away, meets meta weights (as it would meet GPU weights) and shows up as mixed devices.
        n, batch_size, start_in_eval, words = cases[1]
        x, y = t.randn(n, 5, dtype=torch.float32), t.randint(0, 3, (n,))
        t.device_check(words, epoch_run, (fn, _random_state(t, _epoch_net()), x, y, batch_size, start_in_eval,
                                          "meta", 0), move_inputs=False)


# --- evaluate_accuracy -----------------------------------------------------------------------------------------
class GradProbe(nn.Module):
    """Passes its input through and records, at every forward, (autograd recording?, training mode?)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.is_grad_enabled(), self.training))
        return x


def _accuracy_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), GradProbe(),
                         nn.Linear(16, 4))


def accuracy_run(fn, state: dict, x, y, batch_size: int, device: str) -> dict:
    """Driver: evaluate_accuracy on a net with batch norm and dropout, handed over in training mode; its return
    value, what the probe saw during each forward, whether the batches were moved, whether anything changed."""
    with untraced():
        model = _accuracy_net()
        model.load_state_dict(state)
        model = model.to(device).train()
        before = [v.detach().cpu().clone() for v in model.state_dict().values()]
        moves = BatchMoves()
        loader = _loader(x, y, batch_size, moves)
    with moves:
        out = fn(model, loader, torch.device(device))
    with untraced():
        after = [v.detach().cpu() for v in model.state_dict().values()]
        return {"accuracy": _plain(out), "seen": list(model[4].seen), "moves": moves.summary(),
                "changed": not all(torch.equal(a, b) for a, b in zip(after, before))}


def _eval_predictions(state: dict, x) -> torch.Tensor:
    model = _accuracy_net()
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _explain_accuracy(got: float, correct: torch.Tensor, batch_size: int) -> str:
    n = len(correct)
    per_batch = [c.float().mean().item() for c in correct.split(batch_size)]
    if got > 1:
        return ("an accuracy above 1 — divide the number of correct predictions by the number of samples, "
                "len(loader.dataset), not by the number of batches")
    if _close(got, sum(per_batch) / len(per_batch)):
        return ("you averaged the accuracies of the batches, but the last batch is smaller — count the correct "
                "predictions over all batches and divide by the number of samples")
    if _close(got, int(correct.sum()) / (len(per_batch) * batch_size)):
        return "you divided by (number of batches × batch_size), but the last batch is smaller — divide by " \
               "len(loader.dataset)"
    if _close(got, 1 - int(correct.sum()) / n):
        return "you returned the error rate — accuracy is the fraction of correct predictions"
    return "the prediction of a sample is logits.argmax(dim=1) (the class with the largest logit), compared " \
           "with its label"


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Two switches before counting: model.eval() (dropout off, batch norm uses its running statistics) and "
    "torch.no_grad() around the loop (no graph is built, which saves memory and time).",
    "For each batch: preds = model(x).argmax(dim=1); correct += (preds == y).sum().item(). At the end divide by "
    "the number of samples, len(loader.dataset) — not by the number of batches.",
    "model.eval()\n    correct = 0\n    with torch.no_grad():\n        for x, y in loader:\n"
    "            x, y = x.to(device), y.to(device)\n            correct += (model(x).argmax(dim=1) == y).sum().item()\n"
    "    return correct / len(loader.dataset)",
])
def evaluate_accuracy(t, fn):
    cases = [(21, 8, "21 samples in batches of 8, 8, 5"), (13, 4, "13 samples in batches of 4 (the last has 1)"),
             (5, 10, "5 samples in one batch larger than the data")]
    for device in t.devices:
        for n, batch_size, words in cases:
            x = t.randn(n, 6, dtype=torch.float32)
            state = _random_state(t, _accuracy_net())
            preds = _eval_predictions(state, x)
            # About half right, and the whole (smaller) last batch right: averaging per-batch accuracies differs.
            right = t.rand(n) < 0.45
            right[-(n % batch_size or batch_size):] = True
            right[0] = False
            y = torch.where(right, preds, (preds + 1 + t.randint(0, 3, (n,))) % 4)
            correct = y == preds
            with t.case(f"{device}: {words}"):
                run = t.call(accuracy_run, fn, state, x, y, batch_size, device)
                _expect_moved(run["moves"])
                if any(training for _, training in run["seen"]):
                    raise Mismatch("the model was in training mode during evaluation, so dropout dropped units and "
                                   "batch norm used the batch's statistics — call model.eval() first")
                if any(grad for grad, _ in run["seen"]):
                    raise Mismatch("a graph was built during evaluation — run the loop inside torch.no_grad() "
                                   "(or torch.inference_mode()) to save memory and time")
                if run["changed"]:
                    raise Mismatch("evaluating changed the model's weights or batch-norm statistics — evaluation "
                                   "must only read the model")
                _expect_python(run["accuracy"], float, "the accuracy",
                               "count with (preds == y).sum().item() and divide by the number of samples")
                got, want = run["accuracy"]["value"], int(correct.sum()) / n
                if not _close(got, want, rel=1e-9):
                    raise Mismatch(f"wrong accuracy — {_explain_accuracy(got, correct, batch_size)}",
                                   f"expected {want:.6f}, got {got:.6f}")


# --- save_checkpoint / load_checkpoint ---------------------------------------------------------------------------
class _WatchedNet(nn.Sequential):
    """nn.Sequential that notes each call that moves or converts the whole model (.cpu(), .to(), .cuda(),
    .float(), ...: all of them go through _apply). On a CPU-only machine model.cpu() changes nothing, so the
    check sees the call itself: on a GPU it would move the caller's model off its device."""

    def _apply(self, fn, recurse=True):
        self.__dict__.setdefault("moves", []).append(getattr(fn, "__qualname__", "?"))
        return super()._apply(fn, recurse)


def _move_name(qualname: str) -> str:
    """'Module.cpu.<locals>.<lambda>' -> 'cpu'."""
    parts = qualname.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "Module" else "to"


def _ckpt_net() -> nn.Module:
    """A net with buffers beside its parameters (batch norm's running statistics), as real models have."""
    return _WatchedNet(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))


def _ckpt_setup(state: dict):
    model = _ckpt_net()
    model.load_state_dict(state)
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def _ckpt_train(model, optimizer, x, y, steps: int) -> None:
    """The first `steps` Adam steps."""
    _ckpt_continue(model, optimizer, x, y, 0, steps)


def _ckpt_reference(state, x, y, k: int, m: int) -> dict:
    """The state dict after k steps; the parameters after k + m uninterrupted steps, and after k steps and m
    more with a fresh Adam."""
    model, optimizer = _ckpt_setup(state)
    _ckpt_train(model, optimizer, x, y, k)
    saved = {key: v.clone() for key, v in model.state_dict().items()}
    _ckpt_continue(model, optimizer, x, y, k, m)
    fresh, fresh_optimizer = _ckpt_setup(saved)
    _ckpt_continue(fresh, fresh_optimizer, x, y, k, m)
    return {"model_at_k": saved, "uninterrupted": _params(model), "fresh_optimizer": _params(fresh),
            "parameter_names": [name for name, _ in model.named_parameters()]}


def _ckpt_continue(model, optimizer, x, y, k: int, m: int) -> None:
    """Steps k .. k + m - 1 (the data slice depends on the global step, so order is the same after resuming)."""
    for i in range(k, k + m):
        xb, yb = x[i % 3::3], y[i % 3::3]
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _read_back(path) -> dict:
    """Load a checkpoint file the way the exercise promises it loads: torch.load(path, weights_only=True)."""
    if not os.path.exists(path):
        return {"exists": False}
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warns before it fails
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        # torch.save writes a zip archive; pickle.dump writes a bare pickle (opcode PROTO, 0x80, first)
        with open(path, "rb") as f:
            pickled = not zipfile.is_zipfile(f) and f.seek(0) == 0 and f.read(1) == b"\x80"
        return {"exists": True, "error": f"{type(e).__name__}: {first}", "pickled": pickled}
    # nn.Parameter values (a dict of named_parameters()) come back as plain tensors: plain data crosses the wire
    plain = tree_map(lambda v: v.detach().as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v,
                     checkpoint)
    return {"exists": True, "checkpoint": plain}


def save_run(fn, state: dict, x, y, k: int, epoch: int, as_path: bool) -> dict:
    """Driver: train k steps, call save_checkpoint into a fresh temporary folder, read the file back with
    weights_only=True (plain data by construction) and return what it holds."""
    with untraced():
        model, optimizer = _ckpt_setup(state)
        _ckpt_train(model, optimizer, x, y, k)
    folder = tempfile.mkdtemp(prefix="torchdojo-ckpt-")
    try:
        path = os.path.join(folder, "checkpoint.pt")
        out = fn(Path(path) if as_path else path, model, optimizer, epoch)
        with untraced():
            moves = [_move_name(m) for m in model.__dict__.get("moves", [])]
            return {"returned": _plain(out), "moves": moves, **_read_back(path)}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _resume(state, x, y, checkpoint: dict, k: int, m: int) -> list[torch.Tensor]:
    """Trusted resume from a learner's checkpoint: fresh model and Adam, load both, continue m steps."""
    model, optimizer = _ckpt_setup(state)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    _ckpt_continue(model, optimizer, x, y, k, m)
    return _params(model)


def _ckpt_data(t):
    x, y = t.randn(18, 4, dtype=torch.float32), t.randint(0, 3, (18,))
    return x, y, _random_state(t, _ckpt_net())


@exercise(LESSON, points=2, difficulty=1, minutes=10, hints=[
    "A checkpoint is one dict with three entries — the model's state_dict(), the optimizer's state_dict() and "
    "the epoch — written with torch.save.",
    "Save state dicts, not the objects: torch.save(model) pickles the class, and torch.load(path, "
    "weights_only=True) refuses to load it.",
    'torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)',
])
def save_checkpoint(t, fn):
    for k, m, as_path in [(3, 4, False), (5, 2, True)]:
        x, y, state = _ckpt_data(t)
        epoch = t.integer(1, 50)
        reference = _ckpt_reference(state, x, y, k, m)
        kind = "a pathlib.Path" if as_path else "a str path"
        run = {}
        with t.case(f"Adam after {k} steps, epoch={epoch}, {kind}: the file loads with weights_only=True"):
            run = t.call(save_run, fn, state, x, y, k, epoch, as_path)
            if not run["exists"]:
                raise Mismatch("no file was written at `path` — torch.save(checkpoint, path)")
            if "error" in run and run.get("pickled"):
                raise Mismatch("the file is a plain pickle, which torch.load(path, weights_only=True) cannot read "
                               "— write the file with torch.save(checkpoint, path), not pickle", run["error"])
            if "error" in run:
                raise Mismatch("torch.load(path, weights_only=True) cannot read the file — save plain state dicts "
                               "(model.state_dict(), optimizer.state_dict()), not the model or optimizer "
                               "objects", run["error"])
            ckpt = run["checkpoint"]
            if not isinstance(ckpt, dict):
                raise Mismatch(f"the file should hold one dict with keys 'model', 'optimizer', 'epoch', got a "
                               f"{type(ckpt).__name__}")
            keys = sorted(map(str, ckpt))
            if set(keys) != {"model", "optimizer", "epoch"}:
                raise Mismatch(f"the checkpoint's keys should be exactly 'epoch', 'model', 'optimizer', got "
                               f"{keys} — the names matter: load_checkpoint (and whoever resumes your run) looks "
                               "them up")
        readable = isinstance(run.get("checkpoint"), dict) and set(map(str, run["checkpoint"])) == {
            "model", "optimizer", "epoch"}
        with t.case(f"epoch={epoch} is stored as a Python int"):
            if not readable:
                raise Inconclusive("skipped: the file above is not a readable checkpoint yet")
            got = run["checkpoint"]["epoch"]
            if isinstance(got, torch.Tensor):
                raise Mismatch("the epoch should be stored as a Python int, got a Tensor — store epoch as given "
                               "(an int), not torch.tensor(epoch)")
            if type(got) is not int:
                raise Mismatch(f"the epoch should be stored as a Python int, got {type(got).__name__} — store "
                               "epoch as given (an int)")
            if got != epoch:
                raise Mismatch(f"stored epoch {got}, but save_checkpoint was given epoch={epoch} — store it as given")
        with t.case("'model' and 'optimizer' are the state dicts, and resuming from them continues exactly"):
            if not readable:
                raise Inconclusive("skipped: the file above is not a readable checkpoint yet")
            ckpt = run["checkpoint"]
            if not isinstance(ckpt["model"], dict):
                raise Mismatch("ckpt['model'] should be model.state_dict() (a dict from names to tensors)")
            got_keys, want_keys = set(map(str, ckpt["model"])), set(reference["model_at_k"])
            if got_keys != want_keys:
                lost = sorted(want_keys - got_keys)
                detail = f"keys {sorted(got_keys)}, expected {sorted(want_keys)}"
                if got_keys == set(reference["parameter_names"]):
                    raise Mismatch(f"ckpt['model'] holds the parameters only, so the buffers {', '.join(lost)} "
                                   "(batch norm's running statistics) are lost — save model.state_dict(), which "
                                   "holds the buffers too (named_parameters() and parameters() leave them out)",
                                   detail)
                raise Mismatch("ckpt['model'] should be model.state_dict() itself, with its own keys — "
                               "torch.save it as it is", detail)
            for key, want in reference["model_at_k"].items():
                try:
                    expect_tensor(ckpt["model"][key], want, what=f"ckpt['model'][{key!r}]")
                except Mismatch as e:
                    raise Mismatch(f"ckpt['model'][{key!r}] is not the model's current value — save "
                                   "model.state_dict() as it is when save_checkpoint is called",
                                   f"{e.message}\n{e.detail}".strip()) from None
            opt = ckpt.get("optimizer")
            if not isinstance(opt, dict) or set(opt) != {"state", "param_groups"}:
                raise Mismatch("ckpt['optimizer'] should be optimizer.state_dict() (a dict with 'state' and "
                               "'param_groups'), which holds Adam's running averages")
            try:
                resumed = _resume(state, x, y, ckpt, k, m)
            except Exception as e:
                raise Mismatch("the saved state dicts do not load back into a fresh model and Adam — save "
                               "model.state_dict() and optimizer.state_dict() unchanged",
                               f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}") from None
            if not _same(resumed, reference["uninterrupted"]):
                raise Mismatch(f"resuming from your checkpoint and training {m} more steps differs from training "
                               "without interruption — the optimizer state saved is not the current one")
        with t.case("the caller's model stays where it is (saving moves nothing)"):
            if "moves" not in run:
                raise Inconclusive("skipped: save_checkpoint did not run to the end above")
            if run["moves"]:
                name = run["moves"][0]
                if name in ("cpu", "cuda", "to"):
                    raise Mismatch(f"model.{name}() moves the caller's model (on a GPU, training would go on with "
                                   "its weights on the CPU) — save model.state_dict() as it is (map_location at "
                                   "load time handles devices)")
                raise Mismatch(f"model.{name}() converts the caller's model, which goes on training after the "
                               "save — save model.state_dict() as it is, and change nothing")


def _recording_load(calls: list):
    real = torch.load

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only", "default"))
        return real(*args, **kwargs)
    return load


def load_run(fn, state: dict, x, y, k: int, m: int, epoch: int) -> dict:
    """Driver: train k steps, save a checkpoint with a trusted torch.save, give load_checkpoint a fresh model
    and Adam, then continue m steps; return what it returned, the weights right after loading and after
    resuming, and how torch.load was called."""
    with untraced():
        model, optimizer = _ckpt_setup(state)
        _ckpt_train(model, optimizer, x, y, k)
        fresh, fresh_optimizer = _ckpt_setup(state)
    folder = tempfile.mkdtemp(prefix="torchdojo-ckpt-")
    loads: list = []
    try:
        path = os.path.join(folder, "checkpoint.pt")
        with untraced():
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)
        try:
            with mock.patch("torch.load", _recording_load(loads)):
                out = fn(path, fresh, fresh_optimizer)
        except (RuntimeError, KeyError) as e:
            if isinstance(e, KeyError) or "state_dict" in str(e):
                return {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}",
                        "loads": loads}
            raise
        with untraced():
            loaded = {key: v.detach().cpu().clone() for key, v in fresh.state_dict().items()}
            # the optimizer updates the objects it was given: were they replaced (a new nn.Parameter)?
            trained = {id(p) for group in fresh_optimizer.param_groups for p in group["params"]}
            replaced = [name for name, p in fresh.named_parameters() if id(p) not in trained]
            _ckpt_continue(fresh, fresh_optimizer, x, y, k, m)
            return {"returned": _plain(out), "loaded": loaded, "replaced": replaced, "resumed": _params(fresh),
                    "loads": loads}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@exercise(LESSON, points=2, difficulty=1, minutes=10, hints=[
    "Load the dict back with torch.load(path, weights_only=True), then hand each part to the object it came from.",
    "model.load_state_dict(ckpt['model']) and optimizer.load_state_dict(ckpt['optimizer']) restore in place; "
    "return ckpt['epoch'].",
    'ckpt = torch.load(path, weights_only=True)\n    model.load_state_dict(ckpt["model"])\n'
    '    optimizer.load_state_dict(ckpt["optimizer"])\n    return ckpt["epoch"]',
])
def load_checkpoint(t, fn):
    for k, m in [(3, 4), (6, 3)]:
        x, y, state = _ckpt_data(t)
        epoch = t.integer(1, 50)
        reference = _ckpt_reference(state, x, y, k, m)
        with t.case(f"checkpoint after {k} Adam steps, epoch={epoch}: load, then {m} more steps"):
            run = t.call(load_run, fn, state, x, y, k, m, epoch)
            if False in run["loads"]:
                raise Mismatch("torch.load was called with weights_only=False: that unpickles arbitrary objects, "
                               "and a checkpoint from someone else could run code on your machine — use "
                               "weights_only=True")
            if "error" in run:
                raise Mismatch("loading failed — the checkpoint is a dict {'model': ..., 'optimizer': ..., "
                               "'epoch': ...}: pass ckpt['model'] to model.load_state_dict and ckpt['optimizer'] "
                               "to optimizer.load_state_dict", run["error"])
            _expect_python(run["returned"], int, "the returned epoch", "return ckpt['epoch'] as it was saved")
            if run["returned"]["value"] != epoch:
                raise Mismatch(f"returned {run['returned']['value']}, but the checkpoint's epoch is {epoch} — "
                               "return the saved epoch itself (the caller resumes at epoch + 1)")
            saved = reference["model_at_k"]
            wrong = [key for key, v in saved.items()
                     if key not in run["loaded"] or not _same([run["loaded"][key]], [v])]
            if wrong and all(key not in reference["parameter_names"] for key in wrong):
                raise Mismatch(f"the parameters were restored but the buffers {', '.join(wrong)} (batch norm's "
                               "running statistics) were not — use model.load_state_dict(ckpt['model']), which "
                               "restores parameters and buffers (named_parameters() leaves the buffers out)")
            if wrong:
                raise Mismatch("the model's weights and buffers were not restored — "
                               "model.load_state_dict(ckpt['model']) "
                               "(it loads in place; assigning a new model to the local name `model` does not "
                               "change the caller's model)")
            if run["replaced"]:
                raise Mismatch(f"the parameters {', '.join(run['replaced'][:3])} were replaced by new tensors, so "
                               "the optimizer still updates the old objects — load in place with "
                               "model.load_state_dict(ckpt['model']) (no new nn.Parameter, no assign=True)")
            if not _same(run["resumed"], reference["uninterrupted"]):
                if _same(run["resumed"], reference["fresh_optimizer"]):
                    raise Mismatch("the optimizer's state was not restored, so Adam restarted its running averages "
                                   "and step count — optimizer.load_state_dict(ckpt['optimizer'])")
                raise Mismatch(f"after loading, {m} more steps differ from uninterrupted training — restore both "
                               "state dicts exactly as saved, and change nothing else (learning rate, parameters)")


# --- EarlyStopping --------------------------------------------------------------------------------------------
def _stopping(metrics: list[float], patience: int, min_delta: float, mode: str, mistake: str = "") -> list:
    """The spec as a plain loop: after each step(metric), (returned, best, num_bad_epochs).

    `mistake` reproduces a learner's mistake, for the diagnosis (see _STOPPING_MISTAKES)."""
    best, bad, out = None, 0, []
    for i, metric in enumerate(metrics):
        lower = mode == "min" or mistake == "mode"
        if best is None or (mistake == "falsy" and not best):
            better = mistake != "first"
        elif mistake == "le":
            better = metric <= best - min_delta if lower else metric >= best + min_delta
        elif mistake == "sign":
            better = metric < best + min_delta if lower else metric > best - min_delta
        elif mistake == "no_delta":
            better = metric < best if lower else metric > best
        else:
            better = metric < best - min_delta if lower else metric > best + min_delta
        if better:
            best, bad = metric, (bad if mistake == "no_reset" else 0)
        else:
            bad += 1
            if best is None or mistake == "best_always":
                best = metric
            elif mistake == "best_any_gain" and (metric < best if lower else metric > best):
                best = metric
        out.append((bad == patience if mistake == "once" else bad >= patience, best, bad))
    return out


_STOPPING_MISTAKES = {
    "le": "a gain of exactly min_delta counted as an improvement — it must be strictly larger: metric < best - "
          "min_delta (mode 'min'), metric > best + min_delta (mode 'max'); with min_delta=0 an equal metric is "
          "no improvement",
    "best_any_gain": "`best` moved on a gain smaller than min_delta — update best only on an improvement (the "
                     "same test that resets num_bad_epochs)",
    "best_always": "`best` follows every metric — update it only on an improvement",
    "no_reset": "num_bad_epochs was not reset by an improvement — set it back to 0 whenever the metric improves",
    "once": "step() returned True only on the patience-th bad call — return num_bad_epochs >= patience, so it "
            "stays True until an improvement",
    "mode": "mode='max' is ignored — in mode 'max' a larger metric is better: metric > best + min_delta",
    "first": "the first call did not count as an improvement — when best is None, take the metric as best and "
             "keep num_bad_epochs at 0",
    "sign": "min_delta is applied the wrong way — an improvement must beat best by more than min_delta: metric < "
            "best - min_delta (mode 'min'), metric > best + min_delta (mode 'max')",
    "no_delta": "min_delta is ignored — an improvement is metric < best - min_delta (mode 'min'), not just "
                "metric < best",
    "falsy": "best is 0.0, which is falsy, so the next call was taken for the first one — test `self.best is "
             "None`, not `not self.best` (a loss or an accuracy of exactly 0 is a real best)",
}


def _typed(value) -> list:
    """[type name, value] of an attribute or a return value, as plain data."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return [type(value).__name__, value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return ["Tensor", value.detach().cpu().item()]
    return [type(value).__name__, None]


_MISSING = object()


def stopping_run(cls, args: list, kwargs: dict, metrics: list[float]) -> dict:
    """Driver: cls(*args, **kwargs); `best` before any call; then step(m) for each metric, with what it returned
    and the attributes best and num_bad_epochs after each call."""
    stopper = cls(*args, **kwargs)
    before = getattr(stopper, "best", _MISSING)
    calls = []
    for metric in metrics:
        returned = stopper.step(metric)
        best, bad = getattr(stopper, "best", _MISSING), getattr(stopper, "num_bad_epochs", _MISSING)
        calls.append([_typed(returned), None if best is _MISSING else _typed(best),
                      None if bad is _MISSING else _typed(bad)])
    return {"before": None if before is _MISSING else _typed(before), "calls": calls}


def stopping_construct(cls, args: list, kwargs: dict) -> None:
    """Driver: only construct (for the ValueError cases)."""
    cls(*args, **kwargs)


def _metrics(t, mode: str, min_delta: float, n: int) -> list[float]:
    """A metric sequence built against the spec's own `best`: clear improvements, gains of exactly min_delta,
    gains smaller than it, plateaus and worse values, all multiples of 1/16 so that every tie is exact."""
    sign = 1 if mode == "max" else -1  # the direction of an improvement
    step = 1 / 16
    best = (t.integer(-32, 32) + 64 * (mode == "min")) * step
    metrics, kind = [best], t.randint(0, 5, (n - 1,)).tolist()
    for k in kind:
        if k == 0:                                   # a clear improvement
            gain = min_delta + step * t.integer(1, 6)
        elif k == 1:                                 # exactly min_delta: not an improvement
            gain = min_delta
        elif k == 2:                                 # a gain smaller than min_delta (none when min_delta is 0)
            gain = step * t.integer(0, int(min_delta / step)) if min_delta > 0 else 0.0
        elif k == 3:                                 # a plateau: the best value again
            gain = 0.0
        else:                                        # worse
            gain = -step * t.integer(1, 12)
        metric = best + sign * gain
        if sign * (metric - best) > min_delta:
            best = metric
        metrics.append(metric)
    return metrics


def _first_difference(got: list, want: list) -> int | None:
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return i
    return None if len(got) == len(want) else min(len(got), len(want))


def _observed(run: dict) -> list:
    """The learner's calls as (returned, best, num_bad_epochs) with plain values (types checked before)."""
    return [(r[1], b[1], n[1]) for r, b, n in run["calls"]]


def _describe_call(metrics, i, patience, min_delta, mode) -> str:
    shown = ", ".join(str(m) for m in metrics[:i + 1])
    return (f"EarlyStopping(patience={patience}, min_delta={min_delta:g}, mode={mode!r}), step() with "
            f"{shown}: call {i + 1}")


@exercise(LESSON, points=2, difficulty=2, minutes=20, hints=[
    "Keep two attributes: best (None until the first call) and num_bad_epochs (0). In step(metric): decide "
    "whether the metric is an improvement, update the two attributes, return num_bad_epochs >= patience.",
    "An improvement: best is None (the first call), or metric < best - min_delta in mode 'min', or metric > "
    "best + min_delta in mode 'max'. On an improvement: best = metric and num_bad_epochs = 0; otherwise only "
    "num_bad_epochs += 1 (best stays).",
    "Check the arguments in __init__: raise ValueError if mode not in ('min', 'max'), patience < 1 or "
    "min_delta < 0. Strict comparisons matter: a gain of exactly min_delta is not an improvement.",
])
def EarlyStopping(t, cls):
    patience_a, patience_b = t.unseen(2, 4, 9), t.unseen(3, 4, 9)
    n = t.unseen(18, 24, 40)
    cases = [((patience_a,), {}, "min", 0.0), ((1,), {"min_delta": 0.25, "mode": "min"}, "min", 0.25),
             ((), {"patience": patience_b, "mode": "max"}, "max", 0.0),
             ((patience_a,), {"min_delta": 0.125, "mode": "max"}, "max", 0.125),
             ((patience_b, 0.5, "min"), {}, "min", 0.5)]
    cases = [(*case, _metrics(t, case[2], case[3], n),
              f"step() on {n} metrics with plateaus and gains of exactly min_delta") for case in cases]
    # A metric of exactly 0.0 (an accuracy stuck at 0, a loss that reached 0): `best` is then falsy.
    zeros = t.unseen(4, 5, 9)
    cases += [((2,), {"mode": "max"}, "max", 0.0, [0.0] * zeros + [0.5, 0.5],
               f"an accuracy stuck at 0.0 for {zeros} calls, then 0.5 twice"),
              ((2,), {}, "min", 0.0, [0.0, 1.0, 0.5, 2.0, 0.25], "a loss of 0.0 first, then 1.0, 0.5, 2.0, 0.25")]
    for args, kwargs, mode, min_delta, metrics, words in cases:
        patience = args[0] if args else kwargs["patience"]
        call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        with t.case(f"EarlyStopping({call}): {words}"):
            run = t.call(stopping_run, cls, list(args), kwargs, metrics)
            if run["before"] is None:
                raise Mismatch("EarlyStopping should have an attribute `best` set in __init__ — self.best = None")
            if run["before"][0] != "NoneType":
                raise Mismatch(f"`best` should be None before the first step(), got {run['before'][1]!r} — the "
                               "first call then counts as an improvement in either mode (no inf / 0 start)")
            for i, (returned, best, bad) in enumerate(run["calls"]):
                where = _describe_call(metrics, i, patience, min_delta, mode)
                if best is None or bad is None:
                    missing = "best" if best is None else "num_bad_epochs"
                    raise Mismatch(f"after step() the attribute `{missing}` is missing — keep self.best and "
                                   "self.num_bad_epochs as attributes: they are part of the interface")
                if returned[0] != "bool":
                    raise Mismatch(f"step() should return a Python bool, got {returned[0]} — return "
                                   "self.num_bad_epochs >= self.patience", where)
                if bad[0] != "int":
                    raise Mismatch(f"num_bad_epochs should be a Python int, got {bad[0]} — count with += 1",
                                   where)
                if best[0] not in ("float", "int"):
                    raise Mismatch(f"best should be the metric itself (a float), got {best[0]} — best = metric",
                                   where)
            want = _stopping(metrics, patience, min_delta, mode)
            got = _observed(run)
            i = _first_difference(got, want)
            if i is None:
                continue
            for mistake, message in _STOPPING_MISTAKES.items():
                wrong = _stopping(metrics, patience, min_delta, mode, mistake)
                if wrong != want and got == wrong:
                    raise Mismatch(message, f"{_describe_call(metrics, i, patience, min_delta, mode)} gave "
                                   f"(returned, best, num_bad_epochs) = {got[i]}, expected {want[i]}")
            (r, b, c), (wr, wb, wc) = got[i], want[i]
            prev_best = want[i - 1][1] if i else None
            if c != wc:
                what = (f"num_bad_epochs is {c}, expected {wc} — each call without an improvement adds 1, an "
                        "improvement (metric beats best by more than min_delta) sets it to 0")
            elif b != wb:
                what = (f"best is {b}, expected {wb} — best changes only on an improvement, and then becomes "
                        "the metric")
            else:
                what = f"step() returned {r}, expected {wr} — return num_bad_epochs >= patience after the update"
            raise Mismatch(what, f"{_describe_call(metrics, i, patience, min_delta, mode)} (best before it: "
                           f"{prev_best})")
    bad_patience, bad_delta = t.unseen(0, -20, 0), -t.unseen(0.1, 1, 9)
    invalid = [("mode='average'", (3,), {"mode": "average"}), ("mode='maximize'", (3,), {"mode": "maximize"}),
               (f"patience={bad_patience}", (bad_patience,), {}), ("patience=-1", (-1,), {}),
               (f"min_delta={bad_delta:g}", (2,), {"min_delta": bad_delta})]
    for label, args, kwargs in invalid:
        with t.case(f"EarlyStopping with {label} raises ValueError"):
            t.raises(ValueError, stopping_construct, cls, list(args), kwargs)
    with t.case("EarlyStopping(patience=1, min_delta=0.0, mode='max') is valid (no error)"):
        t.call(stopping_construct, cls, [], {"patience": 1, "min_delta": 0.0, "mode": "max"})


# --- train_digits_classifier -----------------------------------------------------------------------------------
TIME_BUDGET_S = 30   # what the exercise promises a learner: training fits in this on a 2-core CPU
TIME_LIMIT_S = 60    # what the check enforces (the budget, with room for a slow or busy machine), on every path
MIN_ACCURACY = 0.95


def _logits_of(model, x):
    try:
        out = model(x)
    except Exception as e:
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
    return out.detach().cpu().clone() if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"


def digits_run(fn, x) -> dict:
    """Driver: call train_digits_classifier() (it trains), time it, then evaluate the model it returns in eval
    mode without gradients on `x` (the test images in [0, 1]), and on x * 255 and x * 16 for the diagnosis."""
    start = time.perf_counter()
    model = fn()
    seconds = time.perf_counter() - start
    if not isinstance(model, nn.Module):
        return {"type": type(model).__name__, "seconds": seconds}
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    model.eval()
    with torch.no_grad():
        x = x.to(device)
        return {"type": "Module", "seconds": seconds, "logits": _logits_of(model, x),
                "raw": _logits_of(model, x * 255), "sixteenths": _logits_of(model, x * 16)}


def _accuracy(logits, y) -> float:
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(y), 10):
        return 0.0
    return (logits.argmax(dim=1) == y).float().mean().item()


@exercise(LESSON, points=3, difficulty=2, minutes=25, hints=[
    "Put the lesson's pieces together: load the training images with load_digits_split('train') (values "
    "already in [0, 1]), wrap them in a DataLoader with shuffle=True, and call train_one_epoch a few times.",
    "A small MLP is plenty: nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), "
    "nn.Linear(64, 10), with Adam at lr=2e-3, batch_size=64 and about 20 epochs — a few seconds on a CPU, well "
    "inside the 30 s budget.",
    "If the accuracy stays low: are the pixels divided by 255 (the check feeds values in [0, 1])? Do you "
    "return the trained model itself? Print evaluate_accuracy on the training data after each epoch.",
], budget_s=TIME_BUDGET_S, time_limit_s=TIME_LIMIT_S)
def train_digits_classifier(t, fn):
    if t.hidden:  # training is not about hidden inputs; one (slow) round is enough
        return
    x, y = digits("test")
    run = {"type": "nothing (the function failed)"}
    with t.case(f"train_digits_classifier() returns a trained nn.Module within {TIME_BUDGET_S} s "
                f"(the check allows {t.exercise.time_limit_s:g} s)"):
        run = t.call(digits_run, fn, x.clone())
        if run["type"] != "Module":
            raise Mismatch(f"should return the trained model (an nn.Module), got {run['type']}"
                           + (" — return only the model, not a tuple with the history" if run["type"] == "tuple"
                              else ""))
        if run["seconds"] > t.exercise.time_limit_s:
            raise Mismatch(f"training took {run['seconds']:.0f} s, over the budget — fewer epochs, larger "
                           "batches or a smaller model (a small MLP needs a few seconds)")
    with t.case(f"accuracy on the {len(y)} shipped test images (B, 1, 8, 8) in [0, 1] is at least {MIN_ACCURACY}"):
        if run["type"] != "Module":
            raise Mismatch("no model to evaluate — train_digits_classifier() should return the trained nn.Module "
                           "(see the case above)")
        logits = run["logits"]
        if isinstance(logits, str):
            raise Mismatch("the model fails on a batch of test images of shape (360, 1, 8, 8), float32 in "
                           "[0, 1] — feed your model that layout while training (nn.Flatten() first for an "
                           "MLP; one grayscale channel, not RGB)", logits)
        if logits.shape != (len(y), 10):
            raise Mismatch(f"the model should return logits of shape (360, 10) for (360, 1, 8, 8) images, got "
                           f"{tuple(logits.shape)}")
        accuracy = _accuracy(logits, y)
        if accuracy >= MIN_ACCURACY:
            return
        if _accuracy(run["raw"], y) >= 0.9:
            advice = ("the model works on pixels in 0..255 but the check feeds values in [0, 1] — divide the "
                      "pixels by 255 when you train")
        elif _accuracy(run["sixteenths"], y) >= 0.9:
            advice = ("the model works on pixels in 0..16 (scikit-learn's load_digits scale) — train on the "
                      "shipped PNGs, divided by 255")
        elif accuracy < 0.2:
            advice = ("that is about chance (0.1): the model looks untrained — did the training loop run, and do "
                      "you return the model you trained?")
        else:
            advice = ("train longer or with a larger learning rate, shuffle the training data, and check the "
                      "training accuracy after each epoch")
        raise Mismatch(f"test accuracy {accuracy:.3f} is below {MIN_ACCURACY} — {advice}")
