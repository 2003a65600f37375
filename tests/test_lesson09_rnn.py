"""09_rnn: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from grader import evaluate, registry
from grader.data import datasets_dir
from verdicts import assert_passes, assert_rejects


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["rnn_cell", "lstm_cell", "RNN", "last_timestep", "NameClassifier",
                                  "packed_last_hidden"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


@pytest.mark.parametrize("name, right", [("rnn_cell", "rnn_cell_linear"), ("lstm_cell", "lstm_cell_chunk"),
                                         ("RNN", "RNNLoop"), ("last_timestep", "last_gather"),
                                         ("packed_last_hidden", "packed_right")])
def test_correct_answers_pass_the_hidden_round(name, right, monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(globals()[right], name=name)
    assert report.passed and any(c.hidden for c in report.cases), report.text()


def test_name_classifier_skips_the_hidden_round(monkeypatch):
    """Training does not depend on hidden inputs: the hidden round adds no case (and no second training)."""
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "5")
    report = evaluate(NamesLastPaddedStep, name="NameClassifier")
    assert report.status == "failed" and not any(c.hidden for c in report.cases)


def _plus(*terms):
    """The sum of the terms that are not None."""
    out = None
    for term in terms:
        if term is not None:
            out = term if out is None else out + term
    return out


# --- rnn_cell --------------------------------------------------------------------------------------------------
def rnn_cell_linear(x, h, W_ih, W_hh, b_ih, b_hh):
    """Written with F.linear, which takes a None bias itself."""
    return torch.tanh(F.linear(x, W_ih, b_ih) + F.linear(h, W_hh, b_hh))


def rnn_cell_einsum(x, h, W_ih, W_hh, b_ih, b_hh):
    pre = torch.einsum("bi,hi->bh", x, W_ih) + torch.einsum("bk,hk->bh", h, W_hh)
    return _plus(pre, b_ih, b_hh).tanh()


def rnn_cell_swapped(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(_plus(x @ W_hh.T, h @ W_ih.T, b_ih, b_hh))


def rnn_cell_bias_twice(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(_plus(F.linear(x, W_ih, b_ih) + F.linear(h, W_hh, b_hh), b_ih, b_hh))


def rnn_cell_sigmoid(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.sigmoid(_plus(x @ W_ih.T, h @ W_hh.T, b_ih, b_hh))


def rnn_cell_no_none(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


def rnn_cell_only_b_ih(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(_plus(x @ W_ih.T, h @ W_hh.T, b_ih))


def rnn_cell_torch(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.rnn_tanh_cell(x, h, W_ih, W_hh, b_ih, b_hh)


def rnn_cell_module(x, h, W_ih, W_hh, b_ih, b_hh):
    cell = nn.RNNCell(x.shape[1], h.shape[1]).to(x.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(W_ih)
        cell.weight_hh.copy_(W_hh)
    return cell(x, h)


def rnn_cell_exp_tanh(x, h, W_ih, W_hh, b_ih, b_hh):
    """tanh written with exp: inf / inf = nan once the pre-activation is large (float32: above about 44)."""
    e = torch.exp(2 * _plus(x @ W_ih.T, h @ W_hh.T, b_ih, b_hh))
    return (e - 1) / (e + 1)


def rnn_cell_into_h(x, h, W_ih, W_hh, b_ih, b_hh):
    """Also writes the new state into h, under no_grad: autograd needs the h it overwrote."""
    pre = _plus(x @ W_ih.T, h @ W_hh.T, b_ih, b_hh)
    with torch.no_grad():
        h.copy_(torch.tanh(pre))
    return torch.tanh(pre)


@pytest.mark.parametrize("right", [rnn_cell_linear, rnn_cell_einsum])
def test_rnn_cell_passes(right):
    assert_passes(right, "rnn_cell")


@pytest.mark.parametrize("wrong, fragments", [
    (rnn_cell_swapped, ("W_ih and W_hh are swapped",)),
    (rnn_cell_bias_twice, ("added twice",)),
    (rnn_cell_sigmoid, ("sigmoid instead of tanh",)),
    (rnn_cell_no_none, ("NoneType", "a bias may be None")),
    (rnn_cell_only_b_ih, ("b_hh is missing",)),
    (rnn_cell_torch, ("rnn_tanh_cell", "forbids")),
    (rnn_cell_module, ("torch.nn.RNNCell", "forbids")),
    (rnn_cell_into_h, ("modified by an inplace operation", "compute new tensors")),
    (rnn_cell_exp_tanh, ("large x", "has nan", "exp overflows", "torch.tanh")),
])
def test_rnn_cell_rejects(wrong, fragments):
    assert_rejects(wrong, "rnn_cell", *fragments)


# --- lstm_cell -------------------------------------------------------------------------------------------------
def _gates(x, h, W_ih, W_hh, b_ih, b_hh):
    return _plus(x @ W_ih.T, h @ W_hh.T, b_ih, b_hh)


def lstm_cell_split(x, state, W_ih, W_hh, b_ih, b_hh):
    """Each gate from its own row block of the weights."""
    h, c = state
    n = h.shape[1]
    rows = [slice(k * n, (k + 1) * n) for k in range(4)]
    i, f, g, o = (_plus(x @ W_ih[r].T, h @ W_hh[r].T, None if b_ih is None else b_ih[r],
                        None if b_hh is None else b_hh[r]) for r in rows)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def lstm_cell_chunk(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, g, o = _gates(x, h, W_ih, W_hh, b_ih, b_hh).chunk(4, dim=1)
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return (o.sigmoid() * c_new.tanh(), c_new)


def _lstm_with(order="ifgo", cell=None, out=None):
    def lstm(x, state, W_ih, W_hh, b_ih, b_hh):
        h, c = state
        blocks = dict(zip(order, _gates(x, h, W_ih, W_hh, b_ih, b_hh).chunk(4, dim=1)))
        i, f, g, o = (torch.sigmoid(blocks["i"]), torch.sigmoid(blocks["f"]), torch.tanh(blocks["g"]),
                      torch.sigmoid(blocks["o"]))
        c_new = cell(i, f, g, c) if cell else f * c + i * g
        return (out(o, c_new) if out else o * torch.tanh(c_new)), c_new
    return lstm


lstm_cell_igfo = _lstm_with("igfo")
lstm_cell_tanh_c = _lstm_with(cell=lambda i, f, g, c: f * torch.tanh(c) + i * g)
lstm_cell_no_tanh = _lstm_with(out=lambda o, c_new: o * c_new)


def lstm_cell_c_first(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = lstm_cell_chunk(x, state, W_ih, W_hh, b_ih, b_hh)
    return c, h


def lstm_cell_list(x, state, W_ih, W_hh, b_ih, b_hh):
    return list(lstm_cell_chunk(x, state, W_ih, W_hh, b_ih, b_hh))


def lstm_cell_no_none(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, g, o = (x @ W_ih.T + b_ih + h @ W_hh.T + b_hh).chunk(4, dim=1)
    c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
    return o.sigmoid() * c_new.tanh(), c_new


def lstm_cell_torch(x, state, W_ih, W_hh, b_ih, b_hh):
    return torch.lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh)


def lstm_cell_module(x, state, W_ih, W_hh, b_ih, b_hh):
    cell = nn.LSTMCell(x.shape[1], state[0].shape[1], bias=False).to(x.dtype)
    with torch.no_grad():
        cell.weight_ih.copy_(W_ih)
        cell.weight_hh.copy_(W_hh)
    return cell(x, state)


def lstm_cell_exp_sigmoid(x, state, W_ih, W_hh, b_ih, b_hh):
    """sigmoid as 1 / (1 + exp(-z)): right values, but its gradient is inf / inf = nan for very negative z."""
    h, c = state
    sig = lambda z: 1 / (1 + torch.exp(-z))  # noqa: E731
    i, f, g, o = _gates(x, h, W_ih, W_hh, b_ih, b_hh).chunk(4, dim=1)
    c_new = sig(f) * c + sig(i) * g.tanh()
    return sig(o) * c_new.tanh(), c_new


def lstm_cell_c_in_place(x, state, W_ih, W_hh, b_ih, b_hh):
    h, c = state
    i, f, g, o = _gates(x, h, W_ih, W_hh, b_ih, b_hh).chunk(4, dim=1)
    with torch.no_grad():
        c.mul_(f.sigmoid()).add_(i.sigmoid() * g.tanh())
    return o.sigmoid() * c.tanh(), c


@pytest.mark.parametrize("right", [lstm_cell_split, lstm_cell_chunk])
def test_lstm_cell_passes(right):
    assert_passes(right, "lstm_cell")


@pytest.mark.parametrize("wrong, fragments", [
    (lstm_cell_igfo, ("gates in the order i, g, f, o", "i, f, g, o")),
    (lstm_cell_c_first, ("returned (c', h')",)),
    (lstm_cell_tanh_c, ("f * tanh(c)",)),
    (lstm_cell_no_tanh, ("tanh is missing",)),
    (lstm_cell_list, ("a list", "tuple")),
    (lstm_cell_no_none, ("a bias may be None",)),
    (lstm_cell_torch, ("lstm_cell", "forbids")),
    (lstm_cell_module, ("torch.nn.LSTMCell", "forbids")),
    (lstm_cell_c_in_place, ("you changed c (the state's second tensor) in place",)),
    (lstm_cell_exp_sigmoid, ("large x", "the gradient of", "has nan", "exp overflows", "torch.sigmoid")),
])
def test_lstm_cell_rejects(wrong, fragments):
    assert_rejects(wrong, "lstm_cell", *fragments)


# --- RNN -------------------------------------------------------------------------------------------------------
class RNNLoop(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        k = hidden_size ** -0.5
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-k, k))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-k, k))
        self.bias_ih_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-k, k))
        self.bias_hh_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-k, k))

    def step(self, x_t, h):
        return torch.tanh(x_t @ self.weight_ih_l0.T + self.bias_ih_l0 + h @ self.weight_hh_l0.T + self.bias_hh_l0)

    def forward(self, x, h0=None):
        h = x.new_zeros(x.shape[0], self.weight_hh_l0.shape[0]) if h0 is None else h0[0]
        steps = []
        for t in range(x.shape[1]):
            h = self.step(x[:, t], h)
            steps.append(h)
        return torch.stack(steps, dim=1), h.unsqueeze(0)


class RNNProjected(nn.Module):
    """Written another way: the input projection of every step at once, then unbind over time."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        for name, shape in (("weight_ih_l0", (hidden_size, input_size)), ("weight_hh_l0", (hidden_size, hidden_size)),
                            ("bias_ih_l0", (hidden_size,)), ("bias_hh_l0", (hidden_size,))):
            self.register_parameter(name, nn.Parameter(torch.randn(shape) * 0.1))

    def forward(self, x, h0=None):
        projected = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, H)
        h = torch.zeros_like(projected[:, 0]) if h0 is None else h0.squeeze(0)
        outputs = []
        for p in projected.unbind(1):
            h = torch.tanh(p + F.linear(h, self.weight_hh_l0, self.bias_hh_l0))
            outputs.append(h)
        return torch.stack(outputs, 1), h[None]


