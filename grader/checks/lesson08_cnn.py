"""Checks for 08_cnn: conv_output_size, conv2d, max_pool2d, BatchNorm2d, DigitsCNN, resnet18_for and
capture_activations, in the order the lesson checks them.

The oracles are PyTorch itself (F.conv2d, F.max_pool2d, nn.BatchNorm2d, torchvision's resnet18, forward hooks
of the check's own) or the formula written out. Learner code runs only inside the drivers below (module-level
functions whose first argument is the learner's object), which hand back plain data.
"""
from __future__ import annotations

import functools
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from grader.compare import Mismatch, expect_tensor, known_mistake, one_line, shape_str
from grader.data import digits
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, is_stub, untraced
from grader.tracing import MixedDevices
from grader.training import TAMPERED, Guard, expect_reload_agrees, reloaded_logits

LESSON = "08_cnn"

# --- DigitsCNN: the recipe the check trains every learner's model with (the lesson's notebook reads it too) ----
DIGITS_RECIPE = dict(lr=5e-3, batch_size=64, epochs=15, seed=0)  # Adam, cross-entropy, shuffled train split
MIN_ACCURACY = 0.97   # on the 360 shipped test images
TIME_BUDGET_S = 30    # what the exercise promises: the check's training fits in this on a 2-core CPU
TIME_LIMIT_S = 60     # what the check enforces (room for a slow or busy machine), on every grading path


# --- shared helpers --------------------------------------------------------------------------------------------
def _typed(value) -> list:
    """[type name, value] of what learner code returned, as plain data (the value only for plain numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return [type(value).__name__, value]
    if isinstance(value, torch.Tensor):
        return ["Tensor", value.detach().cpu().clone() if value.device.type != "meta" else None]
    return [type(value).__name__, None]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _call_text(name: str, args: tuple, kwargs: dict) -> str:
    """'conv2d(x (2, 3, 7, 9), weight (4, 3, 3, 2), stride=(2, 3))': what a case called, tensors by shape."""
    labels = {"conv2d": ["x", "weight", "bias", "stride", "padding"], "max_pool2d": ["x", "kernel_size", "stride"]}
    items = [*zip(labels[name], args), *kwargs.items()]
    shown = [f"{k} {shape_str(v.shape)}" if isinstance(v, torch.Tensor) else f"{k}={v!r}" for k, v in items]
    return f"{name}({', '.join(shown)})"


PAIR_ADVICE = ("each size argument may be an int or a (height, width) pair — turn it into a pair first: (v, v) if "
               "isinstance(v, int) else tuple(v)")


def _op_advice(args: tuple, kwargs: dict):
    """t.compare's `advise` for conv2d and max_pool2d: the check's reading of errors the learner's code raises."""
    pairs = any(isinstance(v, tuple) for v in (*args, *kwargs.values()))

    def advise(message: str) -> str | None:
        if "\n→" in message:
            return None  # the engine has read it already
        if "view size is not compatible" in message:
            return ".view needs a contiguous tensor; after transpose, permute or unfold use .reshape(...)"
        if "is invalid for input of size" in message:
            return ("the output size you reshape to disagrees with the number of windows — H_out comes from H, kH, "
                    "stride[0] (and padding[0]), W_out from W, kW, stride[1] (and padding[1])")
        if message.startswith("raised TypeError") and pairs and \
                any(w in message for w in ("tuple", "int", "iterable", "unpack", "subscriptable")):
            return PAIR_ADVICE
        return None
    return advise


STRIDED = ("as_strided with strides computed from the shape assumes a contiguous tensor — x here is a transposed "
           "view: use x.stride() or x.contiguous()")


def _as_if_contiguous(x: torch.Tensor) -> torch.Tensor:
    """x's memory read with the strides of a contiguous tensor of its shape: what as_strided with strides computed
    from the shape sees."""
    strides, step = [], 1
    for size in reversed(x.shape):
        strides.insert(0, step)
        step *= size
    return torch.as_strided(x, x.shape, strides, x.storage_offset())


def _op_explain(mistakes, formula: str):
    """t.compare's `explain` for conv2d and max_pool2d: a known mistake (mistakes() gives [(diagnosis, make the
    values it gives)]), else `formula`, what each output value is."""
    def explain(got, expected, args):
        if not torch.isfinite(got).all():
            return None  # nan or inf (the expected values are finite): the engine's message says what to look for
        return known_mistake(got, mistakes(), rtol=1e-4, atol=1e-5) or formula
    return explain


# ============================================================================================================
# conv_output_size
# ============================================================================================================

def size_run(fn, args: list, kwargs: dict) -> list:
    """Driver: fn(*args, **kwargs) as [type name, value]."""
    return _typed(fn(*args, **kwargs))


