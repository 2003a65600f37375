"""What crosses between the trusted judge and a submission's sandbox: plain data, framed, never a pickle.

Every message is a tree of plain values encoded into tensors, lists, dicts, str, int, float, bool and None
(tuples, devices, dtypes, sizes and references become tagged dicts) and written with `torch.save`; the judge
reads the sandbox's messages only with `torch.load(weights_only=True)`. Anything else the learner's code
returns (a numpy array, a tensor subclass, an object with a clever `__eq__`) becomes a `Foreign` stand-in that
only carries its type name, so a check reports "should be a torch.Tensor, got ndarray" and nothing the learner
defined ever runs in the judge.
"""
from __future__ import annotations

import importlib
import io
import re
import select
import socket
import struct
import time

import torch

MAX_FRAME = 256 * 2**20  # bytes: a bigger reply is refused, not read
MAX_ITEMS = 200_000      # values in one tree
MAX_DEPTH = 32
TAG = "__w"
TRUSTED_MODULES = ("grader", "torch", "math", "operator", "builtins")


class WireError(Exception):
    """A message that breaks the protocol (too big, malformed, or the other side went away)."""


class Closed(WireError):
    """The other side closed the connection (its process ended)."""


class TimedOut(WireError):
    """No complete message before the deadline."""


# --- framing -------------------------------------------------------------------------------------------
def send(sock: socket.socket, tree) -> None:
    """Encode `tree` (already plain, see encode) and write it as one length-prefixed frame."""
    buf = io.BytesIO()
    torch.save(tree, buf)
    data = buf.getvalue()
    sock.sendall(struct.pack(">Q", len(data)) + data)


def recv(sock: socket.socket, deadline: float | None = None, limit: int = MAX_FRAME):
    """Read one frame and load it with torch.load(weights_only=True); Closed / TimedOut / WireError."""
    (size,) = struct.unpack(">Q", _read(sock, 8, deadline))
    if size > limit:
        raise WireError(f"a message of {size} bytes is over the limit of {limit}")
    data = _read(sock, size, deadline)
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location=None)
    except Exception as e:
        raise WireError(f"unreadable message: {type(e).__name__}") from None


