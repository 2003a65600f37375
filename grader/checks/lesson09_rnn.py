"""Checks for 09_rnn: a recurrent cell, an LSTM cell, a one-layer RNN module, the last real timestep of padded
outputs, a trained surname classifier, and the final hidden state of a packed batch.

Learner code runs only inside drivers (module-level functions whose first argument is the learner's object) that
take and return plain data; the oracles are torch's own recurrent modules (nn.RNN, nn.LSTMCell, ...) and plain
loops, run by the check itself outside the tracer.
"""
from __future__ import annotations

import functools
import itertools
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

from grader.compare import Mismatch, expect_tensor, kind_of, known_mistake, one_line, shape_str
from grader.data import surnames
from grader.devices import to_device
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, unchanged, untraced
from grader.tracing import MixedDevices, canonical_name, current
from grader.training import TAMPERED, Guard, expect_reload_agrees, reloaded_logits

LESSON = "09_rnn"

# ============================================================================================================
# NameClassifier: the data, the split, the vocabulary and the training recipe (the lesson uses the same)
# ============================================================================================================
# Data: datasets/surnames/<Language>.txt, one surname per line; the classes are the files' stems in sorted order
# (Czech, Dutch, English, French, German, Italian, Polish, Spanish), the names in file order within each class.
# Split: perm = torch.randperm(N, generator=torch.Generator().manual_seed(SPLIT_SEED)); the last N // 5 indices
# of perm are the held-out names, the first N - N // 5 the training names (both in perm's order).
# Vocabulary: id 0 is <pad>, id 1 is <unk> (a character no training name has), then every character of the
# training names (case kept) in sorted order from id 2.
# Batches: x (B, T) int64 ids, right-padded with 0 up to the longest name of the batch; lengths (B,) int64, on
# the same device as x; the model returns logits (B, number of classes).
# Recipe: torch.manual_seed(SEED), then NameClassifier(vocab_size, num_classes); Adam(lr=LR); EPOCHS epochs of
# batches of BATCH_SIZE names, shuffled by torch.randperm with torch.Generator().manual_seed(SEED + epoch);
# F.cross_entropy; clip_grad_norm_(model.parameters(), CLIP_NORM) before each step; model.train() while training,
# model.eval() and torch.no_grad() while evaluating.
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2       # N // 5 names held out
PAD, UNK = 0, 1
SEED = 0
EPOCHS = 6
BATCH_SIZE = 64
LR = 5e-3
CLIP_NORM = 1.0
# Measured with this recipe on the fixed split (held-out accuracy after 6 epochs; about 1.5 s an epoch on one CPU
# thread for a Python loop over the time steps): a hand-written tanh RNN with 32-dim embeddings and 64 hidden units
# reaches 0.75 (0.73 with 16 / 32; 0.77 with 64 / 128 after 8 epochs). Without recurrence, a bag of characters
# (the mean of the embeddings into a 2-layer MLP) reaches 0.68, the mean of the embeddings into one nn.Linear 0.64;
# the RNN read at the last padded step 0.68 (after 10 epochs); always answering Polish, the majority class, 0.463.
MIN_ACCURACY = 0.70          # held-out accuracy to pass
FRESH_MAX_ACCURACY = 0.55    # untrained, a model is near chance or the majority class (0.463): above, it was not
IMPLAUSIBLE_ACCURACY = 0.95  # no model trained this way gets near it: the held-out names themselves are known
NAMES_TIME_BUDGET_S = 30     # what the exercise promises: the check's training fits in this on a 2-core CPU
NAMES_TIME_LIMIT_S = 90      # what the check enforces (the budget, with room for a slow or busy machine)


