"""Strict comparison of a learner's result with the reference, with a diagnosis of the likely mistake."""
from __future__ import annotations

import math

import torch


class Mismatch(Exception):
    """A case failed. `message` is for the learner; `detail` holds values, hidden from hidden cases; `code`
    names the mistake where the check knows it (else report.mistake_of makes one from the message)."""

    def __init__(self, message: str, detail: str = "", code: str = ""):
        super().__init__(message)
        self.message, self.detail, self.code = message, detail, code


def shape_str(shape) -> str:
    return str(tuple(shape))


def one_line(e: BaseException) -> str:
    """An exception's message on one line, cut short, for a case message."""
    return " ".join(str(e).split())[:300]


def kind_of(value) -> str:
    """What a learner's code returned, in a word: "None", "tuple", "Tensor"."""
    return "None" if value is None else type(value).__name__


def _shape_advice(got: torch.Size, exp: torch.Size) -> str:
    g, e = tuple(got), tuple(exp)
    if not g and e:
        return " — one number where a tensor of that shape is expected: something reduced it (a sum() or mean() " \
               "too many, or reduction='none' ignored?) — return the element-wise result"
    if len(g) + 1 == len(e) and any(e[:i] + e[i + 1:] == g for i in range(len(e)) if e[i] == 1):
        return " — a size-1 dimension is missing: keepdim=True, or unsqueeze?"
    if len(g) == len(e) + 1 and any(g[:i] + g[i + 1:] == e for i in range(len(g)) if g[i] == 1):
        return " — there is an extra size-1 dimension: squeeze it, or keepdim=False?"
    if len(g) > len(e) and g[:len(e)] == e:
        return f" — extra trailing dimensions {g[len(e):]}: a reduction (sum/mean over dim) missing?"
    if len(g) == len(e) and g == e[::-1]:
        return " — transposed?"
    if math.prod(g) > math.prod(e) and len(g) >= len(e):
        return " — larger than expected: an accidental broadcast?"
    if math.prod(g) == math.prod(e):
        return " — same number of elements, different layout: check reshape/view/transpose"
    return ""


def _where(diff: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.unravel_index(diff.flatten().argmax(), diff.shape)) if diff.ndim else ()


