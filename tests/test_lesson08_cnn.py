"""08_cnn: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader import evaluate
from verdicts import assert_passes, assert_rejects

NAMES = ["conv_output_size", "conv2d", "max_pool2d", "BatchNorm2d", "DigitsCNN", "resnet18_for",
         "capture_activations"]


def stub(*args, **kwargs):
    raise NotImplementedError()


class StubModule(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        raise NotImplementedError()


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted(name):
    report = evaluate(StubModule if name in ("BatchNorm2d", "DigitsCNN") else stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# --- conv_output_size ------------------------------------------------------------------------------------------
def size_ok(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError(f"a kernel spanning {span} pixels does not fit in {size + 2 * padding}")
    return (size + 2 * padding - span) // stride + 1


def size_via_floor(size, kernel_size, stride=1, padding=0, dilation=1):
    """Written another way: math.floor of the true quotient, and the fit test after the fact."""
    out = math.floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1
    if size + 2 * padding - dilation * (kernel_size - 1) - 1 < 0:
        raise ValueError("the dilated kernel is larger than the padded input")
    return out


def size_no_dilation(size, kernel_size, stride=1, padding=0, dilation=1):
    if kernel_size > size + 2 * padding:
        raise ValueError("too big")
    return (size + 2 * padding - kernel_size) // stride + 1


def size_true_division(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError("too big")
    return (size + 2 * padding - span) / stride + 1


def size_padding_once(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError("too big")
    return (size + padding - span) // stride + 1


def size_no_check(size, kernel_size, stride=1, padding=0, dilation=1):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def size_ceil(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError("too big")
    return math.ceil((size + 2 * padding - span) / stride) + 1


def size_tensor(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError("too big")
    return torch.tensor(size + 2 * padding - span) // stride + 1


def size_exact_fit_refused(size, kernel_size, stride=1, padding=0, dilation=1):
    span = dilation * (kernel_size - 1) + 1
    if span >= size + 2 * padding:  # off by one: a kernel exactly as long as the input does fit
        raise ValueError("kernel does not fit")
    return (size + 2 * padding - span) // stride + 1


def size_table(size, kernel_size, stride=1, padding=0, dilation=1):
    """Knows inputs up to the public round's sizes (32 pixels, kernels of 5)."""
    if size > 32 or kernel_size > 7:
        raise KeyError((size, kernel_size))
    return size_ok(size, kernel_size, stride, padding, dilation)


@pytest.mark.parametrize("right", [size_ok, size_via_floor])
def test_conv_output_size_passes(right):
    assert_passes(right, "conv_output_size")


@pytest.mark.parametrize("wrong, fragments", [
    (size_no_dilation, ("dilation is missing",)),
    (size_true_division, ("python int", "//")),
    (size_padding_once, ("padding is counted once",)),
    (size_no_check, ("should raise ValueError", "does not fit")),
    (size_ceil, ("rounded up",)),
    (size_tensor, ("got a tensor",)),
    (size_exact_fit_refused, ("exactly as long as the padded input fits once", ">, not >=")),
])
def test_conv_output_size_rejects(wrong, fragments):
    assert_rejects(wrong, "conv_output_size", *fragments)


# --- conv2d ----------------------------------------------------------------------------------------------------
def conv_unfold(x, weight, bias=None, stride=1, padding=0):
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))      # (N, C_in·kH·kW, L)
    out = (weight.reshape(c_out, -1) @ cols).reshape(n, c_out, (h + 2 * ph - kh) // sh + 1,
                                                     (w + 2 * pw - kw) // sw + 1)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def conv_strided(x, weight, bias=None, stride=1, padding=0):
    """Written another way: windows as a strided view of the padded input, then einsum."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    x = F.pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.stride()
    windows = x.as_strided((n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3]))
    out = torch.einsum("ncijkl,ockl->noij", windows, weight)
    return out if bias is None else out + bias[:, None, None]


def conv_shifted_sums(x, weight, bias=None, stride=1, padding=0):
    """Written a third way: one product per kernel offset, summed."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    x = F.pad(x, (pw, pw, ph, ph))
    kh, kw = weight.shape[2:]
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = 0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]   # (N, C_in, oH, oW)
            out = out + torch.einsum("ncij,oc->noij", patch, weight[:, :, i, j])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv_flipped(x, weight, bias=None, stride=1, padding=0):
    return conv_unfold(x, weight.flip(-1, -2), bias, stride, padding)