def _size_formula(size, k, s=1, p=0, d=1) -> int:
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _size_mistakes(size, k, s, p, d) -> list[tuple[str, float]]:
    """(diagnosis, the number that mistake gives)."""
    span = d * (k - 1) + 1
    return [
        ("the dilation is missing — a dilated kernel spans dilation·(kernel_size - 1) + 1 pixels",
         (size + 2 * p - k) // s + 1),
        ("dilation·kernel_size is one too many — a dilated kernel spans dilation·(kernel_size - 1) + 1 pixels",
         (size + 2 * p - d * k) // s + 1),
        ("the padding is counted once — it is added on both sides: size + 2·padding", (size + p - span) // s + 1),
        ("the padding is missing — it is added on both sides: size + 2·padding", (size - span) // s + 1),
        ("the stride is missing — the window moves `stride` pixels at a time: (…) // stride + 1",
         size + 2 * p - span + 1),
        ("rounded up — the last window must fit entirely, so round down (floor, //)",
         math.ceil((size + 2 * p - span) / s) + 1),
        ("the + 1 is missing — the first window counts too: (size + 2·padding - span) // stride + 1",
         (size + 2 * p - span) // s),
        ("the stride divides the + 1 too — floor((size + 2·padding - span) / stride) + 1, the + 1 outside",
         (size + 2 * p - span + 1) // s),
    ]


SIZE_FORMULA = "floor((size + 2·padding - dilation·(kernel_size - 1) - 1) / stride) + 1"


def _size_cases(t) -> list[tuple[tuple, dict]]:
    """(args, kwargs) of valid calls: defaults, keywords, floors, stride > kernel, dilation, exact fits. In the
    hidden round every number comes from ranges no public case uses, so a table of public answers fails."""
    u = t.unseen
    return [
        ((u(28, 40, 300), u(5, 6, 9)), {}),                                        # defaults
        ((u(32, 40, 300), 3), {"padding": u(1, 2, 5)}),                            # 'same' padding
        ((u(7, 40, 300), 3), {"stride": u(2, 3, 6)}),
        ((u(11, 40, 300), u(4, 6, 9), u(3, 4, 7), u(2, 3, 6)), {}),                # a floor: 11/3
        ((u(15, 40, 300), 3), {"dilation": u(2, 3, 5)}),
        ((u(20, 40, 300), 5), {"stride": u(2, 3, 6), "padding": u(3, 4, 7), "dilation": 3}),
        ((u(9, 40, 300), 3, u(2, 3, 6), 0, u(3, 4, 6)), {}),                       # all five, positional
        ((u(6, 40, 300), 3), {"stride": u(4, 7, 11)}),                             # stride > kernel
        ((u(5, 11, 20),) * 2, {}),                                                 # the kernel fits exactly
        ((1, 1), {}),
        ((u(3, 10, 14), u(5, 12, 16)), {"padding": u(1, 3, 4)}),                  # padding makes it fit
    ]


def _size_invalid(t) -> list[tuple[tuple, dict, str]]:
    u = t.unseen
    small = u(5, 6, 9)
    return [((u(3, 3, 6), u(5, 7, 12)), {}, "the kernel is larger than the input"),
            ((small, 3), {"dilation": u(3, 4, 7)}, "the dilated kernel (dilation·(k - 1) + 1 pixels) is larger "
             "than the input"),
            ((u(4, 2, 5), u(7, 12, 20), 1, 1), {}, "the kernel is larger than the padded input")]


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "The window of a dilated kernel spans dilation·(kernel_size - 1) + 1 pixels; the padded input has "
    "size + 2·padding pixels.",
    "Count the window positions: the first one, then one more every `stride` pixels while the window still "
    "fits: (size + 2·padding - span) // stride + 1. Integer division (//) rounds down and keeps an int.",
    "Before that formula: if span > size + 2·padding, raise ValueError(...) with a message that says so.",
])
def conv_output_size(t, fn):
    cases = []
    for args, kwargs in _size_cases(t):
        full = dict(zip(["size", "kernel_size", "stride", "padding", "dilation"], args)) | kwargs
        numbers = (full["size"], full["kernel_size"], full.get("stride", 1), full.get("padding", 0),
                   full.get("dilation", 1))
        try:
            got = t.call(size_run, fn, list(args), kwargs)
        except (LearnerError, Mismatch) as e:
            got = e
        cases.append((args, kwargs, numbers, got))
    # one mistake often explains several cases; when two explain a case, the one that explains more wins
    votes = [0] * len(_size_mistakes(1, 1, 1, 0, 1))
    for *_, numbers, got in cases:
        if isinstance(got, list) and got[0] == "int" and got[1] != _size_formula(*numbers):
            for i, (_, value) in enumerate(_size_mistakes(*numbers)):
                votes[i] += value == got[1]
    for args, kwargs, numbers, got in cases:
        want = _size_formula(*numbers)
        shown = ", ".join([*map(repr, args), *(f"{k}={v}" for k, v in kwargs.items())])
        with t.case(f"conv_output_size({shown}) == {want}"):
            if isinstance(got, Exception):
                if want == 1 and str(got).startswith("raised ValueError"):
                    raise Mismatch(f"{str(got).splitlines()[0]} — a (dilated) kernel exactly as long as the padded "
                                   "input fits once, so the output size is 1: raise only when the span is longer "
                                   "than size + 2·padding (>, not >=)") from None
                raise got
            kind, value = got
            if kind == "Tensor":
                raise Mismatch("should return a Python int, got a tensor — compute with Python numbers (//, "
                               "math.floor), not torch")
            if kind == "float":
                advice = "use // (floor division) instead of /: it rounds down and keeps an int"
                raise Mismatch(f"should return a Python int, got float {value!r} — {advice}")
            if kind != "int":
                raise Mismatch(f"should return a Python int, got {kind} — return the number itself "
                               "(int(...) of a NumPy or torch number)")
            if value != want:
                found = [(votes[i], -i, why) for i, (why, v) in enumerate(_size_mistakes(*numbers)) if v == value]
                why = max(found)[2] if found else "the formula is " + SIZE_FORMULA
                size, k, s, p, d = numbers
                raise Mismatch(f"returned {value}, expected {want} — {why}",
                               f"{SIZE_FORMULA} with size={size}, kernel_size={k}, stride={s}, padding={p}, "
                               f"dilation={d}")
    for args, kwargs, why in _size_invalid(t):
        shown = ", ".join([*map(repr, args), *(f"{k}={v}" for k, v in kwargs.items())])
        with t.case(f"conv_output_size({shown}) raises ValueError: {why}"):
            try:
                t.raises(ValueError, size_run, fn, list(args), kwargs)
            except Mismatch as e:
                first, *rest = e.message.splitlines()
                raise Mismatch("\n".join([f"{first.split(' — ')[0]} — {why}: compare span = dilation·(kernel_size "
                                          "- 1) + 1 with size + 2·padding first and raise ValueError(...) when it "
                                          "does not fit", *rest])) from None


# ============================================================================================================
# conv2d
# ============================================================================================================

def _conv_ref(x, weight, bias=None, stride=1, padding=0):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


SUBSAMPLED = ("the stride-1 result was subsampled from index s - 1 — the first window starts at 0: keep rows 0, sH, "
              "2·sH, … (out1[..., ::sH, ::sW]), or cut the windows with the stride directly")


def _conv_shapes(x, weight, stride, padding) -> list[tuple[str, tuple]]:
    """(diagnosis, the output shape that mistake gives) for a conv2d call."""
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)

    def out(size, k, s, p):
        return (size + 2 * p - k) // s + 1

    oh, ow = out(h, kh, sh, ph), out(w, kw, sw, pw)
    late = (n, c_out, -(-(h + 2 * ph - kh + 1 - (sh - 1)) // sh), -(-(w + 2 * pw - kw + 1 - (sw - 1)) // sw))
    one_side = (n, c_out, (h + ph - kh) // sh + 1, (w + pw - kw) // sw + 1)
    return [(SUBSAMPLED, late)] * (late not in ((n, c_out, oh, ow), one_side)) + [
        ("output width computed from the height — the width uses W = x.shape[3], kW, stride[1] and padding[1]",
         (n, c_out, oh, out(h, kw, sw, pw))),
        ("output width computed from the height — the width uses W = x.shape[3], kW, stride[1] and padding[1]",
         (n, c_out, oh, oh)),
        ("output height computed from the width — the height uses H = x.shape[2], kH, stride[0] and padding[0]",
         (n, c_out, out(w, kh, sh, ph), ow)),
        ("height and width swapped in the output — the result is (N, C_out, H_out, W_out)", (n, c_out, ow, oh)),
        ("padding applied on one side only — pad each side: H + 2·padding rows, W + 2·padding columns "
         "(F.pad(x, (pW, pW, pH, pH))); or, if you subsampled a stride-1 result, start at index 0, not s - 1",
         one_side),
        ("the padding is missing — pad x with zeros first: F.pad(x, (pW, pW, pH, pH))",
         (n, c_out, out(h, kh, sh, 0), out(w, kw, sw, 0))),
        ("the stride is missing — the kernel moves stride[0] rows and stride[1] columns at a time",
         (n, c_out, out(h, kh, 1, ph), out(w, kw, 1, pw))),
        ("stride and padding are (height, width) pairs — the first number applies to the rows (dim 2)",
         (n, c_out, out(h, kh, sw, pw), out(w, kw, sh, ph))),
        ("the stride is (height, width) — stride[0] applies to the rows (dim 2), stride[1] to the columns",
         (n, c_out, out(h, kh, sw, ph), out(w, kw, sh, pw))),
        ("the padding is (height, width) — padding[0] pads the rows (top and bottom), padding[1] the columns. "
         "F.pad's tuple is ordered the other way: (left, right, top, bottom)",
         (n, c_out, out(h, kh, sh, pw), out(w, kw, sw, ph))),
        ("the kernel's height and width are swapped — weight is (C_out, C_in, kH, kW)",
         (n, c_out, out(h, kw, sh, ph), out(w, kh, sw, pw))),
        ("rounded up — a window must fit entirely, so the count rounds down (floor)",
         (n, c_out, math.ceil((h + 2 * ph - kh) / sh) + 1, math.ceil((w + 2 * pw - kw) / sw) + 1)),
        ("the output has C_in channels — there is one output channel per filter: C_out = weight.shape[0]",
         (n, c_in, oh, ow)),
    ]


def _conv_values(x, weight, bias, stride, padding) -> list:
    """(diagnosis, make the values it gives) for a conv2d call, in float64."""
    raw = _as_if_contiguous(x.detach()).double()
    x, weight = x.detach().double(), weight.detach().double()
    b = None if bias is None else bias.detach().double()
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    mistakes = [
        (SUBSAMPLED, lambda: F.conv2d(x, weight, b, 1, padding)[..., sh - 1::sh, sw - 1::sw]),
        ("the kernel is flipped (that is a true convolution; conv2d in PyTorch is cross-correlation) — slide the "
         "weight over the input as it is, without flipping it",
         lambda: F.conv2d(x, weight.flip(-2, -1), b, stride, padding)),
        ("padding applied on one side only — pad pH rows at the top and at the bottom, pW columns left and "
         "right", lambda: F.conv2d(F.pad(x, (2 * pw, 0, 2 * ph, 0)), weight, b, stride)),
        ("padding applied on one side only — pad pH rows at the top and at the bottom, pW columns left and "
         "right", lambda: F.conv2d(F.pad(x, (0, 2 * pw, 0, 2 * ph)), weight, b, stride)),
        ("the padding repeats the edge values — padding adds zeros",
         lambda: F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="replicate"), weight, b, stride)),
        ("the weight's C_out and C_in are swapped — weight is (C_out, C_in, kH, kW)",
         lambda: F.conv2d(x, weight.transpose(0, 1), b, stride, padding)),
        ("the kernel is transposed — weight[o, c, i, j] multiplies the input at row offset i, column offset j",
         lambda: F.conv2d(x, weight.transpose(-2, -1), b, stride, padding)),
        ("stride and padding are (height, width) pairs — the first number applies to the rows (dim 2)",
         lambda: F.conv2d(x, weight, b, (sw, sh), (pw, ph))),
    ]
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape

    def rows_scrambled():
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))           # (N, C_in·kH·kW, L)
        out = (cols.transpose(1, 2) @ weight.reshape(-1, c_out)).transpose(1, 2)  # the mistake: (C_in·kH·kW, C_out)
        out = out.reshape(n, c_out, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        return out if b is None else out + b.view(1, -1, 1, 1)

    if not x.is_contiguous():
        mistakes.insert(0, (STRIDED, lambda: F.conv2d(raw, weight, b, stride, padding)))
    mistakes.append(("weight.reshape(-1, C_out) mixes the filters up — flatten each filter into one row: "
                     "weight.reshape(C_out, -1) is (C_out, C_in·kH·kW), in the order F.unfold lays out a patch",
                     rows_scrambled))
    if b is not None:
        mistakes += [
            ("the bias is missing — add bias[o] to every position of output channel o: bias.view(1, -1, 1, 1)",
             lambda: F.conv2d(x, weight, None, stride, padding)),
            ("the bias is added once per input channel — add it once per output channel, after summing over C_in "
             "and the kernel", lambda: F.conv2d(x, weight, b * x.shape[1], stride, padding)),
        ]
    return mistakes


CONV_FORMULA = ("out[n, o, i, j] = bias[o] + the sum over c, u, v of padded[n, c, i·sH + u, j·sW + v] · "
                "weight[o, c, u, v] — compute one output value by hand and compare")
CONV_ALLOWED = "build it from unfold (F.unfold or Tensor.unfold) or as_strided and a matrix product"
CONV_FORBIDDEN = {name: f"compute the cross-correlation yourself — {CONV_ALLOWED}" for name in [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "convolution",
    "convolution_mode", "conv_tbc", "cudnn_convolution", "mkldnn_convolution", "miopen_convolution",
    "thnn_conv2d", "slow_conv_dilated2d", "conv_depthwise2d", "nnpack_spatial_convolution",
    "torch.nn.functional.conv1d", "torch.nn.functional.conv2d", "torch.nn.functional.conv3d",
    "torch.nn.functional.conv_transpose1d", "torch.nn.functional.conv_transpose2d",
    "torch.nn.functional.conv_transpose3d", "torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.Conv3d",
    "torch.nn.ConvTranspose1d", "torch.nn.ConvTranspose2d", "torch.nn.ConvTranspose3d", "torch.nn.LazyConv1d",
    "torch.nn.LazyConv2d", "torch.nn.LazyConv3d", "torch.nn.LazyConvTranspose1d", "torch.nn.LazyConvTranspose2d",
    "torch.nn.LazyConvTranspose3d"]}


def _conv_case(t, fn, label_extra: str, x, weight, bias, stride, padding, *, style: str, atol=1e-6, rtol=1e-5,
               device_check=False) -> None:
    """One conv2d case; `style` says how the learner is called: 'defaults' (x, weight[, bias]), 'positional'
    or 'keywords'."""
    if style == "defaults":
        args, kwargs = ((x, weight) if bias is None else (x, weight, bias)), {}
    elif style == "positional":
        args, kwargs = (x, weight, bias, stride, padding), {}
    else:
        args, kwargs = (x, weight), {"bias": bias, "stride": stride, "padding": padding}
    label = _call_text("conv2d", args, kwargs) + (f" {label_extra}" if label_extra else "")
    t.compare(label, fn, args, _conv_ref, kwargs=kwargs, atol=atol, rtol=rtol, grad=True,
              explain=_op_explain(lambda: _conv_values(x, weight, bias, stride, padding), CONV_FORMULA),
              shape_mistakes=_conv_shapes(x, weight, stride, padding), advise=_op_advice(args, kwargs),
              names=("x", "weight", "bias"), device_check=device_check)


@exercise(LESSON, points=3, difficulty=3, minutes=35, hints=[
    "Pad first (F.pad(x, (pW, pW, pH, pH)) pads the last dim by pW and the one before by pH). Then every output "
    "position sees one kH x kW patch of every input channel: cut all the patches out at once.",
    "F.unfold(x, (kH, kW), stride=(sH, sW)) gives the patches as columns, (N, C_in·kH·kW, L) with L = H_out·W_out; "
    "weight.view(C_out, -1) @ cols is then (N, C_out, L). Reshape to (N, C_out, H_out, W_out) and add "
    "bias.view(1, -1, 1, 1).",
    "Accept an int or a pair for stride and padding: (v, v) if isinstance(v, int) else tuple(v). H_out = (H + 2·pH "
    "- kH) // sH + 1, and likewise W_out from W, pW, kW and sW. Do not flip the kernel: PyTorch's conv2d is a "
    "cross-correlation.",
], forbidden=CONV_FORBIDDEN)
def conv2d(t, fn):
    h, w = t.unseen(7, 13, 20), t.unseen(9, 21, 30)
    _conv_case(t, fn, "with bias, defaults (stride 1, no padding), with gradients", t.randn(2, 3, h, w),
               t.randn(4, 3, 3, 2), t.randn(4), 1, 0, style="defaults")
    _conv_case(t, fn, "pair stride and padding, with gradients", t.randn(3, 2, h + 3, w - 1), t.randn(5, 2, 3, 4),
               t.randn(5), (2, 3), (1, 2), style="keywords", device_check=True)
    _conv_case(t, fn, "C_in == C_out, square kernel, int stride and padding, no bias", t.randn(2, 4, h + 2, w + 2),
               t.randn(4, 4, 3, 3), None, 2, 1, style="positional", device_check=True)
    _conv_case(t, fn, "a tall kernel, bias=None", t.randn(1, 1, h - 2, w - 3), t.randn(2, 1, 5, 1), None,
               (1, 2), (0, 1), style="keywords")
    _conv_case(t, fn, "stride 3 over a 2x2 kernel (windows skip pixels)", t.randn(2, 2, h + 4, w + 4),
               t.randn(3, 2, 2, 2), t.randn(3), 3, 0, style="positional")
    _conv_case(t, fn, "a 1x1 kernel, bias left out", t.randn(3, 3, h, w), t.randn(7, 3, 1, 1), None, 1, 0,
               style="defaults")
    _conv_case(t, fn, "x a transposed view (not contiguous), no padding", t.randn(2, 3, w - 2, h).transpose(2, 3),
               t.randn(4, 3, 2, 3), t.randn(4), 1, 0, style="defaults")
    _conv_case(t, fn, "float32", t.randn(4, 3, h + 5, w + 1, dtype=torch.float32),
               t.randn(6, 3, 3, 3, dtype=torch.float32), t.randn(6, dtype=torch.float32), 2, 1, style="keywords",
               atol=1e-4, rtol=1e-4)


# ============================================================================================================
# max_pool2d
# ============================================================================================================

def _pool_ref(x, kernel_size, stride=None):
    return F.max_pool2d(x, kernel_size, stride)


def _pool_shapes(x, kernel_size, stride) -> list[tuple[str, tuple]]:
    n, c, h, w = x.shape
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)

    def out(size, k, s):
        return (size - k) // s + 1

    oh, ow = out(h, kh, sh), out(w, kw, sw)
    shapes = [
        ("output width computed from the height — the width uses W = x.shape[3], kW and stride[1]",
         (n, c, oh, out(h, kw, sw))),
        ("output width computed from the height — the width uses W = x.shape[3], kW and stride[1]",
         (n, c, oh, oh)),
        ("output height computed from the width — the height uses H = x.shape[2], kH and stride[0]",
         (n, c, out(w, kh, sh), ow)),
        ("height and width swapped in the output — the result is (N, C, H_out, W_out)", (n, c, ow, oh)),
        ("the kernel's height and width are swapped — kernel_size is (kH, kW): kH rows, kW columns",
         (n, c, out(h, kw, sh), out(w, kh, sw))),
        ("the stride's height and width are swapped — stride is (sH, sW): sH rows, sW columns",
         (n, c, out(h, kh, sw), out(w, kw, sh))),
        ("rounded up (that is ceil_mode=True) — max_pool2d drops a last window that does not fit: floor",
         (n, c, math.ceil((h - kh) / sh) + 1, math.ceil((w - kw) / sw) + 1)),
    ]
    if stride is None:
        shapes.insert(0, ("the stride defaulted to 1 instead of the kernel size — stride=None means stride = "
                          "kernel_size (windows side by side, not overlapping)", (n, c, out(h, kh, 1), out(w, kw, 1))))
    return shapes


def _pool_values(x, kernel_size, stride) -> list:
    raw = _as_if_contiguous(x.detach()).double()
    strided = not x.is_contiguous()
    x = x.detach().double()
    kh, kw = _pair(kernel_size)
    s = kernel_size if stride is None else stride
    sh, sw = _pair(s)
    return [(STRIDED, lambda: F.max_pool2d(raw, (kh, kw), s))] * strided + [
        ("that is the average of each window (avg_pool2d) — take the maximum", lambda: F.avg_pool2d(x, (kh, kw), s)),
        ("windows of negative numbers gave 0: the maximum started at 0 — start from the window's first element "
         "(or -inf), or take amax over the window", lambda: F.max_pool2d(x, (kh, kw), s).clamp_min(0)),
        ("that is the largest absolute value — take the maximum itself (negative numbers stay negative)",
         lambda: F.max_pool2d(x.abs(), (kh, kw), s)),
        ("the minimum of each window — take the maximum (amax)", lambda: -F.max_pool2d(-x, (kh, kw), s)),
        ("the kernel's height and width are swapped — kernel_size is (kH, kW)",
         lambda: F.max_pool2d(x, (kw, kh), s)),
        ("the stride's height and width are swapped — stride is (sH, sW)",
         lambda: F.max_pool2d(x, (kh, kw), (sw, sh))),
    ]


POOL_FORMULA = ("out[n, c, i, j] = the maximum of the window x[n, c, i·sH : i·sH + kH, j·sW : j·sW + kW] — "
                "compute one output value by hand and compare")
POOL_FORBIDDEN = {name: "take the maximum over each window yourself — cut the windows out with Tensor.unfold "
                        "(or F.unfold / as_strided) and reduce with amax" for name in [
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "mkldnn_max_pool2d", "quantized_max_pool2d", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d", "lp_pool2d",
    "torch.nn.functional.max_pool1d", "torch.nn.functional.max_pool2d", "torch.nn.functional.max_pool3d",
    "torch.nn.functional.max_pool2d_with_indices", "torch.nn.functional.avg_pool2d",
    "torch.nn.functional.adaptive_max_pool2d", "torch.nn.functional.adaptive_avg_pool2d",
    "torch.nn.functional.lp_pool2d", "torch.nn.functional.fractional_max_pool2d",
    "torch.nn.MaxPool1d", "torch.nn.MaxPool2d", "torch.nn.MaxPool3d", "torch.nn.AvgPool1d", "torch.nn.AvgPool2d",
    "torch.nn.AvgPool3d", "torch.nn.AdaptiveMaxPool1d", "torch.nn.AdaptiveMaxPool2d", "torch.nn.AdaptiveMaxPool3d",
    "torch.nn.AdaptiveAvgPool1d", "torch.nn.AdaptiveAvgPool2d", "torch.nn.AdaptiveAvgPool3d",
    "torch.nn.FractionalMaxPool2d", "torch.nn.FractionalMaxPool3d", "torch.nn.LPPool1d", "torch.nn.LPPool2d",
    "torch.nn.LPPool3d"]}


def _pool_case(t, fn, label_extra: str, x, kernel_size, stride, *, style: str, atol=1e-6, rtol=1e-5,
               device_check=False) -> None:
    if style == "defaults":
        args, kwargs = (x, kernel_size), {}
    elif style == "positional":
        args, kwargs = (x, kernel_size, stride), {}
    else:
        args, kwargs = (x,), {"kernel_size": kernel_size, "stride": stride}
    label = _call_text("max_pool2d", args, kwargs) + (f" {label_extra}" if label_extra else "")
    t.compare(label, fn, args, _pool_ref, kwargs=kwargs, atol=atol, rtol=rtol, grad=True,
              explain=_op_explain(lambda: _pool_values(x, kernel_size, stride), POOL_FORMULA),
              shape_mistakes=_pool_shapes(x, kernel_size, stride), advise=_op_advice(args, kwargs), names=("x",),
              device_check=device_check)


@exercise(LESSON, points=2, difficulty=2, minutes=20, hints=[
    "stride=None means stride = kernel_size. Accept ints and pairs: (v, v) if isinstance(v, int) else tuple(v).",
    "x.unfold(2, kH, sH) cuts the rows into windows: (N, C, H_out, W, kH); .unfold(3, kW, sW) then cuts the "
    "columns: (N, C, H_out, W_out, kH, kW). A window that does not fit is dropped, as max_pool2d does.",
    "Reduce the last two dims with amax(dim=(-2, -1)). Autograd sends each window's gradient to its maximum.",
], forbidden=POOL_FORBIDDEN)
def max_pool2d(t, fn):
    h, w = t.unseen(8, 13, 20), t.unseen(10, 21, 30)
    # random float64 inputs: no two values tie, so the gradient of the maximum is unique
    _pool_case(t, fn, "stride left out (= kernel_size), with gradients", t.randn(2, 3, h, w), 2, None,
               style="defaults", device_check=True)
    _pool_case(t, fn, "a pair kernel, stride left out, sizes not divisible by the kernel", t.randn(2, 2, h + 1, w + 1),
               (3, 2), None, style="defaults")
    _pool_case(t, fn, "overlapping windows (stride 2 < kernel 3)", t.randn(3, 2, h + 3, w - 3), 3, 2,
               style="positional", device_check=True)
    _pool_case(t, fn, "pair kernel and pair stride, stride != kernel", t.randn(1, 4, h + 2, w + 3), (2, 4), (3, 1),
               style="keywords")
    _pool_case(t, fn, "stride=None given explicitly", t.randn(2, 1, h - 1, w - 3), 2, None, style="keywords")
    _pool_case(t, fn, "every input negative", -t.rand(2, 3, h, w) - 0.5, (2, 3), None, style="defaults")
    _pool_case(t, fn, "x a transposed view (not contiguous)", t.randn(2, 3, w - 1, h + 1).transpose(2, 3), (2, 3),
               None, style="defaults")
    _pool_case(t, fn, "float32", t.randn(4, 3, h + 2, w, dtype=torch.float32), 3, (2, 3), style="positional",
               atol=1e-5, rtol=1e-5)


# ============================================================================================================
# BatchNorm2d
# ============================================================================================================

BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def bn_build(cls, num_features: int, kwargs: dict) -> dict:
    """Driver: cls(num_features, **kwargs) and what it registered (names, shapes, dtypes, the state_dict)."""
    m = cls(num_features, **kwargs)
    with untraced():
        if not isinstance(m, nn.Module):
            return {"is_module": False, "type": type(m).__name__}
        return {
            "is_module": True,
            "params": [(n, tuple(p.shape), str(p.dtype)) for n, p in m.named_parameters()],
            "buffers": [(n, tuple(b.shape), str(b.dtype)) for n, b in m.named_buffers()],
            "non_persistent": sorted(getattr(m, "_non_persistent_buffers_set", set())),
            "state": {k: v.detach().clone() for k, v in m.state_dict().items()},
            "plain": sorted(k for k, v in vars(m).items() if isinstance(v, torch.Tensor)),
            "training": m.training,
        }


def bn_load(cls, num_features: int, state: dict) -> str:
    """Driver: load `state` (an nn.BatchNorm2d's state_dict) strictly into cls(num_features); '' or the error."""
    m = cls(num_features)
    try:
        m.load_state_dict(state, strict=True)
    except RuntimeError as e:
        return one_line(e)
    return ""


def bn_state_after(cls, num_features: int, steps: list) -> dict:
    """Driver: the state_dict of cls(num_features) after running `steps` [mode, x, upstream] (forward only)."""
    m = cls(num_features)
    for mode, x, _ in steps:
        m.train(mode == "train")
        m(x.clone())
    with untraced():
        return {k: v.detach().clone() for k, v in m.state_dict().items()}


def bn_steps(cls, num_features: int, kwargs: dict, steps: list, device: str, dtype: str,
             load: dict | None = None) -> list:
    """Driver: build cls(num_features, **kwargs), load `load` strictly (if given), move it to device and dtype,
    then per step [mode, x, upstream]: set the mode, y = m(x), backward of (y * upstream).sum(); return per step
    the output, the gradients of x, weight and bias, every buffer and whether a buffer holds a graph.

    The check runs the same driver with nn.BatchNorm2d itself for the expected values."""
    m = cls(num_features, **kwargs)
    if load is not None:
        m.load_state_dict(load, strict=True)
    m.to(device=device, dtype=getattr(torch, dtype))
    record = []
    for mode, x, upstream in steps:
        m.train(mode == "train")
        with untraced():
            x = x.detach().clone().to(device).requires_grad_(True)
            params = dict(m.named_parameters())
            for p in params.values():
                p.grad = None
        y = m(x)
        with untraced():
            tracks = isinstance(y, torch.Tensor) and y.requires_grad and y.shape == upstream.shape
        if tracks:
            (y * upstream.to(device)).sum().backward()
        with untraced():
            grads = None if not tracks else {"x": x.grad, **{k: params[k].grad for k in ("weight", "bias")
                                                             if k in params}}
            record.append({
                "out": y.detach() if isinstance(y, torch.Tensor) else _typed(y),
                "grads": None if grads is None else {k: None if g is None else g.detach().clone()
                                                     for k, g in grads.items()},
                "buffers": {k: b.detach().clone() for k, b in m.named_buffers()},
                "graph": [k for k, b in m.named_buffers() if b.requires_grad or b.grad_fn is not None],
            })
    return record


def bn_meta(cls, num_features: int, x: torch.Tensor) -> dict:
    """Driver for the device check: move the module and x to meta, run a train and an eval step; where the
    outputs and the plain tensor attributes are (meta tensors themselves do not cross to a grader)."""
    m = cls(num_features)
    with untraced():
        m.to("meta")
        x = x.to("meta")
        plain = {k: v.device.type for k, v in vars(m).items() if isinstance(v, torch.Tensor)}
    outs = []
    for mode in (True, False):
        m.train(mode)
        y = m(x)
        with untraced():
            outs.append(y.device.type if isinstance(y, torch.Tensor) else type(y).__name__)
    return {"outs": outs, "plain": plain}


def _bn_structure(info: dict, nf: int) -> None:
    if not info["is_module"]:
        raise Mismatch(f"BatchNorm2d(...) should make an nn.Module, got {info['type']} — class "
                       "BatchNorm2d(nn.Module), with super().__init__() first in __init__")
    params, buffers = dict((n, (s, d)) for n, s, d in info["params"]), dict((n, (s, d)) for n, s, d in info["buffers"])
    for name in ("weight", "bias"):
        if name not in params:
            if name in buffers:
                raise Mismatch(f"`{name}` is a buffer — it is learned: self.{name} = nn.Parameter(...)")
            if name in info["plain"]:
                raise Mismatch(f"`self.{name}` is a plain tensor, so it is not registered — wrap it: "
                               f"self.{name} = nn.Parameter(...)")
            raise Mismatch(f"no parameter named `{name}` — found {sorted(params)}; name them weight and bias, "
                           "as nn.BatchNorm2d does, so that state_dicts load both ways")
        if params[name][0] != (nf,):
            advice = (" — keep the parameter (C,), as nn.BatchNorm2d does, and reshape it in forward: "
                      f"self.{name}.view(1, -1, 1, 1)") if math.prod(params[name][0]) == nf else ""
            raise Mismatch(f"`{name}` should have shape ({nf},), got {shape_str(params[name][0])}{advice}")
    extra = sorted(set(params) - {"weight", "bias"})
    if extra:
        what = " — running statistics are buffers (register_buffer): the optimizer must not train them" \
            if any(n.startswith("running") for n in extra) else " — nn.BatchNorm2d learns only weight and bias"
        raise Mismatch(f"unexpected parameter(s) {extra}{what}")
    for name, shape, dtype in [("running_mean", (nf,), "torch.float32"), ("running_var", (nf,), "torch.float32"),
                               ("num_batches_tracked", (), "torch.int64")]:
        if name not in buffers:
            how = "torch.tensor(0, dtype=torch.long)" if name == "num_batches_tracked" else \
                f"torch.{'zeros' if name == 'running_mean' else 'ones'}(num_features)"
            where = "a plain tensor attribute, so state_dict and .to() miss it" if name in info["plain"] else \
                "missing"
            raise Mismatch(f"the buffer `{name}` is {where} — self.register_buffer('{name}', {how}), so that "
                           "state_dicts load both ways with nn.BatchNorm2d")
        if buffers[name][0] != shape:
            raise Mismatch(f"the buffer `{name}` should have shape {shape_str(shape)}, got "
                           f"{shape_str(buffers[name][0])}" + (" — a 0-dim tensor: torch.tensor(0, dtype=torch.long)"
                                                              if name == "num_batches_tracked" else
                                                              " — one number per channel, like nn.BatchNorm2d"))
        if buffers[name][1] != dtype:
            raise Mismatch(f"the buffer `{name}` should have dtype {dtype}, got {buffers[name][1]}"
                           + (" — it counts steps: torch.tensor(0, dtype=torch.long)" if name ==
                              "num_batches_tracked" else " — create it in the default dtype (float32)"))
        if name in info["non_persistent"]:
            raise Mismatch(f"the buffer `{name}` is registered with persistent=False, so it is missing from "
                           "state_dict — leave persistent=True: nn.BatchNorm2d saves it")
    extra = sorted(set(info["state"]) - set(BN_KEYS))
    if extra:
        raise Mismatch(f"unexpected state_dict key(s) {extra} — keep exactly {BN_KEYS}, as nn.BatchNorm2d, or "
                       "state_dicts will not load strictly")
    for name, want in [("weight", torch.ones(nf)), ("bias", torch.zeros(nf)), ("running_mean", torch.zeros(nf)),
                       ("running_var", torch.ones(nf))]:
        if not torch.equal(info["state"][name], want):
            raise Mismatch(f"`{name}` should start as {'ones' if want[0] == 1 else 'zeros'}, like nn.BatchNorm2d's "
                           f"— torch.{'ones' if want[0] == 1 else 'zeros'}(num_features)")
    if int(info["state"]["num_batches_tracked"]) != 0:
        raise Mismatch("num_batches_tracked should start at 0 — torch.tensor(0, dtype=torch.long)")
    if not info["training"]:
        raise Mismatch("a new BatchNorm2d should be in train mode — do not call self.eval() in __init__")


def _bn_stats(x: torch.Tensor) -> tuple:
    """Per-channel mean, biased and unbiased variance of x (N, C, H, W), as (1, C, 1, 1)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    return mean, x.var(dim=(0, 2, 3), unbiased=False, keepdim=True), x.var(dim=(0, 2, 3), keepdim=True)


def _bn_out_mistakes(mode: str, x, before: dict, w, b, eps: float, mom: float) -> list:
    """(diagnosis, make the output of that mistake) for one step, from the state before it (float64)."""
    x = x.double()
    c = (1, -1, 1, 1)
    rm, rv = before["running_mean"].double().view(c), before["running_var"].double().view(c)
    w, b = w.double().view(c), b.double().view(c)
    mean, var, var_u = _bn_stats(x)

    def affine(xhat):
        return xhat * w + b

    new_rm, new_rv = (1 - mom) * rm + mom * mean, (1 - mom) * rv + mom * var_u
    ignored = []
    if eps != 1e-5:
        stats = (rm, rv) if mode == "eval" else (mean, var)
        ignored.append(("the eps argument is ignored (1e-5 used) — keep it: self.eps = eps",
                        lambda: affine((x - stats[0]) / (stats[1] + 1e-5).sqrt())))
    if mode == "eval":
        return ignored + [
            ("eval mode normalised with the batch's own statistics — in eval mode use running_mean and "
             "running_var (nothing is estimated from the batch)", lambda: affine((x - mean) / (var + eps).sqrt())),
            ("eval mode updated the running statistics from the batch first — in eval mode update nothing, "
             "normalise with running_mean and running_var as they are",
             lambda: affine((x - new_rm) / (new_rv + eps).sqrt())),
            ("eps added outside the square root — (x - running_mean) / sqrt(running_var + eps)",
             lambda: affine((x - rm) / (rv.sqrt() + eps))),
            ("divided by the variance — divide by its square root, the standard deviation: sqrt(running_var + eps)",
             lambda: affine((x - rm) / (rv + eps))),
            ("weight and bias are not applied — return x̂ · weight + bias", lambda: (x - rm) / (rv + eps).sqrt()),
            ("weight and bias are swapped — x̂ · weight + bias", lambda: (x - rm) / (rv + eps).sqrt() * b + w),
        ]
    return ignored + [
        ("normalised with the unbiased variance — the batch is normalised with the biased one (divide by n = "
         "N·H·W: var(unbiased=False)); only the running estimate uses the unbiased one",
         lambda: affine((x - mean) / (var_u + eps).sqrt())),
        ("eps added outside the square root — (x - mean) / sqrt(var + eps)",
         lambda: affine((x - mean) / (var.sqrt() + eps))),
        ("divided by the variance — divide by its square root, the standard deviation: sqrt(var + eps)",
         lambda: affine((x - mean) / (var + eps))),
        ("statistics per pixel (over the batch dim only) — average each channel over N, H and W: dims (0, 2, 3)",
         lambda: affine((x - x.mean(0, keepdim=True)) / (x.var(0, unbiased=False, keepdim=True) + eps).sqrt())),
        ("statistics per sample and channel (over H and W only: that is instance norm) — average each channel "
         "over the batch too: dims (0, 2, 3)",
         lambda: affine((x - x.mean((2, 3), keepdim=True)) / (x.var((2, 3), unbiased=False, keepdim=True)
                                                               + eps).sqrt())),
        ("statistics over all channels together — one mean and variance per channel: dims (0, 2, 3), "
         "keepdim=True", lambda: affine((x - x.mean()) / (x.var(unbiased=False) + eps).sqrt())),
        ("train mode normalised with the running statistics — in train mode normalise with the batch's own "
         "mean and (biased) variance; the running ones are for eval", lambda: affine((x - rm) / (rv + eps).sqrt())),
        ("train mode normalised with the updated running statistics — normalise with the batch's own mean and "
         "(biased) variance", lambda: affine((x - new_rm) / (new_rv + eps).sqrt())),
        ("weight and bias are not applied — return x̂ · weight + bias", lambda: (x - mean) / (var + eps).sqrt()),
        ("weight and bias are swapped — x̂ · weight + bias", lambda: (x - mean) / (var + eps).sqrt() * b + w),
    ]


def _bn_running_mistakes(name: str, x, before: dict, mom: float) -> list:
    """(diagnosis, that mistake's value of the buffer `name`) after a train step."""
    mean, var, var_u = (s.flatten() for s in _bn_stats(x.double()))
    old = before[name].double()
    batch = mean if name == "running_mean" else var_u
    mistakes = [
        (f"{name} did not change in train mode — update it in every training step", lambda: old),
        (f"{name} was replaced by the batch's statistic — blend it: (1 - momentum)·{name} + momentum·batch",
         lambda: batch),
        (f"the momentum weighted the old {name} — momentum is the weight of the new batch: "
         f"{name} = (1 - momentum)·{name} + momentum·batch", lambda: mom * old + (1 - mom) * batch),
    ]
    if mom != 0.1:
        mistakes.append(("the momentum argument is ignored (0.1 used) — keep it: self.momentum = momentum",
                         lambda: 0.9 * old + 0.1 * batch))
    if name == "running_var":
        mistakes[1:1] = [
            ("running_var updated with the biased variance — the running estimate uses the unbiased variance "
             "(n / (n - 1) times the biased one, n = N·H·W), as nn.BatchNorm2d does",
             lambda: (1 - mom) * old + mom * var),
            ("running_var updated with the standard deviation — blend in the (unbiased) variance",
             lambda: (1 - mom) * old + mom * var_u.sqrt()),
        ]
    return mistakes


def _bn_compare(got: list, want: list, steps: list, device: str, kwargs: dict, start: dict, hint: str | None = None,
                atol: float = 1e-5) -> None:
    """Step by step: output, running statistics, num_batches_tracked, no graph in the buffers, gradients. `hint`:
    the case's own diagnosis of wrong values that no known mistake explains."""
    eps, mom = kwargs.get("eps", 1e-5), kwargs.get("momentum", 0.1)
    before = start
    for k, ((mode, x, _), g, w) in enumerate(zip(steps, got, want)):
        step = f"step {k + 1} ({mode})"
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            if name not in g["buffers"]:
                raise Mismatch(f"after {step} the buffer `{name}` is gone — update the registered buffer (in "
                               f"place, or self.{name} = new tensor), never delete it or set it to None")
        out = g["out"]
        if not isinstance(out, torch.Tensor):
            raise Mismatch(f"{step}: forward should return a tensor, got {out[0]} — a missing `return`?")
        try:
            expect_tensor(out, w["out"], atol=atol, rtol=1e-4, device=device, what=f"the output of {step}")
        except Mismatch as e:
            why = None
            if out.shape == w["out"].shape and out.dtype == w["out"].dtype:
                why = known_mistake(out.cpu(), _bn_out_mistakes(mode, x, before, before["weight"], before["bias"],
                                                                eps, mom), rtol=1e-4, atol=1e-5)
            raise Mismatch(f"{e.message}\n→ {why or hint or _BN_FORMULA[mode]}", e.detail) from None
        for name in ("running_mean", "running_var"):
            gb, wb = g["buffers"][name], w["buffers"][name]
            try:
                expect_tensor(gb, wb, atol=atol, rtol=1e-4, device=device, what=f"`{name}` after {step}")
            except Mismatch as e:
                why = None
                if isinstance(gb, torch.Tensor) and gb.shape == wb.shape:
                    if mode == "eval":
                        why = f"{name} changed in eval mode — update the running statistics only when self.training"
                    else:
                        why = known_mistake(gb.cpu(), _bn_running_mistakes(name, x, before, mom), rtol=1e-4,
                                            atol=1e-5)
                raise Mismatch(f"{e.message}\n→ {why or hint or _BN_RUNNING}", e.detail) from None
        count, want_count = g["buffers"]["num_batches_tracked"], w["buffers"]["num_batches_tracked"]
        if count.dtype != torch.int64 or count.shape != () or int(count) != int(want_count):
            what = "in eval mode it stays" if mode == "eval" else \
                "each train step adds 1: self.num_batches_tracked += 1"
            raise Mismatch(f"num_batches_tracked is {count.tolist()} after {step}, expected {int(want_count)} — "
                           f"{what} (a 0-dim int64 buffer)")
        if g["graph"]:
            raise Mismatch(f"after {step} the buffer `{g['graph'][0]}` holds a graph (it requires grad): every "
                           "step would keep the last one alive — update running statistics under torch.no_grad() "
                           "or from detached batch statistics")
        if g["grads"] is None:
            raise Mismatch(f"the output of {step} does not track gradients — compute it with torch operations on "
                           "x and the parameters (no torch.no_grad() around the normalisation, no .detach())")
        for name in ("x", "weight", "bias"):
            gg = g["grads"].get(name)
            if gg is None:
                raise Mismatch(f"{step}: `{name}` got no gradient — the output should depend on it "
                               f"({'x̂ · weight + bias' if name != 'x' else 'the normalised x'})")
            try:
                expect_tensor(gg, w["grads"][name], atol=1e-4, rtol=1e-4, device=device,
                              what=f"the gradient of {name} in {step}")
            except Mismatch as e:
                why = ("in train mode the batch mean and variance depend on x: compute them from x itself (not "
                       "x.detach()) so that autograd follows them; detach only what goes into the running "
                       "statistics") if name == "x" and mode == "train" else \
                    "compute the output with torch operations so that autograd differentiates it"
                raise Mismatch(f"{e.message}\n→ {why}", e.detail) from None
        before = {**w["buffers"], "weight": before["weight"], "bias": before["bias"]}


BN_CANCELLATION = ("var = E[x²] - E[x]² suffers catastrophic cancellation when the mean is large (two numbers "
                   "near 10⁶ subtracted in float32) — compute the variance from x - mean: ((x - mean)²).mean, or "
                   "x.var(dim=(0, 2, 3), unbiased=False)")
_BN_FORMULA = {
    "train": "train mode: y = (x - mean) / sqrt(var + eps) · weight + bias, with the mean and the biased variance "
             "of each channel over dims (0, 2, 3), and weight, bias reshaped to (1, C, 1, 1)",
    "eval": "eval mode: y = (x - running_mean) / sqrt(running_var + eps) · weight + bias, everything reshaped to "
            "(1, C, 1, 1)",
}
_BN_RUNNING = ("in train mode: running_mean = (1 - momentum)·running_mean + momentum·mean and running_var = "
               "(1 - momentum)·running_var + momentum·(unbiased variance); in eval mode they stay")


def _bn_sequence(t, cls, nf: int, kwargs: dict, steps: list, dtype: str, label: str, load: dict | None = None,
                 hint: str | None = None, atol: float = 1e-5):
    """One case per device: the learner's module and nn.BatchNorm2d through the same steps."""
    want = bn_steps(nn.BatchNorm2d, nf, kwargs, steps, "cpu", dtype, load)
    ref = nn.BatchNorm2d(nf, **kwargs)
    if load is not None:
        ref.load_state_dict(load)
    start = {k: v.detach().clone().double() for k, v in ref.state_dict().items()}
    for device in t.devices:
        with t.case(f"{device}: {label}"):
            try:
                got = t.call(bn_steps, cls, nf, kwargs, steps, device, dtype, load)
            except LearnerError as e:
                if "backward through the graph a second time" in str(e):
                    raise LearnerError(f"{e}\n→ a buffer kept the previous step's graph, so this step's backward "
                                       "ran into it — update the running statistics under torch.no_grad() (or from "
                                       "detached batch statistics)") from None
                raise
            _bn_compare(got, want, steps, device, kwargs, start, hint, atol)


def _bn_random_state(t, nf: int) -> dict:
    return {"weight": t.randn(nf, dtype=torch.float32) * 0.5 + 1, "bias": t.randn(nf, dtype=torch.float32),
            "running_mean": t.randn(nf, dtype=torch.float32), "running_var": t.rand(nf, dtype=torch.float32) + 0.5,
            "num_batches_tracked": torch.tensor(7)}


def _bn_batch(t, n: int, nf: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """A batch whose channels have different means and scales (so per-channel statistics matter)."""
    scale = t.rand(1, nf, 1, 1, dtype=dtype) * 2 + 0.5
    shift = t.randn(1, nf, 1, 1, dtype=dtype) * 2
    return t.randn(n, nf, h, w, dtype=dtype) * scale + shift


BN_FORBIDDEN = {name: "normalise with the batch statistics yourself: mean and var over dims (0, 2, 3)" for name in [
    "batch_norm", "native_batch_norm", "native_batch_norm_legit", "native_batch_norm_legit_no_training",
    "batch_norm_impl_index", "cudnn_batch_norm", "miopen_batch_norm", "batch_norm_stats", "batch_norm_elemt",
    "batch_norm_update_stats", "batch_norm_gather_stats", "batch_norm_gather_stats_with_counts",
    "instance_norm", "torch.nn.functional.batch_norm", "torch.nn.functional.instance_norm",
    "torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.LazyBatchNorm1d",
    "torch.nn.LazyBatchNorm2d", "torch.nn.LazyBatchNorm3d", "torch.nn.SyncBatchNorm",
    "torch.nn.modules.batchnorm._NormBase"]}


@exercise(LESSON, points=3, difficulty=3, minutes=35, hints=[
    "In __init__: self.weight = nn.Parameter(torch.ones(num_features)), self.bias likewise with zeros; "
    "register_buffer for running_mean (zeros), running_var (ones) and num_batches_tracked "
    "(torch.tensor(0, dtype=torch.long)); keep eps and momentum as attributes.",
    "forward in train mode: mean = x.mean(dim=(0, 2, 3)), var = x.var(dim=(0, 2, 3), unbiased=False); normalise "
    "with those. Under torch.no_grad(): running_mean = (1 - momentum)·running_mean + momentum·mean, and the same "
    "for running_var with the UNBIASED variance (var · n / (n - 1), n = N·H·W); num_batches_tracked += 1.",
    "In eval mode normalise with running_mean and running_var and update nothing. Reshape the (C,) tensors to "
    "(1, C, 1, 1) to broadcast: y = (x - mean) / sqrt(var + eps) · weight + bias.",
], forbidden=BN_FORBIDDEN)
def BatchNorm2d(t, cls):
    nf = t.unseen(3, 5, 17)
    with t.case(f"BatchNorm2d({nf}): parameters and buffers named, shaped and initialised like nn.BatchNorm2d"):
        _bn_structure(t.call(bn_build, cls, nf, {}), nf)
    if not t.results[-1].passed:
        return
    ref_state = _bn_random_state(t, nf)
    with t.case(f"an nn.BatchNorm2d({nf}).state_dict() loads into BatchNorm2d({nf}), strict"):
        error = t.call(bn_load, cls, nf, ref_state)
        if error:
            raise Mismatch(f"load_state_dict(nn.BatchNorm2d's state_dict, strict=True) failed — register exactly "
                           f"{BN_KEYS} with nn.BatchNorm2d's shapes", error)

    h, w = t.unseen(5, 6, 9), t.unseen(4, 2, 4)
    steps = [["train", _bn_batch(t, 4, nf, h, w), t.randn(4, nf, h, w, dtype=torch.float32)],
             ["train", _bn_batch(t, 3, nf, h, w), t.randn(3, nf, h, w, dtype=torch.float32)],
             ["eval", _bn_batch(t, 2, nf, h, w), t.randn(2, nf, h, w, dtype=torch.float32)],
             ["train", _bn_batch(t, 2, nf, h, w), t.randn(2, nf, h, w, dtype=torch.float32)],
             ["eval", _bn_batch(t, 5, nf, h, w), t.randn(5, nf, h, w, dtype=torch.float32)]]
    _bn_sequence(t, cls, nf, {}, steps, "float32",
                 f"BatchNorm2d({nf}) new: train, train, eval, train, eval steps on (N, {nf}, {h}, {w}) batches: "
                 "outputs, running statistics, num_batches_tracked and the gradients of x, weight and bias")

    with t.case(f"BatchNorm2d({nf}).state_dict() after two train steps loads into nn.BatchNorm2d({nf}), strict"):
        state = t.call(bn_state_after, cls, nf, steps[:2])
        ref = nn.BatchNorm2d(nf)
        try:
            ref.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise Mismatch("nn.BatchNorm2d.load_state_dict(your state_dict, strict=True) failed — register exactly "
                           f"{BN_KEYS} with nn.BatchNorm2d's shapes and dtypes", one_line(e)) from None

    steps = [["eval", _bn_batch(t, 3, nf, h + 1, w, torch.float64), t.randn(3, nf, h + 1, w)],
             ["train", _bn_batch(t, 4, nf, h + 1, w, torch.float64), t.randn(4, nf, h + 1, w)],
             ["train", _bn_batch(t, 2, nf, h + 1, w, torch.float64), t.randn(2, nf, h + 1, w)],
             ["eval", _bn_batch(t, 4, nf, h + 1, w, torch.float64), t.randn(4, nf, h + 1, w)]]
    kwargs = {"eps": 1e-3, "momentum": 0.3}
    _bn_sequence(t, cls, nf, kwargs, steps, "float64",
                 f"BatchNorm2d({nf}, eps=1e-3, momentum=0.3) loaded from an nn.BatchNorm2d state_dict, in float64: "
                 "eval, train, train, eval", load=ref_state)

    small = [["train", _bn_batch(t, 6, nf, 2, 3) * 0.03, t.randn(6, nf, 2, 3, dtype=torch.float32)],
             ["eval", _bn_batch(t, 2, nf, 2, 3) * 0.03, t.randn(2, nf, 2, 3, dtype=torch.float32)]]
    _bn_sequence(t, cls, nf, {"eps": 0.01}, small, "float32",
                 f"BatchNorm2d({nf}, eps=0.01) on small values (variance near eps): train, eval")
    # wrong values here and nowhere else: the statistics lose precision on large means
    cancellation = BN_CANCELLATION if all(r.passed for r in t.results) else None
    far = [["train", _bn_batch(t, 8, nf, 8, 8) * 5 + 1000, t.randn(8, nf, 8, 8, dtype=torch.float32)],
           ["eval", _bn_batch(t, 2, nf, 8, 8) * 5 + 1000, t.randn(2, nf, 8, 8, dtype=torch.float32)]]
    _bn_sequence(t, cls, nf, {}, far, "float32", f"BatchNorm2d({nf}) in float32 on channels with means near 1000 "
                 "(standard deviations near 5): train, eval", atol=1e-4,
                 hint=cancellation)
    if "cuda" not in t.devices:
        with t.case(f"device check: BatchNorm2d({nf}) on the meta device, train and eval"):
            try:
                got = t.call(bn_meta, cls, nf, t.randn(2, nf, 3, 3, dtype=torch.float32), watch_devices=True)
            except MixedDevices as e:
                raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the module's device: on a GPU "
                               "this fails — create new tensors with device=x.device, and register the module's "
                               "tensors as parameters or buffers so that .to() moves them") from None
            except (LearnerError, Mismatch) as e:
                raise Inconclusive(f"could not run on the meta device: {e}") from None
            if got["plain"]:
                name, dev = next(iter(got["plain"].items()))
                raise Mismatch(f"`self.{name}` is a plain tensor attribute (still on {dev} after .to()) — register "
                               "it with register_buffer so that .to(device) moves it")
            if any(o != "meta" for o in got["outs"]):
                raise Mismatch("the output is not on the input's device — create tensors with device=x.device")


# ============================================================================================================
# DigitsCNN (graded training)
# ============================================================================================================
# The check trains the learner's model itself, with its own loop and DIGITS_RECIPE, on the shipped training
# split only; the test labels never reach the learner's process (it hands back logits, judged here). How the
# ways around that are caught:
# - fresh weights / a model that loads trained weights (or trains itself on any split) in __init__: a new
#   instance, made under the recipe's seed, must be near chance on the test split (accuracy <= 0.5) before the
#   check trains it;
# - a wrong architecture: no nn.Conv2d, an output that is not (B, 10) for (B, 1, 8, 8) (also for B = 1), or a
#   model with no nonlinearity at all (an affine map: f(a) + f(b) == f(a + b) + f(0)) fails before training;
# - training on the test split: the only training is the check's loop over the training images; a model that
#   changes its own weights in forward or backward (reading the test files there, say) is caught because each
#   parameter's values may change only in optimizer.step() (grader.training.Guard), and the parameters must
#   stay the ones the optimizer was given. (A forward that looked the answers up without touching its weights
#   would be accurate when new, and fail the first point.)
# The hidden round skips this check: training is not about hidden inputs, and one slow round is enough.

@functools.lru_cache(maxsize=2)
def _outputs(model, x):
    """model(x) as a detached CPU tensor, or a string describing what went wrong (the stub still counts)."""
    try:
        out = model(x)
    except NotImplementedError as e:
        if is_stub(e):
            raise
        return f"NotImplementedError: {one_line(e)}"
    except Exception as e:
        return f"{type(e).__name__}: {one_line(e)}"
    if not isinstance(out, torch.Tensor):
        return f"a {type(out).__name__} instead of a tensor"
    return out.detach().cpu().clone() if out.device.type != "meta" else None


def digits_fresh(cls, x: torch.Tensor, seed: int) -> dict:
    """Driver: cls() made under `seed`; its modules, and in eval mode without gradients its outputs for one test
    image, for five, for all of `x`, and for the affine probe (a, b, a + b, zeros)."""
    torch.manual_seed(seed)
    model = cls()
    if not isinstance(model, nn.Module):
        return {"type": type(model).__name__, "is_module": False}
    with untraced():
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        ran = []
        handles = [m.register_forward_hook(lambda *_: ran.append(1)) for m in convs]
    model.eval()
    a, b = x[:8], x[8:16]
    try:
        with torch.no_grad():
            return {"type": type(model).__name__, "is_module": True, "convs": len(convs),
                    "five": _outputs(model, x[:5]), "convs_ran": len(ran), "one": _outputs(model, x[:1]),
                    "all": _outputs(model, x), "probe": [_outputs(model, a), _outputs(model, b),
                                                         _outputs(model, a + b), _outputs(model, torch.zeros_like(a))]}
    finally:
        for h in handles:
            h.remove()


def digits_meta(cls) -> dict:
    """Driver for the device check: cls() moved to meta, one train and one eval forward on a meta batch."""
    model = cls()
    with untraced():
        model.to("meta")
        x = torch.zeros(4, 1, 8, 8, device="meta")
    outs = []
    for mode in (True, False):
        model.train(mode)
        y = model(x)
        with untraced():
            outs.append(y.device.type if isinstance(y, torch.Tensor) else type(y).__name__)
    return {"outs": outs}


def digits_train(cls, x, y, x_test, recipe: dict, device: str, limit_s: float) -> dict:
    """Driver: the check's own training of cls() with `recipe` (Adam, cross-entropy, shuffled batches of the
    training split x, y) on `device`; then the logits for x_test in eval mode. Stops early past limit_s."""
    torch.manual_seed(recipe["seed"])
    model = cls()
    model.to(device)
    model.eval()
    with torch.no_grad():
        model(x[:2].to(device))  # a dry run (in eval mode: it changes nothing) lets lazy layers make their weights
    params = list(model.parameters())
    ids = [id(p) for p in params]
    optimizer = torch.optim.Adam(params, lr=recipe["lr"])
    order = torch.Generator().manual_seed(recipe["seed"])
    guard = Guard(params, limit_s)
    losses, epochs = [], 0
    for _ in range(recipe["epochs"]):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=order).split(recipe["batch_size"]):
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            if not guard.step(optimizer):
                break
            total += loss.item() * len(idx)
        if guard.stopped:  # an epoch cut short has no mean loss, and does not count
            break
        losses.append(total / len(x))
        epochs += 1
    seconds = time.perf_counter() - guard.start
    swapped = [id(p) for p in model.parameters()] != ids
    model.eval()
    with torch.no_grad():
        logits = _outputs(model, x_test.to(device))
    reloaded, reload_error = reloaded_logits(cls, model, device, lambda twin: _outputs(twin, x_test.to(device)))
    return {"seconds": seconds, "epochs": epochs, "losses": losses, "tampered": guard.tampered,
            "swapped": swapped, "logits": logits, "reloaded": reloaded, "reload_error": reload_error}


def _accuracy(logits, y) -> float:
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(y), 10):
        return 0.0
    return (logits.argmax(dim=1) == y).float().mean().item()


def _expect_logits(out, batch: int) -> None:
    if isinstance(out, str):
        raise Mismatch(f"the model fails on a batch of shape ({batch}, 1, 8, 8), float32 in [0, 1] — it should "
                       "take one grayscale channel of 8x8 pixels (nn.Conv2d(1, ...)) and return (B, 10) logits",
                       out)
    if tuple(out.shape) != (batch, 10):
        advice = " — a .squeeze() also removes the batch dim when B = 1: flatten with x.flatten(1) or nn.Flatten()" \
            if batch == 1 and tuple(out.shape) == (10,) else \
            " — the last layer needs 10 outputs, one logit per digit" if out.ndim == 2 and out.shape[0] == batch \
            else \
            " — flatten the feature maps per sample (nn.Flatten() or x.flatten(1)), then a Linear(…, 10)"
        raise Mismatch(f"the model should return logits of shape ({batch}, 10) for ({batch}, 1, 8, 8) images, got "
                       f"{shape_str(out.shape)}{advice}")


def _is_affine(probe: list) -> bool:
    if any(not isinstance(o, torch.Tensor) for o in probe):
        return False
    fa, fb, fab, f0 = (o.double() for o in probe)
    if not (fa.shape == fb.shape == fab.shape == f0.shape):
        return False
    scale = max(fa.abs().max().item(), fb.abs().max().item(), fab.abs().max().item(), 1e-6)
    return (fa + fb - fab - f0).abs().max().item() <= 1e-4 * scale


def _recipe_text() -> str:
    r = DIGITS_RECIPE
    return f"Adam(lr={r['lr']:g}), batch_size={r['batch_size']}, {r['epochs']} epochs, seed {r['seed']}"


@exercise(LESSON, points=3, difficulty=2, minutes=25, hints=[
    "Two or three nn.Conv2d layers with padding=1 keep the 8x8 size (nn.Conv2d(1, 16, 3, padding=1), then 16 -> "
    "32), each followed by nn.ReLU(); an nn.MaxPool2d(2) halves it to 4x4; then nn.Flatten() and nn.Linear(32 * 4 "
    "* 4, 10).",
    "Return raw logits: no softmax at the end (the check's cross-entropy applies log_softmax itself). Do not load "
    "or train weights in __init__: the check trains a new instance itself, on the training split only.",
    "If the accuracy stays low, train it yourself the way the check does (DIGITS_RECIPE: Adam, cross-entropy, "
    "shuffled batches of the training images scaled to [0, 1], shape (B, 1, 8, 8)) and print the loss per epoch: "
    "it should fall well below 0.1. No ReLU, or outputs squashed by a softmax, keep it high.",
], budget_s=TIME_BUDGET_S, time_limit_s=TIME_LIMIT_S)
def DigitsCNN(t, cls):
    if t.hidden:  # training is not about hidden inputs; one (slow) round is enough
        return
    x_test, y_test = digits("test")
    with t.case("DigitsCNN() is an nn.Module with an nn.Conv2d, maps (B, 1, 8, 8) to (B, 10) logits through a "
                "nonlinearity, and is untrained when made"):
        info = t.call(digits_fresh, cls, x_test.clone(), DIGITS_RECIPE["seed"])
        if not info["is_module"]:
            raise Mismatch(f"DigitsCNN() should make an nn.Module, got {info['type']} — class DigitsCNN(nn.Module) "
                           "with super().__init__() first in __init__")
        if not info["convs"]:
            raise Mismatch("the model has no nn.Conv2d layer — a CNN extracts its features with convolutions: "
                           "nn.Conv2d(1, 16, kernel_size=3, padding=1), ...; an MLP on the flattened pixels is "
                           "not what this exercise asks for")
        for key, batch in [("five", 5), ("one", 1), ("all", len(y_test))]:
            _expect_logits(info[key], batch)
        out = info["all"]
        if out.min() >= 0 and out.max() <= 1 and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3):
            raise Mismatch("the model returns probabilities (each row sums to 1): a softmax in forward — return the "
                           "raw logits: cross_entropy wants logits and applies log_softmax itself")
        if not info["convs_ran"]:
            raise Mismatch("the model has nn.Conv2d layers, but forward never calls them — pass the images "
                           "through the convolutions before the linear layers")
        accuracy = _accuracy(info["all"], y_test)
        if accuracy > 0.5:
            raise Mismatch(f"a new DigitsCNN() is already {accuracy:.0%} accurate on the test images: it is "
                           "already trained when it is made — the check trains it itself; do not load weights "
                           "(or train) in __init__")
        if _is_affine(info["probe"]):
            raise Mismatch("the model is an affine map (f(a) + f(b) == f(a + b) + f(0)): there is no nonlinearity "
                           "between its layers, so the stacked convolutions and linear layers collapse into one "
                           "linear map — put nn.ReLU() after each convolution (and hidden linear layer)")
    if not t.results[-1].passed:
        return
    if "cuda" not in t.devices:
        with t.case("device check: DigitsCNN() moved to the meta device, one train and one eval forward"):
            try:
                got = t.call(digits_meta, cls, watch_devices=True)
            except MixedDevices as e:
                raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the model's device: on a GPU "
                               "this fails — make new tensors with device=x.device, and keep the model's tensors "
                               "in layers, parameters or buffers so that .to() moves them") from None
            except (LearnerError, Mismatch) as e:
                raise Inconclusive(f"could not run on the meta device: {e}") from None
            if any(o != "meta" for o in got["outs"]):
                raise Mismatch("the output is not on the input's device — create tensors with device=x.device")
    x_train, y_train = digits("train")
    device = "cuda" if "cuda" in t.devices else "cpu"
    limit = t.exercise.time_limit_s
    with t.case(f"the check trains DigitsCNN() on the {len(y_train)} training images ({_recipe_text()}) within "
                f"{TIME_BUDGET_S} s (it allows {limit:g} s); test accuracy at least {MIN_ACCURACY}"):
        run = t.call(digits_train, cls, x_train.clone(), y_train.clone(), x_test.clone(), DIGITS_RECIPE, device,
                     limit)
        if run["swapped"]:
            raise Mismatch("the model's parameters were replaced during training — the optimizer trains the ones "
                           "it was given: build every layer in __init__ and never reassign them in forward")
        if run["tampered"]:
            raise Mismatch(f"{TAMPERED} (no loading, no in-place updates of parameters in forward)")
        if run["seconds"] > limit:
            raise Mismatch(f"training stopped after {run['epochs']} of {DIGITS_RECIPE['epochs']} epochs at "
                           f"{run['seconds']:.0f} s, over the limit — use a smaller model (a few conv layers of "
                           "16-32 channels train in seconds)")
        logits = run["logits"]
        if isinstance(logits, str):
            raise Mismatch("the trained model fails on the (360, 1, 8, 8) test batch in eval mode — make forward "
                           "work in eval mode too", logits)
        _expect_logits(logits, len(y_test))
        expect_reload_agrees(run, "DigitsCNN", logits, "on the test images in eval mode")
        accuracy = _accuracy(logits, y_test)
        if accuracy >= MIN_ACCURACY:
            return
        losses = run["losses"]
        seen = f"training loss per epoch {', '.join(f'{v:.3g}' for v in losses[:3])} … {losses[-1]:.3g}"
        probs = logits.min() >= 0 and logits.max() <= 1 and torch.allclose(logits.sum(1), torch.ones(len(logits)),
                                                                            atol=1e-3)
        if not all(math.isfinite(v) for v in losses):
            advice = "the loss became nan or inf — a log of 0, or an exploding layer (no normalisation)?"
        elif probs:
            advice = ("the model returns probabilities (rows sum to 1): a softmax in forward — return the raw "
                      "logits; cross-entropy applies log_softmax itself")
        elif accuracy < 0.2:
            advice = ("that is about chance (0.1): the model did not learn — are the outputs logits computed from "
                      "the input (not constants), and is there a nonlinearity (nn.ReLU) between the layers?")
        else:
            advice = ("the model learns, but not enough — more channels, padding=1 so that the 8x8 images are not "
                      "shrunk away, and a ReLU after each convolution")
        raise Mismatch(f"test accuracy {accuracy:.3f} is below {MIN_ACCURACY} — {advice}", seen)


