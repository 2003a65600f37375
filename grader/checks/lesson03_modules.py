"""Checks for 03_modules.

Learner classes and functions run only inside the drivers below (module-level functions whose first argument is
the learner's object): a driver builds the module, exercises it and returns plain data (tensors, numbers,
strings, lists and dicts of them). The check then judges that data against PyTorch or a plain-loop oracle.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from grader.compare import Mismatch, expect_tensor, known_mistake, one_line, shape_str
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, run_case, untraced
from grader.tracing import MixedDevices


def _expect_with(expect, advice: str, *args, **kwargs) -> None:
    """expect(*args, **kwargs), adding '→ advice' to a bare value mismatch (one without its own diagnosis)."""
    try:
        expect(*args, **kwargs)
    except Mismatch as e:
        first = e.message.splitlines()[0]
        if " — " in first or " should " in f" {first}":
            raise
        raise Mismatch(f"{e.message}\n→ {advice}", e.detail) from None


def _type_name(obj) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _short(full: str) -> str:
    """'torch.nn.modules.activation.ReLU' -> 'nn.ReLU'; other classes keep their qualified name."""
    module, _, name = full.rpartition(".")
    return f"nn.{name}" if module.startswith("torch.nn.modules") else full


def _seed(seed: int) -> None:
    """Seed the CPU generator that module constructors draw from (torch.manual_seed also walks every
    accelerator, which costs milliseconds per call)."""
    torch.default_generator.manual_seed(seed)


def _registration(m: nn.Module) -> dict:
    """Plain data describing what a module registered: parameters, buffers, state_dict, stray tensors."""
    with untraced():
        return {
            "params": [(n, tuple(p.shape)) for n, p in m.named_parameters()],
            "buffers": [(n, tuple(b.shape)) for n, b in m.named_buffers()],
            "state": {k: v.detach().clone() for k, v in m.state_dict().items()},
            "plain_tensors": sorted(k for k, v in vars(m).items() if isinstance(v, torch.Tensor)),
        }


# ============================================================================================================
# gelu
# ============================================================================================================

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
GELU_FORMULAS = ("GELU(x) = x·Φ(x) = 0.5·x·(1 + erf(x / √2)); approximate='tanh' asks for "
                 "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))")
GELU_ULPS = 16  # allowed error, in units of the dtype's eps times the scale of each element (see _gelu_scales)


def _gelu_erf(x: torch.Tensor, div: float = math.sqrt(2)) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / div))


def _gelu_tanh(x: torch.Tensor, k: float = SQRT_2_OVER_PI, c: float = 0.044715) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(k * (x + c * x ** 3)))


def _gelu_scales(x: torch.Tensor, approximate: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element, how large a correct computation's rounding error can be, in units of eps: |x| for the value
    (x times a factor rounded near 1, so far in the negative tail both F.gelu and a correct answer are ~0 only up
    to eps·|x|); for the gradient 1 plus the size of its second term: |x|·φ(x) for erf, and for tanh
    0.5·|x|·u'(x) while tanh'(u) is not yet 0 in any float."""
    x = x.detach().double()
    if approximate == "tanh":
        u = SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
        second = torch.where(u.abs() < 20, 0.5 * x.abs() * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x ** 2), 0.0)
    else:
        second = x.abs() * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    return x.abs(), 1 + second


def _gelu_value_mistakes(x: torch.Tensor, approximate: str) -> list:
    """(diagnosis, what that mistake returns), computed in float64."""
    x = x.detach().double()
    mistakes = [
        ("that is the sigmoid approximation x·σ(1.702·x), which F.gelu does not offer — " + GELU_FORMULAS,
         lambda: x * torch.sigmoid(1.702 * x)),
        ("that is SiLU, x·σ(x) — " + GELU_FORMULAS, lambda: x * torch.sigmoid(x)),
    ]
    if approximate == "tanh":
        return mistakes + [
            ("that is the exact erf form, but approximate='tanh' was passed — use the tanh formula when "
             "approximate == 'tanh': 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))", lambda: _gelu_erf(x)),
            ("the cubic term is missing — the tanh's argument is √(2/π)·(x + 0.044715·x³)",
             lambda: _gelu_tanh(x, c=0.0)),
            ("the scale inside tanh is 2/π — it is √(2/π) = math.sqrt(2 / math.pi) ≈ 0.798",
             lambda: _gelu_tanh(x, k=2 / math.pi)),
            ("the scale inside tanh is √2/π — it is √(2/π) = math.sqrt(2 / math.pi) ≈ 0.798",
             lambda: _gelu_tanh(x, k=math.sqrt(2) / math.pi)),
            ("the factor 0.5 is missing — 0.5·(1 + tanh(...)) runs from 0 to 1", lambda: 2 * _gelu_tanh(x)),
        ]
    return mistakes + [
        ("that is the tanh approximation — approximate='none' (the default) asks for the exact form "
         "0.5·x·(1 + erf(x / √2))", lambda: _gelu_tanh(x)),
        ("erf(x / 2) — Φ(x) = 0.5·(1 + erf(x / √2)): divide by math.sqrt(2), not 2", lambda: _gelu_erf(x, 2.0)),
        ("erf(x) — Φ(x) = 0.5·(1 + erf(x / √2)): divide x by math.sqrt(2) first", lambda: _gelu_erf(x, 1.0)),
        ("erf(x·√2) — Φ(x) = 0.5·(1 + erf(x / √2)): divide by √2, do not multiply",
         lambda: _gelu_erf(x, 1 / math.sqrt(2))),
        ("the factor 0.5 is missing — Φ(x) = 0.5·(1 + erf(x / √2)) runs from 0 to 1", lambda: 2 * _gelu_erf(x)),
        ("that is Φ(x), the normal CDF, alone — multiply by x: GELU(x) = x·Φ(x)",
         lambda: 0.5 * (1 + torch.erf(x / math.sqrt(2)))),
    ]


def _gelu_grad_mistakes(x: torch.Tensor, upstream: torch.Tensor, approximate: str) -> list:
    """(diagnosis, the gradient that mistake gives) for a hand-written backward, in float64."""
    x, up = x.detach().double(), upstream.double()
    phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))

    def slope(f):  # df/dx, element-wise
        xr = x.clone().requires_grad_(True)
        return torch.autograd.grad(f(xr).sum(), xr)[0]

    other = _gelu_erf if approximate == "tanh" else _gelu_tanh
    return [
        ("the gradient is Φ(x) alone — by the product rule d/dx x·Φ(x) = Φ(x) + x·φ(x), with φ(x) = "
         "exp(-x²/2) / √(2π)", lambda: up * phi),
        ("the gradient is Φ(x) + φ(x) — the second term is x·φ(x): d/dx x·Φ(x) = Φ(x) + x·φ(x)",
         lambda: up * (phi + torch.exp(-x * x / 2) / math.sqrt(2 * math.pi))),
        (f"that is the gradient of the {'erf' if approximate == 'tanh' else 'tanh'} form — the backward must "
         "differentiate the same formula as the forward", lambda: up * slope(other)),
        ("the upstream gradient was not multiplied in — backward returns grad_output times dGELU/dx",
         lambda: slope(lambda v: F.gelu(v, approximate=approximate))),
    ]


_OVERFLOW = ("a formula through exp overflows for large |x| (exp(2z) = inf, then inf/inf or its gradient is nan) "
             "— use torch.tanh and torch.erf, which stay finite for every x")


def _expect_finite(got, expected: torch.Tensor, device: str, what: str) -> None:
    """Type, device, shape and dtype of got, and no nan or inf where the answer is finite (with the likely cause)."""
    try:
        expect_tensor(got, expected, atol=math.inf, device=device, what=what)
    except Mismatch as e:
        if " has nan where " in e.message or " has inf where " in e.message:
            raise Mismatch(f"{e.message}\n→ {_OVERFLOW}", e.detail) from None
        raise


def _expect_gelu(got, expected: torch.Tensor, scale: torch.Tensor, device: str, what: str, mistakes: list,
                 x: torch.Tensor, advice: str, approximate: str, overflowed: bool = False) -> None:
    """got matches expected up to GELU_ULPS·eps·scale per element, else a Mismatch naming the likely mistake.
    overflowed: the learner's gelu gave nan or inf in another case (then small errors come from the same cause)."""
    _expect_finite(got, expected, device, what)
    if expected.numel() == 0:
        return
    finfo = torch.finfo(expected.dtype)
    g, e = got.detach().cpu().double(), expected.detach().double()
    tol = GELU_ULPS * finfo.eps * scale + finfo.tiny
    err = (g - e).abs()
    bad = err > tol
    if not bool(bad.any()):
        return
    at = _where_max(err / tol)
    why = None
    for message, make in mistakes:  # a known mistake: got is that formula, and that formula is wrong here
        try:
            value = make()
        except Exception:
            continue
        if value.shape == g.shape and bool(((value - e).abs() > tol).any()) and \
                bool(((g - value).abs() <= 1e-4 * value.abs() + 1e-6 * (1 + scale)).all()):
            why = message
            break
    relative = float((err / (scale + finfo.tiny)).max())
    if why is None and relative < 1e-3:
        close = f"close, but not to {str(expected.dtype).removeprefix('torch.')} precision (off by up to " \
                f"{relative:.1g} of |x|)"
        if overflowed:
            why = f"{close}, and nan or inf for large |x| in another case — {_OVERFLOW.split(' — ')[1]}"
        elif approximate == "tanh":
            why = f"{close} — a rounded constant, or tanh written by hand? write math.sqrt(2 / math.pi) in full " \
                  "and use torch.tanh"
        else:
            why = f"{close} — a rounded constant, or an erf approximation? write math.sqrt(2) in full and use " \
                  "torch.erf"
        if expected.dtype == torch.float64 and relative < 1e-6 and not overflowed:
            why += "; and keep every step in the input's dtype (no float32 tensor in between)"
    digits = 17 if expected.dtype == torch.float64 else 9  # enough to tell the two numbers apart
    raise Mismatch(f"{what}: wrong values ({int(bad.sum())} of {expected.numel()} differ, largest error "
                   f"{float(err.max()):.3g})\n→ {why or advice}",
                   f"at x = {x.flatten()[at].item():.{digits}g}: expected {e.flatten()[at].item():.{digits}g}, "
                   f"got {g.flatten()[at].item():.{digits}g}")


