"""02_autograd: each check accepts an independent correct implementation and rejects the usual mistakes."""
import pytest
import torch
from torch.autograd.functional import jacobian as ready_jacobian  # imported before any check runs
from torch.func import jacrev as ready_jacrev
from torch.func import vjp as ready_vjp

from grader import evaluate
from verdicts import assert_passes, assert_rejects


# --- numerical_grad ------------------------------------------------------------------------------------------
def numerical_grad_ok(f, x, eps=1e-6):
    base = x.detach().double().reshape(-1)
    cols = []
    for i in range(base.numel()):
        e = torch.zeros_like(base)
        e[i] = eps
        cols.append((f((base + e).view(x.shape)) - f((base - e).view(x.shape))) / (2 * eps))
    return torch.stack(cols).reshape(x.shape) if cols else torch.zeros(x.shape, dtype=torch.float64)


def numerical_grad_forward(f, x, eps=1e-6):
    base = x.detach().double().reshape(-1)
    out = torch.zeros_like(base)
    f0 = f(base.view(x.shape))
    for i in range(base.numel()):
        e = torch.zeros_like(base)
        e[i] = eps
        out[i] = (f((base + e).view(x.shape)) - f0) / eps
    return out.view(x.shape)


def numerical_grad_over_eps(f, x, eps=1e-6):
    return numerical_grad_ok(f, x, eps) * 2


def numerical_grad_float32(f, x, eps=1e-6):
    base = x.detach().float().reshape(-1)
    out = torch.zeros_like(base)
    for i in range(base.numel()):
        e = torch.zeros_like(base)
        e[i] = eps
        out[i] = (f((base + e).view(x.shape)) - f((base - e).view(x.shape))) / (2 * eps)
    return out.view(x.shape).double()


def numerical_grad_float32_result(f, x, eps=1e-6):
    return numerical_grad_ok(f, x, eps).to(x.dtype)


def numerical_grad_no_restore(f, x, eps=1e-6):
    flat = x.data.view(-1)  # perturbs the caller's x and never puts it back
    out = torch.zeros(flat.numel(), dtype=torch.float64)
    for i in range(flat.numel()):
        flat[i] += eps
        up = f(x).double()
        flat[i] -= 2 * eps
        down = f(x).double()
        out[i] = (up - down) / (2 * eps)
    return out.view(x.shape)


def numerical_grad_in_place_on_x(f, x, eps=1e-6):
    flat = x.view(-1)  # in place on x itself: breaks on a leaf that requires grad
    out = torch.zeros(flat.numel(), dtype=torch.float64)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = f(x).double()
        flat[i] = old - eps
        down = f(x).double()
        flat[i] = old
        out[i] = (up - down) / (2 * eps)
    return out.view(x.shape)


def numerical_grad_cpu_buffer(f, x, eps=1e-6):
    xd = x.detach().double()
    out = torch.zeros(x.shape, dtype=torch.float64)  # no device=: stays on the CPU
    for i in range(x.numel()):
        e = torch.zeros_like(xd).view(-1)
        e[i] = eps
        out.view(-1)[i] = (f(xd + e.view(x.shape)) - f(xd - e.view(x.shape))) / (2 * eps)
    return out


# --- grad_of -------------------------------------------------------------------------------------------------
def grad_of_ok(f, x):
    leaf = x.clone().detach()
    leaf.requires_grad = True
    return torch.autograd.grad(f(leaf), [leaf])[0]


def grad_of_backward(f, x):
    x = x.detach().requires_grad_(True)
    f(x).backward()
    return x.grad


def grad_of_backward_on_x(f, x):
    was = x.requires_grad
    x.requires_grad_(True)
    g = torch.autograd.grad(f(x), x)[0]
    x.requires_grad_(was)
    x.grad = g  # "stores it like backward would"
    return g


def grad_of_leaves_flag(f, x):
    x.requires_grad_(True)
    return torch.autograd.grad(f(x), x)[0]


def grad_of_resets_flag(f, x):
    x.requires_grad_(True)
    g = torch.autograd.grad(f(x), x)[0]
    x.requires_grad_(False)
    return g