# ============================================================================================================
# resnet18_for
# ============================================================================================================

_INIT_OPS = {"normal_", "uniform_", "fill_", "zero_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "constant_", "ones_", "zeros_", "trunc_normal_", "orthogonal_"}


class _SkipInitOnMeta(TorchFunctionMode):
    """Skips weight initialisation of meta tensors (they hold no values; on meta it is slow Python code), or of
    every tensor with everywhere=True (the values are then whatever memory held): a ResNet-18 is then built in
    milliseconds."""

    def __init__(self, everywhere: bool = False):
        super().__init__()
        self.everywhere = everywhere

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        if getattr(func, "__name__", "") in _INIT_OPS and isinstance(target, torch.Tensor) \
                and (self.everywhere or target.device.type == "meta"):
            return target
        return func(*args, **kwargs)


def _type_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _shape(x) -> tuple | None:
    """x's shape, None for a lazy module's parameter (it has none until the first forward)."""
    return None if isinstance(x, nn.parameter.UninitializedTensorMixin) else tuple(x.shape)


def _describe_model(model) -> dict:
    """Plain data describing a model's structure: module types, parameters, buffers, fc."""
    if not isinstance(model, nn.Module):
        return {"is_module": False, "type": type(model).__name__}
    fc = getattr(model, "fc", None)
    return {
        "is_module": True, "type": _type_path(model),
        "modules": [(n, _type_path(m)) for n, m in model.named_modules()],
        "params": [(n, _shape(p), bool(p.requires_grad)) for n, p in model.named_parameters()],
        "buffers": [(n, _shape(b)) for n, b in model.named_buffers()],
        "fc": None if fc is None else {"type": _type_path(fc), "in": getattr(fc, "in_features", None),
                                       "out": getattr(fc, "out_features", None),
                                       "bias": isinstance(getattr(fc, "bias", None), torch.Tensor)},
    }


def resnet_build(fn, num_classes: int) -> dict:
    """Driver: fn(num_classes) twice, with weight initialisation skipped (only the structure is judged; an
    initialised ResNet-18 takes a third of a second): the first model described, plus where its parameters live
    (device, dtype), its mode, and whether the second call shared a module or a parameter with the first."""
    with _SkipInitOnMeta(everywhere=True):
        model = fn(num_classes)
        again = fn(num_classes)
    with untraced():
        info = _describe_model(model)
        if info["is_module"]:
            tensors = [*model.parameters(), *model.buffers()]
            info["devices"] = sorted({x.device.type for x in tensors})
            info["dtypes"] = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
            info["eval"] = [n or "the model" for n, m in model.named_modules() if not m.training][:1]
            info["lazy"] = any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
            info["same_object"] = again is model
            if isinstance(again, nn.Module) and again is not model:
                real = (lambda p: p.device.type != "meta" and not isinstance(p, nn.parameter.UninitializedParameter))
                mine = {p.data_ptr() for p in model.parameters() if real(p)}
                info["shared"] = [n for n, p in again.named_parameters() if real(p) and p.data_ptr() in mine][:1]
                owned = {id(m) for m in model.modules()}
                info["shared"] += [n or "the model" for n, m in again.named_modules() if id(m) in owned][:1]
            else:
                info["shared"] = []
        return info


@functools.lru_cache(maxsize=1)
def _resnet18_reference() -> dict:
    """torchvision's resnet18(weights=None), described (its fc is Linear(512, 1000))."""
    import torchvision
    with _SkipInitOnMeta(), torch.device("meta"):
        return _describe_model(torchvision.models.resnet18(weights=None))


def _resnet_expected(num_classes: int) -> dict:
    ref = _resnet18_reference()
    fc = {"fc.weight": (num_classes, 512), "fc.bias": (num_classes,)}
    return {**ref, "params": [(n, fc.get(n, s), True) for n, s, _ in ref["params"]],
            "fc": {**ref["fc"], "out": num_classes}}


def _resnet_compare(got: dict, k: int) -> None:
    want = _resnet_expected(k)
    if not got["is_module"]:
        raise Mismatch(f"resnet18_for should return the model (an nn.Module), got {got['type']} — return the "
                       "ResNet itself")
    if got["type"] != want["type"]:
        raise Mismatch(f"the model should be torchvision's ResNet (torchvision.models.resnet18(weights=None)), got "
                       f"{got['type']} — build it with torchvision and replace only its fc")
    got_modules, want_modules = dict(got["modules"]), dict(want["modules"])
    if any(kind.endswith(".Bottleneck") for kind in got_modules.values()):
        raise Mismatch("the model has Bottleneck blocks: that is a ResNet-50 or larger — "
                       "torchvision.models.resnet18(weights=None)")
    fc = got["fc"]
    if got["lazy"] or (fc is not None and fc["type"].endswith(".LazyLinear")):
        raise Mismatch("model.fc is an nn.LazyLinear, whose weight does not exist until the first forward — use "
                       "nn.Linear(512, num_classes): a ResNet-18's pooled features are 512")
    if fc is None:
        raise Mismatch("the model has no `fc` — keep the ResNet's head attribute: model.fc = nn.Linear(512, "
                       "num_classes)")
    if fc["type"] != "torch.nn.modules.linear.Linear":
        raise Mismatch(f"model.fc should be one nn.Linear(512, num_classes), got {fc['type'].rsplit('.', 1)[-1]} — "
                       "replace the head with a single nn.Linear")
    if fc["in"] != 512:
        raise Mismatch(f"model.fc takes {fc['in']} features, but a ResNet-18's pooled features are 512 — "
                       "nn.Linear(model.fc.in_features, num_classes), which replaces the old head (not one stacked "
                       "after its 1000 outputs)")
    if fc["out"] != k:
        raise Mismatch(f"model.fc has {fc['out']} outputs for num_classes={k} — nn.Linear(512, num_classes): use "
                       "the argument, not a fixed number")
    if not fc["bias"]:
        raise Mismatch("model.fc has no bias — nn.Linear(512, num_classes) keeps bias=True, as torchvision's head")

    extra = [n for n in got_modules if n not in want_modules]
    if extra:
        raise Mismatch(f"unexpected module(s) {extra[:3]} — change only model.fc; the rest of the ResNet-18 stays "
                       "as torchvision builds it")
    missing = [n for n in want_modules if n not in got_modules]
    if missing:
        raise Mismatch(f"module(s) {missing[:3]} of a ResNet-18 are missing — torchvision.models.resnet18("
                       "weights=None), then replace only model.fc")
    changed = [n for n in want_modules if got_modules[n] != want_modules[n]]
    if changed:
        n = changed[0]
        raise Mismatch(f"`{n or 'the model'}` is a {got_modules[n].rsplit('.', 1)[-1]}, a ResNet-18 has a "
                       f"{want_modules[n].rsplit('.', 1)[-1]} there — change only model.fc")
    got_params = {n: (s, r) for n, s, r in got["params"]}
    for n, s, _ in want["params"]:
        if n not in got_params or got_params[n][0] != s:
            raise Mismatch(f"parameter `{n}` should have shape {shape_str(s)}, got "
                           f"{shape_str(got_params[n][0]) if n in got_params else 'none'} — resnet18(weights=None) "
                           "with its layers as they are")
    frozen = [n for n, (_, r) in got_params.items() if not r]
    if frozen:
        raise Mismatch(f"{len(frozen)} parameter(s) do not require grad ({frozen[0]}, …) — every parameter should "
                       "be trainable here: do not freeze the backbone (requires_grad stays True)")
    if sorted(got["buffers"]) != sorted(want["buffers"]):
        raise Mismatch("the model's buffers differ from a ResNet-18's — build it with torchvision.models."
                       "resnet18(weights=None) and change only fc")
    if got["devices"] != ["cpu"]:
        where = " and ".join(got["devices"])
        raise Mismatch(f"the model's weights are on {where}"
                       + (" (a meta tensor has a shape but no values: nothing to train)" if "meta" in where else "")
                       + " — return it on the CPU, float32, training mode: build it outside torch.device(...) and "
                       "do not move it")
    if got["dtypes"] != ["float32"]:
        raise Mismatch(f"the model's parameters are {' and '.join(got['dtypes'])} — return it on the CPU, float32, "
                       "training mode: no .double() or .half() (that is the caller's choice)")
    if got["eval"]:
        raise Mismatch(f"{got['eval'][0]} is in eval mode — return it on the CPU, float32, training mode (as "
                       "torchvision builds it): no .eval(), the caller switches modes")
    if got["same_object"] or got["shared"]:
        what = "the same model object" if got["same_object"] else f"a model sharing `{got['shared'][0]}` with the first"
        raise Mismatch(f"two calls returned {what} — build a new ResNet-18 on every call (no cache or global "
                       "model): training one model must not change another")


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "torchvision.models.resnet18(weights=None) builds the architecture with random weights and downloads nothing.",
    "Its head is model.fc, an nn.Linear(512, 1000): replace it with nn.Linear(model.fc.in_features, num_classes).",
    "Return the model. A new nn.Linear requires grad, and so does the rest: freeze nothing here.",
], forbidden={
    "torchvision.models._api.WeightsEnum.get_state_dict": "build it with weights=None: the check never downloads "
                                                          "(pretrained weights are the online path the lesson shows)",
    "torch.hub.load_state_dict_from_url": "build it with weights=None: the check never downloads weights",
})
def resnet18_for(t, fn):
    for k in (t.unseen(10, 11, 1000), t.unseen(3, 11, 1000)):
        with t.case(f"resnet18_for({k}): a new torchvision ResNet-18 with fc = nn.Linear(512, {k}), every "
                    "parameter trainable, on the CPU, float32, training mode"):
            _resnet_compare(t.call(resnet_build, fn, k), k)