def split_indices(n: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of the fixed split of n names."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    held_out = n // 5
    return perm[:n - held_out], perm[n - held_out:]


def vocabulary(train_names) -> dict[str, int]:
    """Character -> id: 0 <pad>, 1 <unk>, then the training names' characters in sorted order."""
    return {ch: i + 2 for i, ch in enumerate(sorted(set("".join(train_names))))}


def encode(names, vocab: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T) int64 right-padded with PAD to the longest name, lengths (B,) int64."""
    lengths = torch.tensor([len(n) for n in names], dtype=torch.int64)
    x = torch.full((len(names), int(lengths.max()) if len(names) else 0), PAD, dtype=torch.int64)
    for b, name in enumerate(names):
        x[b, :len(name)] = torch.tensor([vocab.get(ch, UNK) for ch in name], dtype=torch.int64)
    return x, lengths


# ============================================================================================================
# shared
# ============================================================================================================
_BY_HAND = "write the recurrence yourself, one time step at a time, with your own weights"
_STEP = "compute the step yourself from x, h and the weights (the formula of rnn_cell / lstm_cell)"
FORBIDDEN = {
    "torch.nn.RNN": _BY_HAND, "torch.nn.LSTM": _BY_HAND, "torch.nn.GRU": _BY_HAND, "torch.nn.RNNBase": _BY_HAND,
    "torch.nn.RNNCell": _STEP, "torch.nn.LSTMCell": _STEP, "torch.nn.GRUCell": _STEP, "torch.nn.RNNCellBase": _STEP,
    # what those modules (and torch.rnn_tanh_cell & co.) run: the op names the tracer sees
    "rnn_tanh": _BY_HAND, "rnn_relu": _BY_HAND, "lstm": _BY_HAND, "gru": _BY_HAND,
    "rnn_tanh_cell": "compute tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) yourself",
    "rnn_relu_cell": "compute tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) yourself",
    "lstm_cell": "compute the four gates from x W_ihᵀ + b_ih + h W_hhᵀ + b_hh yourself",
    "gru_cell": _STEP,
}


def _linear(x, w, b=None):
    """x wᵀ (+ b): the affine map of the recurrent formulas."""
    out = x @ w.T
    return out if b is None else out + b


def _pre(x, h, w_ih, w_hh, b_ih, b_hh):
    """x W_ihᵀ + b_ih + h W_hhᵀ + b_hh, the biases left out where None."""
    return _linear(x, w_ih, b_ih) + _linear(h, w_hh, b_hh)


def _bias_words(b_ih, b_hh) -> str:
    if b_ih is None and b_hh is None:
        return ", biases None"
    if b_ih is None or b_hh is None:
        return f", {'b_ih' if b_ih is None else 'b_hh'} None"
    return ""


def _diagnose(got: torch.Tensor, expected: torch.Tensor, candidates, rtol: float = 1e-5, atol: float = 1e-6):
    """The message of the first (message, make) candidate that reproduces `got` and differs from the answer on
    these inputs (a candidate that cannot be computed for them is passed over)."""
    usable = []
    for message, make in candidates:
        try:
            value = make()
        except Exception:
            continue
        if value.shape == expected.shape and not torch.allclose(value.double(), expected.double(), rtol=1e-7,
                                                                atol=1e-9):
            usable.append((message, lambda v=value: v))
    return known_mistake(got, usable, rtol=rtol, atol=atol)


def _no_float64_on_mps(device: str, dtype: torch.dtype) -> None:
    if device == "mps" and dtype == torch.float64:
        raise Inconclusive("mps has no float64")


_NONE_ADVICE = "a bias may be None: add each bias only when it is given (if b_ih is not None: ...)"


_IN_PLACE_ADVICE = ("an in-place op changed a tensor autograd needs (h, or a step's result: x.tanh_(), h[:] = ..., "
                    "out[:, t] = ... then read back) — compute new tensors: h = torch.tanh(...)")


def _none_bias(message: str) -> str | None:
    """t.compare's `advise`: the learner's code used a bias that was None as a tensor, or wrote in place into a
    tensor that autograd needs."""
    if "modified by an inplace operation" in message:
        return _IN_PLACE_ADVICE
    return _NONE_ADVICE if "NoneType" in message else None


# ============================================================================================================
# rnn_cell
# ============================================================================================================
def _rnn_cell_mistakes(x, h, w_ih, w_hh, b_ih, b_hh) -> list:
    pre = _pre(x, h, w_ih, w_hh, b_ih, b_hh)
    zero = torch.zeros(())
    bi, bh = (zero if b_ih is None else b_ih), (zero if b_hh is None else b_hh)
    return [
        ("W_ih and W_hh are swapped — x goes through W_ih (hidden, input) and h through W_hh (hidden, hidden): "
         "x @ W_ih.T + h @ W_hh.T", lambda: torch.tanh(_pre(x, h, w_hh, w_ih, b_ih, b_hh))),
        ("the weights are not transposed — W_ih is (hidden, input), so it is x @ W_ih.T (and h @ W_hh.T)",
         lambda: torch.tanh(x @ w_ih + h @ w_hh + bi + bh)),
        ("sigmoid instead of tanh — the new hidden state is tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)",
         lambda: torch.sigmoid(pre)),
        ("relu instead of tanh — nn.RNNCell's default nonlinearity is tanh", lambda: torch.relu(pre)),
        ("tanh is missing — the new hidden state is tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)", lambda: pre),
        ("a bias is added twice — add b_ih once and b_hh once", lambda: torch.tanh(pre + bi)),
        ("a bias is added twice — add b_ih once and b_hh once", lambda: torch.tanh(pre + bh)),
        ("both biases are added twice — add b_ih once and b_hh once", lambda: torch.tanh(pre + bi + bh)),
        ("b_hh is missing — nn.RNNCell adds both biases, b_ih and b_hh", lambda: torch.tanh(pre - bh)),
        ("b_ih is missing — nn.RNNCell adds both biases, b_ih and b_hh", lambda: torch.tanh(pre - bi)),
        ("h is ignored — the previous hidden state enters through h @ W_hh.T",
         lambda: torch.tanh(_linear(x, w_ih, b_ih) + bh)),
        ("x is ignored — the input enters through x @ W_ih.T", lambda: torch.tanh(_linear(h, w_hh, b_hh) + bi)),
        ("the result is added to h — an RNN cell replaces h: h' = tanh(...), with no h + ...",
         lambda: h + torch.tanh(pre)),
    ]


_OVERFLOW = ("exp overflows for large inputs (a tanh or sigmoid written with exp gives inf / inf = nan): use "
             "torch.tanh and torch.sigmoid, which stay finite")


def _explain_rnn_cell(got, expected, args):
    if got.is_floating_point() and bool((got.isnan() & ~expected.isnan()).any()):
        return _OVERFLOW
    return _diagnose(got, expected, _rnn_cell_mistakes(*args))


def _rnn_cell_ref(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    return torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)


@exercise(LESSON, points=1, difficulty=1, minutes=10, hints=[
    "One step of a plain RNN: the new hidden state mixes the input x and the previous state h through two "
    "weight matrices, adds the biases, and squashes the sum with tanh.",
    "W_ih is (hidden, input) and W_hh is (hidden, hidden), like nn.RNNCell's weight_ih and weight_hh: "
    "x @ W_ih.T gives (B, hidden), and so does h @ W_hh.T.",
    "pre = x @ W_ih.T + h @ W_hh.T; add b_ih if it is not None and b_hh if it is not None; return torch.tanh(pre).",
], forbidden=FORBIDDEN)
def rnn_cell(t, fn):
    b1, i1, h1 = t.unseen(3, 5, 9), t.unseen(5, 6, 10), t.unseen(4, 11, 16)
    h2 = t.unseen(6, 7, 12)  # input size == hidden size: swapped W_ih / W_hh only show in the values
    cases = [(b1, i1, h1, True, True, 1.0, torch.float64), (4, h2, h2, True, True, 1.0, torch.float64),
             (2, 3, 3, False, False, 1.0, torch.float64), (1, 7, 2, True, False, 1.0, torch.float64),
             (5, 4, 6, False, True, 1.0, torch.float64), (3, 2, 5, True, True, 8.0, torch.float64),
             (2, 6, 6, True, True, 1.0, torch.float32), (3, 4, 5, True, True, 60.0, torch.float32)]
    for k, (b, i, hs, with_ih, with_hh, scale, dtype) in enumerate(cases):
        x, h = t.randn(b, i, dtype=dtype) * scale, t.randn(b, hs, dtype=dtype)
        w_ih, w_hh = t.randn(hs, i, dtype=dtype) * 0.5, t.randn(hs, hs, dtype=dtype) * 0.5
        b_ih = t.randn(hs, dtype=dtype) if with_ih else None
        b_hh = t.randn(hs, dtype=dtype) if with_hh else None
        words = (f"x {shape_str(x.shape)}, h {shape_str(h.shape)}, W_ih {shape_str(w_ih.shape)}, W_hh "
                 f"{shape_str(w_hh.shape)}{_bias_words(b_ih, b_hh)}" + (", large x" if scale > 1 else "")
                 + (", float32" if dtype == torch.float32 else "") + ", with gradients")
        tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {}
        t.compare(words, fn, (x, h, w_ih, w_hh, b_ih, b_hh), _rnn_cell_ref, grad=True, explain=_explain_rnn_cell,
                  advise=_none_bias, device_check=k in (0, 2), **tol)


# ============================================================================================================
# lstm_cell
# ============================================================================================================


def cell_run(fn, args: tuple, upstreams: list | None = None) -> dict:
    """Driver: out = fn(*args); the kind of result and its tensors (a tuple's items, or the one tensor), the
    indices of tensor inputs it changed in place, and, given one upstream gradient per returned tensor, the
    gradients of sum(out_k * upstream_k) for every float tensor input (None when nothing tracks gradients)."""
    with untraced():
        inputs = [x for x in tree_leaves(args) if isinstance(x, torch.Tensor)]
        before = [x.detach().clone() for x in inputs]
        wrt = [x.requires_grad_(True) for x in inputs if x.is_floating_point()] if upstreams is not None else []
    out = fn(*args)
    with untraced():
        mutated = [i for i, (x, b) in enumerate(zip(inputs, before)) if not unchanged(x.detach(), b)]
        parts = list(out) if isinstance(out, (tuple, list)) else [out]
        tracks = upstreams is not None and len(parts) == len(upstreams) and all(
            isinstance(p, torch.Tensor) and p.shape == u.shape for p, u in zip(parts, upstreams)) \
            and any(p.requires_grad for p in parts)
        result = {"kind": kind_of(out), "outs": [p.detach() if type(p) is torch.Tensor else kind_of(p) for p in parts],
                  "mutated": mutated, "grads": None}
    if tracks:
        loss = sum((p * u).sum() for p, u in zip(parts, upstreams) if p.requires_grad)
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        with untraced():
            result["grads"] = [torch.zeros_like(x) if g is None else g.detach() for x, g in zip(wrt, grads)]
    return result


def _lstm(x, h, c, w_ih, w_hh, b_ih, b_hh, order="ifgo", gate=torch.sigmoid, cand=torch.tanh,
          cell="f*c+i*g", out="o*tanh(c')"):
    """One LSTM step, written out, with the knobs that give the usual mistakes (order: the gate each of the four
    row blocks is read as)."""
    blocks = dict(zip(order, _pre(x, h, w_ih, w_hh, b_ih, b_hh).chunk(4, dim=1)))
    i, f, g, o = gate(blocks["i"]), gate(blocks["f"]), cand(blocks["g"]), gate(blocks["o"])
    c2 = {"f*c+i*g": lambda: f * c + i * g, "f*tanh(c)+i*g": lambda: f * torch.tanh(c) + i * g,
          "f*c+g": lambda: f * c + g, "c+i*g": lambda: c + i * g}[cell]()
    h2 = {"o*tanh(c')": lambda: o * torch.tanh(c2), "o*c'": lambda: o * c2, "o*tanh(c)": lambda: o * torch.tanh(c),
          "tanh(c')": lambda: torch.tanh(c2)}[out]()
    return h2, c2


_GATE_ROWS = ("nn.LSTMCell's four row blocks of W_ih, W_hh and the biases are the gates i, f, g, o (input, forget, "
              "cell candidate, output): i, f, g, o = gates.chunk(4, dim=1)")


def _lstm_mistakes(x, h, c, w_ih, w_hh, b_ih, b_hh) -> list:
    """(message, (h', c') of the mistake) for the usual mistakes."""
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    zero = torch.zeros(())
    bi, bh = (zero if b_ih is None else b_ih), (zero if b_hh is None else b_hh)
    found = []
    for order in ("".join(p) for p in itertools.permutations("ifgo") if p != tuple("ifgo")):
        found.append((f"gates in the order {', '.join(order)} — {_GATE_ROWS}", {"order": order}))
    found += [
        ("the cell candidate g uses sigmoid — g uses tanh; only the gates i, f and o use sigmoid",
         {"cand": torch.sigmoid}),
        ("the gates i, f and o use tanh — they use sigmoid (values in 0..1); only the candidate g uses tanh",
         {"gate": torch.tanh}),
        ("c' = f * tanh(c) + i * g — the old cell state goes in as it is: c' = f * c + i * g",
         {"cell": "f*tanh(c)+i*g"}),
        ("h' = o * c' — tanh is missing: h' = o * tanh(c')", {"out": "o*c'"}),
        ("h' uses the old cell state — h' = o * tanh(c'), with the new c'", {"out": "o*tanh(c)"}),
        ("the output gate is missing — h' = o * tanh(c')", {"out": "tanh(c')"}),
        ("the input gate is missing — c' = f * c + i * g", {"cell": "f*c+g"}),
        ("the forget gate is missing — c' = f * c + i * g", {"cell": "c+i*g"}),
    ]
    mistakes = [(m, functools.partial(_lstm, *args, **kw)) for m, kw in found]
    mistakes += [
        ("W_ih and W_hh are swapped — x goes through W_ih (4·hidden, input) and h through W_hh (4·hidden, hidden)",
         lambda: _lstm(x, h, c, w_hh, w_ih, b_ih, b_hh)),
        ("a bias is added twice — add b_ih once and b_hh once", lambda: _lstm(x, h, c, w_ih, w_hh, 2 * bi, b_hh)),
        ("a bias is added twice — add b_ih once and b_hh once", lambda: _lstm(x, h, c, w_ih, w_hh, b_ih, 2 * bh)),
        ("b_hh is missing — nn.LSTMCell adds both biases, b_ih and b_hh",
         lambda: _lstm(x, h, c, w_ih, w_hh, b_ih, None)),
        ("b_ih is missing — nn.LSTMCell adds both biases, b_ih and b_hh",
         lambda: _lstm(x, h, c, w_ih, w_hh, None, b_hh)),
    ]
    return mistakes


def _explain_lstm(got_h, got_c, args) -> str | None:
    """Which known mistake gives both of the learner's (h', c')."""
    if bool(got_h.isnan().any() or got_c.isnan().any()):
        return _OVERFLOW
    for message, make in _lstm_mistakes(*args):
        try:
            h2, c2 = make()
        except Exception:
            continue
        if h2.shape == got_h.shape and c2.shape == got_c.shape and torch.allclose(got_h.double(), h2.double(),
                rtol=1e-5, atol=1e-6) and torch.allclose(got_c.double(), c2.double(), rtol=1e-5, atol=1e-6):
            return message
    return None


def _lstm_ref(x, state, w_ih, w_hh, b_ih, b_hh):
    return torch.lstm_cell(x, list(state), w_ih, w_hh, b_ih, b_hh)


def _expect_pair(run: dict, expected: tuple, device: str, tol: dict, explain=None, names=("h'", "c'"),
                 word="the tuple (h_new, c_new)", inputs=None) -> None:
    """A learner's (a, b) against the expected pair: kind, order, then each tensor; `explain(a, b)` may name the
    mistake behind wrong values; `inputs` names the tensor inputs in order."""
    if run["mutated"]:
        k = run["mutated"][0]
        what = inputs[k] if inputs and k < len(inputs) else f"input {k}"
        raise Mismatch(f"you changed {what} in place — compute new tensors instead "
                       "(h = h + ..., not h += ... or h.add_(...)): the caller still needs its inputs")
    kind, outs = run["kind"], run["outs"]
    if kind != "tuple":
        if kind == "Tensor":
            raise Mismatch(f"returned one tensor — return {word}")
        if kind == "list":
            raise Mismatch(f"returned a list — return a tuple: {word}")
        raise Mismatch(f"should return {word}, got {kind}" + (" — a missing `return`?" if kind == "None" else ""))
    if len(outs) != 2:
        raise Mismatch(f"returned a tuple of {len(outs)} items — return {word}")
    a, b = outs
    ea, eb = expected
    if all(isinstance(v, torch.Tensor) for v in (a, b)) and a.shape == eb.shape and b.shape == ea.shape \
            and a.dtype == eb.dtype and torch.allclose(a.cpu().double(), eb.double(), rtol=1e-5, atol=1e-6) \
            and torch.allclose(b.cpu().double(), ea.double(), rtol=1e-5, atol=1e-6) \
            and not torch.allclose(ea.double(), eb.double()):
        raise Mismatch(f"returned ({names[1]}, {names[0]}) — the order is ({names[0]}, {names[1]}), like torch's own")
    for got, want, name in ((a, ea, names[0]), (b, eb, names[1])):
        if isinstance(got, str):  # the type's name of something that is not a tensor
            raise Mismatch(f"{name} should be a torch.Tensor, got {got} — return {word}")
        try:
            expect_tensor(got, want, device=device, what=name, **tol)
        except Mismatch as e:
            better = None
            if explain and all(type(v) is torch.Tensor and v.shape == w.shape for v, w in zip((a, b), expected)):
                better = explain(a.cpu(), b.cpu())
            if better:
                raise Mismatch(f"{e.message}\n→ {better}", e.detail) from None
            raise


def _expect_grads(got: list | None, expected: list, names: list, device: str, tol: dict, advice: str) -> None:
    if got is None:
        raise Mismatch("the result does not track gradients — a .detach(), torch.no_grad(), .item() or a round trip "
                       "through numpy cut the graph")
    for g, e, name in zip(got, expected, names):
        try:
            expect_tensor(g, e, device=device, what=f"the gradient of {name}", **tol)
        except Mismatch as wrong:
            first = wrong.message.splitlines()[0]
            if bool((g.cpu().isnan() & ~e.isnan()).any()):
                raise Mismatch(f"{wrong.message}\n→ {_OVERFLOW}", wrong.detail) from None
            if " — " in first:
                raise
            raise Mismatch(f"{wrong.message}\n→ {advice}", wrong.detail) from None


def _float_inputs(args: tuple, names: list) -> list:
    """The names of the float tensors of args (flattened like tree_leaves), in order."""
    flat = []
    for value, name in zip(args, names):
        if isinstance(value, (tuple, list)):
            flat += [(v, f"{name}[{k}]") for k, v in enumerate(value)]
        else:
            flat.append((value, name))
    return [n for v, n in flat if isinstance(v, torch.Tensor) and v.is_floating_point()]


@exercise(LESSON, points=2, difficulty=2, minutes=20, hints=[
    "All four gates come from one affine map: gates = x @ W_ih.T + b_ih + h @ W_hh.T + b_hh, of shape "
    "(B, 4·hidden). Split it into four (B, hidden) blocks with gates.chunk(4, dim=1).",
    "The blocks are, in nn.LSTMCell's order, i, f, g, o: input gate, forget gate, cell candidate, output gate. "
    "i, f and o go through sigmoid, g through tanh.",
    "c_new = f * c + i * g; h_new = o * torch.tanh(c_new); return (h_new, c_new) — h first, like nn.LSTMCell. "
    "Add each bias only when it is not None.",
], forbidden=FORBIDDEN)
def lstm_cell(t, fn):
    b1, i1, h1 = t.unseen(3, 5, 9), t.unseen(5, 6, 10), t.unseen(4, 11, 16)
    h2 = t.unseen(4, 5, 9)
    cases = [(b1, i1, h1, True, True, torch.float64), (2, h2, h2, True, True, torch.float64),
             (1, 3, 6, False, False, torch.float64), (4, 6, 2, True, False, torch.float64),
             (3, 4, 3, True, True, torch.float32), (2, 4, 3, True, True, torch.float32)]
    names = ["x", "state", "W_ih", "W_hh", "b_ih", "b_hh"]
    for k, (b, i, hs, with_ih, with_hh, dtype) in enumerate(cases):
        scale = 80.0 if k == len(cases) - 1 else 1.0  # gates far into saturation: exp(-z) overflows in float32
        x, h, c = t.randn(b, i, dtype=dtype) * scale, t.randn(b, hs, dtype=dtype), t.randn(b, hs, dtype=dtype) * 2
        w_ih, w_hh = t.randn(4 * hs, i, dtype=dtype) * 0.6, t.randn(4 * hs, hs, dtype=dtype) * 0.6
        b_ih = t.randn(4 * hs, dtype=dtype) if with_ih else None
        b_hh = t.randn(4 * hs, dtype=dtype) if with_hh else None
        args = (x, (h, c), w_ih, w_hh, b_ih, b_hh)
        up = [t.randn(b, hs, dtype=dtype), t.randn(b, hs, dtype=dtype)]
        words = (f"x {shape_str(x.shape)}, state (h, c) of {shape_str(h.shape)}, W_ih {shape_str(w_ih.shape)}, W_hh "
                 f"{shape_str(w_hh.shape)}{_bias_words(b_ih, b_hh)}" + (", large x" if scale > 1 else "")
                 + (", float32" if dtype == torch.float32 else "") + ", with gradients")
        expected = _lstm_ref(*args)
        leaves = [v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) else v
                  for v in (x, h, c, w_ih, w_hh, b_ih, b_hh)]
        ref_out = _lstm_ref(leaves[0], (leaves[1], leaves[2]), *leaves[3:])
        wrt = [v for v in leaves if isinstance(v, torch.Tensor)]
        ref_grads = torch.autograd.grad(sum((o * u).sum() for o, u in zip(ref_out, up)), wrt)
        tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {}
        grad_tol = {"atol": 1e-4, "rtol": 1e-3} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-8}
        lstm_args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
        for device in t.devices:
            with t.case(f"{device}: {words}"):
                _no_float64_on_mps(device, dtype)
                moved = to_device(args, device)
                try:
                    run = t.call(cell_run, fn, moved, [u.to(device) for u in up])
                except LearnerError as e:
                    if not _none_bias(str(e)):
                        raise
                    raise LearnerError(f"{e}\n→ {_none_bias(str(e))}") from None
                _expect_pair(run, expected, device, tol, lambda a, b_: _explain_lstm(a, b_, lstm_args),
                             inputs=[w for w, v in zip(("x", "h (the state's first tensor)", "c (the state's second "
                                                        "tensor)", "W_ih", "W_hh", "b_ih", "b_hh"), lstm_args)
                                     if v is not None])
                _expect_grads(run["grads"], list(ref_grads), _float_inputs(args, names), device, grad_tol,
                              "build (h', c') from the inputs with torch operations and let autograd "
                              "differentiate them")
        if k in (0, 2) and "cuda" not in t.devices:
            t.device_check(words.removesuffix(", with gradients"), cell_run, (fn, args, None))