def conv_width_from_height(x, weight, bias=None, stride=1, padding=0):
    """Loops over output positions; the output width comes from the height."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    x = F.pad(x, (pw, pw, ph, ph))
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    oh, ow = (h - kh) // sh + 1, (h - kw) // sw + 1
    out = torch.zeros(n, c_out, oh, ow, dtype=x.dtype, device=x.device)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]               # (N, C_in, kH, kW)
            out[:, :, i, j] = torch.einsum("nckl,ockl->no", patch, weight)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv_one_side(x, weight, bias=None, stride=1, padding=0):
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    return conv_unfold(F.pad(x, (pw, 0, ph, 0)), weight, bias, (sh, sw), 0)


def conv_pad_one_corner(x, weight, bias=None, stride=1, padding=0):
    """Pads the right amount in total, but all of it at the top and left."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    return conv_unfold(F.pad(x, (2 * pw, 0, 2 * ph, 0)), weight, bias, (sh, sw), 0)


def conv_filters_mixed(x, weight, bias=None, stride=1, padding=0):
    """Patches as rows, times the weight reshaped the wrong way round."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))
    out = (cols.transpose(1, 2) @ weight.reshape(-1, c_out)).transpose(1, 2)
    out = out.reshape(n, c_out, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv_no_bias(x, weight, bias=None, stride=1, padding=0):
    return conv_unfold(x, weight, None, stride, padding)


def conv_int_only(x, weight, bias=None, stride=1, padding=0):
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)
    out = (weight.reshape(c_out, -1) @ cols).reshape(n, c_out, (h + 2 * padding - kh) // stride + 1,
                                                     (w + 2 * padding - kw) // stride + 1)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def conv_cpu_padding(x, weight, bias=None, stride=1, padding=0):
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, c, h, w = x.shape
    padded = torch.zeros(n, c, h + 2 * ph, w + 2 * pw, dtype=x.dtype)   # on the CPU, whatever x's device
    padded = padded.index_put((torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                               (torch.arange(h) + ph)[None, None, :, None], (torch.arange(w) + pw)[None, None, None]),
                              x)
    return conv_unfold(padded, weight, bias, (sh, sw), 0)


def conv_library(x, weight, bias=None, stride=1, padding=0):
    return F.conv2d(x, weight, bias, stride, padding)


def conv_module(x, weight, bias=None, stride=1, padding=0):
    layer = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:], stride, padding, bias=bias is not None)
    return torch.func.functional_call(layer, {"weight": weight, **({"bias": bias} if bias is not None else {})}, x)


def conv_as_strided_shape_strides(x, weight, bias=None, stride=1, padding=0):
    """as_strided with strides computed from the shape: right only for a contiguous x."""
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    n, c, h, w = x.shape
    kh, kw = weight.shape[2:]
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    windows = x.as_strided((n, c, oh, ow, kh, kw), (c * h * w, h * w, w * sh, sw, w, 1))
    out = torch.einsum("ncijkl,ockl->noij", windows, weight)
    return out if bias is None else out + bias[:, None, None]


def conv_subsample_late(x, weight, bias=None, stride=1, padding=0):
    """The stride-1 result, then every s-th row and column from s - 1."""
    (sh, sw) = pair(stride)
    return conv_unfold(x, weight, bias, 1, padding)[..., sh - 1::sh, sw - 1::sw]


@pytest.mark.parametrize("right", [conv_unfold, conv_strided, conv_shifted_sums])
def test_conv2d_passes(right):
    assert_passes(right, "conv2d")


@pytest.mark.parametrize("wrong, fragments", [
    (conv_flipped, ("kernel is flipped", "cross-correlation")),
    (conv_subsample_late, ("subsampled from index s - 1", "starts at 0")),
    (conv_as_strided_shape_strides, ("transposed view", "assumes a contiguous tensor", "x.stride()")),
    (conv_width_from_height, ("output width computed from the height",)),
    (conv_one_side, ("padding applied on one side only",)),
    (conv_pad_one_corner, ("padding applied on one side only", "top and at the bottom")),
    (conv_no_bias, ("bias is missing",)),
    (conv_filters_mixed, ("mixes the filters up", "weight.reshape(C_out, -1)")),
    (conv_int_only, ("raised TypeError",)),
    (conv_cpu_padding, ("device check", "combines a CPU tensor")),
    (conv_library, ("conv2d", "forbids")),
    (conv_module, ("torch.nn.Conv2d", "forbids")),
])
def test_conv2d_rejects(wrong, fragments):
    assert_rejects(wrong, "conv2d", *fragments)


# --- max_pool2d ------------------------------------------------------------------------------------------------
def pool_unfold(x, kernel_size, stride=None):
    (kh, kw) = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    return x.unfold(2, kh, sh).unfold(3, kw, sw).amax(dim=(-2, -1))      # (N, C, oH, oW)


def pool_offsets(x, kernel_size, stride=None):
    """Written another way: the maximum over kernel offsets, starting from the first one."""
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = None
    for i in range(kh):
        for j in range(kw):
            v = x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            out = v if out is None else torch.maximum(out, v)
    return out


def pool_stride_one(x, kernel_size, stride=None):
    return pool_unfold(x, kernel_size, 1 if stride is None else stride)


def pool_zero_start(x, kernel_size, stride=None):
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    out = torch.zeros(x.shape[0], x.shape[1], oh, ow, dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            out = torch.maximum(out, x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw])
    return out


def pool_average(x, kernel_size, stride=None):
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    return x.unfold(2, kh, sh).unfold(3, kw, sw).mean(dim=(-2, -1))


def pool_width_from_height(x, kernel_size, stride=None):
    kh, kw = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    oh = (x.shape[2] - kh) // sh + 1
    ow = (x.shape[2] - kw) // sw + 1
    padded = F.pad(x, (0, max(0, (ow - 1) * sw + kw - x.shape[3])))
    return padded.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :oh, :ow].amax(dim=(-2, -1))


def pool_library(x, kernel_size, stride=None):
    return F.max_pool2d(x, kernel_size, stride)


def pool_module(x, kernel_size, stride=None):
    return nn.MaxPool2d(kernel_size, stride)(x)


def pool_as_strided_shape_strides(x, kernel_size, stride=None):
    (kh, kw) = pair(kernel_size)
    sh, sw = pair(kernel_size if stride is None else stride)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    return x.as_strided((n, c, oh, ow, kh, kw), (c * h * w, h * w, w * sh, sw, w, 1)).amax(dim=(-2, -1))


@pytest.mark.parametrize("right", [pool_unfold, pool_offsets])
def test_max_pool2d_passes(right):
    assert_passes(right, "max_pool2d")


@pytest.mark.parametrize("wrong, fragments", [
    (pool_stride_one, ("stride defaulted to 1 instead of the kernel size",)),
    (pool_as_strided_shape_strides, ("transposed view", "assumes a contiguous tensor", "x.contiguous()")),
    (pool_zero_start, ("started at 0",)),
    (pool_average, ("average",)),
    (pool_width_from_height, ("output width computed from the height",)),
    (pool_library, ("max_pool2d", "forbids")),
    (pool_module, ("torch.nn.MaxPool2d", "forbids")),
])
def test_max_pool2d_rejects(wrong, fragments):
    assert_rejects(wrong, "max_pool2d", *fragments)


# --- BatchNorm2d -----------------------------------------------------------------------------------------------
class BNOK(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def stats(self, x):
        """Mean, normalising variance and running-estimate variance over (N, H, W)."""
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        return mean, var, x.var(dim=(0, 2, 3), unbiased=True)

    def update(self, mean, var_unbiased):
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var_unbiased)
            self.num_batches_tracked += 1

    def forward(self, x):
        if self.training:
            mean, var, var_u = self.stats(x)
            self.update(mean, var_u)
        else:
            mean, var = self.running_mean, self.running_var
        c = (1, -1, 1, 1)
        return (x - mean.view(c)) / torch.sqrt(var.view(c) + self.eps) * self.weight.view(c) + self.bias.view(c)


class BNOther(nn.Module):
    """Written another way: sums by hand, new buffer tensors assigned under no_grad, rsqrt."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        xc = x.transpose(0, 1).reshape(x.shape[1], -1)          # (C, N·H·W)
        n = xc.shape[1]
        if self.training:
            mean = xc.sum(1) / n
            sq = ((xc - mean[:, None]) ** 2).sum(1)
            var = sq / n
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * sq / (n - 1)
                self.num_batches_tracked = self.num_batches_tracked + 1
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * scale[None, :, None, None] + (self.bias - mean * scale)[None, :, None, None]


