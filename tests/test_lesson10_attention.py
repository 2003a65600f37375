"""10_attention: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader import evaluate
from verdicts import assert_passes, assert_rejects


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["scaled_dot_product_attention", "MultiHeadAttention", "sinusoidal_positions",
                                  "layer_norm", "sample_next", "TinyGPT"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


@pytest.mark.parametrize("name, right", [("scaled_dot_product_attention", "sdpa_einsum"),
                                         ("MultiHeadAttention", "MHAEinsum"),
                                         ("sinusoidal_positions", "positions_loop"),
                                         ("layer_norm", "layer_norm_flatten"), ("sample_next", "sample_sort")])
def test_correct_answers_pass_the_hidden_round(name, right, monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(globals()[right], name=name)
    assert report.passed and any(c.hidden for c in report.cases), report.text()


# --- scaled_dot_product_attention -------------------------------------------------------------------------------
def _check_args(attn_mask, is_causal):
    if attn_mask is not None and is_causal:
        raise ValueError("attn_mask and is_causal are exclusive")


def sdpa_matmul(q, k, v, attn_mask=None, is_causal=False):
    _check_args(attn_mask, is_causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return scores.softmax(-1) @ v


def sdpa_einsum(q, k, v, attn_mask=None, is_causal=False):
    """A float bias built from the mask, einsum for the products."""
    _check_args(attn_mask, is_causal)
    L, S = q.shape[-2], k.shape[-2]
    bias = torch.zeros(L, S, dtype=q.dtype, device=q.device)
    if is_causal:
        bias = bias.masked_fill(torch.arange(S, device=q.device)[None] > torch.arange(L, device=q.device)[:, None],
                                -math.inf)
    elif attn_mask is not None:
        bias = torch.where(attn_mask, 0.0, -math.inf).to(q.dtype) if attn_mask.dtype == torch.bool else \
            attn_mask + bias
    scores = torch.einsum("...le,...se->...ls", q * q.shape[-1] ** -0.5, k) + bias
    return torch.einsum("...ls,...sv->...lv", torch.softmax(scores, dim=-1), v)


def sdpa_over_E(q, k, v, attn_mask=None, is_causal=False):
    _check_args(attn_mask, is_causal)
    out = sdpa_matmul(q * math.sqrt(q.shape[-1]) / q.shape[-1], k, v, attn_mask, is_causal)
    return out


def sdpa_unscaled(q, k, v, attn_mask=None, is_causal=False):
    return sdpa_matmul(q * math.sqrt(q.shape[-1]), k, v, attn_mask, is_causal)


def sdpa_inverted(q, k, v, attn_mask=None, is_causal=False):
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask
    return sdpa_matmul(q, k, v, attn_mask, is_causal)


def sdpa_upper(q, k, v, attn_mask=None, is_causal=False):
    _check_args(attn_mask, is_causal)
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).triu()
    return sdpa_matmul(q, k, v, attn_mask)


def sdpa_bottom_right(q, k, v, attn_mask=None, is_causal=False):
    _check_args(attn_mask, is_causal)
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(S - L)
    return sdpa_matmul(q, k, v, attn_mask)


def sdpa_cpu_mask(q, k, v, attn_mask=None, is_causal=False):
    _check_args(attn_mask, is_causal)
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    return sdpa_matmul(q, k, v, attn_mask)


def sdpa_no_error(q, k, v, attn_mask=None, is_causal=False):
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    return sdpa_matmul(q, k, v, attn_mask)


def sdpa_into_the_mask(q, k, v, attn_mask=None, is_causal=False):
    """Adds the scores into a float mask of their own shape, in place."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None and attn_mask.is_floating_point() and attn_mask.shape == scores.shape:
        return attn_mask.add_(scores).softmax(-1) @ v
    return sdpa_matmul(q, k, v, attn_mask, is_causal)


def sdpa_torch(q, k, v, attn_mask=None, is_causal=False):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)


@pytest.mark.parametrize("right", [sdpa_matmul, sdpa_einsum])
def test_sdpa_passes(right):
    assert_passes(right, "scaled_dot_product_attention")


