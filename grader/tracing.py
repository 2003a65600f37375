"""Watching the torch calls a learner's code makes: forbidden functions and mixed-device operations.

A `TorchFunctionMode` sees every torch function and Tensor method the learner calls directly (calls made
inside torch's own functions are not re-traced), on every device, whatever namespace the call came from.
It also follows the learner into a custom `autograd.Function`'s backward, which the autograd engine runs.

Plain-Python functions and classes (torch.broadcast_shapes, torch.optim.SGD, torch.func.jacrev) never reach the
mode. A forbidden key with a dot names such an object by its import path; while the tracer is active the object
itself refuses to run (a function's code is swapped, a class's __init__ replaced), so every alias refuses too,
even one the learner bound before the check started. `untraced()` lifts the refusals for the check's own code.
"""
from __future__ import annotations

import functools
import importlib
import types
from contextlib import contextmanager

import torch
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

# Operator and method aliases that reach the same computation under another name.
_ALIASES = {"rmatmul": "matmul", "imatmul": "matmul"}

# Ops that legitimately take tensors from several devices (CUDA accepts CPU index tensors, copies, moves).
MIXED_DEVICE_OK = {"to", "copy", "getitem", "setitem", "index_put", "get", "type_as", "new_tensor", "set",
                    "has_compatible_shallow_copy_type"}  # the last: Module.to() asking how to move a parameter

# Packed-sequence ops take their lengths and batch_sizes as CPU int64 tensors beside tensors on the module's
# device, on a GPU too: there CPU int64 tensors do not count as a device (everything else must share one).
PACKED_OPS = {"pack_padded_sequence", "pad_packed_sequence", "rnn_tanh", "rnn_relu", "lstm", "gru"}


def _counts_as_device(name: str, t: torch.Tensor) -> bool:
    """False for CPU tensors that mix with any device: 0-dim ones (CUDA takes them as scalars) and the int64
    lengths and batch_sizes of PACKED_OPS."""
    return t.device.type != "cpu" or not (t.ndim == 0 or (name in PACKED_OPS and t.dtype == torch.int64))


# Reductions that drop the reduced dimension unless keepdim=True (positional keepdim is their third argument).
_REDUCTIONS = {"sum", "mean", "amax", "amin", "max", "min", "logsumexp", "norm", "std", "var", "prod", "median",
               "nansum", "nanmean", "linalg_vector_norm", "vector_norm", "argmax", "argmin", "all", "any"}


def _drops_dim(name: str, args: tuple, kwargs: dict) -> bool:
    """A reduction over a given dim, without keepdim=True (x.max(y) with a tensor y is element-wise: no)."""
    if name not in _REDUCTIONS:
        return False
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 and isinstance(args[2], bool) else False)
    return dim is not None and not isinstance(dim, torch.Tensor) and not keepdim


# Calls that read a tensor's values out to the CPU or to Python; on the meta device they get stand-in values.
# Python numbers stand in as 1 (no division by zero), tensors and lists as 0 (valid indices).
_NUMBERS = {"item", "__float__", "__int__", "__index__", "__bool__"}
_READ_OUT = _NUMBERS | {"tolist", "numpy", "cpu"}


def _leaves_meta(func, name: str, args: tuple, kwargs: dict) -> bool:
    """The call reads a meta tensor's values out (x.item(), float(x), x.cpu(), x.to("cpu"), x.numpy())."""
    if getattr(func, "__name__", "") in _NUMBERS or name in _READ_OUT:
        return True
    if name != "to":
        return False
    targets = [a for a in (*args[1:], kwargs.get("device")) if isinstance(a, (str, torch.device, torch.Tensor))]
    return any((a.device if isinstance(a, torch.Tensor) else torch.device(a)).type == "cpu" for a in targets)


# In-place fills of a tensor from another device's data (x[:] = y, x.copy_(y)).
_FILLS = {"setitem", "copy"}


# Ops a Python operator reaches (the mode sees `a @ b` as matmul itself): named in the message too.
_OPERATORS = {"matmul": "@"}


def canonical_name(func) -> str:
    """`torch.Tensor.__matmul__`, `torch.matmul`, `Tensor.add_`, `torch.ops.aten.softmax.int` -> 'matmul',
    'matmul', 'add', 'softmax' (an operator overload counts as its op)."""
    name = getattr(func, "__name__", "") or ""
    name = name.split(".")[0].strip("_")
    return _ALIASES.get(name, name)


def _as_written(name: str) -> str:
    """' (or the @ operator)' for an op that an operator reaches, else ''."""
    return f" (or the {_OPERATORS[name]} operator)" if name in _OPERATORS else ""


class ForbiddenCall(BaseException):
    """Raised inside the learner's code; a BaseException so that `except Exception` cannot swallow it."""

    def __init__(self, name: str, advice: str, via: str = ""):
        super().__init__(name)
        self.name, self.advice, self.via = name, advice, via


class MixedDevices(BaseException):
    """An op received tensors from two devices: it would fail on CUDA."""

    def __init__(self, name: str, devices: set[str]):
        super().__init__(name)
        self.name, self.devices = name, devices


def python_forbidden(forbidden: dict[str, str]) -> dict[str, str]:
    """The keys of `forbidden` that name Python objects by import path ('torch.vmap'), not torch op names."""
    return {key: advice for key, advice in forbidden.items() if "." in key}