class BNBiasedRunningVar(BNOK):
    def stats(self, x):
        mean, var, _ = super().stats(x)
        return mean, var, var


class BNEvalBatchStats(BNOK):
    def forward(self, x):
        mean, var, var_u = self.stats(x)
        if self.training:
            self.update(mean, var_u)
        c = (1, -1, 1, 1)
        return (x - mean.view(c)) / torch.sqrt(var.view(c) + self.eps) * self.weight.view(c) + self.bias.view(c)


class BNGraphInBuffers(BNOK):
    def update(self, mean, var_unbiased):
        self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
        self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var_unbiased
        self.num_batches_tracked += 1


class BNMomentumSwapped(BNOK):
    def update(self, mean, var_unbiased):
        with torch.no_grad():
            self.running_mean.mul_(self.momentum).add_((1 - self.momentum) * mean)
            self.running_var.mul_(self.momentum).add_((1 - self.momentum) * var_unbiased)
            self.num_batches_tracked += 1


class BNUnbiasedNormalise(BNOK):
    def stats(self, x):
        mean, _, var_u = super().stats(x)
        return mean, var_u, var_u


class BNDetachedStats(BNOK):
    def stats(self, x):
        return super().stats(x.detach())


class BNNoCount(BNOK):
    def update(self, mean, var_unbiased):
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var_unbiased)


