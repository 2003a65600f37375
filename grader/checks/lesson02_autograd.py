"""Checks for 02_autograd."""
from __future__ import annotations

import contextlib
import math

import torch
from torch.autograd.gradcheck import GradcheckError

from grader.compare import Mismatch, expect_tensor
from grader.devices import to_device
from grader.registry import exercise
from grader.runner import LearnerError, untraced
from grader.tracing import Tracer

LESSON = "02_autograd"


# --- functions the checks hand to learner code (module level: the batch grader sends them by name) -------
def cubic_sum(x):
    """Scalar: sum of x³."""
    return (x ** 3).sum()


def sin_x_squared(x):
    """Scalar: sum of sin(x)·x²."""
    return (torch.sin(x) * x ** 2).sum()


def wavy_sum(x):
    """Scalar with a large second derivative (a forward difference is visibly wrong): sum of 4·cos(3x) + x."""
    return (4 * torch.cos(3 * x) + x).sum()


def _fixed_matrix(rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
    """A fixed, non-symmetric matrix, made on x's device and dtype."""
    k = torch.arange(rows * cols, dtype=like.dtype, device=like.device).reshape(rows, cols)
    return torch.cos(0.7 * k + 0.3)


def quadratic_form(x):
    """Scalar: ½ xᵀAx + bᵀx with a fixed A (2I plus a small non-symmetric part) and b, for x of any shape."""
    flat = x.reshape(-1)  # (n,)
    n = flat.shape[0]
    a = 2 * torch.eye(n, dtype=x.dtype, device=x.device) + 0.3 * _fixed_matrix(n, n, x)  # (n, n)
    b = torch.linspace(-1, 1, n, dtype=x.dtype, device=x.device)  # (n,)
    return 0.5 * flat @ a @ flat + b @ flat


def ew_cubic(x):
    """Element-wise: x³ - 2x."""
    return x ** 3 - 2 * x


def ew_sin_sq(x):
    """Element-wise: sin(x)·x²."""
    return torch.sin(x) * x ** 2


def ew_linear(x):
    """Element-wise and linear in x: 3x - 1 (its second derivative is 0 everywhere)."""
    return 3 * x - 1


def ew_kink(x):
    """Element-wise: x³ where x > 0, 2x elsewhere."""
    return torch.where(x > 0, x ** 3, 2 * x)


def tanh_linear(x):
    """(n,) -> (3,): tanh(W x) with a fixed W of shape (3, n)."""
    return torch.tanh(_fixed_matrix(3, x.shape[0], x) @ x)


def tanh_square(x):
    """(n,) -> (n,): tanh(W x) with a fixed, non-symmetric W of shape (n, n) (a square, non-diagonal Jacobian)."""
    return torch.tanh(_fixed_matrix(x.shape[0], x.shape[0], x) @ x)


def column_cubes(x):
    """(r, c) -> (c,): the sum of each column's cubes."""
    return (x ** 3).sum(dim=0)


def sin_times_matrix(x):
    """(r, c) -> (c, r): sin(x)ᵀ A with a fixed, non-symmetric A of shape (r, r)."""
    return torch.sin(x).T @ _fixed_matrix(x.shape[0], x.shape[0], x)


def scalar_to_three(x):
    """() -> (3,): x, x² and sin(x)."""
    return torch.stack([x, x ** 2, torch.sin(x)])


def own_weight(x):
    """(n,) -> (2,): made from f's own weight, which requires grad, and not from x (its Jacobian is zeros)."""
    w = torch.linspace(-1, 1, 2, dtype=x.dtype, device=x.device, requires_grad=True)
    return torch.tanh(w) * 2


def constant_grid(x):
    """(r, c) -> (2, 2): a constant with no graph at all (its Jacobian is zeros)."""
    return torch.ones(2, 2, dtype=x.dtype, device=x.device)


# Exact second derivatives of the element-wise functions: the plain-formula oracle of second_derivative.
SECOND = {
    ew_cubic: lambda x: 6 * x,
    ew_sin_sq: lambda x: (2 - x ** 2) * torch.sin(x) + 4 * x * torch.cos(x),
    ew_linear: lambda x: torch.zeros_like(x),
    ew_kink: lambda x: torch.where(x > 0, 6 * x, torch.zeros_like(x)),
}


# --- drivers: run the learner's object on plain data, return plain data ----------------------------------
def call_with_x(fn, f, x, rest: tuple, requires_grad: bool, set_grad: bool, grad, no_grad: bool = False):
    """Driver: give x the requires_grad flag (and, with set_grad, the existing .grad) the case asks for, call
    fn(f, x, *rest) (inside torch.no_grad() with no_grad=True), and return the result with the state x is left
    in."""
    with untraced():
        x = x.detach().clone().requires_grad_(requires_grad)
        if set_grad:
            x.grad = grad.detach().clone()
        before = x.detach().clone()
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        out = fn(f, x, *rest)
    with untraced():
        real = x.device.type != "meta"  # meta tensors hold no values to compare
        is_tensor = isinstance(out, torch.Tensor)
        return {
            "out": out.detach() if is_tensor else out,
            "out_requires_grad": bool(is_tensor and out.requires_grad),
            "out_shares_x": bool(is_tensor and real and out.numel() > 0
                                 and out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()),
            "x_changed": bool(real and (x.shape != before.shape or not torch.equal(x.detach(), before))),
            "x_requires_grad": x.requires_grad,
            "x_has_grad": x.grad is not None,
            "x_grad": x.grad.detach().clone() if x.grad is not None else x.new_zeros(0),
        }


def _new_leaf(x):
    return x.detach().clone().requires_grad_(True)


BACKWARD_FORBIDDEN = {
    "sigmoid": "backward gets σ(x) from the saved output y: dσ/dx = y * (1 - y), no need to recompute it",
    "expit": "backward gets σ(x) from the saved output y: dσ/dx = y * (1 - y), no need to recompute it",
    "grad": "no autograd inside backward: write the derivative by hand, grad_output * y * (1 - y)",
    "backward": "no autograd inside backward: write the derivative by hand, grad_output * y * (1 - y)",
}


def sigmoid_run(cls, x, upstream, watch_devices: bool = False):
    """Driver: y = cls.apply(x) and dL/dx for L = (y * upstream).sum(), through the autograd engine.

    forward may call torch.sigmoid; backward may not, nor use autograd: the engine runs the learner's backward
    under the innermost tracer, so the driver asks for the gradient inside a tracer of its own that forbids
    those (its own call to torch.autograd.grad is bookkeeping, made untraced)."""
    with untraced():
        x = _new_leaf(x)
    y = cls.apply(x)
    with untraced():
        if not isinstance(y, torch.Tensor) or not y.requires_grad:
            return {"out": y.detach() if isinstance(y, torch.Tensor) else y, "tracks": False, "grad": x.new_zeros(0),
                    "out_changed": False}
        before = y.detach().clone()
    tracer = Tracer(BACKWARD_FORBIDDEN, watch_devices=watch_devices)
    with tracer, untraced():
        (grad,) = torch.autograd.grad(y, x, upstream)
    if tracer.violation is not None:  # caught inside backward: still a violation
        raise tracer.violation
    with untraced():
        changed = y.device.type != "meta" and not torch.equal(y.detach(), before)
    return {"out": before, "tracks": True, "grad": grad.detach(), "out_changed": changed}


def sigmoid_saved(cls, x):
    """Driver: what forward saved with ctx.save_for_backward: how many tensors, and which equal the output or
    the input."""
    with untraced():
        x = _new_leaf(x)
    y = cls.apply(x)
    with untraced():
        node = getattr(y, "grad_fn", None)
        saved = tuple(getattr(node, "saved_tensors", ()) or ()) if node is not None else ()
        return {"n": len(saved),
                "is_output": [s.shape == y.shape and torch.equal(s.detach(), y.detach()) for s in saved],
                "is_input": [s.shape == x.shape and torch.equal(s.detach(), x.detach()) for s in saved]}


def sigmoid_gradcheck(cls, x):
    """Driver: torch.autograd.gradcheck on cls.apply at x (float64); '' when it passes, else its complaint."""
    with untraced():
        x = _new_leaf(x)
        try:
            ok = torch.autograd.gradcheck(cls.apply, (x,), eps=1e-6, atol=1e-5)
        except GradcheckError as e:
            return " ".join(str(e).split())[:300]
        return "" if ok else "gradcheck returned False"


# --- shared pieces of the checks ---------------------------------------------------------------------------
def _expect(got, expected, device, *, atol, rtol, explain=None, what="the result", dtype_advice=None,
            any_shape=False):
    """expect_tensor, with the check's own diagnosis (explain(got) -> str | None) added to value mismatches
    (any_shape=True: to shape mismatches too, explain then compares shapes itself)."""
    if dtype_advice and isinstance(got, torch.Tensor) and got.dtype != expected.dtype:
        raise Mismatch(f"{what}: expected dtype {expected.dtype}, got {got.dtype} — {dtype_advice}")
    try:
        expect_tensor(got, expected, atol=atol, rtol=rtol, device=device, what=what)
    except Mismatch as e:
        better = None
        if explain is not None and isinstance(got, torch.Tensor) and (any_shape or got.shape == expected.shape) \
                and got.dtype == expected.dtype and device != "meta":
            try:
                better = explain(got.detach().cpu())
            except Exception:
                better = None
        if better:
            raise Mismatch(f"{e.message}\n→ {better}", e.detail) from None
        raise


def _expect_x_kept(run: dict, requires_grad: bool, set_grad: bool, grad, device: str, x: str = "x",
                   in_place_advice: str | None = None) -> None:
    """x's values, requires_grad flag and .grad must be as they were before the call."""
    if run["x_changed"]:
        advice = in_place_advice or f"work on a copy ({x}.detach().clone()), or restore every element you " \
                                    "perturb exactly"
        raise Mismatch(f"your code changed {x} in place (its values differ after the call) — {advice}")
    if run["x_requires_grad"] != requires_grad:
        raise Mismatch(f"{x}.requires_grad was {requires_grad} before the call and {run['x_requires_grad']} "
                       f"after — don't flip the caller's flag: work on {x}.detach().requires_grad_(True)")
    if not set_grad and run["x_has_grad"]:
        raise Mismatch(f"{x}.grad was None before the call and is set after it — backward() accumulates into "
                       f".grad; torch.autograd.grad returns the gradient and leaves {x}.grad alone")
    if set_grad and not run["x_has_grad"]:
        raise Mismatch(f"{x} already had a .grad and your code set it to None — leave the caller's {x}.grad alone")
    if set_grad and device != "meta":
        try:
            expect_tensor(run["x_grad"], grad.to(device), atol=0, rtol=0, device=device,
                          what=f"{x}.grad after the call (it was already set before)")
        except Mismatch as e:
            raise Mismatch(f"{x} already had a .grad and your code changed it — backward() adds into {x}.grad (and "
                           f"assigning {x}.grad replaces it): torch.autograd.grad on your own leaf, "
                           f"{x}.detach().requires_grad_(True), returns the gradient and leaves {x}.grad alone",
                           f"{e.message}\n{e.detail}".strip()) from None


def _run_cases(t, fn, name: str, f, x, rest: tuple, expected, *, requires_grad=False, grad=None, atol=1e-7,
               rtol=1e-7, explain=None, more=None, on_error=None, dtype_advice=None, arg="x",
               meta=True, any_shape=False, no_grad=False, in_place_advice=None) -> None:
    """One case per device (plus the meta device check without CUDA): value, x left as it was, `more(run)`.
    no_grad=True calls fn inside torch.no_grad()."""
    set_grad = grad is not None
    grad = grad if set_grad else torch.zeros(0, dtype=x.dtype)
    for device in t.devices:
        with t.case(f"{device}: {name}"):
            args = to_device((f, x, rest, requires_grad, set_grad, grad), device)
            try:
                run = t.call(call_with_x, fn, *args, no_grad)
            except LearnerError as e:
                better = on_error(str(e)) if on_error else None
                if better:  # in place of the engine's general advice, if any
                    raise Mismatch(f"{str(e).split(chr(10) + '→ ')[0]}\n→ {better}") from None
                raise
            _expect(run["out"], expected.to(device), device, atol=atol, rtol=rtol, explain=explain,
                    dtype_advice=dtype_advice, any_shape=any_shape)
            _expect_x_kept(run, requires_grad, set_grad, args[5], device, arg, in_place_advice)
            if more is not None:
                more(run)
    if meta and "cuda" not in t.devices:
        t.device_check(name, call_with_x, (fn, f, x, rest, requires_grad, set_grad, grad, no_grad))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol))