def _where_max(v: torch.Tensor) -> int:
    return int(v.flatten().nan_to_num(0.0).argmax())


def _gelu_case(t, fn, label: str, x: torch.Tensor, approximate: str, overflowed: set, default: bool = False,
               track: bool = True) -> None:
    """One case per device: fn(x, approximate=...) (fn(x) with default=True) against F.gelu, value and gradient
    (track=False: x does not require grad, value only). `overflowed` collects the approximate values for which
    the learner's gelu gave nan or inf."""
    kwargs = {} if default else {"approximate": approximate}
    xr = x.detach().clone().requires_grad_(True)
    expected = F.gelu(xr, approximate=approximate)
    up = t.randn(*x.shape, dtype=x.dtype)
    (expected * up).sum().backward()
    vscale, gscale = _gelu_scales(x, approximate)
    for device in t.devices:
        with t.case(f"{device}: {label}"):
            run = t.call(run_case, fn, (x.detach().clone().to(device),), kwargs, up.to(device) if track else None)
            if run["mutated"]:
                raise Mismatch("you changed your input in place — compute a new tensor instead (y = 0.5 * x, not "
                               "x *= 0.5 or x.mul_(0.5)): the caller still needs its input")
            try:  # nan or inf in the value or the gradient first: they explain small errors elsewhere too
                _expect_finite(run["out"], expected.detach(), device, "the result")
                if track and run["grads"] is not None:
                    _expect_finite(run["grads"][0], xr.grad, device, "the gradient")
            except Mismatch as e:
                if _OVERFLOW in e.message:
                    overflowed.add(approximate)
                raise
            _expect_gelu(run["out"], expected.detach(), vscale, device, "the result",
                         _gelu_value_mistakes(x, approximate), x, GELU_FORMULAS, approximate,
                         approximate in overflowed)
            if not track:
                continue
            if run["grads"] is None:
                raise Mismatch("the result does not track gradients — a .detach(), torch.no_grad(), .item() or a "
                               "round trip through numpy cut the graph: compute with torch operations on x")
            _expect_gelu(run["grads"][0], xr.grad, gscale * up.abs().double(), device, "the gradient",
                         _gelu_grad_mistakes(x, up, approximate), x,
                         "the values are right but the gradient is not — build the result from torch operations "
                         "(erf, tanh) and let autograd differentiate it, or fix your backward: d/dx x·Φ(x) = "
                         "Φ(x) + x·φ(x)", approximate, approximate in overflowed)


_GELU_BAD = ["sigmoid", "Tanh", "exact", "erf", "TANH", "None", "approx", "fast", "tanh ", "gelu"]


@exercise("03_modules", points=2, difficulty=2, minutes=15, hints=[
    "GELU(x) = x·Φ(x), where Φ is the standard normal CDF: Φ(x) = 0.5·(1 + erf(x / √2)). torch.erf and "
    "math.sqrt(2) are all that approximate='none' needs.",
    "approximate='tanh' is 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), with math.sqrt(2 / math.pi). Test the "
    "argument first: anything but 'none' or 'tanh' -> raise ValueError(...).",
    "Compute with torch operations on x only (no .item(), no torch.no_grad(), no new tensors): the result then "
    "keeps x's dtype and device, and autograd differentiates it for you.",
], forbidden={"gelu": "compute x·Φ(x) yourself with torch.erf (or torch.tanh for approximate='tanh')"})
def gelu(t, fn):
    rows, cols = t.unseen(4, 5, 9), t.unseen(7, 2, 13)  # hidden round: shapes no public case has
    overflowed: set = set()
    for approximate in ("none", "tanh"):
        a = f"approximate={approximate!r}"
        for dtype in (torch.float64, torch.float32):
            kind = str(dtype).removeprefix("torch.")
            x = (t.randn(rows, cols) * 3).to(dtype)
            grid = torch.linspace(-12, 12, 49, dtype=torch.float64) + 0.2 * t.rand(49)
            big = torch.tensor([-1e4, -1e3, -100.0, -30.0, 30.0, 100.0, 1e3, 1e4], dtype=torch.float64)
            big = big * (1 + t.rand(8))
            # large magnitudes first: an overflow there is also what makes small errors in the other cases
            _gelu_case(t, fn, f"{a}: large magnitudes (|x| from 30 to 2e4) {kind}, with gradients",
                       big.to(dtype), approximate, overflowed)
            _gelu_case(t, fn, f"{a}: x ({rows}, {cols}) {kind}, values around ±3, with gradients", x, approximate,
                       overflowed)
            _gelu_case(t, fn, f"{a}: x from -12 to 12 {kind} (far left GELU(x) ≈ 0, far right ≈ x), with "
                              "gradients", grid.to(dtype), approximate, overflowed)
        if "cuda" not in t.devices:
            t.device_check(a, fn, (t.randn(3, 4),), {"approximate": approximate})
    _gelu_case(t, fn, "gelu(x) with approximate left out: the exact erf form", t.randn(6) * 2, "none", overflowed,
               default=True)
    _gelu_case(t, fn, "a 0-dim x (float64)", t.randn() - 1, "none", overflowed)
    _gelu_case(t, fn, "an empty x of shape (0, 3)", t.randn(0, 3), "tanh", overflowed)
    _gelu_case(t, fn, "an x (3, 5) that does not require grad: the value, and x left as it was", t.randn(3, 5),
               "none", overflowed, track=False)
    bad = [_GELU_BAD[0], _GELU_BAD[1]] if not t.hidden else \
        [_GELU_BAD[t.integer(2, len(_GELU_BAD))], _GELU_BAD[t.integer(2, len(_GELU_BAD))]]
    x = t.randn(3)
    for value in bad:
        with t.case(f"approximate={value!r} raises ValueError: only 'none' and 'tanh' exist"):
            try:
                t.raises(ValueError, fn, x, approximate=value)
            except Mismatch as e:
                if not e.message.startswith("should raise"):
                    raise
                first, *rest = e.message.splitlines()
                raise Mismatch("\n".join([f"gelu(x, approximate={value!r}) {first} — compare approximate with "
                                          "'none' and 'tanh' exactly and raise ValueError for anything else, as "
                                          "F.gelu does", *rest])) from None


# ============================================================================================================
# Linear
# ============================================================================================================

def linear_build(cls, in_features: int, out_features: int, bias, seed: int) -> dict:
    """Driver: build cls(in, out[, bias=...]) from a seeded RNG and describe what it registered."""
    _seed(seed)
    m = cls(in_features, out_features) if bias is None else cls(in_features, out_features, bias=bias)
    info = _registration(m)
    with untraced():
        info["is_module"] = isinstance(m, nn.Module)
        info["nn_linear"] = [n or "the module itself" for n, s in m.named_modules() if isinstance(s, nn.Linear)]
        info["bias_attr"] = ("missing" if "bias" not in dir(m) else
                             "None" if getattr(m, "bias") is None else _type_name(getattr(m, "bias")))
    return info


def linear_forward(cls, in_features: int, out_features: int, bias, seed: int, x: torch.Tensor,
                   upstream: torch.Tensor, load: dict | None = None) -> dict:
    """Driver: build the module (optionally load_state_dict(load, strict=True)), move it to x's dtype and device,
    run forward on x and backward of (out * upstream).sum(); return the output, its weights and gradients."""
    _seed(seed)
    m = cls(in_features, out_features) if bias is None else cls(in_features, out_features, bias=bias)
    if load is not None:
        try:
            m.load_state_dict(load, strict=True)
        except RuntimeError as e:
            return {"load_error": one_line(e)}
    m.to(device=x.device, dtype=x.dtype)
    with untraced():
        x = x.detach().clone().requires_grad_(True)
        state = {k: v.detach().clone() for k, v in m.state_dict().items()}
    out = m(x)
    grads = None
    with untraced():
        tracks = isinstance(out, torch.Tensor) and out.requires_grad and out.shape == upstream.shape
    if tracks:
        (out * upstream).sum().backward()
        with untraced():
            grads = {"x": x.grad, **{n: p.grad for n, p in m.named_parameters()}}
            grads = {k: None if g is None else g.detach().clone() for k, g in grads.items()}
    with untraced():
        out = out.detach() if isinstance(out, torch.Tensor) else out
    return {"out": out, "state": state, "grads": grads}