class BNEvalUpdates(BNOK):
    """Updates the running statistics in every mode, then normalises with them in eval."""

    def forward(self, x):
        mean, var, var_u = self.stats(x)
        self.update(mean, var_u)
        if not self.training:
            mean, var = self.running_mean, self.running_var
        c = (1, -1, 1, 1)
        return (x - mean.view(c)) / torch.sqrt(var.view(c) + self.eps) * self.weight.view(c) + self.bias.view(c)


class BNFixedMomentum(BNOK):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, 0.1)


class BNFixedEps(BNOK):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, 1e-5, momentum)


class BNBroadcastShapes(nn.Module):
    """Parameters stored as (1, C, 1, 1): convenient in forward, but they load into nothing."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.weight + self.bias


class BNPlainBuffers(BNOK):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__(num_features, eps, momentum)
        del self.running_mean
        self.running_mean = torch.zeros(num_features)


class BNLibrary(nn.BatchNorm2d):
    pass


class BNFunctional(BNOK):
    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                            self.momentum, self.eps)


class BNSquaresMinusSquare(BNOK):
    """var = E[x²] - E[x]²: right in exact arithmetic, not in float32 with large means."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        mean = x.mean(dim=(0, 2, 3))
        var = (x * x).mean(dim=(0, 2, 3)) - mean * mean
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
            self.num_batches_tracked += 1
        c = (1, -1, 1, 1)
        return (x - mean.view(c)) / (var.view(c) + self.eps).sqrt() * self.weight.view(c) + self.bias.view(c)


@pytest.mark.parametrize("right", [BNOK, BNOther])
def test_batchnorm2d_passes(right):
    assert_passes(right, "BatchNorm2d")


@pytest.mark.parametrize("wrong, fragments", [
    (BNBiasedRunningVar, ("running_var updated with the biased variance",)),
    (BNSquaresMinusSquare, ("means near 1000", "catastrophic cancellation", "x - mean")),
    (BNEvalBatchStats, ("eval mode normalised with the batch's own statistics",)),
    (BNGraphInBuffers, ("holds a graph", "torch.no_grad()")),
    (BNMomentumSwapped, ("momentum weighted the old",)),
    (BNUnbiasedNormalise, ("normalised with the unbiased variance",)),
    (BNDetachedStats, ("gradient of x", "not x.detach()")),
    (BNNoCount, ("num_batches_tracked", "adds 1")),
    (BNEvalUpdates, ("eval mode updated the running statistics",)),
    (BNFixedMomentum, ("momentum argument is ignored",)),
    (BNFixedEps, ("eps argument is ignored",)),
    (BNBroadcastShapes, ("`weight` should have shape", "view(1, -1, 1, 1)")),
    (BNPlainBuffers, ("running_mean", "plain tensor attribute")),
    (BNLibrary, ("torch.nn.BatchNorm2d", "forbids")),
    (BNFunctional, ("batch_norm", "forbids")),
])
def test_batchnorm2d_rejects(wrong, fragments):
    assert_rejects(wrong, "BatchNorm2d", *fragments)