# --- numerical_grad ------------------------------------------------------------------------------------------
def central_differences(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The oracle: a plain loop of central differences, in float64."""
    x = x.detach().to(torch.float64)
    flat = x.reshape(-1)
    g = torch.zeros(flat.shape[0], dtype=torch.float64)
    for i in range(flat.shape[0]):
        step = torch.zeros_like(flat)
        step[i] = eps
        g[i] = (f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape))) / (2 * eps)
    return g.reshape(x.shape)


def _forward_differences(f, x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.detach().to(torch.float64)
    flat = x.reshape(-1)
    g = torch.zeros(flat.shape[0], dtype=torch.float64)
    for i in range(flat.shape[0]):
        step = torch.zeros_like(flat)
        step[i] = eps
        g[i] = (f((flat + step).reshape(x.shape)) - f(x)) / eps
    return g.reshape(x.shape)


def _explain_numerical(f, x, eps):
    def explain(got):
        expected = central_differences(f, x, eps)
        if _close(got, _forward_differences(f, x, eps), rtol=1e-5, atol=1e-7):
            return "this is a forward difference (f(x+eps) - f(x)) / eps — use the central one, " \
                   "(f(x+eps) - f(x-eps)) / (2*eps), whose error is far smaller"
        if _close(got, 2 * expected, rtol=1e-5, atol=1e-7):
            return "exactly twice the answer — divide by 2*eps, not by eps"
        if _close(got, expected / 2, rtol=1e-5, atol=1e-7):
            return "exactly half the answer — the step is eps each way, so the distance is 2*eps (not 4*eps)"
        xd = x.detach().double()
        noise32 = 1.2e-7 * (f(xd).abs() + (xd * autograd_gradient(f, xd)).abs().max()) / eps
        if x.dtype == torch.float64 and (got - expected).abs().max() <= 30 * noise32:
            return "errors of the size float32 rounding makes — compute in float64 (x.detach().to(torch.float64))"
        if x.dtype != torch.float64:
            return f"x is {x.dtype} here: convert it to float64 before perturbing — in float32, x + eps rounds " \
                   "away most of eps"
        return None
    return explain


@exercise(LESSON, points=2, difficulty=1, minutes=15, hints=[
    "Perturb one element at a time: for element i, evaluate f at x with eps added to element i, and at x with "
    "eps subtracted; the slope between the two points is the i-th partial derivative.",
    "Work on a float64 copy so x itself never changes: xd = x.detach().to(torch.float64).clone(), then "
    "flat = xd.reshape(-1) is a view you can index with a single i.",
    "g = torch.zeros_like(flat); for each i: keep old = flat[i].item(), set flat[i] = old + eps, fp = f(xd); "
    "flat[i] = old - eps, fm = f(xd); flat[i] = old; g[i] = (fp - fm) / (2 * eps). Return g.reshape(x.shape).",
])
def numerical_grad(t, fn):
    cases = [  # (what, f, x, extra args, requires_grad)
        ("sum of x³ at x (3,), default eps", cubic_sum, t.randn(3), (), False),
        ("4·cos(3x) + x at x (2, 3), eps=1e-3", wavy_sum, t.randn(2, 3), (1e-3,), False),
        ("sum of sin(x)·x² at x (4, 1, 2), eps=1e-5", sin_x_squared, t.randn(4, 1, 2), (1e-5,), False),
        ("a quadratic form at a float32 x (5,), eps=1e-4 (the result is float64)", quadratic_form,
         t.randn(5, dtype=torch.float32), (1e-4,), False),
        ("sum of x³ at x (1,), default eps", cubic_sum, 3 * t.randn(1), (), False),
        ("4·cos(3x) + x at an x (4,) that requires grad, eps=1e-4", wavy_sum, t.randn(4), (1e-4,), True),
    ]
    for what, f, x, rest, requires_grad in cases:
        eps = rest[0] if rest else 1e-6
        _run_cases(t, fn, f"numerical_grad: {what}", f, x, rest, central_differences(f, x, eps),
                   requires_grad=requires_grad, explain=_explain_numerical(f, x, eps), on_error=_numerical_error,
                   dtype_advice="compute and return in float64: convert a copy of x with x.detach().to(torch.float64)")


def _numerical_error(message: str) -> str | None:
    if "leaf Variable that requires grad" in message:
        return "x requires grad, so it cannot be changed in place — perturb a float64 copy, " \
               "x.detach().to(torch.float64).clone(), never x itself"
    return None


# --- grad_of -------------------------------------------------------------------------------------------------
def autograd_gradient(f, x: torch.Tensor) -> torch.Tensor:
    """The oracle: PyTorch's gradient of scalar f at a fresh copy of x."""
    leaf = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(leaf), leaf)
    return g