def module_devices(cls, args: list, kwargs: dict, device: str) -> dict:
    """Driver: build cls(*args, **kwargs), call .to(device) and report where its tensors are."""
    m = cls(*args, **kwargs)
    m.to(device)
    with untraced():
        return {
            "params": {n: p.device.type for n, p in m.named_parameters()},
            "buffers": {n: b.device.type for n, b in m.named_buffers()},
            "plain": {k: v.device.type for k, v in vars(m).items() if isinstance(v, torch.Tensor)},
        }


def module_forward_on(cls, args: list, kwargs: dict, x: torch.Tensor, device: str, train: bool = True) -> dict:
    """Driver for the meta-device check: build, move the module and x to `device`, run one forward in train
    (or eval) mode; return where the output is and its shape (meta tensors themselves do not cross the wire)."""
    m = cls(*args, **kwargs)
    with untraced():  # moving is the driver's job; Module._apply's own checks would look like mixed devices
        m.to(device)
        x = x.to(device)
    m.train(train)
    out = m(x)
    with untraced():
        if not isinstance(out, torch.Tensor):
            return {"device": None, "type": type(out).__name__}
        return {"device": out.device.type, "shape": list(out.shape)}


def _meta_forward(t, label: str, cls, args: list, kwargs: dict, x: torch.Tensor) -> None:
    """Without CUDA: forward on the meta device, watching for CPU tensors made inside forward."""
    if "cuda" in t.devices:
        return
    with t.case(f"device check: {label} on the meta device"):
        try:
            got = t.call(module_forward_on, cls, args, kwargs, x, "meta", watch_devices=True)
        except MixedDevices as e:
            raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the module's device: on a GPU this "
                           "fails — create new tensors with device=x.device (or x.new_* / *_like), and register "
                           "tensors the module owns as parameters or buffers so that .to() moves them") from None
        except (LearnerError, Mismatch) as e:
            raise Inconclusive(f"could not run on the meta device: {e}") from None
        if got["device"] != "meta":
            raise Mismatch(f"the output is on {got['device']}, not on the module's device — create it with "
                           "device=x.device")


def _expect_moved(got: dict, device: str, buffer_word: str = "register_buffer") -> None:
    for kind in ("params", "buffers"):
        for name, dev in got[kind].items():
            if dev != device:
                raise Mismatch(f"after .to('{device}') the {kind[:-1]} `{name}` is still on {dev} — leave moving "
                               "to nn.Module (do not override .to or _apply): registered tensors follow the module")
    if got["plain"]:
        name, dev = next(iter(got["plain"].items()))
        raise Mismatch(f"`self.{name}` is a plain tensor attribute (on {dev} after .to('{device}')): "
                       f".to(device) and state_dict only see registered tensors — use nn.Parameter "
                       f"for learnable ones and {buffer_word} for the others")


def _linear_structure(info: dict, i: int, o: int, bias: bool) -> None:
    if not info["is_module"]:
        raise Mismatch("Linear should be a subclass of nn.Module: class Linear(nn.Module)")
    if info["nn_linear"]:
        raise Mismatch(f"uses an nn.Linear ({info['nn_linear'][0]}), which this exercise forbids — "
                       "create the parameters yourself with nn.Parameter")
    params = dict(info["params"])
    want = {"weight": (o, i), **({"bias": (o,)} if bias else {})}
    for name, shape in want.items():
        if name not in params:
            if name in dict(info["buffers"]):
                raise Mismatch(f"`{name}` is a buffer, not a parameter — wrap it in nn.Parameter so that "
                               "the optimizer trains it")
            if name in info["plain_tensors"]:
                raise Mismatch(f"`self.{name}` is a plain tensor, so it is not registered: parameters() and "
                               f"state_dict() miss it — wrap it: self.{name} = nn.Parameter(...)")
            raise Mismatch(f"no parameter named `{name}` — found {sorted(params)}; name them weight and bias, "
                           "like nn.Linear")
        if params[name] != shape:
            advice = " — nn.Linear stores weight as (out_features, in_features) and computes x @ weight.T" \
                if name == "weight" and params[name] == (i, o) else ""
            raise Mismatch(f"`{name}` should have shape {shape_str(shape)}, got {shape_str(params[name])}{advice}")
    if not bias:
        if "bias" in params or "bias" in info["state"]:
            raise Mismatch("with bias=False there should be no bias parameter (and no 'bias' in state_dict) — "
                           "nn.Linear registers it as None: self.register_parameter('bias', None)")
        if info["bias_attr"] != "None":
            raise Mismatch(f"with bias=False, `module.bias` should be None like nn.Linear's, got "
                           f"{info['bias_attr']} — self.register_parameter('bias', None)")
    extra = sorted(set(params) - set(want))
    if extra:
        raise Mismatch(f"unexpected parameter(s) {extra} — nn.Linear has only weight and bias")
    if sorted(info["state"]) != sorted(want):
        raise Mismatch(f"state_dict keys should be {sorted(want)}, got {sorted(info['state'])}")
    for name, v in info["state"].items():
        if v.dtype != torch.float32:
            raise Mismatch(f"`{name}` has dtype {v.dtype} — create parameters in the default dtype "
                           "(float32), like nn.Linear")


def _uniform_stats(x: torch.Tensor, bound: float, what: str, fix: str) -> None:
    """x should look like uniform(-bound, bound): inside the bounds, centred, variance bound² / 3 within 10%."""
    x = x.detach().double().flatten()
    if x.numel() == 0:
        return
    if bool((x == 0).all()):
        raise Mismatch(f"{what} is all zeros — {fix}")
    worst = x.abs().max().item()
    if worst > bound * (1 + 1e-6):
        raise Mismatch(f"{what} has values up to {worst:.4g}, outside ±{bound:.4g} — {fix}")
    mean, var = x.mean().item(), x.var().item()
    if abs(mean) > 0.05 * bound:
        raise Mismatch(f"{what} is not centred on 0 (mean {mean:.3g}, bound ±{bound:.3g}) — {fix}")
    want = bound ** 2 / 3
    if abs(var / want - 1) > 0.1:
        raise Mismatch(f"{what} has variance {var:.4g}, but uniform(-{bound:.4g}, {bound:.4g}) has {want:.4g} "
                       f"— {fix}")


LINEAR_FIX = "nn.Linear draws weight and bias from uniform(-1/sqrt(in_features), 1/sqrt(in_features)) " \
             "(e.g. torch.empty(...).uniform_(-k, k) with k = in_features ** -0.5)"