def grad_of_create_graph(f, x):
    xg = x.detach().requires_grad_(True)
    return torch.autograd.grad(f(xg), xg, create_graph=True)[0]


# --- second_derivative ---------------------------------------------------------------------------------------
def second_ok(f, x):
    z = x.detach().clone().requires_grad_(True)
    y = f(z)
    (d1,) = torch.autograd.grad(y, z, grad_outputs=torch.ones_like(y), create_graph=True)
    if d1.grad_fn is None:
        return torch.zeros_like(z).detach()
    (d2,) = torch.autograd.grad(d1, z, grad_outputs=torch.ones_like(d1))
    return d2


def second_no_create_graph(f, x):
    z = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(f(z).sum(), z)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    return d2


def second_raises_on_linear(f, x):
    z = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), z)
    return d2


def second_returns_first(f, x):
    z = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(f(z).sum(), z)
    return d1


def second_flips_flag(f, x):
    x.requires_grad_(True)
    (d1,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
    if not d1.requires_grad:
        return torch.zeros_like(x.detach())
    return torch.autograd.grad(d1.sum(), x)[0]


def second_cpu_zeros(f, x):
    z = x.detach().requires_grad_(True)
    (d1,) = torch.autograd.grad(f(z).sum(), z, create_graph=True)
    if not d1.requires_grad:
        return torch.zeros(x.shape, dtype=x.dtype)  # no device=
    return torch.autograd.grad(d1.sum(), z)[0]


# --- vjp -----------------------------------------------------------------------------------------------------
def vjp_ok(f, x, v):
    z = x.detach().clone().requires_grad_(True)
    (f(z) * v).sum().backward()
    return z.grad


def vjp_ignores_v(f, x, v):
    z = x.detach().requires_grad_(True)
    return torch.autograd.grad(f(z).sum(), z)[0]


def vjp_scales_after(f, x, v):
    z = x.detach().requires_grad_(True)
    return v * torch.autograd.grad(f(z).sum(), z)[0]  # right only when f is element-wise


def vjp_backward_on_x(f, x, v):
    x.requires_grad_(True)
    f(x).backward(v)
    return x.grad.clone()


def vjp_functional(f, x, v):
    return torch.autograd.functional.vjp(f, x, v)[1]


def vjp_func_alias(f, x, v):
    _, pullback = ready_vjp(f, x)
    return pullback(v)[0]


def vjp_j_times_v(f, x, v):
    z = x.detach().requires_grad_(True)
    jac = ready_jacobian(f, z.detach()).reshape(v.numel(), x.numel())  # (m, n)
    if v.numel() == x.numel():  # square: J v has the right shape, and the wrong values
        return (jac @ v.reshape(-1)).reshape(x.shape)
    return (jac.T @ v.reshape(-1)).reshape(x.shape)


def vjp_no_grad_outputs(f, x, v):
    z = x.detach().requires_grad_(True)
    return torch.autograd.grad(f(z), z)[0]


# --- jacobian ------------------------------------------------------------------------------------------------
def jacobian_rows_ok(f, x):
    """One vector-Jacobian product per output element, with an explicit one-hot v."""
    with torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        out = f(leaf)
        rows = []
        for i in range(out.numel()):
            v = torch.zeros(out.numel(), dtype=out.dtype, device=out.device)
            v[i] = 1
            g = None
            if out.requires_grad:
                (g,) = torch.autograd.grad(out, leaf, grad_outputs=v.view(out.shape), retain_graph=True,
                                           allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    if not rows:
        return x.new_zeros(out.shape + x.shape)
    return torch.stack(rows).reshape(out.shape + x.shape)


@torch.enable_grad()
def jacobian_batched_ok(f, x):
    """All the products in one call, with is_grads_batched=True."""
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    if not y.requires_grad:
        return torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)
    basis = torch.eye(y.numel(), dtype=y.dtype, device=y.device).reshape(-1, *y.shape)  # (m, *y.shape)
    (g,) = torch.autograd.grad(y, xg, grad_outputs=basis, is_grads_batched=True, allow_unused=True)
    if g is None:
        return torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)
    return g.reshape(y.shape + x.shape)