def _no_graph(what: str, advice: str):
    def more(run):
        if run["out_requires_grad"]:
            raise Mismatch(f"{what} still requires grad (it is attached to a graph) — {advice}")
    return more


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "torch.autograd.grad(outputs, inputs) returns a tuple with one gradient per input, and unlike backward() "
    "it does not write into .grad.",
    "Don't switch on requires_grad on the caller's x: make your own leaf, xg = x.detach().requires_grad_(True).",
    "xg = x.detach().requires_grad_(True); (g,) = torch.autograd.grad(f(xg), xg); return g",
], forbidden={"backward": "backward() accumulates into x.grad; torch.autograd.grad(f(xg), xg) returns the "
                          "gradient and leaves every .grad alone"})
def grad_of(t, fn):
    cases = [  # (what, f, x, requires_grad, existing grad)
        ("sum of x³ at x (4,)", cubic_sum, t.randn(4), False, None),
        ("sum of sin(x)·x² at x (2, 3) that requires grad", sin_x_squared, t.randn(2, 3), True, None),
        ("a quadratic form at x (5,) that requires grad and already has a .grad", quadratic_form, t.randn(5),
         True, t.randn(5)),
        ("sum of x³ at a float32 x (3, 1) with a .grad but requires_grad=False", cubic_sum,
         t.randn(3, 1, dtype=torch.float32), False, t.randn(3, 1, dtype=torch.float32)),
    ]
    more = _no_graph("the gradient", "a first derivative needs no create_graph=True; return a plain tensor")
    for what, f, x, requires_grad, grad in cases:
        _run_cases(t, fn, f"grad_of: {what}", f, x, (), autograd_gradient(f, x), requires_grad=requires_grad,
                   grad=grad, atol=1e-6, rtol=1e-6, more=more)