@exercise("03_modules", points=3, difficulty=2, minutes=25, hints=[
    "In __init__ (after super().__init__()), create self.weight = nn.Parameter(...) of shape "
    "(out_features, in_features) and self.bias of shape (out_features,). Wrapping in nn.Parameter is what "
    "registers them.",
    "Initialise both with k = 1 / math.sqrt(in_features): torch.empty(out_features, in_features).uniform_(-k, k). "
    "Without a bias, follow nn.Linear: self.register_parameter('bias', None).",
    "forward: y = x @ self.weight.T, then add self.bias when it is not None. The @ operator broadcasts over any "
    "leading dimensions, so (in,), (N, in) and (A, B, in) all work; torch.mm would not.",
], forbidden={"linear": "compute x @ self.weight.T + self.bias yourself"})
def Linear(t, cls):
    seed = t.integer(0, 10_000)
    # hidden round: sizes no public case has (a table of the public sizes and their init bounds fails)
    i, o = t.unseen(7, 8, 16), t.unseen(5, 17, 40)
    for bias in (None, True, False):
        label = f"Linear({i}, {o})" if bias is None else f"Linear({i}, {o}, bias={bias})"
        with t.case(f"{label}: parameters registered with nn.Linear's names, shapes and dtype"):
            _linear_structure(t.call(linear_build, cls, i, o, bias, seed), i, o, bias is not False)
        if not t.results[-1].passed:
            return  # nothing below makes sense without the right parameters

    # Sizes stay under 32768 elements, where torch runs element-wise ops on one thread: fast on a busy CPU.
    # The hidden round's are no bigger (at least 15000 weights and 2001 biases, enough for the statistics).
    wi, wo = t.unseen(160, 100, 160), t.unseen(200, 150, 200)
    with t.case(f"Linear({wi}, {wo}): weight initialised like nn.Linear (uniform in ±1/sqrt({wi}))"):
        info = t.call(linear_build, cls, wi, wo, None, seed + 1)
        _uniform_stats(info["state"]["weight"], wi ** -0.5, "weight", LINEAR_FIX)
    bi, bo = t.unseen(16, 8, 16), t.unseen(2000, 2001, 2048)
    with t.case(f"Linear({bi}, {bo}): bias initialised like nn.Linear (uniform in ±1/sqrt({bi}), "
                f"not 1/sqrt({bo}))"):
        info = t.call(linear_build, cls, bi, bo, None, seed + 2)
        _uniform_stats(info["state"]["bias"], bi ** -0.5, "bias", LINEAR_FIX)

    for bias in (True, False):
        with t.case(f"Linear({i}, {o}, bias={bias}).state_dict() loads into nn.Linear({i}, {o}, bias={bias}), "
                    "strict"):
            state = t.call(linear_build, cls, i, o, bias, seed)["state"]
            ref = nn.Linear(i, o, bias=bias)
            try:
                ref.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise Mismatch(f"nn.Linear.load_state_dict(your state_dict) failed: {one_line(e)}\n→ register "
                               "exactly `weight` (out_features, in_features) and `bias` (out_features,), like "
                               "nn.Linear") from None

    for bias in (True, False):
        ref = nn.Linear(i, o, bias=bias)
        with torch.no_grad():
            ref.weight.copy_(t.randn(o, i))
            if bias:
                ref.bias.copy_(t.randn(o))
        x, up = t.randn(3, i), t.randn(3, o)
        with t.case(f"nn.Linear({i}, {o}, bias={bias}).state_dict() loads into your Linear, strict; "
                    "same output"):
            got = t.call(linear_forward, cls, i, o, bias, seed, x, up, dict(ref.state_dict()))
            if "load_error" in got:
                raise Mismatch(f"your Linear could not load nn.Linear's state_dict: {got['load_error']}\n→ "
                               "register exactly `weight` (out_features, in_features) and `bias` (out_features,), "
                               "like nn.Linear")
            expected = F.linear(x, ref.weight.double(), None if ref.bias is None else ref.bias.double())
            _expect_with(expect_tensor, "with nn.Linear's weights loaded, forward should compute "
                         "x @ self.weight.T + self.bias", got["out"], expected, atol=1e-10, rtol=1e-9)

    shapes = [(i,), (4, i), (2, 3, i), (1, i), (0, i)]
    for device in t.devices:
        for bias in (True, False):
            for shape in shapes:
                x = t.randn(*shape)
                up = t.randn(*shape[:-1], o)
                with t.case(f"{device}: Linear({i}, {o}, bias={bias}) on x of shape {shape_str(shape)}, "
                            "with gradients"):
                    try:
                        got = t.call(linear_forward, cls, i, o, bias, seed, x.to(device), up.to(device))
                    except LearnerError as e:  # add the leading-dims advice
                        raise Mismatch(f"{e}\n→ forward must accept any leading dimensions: x @ self.weight.T "
                                       "broadcasts over them (torch.mm and .t() tricks are 2-D only)") from None
                    state = {k: v.cpu() for k, v in got["state"].items()}
                    w, b = state["weight"], state.get("bias")
                    expected = F.linear(x, w, b)
                    if isinstance(got["out"], torch.Tensor) and got["out"].shape == expected.shape and \
                            bias and x.numel() > 0 and torch.allclose(got["out"].cpu(), x @ w.T, atol=1e-9):
                        raise Mismatch("the output ignores the bias — add self.bias")
                    _expect_with(expect_tensor, "forward should compute x @ self.weight.T + self.bias",
                                 got["out"], expected, atol=1e-10, rtol=1e-9, device=device)
                    if got["grads"] is None:
                        raise Mismatch("the output does not track gradients — did you use .data, .detach() or "
                                       "torch.no_grad() in forward?")
                    xr = x.clone().requires_grad_(True)
                    wr, br = w.clone().requires_grad_(True), None if b is None else b.clone().requires_grad_(True)
                    (F.linear(xr, wr, br) * up).sum().backward()
                    for name, ref_t in (("x", xr), ("weight", wr), ("bias", br)):
                        if ref_t is None:
                            continue
                        g = got["grads"].get(name)
                        if g is None:
                            raise Mismatch(f"no gradient reached `{name}` — is it used in forward?")
                        _expect_with(expect_tensor, "build the output from x, self.weight and self.bias with "
                                     "torch operations and let autograd differentiate it",
                                     g, ref_t.grad, atol=1e-9, rtol=1e-8, device=device,
                                     what=f"the gradient of {name}")

    if "cuda" not in t.devices:
        for bias in (True, False):
            with t.case(f"Linear({i}, {o}, bias={bias}).to('meta') moves every parameter"):
                _expect_moved(t.call(module_devices, cls, [i, o], {"bias": bias}, "meta"), "meta")
            _meta_forward(t, f"Linear({i}, {o}, bias={bias}) forward on x (3, {i})", cls, [i, o], {"bias": bias},
                          t.randn(3, i, dtype=torch.float32))


# ============================================================================================================
# MLP
# ============================================================================================================

_NO_OPS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity)  # even empty, they compute nothing


def _is_leaf(m: nn.Module) -> bool:
    """A module that computes something itself: no submodules, and not an (empty) container or nn.Identity."""
    return next(m.children(), None) is None and not isinstance(m, _NO_OPS)


def _leaves(model: nn.Module) -> list:
    """Leaf modules in registration order, shared instances listed at every place they appear."""
    return [m for _, m in model.named_modules(remove_duplicate=False) if _is_leaf(m)]


def _run_order(model: nn.Module, x: torch.Tensor) -> list:
    """The leaf modules one forward on x calls, in the order it calls them: a global pre-hook sees every module
    called, registered in `model` or not (a layer in a plain list still runs)."""
    called = []
    handle = nn.modules.module.register_module_forward_pre_hook(lambda m, args: called.append(m))
    try:
        model(x)
    finally:
        handle.remove()
    with untraced():
        return [m for m in called if _is_leaf(m)]


def _plain_containers(model: nn.Module) -> list:
    """'self.layers'-style names of Python lists, tuples and dicts on the model's modules that hold modules the
    model did not register."""
    registered = {id(m) for m in model.modules()}
    found = []
    for owner_name, owner in model.named_modules():
        for attr, value in vars(owner).items():
            if attr.startswith("_") and isinstance(value, dict):
                continue  # nn.Module's own registries (_modules, _parameters, ...)
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
            if any(isinstance(v, nn.Module) and id(v) not in registered for v in items):
                found.append(f"self.{owner_name + '.' if owner_name else ''}{attr}")
    return found


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"nn.Linear({m.in_features}, {m.out_features})"
    if isinstance(m, nn.Dropout):
        return f"nn.Dropout({m.p})"
    return _short(_type_name(m))


def mlp_layout(cls, sizes: list, kwargs: dict, x: torch.Tensor) -> dict:
    """Driver: build cls(sizes, **kwargs) and run one forward on x in eval mode; list the leaf modules in the
    order they ran (in registration order if the forward called none), which of them are the same object,
    which ran without being registered, and the Python containers that hide modules."""
    model = cls(list(sizes), **kwargs)
    with untraced():
        is_module = isinstance(model, nn.Module)
        if not is_module:
            return {"is_module": False}
    model.eval()
    ran = _run_order(model, x)
    with untraced():
        registered = {id(m) for m in model.modules()}
        leaves = ran or _leaves(model)
        first = {}
        same = [first.setdefault(id(m), k) for k, m in enumerate(leaves)]
        return {"is_module": True, "leaves": [_describe(m) for m in leaves], "same": same,
                "order": "run" if ran else "registered",
                "unregistered": [_describe(m) for m in ran if id(m) not in registered],
                "containers": _plain_containers(model),
                "n_params": sum(p.numel() for p in model.parameters())}


def mlp_forward(cls, sizes: list, kwargs: dict, weights: list, x: torch.Tensor, seed: int) -> dict:
    """Driver: build the MLP, copy `weights` [(W, b), ...] into its nn.Linear layers in the order they run, then
    return its output on x in eval mode and (after seeding the CPU generator with `seed`) in train mode."""
    model = cls(list(sizes), **kwargs)
    model.to(device=x.device, dtype=x.dtype)
    model.eval()
    ran = _run_order(model, x)
    with untraced():
        linears = [m for m in ran or _leaves(model) if isinstance(m, nn.Linear)]
        if len(linears) != len(weights):
            return {"error": f"found {len(linears)} nn.Linear layers, expected {len(weights)}"}
        with torch.no_grad():
            for lin, (w, b) in zip(linears, weights):
                lin.weight.copy_(w)
                lin.bias.copy_(b)
    out_eval = model(x)
    model.train()
    with untraced():
        _seed(seed)  # dropout masks on the CPU come from this generator
    out_train = model(x)
    with untraced():
        return {"eval": out_eval.detach(), "train": out_train.detach()}


def _expected_layout(sizes: list, act: str, dropout: float) -> list:
    layout = []
    for k in range(len(sizes) - 1):
        layout.append(f"nn.Linear({sizes[k]}, {sizes[k + 1]})")
        if k < len(sizes) - 2:
            layout.append(act)
            if dropout > 0:
                layout.append(f"nn.Dropout({dropout})")
    return layout