# ============================================================================================================
# RNN
# ============================================================================================================
RNN_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _registration(m) -> dict:
    with untraced():
        if not isinstance(m, nn.Module):
            return {"is_module": False, "type": type(m).__name__}
        return {"is_module": True,
                "params": [(n, tuple(p.shape)) for n, p in m.named_parameters()],
                "buffers": [(n, tuple(b.shape)) for n, b in m.named_buffers()],
                "state": {k: v.detach().cpu().clone() for k, v in m.state_dict().items()},
                "plain_tensors": sorted(k for k, v in vars(m).items() if isinstance(v, torch.Tensor))}


def rnn_build(cls, input_size: int, hidden_size: int) -> dict:
    """Driver: cls(input_size, hidden_size) and what it registered."""
    torch.default_generator.manual_seed(0)
    return _registration(cls(input_size, hidden_size))


def rnn_forward(cls, input_size: int, hidden_size: int, state: dict, x: torch.Tensor, h0, up_out=None,
                up_h=None) -> dict:
    """Driver: cls(I, H) moved to x's device and dtype, load_state_dict(state, strict=True), then forward(x) (or
    forward(x, h0)); given upstream gradients, backward of sum(output * up_out) + sum(h_n * up_h). Returns the
    kind of result, its tensors and the gradients of x, h0 and every parameter by name."""
    torch.default_generator.manual_seed(0)
    m = cls(input_size, hidden_size)
    with untraced():
        m.to(device=x.device, dtype=x.dtype)
        try:
            m.load_state_dict(state, strict=True)
        except RuntimeError as e:
            return {"load_error": one_line(e)}
        grad = up_out is not None
        x = x.detach().clone().requires_grad_(grad)
        h0 = None if h0 is None else h0.detach().clone().requires_grad_(grad)
        before = [v.detach().clone() for v in (x, h0) if v is not None]
    out = m(x) if h0 is None else m(x, h0)
    with untraced():
        parts = list(out) if isinstance(out, (tuple, list)) else [out]
        mutated = [i for i, (v, b) in enumerate(zip([v for v in (x, h0) if v is not None], before))
                   if not unchanged(v.detach(), b)]
        result = {"kind": kind_of(out), "outs": [p.detach() if type(p) is torch.Tensor else kind_of(p) for p in parts],
                  "mutated": mutated, "grads": None}
        tracks = grad and len(parts) == 2 and all(isinstance(p, torch.Tensor) for p in parts) \
            and parts[0].shape == up_out.shape and parts[1].shape == up_h.shape \
            and any(p.requires_grad for p in parts)
    if tracks:
        loss = sum((p * u).sum() for p, u in zip(parts, (up_out, up_h)) if p.requires_grad)
        loss.backward()
        with untraced():
            grads = {"x": x.grad, **({"h0": h0.grad} if h0 is not None else {}),
                     **{n: p.grad for n, p in m.named_parameters()}}
            result["grads"] = {k: None if g is None else g.detach().clone() for k, g in grads.items()}
    return result


def rnn_twice(cls, input_size: int, hidden_size: int, state: dict, x1: torch.Tensor, x2: torch.Tensor) -> dict:
    """Driver: one cls(I, H) loaded with `state`, forward(x1) and then forward(x2), both without h0; the second
    call's (output, h_n)."""
    m = cls(input_size, hidden_size)
    with untraced():
        m.to(dtype=x1.dtype)
        m.load_state_dict(state, strict=True)
    with torch.no_grad():
        m(x1)
        out = m(x2)
    with untraced():
        parts = list(out) if isinstance(out, (tuple, list)) else [out]
        return {"outs": [p.detach() if type(p) is torch.Tensor else kind_of(p) for p in parts]}


def _rnn_loop(x, h0, w_ih, w_hh, b_ih, b_hh, act=torch.tanh, time_dim=1):
    """A one-layer RNN written as a loop over time: (output, h_n) for x (B, T, I) (time_dim=0: read as (T, B, I))."""
    if time_dim == 0:
        x = x.transpose(0, 1)
    h = x.new_zeros(x.shape[0], w_hh.shape[0]) if h0 is None else h0[0]
    steps = []
    for t in range(x.shape[1]):
        h = act(_pre(x[:, t], h, w_ih, w_hh, b_ih, b_hh))
        steps.append(h)
    out = torch.stack(steps, dim=1)
    if time_dim == 0:
        out = out.transpose(0, 1)
    return out, h.unsqueeze(0)


def _rnn_mistakes(x, h0, state) -> list:
    """(message, (output, h_n) of the mistake) for the usual mistakes."""
    w_ih, w_hh, b_ih, b_hh = (state[n] for n in RNN_NAMES)
    loop = functools.partial(_rnn_loop, x, h0)
    found = [
        ("x was read as (T, B, I) — with batch_first=True x is (B, T, I): step along dim 1 (x[:, t]), and stack "
         "the steps along dim 1", lambda: loop(w_ih, w_hh, b_ih, b_hh, time_dim=0)),
        ("W_ih and W_hh are swapped — weight_ih_l0 multiplies x_t and weight_hh_l0 multiplies h",
         lambda: loop(w_hh, w_ih, b_ih, b_hh)),
        ("sigmoid instead of tanh — nn.RNN's nonlinearity is tanh", lambda: loop(w_ih, w_hh, b_ih, b_hh,
                                                                               act=torch.sigmoid)),
        ("relu instead of tanh — nn.RNN's default nonlinearity is tanh", lambda: loop(w_ih, w_hh, b_ih, b_hh,
                                                                                    act=torch.relu)),
        ("b_hh is missing — nn.RNN adds both biases, bias_ih_l0 and bias_hh_l0",
         lambda: loop(w_ih, w_hh, b_ih, None)),
        ("b_ih is missing — nn.RNN adds both biases, bias_ih_l0 and bias_hh_l0",
         lambda: loop(w_ih, w_hh, None, b_hh)),
        ("a bias is added twice — add bias_ih_l0 once and bias_hh_l0 once", lambda: loop(w_ih, w_hh, 2 * b_ih, b_hh)),
        ("a bias is added twice — add bias_ih_l0 once and bias_hh_l0 once", lambda: loop(w_ih, w_hh, b_ih, 2 * b_hh)),
    ]
    if h0 is not None:
        found.insert(0, ("h0 was ignored — when h0 is given, the first step starts from h0[0] instead of zeros",
                         lambda: _rnn_loop(x, None, w_ih, w_hh, b_ih, b_hh)))
    return found