# --- second_derivative ---------------------------------------------------------------------------------------
def _explain_second(f, x):
    def explain(got):
        if _close(got, autograd_gradient(lambda z: f(z).sum(), x).to(got.dtype), rtol=1e-5, atol=1e-6):
            return "this is the first derivative — differentiate it once more (the first grad needs " \
                   "create_graph=True so that it has a graph of its own)"
        if f is ew_linear and bool((got == 3).all()):
            return "f is linear here, so d²f/dx² is 0 everywhere — return zeros, not the first derivative"
        return None
    return explain


def _second_error(linear: bool):
    def on_error(message: str) -> str | None:
        if "does not require grad" not in message:
            return None
        if linear:
            return "f is linear here, so its first derivative is a constant with no graph and cannot be " \
                   "differentiated again: when it does not require grad, the answer is zeros_like(x)"
        return "the first derivative has no graph — pass create_graph=True to the first torch.autograd.grad"
    return on_error


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Differentiate twice. Because f acts element by element, the gradient of f(x).sum() is the element-wise "
    "first derivative — and the same trick works again for the second.",
    "The first torch.autograd.grad must be called with create_graph=True, or its result has no graph to "
    "differentiate. When f is linear, the first derivative does not depend on x: it has requires_grad False.",
    "xg = x.detach().requires_grad_(True); (d1,) = torch.autograd.grad(f(xg).sum(), xg, create_graph=True); "
    "if not d1.requires_grad: return torch.zeros_like(x); (d2,) = torch.autograd.grad(d1.sum(), xg); return d2",
])
def second_derivative(t, fn):
    cases = [  # (what, f, x, requires_grad)
        ("x³ - 2x at x (5,)", ew_cubic, t.randn(5), False),
        ("sin(x)·x² at x (2, 3)", ew_sin_sq, 2 * t.randn(2, 3), False),
        ("3x - 1 (linear: the answer is all zeros) at x (4,)", ew_linear, t.randn(4), False),
        ("x³ where x > 0, else 2x (zeros where linear) at x (3, 2)", ew_kink, t.randn(3, 2), False),
        ("sin(x)·x² at a float32 x (1,) that requires grad", ew_sin_sq, t.randn(1, dtype=torch.float32), True),
    ]
    for what, f, x, requires_grad in cases:
        tol = 1e-4 if x.dtype == torch.float32 else 1e-9
        _run_cases(t, fn, f"second_derivative: {what}", f, x, (), SECOND[f](x), requires_grad=requires_grad,
                   atol=tol, rtol=tol, explain=_explain_second(f, x), on_error=_second_error(f is ew_linear))