@pytest.mark.parametrize("wrong, fragments", [
    (sdpa_over_E, ["1/E"]), (sdpa_unscaled, ["not scaled"]), (sdpa_inverted, ["inverted"]),
    (sdpa_upper, ["upper-triangular"]), (sdpa_bottom_right, ["bottom-right"]), (sdpa_cpu_mask, ["on a GPU"]),
    (sdpa_no_error, ["should raise ValueError"]), (sdpa_torch, ["forbids"]),
    (sdpa_into_the_mask, ["changed attn_mask in place"]),
])
def test_sdpa_rejects(wrong, fragments):
    assert_rejects(wrong, "scaled_dot_product_attention", *fragments)


# --- MultiHeadAttention -----------------------------------------------------------------------------------------
class MHAEinsum(nn.Module):
    """Parameters as nn.MultiheadAttention lays them out; heads through einsum."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("num_heads must divide embed_dim")
        self.h = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def split(self, x):
        B, T, E = x.shape
        return x.reshape(B, T, self.h, E // self.h)  # (B, T, H, hd)

    def heads(self, query, key, value, order=(0, 1, 2), transpose=True):
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        return [F.linear(x, w[i], b[i]) for x, i in zip((query, key, value), order)]

    def attend(self, q, k, v, key_padding_mask, attn_mask, need_weights, scale=None, kpm_true=True,
               am_true=True, average=True):
        q, k, v = self.split(q), self.split(k), self.split(v)
        scale = scale or 1 / math.sqrt(q.shape[-1])
        scores = torch.einsum("blhd,bshd->bhls", q, k) * scale
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask if am_true else ~attn_mask, -math.inf)
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            pad = key_padding_mask if kpm_true else ~key_padding_mask
            scores = scores.masked_fill(pad[:, None, None, :], -math.inf)
        weights = scores.softmax(-1)  # (B, H, L, S)
        out = torch.einsum("bhls,bshd->blhd", weights, v).flatten(2)
        out = self.out_proj(out)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average else weights

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights)


class MHANoTranspose(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        B, L, E = q.shape
        S, H = k.shape[1], self.h
        qh, kh, vh = q.reshape(B, H, L, E // H), k.reshape(B, H, S, E // H), v.reshape(B, H, S, E // H)
        scores = qh @ kh.transpose(-2, -1) / math.sqrt(E // H)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
        w = scores.softmax(-1)
        out = self.out_proj((w @ vh).transpose(1, 2).reshape(B, L, E))
        return out, (w.mean(1) if need_weights else None)


class MHAJoinedWithoutTranspose(MHAEinsum):
    """Heads split right, but joined back with a reshape of (B, H, L, hd) without transposing."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        B, L, E = q.shape
        S, H = k.shape[1], self.h
        qh, kh, vh = (x.view(B, -1, H, E // H).transpose(1, 2) for x in (q, k, v))
        scores = qh @ kh.transpose(-2, -1) / math.sqrt(E // H)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
        w = scores.softmax(-1)
        out = self.out_proj((w @ vh).reshape(B, L, E))
        return out, (w.mean(1) if need_weights else None)


class MHANotAveraged(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights, average=False)


class MHAPaddingInverted(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights, kpm_true=False)


class MHAMaskInverted(MHAEinsum):
    """The sdpa convention (True = may attend) for the boolean attn_mask."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights, am_true=False)


class MHASwappedSlices(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value, order=(1, 0, 2))
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights)


class MHAScaledByE(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        return self.attend(q, k, v, key_padding_mask, attn_mask, need_weights, scale=1 / math.sqrt(q.shape[-1]))


class MHAAlwaysWeights(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        return super().forward(query, key, value, key_padding_mask, attn_mask, True)


class MHASeparateLinears(nn.Module):
    """Three nn.Linear layers: the state_dict does not load into nn.MultiheadAttention."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(embed_dim, embed_dim, bias=bias) for _ in range(3))
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        raise RuntimeError("not reached")


class MHAWrapsTorch(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)

    def forward(self, *args, **kwargs):
        return self.mha(*args, **kwargs)


class MHANoValueError(MHAEinsum):
    def __init__(self, embed_dim, num_heads, bias=True):
        nn.Module.__init__(self)
        self.h = num_heads
        self.in_proj_weight = nn.Parameter(torch.randn(3 * embed_dim, embed_dim) * 0.1)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)


def test_mha_passes():
    assert_passes(MHAEinsum, "MultiHeadAttention")


@pytest.mark.parametrize("wrong, fragments", [
    (MHANoTranspose, ["without a transpose"]), (MHANotAveraged, ["average"]),
    (MHAJoinedWithoutTranspose, ["joined wrongly", "transpose(1, 2) first"]),
    (MHAPaddingInverted, ["key_padding_mask is inverted"]), (MHAMaskInverted, ["attn_mask is inverted"]),
    (MHASwappedSlices, ["wrong order"]), (MHAScaledByE, ["head_dim"]), (MHAAlwaysWeights, ["should be None"]),
    (MHASeparateLinears, ["in_proj_weight"]), (MHAWrapsTorch, ["forbids"]), (MHANoValueError, ["ValueError"]),
])
def test_mha_rejects(wrong, fragments):
    assert_rejects(wrong, "MultiHeadAttention", *fragments)


# --- sinusoidal_positions ---------------------------------------------------------------------------------------
def positions_vector(seq_len, dim):
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(seq_len, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


def positions_loop(seq_len, dim):
    rows = [[0.0] * dim for _ in range(seq_len)]
    for p in range(seq_len):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            rows[p][2 * i], rows[p][2 * i + 1] = math.sin(angle), math.cos(angle)
    return torch.tensor(rows, dtype=torch.float32).reshape(seq_len, dim)


def positions_swapped(seq_len, dim):
    return positions_vector(seq_len, dim).reshape(seq_len, dim // 2, 2).flip(-1).reshape(seq_len, dim)


def positions_i(seq_len, dim):
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    angle = pos / 10000 ** (torch.arange(dim // 2) / dim)
    return torch.stack([angle.sin(), angle.cos()], -1).reshape(seq_len, dim)


def positions_float64(seq_len, dim):
    return torch.tensor(positions_loop(seq_len, dim).tolist(), dtype=torch.float64)


def positions_halves(seq_len, dim):
    pe = positions_vector(seq_len, dim)
    return torch.cat([pe[:, 0::2], pe[:, 1::2]], 1)


@pytest.mark.parametrize("right", [positions_vector, positions_loop])
def test_positions_pass(right):
    assert_passes(right, "sinusoidal_positions")


@pytest.mark.parametrize("wrong, fragments", [
    (positions_swapped, ["swapped"]), (positions_i, ["instead of 2i"]), (positions_float64, ["float64"]),
    (positions_halves, ["interleave"]),
])
def test_positions_rejects(wrong, fragments):
    assert_rejects(wrong, "sinusoidal_positions", *fragments)


# --- layer_norm -------------------------------------------------------------------------------------------------
def _shape(normalized_shape):
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


def layer_norm_dims(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    mu = x.mean(dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dims, keepdim=True)
    y = (x - mu) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def layer_norm_flatten(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = _shape(normalized_shape)
    lead = x.shape[:x.ndim - len(shape)]
    flat = x.reshape(*lead, -1)
    var, mean = torch.var_mean(flat, dim=-1, keepdim=True, correction=0)
    y = ((flat - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_unbiased(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True) + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_eps_outside(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    y = (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True, correction=0) + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_last_dim(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_torch(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return F.layer_norm(x, _shape(normalized_shape), weight, bias, eps)


@pytest.mark.parametrize("right", [layer_norm_dims, layer_norm_flatten])
def test_layer_norm_passes(right):
    assert_passes(right, "layer_norm")


@pytest.mark.parametrize("wrong, fragments", [
    (layer_norm_unbiased, ["unbiased"]), (layer_norm_eps_outside, ["outside the square root"]),
    (layer_norm_last_dim, ["only the last dim"]), (layer_norm_torch, ["forbids"]),
])
def test_layer_norm_rejects(wrong, fragments):
    assert_rejects(wrong, "layer_norm", *fragments)


# --- sample_next ------------------------------------------------------------------------------------------------
def _validate(temperature, top_k):
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    if top_k is not None and top_k < 1:
        raise ValueError("top_k must be at least 1")


def sample_topk(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    scaled = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_sort(logits, temperature=1.0, top_k=None, generator=None):
    """Sort, sample a rank among the first k, map it back."""
    _validate(temperature, top_k)
    values, order = torch.sort(logits, dim=-1, descending=True)
    k = logits.shape[-1] if top_k is None else min(top_k, logits.shape[-1])
    probs = torch.softmax(values[:, :k] / temperature, dim=-1)
    rank = torch.multinomial(probs, 1, generator=generator)
    return order.gather(1, rank)[:, 0]


def sample_position_in_top_k(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    scaled = logits / temperature
    if top_k is None or top_k >= logits.shape[-1]:
        return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)
    top = scaled.topk(top_k, dim=-1)
    return torch.multinomial(top.values.softmax(-1), 1, generator=generator).squeeze(-1)  # forgot top.indices


def sample_argmax(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    return logits.argmax(-1)


def sample_times_temperature(logits, temperature=1.0, top_k=None, generator=None):
    return sample_topk(logits * temperature * temperature, temperature, top_k, generator)


def sample_k_plus_one(logits, temperature=1.0, top_k=None, generator=None):
    return sample_topk(logits, temperature, None if top_k is None else top_k + 1, generator)


def sample_k_unclamped(logits, temperature=1.0, top_k=None, generator=None):
    """topk(top_k) even when top_k is larger than the vocabulary."""
    _validate(temperature, top_k)
    scaled = logits / temperature
    if top_k is not None:
        scaled = scaled.masked_fill(scaled < scaled.topk(top_k, dim=-1).values[:, -1:], float("-inf"))
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_global_rng(logits, temperature=1.0, top_k=None, generator=None):
    return sample_topk(logits, temperature, top_k, None)


def sample_in_place(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    logits /= temperature
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_column(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)


def sample_cpu(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    probs = (logits / temperature).softmax(-1)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = probs.topk(top_k, dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0)
    rows = [int(torch.multinomial(p, 1, generator=generator)) for p in probs.unbind(0)] \
        if probs.device.type != "meta" else [0] * len(probs)
    return torch.tensor(rows)


def sample_no_checks(logits, temperature=1.0, top_k=None, generator=None):
    if top_k is not None and top_k < 1:
        top_k = None
    return sample_topk(logits, max(temperature, 1e-6), top_k, generator)


@pytest.mark.parametrize("right", [sample_topk, sample_sort])
def test_sample_next_passes(right):
    assert_passes(right, "sample_next")


@pytest.mark.parametrize("wrong, fragments", [
    (sample_argmax, ["argmax"]), (sample_times_temperature, ["multiplied by the temperature"]),
    (sample_k_plus_one, ["k + 1"]),
    (sample_k_unclamped, ["more than the dimension holds", "min(k, x.size(dim))"]), (sample_global_rng, ["global"]), (sample_in_place, ["in place"]),
    (sample_column, ["squeeze"]), (sample_cpu, ["on a GPU"]), (sample_no_checks, ["should raise ValueError"]),
    (sample_position_in_top_k, ["positions within the top", "indices.gather"]),
])
def test_sample_next_rejects(wrong, fragments):
    assert_rejects(wrong, "sample_next", *fragments)


# --- TinyGPT ----------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, d, heads, causal=True):
        super().__init__()
        self.causal = causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        T = x.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1) if self.causal else None
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPTRight(nn.Module):
    def __init__(self, vocab_size, block_size, d=64, heads=4, layers=2, causal=True):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Embedding(block_size, d)
        self.blocks = nn.Sequential(*[_Block(d, heads, causal) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x)))


class GPTNotCausal(GPTRight):
    def __init__(self, vocab_size, block_size):
        super().__init__(vocab_size, block_size, causal=False)


class GPTLastOnly(GPTRight):
    def forward(self, idx):
        return super().forward(idx)[:, -1]


class GPTPretrained(GPTRight):
    """Fits a bigram table in __init__: good before the check trains it."""

    def __init__(self, vocab_size, block_size):
        super().__init__(vocab_size, block_size)
        from grader.checks.lesson10_attention import split
        train = split()[0]
        counts = torch.ones(vocab_size, vocab_size)
        counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1), accumulate=True)
        self.table = nn.Parameter(counts.div(counts.sum(1, keepdim=True)).log())

    def forward(self, idx):
        return self.table[idx] + 0 * super().forward(idx)


class GPTCpuPositions(GPTRight):
    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        return self.head(self.ln(self.blocks(x)))


class GPTBigram(nn.Module):
    def __init__(self, vocab_size, block_size):
        super().__init__()
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx):
        return self.table(idx)


def test_tiny_gpt_passes():
    assert_passes(GPTRight, "TinyGPT")


@pytest.mark.parametrize("wrong, fragments", [
    (GPTNotCausal, ["NOT CAUSAL"]), (GPTLastOnly, ["every position"]), (GPTPretrained, ["before any training"]),
    (GPTCpuPositions, ["on a GPU"]), (GPTBigram, ["bigram"]),
])
def test_tiny_gpt_rejects(wrong, fragments):
    assert_rejects(wrong, "TinyGPT", *fragments)


def test_tiny_gpt_skips_the_hidden_round(monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "5")
    report = evaluate(GPTNotCausal, name="TinyGPT")
    assert report.status == "failed" and not any(c.hidden for c in report.cases)


def test_tiny_gpt_data_follows_the_stated_rules():
    from grader.checks.lesson10_attention import GPT_RECIPE, split, val_windows, vocabulary
    from grader.data import datasets_dir
    text = (datasets_dir() / "corpus" / "tiny_corpus.txt").read_text(encoding="utf-8")
    chars = sorted(set(text))
    assert list(vocabulary()) == chars
    train, val = split()
    assert len(train) == int(0.9 * len(text)) and len(train) + len(val) == len(text)
    assert "".join(chars[i] for i in train[:50].tolist()) == text[:50]
    x, y = val_windows()
    assert x.shape == y.shape == (256, GPT_RECIPE["block_size"]) and torch.equal(x[:, 1:], y[:, :-1])


class MHARandnInit(MHAEinsum):
    """Right in every computation, but starts from randn weights, about three times too large."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias)
        with torch.no_grad():
            self.in_proj_weight.normal_()


class MHABiasInit(MHAEinsum):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias)
        if bias:
            with torch.no_grad():
                self.in_proj_bias.uniform_(-0.1, 0.1)


@pytest.mark.parametrize("wrong, fragments", [
    (MHARandnInit, ["xavier_uniform_"]), (MHABiasInit, ["in_proj_bias should start at zeros"]),
])
def test_mha_rejects_an_initialisation_unlike_pytorchs(wrong, fragments):
    assert_rejects(wrong, "MultiHeadAttention", *fragments)


def positions_column_index(seq_len, dim):
    """Each column j from 10000^(j/dim): right for the sin columns, off by one for the cos columns."""
    p = torch.arange(seq_len, dtype=torch.float32)[:, None]
    j = torch.arange(dim, dtype=torch.float32)[None, :]
    angle = p / 10000 ** (j / dim)
    return torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos())


def layer_norm_leading_dims(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    dims = tuple(range(1, 1 + len(shape)))  # counted from the front
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def test_positions_and_layer_norm_name_these_mistakes_too():
    assert_rejects(positions_column_index, "sinusoidal_positions", "the cos columns use their own index")
    assert_rejects(layer_norm_leading_dims, "layer_norm", "the dims after the first")


# --- holes a second tester found (issue 12) ----------------------------------------------------------------------
def sdpa_log_mask(q, k, v, attn_mask=None, is_causal=False):
    """A boolean mask turned additive with log (log 1 = 0, log 0 = -inf); the scale split between q and k."""
    _check_args(attn_mask, is_causal)
    E = q.shape[-1]
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = attn_mask.to(q.dtype).log()
    scores = (q * E ** -0.25) @ (k * E ** -0.25).transpose(-2, -1)
    return torch.softmax(scores if attn_mask is None else scores + attn_mask, dim=-1) @ v


def sdpa_online_softmax(q, k, v, attn_mask=None, is_causal=False):
    """Keys in chunks of 3 with a running max and sum, guarding chunks that are fully masked."""
    _check_args(attn_mask, is_causal)
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
    top = torch.full(scores.shape[:-1] + (1,), -math.inf, dtype=q.dtype, device=q.device)
    total = torch.zeros_like(top)
    acc = torch.zeros(scores.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
    for j in range(0, S, 3):
        chunk = scores[..., j:j + 3]
        new_top = torch.maximum(top, chunk.amax(-1, keepdim=True))
        safe = torch.where(torch.isinf(new_top), torch.zeros_like(new_top), new_top)
        fade, p = torch.exp(top - safe), torch.exp(chunk - safe)
        total = total * fade + p.sum(-1, keepdim=True)
        acc = acc * fade + p @ v[..., j:j + 3, :]
        top = new_top
    return acc / total


def sdpa_raises_for_boolean_masks_only(q, k, v, attn_mask=None, is_causal=False):
    if attn_mask is not None and attn_mask.dtype == torch.bool and is_causal:
        raise ValueError("attn_mask and is_causal are exclusive")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        scores = scores.masked_fill(~torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril(),
                                    -math.inf)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(-1) @ v


def sdpa_scaled_after_softmax(q, k, v, attn_mask=None, is_causal=False):
    weights = sdpa_matmul(q * math.sqrt(q.shape[-1]), k, torch.eye(k.shape[-2], dtype=q.dtype, device=q.device),
                          attn_mask, is_causal)
    return weights / math.sqrt(q.shape[-1]) @ v


def sdpa_scaled_by_value_size(q, k, v, attn_mask=None, is_causal=False):
    return sdpa_matmul(q * math.sqrt(q.shape[-1] / v.shape[-1]), k, v, attn_mask, is_causal)


@pytest.mark.parametrize("right", [sdpa_log_mask, sdpa_online_softmax])
def test_sdpa_unusual_answers_pass(right):
    assert_passes(right, "scaled_dot_product_attention")


@pytest.mark.parametrize("wrong, fragments", [
    (sdpa_raises_for_boolean_masks_only, ["a float attn_mask and is_causal", "should raise ValueError"]),
    (sdpa_scaled_after_softmax, ["scaled after the softmax"]), (sdpa_scaled_by_value_size, ["1/sqrt(Ev)"]),
])
def test_sdpa_rejects_these_too(wrong, fragments):
    assert_rejects(wrong, "scaled_dot_product_attention", *fragments)


class MHAHeadLoop(nn.Module):
    """One head at a time from row slices of in_proj_weight; the masks folded into one additive bias."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("num_heads must divide embed_dim")
        self.e, self.h = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(3 * embed_dim, embed_dim)))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        E, H = self.e, self.h
        d = E // H
        B, L, S = query.shape[0], query.shape[1], key.shape[1]
        add = torch.zeros(B, L, S, dtype=query.dtype, device=query.device)
        if attn_mask is not None:
            add = add.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else add + attn_mask
        if key_padding_mask is not None:
            add = add.masked_fill(key_padding_mask[:, None, :], -math.inf)
        outs, maps = [], []
        for h in range(H):
            proj = []
            for i, x in enumerate((query, key, value)):
                rows = slice(i * E + h * d, i * E + (h + 1) * d)
                b = None if self.in_proj_bias is None else self.in_proj_bias[rows]
                proj.append(F.linear(x, self.in_proj_weight[rows], b))
            w = torch.softmax(proj[0] @ proj[1].transpose(1, 2) / math.sqrt(d) + add, dim=-1)
            outs.append(w @ proj[2])
            maps.append(w)
        out = self.out_proj(torch.cat(outs, dim=-1))
        return out, (torch.stack(maps).mean(0) if need_weights else None)


class MHABigNegative(MHAEinsum):
    """Masks with -1e9 instead of -inf (the same weights in float32 and float64)."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            zeros = torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device)
            attn_mask = zeros.masked_fill(attn_mask, -1e9)
        return super().forward(query, key, value, key_padding_mask, attn_mask, need_weights)


class MHAMaskShiftedInPlace(MHAEinsum):
    """Subtracts the float mask's max from it in place: the weights are the same, the caller's mask is not."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask.sub_(attn_mask.max())
        return super().forward(query, key, value, key_padding_mask, attn_mask, need_weights)


class MHAPaddedQueryRows(MHAEinsum):
    """In self-attention, masks the rows of the padded queries (with a large finite value) instead of the keys."""

    def attend(self, q, k, v, key_padding_mask, attn_mask, need_weights, **kw):
        if key_padding_mask is None or q.shape[1] != k.shape[1]:
            return super().attend(q, k, v, key_padding_mask, attn_mask, need_weights, **kw)
        q, k, v = self.split(q), self.split(k), self.split(v)
        scores = torch.einsum("blhd,bshd->bhls", q, k) / math.sqrt(q.shape[-1])
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        weights = scores.masked_fill(key_padding_mask[:, None, :, None], -1e4).softmax(-1)
        out = self.out_proj(torch.einsum("bhls,bshd->blhd", weights, v).flatten(2))
        return out, (weights.mean(1) if need_weights else None)


class MHAZeroesPaddedOutputs(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        out, w = super().forward(query, key, value, key_padding_mask, attn_mask, need_weights)
        if key_padding_mask is not None and query.shape[1] == key.shape[1]:
            out = out.masked_fill(key_padding_mask[:, :, None], 0.0)
        return out, w


class MHAInputTimesWeight(MHAEinsum):
    """query @ W_q instead of F.linear(query, W_q): the square slices keep every shape."""

    def heads(self, query, key, value, order=(0, 1, 2), transpose=True):
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (0, 0, 0)
        return [x @ w[i] + b[i] for x, i in zip((query, key, value), order)]


class MHAReshapeBothWays(MHAEinsum):
    """Splits the heads with reshape(B, H, T, hd) and joins them with reshape(B, T, E): no transpose either way."""

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        B, L, E = q.shape
        H = self.h
        qh, kh, vh = (x.reshape(B, H, x.shape[1], E // H) for x in (q, k, v))
        scores = qh @ kh.transpose(-2, -1) / math.sqrt(E // H)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
        w = scores.softmax(-1)
        return self.out_proj((w @ vh).reshape(B, L, E)), (w.mean(1) if need_weights else None)


class MHADropout(MHAEinsum):
    """Dropout on the weights with nn.Dropout(0.1): on in training mode, where the check runs the module."""

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__(embed_dim, num_heads, bias)
        self.drop = nn.Dropout(0.1)

    def attend(self, q, k, v, key_padding_mask, attn_mask, need_weights, **kw):
        out, w = super().attend(q, k, v, key_padding_mask, attn_mask, True, **kw)
        return self.drop(out), (w if need_weights else None)


class MHAScaledAfterSoftmax(MHAEinsum):
    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        q, k, v = self.heads(query, key, value)
        B, L, E = q.shape
        H = self.h
        qh, kh, vh = (x.view(B, -1, H, E // H).transpose(1, 2) for x in (q, k, v))
        scores = qh @ kh.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -math.inf) if attn_mask.dtype == torch.bool else scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], -math.inf)
        w = scores.softmax(-1) / math.sqrt(E // H)
        out = self.out_proj((w @ vh).transpose(1, 2).reshape(B, L, E))
        return out, (w.mean(1) if need_weights else None)


@pytest.mark.parametrize("right", [MHAHeadLoop, MHABigNegative])
def test_mha_unusual_answers_pass(right):
    assert_passes(right, "MultiHeadAttention")


@pytest.mark.parametrize("wrong, fragments", [
    (MHAMaskShiftedInPlace, ["changed attn_mask in place"]),
    (MHAPaddedQueryRows, ["self-attention", "masks the rows of the padded queries"]),
    (MHAZeroesPaddedOutputs, ["self-attention", "outputs at padded positions are set to 0"]),
    (MHAInputTimesWeight, ["x @ W", "F.linear"]), (MHAReshapeBothWays, ["split and joined with a reshape"]),
    (MHADropout, ["two identical calls gave different outputs", "no dropout"]),
    (MHAScaledAfterSoftmax, ["scaled after the softmax"]),
])
def test_mha_rejects_these_too(wrong, fragments):
    assert_rejects(wrong, "MultiHeadAttention", *fragments)


def positions_polar(seq_len, dim):
    """e^(i p w) as complex numbers: view_as_real gives (cos, sin) pairs, flipped to (sin, cos)."""
    w = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    z = torch.polar(torch.ones(seq_len, dim // 2, dtype=torch.float64),
                    torch.arange(seq_len, dtype=torch.float64)[:, None] * w)
    return torch.view_as_real(z).flip(-1).reshape(seq_len, dim).float()


def _positions_cache(key_on_dim: bool, copy: bool):
    tables = {}

    def positions(seq_len, dim):
        key = (seq_len, dim) if key_on_dim else seq_len
        if key not in tables:
            tables[key] = positions_vector(seq_len, dim)
        return tables[key].clone() if copy else tables[key]
    return positions


def _positions_slice_of_one_table():
    tables = {}

    def positions(seq_len, dim):
        if dim not in tables:
            tables[dim] = positions_vector(500, dim)
        return tables[dim][:seq_len]
    return positions


@pytest.mark.parametrize("right", [positions_polar, _positions_cache(key_on_dim=True, copy=True)])
def test_positions_unusual_answers_pass(right):
    assert_passes(right, "sinusoidal_positions")


@pytest.mark.parametrize("make, fragments", [
    (lambda: _positions_cache(key_on_dim=False, copy=True), ["keyed by seq_len only"]),
    (lambda: _positions_cache(key_on_dim=True, copy=False), ["cached tensor", "clone()"]),
    (_positions_slice_of_one_table, ["cached tensor (or a slice of one)"]),
])
def test_positions_rejects_a_stale_or_shared_cache(make, fragments):
    assert_rejects(make(), "sinusoidal_positions", *fragments)


def layer_norm_via_batch_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Every row a channel of F.batch_norm in training mode (its statistics are per channel)."""
    n = math.prod(_shape(normalized_shape))
    y = F.batch_norm(x.reshape(1, -1, n), None, None, training=True, eps=eps).reshape(x.shape)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_std_squared(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """var = std ** 2: torch's std backward gives 0 (not nan) where std is 0, so even the constant row is right."""
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    var = x.std(dims, keepdim=True, correction=0) ** 2
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(var + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_one_pass(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    mean = x.mean(dims, keepdim=True)
    var = (x * x).mean(dims, keepdim=True) - mean ** 2
    y = (x - mean) / torch.sqrt(var + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_sqrt_squared(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The standard deviation through sqrt, squared again: sqrt's derivative is infinite at a variance of 0."""
    dims = tuple(range(-len(_shape(normalized_shape)), 0))
    std = x.var(dims, keepdim=True, correction=0).sqrt()
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(std ** 2 + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_weight_transposed(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    y = layer_norm_dims(x, normalized_shape, eps=eps)
    y = y * (weight.T if weight is not None and weight.ndim == 2 else weight) if weight is not None else y
    return y + bias if bias is not None else y


def layer_norm_fixed_eps(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return layer_norm_dims(x, normalized_shape, weight, bias, eps=1e-6)


def layer_norm_sizes_as_dims(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(n % x.ndim for n in _shape(normalized_shape))
    y = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True, correction=0) + eps)
    y = y * weight if weight is not None else y
    return y + bias if bias is not None else y


@pytest.mark.parametrize("right", [layer_norm_via_batch_norm, layer_norm_std_squared])
def test_layer_norm_unusual_answers_pass(right):
    assert_passes(right, "layer_norm")


@pytest.mark.parametrize("wrong, fragments", [
    (layer_norm_one_pass, ["around 1e4", "E[x²] - mean²"]),
    (layer_norm_sqrt_squared, ["constant (variance 0)", "gradient is not"]),
    (layer_norm_weight_transposed, ["weight is transposed"]), (layer_norm_fixed_eps, ["use the eps argument"]),
    (layer_norm_sizes_as_dims, ["holds sizes, not dims"]),
])
def test_layer_norm_rejects_these_too(wrong, fragments):
    assert_rejects(wrong, "layer_norm", *fragments)


def sample_prob_zeroing(logits, temperature=1.0, top_k=None, generator=None):
    """Softmax first, then zero the probabilities outside the top k; multinomial renormalises."""
    _validate(temperature, top_k)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k is not None and top_k < probs.shape[-1]:
        probs = probs * torch.zeros_like(probs, dtype=torch.bool).scatter(-1, probs.topk(top_k, -1).indices, True)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def sample_squeeze_all(logits, temperature=1.0, top_k=None, generator=None):
    return sample_topk(logits, temperature, top_k, generator)[:, None].squeeze()


def sample_drops_the_kth(logits, temperature=1.0, top_k=None, generator=None):
    _validate(temperature, top_k)
    scaled = logits / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        scaled = scaled.masked_fill(scaled <= scaled.topk(top_k, -1).values[:, -1:], -math.inf)
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def sample_k_clamped_to_one(logits, temperature=1.0, top_k=None, generator=None):
    """min(top_k, 1) where min(top_k, V) was meant."""
    _validate(temperature, top_k)
    scaled = logits / temperature
    if top_k is not None:
        k = top_k if top_k < scaled.shape[-1] else min(top_k, 1)
        scaled = scaled.masked_fill(scaled < scaled.topk(k, -1).values[:, -1:], -math.inf)
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(-1)


def test_sample_next_by_zeroing_probabilities_passes():
    assert_passes(sample_prob_zeroing, "sample_next")


@pytest.mark.parametrize("wrong, fragments", [
    (sample_squeeze_all, ["shape (1,)", "squeeze(-1)"]),
    (sample_drops_the_kth, ["too few tokens", "off by one"]),
    (sample_k_clamped_to_one, ["too few tokens", "min(top_k, V)"]),
])
def test_sample_next_rejects_these_too(wrong, fragments):
    assert_rejects(wrong, "sample_next", *fragments)
