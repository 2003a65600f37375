"""02_autograd: each check accepts an independent correct implementation and rejects the usual mistakes."""
import pytest
import torch

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


def vjp_no_grad_outputs(f, x, v):
    z = x.detach().requires_grad_(True)
    return torch.autograd.grad(f(z), z)[0]


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
    (grad_of_backward_on_x, "grad_of", ("x.grad",)),
    (grad_of_leaves_flag, "grad_of", ("x.requires_grad was False", "after")),
    (grad_of_resets_flag, "grad_of", ("x.requires_grad was True",)),
    (grad_of_create_graph, "grad_of", ("still requires grad",)),
    (second_no_create_graph, "second_derivative", ("create_graph=True",)),
    (second_raises_on_linear, "second_derivative", ("linear", "zeros")),
    (second_returns_first, "second_derivative", ("first derivative",)),
    (second_flips_flag, "second_derivative", ("x.requires_grad was False",)),
    (second_cpu_zeros, "second_derivative", ("device check", "device=x.device")),
    (vjp_ignores_v, "vjp", ("v was ignored",)),
    (vjp_scales_after, "vjp", ("tanh",)),
    (vjp_backward_on_x, "vjp", ("x.requires_grad was False",)),
    (vjp_functional, "vjp", ("called `vjp`", "grad_outputs")),
    (vjp_no_grad_outputs, "vjp", ("grad_outputs=v",)),
    (SigmoidCallsSigmoid, "Sigmoid", ("called `sigmoid`", "saved output")),
    (SigmoidSavesInput, "Sigmoid", ("saved the input",)),
    (SigmoidNoUpstream, "Sigmoid", ("grad_output is missing",)),
    (SigmoidMissingFactor, "Sigmoid", ("(1 - y) is missing",)),
    (SigmoidMissingFactor, "Sigmoid", ("gradcheck", "disagrees with finite differences")),
    (SigmoidAutogradInside, "Sigmoid", ("called `grad`", "no autograd inside backward")),
    (SigmoidCtxAttribute, "Sigmoid", ("saved nothing",)),
    (SigmoidCpuOnes, "Sigmoid", ("device check", "device=x.device")),
    (descent_in_place_on_x0, "gradient_descent", ("changed x0 in place",)),
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


@pytest.mark.parametrize("name", ["numerical_grad", "grad_of", "second_derivative", "vjp", "gradient_descent"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0


def test_sigmoid_stub_is_not_attempted():
    report = evaluate(SigmoidStub, name="Sigmoid")
    assert report.status == "not_attempted" and report.points == 0