# --- vjp -----------------------------------------------------------------------------------------------------
def _explain_vjp(f, x, v, grad=None):
    def explain(got):
        if got.shape != x.shape:
            if got.shape == v.shape:
                return "this has the shape of v, which is f(x)'s shape — v weights the outputs before going " \
                       "back, so pass it as grad_outputs=v instead of multiplying the gradient by it"
            return None
        ones = torch.autograd.functional.vjp(f, x, torch.ones_like(v))[1]
        if _close(got, ones.to(got.dtype)):
            return "this is vᵀJ for v = all ones — v was ignored: pass it as grad_outputs (or weight f(x) by it)"
        if v.numel() == x.numel():
            jac = torch.autograd.functional.jacobian(f, x).reshape(v.numel(), x.numel())  # (m, n), m == n
            if _close(got, (jac @ v.reshape(-1)).reshape(x.shape).to(got.dtype)):
                return "this is J v, not vᵀJ — transpose: v weights the outputs (the rows of J), vᵀJ = Jᵀv; " \
                       "torch.autograd.grad(f(xg), xg, grad_outputs=v) computes it"
        if got.shape == v.shape and _close(got, (v * ones).to(got.dtype)):
            return "this is v times the gradient of f(x).sum(), which is vᵀJ only when f is element-wise (J " \
                   "diagonal) — pass v as grad_outputs=v so it weights the outputs before going back"
        if grad is not None:
            answer = torch.autograd.functional.vjp(f, x, v)[1]
            if _close(got, (grad + answer).to(got.dtype)):
                return "this is the .grad x already had plus vᵀJ — backward() adds into x.grad: return " \
                       "torch.autograd.grad(f(xg), xg, grad_outputs=v) on your own leaf xg instead"
        return None
    return explain


def _vjp_error(message: str) -> str | None:
    if "grad can be implicitly created only for scalar outputs" in message:
        return "f(x) is not a scalar: give the upstream vector v as grad_outputs=v (or take (f(x) * v).sum())"
    if "shape" in message or "size" in message:
        return "v has f(x)'s shape, not x's: it weights the outputs — pass it as grad_outputs=v"
    return None


_OWN_VJP = "build it from torch.autograd.grad with grad_outputs=v"


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "vᵀJ is exactly what backward computes when v is the upstream gradient: it is the gradient of the scalar "
    "(f(x) * v).sum() with respect to x.",
    "torch.autograd.grad takes the upstream vector as grad_outputs: torch.autograd.grad(y, xg, grad_outputs=v).",
    "xg = x.detach().requires_grad_(True); (g,) = torch.autograd.grad(f(xg), xg, grad_outputs=v); return g",
], forbidden={"torch.autograd.functional.vjp": _OWN_VJP, "torch.func.vjp": _OWN_VJP})
def vjp(t, fn):
    cases = [  # (what, f, x, v, requires_grad, existing grad)
        ("tanh(W x), (4,) -> (3,)", tanh_linear, t.randn(4), t.randn(3), False, None),
        ("element-wise sin(x)·x², (2, 3) -> (2, 3)", ew_sin_sq, t.randn(2, 3), t.randn(2, 3), False, None),
        ("tanh(W x) with a square, non-symmetric W, (4,) -> (4,)", tanh_square, t.randn(4), t.randn(4), False,
         None),
        ("column sums of x³, (5, 2) -> (2,)", column_cubes, t.randn(5, 2), t.randn(2), False, None),
        ("scalar sum of x³, (3,) -> () with a 0-dim v", cubic_sum, t.randn(3), t.randn(()), False, None),
        ("tanh(W x), (1,) -> (3,), x requires grad and has a .grad", tanh_linear, t.randn(1), t.randn(3), True,
         t.randn(1)),
    ]
    for what, f, x, v, requires_grad, grad in cases:
        expected = torch.autograd.functional.vjp(f, x, v)[1]
        _run_cases(t, fn, f"vjp: {what}", f, x, (v,), expected, requires_grad=requires_grad, grad=grad,
                   atol=1e-9, rtol=1e-7, explain=_explain_vjp(f, x, v, grad), any_shape=True,
                   on_error=_vjp_error)


# --- jacobian ------------------------------------------------------------------------------------------------
def reference_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """The oracle: PyTorch's own Jacobian of f at x (zeros where an output does not depend on x)."""
    return torch.autograd.functional.jacobian(f, x.detach())


_NO_GRAPH_UNDER_NO_GRAD = "no graph was built under torch.no_grad() — wrap the forward and the grads in " \
                          "torch.enable_grad(), as torch.autograd.functional.jacobian does: it works inside " \
                          "torch.no_grad() too"


def _explain_jacobian(f, x, no_grad: bool = False):
    """Diagnose a Jacobian of the wrong layout (transposed, flattened) or of the wrong values (accumulated
    rows, finite differences, zeros from a call inside torch.no_grad())."""
    y_shape, x_shape = f(x.detach()).shape, x.shape
    expected = reference_jacobian(f, x)
    m, n = math.prod(y_shape), math.prod(x_shape)
    swapped = expected.reshape(m, n).T.reshape(x_shape + y_shape)   # J with x's dims first
    running = expected.reshape(m, n).cumsum(0).reshape(expected.shape)  # row i = rows 0..i added up

    def explain(got):
        if got.shape != expected.shape:
            if got.shape == x_shape + y_shape:
                return f"this has shape x.shape + f(x).shape = {tuple(got.shape)}: the Jacobian has one row per " \
                       f"output element, so its shape is f(x).shape + x.shape = {tuple(expected.shape)} — stack " \
                       "the vector-Jacobian products of the outputs along a new first dimension, don't transpose"
            if got.shape == (m, n):
                return f"this is the flattened ({m}, {n}) Jacobian — reshape it to f(x).shape + x.shape " \
                       f"= {tuple(expected.shape)}"
            if got.shape == x_shape:
                return "this has the shape of x, like one gradient — the Jacobian needs one vector-Jacobian " \
                       "product per output element, shape f(x).shape + x.shape"
            return None
        if no_grad and not got.any() and expected.any():
            return _NO_GRAPH_UNDER_NO_GRAD
        if x_shape + y_shape == y_shape + x_shape and not _close(swapped, expected) and _close(got, swapped):
            return "this is the transpose: entry [i..., j...] is ∂ f(x)[i...] / ∂ x[j...] — row i is the " \
                   "vector-Jacobian product with the one-hot vector of output i"
        if not _close(running, expected) and _close(got, running, rtol=1e-5, atol=1e-6):
            return "row i is the sum of rows 0..i: .grad adds up across backward() calls — set .grad = None " \
                   "before each one, or use torch.autograd.grad, which returns each row without touching .grad"
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if bool(torch.isfinite(got).all()) and float((got - expected).abs().max()) <= 0.05 * max(1.0, scale):
            return "close to the Jacobian but not exact, as finite differences are — build each row with " \
                   "torch.autograd.grad, which is exact up to rounding"
        return None
    return explain


