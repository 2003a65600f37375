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


class MLPStub(nn.Module):
    def __init__(self, sizes, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        raise NotImplementedError()


def test_mlp_passes():
    assert_passes(MLPOK, "MLP")


@pytest.mark.parametrize("wrong, fragments", [
    (MLPSharedAct, ("same", "once per layer")),
    (MLPActAfterLast, ("activation after the last layer",)),
    (MLPDropoutFirst, ("the order is Linear, activation, then Dropout",)),
    (MLPAlwaysDropout, ("p=0",)),
    (MLPFunctionalRelu, ("no nn.ReLU module",)),
    (MLPIgnoresActivation, ("use the `activation` class",)),
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


def count_stub(module, trainable_only=True):
    raise NotImplementedError()


def test_count_parameters_passes():
    assert_passes(count_ok, "count_parameters")


@pytest.mark.parametrize("wrong, fragments", [
    (count_per_module, ("counted twice",)),
    (count_ignores_flag, ("trainable_only",)),
    (count_tensors, ("number of parameter tensors",)),
    (count_state_dict, ("state_dict",)),
    (count_as_tensor, ("got a tensor",)),
    (count_children, ("registered on the module itself",)),
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


def init_fill_without_no_grad(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            m.bias.fill_(0.0)


def init_stub(m):
    raise NotImplementedError()


def test_init_weights_passes():
    assert_passes(init_ok, "init_weights")


@pytest.mark.parametrize("wrong, fragments", [
    (init_xavier_normal, ("outside the Xavier-uniform bound",)),
    (init_kaiming, ("outside the Xavier-uniform bound",)),
    (init_every_weight, ("only nn.Linear layers",)),
    (init_forgets_none_bias, ("NoneType",)),
    (init_keeps_bias, ("is not zero",)),
    (init_new_parameter, ("ended up on cpu",)),
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