def _explain_rnn(got_out, got_h, x, h0, state) -> str | None:
    for message, make in _rnn_mistakes(x, h0, state):
        try:
            out, h_n = make()
        except Exception:
            continue
        if out.shape == got_out.shape and torch.allclose(got_out.double(), out.double(), rtol=1e-5, atol=1e-6) \
                and (got_h is None or (h_n.shape == got_h.shape and torch.allclose(got_h.double(), h_n.double(),
                                                                                 rtol=1e-5, atol=1e-6))):
            return message
    return None


def _rnn_structure(info: dict, i: int, h: int) -> None:
    if not info["is_module"]:
        raise Mismatch(f"RNN(...) should make an nn.Module, got {info['type']} — class RNN(nn.Module) with "
                       "super().__init__() first in __init__")
    params = dict(info["params"])
    want = {"weight_ih_l0": (h, i), "weight_hh_l0": (h, h), "bias_ih_l0": (h,), "bias_hh_l0": (h,)}
    for name, shape in want.items():
        if name not in params:
            if name in dict(info["buffers"]):
                raise Mismatch(f"`{name}` is a buffer, not a parameter — wrap it in nn.Parameter so that the "
                               "optimizer trains it")
            if name in info["plain_tensors"]:
                raise Mismatch(f"`self.{name}` is a plain tensor, so it is not registered: parameters() and "
                               f"state_dict() miss it — self.{name} = nn.Parameter(...)")
            raise Mismatch(f"no parameter named `{name}` — found {sorted(params)}; use nn.RNN's names "
                           f"{', '.join(RNN_NAMES)} so that state_dicts load both ways")
        if params[name] != shape:
            advice = ""
            if name == "weight_ih_l0" and params[name] == (i, h):
                advice = " — like nn.Linear, nn.RNN stores (hidden_size, input_size) and computes x_t @ W.T"
            raise Mismatch(f"`{name}` should have shape {shape_str(shape)} for RNN({i}, {h}), got "
                           f"{shape_str(params[name])}{advice or ' — shaped like nn.RNN(input_size, hidden_size)'}")
    extra = sorted(set(info["state"]) - set(want))
    if extra:
        raise Mismatch(f"unexpected entries {extra} in state_dict — nn.RNN's has only {', '.join(RNN_NAMES)} "
                       "(an nn.Linear inside adds its own weight and bias: keep nn.Parameters instead)")


def _expect_rnn(run: dict, expected: tuple, device: str, x, h0, state, tol: dict) -> None:
    if "load_error" in run:
        raise Mismatch(f"your RNN could not load nn.RNN's state_dict: {run['load_error']}\n→ register exactly "
                       f"{', '.join(RNN_NAMES)}, shaped like nn.RNN's")
    if run["mutated"]:
        raise Mismatch("you changed x or h0 in place — compute new tensors instead: the caller still needs them")
    kind, outs = run["kind"], run["outs"]
    b, t_len = x.shape[:2]
    hs = expected[0].shape[-1]
    if kind not in ("tuple", "list") or len(outs) != 2:
        if kind == "Tensor":
            raise Mismatch(f"forward returned one tensor — return the tuple (output {shape_str((b, t_len, hs))}, "
                           f"h_n {shape_str((1, b, hs))}), like nn.RNN")
        raise Mismatch(f"forward should return the tuple (output, h_n), like nn.RNN, got {kind}"
                       + (f" of {len(outs)} items" if kind in ("tuple", "list") else "")
                       + (" — a missing `return`?" if kind == "None" else ""))
    if kind == "list":
        raise Mismatch("forward returned a list — return a tuple (output, h_n), like nn.RNN")
    out, h_n = outs
    for got, name in ((out, "output"), (h_n, "h_n")):
        if isinstance(got, str):
            raise Mismatch(f"{name} should be a torch.Tensor, got {got} — return (output, h_n)")
    if out.shape in ((b, hs), (b, 1, hs)) and t_len > 1:
        raise Mismatch(f"output has shape {shape_str(out.shape)}: the last step only — output holds the hidden "
                       f"state of every step, {shape_str((b, t_len, hs))}: torch.stack(steps, dim=1)")
    if out.shape == (t_len, b, hs) and t_len != b:
        raise Mismatch(f"output has shape {shape_str(out.shape)} — with batch_first=True it is (B, T, H) = "
                       f"{shape_str((b, t_len, hs))}: stack the steps along dim 1")
    if h_n.shape == (b, hs):
        raise Mismatch(f"h_n has shape {shape_str(h_n.shape)} — nn.RNN returns h_n as (num_layers, B, H) = "
                       f"{shape_str((1, b, hs))}, even for one layer: h.unsqueeze(0)")
    if h_n.shape == (b, 1, hs) and b != 1:
        raise Mismatch(f"h_n has shape {shape_str(h_n.shape)} — batch_first applies to x and output only: h_n "
                       f"stays (num_layers, B, H) = {shape_str((1, b, hs))}")
    for got, want, name in ((out, expected[0], "output"), (h_n, expected[1], "h_n")):
        try:
            expect_tensor(got, want, device=device, what=name, **tol)
        except Mismatch as e:
            better = None
            if isinstance(out, torch.Tensor) and out.shape == expected[0].shape:
                better = _explain_rnn(out.cpu(), h_n.cpu() if h_n.shape == expected[1].shape else None, x, h0,
                                      state)
                if better is None and name == "h_n" and h_n.shape == expected[1].shape and torch.allclose(
                        h_n.cpu().double(), expected[0][:, :1].transpose(0, 1).double(), rtol=1e-5, atol=1e-6):
                    better = "h_n is the first step's hidden state — h_n is the last step's: output[:, -1]"
            if better:
                raise Mismatch(f"{e.message}\n→ {better}", e.detail) from None
            raise


def _rnn_reference(state: dict, x, h0, up_out, up_h):
    """nn.RNN's (output, h_n) and the gradients of x, h0 and every parameter."""
    ref = nn.RNN(x.shape[-1], state["weight_hh_l0"].shape[0], batch_first=True).to(x.dtype)
    ref.load_state_dict(state)
    xr = x.clone().requires_grad_(True)
    hr = None if h0 is None else h0.clone().requires_grad_(True)
    out, h_n = ref(xr) if hr is None else ref(xr, hr)
    ((out * up_out).sum() + (h_n * up_h).sum()).backward()
    grads = {"x": xr.grad, **({"h0": hr.grad} if hr is not None else {}),
             **{n: p.grad for n, p in ref.named_parameters()}}
    return (out.detach(), h_n.detach()), grads


_SQUEEZE_H0 = "h = h0[0], not h0.squeeze(): with B = 1 or hidden_size = 1, squeeze() drops those dims too"


def _rnn_state(t, i: int, h: int, dtype=torch.float64) -> dict:
    return {"weight_ih_l0": t.randn(h, i, dtype=dtype) * 0.5, "weight_hh_l0": t.randn(h, h, dtype=dtype) * 0.5,
            "bias_ih_l0": t.randn(h, dtype=dtype) * 0.5, "bias_hh_l0": t.randn(h, dtype=dtype) * 0.5}


@exercise(LESSON, points=3, difficulty=2, minutes=30, hints=[
    "Register four nn.Parameters with nn.RNN's names and shapes: weight_ih_l0 (hidden, input), weight_hh_l0 "
    "(hidden, hidden), bias_ih_l0 and bias_hh_l0 (hidden,). Then state_dicts load both ways.",
    "forward: x is (B, T, I) (batch_first). Start from h = h0[0] when h0 is given, else zeros (B, H) on x's device "
    "and dtype; for t in range(T): h = tanh(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh), keeping every h.",
    "output = torch.stack(steps, dim=1) is (B, T, H); h_n = h.unsqueeze(0) is (1, B, H) — batch_first does not "
    "apply to h_n. Return (output, h_n).",
], forbidden=FORBIDDEN)
def RNN(t, cls):
    i, h = t.unseen(3, 6, 10), t.unseen(5, 11, 16)
    with t.case(f"RNN({i}, {h}) registers nn.RNN's parameters: weight_ih_l0 {shape_str((h, i))}, weight_hh_l0 "
                f"{shape_str((h, h))}, bias_ih_l0 and bias_hh_l0 {shape_str((h,))}"):
        info = t.call(rnn_build, cls, i, h)
        _rnn_structure(info, i, h)
    if not t.results[-1].passed:
        return  # nothing below makes sense without the right parameters
    with t.case(f"RNN({i}, {h}).state_dict() loads into nn.RNN({i}, {h}, batch_first=True), strict"):
        try:
            nn.RNN(i, h, batch_first=True).load_state_dict(info["state"], strict=True)
        except RuntimeError as e:
            raise Mismatch(f"nn.RNN.load_state_dict(your state_dict) failed: {one_line(e)}\n→ register exactly "
                           f"{', '.join(RNN_NAMES)}, shaped like nn.RNN's") from None

    e = t.unseen(4, 5, 9)  # input size == hidden size: swapped weights only show in the values
    cases = [(i, h, 2, 6, False, torch.float64), (i, h, 3, 4, True, torch.float64),
             (e, e, 2, 5, True, torch.float64), (e, e, 4, 3, False, torch.float64),
             (2, 3, 1, 1, False, torch.float64), (i, h, 3, 5, True, torch.float32),
             (2, 1, 1, 4, True, torch.float64), (3, 1, 3, 2, True, torch.float64)]  # hidden_size 1 (and B = 1)
    for k, (ci, ch, b, t_len, with_h0, dtype) in enumerate(cases):
        state = _rnn_state(t, ci, ch, dtype)
        x = t.randn(b, t_len, ci, dtype=dtype)
        h0 = t.randn(1, b, ch, dtype=dtype) if with_h0 else None
        up_out, up_h = t.randn(b, t_len, ch, dtype=dtype), t.randn(1, b, ch, dtype=dtype)
        expected, ref_grads = _rnn_reference(state, x, h0, up_out, up_h)
        tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-8}
        grad_tol = {"atol": 1e-4, "rtol": 1e-3} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-7}
        words = (f"nn.RNN({ci}, {ch}, batch_first=True)'s state_dict loaded into RNN({ci}, {ch}), strict; forward on x "
                 f"{shape_str(x.shape)}" + (f", h0 {shape_str(h0.shape)}" if with_h0 else ", no h0")
                 + (", float32" if dtype == torch.float32 else "") + ", with gradients")
        for device in t.devices:
            with t.case(f"{device}: {words}"):
                _no_float64_on_mps(device, dtype)
                try:
                    run = t.call(rnn_forward, cls, ci, ch, state, x.to(device),
                                 None if h0 is None else h0.to(device), up_out.to(device), up_h.to(device))
                    _expect_rnn(run, expected, device, x, h0, state, tol)
                except LearnerError as wrong:
                    if "modified by an inplace operation" in str(wrong):
                        raise LearnerError(f"{wrong}\n→ {_IN_PLACE_ADVICE}") from None
                    if with_h0 and (b == 1 or ch == 1) and "→" not in str(wrong):
                        raise LearnerError(f"{wrong}\n→ {_SQUEEZE_H0}") from None
                    raise
                except Mismatch as wrong:
                    if with_h0 and (b == 1 or ch == 1) and "→" not in str(wrong):
                        raise type(wrong)(f"{wrong}\n→ {_SQUEEZE_H0}") from None
                    raise
                if run["grads"] is None:
                    raise Mismatch("output and h_n do not track gradients — a .detach(), torch.no_grad() or "
                                   ".item() cut the graph")
                for name, want in ref_grads.items():
                    got = run["grads"].get(name)
                    if got is None:
                        raise Mismatch(f"no gradient reached `{name}` — is it used in forward?")
                    try:
                        expect_tensor(got, want, device=device, what=f"the gradient of {name}", **grad_tol)
                    except Mismatch as wrong:
                        raise Mismatch(f"{wrong.message}\n→ the graph is cut or changed somewhere: no .detach() on h "
                                       "or h_n (the gradient flows back through every step), no .data, no in-place "
                                       "writes into a preallocated output", wrong.detail) from None
        if k in (0, 1) and "cuda" not in t.devices:
            t.device_check(f"RNN({ci}, {ch}) forward on x {shape_str(x.shape)}"
                           + (" and h0" if with_h0 else " without h0"), rnn_forward,
                           (cls, ci, ch, state, x, h0))
    if not all(r.passed or r.skipped for r in t.results):
        return
    b, t_len = 3, 4
    state = _rnn_state(t, i, h)
    x1, x2 = t.randn(b, t_len, i), t.randn(b, t_len, i)
    with t.case(f"one RNN({i}, {h}) called twice without h0, on x1 and x2 {shape_str(x2.shape)}: the second call "
                "starts from zeros too"):
        run = t.call(rnn_twice, cls, i, h, state, x1, x2)
        (want_out, _), _ = _rnn_reference(state, x2, None, torch.zeros(b, t_len, h, dtype=x2.dtype),
                                          torch.zeros(1, b, h, dtype=x2.dtype))
        got = run["outs"][0]
        if not (isinstance(got, torch.Tensor) and got.shape == want_out.shape
                and torch.allclose(got.double(), want_out, rtol=1e-7, atol=1e-9)):
            raise Mismatch("the second call gave other values than a fresh start from zeros — without h0 every "
                           "forward starts from h = zeros: keep no hidden state on self between calls (the state "
                           "lives in a local variable of forward)")