# Words in an error that a Jacobian assuming 1-D x and f(x) meets on other shapes.
_SHAPE_WORDS = ("0-d", "scalar outputs", "shape", "size", "dimension", "index", "indices")


def _jacobian_error(y_shape, x_shape, no_grad: bool = False):
    """on_error for a case: advice for the learner's exception, from its message."""
    def advice(message: str) -> str | None:
        if no_grad and ("does not require grad" in message or "does not have a grad_fn" in message):
            return _NO_GRAPH_UNDER_NO_GRAD
        if "appears to not have been used in the graph" in message:
            return "an output that does not depend on x has no gradient: pass allow_unused=True and put zeros " \
                   "where torch.autograd.grad returns None"
        if "does not require grad and does not have a grad_fn" in message:
            return "no output of f depends on x here, so f(x) has no graph: when f(x).requires_grad is False " \
                   "the Jacobian is all zeros, torch.zeros(f(x).shape + x.shape, dtype=x.dtype, device=x.device)"
        if "NoneType" in message:
            return "an output that does not depend on x gets no gradient (None, not zeros) — use zeros there " \
                   "(zeros_like(x)) instead of None"
        if "Trying to backward through the graph a second time" in message:
            return "each vector-Jacobian product frees the graph: pass retain_graph=True to every " \
                   "torch.autograd.grad but the last, or compute f(x) again"
        if (len(y_shape), len(x_shape)) != (1, 1) and any(w in message for w in _SHAPE_WORDS):
            return f"here x has shape {tuple(x_shape)} and f(x) has shape {tuple(y_shape)}: don't assume 1-D — " \
                   "take one row per element of y.reshape(-1), and reshape the result to f(x).shape + x.shape"
        return None
    return advice


_NO_VMAP = "loop over the output elements, or batch the products with torch.autograd.grad(..., " \
           "is_grads_batched=True)"
_NO_READY_JACOBIAN = "build the Jacobian yourself from torch.autograd.grad, one vector-Jacobian product per " \
                     "output element (or batched with is_grads_batched=True)"
_NO_FORWARD_AD = "forward mode gives the Jacobian a column at a time; this exercise builds it a row at a time, " \
                 "from vector-Jacobian products: torch.autograd.grad, one per output element (or batched with " \
                 "is_grads_batched=True)"