def _layout_diagnosis(got: list, want: list, act: str) -> str:
    if act in want and act not in got and all(g.startswith(("nn.Linear", "nn.Dropout")) for g in got):
        drop = next((w for w in want if w.startswith("nn.Dropout")), None)
        also = f"; the same goes for {drop} after each activation (F.dropout is invisible too)" \
            if drop and drop not in got else ""
        return (f"no {act} module runs — create activation() in __init__ and add it to the model as a module "
                "after every hidden nn.Linear (a call like torch.relu in forward is invisible to the model's "
                f"modules){also}")
    if any(w.startswith("nn.Dropout") for w in want) and got == [w for w in want if not w.startswith("nn.Dropout")]:
        return ("no nn.Dropout module runs — after each hidden activation add nn.Dropout(dropout) when dropout > 0 "
                "(F.dropout in forward is invisible to the model's modules and ignores model.eval())")
    k = next((k for k, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    g = got[k] if k < len(got) else None
    w = want[k] if k < len(want) else None
    if w is None and g == act:
        return ("an activation after the last layer — add activation() only after the hidden layers: the last "
                "nn.Linear's output is the model's output")
    if g is None and w is not None and w.startswith("nn.Linear") and k == len(want) - 1:
        return (f"the last layer {w} is missing — one Linear per consecutive pair of sizes: "
                "range(len(sizes) - 1)")
    if g is None and w is not None and w.startswith("nn.Linear"):
        return (f"{w} and the layers after it are missing — one nn.Linear(sizes[k], sizes[k + 1]) per consecutive "
                "pair of sizes: range(len(sizes) - 1)")
    if w == act and g is not None and g.startswith("nn.Dropout"):
        return f"module {k} is {g} where {act} belongs — the order is Linear, activation, then Dropout"
    if w is None and g is not None and g.startswith("nn.Dropout"):
        return ("a dropout after the last layer — add nn.Dropout(dropout) only after the hidden activations, never "
                "after the last nn.Linear")
    if g == "nn.Dropout(0.0)" and (w is None or not w.startswith("nn.Dropout")):
        return "an nn.Dropout with p=0 — add dropout layers only when dropout > 0"
    if w is not None and w.startswith("nn.Linear") and g is not None and g.startswith("nn.Dropout"):
        return (f"{g} runs before {w}, where no dropout belongs — add nn.Dropout(dropout) right after each hidden "
                "activation and nowhere else")
    if w is not None and w.startswith("nn.Dropout") and (g is None or not g.startswith("nn.Dropout")):
        return f"no {w} at position {k} — after each hidden activation add nn.Dropout(dropout) when dropout > 0"
    if w == act and act in got[k:]:  # the activations exist but run elsewhere (e.g. all of them after all Linears)
        j = got.index(act, k)
        return (f"{act} ran after {got[j - 1]}, not after {want[k - 1]} — apply each activation right after its "
                "Linear in forward")
    if w == act and (g is None or g.startswith("nn.Linear")):
        return (f"no {act} module after {got[k - 1] if k else 'the first layer'} — create activation() and add it "
                "to the model as a module (a call like torch.relu in forward is invisible to the model's modules), "
                "in the order the layers run")
    if w is not None and w.startswith("nn.Linear") and g is not None and g.startswith("nn.Linear"):
        return f"layer sizes: expected {w}, got {g} — one nn.Linear(sizes[k], sizes[k + 1]) per consecutive pair"
    if g is not None and w is not None and g != w and not g.startswith(("nn.Linear", "nn.Dropout")):
        return f"expected {w} at position {k}, got {g} — use the `activation` class you were given"
    return (f"module {k} runs as {g}, where {w} belongs — the modules should run as Linear, activation "
            "(then Dropout), ..., Linear")


@exercise("03_modules", points=3, difficulty=2, minutes=20, hints=[
    "Build a Python list of layers in a loop over consecutive pairs: zip(sizes[:-1], sizes[1:]). "
    "Wrap the list in nn.Sequential(*layers) so that every layer is registered in order.",
    "After every nn.Linear except the last, append activation() — with parentheses, a new instance each time — "
    "and then nn.Dropout(dropout) if dropout > 0.",
    "class MLP(nn.Module): __init__ builds self.net = nn.Sequential(*layers); forward returns self.net(x). "
    "Subclassing nn.Sequential directly also works.",
])
def MLP(t, cls):
    configs = [
        ([3, 9, 4], {}, "nn.ReLU", 0.0),
        ([5, 8, 6, 2], {"activation": nn.Tanh}, "nn.Tanh", 0.0),
        ([4, 7, 7, 3], {"activation": nn.GELU, "dropout": 0.25}, "nn.GELU", 0.25),
        ([6, 1, 5], {"dropout": 0.5}, "nn.ReLU", 0.5),
        ([3, 2], {"activation": nn.Tanh, "dropout": 0.3}, "nn.Tanh", 0.3),
    ]
    seed = t.integer(0, 10_000)
    for sizes, kwargs, act, p in configs:
        sizes = [t.unseen(s, 10, 30) for s in sizes]  # hidden round: widths no public config has
        args = ", ".join([str(sizes)] + [f"{k}={_short(_type_name(v)) if isinstance(v, type) else v}"
                                         for k, v in kwargs.items()])
        label = f"MLP({args})"
        want = _expected_layout(sizes, act, p)
        with t.case(f"{label}: the modules run in the order {want}"):
            got = t.call(mlp_layout, cls, sizes, kwargs, t.randn(2, sizes[0], dtype=torch.float32))
            if not got["is_module"]:
                raise Mismatch("MLP should be an nn.Module (subclass nn.Module or nn.Sequential)")
            if got["unregistered"]:
                where = f"`{got['containers'][0]}` is a plain Python container, so " if got["containers"] else ""
                raise Mismatch(f"{where}{got['unregistered'][0]} runs in forward but is not registered — the "
                               "model cannot see it: parameters() (so the optimizer), .to(device), state_dict() and "
                               "train()/eval() all skip it; keep the layers in nn.Sequential(*layers) or "
                               "nn.ModuleList(layers)")
            if got["leaves"] != want:
                order = "ran" if got["order"] == "run" else "are registered (forward called none of them)"
                raise Mismatch(_layout_diagnosis(got["leaves"], want, act),
                               f"expected {want}\ngot      {got['leaves']} (in the order they {order})")
            shared = [k for k, s in enumerate(got["same"]) if s != k]
            if shared:
                k = shared[0]
                raise Mismatch(f"modules {got['same'][k]} and {k} are the same {got['leaves'][k]} object — call "
                               "activation() once per layer so that each layer has its own instance")
            n_want = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
            if got["n_params"] != n_want:
                raise Mismatch(f"the model has {got['n_params']} parameters, an MLP of {sizes} has {n_want} — "
                               "register exactly the nn.Linear layers, with bias, and no parameters of your own")
        if not t.results[-1].passed:
            continue
        ref_layers = []
        for k in range(len(sizes) - 1):
            ref_layers.append(nn.Linear(sizes[k], sizes[k + 1]))
            if k < len(sizes) - 2:
                ref_layers.append(kwargs.get("activation", nn.ReLU)())
                if p > 0:
                    ref_layers.append(nn.Dropout(p))
        ref = nn.Sequential(*ref_layers).double()
        linears = [m for m in ref if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for lin in linears:
                lin.weight.copy_(t.randn(*lin.weight.shape))
                lin.bias.copy_(t.randn(*lin.bias.shape))
        weights = [(lin.weight.detach().clone(), lin.bias.detach().clone()) for lin in linears]
        x = t.randn(11, sizes[0])
        for device in t.devices:
            with t.case(f"{device}: {label} gives nn.Sequential's output in eval and train mode"):
                got = t.call(mlp_forward, cls, sizes, kwargs, [(w.to(device), b.to(device)) for w, b in weights],
                             x.to(device), seed)
                if "error" in got:
                    raise Mismatch(f"{got['error']} — forward should run one nn.Linear per consecutive pair of "
                                   "sizes")
                with torch.no_grad():
                    ref.eval()
                    expected_eval = ref(x)
                    _expect_with(expect_tensor, "the modules are right, but forward combines them differently — "
                                 "feed each module's output to the next and return the last one's output",
                                 got["eval"], expected_eval, device=device, atol=1e-10, rtol=1e-9,
                                 what="the output in eval mode")
                    ref.train()
                    _seed(seed)
                    expected = ref(x)
                if not torch.allclose(expected, expected_eval) and \
                        torch.allclose(got["train"].cpu(), got["eval"].cpu()):
                    raise Mismatch("train mode gives the same output as eval mode, so dropout is not active in "
                                   "training — let the nn.Dropout modules run in forward (model.train() switches "
                                   "them on)")
                if device == "cpu":  # other devices draw their dropout masks from their own generators
                    _expect_with(expect_tensor, "in train mode dropout should come from the nn.Dropout modules, "
                                 "applied once each in the order Linear, activation, Dropout",
                                 got["train"], expected, device=device, atol=1e-10, rtol=1e-9,
                                 what="the output in train mode (seeded dropout)")
        _meta_forward(t, f"{label} forward", cls, [sizes], kwargs, t.randn(2, sizes[0], dtype=torch.float32))


# ============================================================================================================
# count_parameters
# ============================================================================================================

class TiedLM(nn.Module):
    """A tiny language model whose output layer shares the embedding's weight."""

    def __init__(self, vocab: int = 50, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied: one Parameter, two owners

    def forward(self, idx):
        return self.head(self.norm(self.embed(idx)))


class Scaled(nn.Module):
    """A parameter registered on the module itself, next to a child module."""

    def __init__(self, width: int = 3):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))
        self.inner = nn.Linear(4, width)

    def forward(self, x):
        return self.inner(x) * self.scale


def _count_model(kind: str, k: int = 0) -> nn.Module:
    """The model called `kind`, its widths grown by k (the hidden round's models are wider than the public ones)."""
    _seed(0)
    if kind == "nn.Linear(7, 3)":
        return nn.Linear(7 + k, 3 + k)
    if kind == "MLP 5-11-2":
        return nn.Sequential(nn.Linear(5 + k, 11 + k), nn.ReLU(), nn.Linear(11 + k, 2 + k))
    if kind == "small CNN (4-D Conv2d weights)":
        return nn.Sequential(nn.Conv2d(3, 6 + k, 3), nn.ReLU(), nn.Conv2d(6 + k, 4, 3, bias=False),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2 + k))
    if kind == "tied embedding/linear":
        return TiedLM(50 + k, 8 + k)
    if kind == "module with its own parameter":
        m = Scaled(3 + k)
        m.inner.bias.requires_grad_(False)
        return m
    if kind == "first layer frozen, with BatchNorm buffers":
        m = nn.Sequential(nn.Linear(6 + k, 10 + k), nn.BatchNorm1d(10 + k), nn.ReLU(), nn.Linear(10 + k, 4 + k))
        m[0].requires_grad_(False)
        return m
    if kind == "tied and partly frozen":
        m = TiedLM(30 + k, 6 + k)
        m.norm.requires_grad_(False)
        return m
    if kind == "nn.ReLU (no parameters)":
        return nn.ReLU()
    raise KeyError(kind)


def count_on(fn, kind: str, trainable_only, k: int = 0) -> object:
    """Driver: build one of the models above and call the learner's count_parameters on it."""
    with untraced():
        model = _count_model(kind, k)
    return fn(model) if trainable_only is None else fn(model, trainable_only=trainable_only)


# The usual mistakes, in two parts: which parameters were walked (and how each was sized), and which were kept.
# Each is (what went wrong, what to do), the two halves of a diagnosis "what — do".
_COUNT_WALKS = {
    "right": (None, lambda m: list(m.parameters()), lambda p: p.numel()),
    "tied twice": (("a shared (tied) weight was counted once per module that holds it",
                    "count each Parameter once, as module.parameters() yields them (it skips duplicates)"),
                   lambda m: [p for s in m.modules() for p in s.parameters(recurse=False)], lambda p: p.numel()),
    "per ancestor": (("each parameter was counted once per module above it: module.modules() lists the model, every "
                      "container and every layer, and m.parameters() already recurses into m's submodules",
                      "sum p.numel() over module.parameters() once, with no loop over modules()"),
                     lambda m: [p for s in m.modules() for p in s.parameters()], lambda p: p.numel()),
    "children": (("only the children's parameters were counted: module.children() misses the parameters registered "
                  "on the module itself (an nn.Linear has no children at all) and lists a weight that two children "
                  "share twice",
                  "iterate module.parameters(), which yields the module's own parameters and every descendant's, "
                  "each once"),
                 lambda m: [p for c in m.children() for p in c.parameters()], lambda p: p.numel()),
    "own only": (("only the module's own parameters were counted (parameters(recurse=False)), not its submodules'",
                  "iterate module.parameters(), which recurses into every submodule by default"),
                 lambda m: list(m.parameters(recurse=False)), lambda p: p.numel()),
    "tensors": (("that is the number of parameter tensors", "add up p.numel(), the number of elements of each"),
                lambda m: list(m.parameters()), lambda p: 1),
    "two dims": (("each parameter was sized by its first two dimensions, so a weight with more (a Conv2d weight is "
                  "(out, in, kh, kw)) came out too small",
                  "count p.numel(), not the first two dimensions"),
                 lambda m: list(m.parameters()),
                 lambda p: (p.shape[0] if p.dim() else 1) * (p.shape[1] if p.dim() > 1 else 1)),
    "len": (("each parameter was sized by len(p), its first dimension only",
             "count p.numel(), the number of all its elements"),
            lambda m: list(m.parameters()), lambda p: p.shape[0] if p.dim() else 1),
}
_COUNT_FILTERS = {  # keep(p, trainable_only)
    "right": (None, lambda p, only: p.requires_grad or not only),
    "ignored": (("frozen parameters (requires_grad=False) were counted although trainable_only is True",
                 "keep p only when p.requires_grad or not trainable_only"), lambda p, only: True),
    "inverted": (("trainable_only is inverted: with True the frozen parameters (requires_grad=False) were counted "
                  "instead of the trainable ones",
                  "keep p when p.requires_grad is True, or when trainable_only is False"),
                 lambda p, only: not p.requires_grad if only else True),
    "grad": (("`trainable` was tested with p.grad, which stays None until a backward pass has run",
              "a parameter is trainable when p.requires_grad is True"),
             lambda p, only: p.grad is not None if only else True),
    "always": (("trainable_only=False still left out the frozen parameters",
                "filter on p.requires_grad only when trainable_only is True"), lambda p, only: p.requires_grad),
}
_STATE_DICT = ("state_dict() also holds buffers (BatchNorm's running_mean, ...), lists a tied weight under each of "
               "its names and keeps no requires_grad", "count module.parameters(), filtering on p.requires_grad")


def _count_mistakes(model: nn.Module, trainable_only: bool) -> list:
    """[(the mistakes made, diagnosis, the number they give on this model)]: one mistake alone first, then two
    together (a way to walk the parameters and a way to filter them)."""
    mistakes = []
    for walk, (w_why, params, size) in _COUNT_WALKS.items():
        for keep_name, (k_why, keep) in _COUNT_FILTERS.items():
            parts = [(name, why) for name, why in ((walk, w_why), (keep_name, k_why)) if why is not None]
            if parts:
                mistakes.append((parts, sum(size(p) for p in params(model) if keep(p, trainable_only))))
    mistakes.append(([("state_dict", _STATE_DICT)], sum(v.numel() for v in model.state_dict().values())))
    mistakes.sort(key=lambda m: len(m[0]))  # stable: a single mistake before any pair
    return [(frozenset(name for name, _ in parts),
             " — ".join(parts[0][1]) if len(parts) == 1 else
             f"{parts[0][1][0]}; and {parts[1][1][0]} — {parts[0][1][1]}; and {parts[1][1][1]}", value)
            for parts, value in mistakes]


def _count_advice(found: list, got: int, explains: dict) -> str:
    """The diagnosis for `got`: of the mistakes that give it, the one that gives the most of the learner's answers
    over all cases; but a part of it alone when that already gives `got` (a flag that did not matter here)."""
    matching = [(names, why) for names, why, value in found if value == got]
    if not matching:
        return ("add up p.numel() over module.parameters(), keeping only the parameters with requires_grad=True "
                "when trainable_only is True")
    names, why = max(matching, key=lambda m: explains[m[0]])
    return next(w for n, w in matching if n <= names)


@exercise("03_modules", points=1, difficulty=1, minutes=8, hints=[
    "module.parameters() yields every parameter of the module and its submodules, each once.",
    "p.numel() is the number of elements of a tensor; p.requires_grad tells whether it is trainable.",
    "return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)",
])
def count_parameters(t, fn):
    cases = [("nn.Linear(7, 3)", None), ("MLP 5-11-2", True), ("small CNN (4-D Conv2d weights)", None),
             ("tied embedding/linear", None), ("tied embedding/linear", False),
             ("module with its own parameter", True), ("module with its own parameter", False),
             ("first layer frozen, with BatchNorm buffers", None),
             ("first layer frozen, with BatchNorm buffers", False), ("tied and partly frozen", True),
             ("tied and partly frozen", False), ("nn.ReLU (no parameters)", None)]
    k = t.unseen(0, 1, 20)  # hidden round: wider models, whose counts no public case shows
    # Every answer first: the mistake that explains the most answers is the likely one (on one model several
    # mistakes often give the same number).
    answers, wants, mistakes = [], [], []
    for kind, trainable_only in cases:
        only = True if trainable_only is None else trainable_only
        model = _count_model(kind, k)
        wants.append(sum(p.numel() for p in model.parameters() if p.requires_grad or not only))
        mistakes.append(_count_mistakes(model, only))
        try:
            answers.append(t.call(count_on, fn, kind, trainable_only, k))
        except (LearnerError, Mismatch) as e:
            answers.append(e)
    ints = [a if isinstance(a, int) and not isinstance(a, bool) else None for a in answers]
    explains = {}  # mistakes made -> how many of the answers they give
    for got, found in zip(ints, mistakes):
        for names, _, value in found:
            explains[names] = explains.get(names, 0) + (got == value)
    for (kind, trainable_only), got, want, found in zip(cases, answers, wants, mistakes):
        call = "count_parameters(model)" if trainable_only is None else \
            f"count_parameters(model, trainable_only={trainable_only})"
        with t.case(f"{kind}{f' (widened by {k})' if k else ''}: {call} == {want}"):
            if isinstance(got, Exception):
                raise got
            if isinstance(got, float):
                raise Mismatch(f"{call} returned a float ({got!r}) — return an int: sum p.numel() — no float "
                               "conversion (no float(), / or math.prod over floats)")
            if isinstance(got, torch.Tensor):
                raise Mismatch(f"{call} returned a tensor, not a Python int — add up the ints p.numel() (or call "
                               ".item() on your tensor)")
            if not isinstance(got, int) or isinstance(got, bool):
                raise Mismatch(f"{call} returned a {type(got).__name__}, not a Python int — return "
                               "sum(p.numel() for p in ...), which is an int")
            if got != want:
                raise Mismatch(f"expected {want}, got {got} — {_count_advice(found, got, explains)}")


# ============================================================================================================
# init_weights
# ============================================================================================================

INIT_SIZES = (160, 200, 7, 3, 6, 5, 2)  # InitNet's big in/out, small in/out, head in/hidden/out (public round)


class InitNet(nn.Module):
    """A bit of everything: only its nn.Linear layers should change under apply(init_weights)."""

    def __init__(self, sizes=INIT_SIZES):
        super().__init__()
        big_in, big_out, small_in, small_out, h0, h1, h2 = sizes
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(6)
        self.embed = nn.Embedding(10, 6)
        self.big = nn.Linear(big_in, big_out)  # 32000 weights (public): enough for the statistics, one thread
        self.small = nn.Linear(small_in, small_out, bias=False)
        self.head = nn.Sequential(nn.Linear(h0, h1), nn.ReLU(), nn.Linear(h1, h2))
        with torch.no_grad():  # non-default values, so that "reset to the default" is visible
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.uniform_(-0.5, 0.5)


def init_run(fn, seed: int, device: str, sizes: tuple = INIT_SIZES) -> dict:
    """Driver: build InitNet(sizes) on `device`, call model.apply(fn); return the state before and after, the
    parameters that are other objects afterwards, and those whose memory moved (weight.data = ...)."""
    with untraced():
        _seed(seed)
        model = InitNet(tuple(sizes)).to(device)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        objects = dict(model.named_parameters())
        pointers = {n: p.data_ptr() for n, p in objects.items()} if device != "meta" else {}
    model.apply(fn)
    with untraced():
        params = dict(model.named_parameters())
        replaced = [n for n, p in objects.items() if params.get(n) is not p]
        swapped = [n for n, ptr in pointers.items() if n in params and params[n].data_ptr() != ptr]
        devices = {n: p.device.type for n, p in params.items()}
        if device == "meta":  # meta tensors hold no values worth returning
            return {"devices": devices, "replaced": replaced, "swapped": swapped}
        after = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"before": before, "after": after, "devices": devices, "replaced": replaced, "swapped": swapped}