# ============================================================================================================
# capture_activations
# ============================================================================================================

class _Probe(nn.Module):
    """Passes x through; counts its calls and notes whether autograd was recording during each."""

    def __init__(self):
        super().__init__()
        self.calls, self.recording = 0, []

    def forward(self, x):
        self.calls += 1
        self.recording.append(torch.is_grad_enabled())
        return x


class _CaptureNet(nn.Module):
    """The check's model: in-place ReLUs after a conv and a batch norm, a module called twice, an LSTM (a tuple
    output), a module that never runs, and an optional failure after the LSTM."""

    def __init__(self):
        super().__init__()
        self.probe = _Probe()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3),
                                      nn.BatchNorm2d(5), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.shared = nn.Linear(5, 5)
        self.lstm = nn.LSTM(5, 3, batch_first=True)
        self.head = nn.Linear(3, 4)
        self.unused = nn.Linear(4, 4)
        self.fail = False
        self.error = RuntimeError("the check's model failed on purpose")

    def forward(self, x):
        x = self.probe(x)                                   # (B, 2, H, W)
        f = self.features(x)                                # (B, 5, H - 2, W - 2)
        h = self.flat(self.pool(f))                         # (B, 5)
        h = self.shared(torch.tanh(self.shared(h)))         # the same Linear twice
        seq, _ = self.lstm(h.unsqueeze(1))                  # (B, 1, 3), ((1, B, 3), (1, B, 3))
        if self.fail:
            raise self.error
        return self.head(seq[:, -1])                        # (B, 4)


