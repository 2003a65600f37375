"""03_modules: each check accepts an independent correct implementation and rejects the usual mistakes."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader import evaluate
from verdicts import assert_passes, assert_rejects


def assert_not_attempted(obj, name):
    report = evaluate(obj, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


# ============================================================================================================
# gelu
# ============================================================================================================

def gelu_erf(x, approximate="none"):
    if approximate == "none":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def gelu_ndtr(x, approximate="none"):  # Φ from torch.special; tanh through 0.5 * (1 + tanh(u)) = sigmoid(2u)
    if approximate not in ("none", "tanh"):
        raise ValueError(approximate)
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * x * (1 + 0.044715 * x * x)
        return x * torch.sigmoid(2 * u)
    return x * torch.special.ndtr(x)


def gelu_erfc(x, approximate="none"):  # Φ(x) = erfc(-x / √2) / 2, accurate far in the negative tail
    modes = {"none": lambda: x * torch.erfc(-x * (1 / math.sqrt(2))) / 2,
             "tanh": lambda: x * (torch.tanh((x + 0.044715 * x.pow(3)) * math.sqrt(2 / math.pi)) + 1) / 2}
    if approximate not in modes:
        raise ValueError("unknown approximate")
    return modes[approximate]()


def gelu_sigmoid_approx(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(approximate)
    return x * torch.sigmoid(1.702 * x)


def gelu_no_cubic(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x))
    return gelu_erf(x, approximate)


def gelu_two_over_pi(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(2 / math.pi * (x + 0.044715 * x ** 3)))
    return gelu_erf(x, approximate)


def gelu_erf_half(x, approximate="none"):
    if approximate == "none":
        return 0.5 * x * (1 + torch.erf(x / 2))
    return gelu_erf(x, approximate)


def gelu_ignores_approximate(x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(approximate)
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_always_tanh(x, approximate="none"):
    return gelu_erf(x, "tanh")


def gelu_no_value_error(x, approximate="none"):
    return gelu_erf(x, "tanh" if approximate == "tanh" else "none")


def gelu_key_error(x, approximate="none"):
    forms = {"none": gelu_erf, "tanh": lambda x: gelu_erf(x, "tanh")}
    return forms[approximate](x)


def gelu_calls_f(x, approximate="none"):
    return F.gelu(x, approximate=approximate)


def gelu_uses_module(x, approximate="none"):
    return nn.GELU(approximate=approximate)(x)


def gelu_rounded_constants(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + torch.tanh(0.79788 * (x + 0.044715 * x ** 3)))
    if approximate == "none":
        return 0.5 * x * (1 + torch.erf(x * 0.7071))
    raise ValueError(approximate)


class _GeluPhiOnly(torch.autograd.Function):  # a hand-written backward that forgets the product rule
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    @staticmethod
    def backward(ctx, grad_output):
        x, = ctx.saved_tensors
        return grad_output * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def gelu_backward_phi_only(x, approximate="none"):
    if approximate == "none":
        return _GeluPhiOnly.apply(x)
    return gelu_erf(x, approximate)


def gelu_detached(x, approximate="none"):
    return gelu_erf(x.detach(), approximate)


def gelu_float32_inside(x, approximate="none"):
    return gelu_erf(x.float(), approximate).to(x.dtype)


def gelu_in_place_without_grad(x, approximate="none"):
    """Writes the answer into the caller's x whenever autograd would not complain."""
    y = gelu_erf(x, approximate)
    if x.requires_grad:
        return y
    return x.copy_(y)


def gelu_tanh_through_exp(x, approximate="none"):
    """tanh(z) as (e^2z - 1) / (e^2z + 1): inf / inf = nan once e^2z overflows."""
    if approximate == "tanh":
        e = torch.exp(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1 + (e - 1) / (e + 1))
    return gelu_erf(x, approximate)


def _erf_polynomial(z):
    """A classic rational approximation of erf, good to about 1e-7."""
    s = 1 / (1 + 0.3275911 * z.abs())
    poly = s * (0.254829592 + s * (-0.284496736 + s * (1.421413741 + s * (-1.453152027 + s * 1.061405429))))
    return torch.sign(z) * (1 - poly * torch.exp(-z * z))


