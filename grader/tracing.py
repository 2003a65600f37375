"""Watching the torch calls a learner's code makes: forbidden functions and mixed-device operations.

A `TorchFunctionMode` sees every torch function and Tensor method the learner calls directly (calls made
inside torch's own functions are not re-traced), on every device, whatever namespace the call came from.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

# Operator and method aliases that reach the same computation under another name.
_ALIASES = {"rmatmul": "matmul", "imatmul": "matmul"}

# Ops that legitimately take tensors from several devices (CUDA accepts CPU index tensors, copies, moves).
_MIXED_DEVICE_OK = {"to", "copy", "getitem", "setitem", "index_put", "get", "type_as", "new_tensor", "set",
                    "has_compatible_shallow_copy_type"}  # the last: Module.to() asking how to move a parameter


# In-place fills of a tensor from another device's data (x[:] = y, x.copy_(y)).
_FILLS = {"setitem", "copy"}


def canonical_name(func) -> str:
    """`torch.Tensor.__matmul__`, `torch.matmul`, `Tensor.add_` -> 'matmul', 'matmul', 'add'."""
    name = getattr(func, "__name__", "") or ""
    name = name.strip("_")
    return _ALIASES.get(name, name)


class ForbiddenCall(BaseException):
    """Raised inside the learner's code; a BaseException so that `except Exception` cannot swallow it."""

    def __init__(self, name: str, advice: str):
        super().__init__(name)
        self.name, self.advice = name, advice


class MixedDevices(BaseException):
    """An op received tensors from two devices: it would fail on CUDA."""

    def __init__(self, name: str, devices: set[str]):
        super().__init__(name)
        self.name, self.devices = name, devices


class Tracer(TorchFunctionMode):
    """Records the torch calls made while active; stops forbidden calls and, optionally, mixed devices."""

    def __init__(self, forbidden: dict[str, str] | None = None, watch_devices: bool = False):
        super().__init__()
        self.forbidden = forbidden or {}
        self.watch_devices = watch_devices
        self.called: list[str] = []
        self.violation: ForbiddenCall | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        self.called.append(name)
        if name in self.forbidden:
            self.violation = ForbiddenCall(name, self.forbidden[name])
            raise self.violation
        if self.watch_devices:
            # 0-dim CPU tensors mix with any device (CUDA accepts them as scalars), so they do not count.
            devices = {t.device.type for t in tree_leaves((args, kwargs))
                       if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.ndim == 0)}
            if len(devices) > 1 and name in _FILLS and args[0].device.type == "cpu":
                # Filling a CPU tensor from the input's device works on a GPU too, but meta tensors hold no
                # data to copy: skip the copy, so that where the CPU tensor ends up can still be seen.
                return args[0] if name == "copy" else None
            if len(devices) > 1 and name not in _MIXED_DEVICE_OK:
                raise MixedDevices(name, devices)
        return func(*args, **kwargs)