@functools.cache
def _resolve(path: str):
    """The object at an import path: 'torch.optim.SGD' -> the class (None when this torch has no such thing)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
        return obj
    return None


@functools.cache
def _refusing_code(path: str, freevars: tuple[str, ...]) -> types.CodeType:
    """The code of a function that raises ForbiddenCall for `path`, with the same free variables as the code it
    replaces (a function's code can only be swapped for one with as many). It reaches back here by import, since
    it runs with the forbidden function's globals."""
    touch = f"        ({', '.join(freevars)},)\n" if freevars else ""
    source = ("def outer():\n" + "".join(f"    {v} = None\n" for v in freevars)
              + "    def refuse(*args, **kwargs):\n" + touch
              + f"        __import__('grader.tracing', fromlist=['refuse']).refuse({path!r})\n"
              + "    return refuse\n")
    namespace: dict = {}
    exec(compile(source, f"<forbidden {path}>", "exec"), namespace)
    return namespace["outer"]().__code__


class _Refusals:
    """Makes the Python objects named by import path refuse to run, and puts them back."""

    def __init__(self, paths):
        self.saved: list[tuple] = []
        for path in paths:
            obj = _resolve(path)
            if isinstance(obj, type):
                self.saved.append((obj, "__init__", obj.__dict__.get("__init__"), _refusing_init(path)))
            elif isinstance(obj, types.FunctionType):
                code = _refusing_code(path, obj.__code__.co_freevars)
                self.saved.append((obj, "__code__", obj.__code__, code))
            elif obj is not None:  # a builtin: only the name itself can refuse
                module, _, attr = path.rpartition(".")
                self.saved.append((_resolve(module), attr, obj, _Refuse(path)))

    def apply(self) -> None:
        for target, attr, _, refusing in self.saved:
            setattr(target, attr, refusing)

    def restore(self) -> None:
        for target, attr, original, _ in reversed(self.saved):
            if original is None:
                delattr(target, attr)
            else:
                setattr(target, attr, original)


def _refusing_init(path: str):
    def __init__(self, *args, **kwargs):
        refuse(path)
    return __init__


class _Refuse:
    def __init__(self, path: str):
        self.path = path

    def __call__(self, *args, **kwargs):
        refuse(self.path)


_ACTIVE: list["Tracer"] = []  # the tracers now running learner code, innermost last


def current() -> "Tracer | None":
    """The tracer now running learner code (the innermost), if any."""
    return _ACTIVE[-1] if _ACTIVE else None


def refuse(path: str):
    """Called by a forbidden Python object instead of its own code: record and raise the violation."""
    tracer = current()
    advice = tracer.forbidden.get(path, "") if tracer else ""
    violation = ForbiddenCall(path, advice)
    if tracer is not None:
        tracer.violation = violation
    raise violation


@contextmanager
def lifted():
    """Inside: the forbidden Python objects work again (the check's own bookkeeping, not the learner's)."""
    tracer = current()
    if tracer is None or tracer.refusals is None:
        yield
        return
    tracer.refusals.restore()
    try:
        yield
    finally:
        tracer.refusals.apply()


_ENGINE_APPLY = BackwardCFunction.apply


def _traced_backward(node, *args):
    """The autograd engine's entry into a custom Function's backward: a learner's backward (one defined outside
    torch) runs under the active tracer, like the rest of the learner's code."""
    tracer = current()
    if tracer is None or node._forward_cls.__module__.startswith("torch"):
        return _ENGINE_APPLY(node, *args)
    with tracer:
        return _ENGINE_APPLY(node, *args)


class Tracer(TorchFunctionMode):
    """Records the torch calls made while active; stops forbidden calls and, optionally, mixed devices."""

    def __init__(self, forbidden: dict[str, str] | None = None, watch_devices: bool = False):
        super().__init__()
        self.forbidden = forbidden or {}
        self.watch_devices = watch_devices
        self.called: list[str] = []
        self.violation: ForbiddenCall | None = None
        self.refusals: _Refusals | None = None
        self.depth = 0
        self.dropped_dim = False  # some reduction dropped its dim (no keepdim=True): a broadcast error's likely cause

    def __enter__(self):
        self.depth += 1
        if self.depth == 1:  # the outermost entry; a backward re-enters the same tracer
            paths = python_forbidden(self.forbidden)
            self.refusals = _Refusals(paths) if paths else None
            if self.refusals:
                self.refusals.apply()
            _ACTIVE.append(self)
            BackwardCFunction.apply = _traced_backward
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self.depth -= 1
            if self.depth == 0:
                _ACTIVE.remove(self)
                if not _ACTIVE:
                    BackwardCFunction.apply = _ENGINE_APPLY
                if self.refusals:
                    self.refusals.restore()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        self.called.append(name)
        self.dropped_dim = self.dropped_dim or _drops_dim(name, args, kwargs)
        if name in self.forbidden:
            self.violation = ForbiddenCall(name, self.forbidden[name], _as_written(name))
            raise self.violation
        if self.watch_devices and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "meta" \
                and _leaves_meta(func, name, args, kwargs):
            # A meta tensor holds no values to read or copy out: stand-in values, so that the rerun goes on to
            # where tensors meet. (On a GPU these calls give CPU data too.)
            fill = torch.ones if name in _NUMBERS or getattr(func, "__name__", "") in _NUMBERS else torch.zeros
            return func(fill(args[0].shape, dtype=args[0].dtype), *args[1:], **kwargs)
        if self.watch_devices:
            devices = {t.device.type for t in tree_leaves((args, kwargs))
                       if isinstance(t, torch.Tensor) and _counts_as_device(name, t)}
            if len(devices) > 1 and name in _FILLS and args[0].device.type == "cpu":
                # Filling a CPU tensor from the input's device works on a GPU too, but meta tensors hold no
                # data to copy: skip the copy, so that where the CPU tensor ends up can still be seen.
                return args[0] if name == "copy" else None
            if len(devices) > 1 and name not in MIXED_DEVICE_OK:
                raise MixedDevices(name, devices)
        return func(*args, **kwargs)