def _rows(f, x, **grad_kwargs):
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    if not y.requires_grad:
        return y, torch.zeros(y.numel(), x.numel(), dtype=x.dtype, device=x.device)
    rows = []
    for yi in y.reshape(-1):
        (g,) = torch.autograd.grad(yi, xg, retain_graph=True, allow_unused=True, **grad_kwargs)
        rows.append(torch.zeros_like(xg) if g is None else g)
    return y, torch.stack(rows).reshape(y.numel(), x.numel())


def jacobian_transposed(f, x):
    y, rows = _rows(f, x)
    return rows.T.reshape(x.shape + y.shape)  # (n, m): a column per output


def jacobian_flat(f, x):
    return _rows(f, x)[1]  # (m, n), never reshaped


def jacobian_create_graph(f, x):
    y, rows = _rows(f, x, create_graph=True)  # create_graph where retain_graph was meant
    return rows.reshape(y.shape + x.shape)


def jacobian_no_allow_unused(f, x):
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    rows = [torch.autograd.grad(yi, xg, retain_graph=True)[0] for yi in y.reshape(-1)]
    return torch.stack(rows).reshape(y.shape + x.shape)


def jacobian_keeps_none(f, x):
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    if not y.requires_grad:
        return torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)
    rows = [torch.autograd.grad(yi, xg, retain_graph=True, allow_unused=True)[0] for yi in y.reshape(-1)]
    return torch.stack(rows).reshape(y.shape + x.shape)


def jacobian_backward_on_x(f, x):
    was = x.requires_grad
    x.requires_grad_(True)
    y = f(x)
    rows = []
    for yi in y.reshape(-1):
        x.grad = None
        yi.backward(retain_graph=True)
        rows.append(x.grad.clone())
    x.requires_grad_(was)
    return torch.stack(rows).reshape(y.shape + x.shape)


def jacobian_ready_made(f, x):
    return torch.autograd.functional.jacobian(f, x)


def jacobian_alias(f, x):
    return ready_jacobian(f, x.detach())


def jacobian_jacrev_alias(f, x):
    return ready_jacrev(f)(x.detach())


def jacobian_vmap(f, x):
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    basis = torch.eye(y.numel(), dtype=y.dtype).reshape(-1, *y.shape)
    vjp_one = lambda v: torch.autograd.grad(y, xg, v, retain_graph=True)[0]
    return torch.vmap(vjp_one)(basis).reshape(y.shape + x.shape)


def jacobian_without_enable_grad(f, x):
    """Correct, except that inside torch.no_grad() f(xg) records nothing: all zeros."""
    y, rows = _rows(f, x)
    return rows.reshape(y.shape + x.shape)


def jacobian_forward_mode(f, x):
    """Columns from Jacobian-vector products with dual numbers, not rows from vector-Jacobian products."""
    xd = x.detach()
    columns = []
    with torch.enable_grad():
        for j in range(xd.numel()):
            tangent = torch.zeros(xd.numel(), dtype=xd.dtype, device=xd.device)
            tangent[j] = 1
            with torch.autograd.forward_ad.dual_level():
                primal, col = torch.autograd.forward_ad.unpack_dual(
                    f(torch.autograd.forward_ad.make_dual(xd, tangent.view(xd.shape))))
            columns.append(torch.zeros(primal.numel(), dtype=xd.dtype) if col is None else col.reshape(-1))
        y = f(xd)
    return torch.stack(columns, dim=1).reshape(y.shape + x.shape)


def jacobian_func_jvp(f, x):
    xd = x.detach()
    basis = torch.eye(xd.numel(), dtype=xd.dtype, device=xd.device)
    columns = [torch.func.jvp(f, (xd,), (e.view(xd.shape),))[1].reshape(-1) for e in basis]
    return torch.stack(columns, dim=1).reshape(f(xd).shape + x.shape)


