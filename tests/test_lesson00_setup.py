"""pick_device: accepted when right (written independently of the solution), rejected for the usual mistakes."""
import pytest
import torch

from verdicts import assert_passes, assert_rejects


def pick_device_other(prefer=None):
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = torch.backends.mps.is_available()
    names = ["cpu", *(f"cuda:{i}" for i in range(cuda)), *(["mps"] if mps else [])]
    if prefer is None:
        return torch.device("cuda:0" if cuda else "mps" if mps else "cpu")
    if prefer == "cuda" and cuda:
        return torch.device("cuda")
    if prefer in names:
        return torch.device(prefer)
    raise ValueError(f"{prefer!r} is not available. Choose one of: {names}")


def test_independent_implementation_passes():
    assert_passes(pick_device_other, "pick_device")


def always_cpu(prefer=None):
    return torch.device("cpu")


def returns_strings(prefer=None):
    return str(pick_device_other(prefer))


def mps_before_cuda(prefer=None):
    if prefer is None and torch.backends.mps.is_available():
        return torch.device("mps")
    return pick_device_other(prefer)


def no_index_check(prefer=None):
    if prefer and prefer.startswith("cuda:") and torch.cuda.is_available():
        return torch.device(prefer)
    return pick_device_other(prefer)


def silent_error(prefer=None):
    try:
        return pick_device_other(prefer)
    except ValueError:
        raise ValueError("bad device") from None


def drops_index(prefer=None):
    return torch.device(pick_device_other(prefer).type)  # cuda:1 becomes cuda, which means the current GPU


def falls_back_quietly(prefer=None):
    try:
        return pick_device_other(prefer)
    except ValueError:
        return torch.device("cpu")


@pytest.mark.parametrize("wrong, fragments", [
    (always_cpu, ("returned cpu, expected cuda", "take cuda before falling back to cpu")),
    (returns_strings, ("torch.device", "str")),
    (mps_before_cuda, ("returned mps", "expected cuda", "cuda comes before mps")),
    (drops_index, ("returned cuda, expected cuda:1", "keep the index")),
    (no_index_check, ("cuda:2", "should raise ValueError")),
    (silent_error, ("should list the available devices",)),
    (falls_back_quietly, ("should raise ValueError", "returned normally", "'tpu' names no device")),
])
def test_wrong_implementations_are_rejected(wrong, fragments):
    assert_rejects(wrong, "pick_device", *fragments)


def stub(prefer=None):
    raise NotImplementedError()


def test_stub_is_not_attempted():
    from grader import evaluate
    report = evaluate(stub, name="pick_device")
    assert report.status == "not_attempted" and report.points == 0