# --- DigitsCNN -------------------------------------------------------------------------------------------------
class CNNOK(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),   # (B, 16, 8, 8)
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # (B, 32, 8, 8)
                                      nn.MaxPool2d(2))                            # (B, 32, 4, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


class CNNMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


_TRAINED: dict = {}


def _trained_state() -> dict:
    """Weights of CNNMLP trained full-batch on the training split (a second or two; once per session)."""
    if not _TRAINED:
        from grader.data import digits
        x, y = digits("train")
        torch.manual_seed(0)
        model = CNNMLP()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        _TRAINED.update({k: v.detach().clone() for k, v in model.net.state_dict().items()})
    return _TRAINED


class CNNPretrained(CNNMLP):
    """A conv layer is there, but the weights are loaded ready-trained."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
        self.net.load_state_dict(_trained_state())

    def forward(self, x):
        return self.net(self.conv(x))


class CNNConvUnused(CNNMLP):
    """Has a convolution, but forward goes around it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)


class CNNLinear(nn.Module):
    """Convolutions and a Linear with nothing nonlinear in between."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Flatten(),
                                 nn.Linear(32 * 64, 10))

    def forward(self, x):
        return self.net(x)


class CNNNineOutputs(CNNOK):
    def __init__(self):
        super().__init__()
        self.head[-1] = nn.Linear(64, 9)


class CNNSqueeze(CNNOK):
    def forward(self, x):
        return self.head[1:](self.features(x).view(x.shape[0], -1)).squeeze()


class CNNSelfTraining(CNNOK):
    """Nudges its own weights in forward (as a model reading another split there would)."""

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.head[-1].bias.add_(0.01)
        return super().forward(x)


class CNNSoftmax(CNNOK):
    def forward(self, x):
        return super().forward(x).softmax(dim=1)


class CNNSwitchAfterTraining(CNNOK):
    """Counts training forwards in a plain attribute; afterwards eval mode answers from a lookup (here: the
    untrained-looking output scaled), not from the weights alone."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.steps += 1
        elif self.steps > 100:
            out = out * 2 + 1
        return out


def test_digits_cnn_passes():
    assert_passes(CNNOK, "DigitsCNN")


@pytest.mark.parametrize("wrong, fragments", [
    (CNNMLP, ("no nn.Conv2d",)),
    (CNNSoftmax, ("probabilities", "softmax in forward", "logits")),
    (CNNSwitchAfterTraining, ("trained model's state_dict", "other logits", "keep no tables")),
    (CNNPretrained, ("already trained when it is made", "do not load weights")),
    (CNNConvUnused, ("forward never calls them",)),
    (CNNLinear, ("no nonlinearity", "nn.ReLU()")),
    (CNNNineOutputs, ("(5, 10)", "10 outputs")),
    (CNNSqueeze, ("(1, 10)", "squeeze")),
    (CNNSelfTraining, ("changed between two optimizer steps",)),
])
def test_digits_cnn_rejects(wrong, fragments):
    assert_rejects(wrong, "DigitsCNN", *fragments)


# --- resnet18_for ----------------------------------------------------------------------------------------------
def resnet_replace(num_classes):
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def resnet_built_with_classes(num_classes):
    from torchvision.models import resnet18
    return resnet18(num_classes=num_classes)


def resnet_frozen(num_classes):
    model = resnet_replace(num_classes)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    return model


def resnet_ten(num_classes):
    return resnet_replace(10)


def resnet_sequential_head(num_classes):
    model = resnet_replace(num_classes)
    model.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, num_classes))
    return model


def resnet_after_old_head(num_classes):
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Linear(1000, num_classes)
    return model


def resnet_pretrained(num_classes):
    import torchvision
    model = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.DEFAULT)
    model.fc = nn.Linear(512, num_classes)
    return model


def resnet_fifty(num_classes):
    import torchvision
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def resnet_classifier(num_classes):
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    model.classifier = nn.Linear(1000, num_classes)
    return model