# ============================================================================================================
# lengths on another device (without a GPU)
# ============================================================================================================
_READS_OUT = {"cpu", "tolist", "numpy", "item"}
_NUMBERS = {"__int__", "__float__", "__index__", "__bool__", "__len__"}
_DEVICE = (str, torch.device, torch.Tensor)


def _device_type(a) -> str:
    return a.device.type if isinstance(a, torch.Tensor) else torch.device(a).type


def _target(name: str, args: tuple, kwargs: dict) -> str | None:
    """The device type a call sends its result to, where it names one (device=..., .to(device or tensor))."""
    if kwargs.get("device") is not None:
        return _device_type(kwargs["device"])
    if name == "to":
        named = [a for a in args[1:] if isinstance(a, _DEVICE)]
        return _device_type(named[0]) if named else None
    return None


def _to_cpu(args: tuple, kwargs: dict, name: str) -> tuple[tuple, dict]:
    """The call's arguments with its target device (meta, the GPU's stand-in) made the CPU."""
    if kwargs.get("device") is not None:
        kwargs = {**kwargs, "device": "cpu"}
    if name == "to":
        args = (args[0], *("cpu" if isinstance(a, _DEVICE) else a for a in args[1:]))
    return args, kwargs


class LengthsElsewhere(TorchFunctionMode):
    """`lengths` on a GPU, played without one: the learner gets a meta tensor whose real values this mode keeps.

    Anything computed from it, or made on its device (device=lengths.device, .to(lengths.device)), stays "on the
    GPU": a meta tensor whose real values are kept too. Moving such a tensor to the CPU (.cpu(), .to(x.device),
    .tolist(), .item()) gives the real values, as a GPU would; an op that meets it with a CPU tensor of more than 0
    dims (gather, indexing a CPU tensor, pack_padded_sequence's C++ part) raises MixedDevices, as it would on a GPU.
    Correct code therefore runs exactly, on real values, and its results can be compared; code that forgets to
    move lengths fails the way it would with a GPU.
    """

    def __init__(self, real: torch.Tensor):
        super().__init__()
        self.real: dict[int, tuple] = {}  # id(meta tensor) -> (the meta tensor, its real value on the CPU)
        self.lengths = self._remember(real)

    def _remember(self, value: torch.Tensor) -> torch.Tensor:
        meta = torch.empty(value.shape, dtype=value.dtype, device="meta")
        self.real[id(meta)] = (meta, value)
        return meta

    def value_of(self, x):
        entry = self.real.get(id(x)) if isinstance(x, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is x else None

    def _on_gpu(self, out, source=None):
        """The results, as tensors on the GPU's stand-in (a copy where the call handed back its own input)."""
        return tree_map(lambda o: self._remember(o.clone() if o is source else o) if isinstance(o, torch.Tensor)
                        else o, out)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = canonical_name(func)
        target = _target(name, args, kwargs)
        leaves = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        if not any(self.value_of(a) is not None for a in leaves):
            if target != "meta":
                return func(*args, **kwargs)
            args, kwargs = _to_cpu(args, kwargs, name)  # made on, or moved to, the GPU
            return self._on_gpu(func(*args, **kwargs), args[0] if args else None)
        if getattr(func, "__name__", "") == "__get__":  # an attribute: x.device, x.shape, x.T
            value = func(*args, **kwargs)
            if not isinstance(value, torch.Tensor):
                return value  # what the tensor on the GPU says of itself (device, shape, dtype)
        cpu = [a for a in leaves if self.value_of(a) is None and a.device.type == "cpu" and a.ndim > 0]
        if cpu and name not in ("to", "copy", "type_as", "new_tensor"):
            raise MixedDevices(name, {"cpu", "cuda"})
        real_args, real_kwargs = tree_map(lambda a: a if self.value_of(a) is None else self.value_of(a),
                                          (args, kwargs))
        if target == "meta":
            real_args, real_kwargs = _to_cpu(real_args, real_kwargs, name)
        out = func(*real_args, **real_kwargs)
        if name in _READS_OUT or getattr(func, "__name__", "") in _NUMBERS or target == "cpu":
            return out
        return self._on_gpu(out, real_args[0] if real_args else None)


def _mixed_message(e: MixedDevices, fix: str) -> Mismatch:
    return Mismatch(f"`{e.name}` combines lengths on one device with a tensor on another: on a GPU this fails — "
                    f"{fix}")


# ============================================================================================================
# last_timestep
# ============================================================================================================
def _last_ref(outputs, lengths):
    """The plain loop: outputs[b, lengths[b] - 1] for every b."""
    rows = [outputs[b, int(n) - 1] for b, n in enumerate(lengths.tolist())]
    return torch.stack(rows) if rows else outputs.new_zeros(0, outputs.shape[-1])


def _explain_last(got, expected, args):
    outputs, lengths = args
    if bool((~got.isfinite() & expected.isfinite()).any()):
        return ("nan or inf from the padding — the padded positions may hold anything (inf, nan): select the last "
                "real step (indexing, gather, torch.where), do not multiply by a mask (0 * inf is nan)")
    b = torch.arange(len(lengths))
    return _diagnose(got, expected, [
        ("you took the last padded step, outputs[:, -1] — a shorter sequence ends earlier: take position "
         "lengths[b] - 1 of each sequence b", lambda: outputs[:, -1]),
        ("you took position lengths[b], one past the end — positions count from 0: the last real step of a "
         "sequence of length L is at L - 1", lambda: outputs[b, lengths]),
        ("you took the first step, outputs[:, 0] — take position lengths[b] - 1 of each sequence b",
         lambda: outputs[:, 0]),
        (_SWAPPED_AXES, lambda: outputs[lengths - 1, b]),
        ("the rows follow the lengths sorted — keep the batch order: row b is sequence b at lengths[b] - 1",
         lambda: outputs[b, lengths.sort(descending=True).values - 1]),
        ("the rows follow the lengths sorted — keep the batch order: row b is sequence b at lengths[b] - 1",
         lambda: outputs[b, lengths.sort().values - 1]),
        ("you took the mean over the real steps — take the output at the last real step, lengths[b] - 1",
         lambda: torch.stack([outputs[k, :n].mean(0) for k, n in enumerate(lengths.tolist())])),
    ])


def last_elsewhere(fn, outputs: torch.Tensor, lengths: torch.Tensor) -> dict:
    """Driver: fn(outputs, lengths) with `lengths` on a GPU played by LengthsElsewhere; where the result is
    ("lengths" when it stayed on the lengths' device) and its value."""
    mode = LengthsElsewhere(lengths)
    with mode:
        out = fn(outputs, mode.lengths)
    real = mode.value_of(out)
    if real is not None:
        return {"where": "lengths", "out": real.detach()}
    if type(out) is not torch.Tensor:
        return {"where": None, "out": kind_of(out)}
    return {"where": out.device.type, "out": out.detach()}


def last_ops(fn, outputs: torch.Tensor, lengths: torch.Tensor) -> int | None:
    """Driver: how many torch calls fn(outputs, lengths) makes (None outside the tracer)."""
    tracer = current()
    before = len(tracer.called) if tracer else 0
    fn(outputs, lengths)
    return None if tracer is None else len(tracer.called) - before


def _expect_last(got, expected, device: str, outputs, lengths) -> None:
    try:
        expect_tensor(got, expected, device=device)
    except Mismatch as e:
        better = None
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            better = _explain_last(got.cpu(), expected, (outputs, lengths))
        raise Mismatch(f"{e.message}\n→ {better or 'take position lengths[b] - 1 of each sequence b'}",
                       e.detail) from None


_LENGTHS_FIX = ("make the index on outputs' device: idx = lengths.to(outputs.device) - 1 (lengths may come on "
                "another device than outputs)")


_SQUEEZE = "squeeze(1), not squeeze(): with B = 1 or H = 1, squeeze() drops those dims too"


_SWAPPED_AXES = ("the batch and time axes are swapped — outputs is (B, T, H): the batch index comes first, "
                 "outputs[torch.arange(B), lengths - 1]")


def _past_the_end(message: str) -> str | None:
    """t.compare's `advise`: an index one past a sequence's end, or lengths used along the batch axis."""
    if "out of bounds for dimension 0" in message:
        return _SWAPPED_AXES
    return "positions count from 0: the last real step of a sequence of length L is at L - 1" \
        if "out of bounds" in message else None


def _lengths(t, b: int, t_len: int, full: bool = True) -> torch.Tensor:
    """Unsorted lengths in 1..t_len (one of them t_len when `full`, else all shorter), int64."""
    high = t_len + 1 if full else t_len
    lengths = t.randint(1, high, (b,))
    if b > 1:
        lengths[b // 2] = t_len if full else max(1, t_len - 1)
        lengths[-1] = 1
        if bool((lengths[:-1] >= lengths[1:]).all()):  # never sorted: a sort left out must show
            lengths = lengths.flip(0)
    elif full:
        lengths[0] = t_len
    return lengths


@exercise(LESSON, points=2, difficulty=2, minutes=15, hints=[
    "Sequence b ends at position lengths[b] - 1 (positions count from 0); everything after it is padding. "
    "outputs[:, -1] is padding for every shorter sequence.",
    "Pick one position per row with advanced indexing: outputs[torch.arange(B, device=outputs.device), idx], "
    "where idx = lengths.to(outputs.device) - 1 — lengths may arrive on another device than outputs.",
    "Or with gather: idx = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, H); "
    "outputs.gather(1, idx).squeeze(1) — squeeze(1), not squeeze(), so B = 1 or H = 1 keep their dims.",
], forbidden=FORBIDDEN)
def last_timestep(t, fn):
    b1, t1, h1 = t.unseen(4, 5, 9), t.unseen(6, 7, 12), t.unseen(3, 4, 8)
    cases = [(b1, t1, h1, True, torch.float64), (5, 7, 2, False, torch.float64), (1, 1, 1, True, torch.float64),
             (1, 4, 3, False, torch.float64), (6, 3, 1, True, torch.float32), (3, 5, 4, True, torch.float32)]
    for k, (b, t_len, h, full, dtype) in enumerate(cases):
        outputs, lengths = t.randn(b, t_len, h, dtype=dtype), _lengths(t, b, t_len, full)
        words = f"outputs {shape_str(outputs.shape)}, lengths {lengths.tolist()}, with gradients"
        if k == len(cases) - 1:  # the padding may hold anything: a mask multiply turns inf into nan (0 * inf)
            pad = torch.arange(t_len)[None, :] >= lengths[:, None]
            outputs[pad] = torch.tensor([float("inf"), float("nan"), -float("inf")], dtype=dtype).repeat(
                int(pad.sum()))[:int(pad.sum()), None]
            words = words.replace(", with", ", inf and nan in the padding, with")
        squeezed = tuple(n for n in (b, h) if n != 1)  # what squeeze() leaves of (B, H) when B = 1 or H = 1
        t.compare(words, fn, (outputs, lengths), _last_ref, grad=True, wrt=(0,), explain=_explain_last,
                  shape_mistakes=[(_SQUEEZE, squeezed)] if len(squeezed) < 2 else None, advise=_past_the_end,
                  device_check=k in (0, 3))

    if all(r.passed or r.skipped for r in t.results):
        with t.case("one indexing for the whole batch: as many torch calls for B = 2 as for B = 8"):
            few = t.call(last_ops, fn, t.randn(2, 5, 3), _lengths(t, 2, 5))
            many = t.call(last_ops, fn, t.randn(8, 5, 3), _lengths(t, 8, 5))
            if few is not None and many > few:
                raise Mismatch(f"{many} torch calls for a batch of 8 against {few} for a batch of 2: a Python loop "
                               "over the batch — pick every row at once: outputs[torch.arange(B, "
                               "device=outputs.device), lengths.to(outputs.device) - 1] (or gather)")

    b, t_len, h = t.unseen(5, 6, 10), 6, 3
    outputs, lengths = t.randn(b, t_len, h), _lengths(t, b, t_len)
    expected = _last_ref(outputs, lengths)
    words = f"outputs {shape_str(outputs.shape)}, lengths {lengths.tolist()}"
    if "cuda" in t.devices:
        for out_dev, len_dev in (("cuda", "cpu"), ("cpu", "cuda")):
            with t.case(f"outputs on {out_dev}, lengths on {len_dev}: {words}"):
                got = t.call(fn, outputs.to(out_dev), lengths.to(len_dev))
                _expect_last(got, expected, out_dev, outputs, lengths)
        return
    with t.case(f"device check: outputs on the meta device (a GPU's stand-in), lengths on the CPU: {words}"):
        try:
            got = t.call(fn, outputs.to("meta"), lengths.clone(), watch_devices=True)
        except MixedDevices as e:
            raise _mixed_message(e, _LENGTHS_FIX) from None
        except (LearnerError, Mismatch) as e:
            raise Inconclusive(f"could not run on the meta device: {e}") from None
        if not isinstance(got, torch.Tensor) or got.device.type != "meta":
            raise Mismatch("the result is not on outputs' device — index outputs itself, so the result stays where "
                           "outputs is")
    with t.case(f"outputs on the CPU, lengths on a GPU (played without one): {words}"):
        try:
            run = t.call(last_elsewhere, fn, outputs, lengths)
        except MixedDevices as e:
            raise _mixed_message(e, _LENGTHS_FIX) from None
        if run["where"] == "lengths":
            raise Mismatch("the result is on lengths' device, not on outputs' — index outputs with "
                           "lengths.to(outputs.device) - 1, so the result stays where outputs is")
        _expect_last(run["out"], expected, "cpu", outputs, lengths)


# ============================================================================================================
# NameClassifier
# ============================================================================================================
# How the check tells a trained recurrent model from the ways around training:
# - fresh weights: the model is made under torch.manual_seed(SEED) and, before any training, evaluated on the
#   held-out names: above FRESH_MAX_ACCURACY it was not fresh (weights loaded, or training done, in __init__).
# - a wrong architecture: before training, the logits of the held-out names must not change with extra padding
#   columns or with a batch padded only to its own longest name (taking the last padded step, or averaging over
#   the padding, changes them); nn.RNN / nn.LSTM / nn.GRU, their cells and the recurrent ops are refused by the
#   tracer; the output must be (B, num_classes) floats. No recurrence: a loop over the time steps makes more
#   torch calls for the 8 longest held-out names (each batch padded to its own longest) than for the 8 shortest;
#   a convolution or a bag of characters makes as many, and fails.
# - trained on the held-out split: the check trains the model itself, with its own loop, on the training names
#   only; the model never sees a label (forward gets x and lengths); its parameters may change only through the
#   optimizer (they are compared with their values after the previous step before every step); a fresh model
#   loaded (strict) with the trained state_dict must give the trained model's held-out logits (nothing learned,
#   or read, outside the parameters: a table that switches on later, a twin model in a plain list); and a model that
#   scores on the held-out names more than 0.05 above the training names, or above IMPLAUSIBLE_ACCURACY, has seen
#   the held-out names.
# The hidden round is skipped: training does not depend on hidden inputs, and one (slow) round is enough.

@functools.lru_cache(maxsize=1)
def names_data() -> dict:
    """The encoded split: x (N, T) int64 padded to the longest name of its split, lengths, labels, and sizes."""
    names, labels, classes = surnames()
    train, held_out = split_indices(len(names))
    vocab = vocabulary([names[i] for i in train])
    data = {"vocab_size": len(vocab) + 2, "num_classes": len(classes), "classes": classes}
    for part, idx in (("train", train), ("test", held_out)):
        x, lengths = encode([names[i] for i in idx], vocab)
        data[part] = (x, lengths, torch.tensor([labels[i] for i in idx], dtype=torch.int64))
    return data


def _logits(model, x, lengths):
    """model(x, lengths) detached on the CPU, or what went wrong as a string."""
    out = model(x, lengths)
    with untraced():
        if type(out) is not torch.Tensor:
            return f"a {kind_of(out)}"
        return out.detach().float().cpu()


def _ops(model, x, lengths) -> int | None:
    """How many torch calls the model makes for one forward (None outside the tracer)."""
    tracer = current()
    if tracer is None:
        return None
    before = len(tracer.called)
    model(x, lengths)
    return len(tracer.called) - before


def names_probe(cls, vocab_size: int, num_classes: int, x: torch.Tensor, lengths: torch.Tensor, extra: int,
                device: str) -> dict:
    """Driver: torch.manual_seed(SEED); cls(vocab_size, num_classes) on `device`, in eval mode without gradients:
    its logits for x (the held-out names), for x with `extra` more padding columns, and for the first 16 names
    padded only to their own longest; whether it is a Module and has parameters; how many torch calls a forward
    makes for the 8 shortest and for the 8 longest names (each batch padded to its own longest), with their
    lengths."""
    with untraced():
        torch.manual_seed(SEED)
    model = cls(vocab_size, num_classes)
    with untraced():
        if not isinstance(model, nn.Module):
            return {"type": kind_of(model)}
        n_params = sum(p.numel() for p in model.parameters())
        model.to(device)
        x, lengths = x.to(device), lengths.to(device)
        wider = torch.cat([x, x.new_full((x.shape[0], extra), PAD)], dim=1)
        k = min(16, len(x))
        short = x[:k, :int(lengths[:k].max())]
        order = lengths.argsort(stable=True)
        few, many = order[:8], order[-8:]
        t_few, t_many = int(lengths[few].max()), int(lengths[many].max())
        few, many = (x[few, :t_few], lengths[few]), (x[many, :t_many], lengths[many])
    model.eval()
    with torch.no_grad():
        out = {"type": "Module", "params": n_params, "logits": _logits(model, x, lengths)}
        out["wider"] = _logits(model, wider, lengths)
        out["short"] = _logits(model, short, lengths[:k])
        out["ops"] = (t_few, _ops(model, *few), t_many, _ops(model, *many))
    return out


def names_meta(cls, vocab_size: int, num_classes: int, x: torch.Tensor, lengths: torch.Tensor) -> dict:
    """Driver for the device check: the model moved to x's device (meta), one forward; where the logits are."""
    model = cls(vocab_size, num_classes)
    with untraced():
        model.to(x.device)
    model.eval()
    out = model(x, lengths)
    return {"device": out.device.type if isinstance(out, torch.Tensor) else None}


def _batches(n: int, epoch: int):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SEED + epoch))
    return [order[s:s + BATCH_SIZE] for s in range(0, n, BATCH_SIZE)]