def _init_call(t, fn, seed: int, device: str, sizes: tuple) -> dict:
    """t.call(init_run, ...), adding the likely cause to an error the learner's init_weights raised."""
    try:
        return t.call(init_run, fn, seed, device, sizes)
    except LearnerError as e:
        text = str(e)
        if "'NoneType' object has no attribute" in text:
            raise Mismatch(f"{text}\n→ a Linear(bias=False) has bias None — check module.bias is not None before "
                           "zeroing it") from None
        if "set_data" in text:
            raise Mismatch(f"{text}\n→ a new tensor was assigned to .data — fill the existing tensor in place "
                           "instead: nn.init.xavier_uniform_(module.weight), nn.init.zeros_(module.bias)") from None
        raise


def _expect_in_place(got: dict) -> None:
    if got["replaced"]:
        raise Mismatch(f"`{got['replaced'][0]}` is a new nn.Parameter after apply(init_weights) — an optimizer "
                       "built before the call (optimizer = SGD(model.parameters(), ...)) still holds the old tensor "
                       "and would train one the model no longer uses; initialise the existing parameter in place: "
                       "nn.init.xavier_uniform_(module.weight), nn.init.zeros_(module.bias)")
    if got["swapped"]:
        raise Mismatch(f"`{got['swapped'][0]}` now points to other memory (a new tensor assigned to .data?) — "
                       "fill the existing tensor in place instead: nn.init.xavier_uniform_(module.weight), "
                       "nn.init.zeros_(module.bias)")