@exercise(LESSON, points=3, difficulty=2, minutes=25, hints=[
    "Row i of the Jacobian is the gradient of the single output element i: the vector-Jacobian product with a "
    "one-hot v. Flatten the output, y.reshape(-1), and take torch.autograd.grad of each element in turn, with "
    "retain_graph=True so that the graph survives the next call. Stack the rows and reshape to "
    "f(x).shape + x.shape.",
    "Work on your own leaf, xg = x.detach().requires_grad_(True), so x keeps its requires_grad and .grad, and "
    "under torch.enable_grad(), so that a caller's torch.no_grad() cannot stop the graph. For outputs that do "
    "not depend on x, pass allow_unused=True and use zeros where grad returns None; when f(xg).requires_grad is "
    "False, nothing depends on x: return zeros of shape f(x).shape + x.shape.",
    "Inside `with torch.enable_grad():` — xg = x.detach().requires_grad_(True); y = f(xg); "
    "jac = torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device); if not y.requires_grad: return jac; "
    "rows = jac.view(y.numel(), *x.shape); for i, yi in enumerate(y.reshape(-1)): "
    "(g,) = torch.autograd.grad(yi, xg, retain_graph=True, allow_unused=True); "
    "if g is not None: rows[i] = g. Then return jac.",
], forbidden={
    "torch.autograd.functional.jacobian": _NO_READY_JACOBIAN,
    "torch.autograd.functional.hessian": _NO_READY_JACOBIAN,
    "torch.func.jacrev": _NO_READY_JACOBIAN,
    "torch.func.jacfwd": _NO_READY_JACOBIAN,
    "torch.func.hessian": _NO_READY_JACOBIAN,
    "torch.func.vmap": _NO_VMAP,
    "torch.vmap": _NO_VMAP,  # the same function as torch.func.vmap: the last key names it in the message
    "torch.func.jvp": _NO_FORWARD_AD,
    "torch.autograd.forward_ad.dual_level": _NO_FORWARD_AD,
    "torch.autograd.forward_ad.make_dual": _NO_FORWARD_AD,
    "torch.autograd.forward_ad.unpack_dual": _NO_FORWARD_AD,
})
def jacobian(t, fn):
    n = t.unseen(5, 6, 10)            # sizes a learner could tabulate: other ones in the hidden round
    r, c = t.unseen(4, 5, 8), t.unseen(2, 3, 5)
    cases = [  # (what, f, x, requires_grad, existing grad, meta rerun)
        (f"scalar-valued: sum of x³, ({n},) -> ()", cubic_sum, t.randn(n), False, None, False),
        (f"vector-valued and non-square: tanh(W x), ({n},) -> (3,)", tanh_linear, t.randn(n), False, None, True),
        (f"2-D x: column sums of x³, ({r}, {c}) -> ({c},)", column_cubes, t.randn(r, c), False, None, False),
        (f"2-D x and output: sin(x)ᵀ A, ({r}, {c}) -> ({c}, {r})", sin_times_matrix, t.randn(r, c), False, None,
         False),
        ("element-wise sin(x)·x², (2, 3) -> (2, 3)", ew_sin_sq, t.randn(2, 3), False, None, False),
        ("0-d x: (x, x², sin x), () -> (3,)", scalar_to_three, t.randn(()), False, None, False),
        ("0-d x and 0-d output: sin(x)·x², () -> ()", ew_sin_sq, t.randn(()), False, None, False),
        ("float32 x (3,) that requires grad and has a .grad: tanh(W x), (3,) -> (3,)", tanh_linear,
         t.randn(3, dtype=torch.float32), True, t.randn(3, dtype=torch.float32), False),
        (f"an output made from f's own weight, not from x (zeros), ({n},) -> (2,)", own_weight, t.randn(n),
         False, None, True),
        (f"a constant output with no graph (zeros), ({r}, {c}) -> (2, 2)", constant_grid, t.randn(r, c), False,
         None, True),
    ]
    more = _no_graph("the Jacobian", "return it detached: torch.autograd.grad without create_graph=True gives "
                     "plain tensors (retain_graph=True is what keeps the graph for the next output)")
    for what, f, x, requires_grad, grad, meta in cases:
        tol = 1e-5 if x.dtype == torch.float32 else 1e-10
        _run_cases(t, fn, f"jacobian: {what}", f, x, (), reference_jacobian(f, x), requires_grad=requires_grad,
                   grad=grad, atol=tol, rtol=tol, explain=_explain_jacobian(f, x), any_shape=True, more=more,
                   on_error=_jacobian_error(f(x).shape, x.shape), meta=meta)
    x = 0.3 * t.randn(n)  # torch.autograd.functional.jacobian works inside torch.no_grad(): so must yours
    _run_cases(t, fn, f"jacobian called inside torch.no_grad(): tanh(W x), ({n},) -> (3,)", tanh_linear, x, (),
               reference_jacobian(tanh_linear, x), atol=1e-10, rtol=1e-10,
               explain=_explain_jacobian(tanh_linear, x, no_grad=True), any_shape=True, more=more,
               on_error=_jacobian_error((3,), x.shape, no_grad=True), meta=False, no_grad=True)


# --- Sigmoid -------------------------------------------------------------------------------------------------
@exercise(LESSON, points=3, difficulty=2, minutes=20, hints=[
    "forward computes y = σ(x) and saves y (not x) with ctx.save_for_backward(y); backward reads it back with "
    "(y,) = ctx.saved_tensors.",
    "σ'(x) = σ(x)·(1 - σ(x)) = y·(1 - y): only the output is needed. backward returns dL/dx, the chain rule "
    "applied to the incoming grad_output.",
    "forward: y = torch.sigmoid(x); ctx.save_for_backward(y); return y.   "
    "backward: (y,) = ctx.saved_tensors; return grad_output * y * (1 - y)",
])
def Sigmoid(t, cls):
    inputs = [
        ("x (7,)", 3 * t.randn(7)),
        ("float32 x (2, 3)", t.randn(2, 3, dtype=torch.float32)),
        ("large magnitudes ±30, ±800 and 0", torch.tensor([-800.0, -30.0, 0.0, 30.0, 800.0], dtype=torch.float64)),
    ]
    for what, x in inputs:
        upstream = t.randn(*x.shape, dtype=x.dtype)
        y = torch.sigmoid(x)
        want_grad = upstream * y * (1 - y)
        tol = 1e-6 if x.dtype == torch.float32 else 1e-10
        for device in t.devices:
            with t.case(f"{device}: Sigmoid.apply on {what}: value, and gradient from a backward of element-wise "
                        "arithmetic only"):
                run = t.call(sigmoid_run, cls, x.to(device), upstream.to(device))
                if run.get("out_changed"):
                    raise Mismatch("the forward output changed after backward — backward modified the saved y in "
                                   "place (y.mul_(...), y *= ...); use out-of-place arithmetic: "
                                   "grad_output * y * (1 - y)")
                _expect(run["out"], y.to(device), device, atol=tol, rtol=tol, what="Sigmoid.apply(x)")
                if not run["tracks"]:
                    raise Mismatch("Sigmoid.apply(x) does not require grad — call it through .apply (not "
                                   "forward directly) and return the tensor forward computed")

                def explain(got, y=y, upstream=upstream):
                    if _close(got, (y * (1 - y)).to(got.dtype), rtol=1e-5):
                        return "grad_output is missing: backward returns grad_output * y * (1 - y) (chain rule)"
                    if _close(got, (upstream * y).to(got.dtype), rtol=1e-5):
                        return "the factor (1 - y) is missing: σ'(x) = y * (1 - y)"
                    return None
                _expect(run["grad"], want_grad.to(device), device, atol=tol, rtol=tol, explain=explain,
                        what="the gradient from your backward")
        if "cuda" not in t.devices:
            t.device_check(f"Sigmoid forward and backward on {what}", sigmoid_run, (cls, x, upstream, True))

    x = t.randn(2, 3)
    with t.case("gradcheck(Sigmoid.apply, float64 x (2, 3))"):
        try:
            complaint = t.call(sigmoid_gradcheck, cls, x)
        except LearnerError as e:
            if "modified by an inplace operation" not in str(e):
                raise
            raise Mismatch(f"{str(e).split(chr(10) + '→ ')[0]}\n→ backward modified the saved y in place, so a "
                           "second backward finds it changed — use out-of-place arithmetic: "
                           "grad_output * y * (1 - y)") from None
        if complaint:
            raise Mismatch("torch.autograd.gradcheck fails: your backward disagrees with finite differences of "
                           "your forward — backward should return grad_output * y * (1 - y), the upstream "
                           "gradient times σ'(x) = y·(1 - y), computed from the saved output y", complaint)
    with t.case("forward saves the output y with ctx.save_for_backward (not the input)"):
        saved = t.call(sigmoid_saved, cls, x)
        if saved["n"] == 0:
            raise Mismatch("forward saved nothing with ctx.save_for_backward — save the output: "
                           "ctx.save_for_backward(y) (tensors kept as ctx attributes are not checked by autograd)")
        if any(saved["is_input"]):
            raise Mismatch("forward saved the input x — save the output y instead: y * (1 - y) is all "
                           "backward needs, and y has been computed already")
        if not any(saved["is_output"]):
            raise Mismatch("nothing forward saved equals its output y — ctx.save_for_backward(y) with the very "
                           "tensor you return")