def names_train(cls, vocab_size: int, num_classes: int, train: tuple, test: tuple, device: str,
                limit_s: float) -> dict:
    """Driver: the recipe above (torch.manual_seed(SEED), Adam(lr=LR), EPOCHS epochs of shuffled batches of
    BATCH_SIZE, cross-entropy, clip_grad_norm_(CLIP_NORM)) on the training names, stopping at `limit_s` seconds;
    then the logits of the held-out and of the training names in eval mode. Also whether the parameters ever
    changed between two optimizer steps (outside the optimizer)."""
    start = time.perf_counter()
    with untraced():
        torch.manual_seed(SEED)
    model = cls(vocab_size, num_classes)
    with untraced():
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=LR)
        x, lengths, y = (v.to(device) for v in train)
        guard = Guard(params, limit_s, start)
    for epoch in range(EPOCHS):
        model.train()
        for idx in _batches(len(x), epoch):
            with untraced():
                idx = idx.to(device)
                lb = lengths[idx]
                xb = x[idx, :int(lb.max())]
            logits = model(xb, lb)
            with untraced():
                loss = F.cross_entropy(logits, y[idx])
                optimizer.zero_grad()
            loss.backward()
            if not guard.step(optimizer, clip=CLIP_NORM):
                break
        if guard.stopped:
            break
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_logits = _logits(model, test[0].to(device), test[1].to(device))
        train_logits = _logits(model, x, lengths)
    reloaded, reload_error = None, None
    if not guard.stopped:
        reloaded, reload_error = reloaded_logits(lambda: cls(vocab_size, num_classes), model, device,
                                                 lambda twin: _logits(twin, test[0].to(device), test[1].to(device)))
    return {"seconds": seconds, "timed_out": guard.timed_out, "steps": guard.steps, "tampered": guard.tampered,
            "test": test_logits, "train": train_logits, "reloaded": reloaded, "reload_error": reload_error}