def jacobian_finite_differences(f, x, eps=1e-6):
    """Central differences in float64: close to the Jacobian, never exact."""
    with torch.no_grad():
        xd = x.detach().to(torch.float64)
        y = f(x.detach())
        flat = xd.reshape(-1)
        columns = []
        for j in range(flat.numel()):
            step = torch.zeros_like(flat)
            step[j] = eps
            plus = f((flat + step).reshape(x.shape).to(x.dtype)).to(torch.float64)
            minus = f((flat - step).reshape(x.shape).to(x.dtype)).to(torch.float64)
            columns.append(((plus - minus) / (2 * eps)).reshape(-1))
    return torch.stack(columns, dim=1).to(x.dtype).reshape(y.shape + x.shape)


@torch.enable_grad()
def jacobian_one_d_only(f, x):
    """Assumes x and f(x) are vectors: len() and y[i] break on other shapes."""
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    jac = torch.zeros(len(y), len(x), dtype=x.dtype, device=x.device)
    for i in range(len(y)):
        (g,) = torch.autograd.grad(y[i], xg, retain_graph=True, allow_unused=True)
        if g is not None:
            jac[i] = g
    return jac


@torch.enable_grad()
def jacobian_accumulates(f, x):
    """backward() per output without clearing .grad: row i holds rows 0..i added up."""
    xg = x.detach().requires_grad_(True)
    y = f(xg)
    jac = torch.zeros(y.numel(), x.numel(), dtype=x.dtype, device=x.device)
    for i, yi in enumerate(y.reshape(-1)):
        if yi.requires_grad:
            yi.backward(retain_graph=True)
        if xg.grad is not None:
            jac[i] = xg.grad.reshape(-1)
    return jac.reshape(y.shape + x.shape)


# --- Sigmoid -------------------------------------------------------------------------------------------------
class SigmoidOk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        s = ctx.saved_tensors[0]
        return grad_output * (s - s * s)


class SigmoidCallsSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_output * s * (1 - s)


class SigmoidSavesInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = 1 / (1 + torch.exp(-x))
        return grad_output * s * (1 - s)


class SigmoidNoUpstream(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return y * (1 - y)


class SigmoidMissingFactor(SigmoidNoUpstream):
    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y


class SigmoidAutogradInside(SigmoidSavesInput):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            y = 1 / (1 + torch.exp(-z))
            return torch.autograd.grad(y, z, grad_output)[0]


class SigmoidCtxAttribute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x)
        ctx.y = y
        return y

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.y * (1 - ctx.y)


class SigmoidInPlaceOnSaved(SigmoidNoUpstream):
    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y.mul_(1 - y)  # overwrites the output the caller holds


class SigmoidCpuOnes(SigmoidNoUpstream):
    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y * (torch.ones(y.shape, dtype=y.dtype) - y)  # no device=


# --- gradient_descent ----------------------------------------------------------------------------------------
def descent_ok(f, x0, lr, steps):
    x = x0.detach().clone().requires_grad_(True)
    for _ in range(steps):
        loss = f(x)
        x.grad = None
        loss.backward()
        with torch.no_grad():
            x.sub_(x.grad, alpha=lr)
    return x.detach()


def descent_in_place_on_x0(f, x0, lr, steps):
    x = x0.data  # the same memory as x0
    for _ in range(steps):
        z = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(z), z)
        x -= lr * g
    return x.clone()


def descent_returns_x0(f, x0, lr, steps):
    x = x0.detach()
    for _ in range(steps):
        x = x.requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        x = (x - lr * g).detach()
    return x


def descent_no_zero_grad(f, x0, lr, steps):
    x = x0.detach().clone().requires_grad_(True)
    for _ in range(steps):
        f(x).backward()
        with torch.no_grad():
            x -= lr * x.grad
    return x.detach()