class RNNTimeMajor(RNNLoop):
    """batch_first mishandled: x read as (T, B, I)."""

    def forward(self, x, h0=None):
        seq_len, batch = x.shape[0], x.shape[1]
        h = x.new_zeros(batch, self.weight_hh_l0.shape[0]) if h0 is None else h0[0]
        steps = []
        for t in range(seq_len):
            h = self.step(x[t], h)
            steps.append(h)
        return torch.stack(steps), h.unsqueeze(0)


class RNNFlatHidden(RNNLoop):
    def forward(self, x, h0=None):
        output, h_n = super().forward(x, h0)
        return output, h_n[0]


class RNNLastOnly(RNNLoop):
    def forward(self, x, h0=None):
        output, h_n = super().forward(x, h0)
        return output[:, -1], h_n


class RNNIgnoresH0(RNNLoop):
    def forward(self, x, h0=None):
        return super().forward(x)


class RNNBatchFirstHidden(RNNLoop):
    def forward(self, x, h0=None):
        output, h_n = super().forward(x, h0)
        return output, h_n.transpose(0, 1)


class RNNSwapped(RNNLoop):
    def step(self, x_t, h):
        return torch.tanh(x_t @ self.weight_hh_l0.T + self.bias_ih_l0 + h @ self.weight_ih_l0.T + self.bias_hh_l0)