def resnet_meta(num_classes):
    with torch.device("meta"):
        return resnet_replace(num_classes)


def resnet_double(num_classes):
    return resnet_replace(num_classes).double()


def resnet_half(num_classes):
    return resnet_replace(num_classes).half()


def resnet_eval(num_classes):
    return resnet_replace(num_classes).eval()


_SHARED = {}


def resnet_cached(num_classes):
    model = _SHARED.setdefault("model", resnet_replace(num_classes))
    model.fc = nn.Linear(512, num_classes)
    return model


def resnet_shared_backbone(num_classes):
    import copy
    base = _SHARED.setdefault("base", resnet_replace(num_classes))
    model = copy.copy(base)                     # a new object whose submodules are the cached model's
    model._modules = dict(base._modules)
    model.fc = nn.Linear(512, num_classes)
    return model


def resnet_lazy(num_classes):
    model = resnet_replace(num_classes)
    model.fc = nn.LazyLinear(num_classes)
    return model


@pytest.mark.parametrize("right", [resnet_replace, resnet_built_with_classes])
def test_resnet18_for_passes(right):
    assert_passes(right, "resnet18_for")


@pytest.mark.parametrize("wrong, fragments", [
    (resnet_frozen, ("do not require grad", "do not freeze")),
    (resnet_meta, ("on meta", "on the CPU, float32, training mode")),
    (resnet_double, ("float64", "on the CPU, float32, training mode")),
    (resnet_half, ("float16", "on the CPU, float32, training mode")),
    (resnet_eval, ("eval mode", "on the CPU, float32, training mode")),
    (resnet_cached, ("the same model object", "new ResNet-18 on every call")),
    (resnet_shared_backbone, ("sharing", "new ResNet-18 on every call")),
    (resnet_lazy, ("LazyLinear", "nn.Linear(512, num_classes)")),
    (resnet_ten, ("use the argument",)),
    (resnet_sequential_head, ("one nn.Linear", "Sequential")),
    (resnet_after_old_head, ("512",)),
    (resnet_pretrained, ("forbids", "weights=None")),
    (resnet_fifty, ("ResNet-50",)),
    (resnet_classifier, ("outputs for num_classes",)),
])
def test_resnet18_for_rejects(wrong, fragments):
    assert_rejects(wrong, "resnet18_for", *fragments)


# --- capture_activations ---------------------------------------------------------------------------------------
def _copy(output):
    return tuple(_copy(o) for o in output) if isinstance(output, tuple) else output.detach().clone()


def capture_ok(model, x, names):
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no submodule called {missing[0]!r}")
    captured = {}

    def keep(name):
        def hook(module, args, output):
            captured[name] = _copy(output)
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    for n in names:
        if n not in captured:
            raise ValueError(f"module {n!r} never ran")
    return {n: captured[n] for n in names}


def capture_inference(model, x, names):
    """Written another way: inference_mode, get_submodule behind a KeyError, hooks removed through a context."""
    import contextlib
    try:
        modules = [(n, model.get_submodule(n)) for n in names]
    except AttributeError as e:
        raise KeyError(str(e)) from None
    captured = {}
    with contextlib.ExitStack() as stack:
        for n, m in modules:
            handle = m.register_forward_hook(lambda mod, a, out, n=n: captured.__setitem__(n, _copy(out)))
            stack.callback(handle.remove)
        with torch.inference_mode():
            model(x)
    never = [n for n in names if n not in captured]
    if never:
        raise ValueError(f"these modules never ran: {never}")
    return dict((n, captured[n]) for n in names)


def capture_no_clone(model, x, names):
    modules = dict(model.named_modules())
    captured, handles = {}, []
    for n in names:
        handles.append(modules[n].register_forward_hook(
            lambda m, a, out, n=n: captured.__setitem__(n, tuple(o.detach() for o in out)
                                                        if isinstance(out, tuple) else out.detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        if n not in captured:
            raise ValueError(n)
    return {n: captured[n] for n in names}


def capture_no_finally(model, x, names):
    modules = dict(model.named_modules())
    captured = {}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: captured.__setitem__(n, _copy(out)))
               for n in names]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    for n in names:
        if n not in captured:
            raise ValueError(n)
    return {n: captured[n] for n in names}


def capture_eval(model, x, names):
    model.eval()
    return capture_ok(model, x, names)


def capture_with_graph(model, x, names):
    modules = dict(model.named_modules())
    captured = {}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: captured.__setitem__(n, _copy(out)))
               for n in names]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        if n not in captured:
            raise ValueError(n)
    return {n: captured[n] for n in names}