def descent_attached(f, x0, lr, steps):
    x = x0.detach().clone().requires_grad_(True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(f(x), x, create_graph=True)
        x = x - lr * g
    return x


def descent_off_by_one(f, x0, lr, steps):
    x = x0.detach().clone()
    for _ in range(steps - 1):
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(f(x), x)
        x = (x - lr * g).detach()
    return x


def descent_flips_x0(f, x0, lr, steps):
    x0.requires_grad_(True)
    x = x0
    for _ in range(steps):
        (g,) = torch.autograd.grad(f(x), x)
        x = (x - lr * g).detach().requires_grad_(True)
    return x.detach().clone()


CORRECT = [
    (numerical_grad_ok, "numerical_grad"),
    (grad_of_ok, "grad_of"),
    (second_ok, "second_derivative"),
    (vjp_ok, "vjp"),
    (jacobian_rows_ok, "jacobian"),
    (jacobian_batched_ok, "jacobian"),
    (SigmoidOk, "Sigmoid"),
    (descent_ok, "gradient_descent"),
]


@pytest.mark.parametrize("impl, name", CORRECT)
def test_independent_implementation_passes(impl, name):
    assert_passes(impl, name)


@pytest.mark.parametrize("wrong, name, fragments", [
    (numerical_grad_forward, "numerical_grad", ("forward difference",)),
    (numerical_grad_over_eps, "numerical_grad", ("twice the answer", "2*eps")),
    (numerical_grad_float32, "numerical_grad", ("x (3,), default eps", "float32 rounding", "float64")),
    (numerical_grad_float32_result, "numerical_grad", ("expected dtype torch.float64", "float64")),
    (numerical_grad_no_restore, "numerical_grad", ("changed x in place",)),
    (numerical_grad_in_place_on_x, "numerical_grad", ("x requires grad", "copy")),
    (numerical_grad_cpu_buffer, "numerical_grad", ("device check", "device=x.device")),
    (grad_of_backward, "grad_of", ("called `backward`", "torch.autograd.grad")),
    (grad_of_backward_on_x, "grad_of", ("x already had a .grad and your code changed it",)),
    (grad_of_leaves_flag, "grad_of", ("x.requires_grad was False", "after")),
    (grad_of_resets_flag, "grad_of", ("x.requires_grad was True",)),
    (grad_of_create_graph, "grad_of", ("still requires grad",)),
    (second_no_create_graph, "second_derivative", ("create_graph=True",)),
    (second_raises_on_linear, "second_derivative", ("linear", "zeros")),
    (second_returns_first, "second_derivative", ("first derivative",)),
    (second_flips_flag, "second_derivative", ("x.requires_grad was False",)),
    (second_cpu_zeros, "second_derivative", ("device check", "device=x.device")),
    (vjp_ignores_v, "vjp", ("v was ignored",)),
    (vjp_scales_after, "vjp", ("tanh", "pass it as grad_outputs=v")),
    (vjp_backward_on_x, "vjp", ("x.requires_grad was False",)),
    (vjp_backward_on_x, "vjp", ("plus vᵀJ", "backward() adds into x.grad")),
    (vjp_functional, "vjp", ("called `torch.autograd.functional.vjp`", "grad_outputs")),
    (vjp_func_alias, "vjp", ("called `torch.func.vjp`", "grad_outputs")),
    (vjp_no_grad_outputs, "vjp", ("grad_outputs=v",)),
    (vjp_j_times_v, "vjp", ("square, non-symmetric", "J v, not vᵀJ — transpose")),
    (jacobian_transposed, "jacobian", ("x.shape + f(x).shape", "one row per output element")),
    (jacobian_transposed, "jacobian", ("(3,) -> (3,)", "this is the transpose")),
    (jacobian_flat, "jacobian", ("flattened", "reshape it to f(x).shape + x.shape")),
    (jacobian_create_graph, "jacobian", ("the Jacobian still requires grad", "retain_graph=True")),
    (jacobian_no_allow_unused, "jacobian", ("f's own weight", "allow_unused=True", "zeros")),
    (jacobian_no_allow_unused, "jacobian", ("constant output", "f(x).requires_grad is False", "zeros")),
    (jacobian_keeps_none, "jacobian", ("no gradient (None, not zeros)", "zeros_like(x)")),
    (jacobian_backward_on_x, "jacobian", ("x already had a .grad and your code changed it", "torch.autograd.grad")),
    (jacobian_ready_made, "jacobian", ("called `torch.autograd.functional.jacobian`", "vector-Jacobian")),
    (jacobian_alias, "jacobian", ("called `torch.autograd.functional.jacobian`",)),
    (jacobian_jacrev_alias, "jacobian", ("called `torch.func.jacrev`",)),
    (jacobian_vmap, "jacobian", ("vmap`, which this exercise forbids", "is_grads_batched=True")),
    (jacobian_without_enable_grad, "jacobian", ("inside torch.no_grad()", "no graph was built under "
                                                "torch.no_grad()", "torch.enable_grad()")),
    (jacobian_forward_mode, "jacobian", ("called `torch.autograd.forward_ad.dual_level`", "vector-Jacobian")),
    (jacobian_func_jvp, "jacobian", ("called `torch.func.jvp`", "a row at a time")),
    (jacobian_finite_differences, "jacobian", ("not exact, as finite differences are", "torch.autograd.grad")),
    (jacobian_one_d_only, "jacobian", ("don't assume 1-D", "y.reshape(-1)", "f(x).shape + x.shape")),
    (jacobian_accumulates, "jacobian", ("row i is the sum of rows 0..i", ".grad = None")),
    (SigmoidCallsSigmoid, "Sigmoid", ("called `sigmoid`", "saved output")),
    (SigmoidSavesInput, "Sigmoid", ("saved the input",)),
    (SigmoidNoUpstream, "Sigmoid", ("grad_output is missing",)),
    (SigmoidMissingFactor, "Sigmoid", ("(1 - y) is missing",)),
    (SigmoidMissingFactor, "Sigmoid", ("gradcheck", "disagrees with finite differences")),
    (SigmoidAutogradInside, "Sigmoid", ("called `grad`", "no autograd inside backward")),
    (SigmoidCtxAttribute, "Sigmoid", ("saved nothing",)),
    (SigmoidCpuOnes, "Sigmoid", ("device check", "device=x.device")),
    (SigmoidInPlaceOnSaved, "Sigmoid", ("the forward output changed after backward", "in place",
                                        "out-of-place arithmetic")),
    (descent_in_place_on_x0, "gradient_descent", ("changed x0 in place", "start from a copy, x = x0.detach().clone()")),
    (descent_returns_x0, "gradient_descent", ("shares memory with x0",)),
    (descent_no_zero_grad, "gradient_descent", ("accumulated", "zero")),
    (descent_attached, "gradient_descent", ("still requires grad", "detach")),
    (descent_off_by_one, "gradient_descent", ("after 6 steps, not 7", "off-by-one")),
    (descent_flips_x0, "gradient_descent", ("x0.requires_grad was False",)),
])
def test_wrong_implementations_are_rejected(wrong, name, fragments):
    assert_rejects(wrong, name, *fragments)


def stub(*args):
    raise NotImplementedError()


class SigmoidStub(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        raise NotImplementedError()

    @staticmethod
    def backward(ctx, grad_output):
        raise NotImplementedError()


@pytest.mark.parametrize("name", ["numerical_grad", "grad_of", "second_derivative", "vjp", "jacobian",
                                  "gradient_descent"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0


def test_sigmoid_stub_is_not_attempted():
    report = evaluate(SigmoidStub, name="Sigmoid")
    assert report.status == "not_attempted" and report.points == 0


@pytest.mark.parametrize("impl", [jacobian_rows_ok, jacobian_batched_ok])
def test_jacobian_hidden_round_draws_other_sizes_and_passes(impl, monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(impl, name="jacobian")
    hidden = [c for c in report.cases if c.hidden]
    assert report.passed and hidden and all(c.passed for c in hidden), report.text()


def test_jacobian_hidden_round_catches_a_table_of_public_sizes(monkeypatch):
    """An answer that only handles the public sizes (5, and (4, 2)) fails the hidden round."""
    def sized_jacobian(f, x):
        if x.numel() not in (0, 1, 3, 5, 6, 8):
            raise KeyError(tuple(x.shape))
        return jacobian_rows_ok(f, x)

    assert evaluate(sized_jacobian, name="jacobian").passed
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(sized_jacobian, name="jacobian")
    assert report.status == "failed" and all(c.hidden for c in report.cases if not c.passed and not c.skipped)