def _accuracy(logits, y) -> float:
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(y), int(logits.shape[-1])) or logits.ndim != 2:
        return 0.0
    return (logits.argmax(dim=1) == y).float().mean().item()


def _expect_logits(got, n: int, num_classes: int, what: str) -> None:
    if isinstance(got, str):
        raise Mismatch(f"forward(x, lengths) should return the logits, a tensor ({n}, {num_classes}), got {got} — "
                       "return only the logits")
    if got.shape != (n, num_classes):
        advice = ""
        if got.shape == (n,):
            advice = " — return the logits of every class, not the predicted class"
        elif got.ndim == 3:
            advice = " — one row per name: classify from the hidden state at each name's last real step"
        raise Mismatch(f"{what}: forward(x, lengths) should return logits of shape ({n}, {num_classes}), got "
                       f"{shape_str(got.shape)}{advice or ' — end with nn.Linear(hidden_size, num_classes)'}")
    if not torch.isfinite(got).all():
        raise Mismatch(f"{what}: the logits have nan or inf — an overflow in forward?")


@exercise(LESSON, points=3, difficulty=3, minutes=40, hints=[
    "nn.Embedding(vocab_size, E, padding_idx=0) turns the ids into vectors; then your own recurrence over the time "
    "steps (rnn_cell's formula with nn.Linear layers, or your RNN class); then nn.Linear(H, num_classes) on the "
    "hidden state at each name's last real step.",
    "The names in a batch have different lengths, and the padding after a name must not change its logits: run "
    "all T steps, keep every hidden state (B, T, H), and pick each name's state at lengths[b] - 1 (last_timestep), "
    "not the last padded step.",
    "About E = 32, H = 64 reaches the accuracy with the check's recipe (Adam, lr 5e-3, 6 epochs, batches of 64). "
    "Make every tensor on x's device (torch.zeros(B, H, device=x.device)), and do not train or load weights in "
    "__init__: the check trains the model itself.",
], budget_s=NAMES_TIME_BUDGET_S, time_limit_s=NAMES_TIME_LIMIT_S, forbidden=FORBIDDEN)
def NameClassifier(t, cls):
    if t.hidden:  # training is not about hidden inputs; one (slow) round is enough
        return
    data = names_data()
    vocab_size, num_classes = data["vocab_size"], data["num_classes"]
    x, lengths, y = data["test"]
    n = len(y)
    majority = torch.bincount(y).max().item() / n
    device = t.devices[-1] if "cuda" in t.devices else "cpu"
    for dev in t.devices:
        with t.case(f"{dev}: NameClassifier({vocab_size}, {num_classes}) gives (B, {num_classes}) logits for the "
                    f"{n} held-out names, the same with more padding or less"):
            probe = t.call(names_probe, cls, vocab_size, num_classes, x, lengths, 3, dev)
            if probe["type"] != "Module":
                raise Mismatch(f"NameClassifier(...) should make an nn.Module, got {probe['type']} — class "
                               "NameClassifier(nn.Module) with super().__init__() first")
            if probe["params"] == 0:
                raise Mismatch("the model has no parameters, so there is nothing to train — make the layers in "
                               "__init__ (nn.Embedding, nn.Linear, ...) as attributes of self")
            _expect_logits(probe["logits"], n, num_classes, f"x {shape_str(x.shape)}")
            for key, rows, words in (("wider", n, "3 more padding columns (0) after every name"),
                                     ("short", min(16, n), "the first 16 names padded only to their own longest")):
                got, want = probe[key], probe["logits"][:rows]
                _expect_logits(got, rows, num_classes, words)
                if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                    raise Mismatch(f"the logits change with the padding ({words}; largest change "
                                   f"{(got - want).abs().max().item():.3g}) — classify each name from its hidden "
                                   "state at its last real step, lengths[b] - 1 (last_timestep), not from the last "
                                   "padded step, and do not average over the padding")
            fresh = _accuracy(probe["logits"], y)
            if fresh > FRESH_MAX_ACCURACY:
                raise Mismatch(f"the model is accurate before any training ({fresh:.3f} on the held-out names) — "
                               "make fresh layers in __init__ and load or train nothing there: the check trains "
                               "the model itself")
            t_few, ops_few, t_many, ops_many = probe["ops"]
            if ops_few is not None and ops_many <= ops_few:
                raise Mismatch(f"forward makes no more torch calls ({ops_many}) for names of {t_many} characters "
                               f"than for names of up to {t_few} — there is no loop over the time steps: the "
                               "exercise asks for a recurrence written by hand (h = tanh(... h ...) at each step t), "
                               "not a convolution or a bag of characters")
    if not all(r.passed for r in t.results):
        return  # a model that is built wrong is not worth training
    if "cuda" not in t.devices:
        with t.case("device check: forward on the meta device (a GPU's stand-in)"):
            try:
                got = t.call(names_meta, cls, vocab_size, num_classes, x[:8].to("meta"), lengths[:8].to("meta"),
                             watch_devices=True)
            except MixedDevices as e:
                raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the model's device: on a GPU "
                               "this fails — make new tensors on x's device (torch.zeros(B, H, device=x.device), "
                               "torch.arange(B, device=x.device))") from None
            except (LearnerError, Mismatch) as e:
                raise Inconclusive(f"could not run on the meta device: {e}") from None
            if got["device"] != "meta":
                raise Mismatch("the logits are not on the model's device — create tensors with device=x.device")
        if not t.results[-1].passed and not t.results[-1].skipped:
            return
    limit = t.exercise.time_limit_s
    with t.case(f"{device}: trained by the check ({EPOCHS} epochs, Adam lr={LR:g}, batches of {BATCH_SIZE}) within "
                f"{NAMES_TIME_BUDGET_S} s (the check allows {limit:g} s), the held-out accuracy is at least "
                f"{MIN_ACCURACY} (always answering the majority class gets {majority:.3f})"):
        run = t.call(names_train, cls, vocab_size, num_classes, data["train"], data["test"], device, limit)
        if run["tampered"]:
            raise Mismatch(f"{TAMPERED} (no in-place writes to parameters; nn.Embedding(max_norm=...) rescales its "
                           "weight in place, so leave max_norm out)")
        if run["timed_out"]:
            raise Mismatch(f"training stopped after {run['seconds']:.0f} s ({run['steps']} steps of "
                           f"{EPOCHS * len(_batches(len(data['train'][2]), 0))}), over the limit — a smaller model "
                           "(E = 32, H = 64 is plenty), and no Python loop over the batch: loop over time only")
        _expect_logits(run["test"], n, num_classes, "after training, on the held-out names")
        expect_reload_agrees(run, "NameClassifier", run["test"], "on the held-out names")
        accuracy, train_accuracy = _accuracy(run["test"], y), _accuracy(run["train"], data["train"][2])
        if accuracy > IMPLAUSIBLE_ACCURACY:
            raise Mismatch(f"held-out accuracy {accuracy:.3f} — no model trained this way gets near that on names it "
                           "has not seen: the held-out names were seen; the model may only learn from the check's "
                           "training")
        if accuracy > train_accuracy + 0.05:
            raise Mismatch(f"held-out accuracy {accuracy:.3f} against {train_accuracy:.3f} on the training names — "
                           "the model has seen the held-out names: it may only learn from the check's training")
        if accuracy < MIN_ACCURACY:
            if accuracy <= majority + 0.02:
                advice = ("about what always answering the majority class gets: the model learns nothing — are "
                          "the gradients reaching every layer (no .detach(), no torch.no_grad() in forward)?")
            else:
                advice = ("a recurrent model reaches about 0.75 here: run your own recurrence over the characters "
                          "(a bag of characters stays near 0.68), with about E = 32, H = 64, and start each name "
                          "from h = zeros")
            raise Mismatch(f"held-out accuracy {accuracy:.3f} is below {MIN_ACCURACY} — {advice}",
                           f"training accuracy {train_accuracy:.3f}, {run['seconds']:.1f} s")


# ============================================================================================================
# packed_last_hidden
# ============================================================================================================
_MODULES = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}


def _make_rnn(kind: str, num_layers: int, state: dict, device, dtype) -> nn.Module:
    i, h = state["weight_ih_l0"].shape[1], state["weight_hh_l0"].shape[1]
    # made on meta, then given empty CPU storage: no random initialisation to pay for, the weights come from `state`
    rnn = _MODULES[kind](i, h, num_layers=num_layers, batch_first=True, dtype=dtype, device="meta").to_empty(
        device="cpu")
    rnn.load_state_dict(state)
    return rnn.to(device)


def packed_run(fn, kind: str, num_layers: int, state: dict, padded: torch.Tensor, lengths: torch.Tensor,
               upstream=None, lengths_elsewhere: bool = False) -> dict:
    """Driver: the check's own nn.RNN / nn.GRU / nn.LSTM (batch_first=True, weights `state`) on padded's device
    and dtype; out = fn(rnn, padded, lengths) (lengths on a GPU played by LengthsElsewhere, if asked); given an
    upstream gradient, backward of sum(out * upstream). Returns out, whether it changed its inputs or the
    module's weights, and the gradients of every parameter. (The tracer's device watch lets torch's packed-sequence
    ops take CPU lengths beside the module's device: grader.tracing.PACKED_OPS.)"""
    with untraced():
        rnn = _make_rnn(kind, num_layers, state, padded.device, padded.dtype)
        weights = {n: p.detach().clone() for n, p in rnn.named_parameters()}
        padded = padded.detach().clone()
        before = padded.clone(), lengths.clone()
    elsewhere = LengthsElsewhere(lengths) if lengths_elsewhere else None
    tracer = current()
    first = len(tracer.called) if tracer else 0
    if elsewhere is None:
        out = fn(rnn, padded, lengths)
    else:
        with elsewhere:
            out = fn(rnn, padded, elsewhere.lengths)
    packed = tracer is None or "pack_padded_sequence" in tracer.called[first:]
    with untraced():
        result = {"kind": kind_of(out), "out": out.detach() if type(out) is torch.Tensor else None,
                  "where": "lengths" if elsewhere and elsewhere.value_of(out) is not None else None,
                  "mutated": not unchanged(padded, before[0]) or (lengths.device.type != "meta" and not
                                                                    unchanged(lengths, before[1])),
                  "weights_changed": any(not torch.equal(p.detach(), weights[n]) for n, p in rnn.named_parameters()
                                         if p.device.type != "meta"),
                  "tracks": type(out) is torch.Tensor and out.requires_grad, "grads": None, "packed": packed}
        if result["where"] == "lengths":
            result["out"] = elsewhere.value_of(out).detach()
        go = upstream is not None and result["tracks"] and out.shape == upstream.shape
    if go:
        (out * upstream).sum().backward()
        with untraced():
            result["grads"] = {n: None if p.grad is None else p.grad.detach().clone()
                               for n, p in rnn.named_parameters()}
    return result


