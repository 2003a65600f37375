"""Checks for 00_setup."""
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch

from grader.compare import Mismatch, expect_value
from grader.registry import exercise


@contextmanager
def simulated(cuda: int = 0, mps: bool = False):
    """Pretend the machine has `cuda` GPUs and/or an Apple GPU, whatever it really has."""
    with ExitStack() as stack:
        patch = lambda target, value: stack.enter_context(mock.patch(target, return_value=value))
        patch("torch.cuda.is_available", cuda > 0)
        patch("torch.cuda.device_count", cuda)
        patch("torch.backends.mps.is_available", mps)
        if hasattr(torch, "accelerator"):
            accel = torch.device("cuda") if cuda else torch.device("mps") if mps else None
            patch("torch.accelerator.is_available", accel is not None)
            patch("torch.accelerator.current_accelerator", accel)
            patch("torch.accelerator.device_count", cuda if cuda else int(mps))
        yield


def pick_on(fn, machine: dict, *args):
    """Driver: call the learner's pick_device on a simulated machine."""
    with simulated(**machine):
        return fn(*args)


def _expect_device(got, want: str) -> None:
    if not isinstance(got, torch.device):
        raise Mismatch(f"should return a torch.device, got {type(got).__name__} {got!r} — wrap it: torch.device(...)")
    want = torch.device(want)
    same = got.type == want.type and (got.index == want.index or {got.index, want.index} <= {None, 0})
    if not same:
        raise Mismatch(f"returned {got}, expected {want}")


def _machines(gpus: int) -> dict:
    """The simulated machines, one of them with `gpus` CUDA GPUs."""
    return {
        "a CPU-only machine": dict(),
        f"a machine with {gpus} CUDA GPUs": dict(cuda=gpus),
        "a Mac with an Apple GPU (mps)": dict(mps=True),
        "a machine with 1 CUDA GPU and mps": dict(cuda=1, mps=True),
    }


@exercise("00_setup", points=1, difficulty=1, minutes=10, hints=[
    "Start with the default: no preference → try torch.cuda.is_available(), then "
    "torch.backends.mps.is_available(), else 'cpu'.",
    "For a preference, parse it first: d = torch.device(prefer) raises RuntimeError for nonsense strings, "
    "so catch that and raise ValueError instead. Then look at d.type and d.index.",
    "A CUDA index is valid when it is below torch.cuda.device_count(). Build the list of available devices "
    "once (['cpu', 'cuda:0', ...]) and use it both to decide and for the error message.",
])
def pick_device(t, fn):
    for machine, kind in _machines(t.unseen(2, 3, 9)).items():
        cuda, mps = kind.get("cuda", 0), kind.get("mps", False)
        default = "cuda" if cuda else "mps" if mps else "cpu"
        available = ["cpu"] + [f"cuda:{i}" for i in range(cuda)] + (["mps"] if mps else [])
        with t.case(f"{machine}: pick_device() → {default}"):
            _expect_device(t.call(pick_on, fn, kind), default)
        with t.case(f"{machine}: pick_device(None) → {default}"):
            _expect_device(t.call(pick_on, fn, kind, None), default)
        for prefer in available + (["cuda"] if cuda else []):
            with t.case(f"{machine}: pick_device({prefer!r})"):
                _expect_device(t.call(pick_on, fn, kind, prefer), prefer)
        unavailable = ["tpu", "gpu", ""] + ([] if cuda else ["cuda", "cuda:0"]) + \
                      ([f"cuda:{cuda}"] if cuda else []) + ([] if mps else ["mps"])
        for prefer in unavailable:
            with t.case(f"{machine}: pick_device({prefer!r}) raises ValueError listing {available}"):
                error = str(t.raises(ValueError, pick_on, fn, kind, prefer))
                missing = [d.split(":")[0] for d in available if d.split(":")[0] not in error]
                if missing:
                    raise Mismatch(f"the ValueError should list the available devices; {missing[0]!r} "
                                   "is not in its message")
    with t.case("this machine: pick_device() returns a torch.device you can use"):
        got = t.call(fn)
        expect_value(isinstance(got, torch.device), True, what="isinstance(pick_device(), torch.device)")
        torch.zeros(1, device=got)