@exercise("03_modules", points=2, difficulty=2, minutes=12, hints=[
    "model.apply(fn) calls fn on every submodule (and the model itself). Act only when "
    "isinstance(module, nn.Linear); leave everything else alone.",
    "nn.init.xavier_uniform_(module.weight) and nn.init.zeros_(module.bias) change the tensors in place "
    "(without recording gradients).",
    "A Linear built with bias=False has module.bias = None: check for that before zeroing it.",
])
def init_weights(t, fn):
    seed = t.integer(0, 10_000)
    # hidden round: Linear sizes no public model has, so a table of the public weight shapes fails; the big layer
    # is no bigger (15000 to 31641 weights, still enough for the statistics)
    sizes = (t.unseen(160, 100, 160), t.unseen(200, 150, 200), t.unseen(7, 8, 16), t.unseen(3, 4, 8),
             t.unseen(6, 7, 16), t.unseen(5, 16, 32), t.unseen(2, 3, 8))
    big_in, big_out = sizes[:2]
    with t.case("model.apply(init_weights) on a model with Conv2d, LayerNorm, Embedding and Linear layers"):
        got = _init_call(t, fn, seed, "cpu", sizes)
        _expect_in_place(got)
        before, after = got["before"], got["after"]
        for k in before:
            if k.startswith(("conv", "norm", "embed")) and not torch.equal(before[k], after[k]):
                raise Mismatch(f"`{k}` changed — only nn.Linear layers should be touched: test "
                               "isinstance(module, nn.Linear), not hasattr(module, 'weight')")
        for k in ("big.bias", "head.0.bias", "head.2.bias"):
            if not bool((after[k] == 0).all()):
                raise Mismatch(f"`{k}` is not zero — zero every nn.Linear bias: nn.init.zeros_(module.bias)")
        for k in ("big.weight", "small.weight", "head.0.weight", "head.2.weight"):
            if torch.equal(before[k], after[k]):
                biasless = " (a Linear(bias=False))" if f"{k[:-len('weight')]}bias" not in after else ""
                raise Mismatch(f"`{k}`{biasless} is unchanged — every nn.Linear weight needs the Xavier-uniform "
                               "init, with or without a bias: nn.init.xavier_uniform_(module.weight) for every "
                               "isinstance(module, nn.Linear), and test module.bias is not None only around the bias")
            fan_out, fan_in = after[k].shape
            bound = (6 / (fan_in + fan_out)) ** 0.5
            worst = after[k].abs().max().item()
            if worst > bound * (1 + 1e-6):
                raise Mismatch(f"`{k}` has values up to {worst:.4g}, outside the Xavier-uniform bound "
                               f"±sqrt(6 / (fan_in + fan_out)) = ±{bound:.4g} — use "
                               "nn.init.xavier_uniform_(module.weight) (not xavier_normal_ or kaiming_*)")
        _uniform_stats(after["big.weight"], (6 / (big_in + big_out)) ** 0.5,
                       f"`big.weight` (a Linear({big_in}, {big_out}))",
                       "Xavier-uniform draws from uniform(-a, a) with a = sqrt(6 / (fan_in + fan_out)): "
                       "nn.init.xavier_uniform_(module.weight)")
    if "cuda" not in t.devices:
        with t.case("device check: apply(init_weights) on a model on the meta device keeps it there"):
            got = _init_call(t, fn, seed, "meta", sizes)
            moved = [n for n, d in got["devices"].items() if d != "meta"]
            if moved:
                raise Mismatch(f"`{moved[0]}` ended up on {got['devices'][moved[0]]} — initialise the existing "
                               "tensors in place (nn.init.*_ functions) instead of assigning new ones, which "
                               "would land on the CPU and break a model on the GPU")
            _expect_in_place(got)


# ============================================================================================================
# RunningMean
# ============================================================================================================

def running_mean_run(cls, num_features: int, momentum, steps: list, load: dict | None = None) -> dict:
    """Driver: build cls(num_features[, momentum]), optionally load a state_dict, then run `steps`
    [(mode, x), ...] with mode 'train' or 'eval'; return what it registered, the outputs and the buffer."""
    m = cls(num_features) if momentum is None else cls(num_features, momentum=momentum)
    info = _registration(m)
    with untraced():
        info["non_persistent"] = sorted(getattr(m, "_non_persistent_buffers_set", set()))
        mean = getattr(m, "mean", None)
        info["initial"] = mean.detach().clone() if isinstance(mean, torch.Tensor) else None
    if load is not None:
        m.load_state_dict(load, strict=True)
    outs, means, graph = [], [], []
    for mode, x in steps:
        m.train(mode == "train")
        with untraced():
            x = x.detach().clone().requires_grad_(True)
        out = m(x)
        with untraced():
            mean = getattr(m, "mean", None)
            outs.append(out.detach() if isinstance(out, torch.Tensor) else out)
            means.append(mean.detach().clone() if isinstance(mean, torch.Tensor) else None)
            graph.append(isinstance(mean, torch.Tensor) and mean.requires_grad)
    info.update(outs=outs, means=means, graph=graph)
    return info


def _running_mean_reference(num_features: int, momentum: float, steps: list, start=None) -> tuple[list, list]:
    mean = torch.zeros(num_features) if start is None else start.clone()
    outs, means = [], []
    for mode, x in steps:
        if mode == "train":
            mean = (1 - momentum) * mean + momentum * x.mean(0)
        outs.append(x - mean)
        means.append(mean.clone())
    return outs, means