def _final_states(rnn: nn.Module, padded, lengths) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sequence run alone, without its padding: (h_n, c_n or None), each (num_layers, B, H)."""
    hs, cs = [], []
    for b, n in enumerate(lengths.tolist()):
        _, state = rnn(padded[b:b + 1, :n])
        h, c = state if isinstance(state, tuple) else (state, None)
        hs.append(h)
        cs.append(c)
    return torch.cat(hs, dim=1), (torch.cat(cs, dim=1) if cs[0] is not None else None)


def _packed_reference(kind, num_layers, state, padded, lengths, upstream):
    """The expected result (the last layer's h of each sequence run alone), the parameters' gradients, and what
    the usual mistakes would give."""
    rnn = _make_rnn(kind, num_layers, state, "cpu", padded.dtype)
    h_n, c_n = _final_states(rnn, padded, lengths)
    expected = h_n[-1]
    (expected * upstream).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in rnn.named_parameters()}
    expected = expected.detach()
    h_n, c_n = h_n.detach(), None if c_n is None else c_n.detach()
    # what the usual mistakes give: computed only when a result is wrong (see _expect_packed)
    mistakes = []
    if c_n is not None:
        mistakes.append(("that is c, the cell state — nn.LSTM returns (output, (h_n, c_n)): take h_n[-1]",
                         lambda: c_n[-1]))
    if num_layers > 1:
        mistakes.append(("that is the first layer's final state — h_n[-1] is the last layer's (h_n is "
                         "(num_layers, B, H))", lambda: h_n[0]))
        if c_n is not None:
            mistakes.append(("that is c of the first layer — take h_n[-1], the last layer's h",
                             lambda: c_n[0]))

    def unpacked():
        _, s = rnn(padded)
        return (s[0] if isinstance(s, tuple) else s)[-1]

    def padded_output_packed():  # pad_packed_sequence's output: zeros after each sequence's end
        return torch.where((lengths == padded.shape[1])[:, None], expected, torch.zeros_like(expected))

    def sorted_rows():
        return expected[lengths.argsort(descending=True, stable=True)]

    def time_major():
        packed = nn.utils.rnn.pack_padded_sequence(padded, lengths, enforce_sorted=False)
        _, s = rnn(packed)
        return (s[0] if isinstance(s, tuple) else s)[-1]

    mistakes += [
        ("padding entered the recurrence: the shorter sequences ran on through their padding — pack first: "
         "pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False) (the padded "
         "output's last step, or h_n of the padded batch, ran through the padding)", unpacked),
        ("that is the last step of pad_packed_sequence's output, zeros for every shorter sequence — take the "
         "final hidden state h_n[-1], which each sequence reaches at its own length", padded_output_packed),
        ("the rows are in the order of decreasing length — with enforce_sorted=False PyTorch returns h_n in "
         "input order; if you sort yourself, put the rows back with the inverse permutation", sorted_rows),
        ("batch_first=True is missing in pack_padded_sequence — padded is (B, T, I)", time_major),
    ]
    return expected, grads, mistakes


def _expect_packed(run: dict, expected: torch.Tensor, mistakes: list, device: str, num_layers: int, tol: dict):
    kind, out = run["kind"], run["out"]
    b, h = expected.shape
    if kind in ("tuple", "list"):
        raise Mismatch(f"returned a {kind} — return one tensor, the last layer's final h of each sequence, "
                       f"{shape_str((b, h))}: h_n[-1] (for an LSTM, h_n of (h_n, c_n))")
    if run["mutated"]:
        raise Mismatch("you changed padded or lengths in place — compute new tensors instead (lengths.cpu(), "
                       "not an in-place edit): the caller still needs them")
    if run["weights_changed"]:
        raise Mismatch("the module's weights changed — only run the module, do not train it or write into it")
    if out is not None and out.shape == (num_layers, b, h):
        raise Mismatch(f"returned all of h_n {shape_str(out.shape)} — take the last layer: h_n[-1] is "
                       f"{shape_str((b, h))}")
    if out is not None and out.shape == (b, 1, h) or out is not None and out.shape == (1, b, h):
        raise Mismatch(f"returned shape {shape_str(out.shape)} — take the last layer's row: h_n[-1] is "
                       f"{shape_str((b, h))}")
    if out is not None and b == 1 and out.shape == (h,):
        raise Mismatch(f"returned shape {shape_str(out.shape)} — h_n[-1] is (B, H) = {shape_str((b, h))} already: a "
                       "squeeze() dropped B = 1, leave it out")
    if run["where"] == "lengths":
        raise Mismatch("the result is on lengths' device, not on padded's — the module's results stay on its own "
                       "device: return h_n[-1] as it comes")
    if out is None:
        raise Mismatch(f"should return a tensor {shape_str((b, h))}, got {kind}"
                       + (" — a missing `return`?" if kind == "None" else " — return h_n[-1]"))
    try:
        expect_tensor(out, expected, device=device, **tol)
    except Mismatch as e:
        better = None
        if out is not None and out.shape == expected.shape:
            with torch.no_grad():
                better = _diagnose(out.cpu(), expected, mistakes)
        if better:
            raise Mismatch(f"{e.message}\n→ {better}", e.detail) from None
        raise
    if not run["packed"]:
        raise Mismatch("the result is right, but computed without pack_padded_sequence — the exercise asks for one "
                       "run of the module on the packed batch: pack_padded_sequence(padded, lengths.cpu(), "
                       "batch_first=True, enforce_sorted=False), then rnn(packed) (not one run per sequence)")


_PACKED_LENGTHS_FIX = "pack_padded_sequence wants lengths on the CPU: pass lengths.cpu()"


def _call_packed(t, fn, *args, **kwargs) -> dict:
    """t.call(packed_run, ...), with the check's reading of two errors torch raises."""
    try:
        return t.call(packed_run, fn, *args, **kwargs)
    except LearnerError as e:
        if "sorted in decreasing order" in str(e):
            raise Mismatch(f"{e}\n→ the lengths come in any order: pass enforce_sorted=False") from None
        if "CPU int64 tensor" in str(e):
            raise Mismatch(f"{e}\n→ {_PACKED_LENGTHS_FIX}") from None
        if "exceeds dimension size" in str(e):
            raise Mismatch(f"{e}\n→ batch_first=True is missing in pack_padded_sequence — padded is (B, T, I), "
                           "and without it dim 0 is read as time") from None
        raise
    except MixedDevices as e:
        raise _mixed_message(e, _PACKED_LENGTHS_FIX) from None


@exercise(LESSON, points=2, difficulty=2, minutes=20, hints=[
    "packed = nn.utils.rnn.pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False) "
    "— lengths must be on the CPU, and enforce_sorted=False lets the batch come in any order.",
    "Run the module on the packed batch: out, state = rnn(packed). For nn.RNN and nn.GRU state is h_n; for "
    "nn.LSTM it is the tuple (h_n, c_n). h_n is (num_layers, B, H), already back in the input's order.",
    "Return h_n[-1], the last layer (for an LSTM, h_n from the tuple, not c_n). No .detach() and no "
    "torch.no_grad(): the result must keep its graph so that a loss on it trains the module.",
])
def packed_last_hidden(t, fn):
    b1, t1 = t.unseen(5, 6, 9), t.unseen(6, 7, 10)
    cases = [("RNN", 1, b1, t1, 3, 4), ("GRU", 2, 4, 5, 2, 3), ("LSTM", 1, 4, 6, 3, 2), ("LSTM", 3, 5, 4, 2, 3),
             ("RNN", 2, 1, 3, 2, 2), ("GRU", 1, 3, 5, 4, 4)]
    for k, (kind, layers, b, t_len, i, h) in enumerate(cases):
        template = _MODULES[kind](i, h, num_layers=layers, batch_first=True)
        state = {n: t.randn(*p.shape) * 0.6 for n, p in template.state_dict().items()}
        padded = t.randn(b, t_len, i)  # padding positions hold noise too: padding that enters shows
        lengths = _lengths(t, b, t_len, full=k != 1)
        upstream = t.randn(b, h)
        expected, ref_grads, mistakes = _packed_reference(kind, layers, state, padded, lengths, upstream)
        words = (f"nn.{kind}({i}, {h}, num_layers={layers}, batch_first=True), padded {shape_str(padded.shape)}, "
                 f"lengths {lengths.tolist()}")
        for device in t.devices:
            with t.case(f"{device}: {words}, with gradients"):
                _no_float64_on_mps(device, padded.dtype)
                run = _call_packed(t, fn, kind, layers, state, padded.to(device), lengths, upstream.to(device))
                _expect_packed(run, expected, mistakes, device, layers, {"atol": 1e-9, "rtol": 1e-7})
                if run["grads"] is None:
                    raise Mismatch("the result is not attached to the graph, so a loss on it cannot train the "
                                   "module — no .detach() and no torch.no_grad()")
                for name, want in ref_grads.items():
                    expect_tensor(run["grads"][name], want.to(device), device=device, atol=1e-8, rtol=1e-6,
                                  what=f"the gradient of the module's {name}")
        if "cuda" in t.devices and k in (0, 2):
            with t.case(f"cuda: {words}, lengths on cuda too"):
                run = _call_packed(t, fn, kind, layers, state, padded.to("cuda"), lengths.to("cuda"))
                _expect_packed(run, expected, mistakes, "cuda", layers, {"atol": 1e-9, "rtol": 1e-7})
        if "cuda" not in t.devices and k == 0:  # (an LSTM on meta runs through slow decompositions)
            with t.case(f"device check: the module and padded on the meta device (a GPU's stand-in), lengths on "
                        f"the CPU: {words}"):
                try:
                    got = t.call(packed_run, fn, kind, layers, state, padded.to("meta"), lengths, watch_devices=True)
                except MixedDevices as e:
                    raise Mismatch(f"`{e.name}` combines a CPU tensor with a tensor on the module's device: on a "
                                   "GPU this fails — keep every tensor you make on padded.device (lengths.cpu() "
                                   "only for pack_padded_sequence)") from None
                except (LearnerError, Mismatch) as e:
                    raise Inconclusive(f"could not run on the meta device: {e}") from None
                if got["kind"] == "Tensor" and got["out"].device.type != "meta":
                    raise Mismatch("the result is not on the module's device — return h_n[-1] as it comes")
        if "cuda" not in t.devices and k in (0, 3):
            with t.case(f"the module and padded on the CPU, lengths on a GPU (played without one): {words}"):
                run = _call_packed(t, fn, kind, layers, state, padded, lengths, lengths_elsewhere=True)
                _expect_packed(run, expected, mistakes, "cpu", layers, {"atol": 1e-9, "rtol": 1e-7})