def gelu_own_erf(x, approximate="none"):
    if approximate == "none":
        return 0.5 * x * (1 + _erf_polynomial(x / math.sqrt(2)))
    return gelu_erf(x, approximate)


def gelu_stub(x, approximate="none"):
    raise NotImplementedError()


@pytest.mark.parametrize("ok", [gelu_erf, gelu_ndtr, gelu_erfc])
def test_gelu_passes(ok):
    assert_passes(ok, "gelu")


@pytest.mark.parametrize("wrong, fragments", [
    (gelu_sigmoid_approx, ("sigmoid approximation", "erf(x / √2)")),
    (gelu_no_cubic, ("cubic term is missing",)),
    (gelu_two_over_pi, ("2/π", "math.sqrt(2 / math.pi)")),
    (gelu_erf_half, ("erf(x / 2)", "divide by math.sqrt(2)")),
    (gelu_ignores_approximate, ("exact erf form", "approximate='tanh'")),
    (gelu_always_tanh, ("tanh approximation", "approximate='none'")),
    (gelu_no_value_error, ("should raise ValueError",)),
    (gelu_key_error, ("should raise ValueError, but raised KeyError",)),
    (gelu_calls_f, ("called `gelu`", "forbids")),
    (gelu_uses_module, ("called `gelu`", "forbids")),
    (gelu_rounded_constants, ("close, but not to float", "rounded constant")),
    (gelu_backward_phi_only, ("gradient is Φ(x) alone", "product rule")),
    (gelu_detached, ("does not track gradients",)),
    (gelu_float32_inside, ("not to float64 precision", "no float32 tensor in between")),
    (gelu_in_place_without_grad, ("does not require grad", "you changed your input in place",
                                  "compute a new tensor")),
    (gelu_tanh_through_exp, ("large magnitudes", "has nan where", "use torch.tanh and torch.erf")),
    (gelu_tanh_through_exp, ("x from -12 to 12 float64", "and nan or inf for large |x| in another case")),
    (gelu_own_erf, ("close, but not to float64", "an erf approximation", "use torch.erf")),
])
def test_gelu_rejects(wrong, fragments):
    assert_rejects(wrong, "gelu", *fragments)


def test_gelu_stub():
    assert_not_attempted(gelu_stub, "gelu")


# ============================================================================================================
# Linear
# ============================================================================================================

class LinearOK(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        bound = in_features ** -0.5
        self.weight = nn.Parameter(2 * bound * torch.rand(out_features, in_features) - bound)
        self.bias = nn.Parameter(2 * bound * torch.rand(out_features) - bound) if bias else None

    def forward(self, x):
        out = torch.matmul(x, self.weight.transpose(0, 1))
        if self.bias is not None:
            out = out + self.bias
        return out


class LinearUsesF(LinearOK):
    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LinearTransposed(nn.Module):  # weight stored as (in, out)
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        k = in_features ** -0.5
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-k, k))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k)) if bias else None

    def forward(self, x):
        return x @ self.weight + (0 if self.bias is None else self.bias)


class LinearRandn(LinearOK):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.weight = nn.Parameter(torch.randn(out_features, in_features))


class LinearBiasFanOut(LinearOK):  # bias bound from out_features
    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        if bias:
            k = out_features ** -0.5
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k))


class LinearZeroBias(LinearOK):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features))


class LinearFrozenZeroBias(LinearOK):  # "no bias" as a frozen zero parameter
    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, True)
        if not bias:
            self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False)


class LinearNoBiasAttr(nn.Module):  # bias=False leaves no `bias` attribute at all
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        k = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-k, k))
        self.has_bias = bias
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k))

    def forward(self, x):
        return x @ self.weight.T + self.bias if self.has_bias else x @ self.weight.T


class LinearMM(LinearOK):  # 2-D only
    def forward(self, x):
        out = torch.mm(x, self.weight.t())
        return out if self.bias is None else out + self.bias


class LinearPlainTensor(LinearOK):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        w = self.weight.detach().clone().requires_grad_(True)
        del self.weight
        self.weight = w


