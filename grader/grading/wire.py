"""What crosses between the trusted judge and a submission's sandbox: plain data, framed, never a pickle.

Every message is a tree of plain values encoded into tensors, lists, dicts, str, int, float, bool and None
(tuples, devices, dtypes, sizes and references become tagged dicts) and written with `torch.save`; the judge
reads the sandbox's messages only with `torch.load(weights_only=True)`. Anything else the learner's code
returns (a numpy array, a tensor subclass, an object with a clever `__eq__`) becomes a `Foreign` stand-in that
only carries its type name, so a check reports "should be a torch.Tensor, got ndarray" and nothing the learner
defined ever runs in the judge.
"""
from __future__ import annotations

import collections
import importlib
import io
import re
import select
import socket
import struct
import time
from collections.abc import Mapping

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
    why = ""  # set when the value looked like data but could not be carried (see unsendable)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object>"


_STAND_INS: dict[tuple, type] = {}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]")


def _safe(name: str) -> str:
    name = _SAFE_NAME.sub("_", str(name))[:40] or "object"
    return "_" + name if name[0].isdigit() else name


def _stand_in(key: tuple, name: str, bases: tuple, body: dict | None = None) -> type:
    """One type per (kind, name): named like the learner's type, defined here, so nothing of theirs runs."""
    if key not in _STAND_INS:
        _STAND_INS[key] = type(_safe(name), bases, {"__module__": "learner", **(body or {})})
    return _STAND_INS[key]


def foreign(type_name: str, tensor_subclass: bool = False, why: str = ""):
    """A stand-in whose type is named like the learner's type (a tensor subclass stays a Tensor subclass)."""
    if tensor_subclass:
        return torch.empty(0).as_subclass(_stand_in(("T", type_name), type_name, (torch.Tensor,)))
    out = _stand_in(("O", type_name), type_name, (Foreign,))()
    out.why = why
    return out


def subclass_of(base: type, type_name: str):
    """A numpy.float64 stays a float named float64: isinstance(x, float) holds, type(x) is float does not."""
    return _stand_in(("S", base.__name__, type_name), type_name, (base,))


def mapping_type(type_name: str) -> type:
    """An OrderedDict comes back as one; any other mapping (a BatchEncoding...) as a dict named like it, whose
    keys also read as attributes, as a BatchEncoding's do."""
    if type_name == "OrderedDict":
        return collections.OrderedDict

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None
    return _stand_in(("M", type_name), type_name, (dict,), {"__getattr__": __getattr__})


def named_tuple(type_name: str, fields, values: tuple) -> tuple:
    """torch.return_types come back as themselves; a namedtuple as a namedtuple with the same fields."""
    if type_name.startswith("torch.return_types."):
        cls = getattr(torch.return_types, type_name.rsplit(".", 1)[1], None)
        if isinstance(cls, type) and issubclass(cls, tuple):
            return cls(values)
    if type(fields) is list and len(fields) == len(values) and all(type(f) is str for f in fields):
        key = ("N", type_name, *fields)
        if key not in _STAND_INS:
            _STAND_INS[key] = collections.namedtuple(_safe(type_name), fields, rename=True, module="learner")
        return _STAND_INS[key](*values)
    return _stand_in(("U", type_name), type_name, (tuple,))(values)


def unsendable(value) -> str:
    """Why part of a decoded value could not be carried back ("" when all of it could)."""
    if isinstance(value, Foreign):
        return value.why
    if isinstance(value, (list, tuple, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            why = unsendable(v)
            if why:
                return why
    return ""


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
        if isinstance(x, tuple):
            out = {TAG: "tuple", "v": [enc(v, depth + 1) for v in x]}
            if t is not tuple:  # a named tuple, or one of torch's (values, indices) results
                fields = getattr(t, "_fields", None)
                out["type"] = f"{t.__module__}.{t.__name__}" if t.__module__ == "torch.return_types" else t.__name__
                if isinstance(fields, tuple) and len(fields) == len(x) and all(type(f) is str for f in fields):
                    out["fields"] = list(fields)
            return out
        if isinstance(x, Mapping):
            keys = list(x.keys())
            if all(type(k) in (str, int) for k in keys):
                out = {TAG: "dict", "k": keys, "v": [enc(x[k], depth + 1) for k in keys]}
                if t is not dict:  # an OrderedDict (every state_dict()), a BatchEncoding, ...
                    out["type"] = t.__name__
                return out
            if strict:
                raise TypeError("cannot send a mapping whose keys are not all str or int")
            return {TAG: "foreign", "name": t.__name__,
                    "why": f"a {t.__name__} whose keys are not all str or int"}
        if isinstance(x, (bool, int, float, str)):  # a subclass: numpy.float64, an IntEnum, ...
            base = next(b for b in (bool, int, float, str) if isinstance(x, b))
            return {TAG: "scalar", "base": base.__name__, "v": base(x), "type": t.__name__}
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
            values = tuple(dec(v, depth + 1) for v in x["v"])
            return values if "type" not in x else named_tuple(str(x["type"]), x.get("fields"), values)
        if tag == "dict":
            keys, values = x["k"], x["v"]
            if type(keys) is not list or type(values) is not list or len(keys) != len(values) or \
                    not all(type(k) in (str, int) for k in keys):
                raise WireError("bad dict")
            items = ((k, dec(v, depth + 1)) for k, v in zip(keys, values))
            return dict(items) if "type" not in x else mapping_type(str(x["type"]))(items)
        if tag == "scalar":
            base = {"bool": bool, "int": int, "float": float, "str": str}.get(x.get("base"))
            if base is None or type(x["v"]) is not base:
                raise WireError("bad scalar")
            return x["v"] if base is bool else subclass_of(base, str(x["type"]))(x["v"])
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
            return foreign(str(x["name"]), tensor_subclass=bool(x.get("tensor")), why=str(x.get("why", "")))
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