# --- gradient_descent ----------------------------------------------------------------------------------------
def plain_descent(f, x0: torch.Tensor, lr: float, steps: int, accumulate: bool = False) -> torch.Tensor:
    """The oracle: `steps` updates x <- x - lr * grad f(x), each gradient from torch.autograd.grad.
    (accumulate=True is the classic bug, gradients summed over steps: for the diagnosis only.)"""
    x = x0.detach().clone()
    total = torch.zeros_like(x)
    for _ in range(steps):
        leaf = x.requires_grad_(True)
        (g,) = torch.autograd.grad(f(leaf), leaf)
        total = total + g if accumulate else g
        x = (leaf - lr * total).detach()
    return x


def _explain_descent(f, x0, lr, steps):
    def explain(got):
        if _close(got, plain_descent(f, x0, lr, steps, accumulate=True).to(got.dtype), rtol=1e-5, atol=1e-6):
            return "the gradients accumulated over the steps — .grad adds up across backward() calls: zero it " \
                   "each step (x.grad.zero_() or x.grad = None), or use torch.autograd.grad"
        for n in (steps - 1, steps + 1):
            if n >= 0 and _close(got, plain_descent(f, x0, lr, n).to(got.dtype), rtol=1e-5, atol=1e-6):
                return f"this is the result after {n} steps, not {steps} — an off-by-one in the loop?"
        return None
    return explain


def _descent_more(run):
    if run["out_requires_grad"]:
        raise Mismatch("the result still requires grad (it is attached to the graph) — return x.detach()")
    if run["out_shares_x"]:
        raise Mismatch("the result shares memory with x0 — return a new tensor (x0.detach().clone() to start)")


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Start from a copy, x = x0.detach().clone(), so x0 is never touched; then repeat `steps` times: compute the "
    "gradient of f at x and step against it, x - lr * gradient.",
    "Each step needs a fresh leaf that requires grad; torch.autograd.grad(f(x), x) gives the gradient without "
    "any .grad to zero. With backward() instead, zero x.grad every step, or the gradients pile up.",
    "x = x0.detach().clone(); for _ in range(steps): x.requires_grad_(True); (g,) = torch.autograd.grad(f(x), x); "
    "x = (x - lr * g).detach(). Then return x.",
])
def gradient_descent(t, fn):
    cases = [  # (what, f, x0, lr, steps, requires_grad, existing grad)
        ("a quadratic form from x0 (4,), lr=0.1, 20 steps", quadratic_form, t.randn(4), 0.1, 20, False, None),
        ("sum of sin(x)·x² from x0 (2, 3), lr=0.05, 7 steps", sin_x_squared, t.randn(2, 3), 0.05, 7, False, None),
        ("sum of x³ from x0 (3,), lr=0.1, 1 step", cubic_sum, t.rand(3), 0.1, 1, False, None),
        ("0 steps: a copy of x0 (3, 1)", quadratic_form, t.randn(3, 1), 0.1, 0, False, None),
        ("a quadratic form from a float32 x0 (5,) that requires grad and has a .grad, lr=0.05, 3 steps",
         quadratic_form, t.randn(5, dtype=torch.float32), 0.05, 3, True, t.randn(5, dtype=torch.float32)),
    ]
    for what, f, x0, lr, steps, requires_grad, grad in cases:
        tol = 1e-5 if x0.dtype == torch.float32 else 1e-9
        _run_cases(t, fn, f"gradient_descent: {what}", f, x0, (lr, steps), plain_descent(f, x0, lr, steps),
                   requires_grad=requires_grad, grad=grad, atol=tol, rtol=tol,
                   explain=_explain_descent(f, x0, lr, steps), more=_descent_more, arg="x0",
                   in_place_advice="start from a copy, x = x0.detach().clone(), and step that copy "
                                   "(x -= ... on x0 itself, or on x = x0, moves the caller's tensor)",
                   meta=steps == 1)  # the meta rerun is slow per step: one step of a cheap f shows the same