class LinearWrapsNN(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.inner = nn.Linear(in_features, out_features, bias)

    def forward(self, x):
        return x @ self.inner.weight.T + (0 if self.inner.bias is None else self.inner.bias)


class LinearDetachedWeight(LinearOK):
    def forward(self, x):
        out = x @ self.weight.data.T
        return out if self.bias is None else out + self.bias


class LinearCpuZeros(LinearOK):  # a zero bias made on the CPU when there is none
    def forward(self, x):
        bias = self.bias if self.bias is not None else torch.zeros(self.weight.shape[0], dtype=x.dtype)
        return x @ self.weight.T + bias


class LinearStub(nn.Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        raise NotImplementedError()

    def forward(self, x):
        raise NotImplementedError()


def test_linear_passes():
    assert_passes(LinearOK, "Linear")


@pytest.mark.parametrize("wrong, fragments", [
    (LinearUsesF, ("forbids", "linear")),
    (LinearTransposed, ("(out_features, in_features)",)),
    (LinearRandn, ("weight has values up to", "outside")),
    (LinearBiasFanOut, ("bias has variance",)),
    (LinearZeroBias, ("bias is all zeros",)),
    (LinearFrozenZeroBias, ("no bias parameter",)),
    (LinearNoBiasAttr, ("should be None",)),
    (LinearMM, ("any leading dimensions",)),
    (LinearPlainTensor, ("plain tensor", "nn.Parameter")),
    (LinearWrapsNN, ("uses an nn.Linear",)),
    (LinearDetachedWeight, ("no gradient reached `weight`",)),
    (LinearCpuZeros, ("device check", "combines a CPU tensor")),
])
def test_linear_rejects(wrong, fragments):
    assert_rejects(wrong, "Linear", *fragments)


def test_linear_stub():
    assert_not_attempted(LinearStub, "Linear")


# ============================================================================================================
# MLP
# ============================================================================================================

class MLPOK(nn.Sequential):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        n = len(sizes) - 1
        for k in range(n):
            self.add_module(f"fc{k}", nn.Linear(sizes[k], sizes[k + 1]))
            if k + 1 < n:
                self.add_module(f"act{k}", activation())
                if dropout:
                    self.add_module(f"drop{k}", nn.Dropout(p=dropout))


def _mlp_layers(sizes, make_act, dropout, act_last=False, drop_first=False, always_drop=False):
    layers = []
    n = len(sizes) - 1
    for k in range(n):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k + 1 < n or act_last:
            extra = [make_act()]
            if dropout > 0 or always_drop:
                extra.append(nn.Dropout(dropout))
            layers += extra[::-1] if drop_first else extra
    return layers


class MLPSharedAct(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        act = activation()
        self.net = nn.Sequential(*_mlp_layers(sizes, lambda: act, dropout))

    def forward(self, x):
        return self.net(x)


class MLPActAfterLast(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(*_mlp_layers(sizes, activation, dropout, act_last=True))

    def forward(self, x):
        return self.net(x)


class MLPDropoutFirst(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(*_mlp_layers(sizes, activation, dropout, drop_first=True))

    def forward(self, x):
        return self.net(x)


class MLPAlwaysDropout(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(*_mlp_layers(sizes, activation, dropout, always_drop=True))

    def forward(self, x):
        return self.net(x)


class MLPFunctionalRelu(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.dropout = dropout

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.dropout(torch.relu(layer(x)), self.dropout, self.training)
        return self.layers[-1](x)


class MLPIgnoresActivation(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(*_mlp_layers(sizes, nn.ReLU, dropout))

    def forward(self, x):
        return self.net(x)


class MLPTwoLists(nn.Module):  # linears in one ModuleList, activations (and dropouts) in others, interleaved
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.acts = nn.ModuleList(activation() for _ in sizes[2:])
        self.drops = nn.ModuleList(nn.Dropout(dropout) for _ in sizes[2:]) if dropout > 0 else None

    def forward(self, x):
        for k, act in enumerate(self.acts):
            x = act(self.linears[k](x))
            if self.drops is not None:
                x = self.drops[k](x)
        return self.linears[-1](x)


class MLPModuleDict(nn.Module):  # registered in an order unlike the run order: all hidden layers first
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.n, self.dropout = len(sizes) - 1, dropout
        self.layers = nn.ModuleDict()
        for k in range(self.n):
            self.layers[f"fc{k}"] = nn.Linear(sizes[k], sizes[k + 1])
        for k in range(self.n - 1):
            self.layers[f"act{k}"] = activation()
            if dropout > 0:
                self.layers[f"drop{k}"] = nn.Dropout(dropout)

    def forward(self, x):
        for k in range(self.n):
            x = self.layers[f"fc{k}"](x)
            if k < self.n - 1:
                x = self.layers[f"act{k}"](x)
                if self.dropout > 0:
                    x = self.layers[f"drop{k}"](x)
        return x


class MLPAttributes(nn.Module):  # one attribute per layer, set with setattr
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.names = []
        for k in range(len(sizes) - 1):
            setattr(self, f"layer{k}", nn.Linear(sizes[k], sizes[k + 1]))
            self.names.append(f"layer{k}")
            if k < len(sizes) - 2:
                setattr(self, f"act{k}", activation())
                self.names.append(f"act{k}")
                if dropout > 0:
                    setattr(self, f"drop{k}", nn.Dropout(dropout))
                    self.names.append(f"drop{k}")

    def forward(self, x):
        for name in self.names:
            x = getattr(self, name)(x)
        return x


class MLPBlocks(nn.Module):  # nn.Sequential of (Linear, activation[, Dropout]) blocks, then the head
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        blocks = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            block = [nn.Linear(a, b), activation()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            blocks.append(nn.Sequential(*block))
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(sizes[-2], sizes[-1])

    def forward(self, x):
        return self.head(self.body(x))


class MLPPlainList(nn.Module):  # the layers in a Python list: not registered
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.layers = _mlp_layers(sizes, activation, dropout)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MLPHalfRegistered(nn.Module):  # linears registered, activations in a plain list
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.acts = [activation() for _ in sizes[2:]]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        for lin, act in zip(self.linears, self.acts):
            x = self.dropout(act(lin(x)))
        return self.linears[-1](x)


class MLPSkipsActivation(MLPTwoLists):  # registers the activations but forward never calls them
    def forward(self, x):
        for k in range(len(self.acts)):
            x = torch.relu(self.linears[k](x))
            if self.drops is not None:
                x = self.drops[k](x)
        return self.linears[-1](x)


class MLPMissingLast(nn.Module):  # range(len(sizes) - 2): the output layer is never built
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        layers = []
        for k in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[k], sizes[k + 1]), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPActivationsLast(nn.Module):  # every Linear first, then every activation
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.acts = nn.ModuleList(activation() for _ in sizes[2:])

    def forward(self, x):
        for lin in self.linears:
            x = lin(x)
        for act in self.acts:
            x = act(x)
        return x


class MLPDropoutBeforeHead(nn.Module):  # one Dropout, in front of the last Linear
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        layers = _mlp_layers(sizes, activation, 0.0)
        if dropout > 0:
            layers.insert(len(layers) - 1, nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class MLPStub(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        raise NotImplementedError()


@pytest.mark.parametrize("ok", [MLPOK, MLPTwoLists, MLPModuleDict, MLPAttributes, MLPBlocks])
def test_mlp_passes(ok):
    assert_passes(ok, "MLP")


@pytest.mark.parametrize("wrong, fragments", [
    (MLPSharedAct, ("same", "once per layer")),
    (MLPActAfterLast, ("activation after the last layer", "only after the hidden layers")),
    (MLPDropoutFirst, ("the order is Linear, activation, then Dropout",)),
    (MLPAlwaysDropout, ("p=0",)),
    (MLPFunctionalRelu, ("no nn.ReLU module",)),
    (MLPFunctionalRelu, ("no nn.GELU module runs", "the same goes for nn.Dropout(0.25)")),
    (MLPMissingLast, ("the last layer nn.Linear(9, 4) is missing", "range(len(sizes) - 1)")),
    (MLPActivationsLast, ("nn.ReLU ran after nn.Linear(9, 4), not after nn.Linear(3, 9)",
                          "apply each activation right after its Linear")),
    (MLPDropoutBeforeHead, ("nn.Dropout(0.3) runs before nn.Linear(3, 2)", "nowhere else")),
    (MLPIgnoresActivation, ("use the `activation` class",)),
    (MLPPlainList, ("`self.layers` is a plain Python container", "not registered", "nn.ModuleList")),
    (MLPHalfRegistered, ("`self.acts` is a plain Python container", "not registered")),
    (MLPSkipsActivation, ("no nn.ReLU module runs", "torch.relu")),
])
def test_mlp_rejects(wrong, fragments):
    assert_rejects(wrong, "MLP", *fragments)


def test_mlp_stub():
    assert_not_attempted(MLPStub, "MLP")


# ============================================================================================================
# count_parameters
# ============================================================================================================

def count_ok(module, trainable_only=True):
    seen, total = set(), 0
    for p in module.parameters():
        if id(p) not in seen and (p.requires_grad or not trainable_only):
            seen.add(id(p))
            total += p.numel()
    return total


def count_per_module(module, trainable_only=True):  # counts a tied weight once per owner
    return sum(p.numel() for m in module.modules() for p in m.parameters(recurse=False)
               if p.requires_grad or not trainable_only)


def count_over_modules(module, trainable_only=True):  # m.parameters() recurses: counted once per ancestor
    return sum(p.numel() for m in module.modules() for p in m.parameters()
               if p.requires_grad or not trainable_only)


def count_ignores_flag(module, trainable_only=True):
    return sum(p.numel() for p in module.parameters())


def count_tensors(module, trainable_only=True):
    return len([p for p in module.parameters() if p.requires_grad or not trainable_only])


def count_state_dict(module, trainable_only=True):
    return sum(v.numel() for v in module.state_dict().values())


def count_as_tensor(module, trainable_only=True):
    return torch.tensor([p.numel() for p in module.parameters() if p.requires_grad or not trainable_only]).sum()


def count_children(module, trainable_only=True):
    return sum(p.numel() for child in module.children() for p in child.parameters()
               if p.requires_grad or not trainable_only)


def count_math_prod(module, trainable_only=True):  # named_parameters() skips duplicates too
    import math
    return sum(math.prod(p.shape) for _, p in module.named_parameters() if p.requires_grad or not trainable_only)


def count_named_modules(module, trainable_only=True):  # a tied weight once per module that holds it
    total = 0
    for _, m in module.named_modules():
        total += sum(p.numel() for p in m.parameters(recurse=False) if p.requires_grad or not trainable_only)
    return total


def count_no_dedup(module, trainable_only=True):
    return sum(p.numel() for _, p in module.named_parameters(remove_duplicate=False)
               if p.requires_grad or not trainable_only)


def count_first_two_dims(module, trainable_only=True):  # right for Linear weights, wrong for a Conv2d's
    total = 0
    for p in module.parameters():
        if p.requires_grad or not trainable_only:
            total += p.shape[0] * (p.shape[1] if p.dim() > 1 else 1)
    return total


def count_inverted_flag(module, trainable_only=True):
    if trainable_only:
        return sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return sum(p.numel() for p in module.parameters())


def count_grad_as_trainable(module, trainable_only=True):  # p.grad is None before any backward
    return sum(p.numel() for p in module.parameters() if p.grad is not None or not trainable_only)


def count_own_only(module, trainable_only=True):
    return sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad or not trainable_only)


def count_as_float(module, trainable_only=True):
    return float(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only))


def count_stub(module, trainable_only=True):
    raise NotImplementedError()


@pytest.mark.parametrize("ok", [count_ok, count_math_prod])
def test_count_parameters_passes(ok):
    assert_passes(ok, "count_parameters")


@pytest.mark.parametrize("wrong, fragments", [
    (count_per_module, ("shared (tied) weight was counted once per module that holds it",)),
    (count_named_modules, ("shared (tied) weight was counted once per module that holds it",)),
    (count_no_dedup, ("shared (tied) weight", "count each Parameter once")),
    (count_over_modules, ("once per module above it", "already recurses", "module.parameters() once")),
    (count_ignores_flag, ("frozen parameters", "counted although trainable_only is True",
                          "p.requires_grad or not trainable_only")),
    (count_inverted_flag, ("trainable_only is inverted",)),
    (count_grad_as_trainable, ("p.grad", "p.requires_grad is True")),
    (count_tensors, ("number of parameter tensors",)),
    (count_state_dict, ("state_dict() also holds buffers",)),
    (count_as_tensor, ("returned a tensor", ".item()")),
    (count_as_float, ("returned a float", "return an int", "no float conversion")),
    (count_children, ("module.children()", "registered on the module itself")),
    (count_own_only, ("recurse=False", "module.parameters()")),
    (count_first_two_dims, ("small CNN", "count p.numel(), not the first two dimensions")),
])
def test_count_parameters_rejects(wrong, fragments):
    assert_rejects(wrong, "count_parameters", *fragments)


def test_count_parameters_stub():
    assert_not_attempted(count_stub, "count_parameters")


# ============================================================================================================
# init_weights
# ============================================================================================================

def init_ok(m):
    if type(m) is nn.Linear:
        fan_out, fan_in = m.weight.shape
        a = math.sqrt(6.0 / (fan_in + fan_out))
        with torch.no_grad():
            m.weight.uniform_(-a, a)
            if m.bias is not None:
                m.bias.zero_()


def init_xavier_normal(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_normal_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_kaiming(m):
    if isinstance(m, nn.Linear):
        nn.init.kaiming_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_every_weight(m):
    if hasattr(m, "weight") and m.weight.dim() >= 2:
        nn.init.xavier_uniform_(m.weight)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


def init_forgets_none_bias(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


def init_keeps_bias(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)


def init_new_parameter(m):
    if isinstance(m, nn.Linear):
        m.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(m.out_features, m.in_features)))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_new_parameter_same_device(m):  # a new Parameter where the old one was: the optimizer's is stale
    if isinstance(m, nn.Linear):
        m.weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty_like(m.weight)))
        if m.bias is not None:
            m.bias = nn.Parameter(torch.zeros_like(m.bias))


def init_swaps_data(m):
    if isinstance(m, nn.Linear):
        m.weight.data = nn.init.xavier_uniform_(torch.empty_like(m.weight))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def init_fill_without_no_grad(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            m.bias.fill_(0.0)


def init_skips_biasless(m):
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)


def init_data_float64(m):  # a float64 tensor assigned to .data: other memory, and refused on the meta device
    if isinstance(m, nn.Linear):
        fan_out, fan_in = m.weight.shape
        a = math.sqrt(6 / (fan_in + fan_out))
        m.weight.data = (torch.rand(fan_out, fan_in, dtype=torch.float64) * 2 - 1) * a
        if m.bias is not None:
            m.bias.data = torch.zeros(fan_out, dtype=torch.float64)


def init_stub(m):
    raise NotImplementedError()


def test_init_weights_passes():
    assert_passes(init_ok, "init_weights")


@pytest.mark.parametrize("wrong, fragments", [
    (init_xavier_normal, ("outside the Xavier-uniform bound",)),
    (init_kaiming, ("outside the Xavier-uniform bound",)),
    (init_every_weight, ("only nn.Linear layers",)),
    (init_forgets_none_bias, ("NoneType", "a Linear(bias=False) has bias None",
                              "check module.bias is not None")),
    (init_skips_biasless, ("`small.weight` (a Linear(bias=False)) is unchanged", "with or without a bias")),
    (init_data_float64, ("meta device", "a new tensor was assigned to .data", "in place")),
    (init_keeps_bias, ("is not zero",)),
    (init_new_parameter, ("new nn.Parameter", "optimizer", "in place", "nn.init.xavier_uniform_(module.weight)")),
    (init_new_parameter_same_device, ("new nn.Parameter", "still holds the old tensor")),
    (init_swaps_data, ("points to other memory", "in place")),
    (init_fill_without_no_grad, ("leaf Variable",)),
])
def test_init_weights_rejects(wrong, fragments):
    assert_rejects(wrong, "init_weights", *fragments)


def test_init_weights_stub():
    assert_not_attempted(init_stub, "init_weights")


# ============================================================================================================
# RunningMean
# ============================================================================================================

class RunningMeanOK(nn.Module):
    def __init__(self, num_features, momentum=0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.m = momentum

    def forward(self, x):
        if self.training:
            self.mean = (1 - self.m) * self.mean + self.m * x.detach().mean(dim=0)
        return x - self.mean


class RMParameter(RunningMeanOK):
    def __init__(self, num_features, momentum=0.1):
        nn.Module.__init__(self)
        self.mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)
        self.m = momentum


class RMPlain(nn.Module):
    def __init__(self, num_features, momentum=0.1):
        super().__init__()
        self.mean = torch.zeros(num_features)
        self.m = momentum

    def forward(self, x):
        if self.training:
            self.mean = (1 - self.m) * self.mean + self.m * x.detach().mean(0)
        return x - self.mean


class RMNotPersistent(RunningMeanOK):
    def __init__(self, num_features, momentum=0.1):
        nn.Module.__init__(self)
        self.register_buffer("mean", torch.zeros(num_features), persistent=False)
        self.m = momentum


class RMUpdatesInEval(RunningMeanOK):
    def forward(self, x):
        self.mean = (1 - self.m) * self.mean + self.m * x.detach().mean(0)
        return x - self.mean


class RMOldMean(RunningMeanOK):
    def forward(self, x):
        out = x - self.mean
        if self.training:
            self.mean = (1 - self.m) * self.mean + self.m * x.detach().mean(0)
        return out


class RMSwappedMomentum(RunningMeanOK):
    def forward(self, x):
        if self.training:
            self.mean = self.m * self.mean + (1 - self.m) * x.detach().mean(0)
        return x - self.mean


class RMKeepsGraph(RunningMeanOK):
    def forward(self, x):
        if self.training:
            self.mean = (1 - self.m) * self.mean + self.m * x.mean(0)
        return x - self.mean


class RMCpuAccumulator(RunningMeanOK):  # sums rows into a tensor made on the CPU
    def forward(self, x):
        if self.training:
            total = torch.zeros(x.shape[1], dtype=x.dtype)
            total = total + x.detach().sum(0)
            self.mean = (1 - self.m) * self.mean + self.m * total / x.shape[0]
        return x - self.mean


class RMStub(nn.Module):
    def __init__(self, num_features, momentum=0.1):
        super().__init__()
        raise NotImplementedError()


def test_running_mean_passes():
    assert_passes(RunningMeanOK, "RunningMean")


@pytest.mark.parametrize("wrong, fragments", [
    (RMParameter, ("is an nn.Parameter",)),
    (RMPlain, ("plain tensor attribute", "register_buffer")),
    (RMNotPersistent, ("persistent=False",)),
    (RMUpdatesInEval, ("changed in eval mode",)),
    (RMOldMean, ("old mean",)),
    (RMSwappedMomentum, ("momentum is the weight of the new batch",)),
    (RMKeepsGraph, ("requires grad", "no_grad")),
    (RMCpuAccumulator, ("device check", "combines a CPU tensor")),
])
def test_running_mean_rejects(wrong, fragments):
    assert_rejects(wrong, "RunningMean", *fragments)


def test_running_mean_stub():
    assert_not_attempted(RMStub, "RunningMean")


# ============================================================================================================
# freeze
# ============================================================================================================

def freeze_ok(module, prefixes):
    wanted = tuple(prefixes)
    for name, p in module.named_parameters():
        parts = name.split(".")
        if any(".".join(parts[:k]) in wanted for k in range(1, len(parts) + 1)):
            p.requires_grad = False


def freeze_plain_startswith(module, prefixes):
    for name, p in module.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)


def freeze_sets_others_true(module, prefixes):
    for name, p in module.named_parameters():
        p.requires_grad_(not any(name == q or name.startswith(q + ".") for q in prefixes))


def freeze_top_level_only(module, prefixes):
    for name, p in module.named_parameters():
        if name.split(".")[0] in prefixes:
            p.requires_grad_(False)


def freeze_exact_names(module, prefixes):
    for name, p in module.named_parameters():
        if name in prefixes:
            p.requires_grad_(False)


def freeze_stub(module, prefixes):
    raise NotImplementedError()


def test_freeze_passes():
    assert_passes(freeze_ok, "freeze")


@pytest.mark.parametrize("wrong, fragments", [
    (freeze_plain_startswith, ("must match a whole name part",)),
    (freeze_sets_others_true, ("was frozen before",)),
    (freeze_top_level_only, ("should be frozen",)),
    (freeze_exact_names, ("should be frozen",)),
])
def test_freeze_rejects(wrong, fragments):
    assert_rejects(wrong, "freeze", *fragments)


def test_freeze_stub():
    assert_not_attempted(freeze_stub, "freeze")