def _read(sock: socket.socket, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                raise TimedOut("no reply in time")
        try:
            chunk = sock.recv(min(n - got, 1 << 20))
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            raise Closed("the other side closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --- values ---------------------------------------------------------------------------------------------
class LearnerRef:
    """Stands for the learner's object in the judge: the sandbox swaps in its own object of that name."""

    def __init__(self, name: str):
        self.name = self.__name__ = self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError("learner code runs only through Tester.call (the batch grader runs it elsewhere)")

    def __repr__(self) -> str:
        return f"<learner's {self.name}>"


class Foreign:
    """A value the learner's code returned that is not plain data: only its type name crossed over."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object>"


_FOREIGN_TYPES: dict[str, type] = {}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def foreign(type_name: str, tensor_subclass: bool = False):
    """A stand-in whose type is named like the learner's type (a tensor subclass stays a Tensor subclass)."""
    name = _SAFE_NAME.sub("_", str(type_name))[:40] or "object"
    if name[0].isdigit():
        name = "_" + name
    key = ("T:" if tensor_subclass else "O:") + name
    if key not in _FOREIGN_TYPES:
        base = (torch.Tensor,) if tensor_subclass else (Foreign,)
        _FOREIGN_TYPES[key] = type(name, base, {"__module__": "learner"})
    cls = _FOREIGN_TYPES[key]
    return torch.empty(0).as_subclass(cls) if tensor_subclass else cls()


def _plain_tensor(x: torch.Tensor):
    """A compact copy of a plain strided tensor, or a tagged description for meta tensors."""
    with torch._C.DisableTorchFunction():
        if x.device.type == "meta":
            return {TAG: "meta", "shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch."),
                    "grad": bool(x.requires_grad)}
        out = x.detach().clone()
    return out


def encode(value, refs=None, *, strict: bool = False):
    """A tree of plain values -> a tree torch.load(weights_only=True) can read back (see decode).

    `refs(value)` may turn values into references (the judge: the learner's placeholder, trusted
    functions); with strict=True anything not plain is an error (the judge's own arguments), otherwise it
    becomes a Foreign description of its type (the learner's results).
    """
    count = [0]

    def enc(x, depth):
        count[0] += 1
        if count[0] > MAX_ITEMS or depth > MAX_DEPTH:
            raise WireError("the value is too large or too deeply nested to send back")
        t = type(x)
        if x is None or t in (bool, int, float, str):
            return x
        if t is complex:
            return {TAG: "complex", "re": x.real, "im": x.imag}
        if refs is not None:
            ref = refs(x)
            if ref is not None:
                return ref
        if t is torch.Tensor:
            if x.layout != torch.strided:
                return {TAG: "foreign", "name": f"Tensor_{str(x.layout).removeprefix('torch.')}"}
            v = _plain_tensor(x)
            return v if type(v) is dict else {TAG: "tensor", "v": v, "grad": bool(x.requires_grad)}
        if isinstance(x, torch.Tensor):  # a subclass (Parameter, or one with __torch_function__)
            if strict:
                raise TypeError(f"cannot send a {t.__name__}")
            return {TAG: "foreign", "name": t.__name__, "tensor": True}
        if t is torch.device:
            return {TAG: "device", "v": str(x)}
        if t is torch.dtype:
            return {TAG: "dtype", "v": str(x).removeprefix("torch.")}
        if t is torch.Size:
            return {TAG: "size", "v": [int(d) for d in x]}
        if t is list:
            return [enc(v, depth + 1) for v in x]
        if t is tuple or (t.__module__ == "torch.return_types" and isinstance(x, tuple)):
            return {TAG: "tuple", "v": [enc(v, depth + 1) for v in x]}
        if t is dict:
            keys = list(x.keys())
            if all(type(k) in (str, int) for k in keys):
                return {TAG: "dict", "k": keys, "v": [enc(x[k], depth + 1) for k in keys]}
        if t is slice:
            return {TAG: "slice", "v": [enc(x.start, depth + 1), enc(x.stop, depth + 1), enc(x.step, depth + 1)]}
        if strict:
            raise TypeError(f"cannot send a {t.__name__} to the sandbox: checks pass plain data and "
                            "module-level functions only")
        return {TAG: "foreign", "name": t.__name__}

    return enc(value, 0)


def decode(tree, resolve=None):
    """The inverse of encode. `resolve(tag_dict)` turns references back into objects (the sandbox only);
    without it a reference is an error."""
    count = [0]

    def dec(x, depth):
        count[0] += 1
        if count[0] > MAX_ITEMS or depth > MAX_DEPTH:
            raise WireError("message too large or too deeply nested")
        t = type(x)
        if x is None or t in (bool, int, float, str):
            return x
        if t is list:
            return [dec(v, depth + 1) for v in x]
        if t is not dict or not isinstance(x.get(TAG), str):
            raise WireError(f"unexpected {t.__name__} in a message")
        tag = x[TAG]
        if tag == "tensor":
            v = x["v"]
            if type(v) is not torch.Tensor:
                raise WireError("bad tensor")
            return v.requires_grad_(bool(x["grad"])) if v.dtype.is_floating_point or v.dtype.is_complex else v
        if tag == "meta":
            dtype = getattr(torch, str(x["dtype"]), None)
            if type(dtype) is not torch.dtype or type(x["shape"]) is not list:
                raise WireError("bad meta tensor")
            v = torch.empty([int(d) for d in x["shape"]], dtype=dtype, device="meta")
            return v.requires_grad_(bool(x["grad"])) if dtype.is_floating_point else v
        if tag == "tuple":
            return tuple(dec(v, depth + 1) for v in x["v"])
        if tag == "dict":
            keys, values = x["k"], x["v"]
            if type(keys) is not list or type(values) is not list or len(keys) != len(values) or \
                    not all(type(k) in (str, int) for k in keys):
                raise WireError("bad dict")
            return {k: dec(v, depth + 1) for k, v in zip(keys, values)}
        if tag == "device":
            return torch.device(str(x["v"]))
        if tag == "dtype":
            dtype = getattr(torch, str(x["v"]), None)
            if type(dtype) is not torch.dtype:
                raise WireError("bad dtype")
            return dtype
        if tag == "size":
            return torch.Size([int(d) for d in x["v"]])
        if tag == "complex":
            return complex(float(x["re"]), float(x["im"]))
        if tag == "slice":
            return slice(*(dec(v, depth + 1) for v in x["v"]))
        if tag == "foreign":
            return foreign(str(x["name"]), tensor_subclass=bool(x.get("tensor")))
        if resolve is not None and tag in ("learner", "ref"):
            return resolve(x)
        raise WireError(f"unexpected {tag!r} in a message")

    return dec(tree, 0)


# --- references to trusted functions and classes ---------------------------------------------------------
def trusted_ref(obj):
    """{"__w": "ref", ...} for a module-level function or class of a trusted module, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module.split(".")[0] not in TRUSTED_MODULES:
        return None
    try:
        if resolve_ref(module, qualname) is not obj:
            return None
    except Exception:
        return None
    return {TAG: "ref", "mod": module, "qual": qualname}


def resolve_ref(module: str, qualname: str):
    """The object a trusted reference names."""
    if module.split(".")[0] not in TRUSTED_MODULES:
        raise WireError(f"untrusted module {module!r}")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