def expect_tensor(got, exp: torch.Tensor, *, atol: float = 1e-6, rtol: float = 1e-5,
                  device: torch.device | str | None = None, what: str = "the result") -> None:
    """Raise Mismatch unless `got` is a plain tensor of exp's shape and dtype on `device`, close to `exp`."""
    if not isinstance(got, torch.Tensor):
        hint = " — did you return a Python number, or forget a `return`?" if got is None or isinstance(
            got, (int, float)) else ""
        name = type(got).__name__
        if type(got).__module__ == "torch.return_types":  # x.max(dim) and friends return (values, indices)
            name, hint = f"torch.return_types.{name}", f" — take its .values ({name}(...).values)"
        raise Mismatch(f"{what} should be a torch.Tensor, got {name}{hint}")
    if type(got) is not torch.Tensor:
        raise Mismatch(f"{what} should be a plain torch.Tensor, got the subclass {type(got).__name__}"
                       " — return a tensor computed with torch operations (e.g. .detach() a Parameter)")
    want_device = torch.device(device) if device is not None else exp.device
    if got.device.type != want_device.type:
        raise Mismatch(f"{what} is on {got.device.type}, but the inputs are on {want_device.type}"
                       " — create new tensors with device=x.device (or use *_like / x.new_*)", code="wrong-device")
    if got.shape != exp.shape:
        raise Mismatch(f"{what}: expected shape {shape_str(exp.shape)}, got {shape_str(got.shape)}"
                       + _shape_advice(got.shape, exp.shape))
    if got.dtype != exp.dtype:
        advice = ""
        if exp.dtype.is_floating_point and not got.dtype.is_floating_point:
            advice = " — an integer result where floats are expected: integer division, or a dtype lost?"
        elif got.dtype.is_floating_point and exp.dtype.is_floating_point:
            advice = " — keep the input's floating dtype (don't hard-code float32 or call .float())"
        elif exp.dtype == torch.bool:
            advice = " — return the comparison itself (a bool tensor), not a converted copy"
        raise Mismatch(f"{what}: expected dtype {exp.dtype}, got {got.dtype}{advice}")
    if exp.numel() == 0:
        return
    got_c, exp_c = got.detach().cpu(), exp.detach().cpu()
    if exp.dtype.is_floating_point or exp.dtype.is_complex:
        bad_nan = torch.isnan(got_c) & ~torch.isnan(exp_c)
        if bad_nan.any():
            raise Mismatch(f"{what} has nan where the answer is finite (at {_where(bad_nan.to(torch.uint8))})"
                           " — an overflow, 0/0, or sqrt/log of a negative number?")
        bad_inf = torch.isinf(got_c) & ~torch.isinf(exp_c)
        if bad_inf.any():
            raise Mismatch(f"{what} has inf where the answer is finite (at {_where(bad_inf.to(torch.uint8))})"
                           " — exp() or a division overflowed: rescale before exponentiating")
        close = torch.isclose(got_c, exp_c, atol=atol, rtol=rtol, equal_nan=True)
        if not close.all():
            diff = (got_c - exp_c).abs().nan_to_num(0.0)
            at = _where(diff)
            want, have = exp_c[at].item(), got_c[at].item()
            if f"{want:.6g}" != f"{have:.6g}":
                want, have = f"{want:.6g}", f"{have:.6g}"  # else every digit, to show where they part
            raise Mismatch(f"{what}: wrong values ({int((~close).sum())} of {exp.numel()} differ, "
                           f"largest error {diff.max().item():.3g})", f"at index {at}: expected {want}, got {have}")
    else:
        wrong = got_c != exp_c
        if wrong.any():
            at = _where(wrong.to(torch.uint8))
            raise Mismatch(f"{what}: wrong values ({int(wrong.sum())} of {exp.numel()} differ)",
                           f"at index {at}: expected {exp_c[at].tolist()}, got {got_c[at].tolist()}")


def expect_value(got, exp, *, what: str = "the result") -> None:
    """Raise Mismatch unless `got` equals the plain Python value `exp` and has its exact type."""
    if isinstance(got, torch.Tensor) and not isinstance(exp, torch.Tensor):
        raise Mismatch(f"{what} should be a Python {type(exp).__name__}, got a tensor — use .item() or .tolist()"
                       if got.ndim == 0 or isinstance(exp, (int, float)) else
                       f"{what} should be a {type(exp).__name__}, got a tensor")
    if type(got) is not type(exp):
        raise Mismatch(f"{what} should be a {type(exp).__name__}, got {type(got).__name__}")
    if isinstance(exp, float):
        if not math.isclose(got, exp, rel_tol=1e-9, abs_tol=1e-12):
            raise Mismatch(f"{what} is wrong", f"expected {exp!r}, got {got!r}")
    elif isinstance(exp, (tuple, list)):
        if len(got) != len(exp):
            raise Mismatch(f"{what} should have {len(exp)} entries, got {len(got)}", f"expected {exp!r}, got {got!r}")
        for i, (g, e) in enumerate(zip(got, exp)):
            expect_value(g, e, what=f"{what}[{i}]")
    elif got != exp:
        raise Mismatch(f"{what} is wrong", f"expected {exp!r}, got {got!r}")


def known_mistake(got: torch.Tensor, candidates, *, rtol: float = 1e-5, atol: float = 1e-6) -> str | None:
    """The message of the first (message, make) candidate whose make() reproduces `got`: which known mistake
    the learner made. A candidate that cannot be computed for these inputs is passed over."""
    for message, make in candidates:
        try:
            value = make()
            if value.shape == got.shape and torch.allclose(got.double(), value.double(), rtol=rtol, atol=atol):
                return message
        except Exception:
            continue
    return None