def _capture_model(seed: int, train: bool, frozen_bn: bool, fail: bool = False) -> _CaptureNet:
    torch.manual_seed(seed)
    model = _CaptureNet()
    model.train(train)
    if frozen_bn:
        model.features[3].eval()  # a model in train mode with one submodule in eval mode
    model.fail = fail
    return model


def _hook_count(model: nn.Module) -> int:
    from torch.nn.modules import module as module_mod
    own = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return own + len(module_mod._global_forward_hooks) + len(module_mod._global_forward_pre_hooks)


def _plain_capture(value, real: set) -> dict:
    """What a captured value is, as plain data: a tensor (with whether it is a detached copy), or a tuple/list
    of such, or another type's name."""
    if isinstance(value, torch.Tensor):
        return {"kind": "tensor", "value": value.detach().clone(), "requires_grad": value.requires_grad,
                "shared": value.untyped_storage().data_ptr() in real}
    if isinstance(value, (tuple, list)):
        return {"kind": type(value).__name__, "items": [_plain_capture(v, real) for v in value]}
    return {"kind": type(value).__name__}


def capture_run(fn, x: torch.Tensor, names: list, seed: int, train: bool, frozen_bn: bool, device: str,
                fail: bool = False) -> dict:
    """Driver: the check's model (made under `seed`, in train or eval mode, optionally with its batch norm in
    eval), fn(model, x, names); what it returned (or raised), and what it left behind: hooks, modes, how often
    the model ran and whether autograd was recording, the batch norm's running mean."""
    with untraced():
        model = _capture_model(seed, train, frozen_bn, fail).to(device)
        x = x.detach().clone().to(device).requires_grad_(True)
        modes = [(n, m.training) for n, m in model.named_modules()]
        hooks = _hook_count(model)
        # the check's own hooks, registered first, keep every module's real output alive: a capture whose memory
        # is one of theirs is not a copy
        real_outputs: list = []
        witnesses = [m.register_forward_hook(lambda _m, _a, out: real_outputs.append(out)) for m in model.modules()]
    raised = None
    try:
        result = fn(model, x, list(names))
    except NotImplementedError as e:
        if is_stub(e):
            raise
        result, raised = None, e
    except Exception as e:
        result, raised = None, e
    with untraced():
        for w in witnesses:
            w.remove()
        real = {o.untyped_storage().data_ptr() for o in tree_leaves(real_outputs) if isinstance(o, torch.Tensor)}
        report = {
            "raised": None if raised is None else {"type": type(raised).__name__, "message": one_line(raised),
                                                   "same": raised is model.error},
            "hooks_left": _hook_count(model) - hooks,
            "modes_changed": [n for (n, before), (_, m) in zip(modes, model.named_modules()) if m.training != before],
            "calls": model.probe.calls, "recording": model.probe.recording,
            "running_mean": model.features[3].running_mean.detach().cpu().clone(),
        }
        if raised is None:
            report["type"] = type(result).__name__
            if isinstance(result, dict):
                report["keys"] = [k if isinstance(k, str) else repr(k) for k in result]
                report["values"] = {k: _plain_capture(v, real) for k, v in result.items() if isinstance(k, str)}
        return report


