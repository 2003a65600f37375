"""Checks for 00_setup."""
from contextlib import contextmanager

import torch

from grader.compare import Mismatch
from grader.registry import exercise


@contextmanager
def simulated(cuda: int = 0, mps: bool = False):
    """Pretend the machine has `cuda` GPUs and/or an Apple GPU, whatever it really has."""
    answers = [(torch.cuda, "is_available", cuda > 0), (torch.cuda, "device_count", cuda),
               (torch.backends.mps, "is_available", mps)]
    if hasattr(torch, "accelerator"):
        accel = torch.device("cuda") if cuda else torch.device("mps") if mps else None
        answers += [(torch.accelerator, "is_available", accel is not None),
                    (torch.accelerator, "current_accelerator", accel),
                    (torch.accelerator, "device_count", cuda if cuda else int(mps))]
    saved = [(module, name, getattr(module, name)) for module, name, _ in answers]
    try:
        for module, name, value in answers:  # plain functions: far cheaper than mock.patch's MagicMocks
            setattr(module, name, lambda *args, value=value, **kwargs: value)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def pick_on(fn, machine: dict, *args):
    """Driver: call the learner's pick_device on a simulated machine."""
    with simulated(**machine):
        return fn(*args)


def _expect_device(got, want: str, prefer: str | None = None) -> None:
    if not isinstance(got, torch.device):
        raise Mismatch(f"should return a torch.device, got {type(got).__name__} {got!r} — wrap it: torch.device(...)")
    want = torch.device(want)
    same = got.type == want.type and (got.index == want.index or {got.index, want.index} <= {None, 0})
    if same:
        return
    if prefer is not None:
        why = (f"keep the index the learner asked for: torch.device({prefer!r}) has it" if got.type == want.type else
               f"{prefer!r} is available on this machine, so return it: torch.device(prefer)")
    elif got.type == "cpu":
        why = (f"{'torch.cuda.is_available()' if want.type == 'cuda' else 'torch.backends.mps.is_available()'} "
               f"is True here: without a preference, take {want.type} before falling back to cpu")
    elif got.type == "mps" and want.type == "cuda":
        why = "cuda comes before mps when both are available"
    else:
        why = f"{got.type} is not available on this machine: without a preference, try cuda, then mps, then cpu"
    raise Mismatch(f"returned {got}, expected {want} — {why}")


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
                _expect_device(t.call(pick_on, fn, kind, prefer), prefer, prefer)
        unavailable = ["tpu", "gpu", ""] + ([] if cuda else ["cuda", "cuda:0"]) + \
                      ([f"cuda:{cuda}"] if cuda else []) + ([] if mps else ["mps"])
        for prefer in unavailable:
            with t.case(f"{machine}: pick_device({prefer!r}) raises ValueError listing {available}"):
                try:
                    error = str(t.raises(ValueError, pick_on, fn, kind, prefer))
                except Mismatch as e:
                    if "returned normally" not in e.message:
                        raise
                    why = "names no device" if prefer in ("tpu", "gpu", "") else "is not available on this machine"
                    raise Mismatch(f"{e.message} — {prefer!r} {why}: raise ValueError and list the available "
                                   f"devices ({', '.join(available)})") from None
                missing = [d.split(":")[0] for d in available if d.split(":")[0] not in error]
                if missing:
                    raise Mismatch(f"the ValueError should list the available devices; {missing[0]!r} "
                                   "is not in its message")
    with t.case("this machine: pick_device() returns a torch.device you can use"):
        got = t.call(fn)
        if not isinstance(got, torch.device):
            raise Mismatch(f"should return a torch.device, got {type(got).__name__} {got!r} — wrap it: "
                           "torch.device(...)")
        try:
            torch.zeros(1, device=got)
        except (RuntimeError, AssertionError) as e:
            raise Mismatch(f"returned {got}, which this machine cannot use — check availability with "
                           f"torch.cuda.is_available() / torch.backends.mps.is_available() first ({e})") from None