def capture_get_submodule(model, x, names):
    modules = {n: model.get_submodule(n) for n in names}
    return capture_ok(model, x, list(modules))


def capture_run_order(model, x, names):
    result = capture_ok(model, x, names)
    order = [n for n, _ in model.named_modules()]
    return {n: result[n] for n in sorted(names, key=order.index)}


def capture_first_call(model, x, names):
    modules = dict(model.named_modules())
    captured = {}

    def keep_first(name):
        def hook(module, args, output):
            if name not in captured:
                captured[name] = _copy(output)
        return hook

    handles = [modules[n].register_forward_hook(keep_first(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        if n not in captured:
            raise ValueError(n)
    return {n: captured[n] for n in names}


def capture_lists(model, x, names):
    result = capture_ok(model, x, names)

    def listed(v):
        return [listed(o) for o in v] if isinstance(v, tuple) else v
    return {n: listed(v) for n, v in result.items()}


def capture_wraps_errors(model, x, names):
    try:
        return capture_ok(model, x, names)
    except RuntimeError as e:
        raise RuntimeError(f"capture failed: {e}") from e


def capture_no_value_error(model, x, names):
    modules = dict(model.named_modules())
    captured = {}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: captured.__setitem__(n, _copy(out)))
               for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: captured.get(n) for n in names}


def capture_cpu_instead_of_clone(model, x, names):
    """.detach().cpu() as the copy: on the CPU .cpu() returns the same tensor."""
    modules = dict(model.named_modules())
    captured = {}
    handles = [modules[n].register_forward_hook(lambda m, a, out, n=n: captured.__setitem__(n, out.detach().cpu()))
               for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: captured[n] for n in names}


@pytest.mark.parametrize("right", [capture_ok, capture_inference])
def test_capture_activations_passes(right):
    assert_passes(right, "capture_activations")


@pytest.mark.parametrize("wrong, fragments", [
    (capture_no_clone, ("shares memory", "clone()")),
    (capture_cpu_instead_of_clone, ("shares memory", "clone()")),
    (capture_no_finally, ("hook(s) are still registered", "finally")),
    (capture_eval, ("mode", "changed")),
    (capture_with_graph, ("autograd recording", "torch.no_grad()")),
    (capture_get_submodule, ("should raise KeyError", "AttributeError")),
    (capture_run_order, ("in the order of `names`",)),
    (capture_first_call, ("result['shared']", "the last one")),
    (capture_lists, ("should be a tuple",)),
    (capture_wraps_errors, ("instead of the model's own RuntimeError", "propagate unchanged")),
    (capture_no_value_error, ("should raise ValueError",)),
])
def test_capture_activations_rejects(wrong, fragments):
    assert_rejects(wrong, "capture_activations", *fragments)


# --- hidden rounds ---------------------------------------------------------------------------------------------
HIDDEN_SEEDS = ["1", "77", "918273645"]


def test_conv_output_size_lookup_table_fails_the_hidden_round(monkeypatch):
    assert evaluate(size_table, name="conv_output_size").passed
    for seed in HIDDEN_SEEDS:
        monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
        report = evaluate(size_table, name="conv_output_size")
        failed = [c for c in report.cases if not c.passed and not c.skipped]
        assert report.status == "failed" and failed and all(c.hidden for c in failed), report.text()


@pytest.mark.parametrize("right, name", [(size_ok, "conv_output_size"), (conv_unfold, "conv2d"),
                                         (pool_unfold, "max_pool2d"), (BNOK, "BatchNorm2d"),
                                         (resnet_replace, "resnet18_for"), (capture_ok, "capture_activations")])
def test_correct_answers_pass_the_hidden_rounds(right, name, monkeypatch):
    for seed in HIDDEN_SEEDS[:2]:
        monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
        report = evaluate(right, name=name)
        assert report.passed and any(c.hidden for c in report.cases), f"seed {seed}:\n{report.text()}"