def _capture_reference(x: torch.Tensor, names: list, seed: int, train: bool, frozen_bn: bool, device: str) -> dict:
    """The check's own capture with forward hooks: {name: detached copy of the module's last output}, and the
    batch norm's running mean after the one forward pass (on `device`: a GPU's convolutions may round otherwise)."""
    model = _capture_model(seed, train, frozen_bn).to(device)
    x = x.to(device)
    modules = dict(model.named_modules())
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = tuple(_copy(o) for o in output) if isinstance(output, tuple) else _copy(output)
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {"values": {n: seen[n] for n in names}, "running_mean": model.features[3].running_mean.cpu()}


def _copy(value):
    """A detached CPU copy of a module's output, a tuple's structure kept."""
    return tuple(_copy(v) for v in value) if isinstance(value, tuple) else value.detach().cpu().clone()


def _expect_capture(got: dict, want, name: str, device: str, path: str = "") -> None:
    where = f"[{name!r}]{path}"
    if isinstance(want, tuple):
        if got["kind"] != "tuple":
            raise Mismatch(f"result{where} should be a tuple (the module returned one), got {got['kind']} — keep "
                           "the structure of tuple outputs: tuple(copy(o) for o in output), recursively")
        if len(got["items"]) != len(want):
            raise Mismatch(f"result{where} should have {len(want)} items, like the module's output, got "
                           f"{len(got['items'])} — copy every item of a tuple output")
        for i, (g, w) in enumerate(zip(got["items"], want)):
            _expect_capture(g, w, name, device, f"{path}[{i}]")
        return
    if got["kind"] != "tensor":
        raise Mismatch(f"result{where} should be a tensor (the module's output), got {got['kind']} — store "
                       "output.detach().clone() in the hook")
    if got["requires_grad"]:
        raise Mismatch(f"result{where} requires grad — store a detached copy: output.detach().clone()")
    if got["shared"]:
        raise Mismatch(f"result{where} shares memory with the model's own tensor — store a copy "
                       "(output.detach().clone()), and let the hook return None (a value it returns replaces the "
                       "module's output): a later in-place op would change what you kept")
    value = got["value"]
    try:
        # the reference ran on the same device; a GPU's kernels may still pick other algorithms under no_grad
        tol = {"atol": 1e-5, "rtol": 1e-4} if device == "cpu" else {"atol": 1e-4, "rtol": 1e-3}
        expect_tensor(value, want, device=device, what=f"result{where}", **tol)
    except Mismatch as e:
        why = None
        if value.shape == want.shape and torch.allclose(value.cpu(), want.clamp_min(0), atol=1e-4) and \
                not torch.allclose(want.clamp_min(0), want):
            why = ("the values were changed after the hook ran: the next layer, ReLU(inplace=True), overwrote "
                   "the tensor you kept — store a copy, output.detach().clone()")
        why = why or ("store each listed module's own output, as its forward hook receives it (the last one if "
                      "the module runs twice)")
        raise Mismatch(f"{e.message}\n→ {why}", e.detail) from None