class RNNOwnNames(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.W_ih = nn.Parameter(torch.randn(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.randn(hidden_size, hidden_size))
        self.b_ih = nn.Parameter(torch.zeros(hidden_size))
        self.b_hh = nn.Parameter(torch.zeros(hidden_size))


class RNNTransposed(RNNLoop):
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.weight_ih_l0 = nn.Parameter(torch.randn(input_size, hidden_size))


class RNNWrapsTorch(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)


class RNNCpuZeros(RNNLoop):
    def forward(self, x, h0=None):
        h = torch.zeros(x.shape[0], self.weight_hh_l0.shape[0], dtype=x.dtype) if h0 is None else h0[0]
        return super().forward(x, h.unsqueeze(0))


class RNNFloat32Zeros(RNNLoop):
    def forward(self, x, h0=None):
        h = torch.zeros(x.shape[0], self.weight_hh_l0.shape[0], device=x.device) if h0 is None else h0[0]
        return super().forward(x, h.unsqueeze(0))


class RNNStateful(RNNLoop):
    """Without h0, goes on from the state the previous call left."""

    def forward(self, x, h0=None):
        last = getattr(self, "last", None)
        if h0 is None and last is not None and last.shape == (x.shape[0], self.weight_hh_l0.shape[0]):
            h0 = last.unsqueeze(0)
        output, h_n = super().forward(x, h0)
        self.last = h_n[0].detach()
        return output, h_n


class RNNSqueezeH0(RNNLoop):
    """h0.squeeze(): fine until B = 1 and hidden_size = 1 leave a 0-dim h."""

    def forward(self, x, h0=None):
        return super().forward(x, None if h0 is None else h0.squeeze()[None])


@pytest.mark.parametrize("right", [RNNLoop, RNNProjected])
def test_rnn_passes(right):
    assert_passes(right, "RNN")


@pytest.mark.parametrize("wrong, fragments", [
    (RNNTimeMajor, ("read as (T, B, I)", "dim 1")),
    (RNNFlatHidden, ("h_n has shape", "unsqueeze(0)")),
    (RNNLastOnly, ("the last step only",)),
    (RNNIgnoresH0, ("h0 was ignored",)),
    (RNNBatchFirstHidden, ("batch_first applies to x and output only",)),
    (RNNSwapped, ("W_ih and W_hh are swapped",)),
    (RNNOwnNames, ("no parameter named `weight_ih_l0`",)),
    (RNNTransposed, ("(hidden_size, input_size)",)),
    (RNNWrapsTorch, ("torch.nn.RNN", "forbids")),
    (RNNCpuZeros, ("combines a cpu tensor", "device=x.device")),
    (RNNFloat32Zeros, ("dtypes were mixed",)),
    (RNNStateful, ("called twice", "second call", "keep no hidden state on self")),
    (RNNSqueezeH0, ("h0 (1, 1, 1)", "not h0.squeeze()")),
])
def test_rnn_rejects(wrong, fragments):
    assert_rejects(wrong, "RNN", *fragments)


# --- last_timestep ---------------------------------------------------------------------------------------------
def last_index(outputs, lengths):
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    return outputs[rows, lengths.to(outputs.device) - 1]


def last_gather(outputs, lengths):
    idx = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
    return outputs.gather(1, idx).squeeze(1)


def last_mask(outputs, lengths):
    """Written another way: a one-hot mask over time selects with torch.where, then a sum."""
    positions = torch.arange(outputs.shape[1], device=outputs.device)
    mask = positions[None, :] == (lengths.to(outputs.device) - 1)[:, None]  # (B, T)
    return torch.where(mask[:, :, None], outputs, 0.0).sum(dim=1)


def last_mask_on_lengths_device(outputs, lengths):
    """Built on lengths' device and moved over: right on a GPU too, and the check plays it exactly."""
    positions = torch.arange(outputs.shape[1], device=lengths.device)
    mask = (positions[None, :] == (lengths - 1)[:, None]).to(outputs.device)  # (B, T)
    return torch.where(mask[:, :, None], outputs, 0.0).sum(dim=1)


def last_padded_step(outputs, lengths):
    return outputs[:, -1]


def last_no_minus_one(outputs, lengths):
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths.to(outputs.device)]


def last_cpu_gather_index(outputs, lengths):
    idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
    return outputs.gather(1, idx).squeeze(1)


def last_cpu_tensor_index(outputs, lengths):
    idx = torch.tensor([n - 1 for n in lengths.tolist()])
    return outputs.gather(1, idx.view(-1, 1, 1).expand(-1, 1, outputs.shape[2])).squeeze(1)


def last_squeeze_all(outputs, lengths):
    idx = (lengths.to(outputs.device) - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
    return outputs.gather(1, idx).squeeze()


def last_on_lengths_device(outputs, lengths):
    moved = outputs.to(lengths.device)
    return moved[torch.arange(moved.shape[0], device=moved.device), lengths - 1]


def last_in_place(outputs, lengths):
    lengths -= 1
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths.to(outputs.device)]


def last_batch_loop(outputs, lengths):
    """Right values, with the Python loop over the batch that the exercise rules out."""
    return torch.stack([outputs[b, int(lengths[b]) - 1] for b in range(outputs.shape[0])])


def last_time_first(outputs, lengths):
    """Indexes as if outputs were (T, B, H)."""
    return outputs[lengths.to(outputs.device) - 1, torch.arange(outputs.shape[0], device=outputs.device)]


def last_one_hot_multiply(outputs, lengths):
    """A one-hot mask multiplied in: 0 * inf in the padding is nan."""
    mask = F.one_hot(lengths.to(outputs.device) - 1, outputs.shape[1]).to(outputs.dtype)  # (B, T)
    return (outputs * mask[..., None]).sum(1)


@pytest.mark.parametrize("right", [last_index, last_gather, last_mask, last_mask_on_lengths_device])
def test_last_timestep_passes(right):
    assert_passes(right, "last_timestep")


@pytest.mark.parametrize("wrong, fragments", [
    (last_padded_step, ("last padded step", "lengths[b] - 1")),
    (last_no_minus_one, ("positions count from 0",)),
    (last_cpu_gather_index, ("on a gpu this fails", "lengths.to(outputs.device)")),
    (last_cpu_tensor_index, ("on a gpu this fails", "lengths.to(outputs.device)")),
    (last_squeeze_all, ("squeeze(1), not squeeze()",)),
    (last_on_lengths_device, ("on lengths' device", "lengths.to(outputs.device)")),
    (last_in_place, ("in place",)),
    (last_time_first, ("batch and time axes are swapped",)),
    (last_batch_loop, ("a python loop over the batch", "torch.arange(b")),
    (last_one_hot_multiply, ("inf and nan in the padding", "nan or inf from the padding", "0 * inf")),
])
def test_last_timestep_rejects(wrong, fragments):
    assert_rejects(wrong, "last_timestep", *fragments)


def test_last_timestep_catches_an_index_left_on_the_cpu_beside_lengths_elsewhere():
    """outputs[torch.arange(B), lengths - 1] works while lengths and outputs share a device; with lengths on a GPU
    and outputs on the CPU, the index is on the GPU: the check plays that without a GPU."""
    def plain_index(outputs, lengths):
        return outputs[torch.arange(outputs.shape[0]), lengths - 1]
    assert_rejects(plain_index, "last_timestep", "lengths on a gpu", "getitem")


# --- packed_last_hidden ----------------------------------------------------------------------------------------
def _h(state):
    """h_n out of nn.RNN / nn.GRU's state, or nn.LSTM's (h_n, c_n)."""
    return state[0] if isinstance(state, tuple) else state


def packed_right(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    return _h(state)[-1]


def packed_sorted_and_restored(rnn, padded, lengths):
    """Written another way: sort by hand, pack sorted, and put the rows back with the inverse permutation."""
    sorted_lengths, order = lengths.cpu().sort(descending=True)
    packed = pack_padded_sequence(padded[order.to(padded.device)], sorted_lengths, batch_first=True)
    _, state = rnn(packed)
    return _h(state)[-1][order.argsort().to(padded.device)]


def packed_output_at_length(rnn, padded, lengths):
    """The packed output unpacked, read at each sequence's last step: the same values."""
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, out_lengths = pad_packed_sequence(out, batch_first=True)
    return out[torch.arange(len(out_lengths)), out_lengths - 1].to(padded.device)


def packed_enforce_sorted(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True)
    return _h(rnn(packed)[1])[-1]


def packed_sorted_not_restored(rnn, padded, lengths):
    sorted_lengths, order = lengths.cpu().sort(descending=True)
    packed = pack_padded_sequence(padded[order.to(padded.device)], sorted_lengths, batch_first=True)
    return _h(rnn(packed)[1])[-1]


def packed_padded_output_last(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=padded.shape[1])
    return out[:, -1]


def packed_cell_state(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    return (state[1] if isinstance(state, tuple) else state)[-1]


def packed_first_layer(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return _h(rnn(packed)[1])[0]


def packed_lengths_not_on_cpu(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    return _h(rnn(packed)[1])[-1]


def packed_detached(rnn, padded, lengths):
    with torch.no_grad():
        return packed_right(rnn, padded, lengths)


def packed_not_packed(rnn, padded, lengths):
    return _h(rnn(padded)[1])[-1]


def packed_all_layers(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return _h(rnn(packed)[1])


def packed_one_by_one(rnn, padded, lengths):
    """Right values without packing: each sequence run alone on its real steps."""
    return torch.stack([_h(rnn(padded[b:b + 1, :int(n)])[1])[-1, 0] for b, n in enumerate(lengths.tolist())])


def packed_time_first(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=False)
    return _h(rnn(packed)[1])[-1]


def packed_squeezed(rnn, padded, lengths):
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return _h(rnn(packed)[1])[-1].squeeze()


@pytest.mark.parametrize("right", [packed_right, packed_sorted_and_restored, packed_output_at_length])
def test_packed_last_hidden_passes(right):
    assert_passes(right, "packed_last_hidden")


@pytest.mark.parametrize("wrong, fragments", [
    (packed_enforce_sorted, ("enforce_sorted=False",)),
    (packed_sorted_not_restored, ("decreasing length", "inverse permutation")),
    (packed_padded_output_last, ("pad_packed_sequence's output",)),
    (packed_cell_state, ("c, the cell state", "h_n[-1]")),
    (packed_first_layer, ("first layer",)),
    (packed_lengths_not_on_cpu, ("on a gpu this fails", "lengths.cpu()")),
    (packed_detached, ("not attached to the graph",)),
    (packed_not_packed, ("padding entered the recurrence",)),
    (packed_all_layers, ("take the last layer",)),
    (packed_time_first, ("batch_first=True is missing",)),
    (packed_squeezed, ("a squeeze() dropped b = 1",)),
    (packed_one_by_one, ("without pack_padded_sequence", "enforce_sorted=False")),
])
def test_packed_last_hidden_rejects(wrong, fragments):
    assert_rejects(wrong, "packed_last_hidden", *fragments)


# --- NameClassifier --------------------------------------------------------------------------------------------
class NamesRNN(nn.Module):
    """A hand-written tanh RNN over the characters, read at each name's last real step."""

    def __init__(self, vocab_size, num_classes):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32, padding_idx=0)
        self.rnn = RNNLoop(32, 64)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x, lengths):
        outputs, _ = self.rnn(self.embed(x))  # (B, T, 64)
        return self.head(last_index(outputs, lengths))


class NamesLastPaddedStep(NamesRNN):
    def forward(self, x, lengths):
        outputs, h_n = self.rnn(self.embed(x))
        return self.head(h_n[0])


class NamesMeanOfEmbeddings(nn.Module):
    """No recurrence: the mean of the characters' embeddings, into one linear layer."""

    def __init__(self, vocab_size, num_classes):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32, padding_idx=0)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x, lengths):
        return self.head(self.embed(x).sum(dim=1) / lengths[:, None])


class NamesLookupTable(nn.Module):
    """Reads the shipped names in __init__ and answers from a table: accurate without any training."""

    def __init__(self, vocab_size, num_classes):
        super().__init__()
        from grader.checks.lesson09_rnn import names_data
        data = names_data()
        self.table = {tuple(row[:n].tolist()): int(label) for part in ("train", "test")
                      for row, n, label in zip(*data[part])}
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x, lengths):
        labels = [self.table.get(tuple(row[:n].tolist()), 0) for row, n in zip(x.cpu(), lengths.tolist())]
        return F.one_hot(torch.tensor(labels), len(self.bias)).float().to(x.device) * 10 + self.bias


@functools.cache
def _trained_state() -> dict:
    """A NamesRNN trained for two epochs on the training names, as a saved checkpoint would hold it."""
    from grader.checks.lesson09_rnn import names_data
    data = names_data()
    x, lengths, y = data["train"]
    torch.manual_seed(3)
    model = NamesRNN(data["vocab_size"], data["num_classes"])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(2):
        for idx in torch.randperm(len(y)).split(64):
            loss = F.cross_entropy(model(x[idx, :int(lengths[idx].max())], lengths[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class NamesPretrained(NamesRNN):
    """Loads trained weights in __init__ (as torch.load of a checkpoint would)."""

    def __init__(self, vocab_size, num_classes):
        super().__init__(vocab_size, num_classes)
        self.load_state_dict(_trained_state())


class NamesTrainsItself(NamesRNN):
    """Moves its own weights inside forward, outside the optimizer."""

    def forward(self, x, lengths):
        if self.training:
            with torch.no_grad():
                self.head.bias.add_(0.01)
        return super().forward(x, lengths)


class NamesTorchGRU(NamesRNN):
    def __init__(self, vocab_size, num_classes):
        super().__init__(vocab_size, num_classes)
        self.gru = nn.GRU(32, 64, batch_first=True)


class NamesCpuState(NamesRNN):
    def forward(self, x, lengths):
        e = self.embed(x)
        h = torch.zeros(x.shape[0], 64)
        steps = []
        for t in range(x.shape[1]):
            h = self.rnn.step(e[:, t], h)
            steps.append(h)
        return self.head(last_index(torch.stack(steps, 1), lengths))


class NamesEveryStep(NamesRNN):
    def forward(self, x, lengths):
        outputs, _ = self.rnn(self.embed(x))
        return self.head(outputs)


class NamesConv(nn.Module):
    """No recurrence: a convolution over the characters, max-pooled over each name's real positions."""

    def __init__(self, vocab_size, num_classes):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32, padding_idx=0)
        self.conv = nn.Conv1d(32, 64, 3, padding=1)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x, lengths):
        h = self.conv(self.embed(x).transpose(1, 2))  # (B, 64, T)
        real = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
        return self.head(h.masked_fill(~real[:, None], float("-inf")).amax(dim=2))


class NamesLookupAfterTraining(NamesRNN):
    """Honest while fresh and while training; afterwards, in eval mode, answers the shipped names from a table
    (held-out ones included) kept outside the parameters."""

    def __init__(self, vocab_size, num_classes):
        super().__init__(vocab_size, num_classes)
        self.table = NamesLookupTable(vocab_size, num_classes).table
        self.calls = 0

    def forward(self, x, lengths):
        logits = super().forward(x, lengths)
        self.calls += self.training
        if self.training or self.calls < 100:
            return logits
        rows = [self.table.get(tuple(row[:n].tolist())) for row, n in zip(x.cpu(), lengths.tolist())]
        return logits + 100 * torch.tensor([[k == r for k in range(logits.shape[1])] for r in rows],
                                           dtype=logits.dtype, device=x.device)


def names_function(vocab_size, num_classes):
    return torch.zeros(num_classes)


def test_name_classifier_passes():
    assert_passes(NamesRNN, "NameClassifier")


@pytest.mark.parametrize("wrong, fragments", [
    (NamesLastPaddedStep, ("the logits change with the padding", "lengths[b] - 1")),
    (NamesMeanOfEmbeddings, ("no loop over the time steps", "a recurrence written by hand")),
    (NamesConv, ("no loop over the time steps", "not a convolution")),
    (NamesLookupAfterTraining, ("a fresh nameclassifier loaded with the trained model's state_dict",
                                "other logits", "keep no tables")),
    (NamesLookupTable, ("accurate before any training",)),
    (NamesPretrained, ("accurate before any training",)),
    (NamesTrainsItself, ("changed between two optimizer steps",)),
    (NamesTorchGRU, ("torch.nn.GRU", "forbids")),
    (NamesCpuState, ("combines a cpu tensor", "device=x.device")),
    (NamesEveryStep, ("one row per name",)),
    (names_function, ("nn.Module",)),
])
def test_name_classifier_rejects(wrong, fragments):
    assert_rejects(wrong, "NameClassifier", *fragments)


def test_name_classifier_over_the_time_limit(monkeypatch):
    exercise = registry.get("NameClassifier")
    monkeypatch.setitem(registry._EXERCISES, exercise.name, dataclasses.replace(exercise, time_limit_s=0.0))
    assert_rejects(NamesRNN, "NameClassifier", "over the limit")


def test_name_classifier_data_follows_the_stated_rules():
    """The split and the vocabulary that the lesson reproduces: sorted classes, N // 5 held out, 0 <pad>, 1 <unk>."""
    from grader.checks import lesson09_rnn as lesson
    names, labels, classes = lesson.surnames()
    assert classes == tuple(sorted(p.stem for p in (datasets_dir() / "surnames").glob("*.txt")))
    train, held_out = lesson.split_indices(len(names))
    assert len(held_out) == len(names) // 5 and sorted(train + held_out) == list(range(len(names)))
    vocab = lesson.vocabulary([names[i] for i in train])
    assert min(vocab.values()) == 2 and list(vocab) == sorted(vocab)
    x, lengths = lesson.encode(["Ab", "Zzzq"], {"A": 2, "b": 3, "z": 4})
    assert x.tolist() == [[2, 3, 0, 0], [1, 4, 4, 1]] and lengths.tolist() == [2, 4]
    majority = max(labels.count(k) for k in range(len(classes))) / len(labels)
    assert majority + 0.2 < lesson.MIN_ACCURACY