@exercise("03_modules", points=2, difficulty=2, minutes=15, hints=[
    "In __init__: self.momentum = momentum and self.register_buffer('mean', torch.zeros(num_features)). "
    "A buffer is saved in state_dict and moved by .to(device), but the optimizer never sees it.",
    "In forward, `if self.training:` update the buffer; nn.Module.train() and .eval() set self.training.",
    "Update under torch.no_grad() (the buffer must not keep a graph), e.g. "
    "self.mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0)); then return x - self.mean.",
])
def RunningMean(t, cls):
    nf = t.unseen(5, 6, 41)  # hidden round: a width no public case has
    with t.case(f"RunningMean({nf}): `mean` is a persistent buffer of zeros, in state_dict, not in parameters()"):
        info = t.call(running_mean_run, cls, nf, None, [])
        if "mean" in dict(info["params"]):
            raise Mismatch("`mean` is an nn.Parameter, so an optimizer would train it — register it as a "
                           "buffer: self.register_buffer('mean', torch.zeros(num_features))")
        if info["params"]:
            raise Mismatch(f"RunningMean should have no parameters, found {[n for n, _ in info['params']]}")
        if "mean" in info["non_persistent"]:
            raise Mismatch("`mean` is registered with persistent=False, so it is missing from state_dict — "
                           "it is state worth saving: leave persistent=True")
        if "mean" not in dict(info["buffers"]):
            if "mean" in info["plain_tensors"]:
                raise Mismatch("`self.mean` is a plain tensor attribute: state_dict and .to(device) ignore it — "
                               "use self.register_buffer('mean', ...)")
            raise Mismatch(f"no buffer named `mean` — found buffers {[n for n, _ in info['buffers']]}")
        if sorted(info["state"]) != ["mean"]:
            raise Mismatch(f"state_dict keys should be ['mean'], got {sorted(info['state'])}")
        _expect_with(expect_tensor, "the buffer should start as zeros: torch.zeros(num_features)",
                     info["initial"], torch.zeros(nf), what="the initial `mean`")
    if not t.results[-1].passed:
        return

    for momentum, n in [(None, 8), (0.3, 1), (0.05, 13)]:
        mom = 0.1 if momentum is None else momentum
        steps = [("train", t.randn(n, nf, dtype=torch.float32) * 3 + 1),
                 ("train", t.randn(n + 2, nf, dtype=torch.float32) - 2),
                 ("eval", t.randn(4, nf, dtype=torch.float32)),
                 ("train", t.randn(n, nf, dtype=torch.float32) * 0.5)]
        label = f"RunningMean({nf}{'' if momentum is None else f', momentum={momentum}'})"
        outs, means = _running_mean_reference(nf, mom, steps)
        with t.case(f"{label}: train, train, eval, train steps (batches of {n}, {n + 2}, 4, {n})"):
            got = t.call(running_mean_run, cls, nf, momentum, steps)
            for k, (mode, x) in enumerate(steps):
                step = f"step {k + 1} ({mode})"
                if got["means"][k] is None:
                    raise Mismatch(f"after {step} there is no tensor `mean` on the module — keep the buffer "
                                   "registered as `mean` (assign a tensor back to self.mean, never None)")
                if got["graph"][k]:
                    raise Mismatch(f"after {step} the buffer `mean` requires grad: it keeps the graph of every "
                                   "batch — update it under torch.no_grad() (or from x.detach())")
                prev = torch.zeros(nf) if k == 0 else means[k - 1]
                gm = got["means"][k]
                if mode == "eval" and gm.shape == prev.shape and not torch.allclose(gm, prev, atol=1e-6):
                    raise Mismatch(f"{step}: the buffer changed in eval mode — update it only when self.training")
                if mode == "train" and gm.shape == prev.shape and torch.allclose(gm, prev, atol=1e-7):
                    raise Mismatch(f"{step}: the buffer did not change in train mode — update it when "
                                   "self.training (and assign it back, or update it in place)")
                swapped = mom * prev + (1 - mom) * x.mean(0)
                if mode == "train" and gm.shape == prev.shape and abs(mom - 0.5) > 0.1 and \
                        torch.allclose(gm, swapped, atol=1e-5):
                    raise Mismatch(f"{step}: the momentum weighted the old mean — momentum is the weight of the "
                                   "new batch: mean = (1 - momentum) * mean + momentum * x.mean(0)")
                _expect_with(expect_tensor, "in train mode, mean = (1 - momentum) * mean + momentum * x.mean(0) "
                             "(the batch mean over dim 0); in eval mode it stays", gm, means[k], atol=1e-5,
                             rtol=1e-5, what=f"`mean` after {step}")
                o = got["outs"][k]
                if isinstance(o, torch.Tensor) and o.shape == x.shape and mode == "train" and \
                        torch.allclose(o, x - prev, atol=1e-5) and not torch.allclose(prev, means[k], atol=1e-5):
                    raise Mismatch(f"{step}: returned x - (the old mean) — update the buffer first, "
                                   "then subtract the updated mean")
                _expect_with(expect_tensor, "forward should return x - mean (the updated mean in train mode)",
                             o, outs[k], atol=1e-5, rtol=1e-5, what=f"the output of {step}")

    with t.case(f"load_state_dict({{'mean': m}}) into a fresh RunningMean({nf}), then eval: x - m"):
        start = t.randn(nf, dtype=torch.float32)
        steps = [("eval", t.randn(6, nf, dtype=torch.float32)), ("train", t.randn(3, nf, dtype=torch.float32))]
        outs, means = _running_mean_reference(nf, 0.1, steps, start)
        got = t.call(running_mean_run, cls, nf, None, steps, {"mean": start})
        x1, x2 = steps[0][1], steps[1][1]
        mistakes = [  # per step: (diagnosis, what that mistake returns)
            [("the buffer changed in eval mode — update it only when self.training",
              lambda: x1 - (0.9 * start + 0.1 * x1.mean(0))),
             ("the loaded `mean` was not used — after load_state_dict, eval mode returns x - (the loaded mean)",
              lambda: x1)],
            [("returned x - (the old mean) — update the buffer first, then subtract the updated mean",
              lambda: x2 - start),
             ("the momentum weighted the old mean — mean = (1 - momentum) * mean + momentum * x.mean(0)",
              lambda: x2 - (0.1 * start + 0.9 * x2.mean(0)))],
        ]
        for k in range(2):
            o = got["outs"][k]
            why = known_mistake(o, mistakes[k], rtol=1e-5, atol=1e-5) if isinstance(o, torch.Tensor) else None
            _expect_with(expect_tensor, why or "after load_state_dict({'mean': m}), eval mode returns x - m and "
                         "train mode updates m first", o, outs[k], atol=1e-5, rtol=1e-5,
                         what=f"the output of step {k + 1} ({steps[k][0]})")

    if "cuda" not in t.devices:
        with t.case(f"RunningMean({nf}).to('meta') moves the buffer"):
            _expect_moved(t.call(module_devices, cls, [nf], {}, "meta"), "meta")
    _meta_forward(t, f"RunningMean({nf}) forward on (3, {nf}) in train mode", cls, [nf], {},
                  t.randn(3, nf, dtype=torch.float32))


# ============================================================================================================
# freeze
# ============================================================================================================

def _freeze_model(a: int = 1) -> nn.Module:
    """Layers named layer{a}, layer{a}0, layer{a}_norm, layer{a + 1} and head (a is 1 in the public round)."""
    _seed(0)
    model = nn.Sequential(OrderedDict([
        (f"layer{a}", nn.Linear(4, 4)),
        (f"layer{a}0", nn.Linear(4, 4)),
        (f"layer{a}_norm", nn.LayerNorm(4)),
        (f"layer{a + 1}", nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))),
        ("head", nn.Linear(2, 2)),
    ]))
    model.head.bias.requires_grad_(False)  # already frozen before freeze() is called
    return model


def freeze_run(fn, prefixes: list, a: int = 1) -> dict:
    """Driver: build the model above, call fn(model, prefixes); report requires_grad per parameter."""
    with untraced():
        model = _freeze_model(a)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fn(model, prefixes)
    with untraced():
        params = dict(model.named_parameters())
        return {"requires_grad": {n: p.requires_grad for n, p in params.items()},
                "changed": [n for n, p in params.items() if n not in before or not torch.equal(p, before[n])],
                "names": list(params)}


@exercise("03_modules", points=2, difficulty=1, minutes=10, hints=[
    "module.named_parameters() yields (qualified name, parameter) pairs such as ('layer2.0.weight', p).",
    "A name matches a prefix when name == prefix or name.startswith(prefix + '.'); the dot is what keeps "
    "'layer1' from matching 'layer10.weight'.",
    "For a match set p.requires_grad = False (or p.requires_grad_(False)); do nothing to the other parameters.",
])
def freeze(t, fn):
    a = t.unseen(1, 3, 100)  # hidden round: layer names, and so prefixes, that no public case uses
    model = _freeze_model(a)
    names = [n for n, _ in model.named_parameters()]
    initial = {n: p.requires_grad for n, p in model.named_parameters()}
    one, ten, two = f"layer{a}", f"layer{a}0", f"layer{a + 1}"
    for prefixes in ([one], [two], [f"{two}.0"], [f"{ten}.weight", "head"], [one, f"{two}.2"], [],
                     ["nothing", "layer"]):
        want = {n: initial[n] and not any(n == p or n.startswith(p + ".") for p in prefixes) for n in names}
        frozen = sorted(n for n in names if initial[n] and not want[n])
        with t.case(f"freeze(model, {prefixes}) freezes {frozen or 'nothing'}"):
            got = t.call(freeze_run, fn, list(prefixes), a)
            if got["names"] != names or got["changed"]:
                which = got["changed"][0] if got["changed"] else "the list of parameters"
                raise Mismatch(f"{which} changed — freeze should only set requires_grad, not replace or "
                               "modify parameters")
            rg = got["requires_grad"]
            for n in names:
                if rg[n] == want[n]:
                    continue
                if rg[n] and not initial[n]:
                    raise Mismatch(f"`{n}` was frozen before and is trainable now — leave parameters that do "
                                   "not match untouched (never set requires_grad=True)")
                if not rg[n]:
                    close = [p for p in prefixes if n.startswith(p)]
                    if close:
                        raise Mismatch(f"froze `{n}` for prefix {close[0]!r} — a prefix must match a whole name "
                                       "part: name == prefix or name.startswith(prefix + '.')")
                    raise Mismatch(f"froze `{n}`, which matches none of {prefixes} — freeze only the parameters "
                                   "whose name equals a prefix or starts with prefix + '.'")
                raise Mismatch(f"`{n}` should be frozen (requires_grad=False) for prefixes {prefixes} — "
                               "match against the full names from module.named_parameters()")