def _capture_common(run: dict, train: bool) -> None:
    """What holds after every call: hooks removed, modes unchanged."""
    if run["hooks_left"] > 0:
        raise Mismatch(f"{run['hooks_left']} hook(s) are still registered afterwards — keep the handles that "
                       "register_forward_hook returns and call handle.remove() on each, in a finally: block")
    if run["modes_changed"]:
        raise Mismatch(f"the mode of {run['modes_changed'][0] or 'the model'} changed — leave model.training (and "
                       "every submodule's mode) as it was: do not call model.eval() or model.train()")


@exercise(LESSON, points=2, difficulty=2, minutes=20, hints=[
    "modules = dict(model.named_modules()) maps every qualified name to its module: look every name up before "
    "running anything (a missing one raises KeyError), and register_forward_hook on each.",
    "A hook(module, args, output) stores a copy: output.detach().clone() (for a tuple output, a tuple of copies). "
    "Run model(x) once inside torch.no_grad(), and remove every hook in a finally: block (handle.remove()).",
    "Afterwards, raise ValueError naming any listed module whose hook never ran, and return {name: "
    "captured[name] for name in names}. Never call model.eval() or model.train(): the mode stays as it is.",
])
def capture_activations(t, fn):
    seed = t.integer(0, 10_000)
    b, h, w = t.unseen(3, 4, 7), t.unseen(6, 7, 10), t.unseen(5, 7, 10)
    x = t.randn(b, 2, h, w, dtype=torch.float32)
    full = ["head", "features.0", "lstm", "features", "shared", "features.3", "probe"]
    cases = [(full, True, False, "train mode; names out of execution order, nested names, a conv followed by "
              "ReLU(inplace=True), an LSTM's tuple output, a Linear called twice"),
             (["features.3", "features.4", "pool"], False, False, "eval mode"),
             (["features.3", "flat", "lstm"], True, True, "train mode with the batch norm in eval mode")]
    for names, train, frozen, words in cases:
        for device in t.devices:
            want = _capture_reference(x, names, seed, train, frozen, device)
            with t.case(f"{device}: capture_activations(model, x {shape_str(x.shape)}, {names}): {words}"):
                run = t.call(capture_run, fn, x, names, seed, train, frozen, device)
                if run["raised"]:
                    advice = "\n→ the LSTM returns a tuple (output, (h_n, c_n)): copy each tensor in it and keep " \
                             "the tuple structure" if "'tuple' object has no attribute" in \
                             run["raised"]["message"] else ""
                    raise Mismatch(f"raised {run['raised']['type']} for names that all exist and run — "
                                   f"{run['raised']['message']}{advice}")
                if run["calls"] != 1:
                    raise Mismatch(f"the model ran {run['calls']} times — run model(x) exactly once, with every "
                                   "hook registered first")
                if any(run["recording"]):
                    raise Mismatch("the forward pass ran with autograd recording, so it built a graph — run "
                                   "model(x) inside torch.no_grad()")
                _capture_common(run, train)
                if run["type"] not in ("dict", "OrderedDict") or "keys" not in run:
                    raise Mismatch(f"should return a dict {{name: output}}, got {run['type']} — return a dict "
                                   "built in the order of `names`")
                if run["keys"] != names:
                    how = "in the order of `names`, not the order the modules ran" if sorted(run["keys"]) == \
                        sorted(names) else "exactly the listed names"
                    raise Mismatch(f"the keys are {run['keys']}, expected {names} — {how}: "
                                   "{name: captured[name] for name in names}")
                for name in names:
                    _expect_capture(run["values"][name], want["values"][name], name, device)
                expect_tensor(run["running_mean"], want["running_mean"], atol=1e-5, rtol=1e-4,
                              what="the batch norm's running_mean after the call")

    with t.case("a name that is not a submodule ('features.9') raises KeyError before anything runs"):
        run = t.call(capture_run, fn, x, ["features.0", "features.9"], seed, True, False, "cpu")
        raised = run["raised"]
        if raised is None or raised["type"] != "KeyError":
            got = "returned normally" if raised is None else f"raised {raised['type']}"
            advice = " (model.get_submodule raises AttributeError)" if raised and \
                raised["type"] == "AttributeError" else ""
            raise Mismatch(f"should raise KeyError for an unknown name, but {got}{advice} — look every name up in "
                           "dict(model.named_modules()) first")
        if run["calls"]:
            raise Mismatch("the model ran before the KeyError — check every name before registering hooks and "
                           "running the model")
        _capture_common(run, True)

    with t.case("a listed module that never runs ('unused') raises ValueError naming it, hooks removed"):
        run = t.call(capture_run, fn, x, ["features.0", "unused"], seed, True, False, "cpu")
        raised = run["raised"]
        if raised is None or raised["type"] != "ValueError":
            got = "returned normally" if raised is None else f"raised {raised['type']}"
            raise Mismatch(f"should raise ValueError for a module whose hook never ran, but {got} — after the "
                           "forward pass, check that every name was captured")
        if "unused" not in raised["message"]:
            raise Mismatch(f"the ValueError should name the module that never ran ('unused'), got: "
                           f"{raised['message']!r} — raise ValueError(f\"module {{name}} never ran\")")
        _capture_common(run, True)

    with t.case("the model's forward raises: that same exception propagates and every hook is removed"):
        run = t.call(capture_run, fn, x, ["features.0", "head"], seed, True, False, "cpu", True)
        raised = run["raised"]
        if raised is None:
            raise Mismatch("the model's forward raised, but capture_activations returned normally — let the "
                           "exception propagate (try: ... finally: remove the hooks), do not catch it")
        if not raised["same"]:
            raise Mismatch(f"raised {raised['type']} instead of the model's own RuntimeError — let the forward's "
                           "exception propagate unchanged: try/finally, no except")
        _capture_common(run, True)
