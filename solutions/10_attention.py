# %% [markdown]
# # 10 · Attention and transformers: from one query to a tiny GPT
#
# A recurrent network (lesson 09) squeezes everything it has read into one hidden state and reads one step at a
# time. **Attention** does neither: every position looks at every other position directly, in one matrix
# product, and decides for itself how much of each to take. Stack attention with small MLPs and you have the
# **transformer**, the architecture behind today's language models.
#
# This lesson builds it piece by piece: token embeddings, queries, keys and values, scaled dot-product attention
# with its masks (PyTorch has two opposite conventions for boolean masks — a classic source of silent bugs),
# multi-head attention exactly as `nn.MultiheadAttention` stores it, positional encodings, layer normalisation,
# a pre-norm transformer block, PyTorch's ready-made `nn.TransformerEncoderLayer`, sampling with temperature and
# top-k, and finally a tiny character-level GPT trained on a corpus that ships with the course.
#
# As in every lesson, each answer cell is graded on its own with only the lesson's imports around it: a helper,
# an import or a constant your answer needs belongs in that cell.

# %%
from grader import check, hint

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from grader.data import datasets_dir

torch.manual_seed(0)
# Small transformers run faster on one CPU thread than on several that wait for each other.
torch.set_num_threads(1)


def show_weights(ax, weights, title, xlabels=None, ylabels=None):
    """Draw one (L, S) attention matrix: rows are queries, columns are keys."""
    ax.imshow(weights.detach(), cmap="Blues", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key position (S)")
    ax.set_ylabel("query position (L)")
    L, S = weights.shape
    ax.set_xticks(range(S), xlabels if xlabels is not None else range(S))
    ax.set_yticks(range(L), ylabels if ylabels is not None else range(L))


# %% [markdown]
# ## 1. Tokens become vectors: embeddings
#
# A model cannot multiply letters. Text is first cut into **tokens** (here: single characters), each token is
# given an integer id, and an `nn.Embedding(vocab_size, embed_dim)` turns each id into a learned vector — it is
# just a `(vocab_size, embed_dim)` table whose row `i` is the vector of token `i` (lesson 09 used one too).
# A batch of `B` sequences of `T` ids, `(B, T)`, becomes `(B, T, E)`.

# %%
text = "a cat sat"
vocab = sorted(set(text))                      # the characters, sorted: [' ', 'a', 'c', 's', 't']
stoi = {ch: i for i, ch in enumerate(vocab)}
ids = torch.tensor([[stoi[ch] for ch in text]])  # (1, 9) int64
embedding = nn.Embedding(len(vocab), 4)
x = embedding(ids)                             # (1, 9, 4)
print(vocab, ids.tolist(), tuple(x.shape))
print(torch.equal(x[0, 1], embedding.weight[stoi["a"]]))   # a lookup, nothing more

# %% [markdown]
# ## 2. Queries, keys and values
#
# Attention answers, for every position, the question "which other positions matter to me, and what do I take
# from them?". Each position emits three vectors, all linear maps of its embedding:
#
# - a **query** `q`: what I am looking for;
# - a **key** `k`: what I offer, to be matched against queries;
# - a **value** `v`: what I hand over when I am chosen.
#
# The match between query `i` and key `j` is their dot product. A softmax over all keys turns the matches of
# query `i` into **attention weights** that are positive and sum to 1, and the output at `i` is the weighted
# average of the values:
#
# $$\text{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{E}}\right) V$$
#
# with `Q (L, E)` (L queries), `K (S, E)` and `V (S, Ev)` (S keys and values): the scores are `(L, S)`, the
# output `(L, Ev)`. In **self-attention** queries, keys and values all come from the same sequence (`L == S`);
# in **cross-attention** the queries come from one sequence and keys and values from another (a translator's
# decoder reading the encoded source sentence).
#
# **Why divide by √E?** A dot product of two random vectors with `E` components of variance 1 has variance `E`.
# Large scores push the softmax towards a one-hot vector whose gradient is almost zero everywhere; dividing by
# √E brings the scores back to variance 1, whatever the head size:

# %%
for E in (4, 64, 1024):
    q, k = torch.randn(10000, E), torch.randn(10000, E)
    scores = (q * k).sum(dim=1)
    print(f"E={E:>4}: std of q·k {scores.std():6.2f}   std of q·k/√E {(scores / math.sqrt(E)).std():.2f}")

# %% [markdown]
# Here it is by hand, against PyTorch's fused version `F.scaled_dot_product_attention` (which takes any number of
# leading batch dimensions, `(..., L, E)`):

# %%
q, k, v = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 6)   # (B, L, E), (B, S, E), (B, S, Ev)
scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])                    # (B, L, S)
weights = scores.softmax(dim=-1)                                             # each row sums to 1
out = weights @ v                                                            # (B, L, Ev)
print(tuple(out.shape), torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6))

# %% [markdown]
# ## 3. Masks: who may look at whom
#
# Often a query must **not** see some keys: the padding at the end of a short sentence, or — in a language model
# — the future. A mask removes a key by setting its score to `-inf` before the softmax: `exp(-inf) = 0`, so it
# gets weight 0 and the other weights still sum to 1.
#
# PyTorch accepts a mask in two forms:
#
# - a **float mask** is simply **added** to the scores: `0.0` keeps a key, `-inf` removes it, and anything in
#   between is a soft bias (ALiBi-style position biases are float masks). Both functions below agree on it;
# - a **boolean mask** — and here the two APIs **disagree**:
#
# | | `True` means | `False` means |
# | --- | --- | --- |
# | `F.scaled_dot_product_attention(attn_mask=...)` | **may attend** (keep) | masked |
# | `nn.MultiheadAttention(attn_mask=..., key_padding_mask=...)` | **masked** (ignore) | keep |
#
# Pass a mask written for one to the other and nothing crashes: the model attends to exactly the keys it should
# ignore. Always convert explicitly, `~mask`, and say in a comment which convention a variable uses.
#
# The **causal mask** of a language model lets position `t` see positions `0..t` only: a lower-triangular
# matrix. `F.scaled_dot_product_attention(..., is_causal=True)` builds it for you (aligned to the top-left
# corner: query `i` sees keys `j <= i`).

# %%
L = S = 6
keep = torch.ones(L, S, dtype=torch.bool).tril()        # True = may attend   (F.scaled_dot_product_attention)
masked = ~keep                                          # True = masked       (nn.MultiheadAttention)
additive = torch.zeros(L, S).masked_fill(masked, float("-inf"))   # float: added to the scores
print(keep.int())
print(additive)

q, k, v = torch.randn(1, L, 8), torch.randn(1, S, 8), torch.randn(1, S, 8)
a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
b = F.scaled_dot_product_attention(q, k, v, attn_mask=additive)
c = F.scaled_dot_product_attention(q, k, v, is_causal=True)
print("bool, float and is_causal agree:", torch.allclose(a, b, atol=1e-6), torch.allclose(a, c, atol=1e-6))

mha = nn.MultiheadAttention(8, 1, batch_first=True)
right, _ = mha(q, k, v, attn_mask=masked)               # nn.MultiheadAttention: True = masked
wrong, _ = mha(q, k, v, attn_mask=keep)                 # the other convention: no error, wrong result
print("MHA with its own convention = with the float mask:", torch.allclose(right, mha(q, k, v, attn_mask=additive)[0],
                                                                          atol=1e-6))
print("MHA with the other convention differs:", not torch.allclose(right, wrong))

# %% [markdown]
# A **key padding mask** removes the padding of each sequence of a batch: a `(B, S)` mask, one row per
# sequence, applied to every query. In `nn.MultiheadAttention` it is `key_padding_mask`, `True` at the padding.
# `F.scaled_dot_product_attention` has no separate argument: broadcast it yourself to `(B, 1, S)` (one row for
# all queries) and flip it to its convention.
#
# The pictures show the attention weights for the three kinds of masks (darker = more weight; white = exactly 0):

# %%
words = ["the", "cat", "sat", "on", "<pad>", "<pad>"]
lengths = torch.tensor([4])
padding = torch.arange(S)[None, :] >= lengths[:, None]           # (B, S), True at the padding (MHA convention)

torch.manual_seed(1)
q, k = torch.randn(1, L, 8), torch.randn(1, S, 8)
raw = (q @ k.transpose(-2, -1) / math.sqrt(8))[0]                # (L, S)
fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
show_weights(axes[0], raw.softmax(-1), "no mask", words, words)
show_weights(axes[1], raw.masked_fill(~keep, float("-inf")).softmax(-1), "causal: query t sees keys <= t",
             words, words)
show_weights(axes[2], raw.masked_fill(padding, float("-inf")).softmax(-1), "key padding: nobody sees <pad>",
             words, words)
show_weights(axes[3], raw.masked_fill(~keep | padding, float("-inf")).softmax(-1), "causal and padding",
             words, words)
plt.tight_layout()
plt.show()

# %% [markdown]
# Masks combine with `|` on "masked" booleans (or `&` on "may attend" ones), or by adding float masks.
#
# **Pitfall: a fully masked row.** If every key of some query is masked, its softmax is `exp(-inf)/Σexp(-inf)
# = 0/0 = nan`, and the nan spreads through every later layer and into the loss. `nn.MultiheadAttention` and a
# hand-written softmax give nan; `F.scaled_dot_product_attention` on the CPU (in recent versions) quietly gives
# zeros. Either way the row is meaningless. It happens with a padded *query* whose keys are all padding, or with a causal mask
# aligned to the wrong corner. Make sure every query can see at least one key (for example itself).

# %%
row_masked = torch.zeros(L, S, dtype=torch.bool)
row_masked[2] = True                                         # query 2 may see nothing (MHA convention)
print("by hand:  ", raw.masked_fill(row_masked, float("-inf")).softmax(-1)[2])
print("MHA:      ", mha(q, k, v, attn_mask=row_masked)[0][0, 2, :3], "...")
print("F.sdpa:   ", F.scaled_dot_product_attention(q, k, v, attn_mask=~row_masked)[0, 2, :3], "...")

# %% [markdown]
# ## Exercise: `scaled_dot_product_attention`
#
# Write `scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False)` that matches
# `F.scaled_dot_product_attention` (without dropout):
#
# - `q (..., L, E)`, `k (..., S, E)`, `v (..., S, Ev)` with any leading batch/head dimensions; the result is
#   `(..., L, Ev)`;
# - scores `q kᵀ` scaled by `1/√E`, softmax over the keys, weighted sum of the values;
# - `attn_mask` is either **boolean** (`True` = may attend) or **float** (added to the scores), broadcastable to
#   `(..., L, S)`;
# - `is_causal=True` applies the lower-triangular mask aligned to the top-left corner (query `i` sees keys
#   `j <= i`) — create it on the inputs' device; giving both an `attn_mask` (boolean or float) and
#   `is_causal=True` raises `ValueError`.
#
# `F.scaled_dot_product_attention` and `nn.MultiheadAttention` are forbidden here. The checks never mask a whole
# row.

# %%
def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False):
    """softmax(q kᵀ / √E + mask) v over the last two dims, with PyTorch's mask conventions."""
    ### BEGIN SOLUTION
    import math

    if attn_mask is not None and is_causal:
        raise ValueError("give either attn_mask or is_causal=True, not both")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])               # (..., L, S)
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        attn_mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))         # True = may attend
        else:
            scores = scores + attn_mask                                     # float masks are added
    return scores.softmax(dim=-1) @ v                                       # (..., L, Ev)
    ### END SOLUTION


# %%
check(scaled_dot_product_attention)

# %% [markdown]
# ## 4. Multi-head attention and how `nn.MultiheadAttention` stores it
#
# One softmax can only focus in one way at a time. **Multi-head attention** runs `H` attentions side by side,
# each on its own slice of the embedding (the **head dimension** `D = E / H`), and mixes their outputs with a
# final linear layer. One head can follow the previous character while another looks for the last quote mark.
#
# Step by step, for `query (B, L, E)`, `key (B, S, E)`, `value (B, S, E)`:
#
# 1. project: `q = query W_qᵀ + b_q`, and likewise `k`, `v` with their own weights — each `(B, ·, E)`;
# 2. split the last dimension into heads: `(B, L, E) -> (B, L, H, D) -> (B, H, L, D)` (view, then transpose);
# 3. scaled dot-product attention per head, scale `1/√D` (the head size, not E): `(B, H, L, D)`;
# 4. put the heads back side by side: `(B, H, L, D) -> (B, L, H, D) -> (B, L, E)`;
# 5. the output projection `out_proj`, an `nn.Linear(E, E)`.
#
# `nn.MultiheadAttention` keeps the three input projections in **one packed parameter**,
# `in_proj_weight (3E, E)`: rows `0:E` are `W_q`, rows `E:2E` are `W_k`, rows `2E:3E` are `W_v`, and
# `in_proj_bias (3E,)` is packed the same way (`bias=False` removes both biases, and `out_proj`'s too). Within
# each `W`, head `h` owns the output rows `h·D:(h+1)·D`. Let us rebuild its output from its parameters:

# %%
E, H, B, L, S = 8, 2, 2, 3, 5
D = E // H
mha = nn.MultiheadAttention(E, H, batch_first=True)      # batch_first: (B, L, E); the default is (L, B, E)!
print({name: tuple(p.shape) for name, p in mha.named_parameters()})

query, key, value = torch.randn(B, L, E), torch.randn(B, S, E), torch.randn(B, S, E)
W_q, W_k, W_v = mha.in_proj_weight.chunk(3)              # each (E, E)
b_q, b_k, b_v = mha.in_proj_bias.chunk(3)                # each (E,)
q = F.linear(query, W_q, b_q).view(B, L, H, D).transpose(1, 2)   # (B, H, L, D)
k = F.linear(key, W_k, b_k).view(B, S, H, D).transpose(1, 2)     # (B, H, S, D)
v = F.linear(value, W_v, b_v).view(B, S, H, D).transpose(1, 2)   # (B, H, S, D)
per_head = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(dim=-1)   # (B, H, L, S)
out = mha.out_proj((per_head @ v).transpose(1, 2).reshape(B, L, E))   # (B, L, E)

expected, avg_weights = mha(query, key, value)           # need_weights=True: weights averaged over the heads
print(torch.allclose(out, expected, atol=1e-6), torch.allclose(per_head.mean(dim=1), avg_weights, atol=1e-6))
_, every_head = mha(query, key, value, average_attn_weights=False)
print("per head:", tuple(every_head.shape), torch.allclose(per_head, every_head, atol=1e-6))

# %% [markdown]
# Two details of its interface:
#
# - it returns a pair `(output, weights)`; `weights` is the `(B, L, S)` average over heads (or `(B, H, L, S)`
#   with `average_attn_weights=False`), and `None` with `need_weights=False` — which also lets PyTorch use its
#   fast fused kernel, so pass it whenever you do not look at the weights;
# - without `batch_first=True` it expects `(L, B, E)`. A `(B, L, E)` tensor then runs without an error, with the
#   batch and the sequence swapped.
#
# ### A different mask for every sequence and head: the 3-D `attn_mask`
#
# `attn_mask` may be `(L, S)`, shared by everything, or 3-D with one mask per sequence **and** head: shape
# `(B * num_heads, L, S)`, where entry `b * num_heads + h` is the mask of head `h` of sequence `b` (the order of
# `q` reshaped from `(B, H, L, D)` to `(B * H, L, D)`). To give each *sequence* its own mask, repeat every
# sequence's mask `num_heads` times **next to each other** — `repeat_interleave(num_heads, dim=0)`; `repeat`
# would give the order `b0 b1 b0 b1` and mix up the sequences silently. The other way round, a pattern that
# differs per *head* but is the same for every sequence is `(H, L, S)` tiled with `repeat(B, 1, 1)`.
# Unlike `F.scaled_dot_product_attention`, `nn.MultiheadAttention` does not broadcast: a `(1, L, S)` mask is
# refused, because its first dimension must be exactly `B * num_heads`.
#
# In the pictures below, sequence 0 has a causal mask and sequence 1 two padded keys (`repeat_interleave`), and
# head 1 of both sequences may in addition only look at keys next to the query (`repeat`):

# %%
per_sequence = torch.stack([torch.ones(L, S, dtype=torch.bool).triu(1),              # sequence 0: causal-like
                            torch.arange(S).expand(L, S) >= 3])                      # sequence 1: last 2 keys padded
per_sequence_head = per_sequence.repeat_interleave(H, dim=0)         # (B * H, L, S): b0h0, b0h1, b1h0, b1h1
far = (torch.arange(S)[None, :] - torch.arange(L)[:, None]).abs() > 1   # (L, S): keys more than 1 step away
per_head = torch.stack([torch.zeros(L, S, dtype=torch.bool), far])     # (H, L, S): head 1 looks only nearby
attn_mask = per_sequence_head | per_head.repeat(B, 1, 1)              # (B * H, L, S), True = masked
_, w = mha(query, key, value, attn_mask=attn_mask, average_attn_weights=False)   # (B, H, L, S)
try:
    mha(query, key, value, attn_mask=per_sequence[:1])               # (1, L, S)
except RuntimeError as e:
    print("RuntimeError:", e)

fig, axes = plt.subplots(1, B * H, figsize=(14, 2.8))
for b in range(B):
    for h in range(H):
        show_weights(axes[b * H + h], w[b, h], f"sequence {b}, head {h}: mask [{b * H + h}]")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercise: `MultiHeadAttention`
#
# Write `MultiHeadAttention(embed_dim, num_heads, bias=True)`, an `nn.Module` that is a drop-in replacement for
# `nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)`:
#
# - raise `ValueError` unless `num_heads` divides `embed_dim`;
# - parameters `in_proj_weight (3E, E)`, `in_proj_bias (3E,)` (only with `bias=True`) and `out_proj`, an
#   `nn.Linear(E, E, bias=bias)`, so that `state_dict`s load **strictly** in both directions between your module
#   and PyTorch's (initialise `in_proj_weight` with `nn.init.xavier_uniform_` and `in_proj_bias` with zeros, as
#   PyTorch does);
# - `forward(query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True)` on batched
#   `query (B, L, E)`, `key (B, S, E)`, `value (B, S, E)`; `key_padding_mask (B, S)` boolean, `True` = padding;
#   `attn_mask (L, S)` boolean (`True` = masked, the `nn.MultiheadAttention` convention) or float (added);
# - return `(output (B, L, E), weights)` where `weights` is the `(B, L, S)` attention averaged over the heads,
#   or `None` when `need_weights=False`;
# - no dropout, and the inputs and masks stay unchanged; `key_padding_mask` only keeps padded keys from being
#   attended (in self-attention the outputs at padded positions are left as they come, as in PyTorch).
#
# `nn.MultiheadAttention`, `F.multi_head_attention_forward` and `F.scaled_dot_product_attention` are forbidden.
# The checks never mask a whole row.

# %%
class MultiHeadAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters (packed in_proj_weight), batch first."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        ### BEGIN SOLUTION
        if embed_dim % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))   # W_q, W_k, W_v stacked
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        ### END SOLUTION

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        """(B, L, E), (B, S, E), (B, S, E) -> (output (B, L, E), head-averaged weights (B, L, S) or None)."""
        ### BEGIN SOLUTION
        import math

        B, L, E = query.shape
        S, H = key.shape[1], self.num_heads
        D = E // H
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q, k, v = (F.linear(x, w, b).view(B, -1, H, D).transpose(1, 2)            # (B, H, ·, D)
                   for x, w, b in zip((query, key, value), self.in_proj_weight.chunk(3), biases))
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)                            # (B, H, L, S)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask, float("-inf"))             # True = masked
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))   # (B, 1, 1, S)
        weights = scores.softmax(dim=-1)                                           # (B, H, L, S)
        output = self.out_proj((weights @ v).transpose(1, 2).reshape(B, L, E))     # (B, L, E)
        return output, (weights.mean(dim=1) if need_weights else None)
        ### END SOLUTION


# %%
check(MultiHeadAttention)

# %% [markdown]
# ## 5. Where is each token? Positional encodings
#
# Attention compares every query with every key, and nothing in that comparison says where the key sits: shuffle
# the keys and values together and each query gets exactly the same output. Without help, a transformer reads
# "dog bites man" and "man bites dog" as the same bag of tokens:

# %%
mha = nn.MultiheadAttention(8, 2, batch_first=True)
x = torch.randn(1, 5, 8)
shuffle = torch.tensor([3, 0, 4, 1, 2])
same, _ = mha(x[:, :1], x, x)                               # the first token attending to the sequence
shuffled, _ = mha(x[:, :1], x[:, shuffle], x[:, shuffle])   # ... to the same tokens in another order
print("order makes no difference:", torch.allclose(same, shuffled, atol=1e-6))

# %% [markdown]
# The fix is to add to each token's embedding a vector that depends on its **position**. There are two common
# choices:
#
# - a **learned** position embedding, `nn.Embedding(block_size, E)` indexed with `0..T-1` (GPT-2 does this; it
#   cannot go beyond the `block_size` it was trained with);
# - the fixed **sinusoidal** table of the original transformer: for position `p` and pair of dimensions
#   `(2i, 2i+1)`,
#
# $$PE[p, 2i] = \sin\!\left(\frac{p}{10000^{2i/E}}\right), \qquad PE[p, 2i+1] = \cos\!\left(\frac{p}{10000^{2i/E}}\right).$$
#
# Each pair of columns is a clock turning at its own speed, from one turn every 2π positions (the first
# columns) to almost standing still (the last): together they give every position a distinct pattern, and the
# pattern of `p + k` is a rotation of the pattern of `p`, which makes relative positions easy to read.

# %%
positions = torch.arange(64, dtype=torch.float32)[:, None]            # (T, 1)
freq = 10000 ** (-torch.arange(0, 32, 2, dtype=torch.float32) / 32)    # (E/2,)
table = torch.stack([torch.sin(positions * freq), torch.cos(positions * freq)], dim=-1).flatten(1)   # (T, E)

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2, 1]})
image = axes[0].imshow(table.T, cmap="RdBu", aspect="auto", vmin=-1, vmax=1)
axes[0].set_xlabel("position p")
axes[0].set_ylabel("dimension")
axes[0].set_title("sinusoidal position table (64 positions, 32 dims)")
fig.colorbar(image, ax=axes[0])
for d in (0, 2, 8, 16):
    axes[1].plot(table[:, d], label=f"dim {d}")
axes[1].set_xlabel("position p")
axes[1].set_title("some columns: ever slower waves")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercise: `sinusoidal_positions`
#
# Write `sinusoidal_positions(seq_len, dim)` that returns the float32 table `(seq_len, dim)` above, for an even
# `dim`, positions counted from 0:
# `PE[p, 2i] = sin(p / 10000^(2i/dim))` and `PE[p, 2i+1] = cos(p / 10000^(2i/dim))`. The caller may change the
# table it gets: a later call must still return the right table (if you cache tables, return a copy).

# %%
def sinusoidal_positions(seq_len: int, dim: int) -> torch.Tensor:
    """The (seq_len, dim) float32 sinusoidal position table; even columns sin, odd columns cos."""
    ### BEGIN SOLUTION
    p = torch.arange(seq_len, dtype=torch.float64)[:, None]                 # (seq_len, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)                    # (dim/2,): 0, 2, 4, ...
    angle = p / 10000 ** (two_i / dim)                                      # (seq_len, dim/2)
    table = torch.empty(seq_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()                                                    # float64 arithmetic, float32 out
    ### END SOLUTION


# %%
check(sinusoidal_positions)

# %% [markdown]
# ## 6. Layer normalisation
#
# Deep stacks train well only when the scale of the activations stays under control. Batch normalisation
# (lesson 08) normalises each feature over the **batch**; that fits sequences badly (lengths differ, padding
# pollutes the statistics, and generating one token at a time has a batch of one). Transformers use **layer
# normalisation** instead: each token's vector is normalised **on its own**, over its features:
#
# $$y = \frac{x - \operatorname{mean}(x)}{\sqrt{\operatorname{var}(x) + \epsilon}} \cdot \gamma + \beta$$
#
# with the mean and variance over the last dimension(s) (`normalized_shape`), and a learned per-feature scale
# `γ` (`weight`, ones at first) and shift `β` (`bias`, zeros). Nothing depends on the batch, so training and
# evaluation mode behave the same and there are no running statistics.
#
# **Pitfall: the biased variance.** `nn.LayerNorm` divides by `N`, not `N - 1` (`torch.var`'s default is the
# unbiased `N - 1`; pass `correction=0`, or `unbiased=False`). With 8 features the difference is 7% of the
# variance — far above any tolerance:

# %%
x = torch.randn(2, 3, 8)                                        # (B, T, E)
ln = nn.LayerNorm(8)                                            # normalized_shape=8: the last dimension
mean = x.mean(dim=-1, keepdim=True)
biased = (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True, correction=0) + ln.eps)
unbiased = (x - mean) / torch.sqrt(x.var(dim=-1, keepdim=True) + ln.eps)
print("biased variance:  ", torch.allclose(biased, ln(x), atol=1e-6))
print("unbiased variance:", torch.allclose(unbiased, ln(x), atol=1e-6),
      f"(off by up to {(unbiased - ln(x)).abs().max():.3f})")
print("a tuple normalises the last two dims together:", tuple(nn.LayerNorm((3, 8)).weight.shape))

# %% [markdown]
# ## Exercise: `layer_norm`
#
# Write `layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)` that matches `F.layer_norm` in value
# and gradient: `normalized_shape` is an int or a tuple of the trailing dimensions to normalise over; the
# variance is the biased one; `weight` and `bias`, when given, have shape `normalized_shape`. It must stay
# accurate far from 0 (float32 values around 10⁴: take the variance of `x - mean`) and give finite gradients for a
# row of equal values. `F.layer_norm`, `F.group_norm`, `F.rms_norm` and their modules are forbidden.

# %%
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x over its trailing normalized_shape dims (biased variance), then scale and shift."""
    ### BEGIN SOLUTION
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    dims = tuple(range(-len(shape), 0))                                     # the trailing dims
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, correction=0)                       # biased, like nn.LayerNorm
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
    ### END SOLUTION


# %%
check(layer_norm)

# %% [markdown]
# ## 7. The transformer block
#
# A transformer is a stack of identical **blocks**. Each block has two sub-layers, each wrapped in a residual
# connection (lesson 08's ResNets): attention, in which the tokens exchange information, and an **MLP** applied
# to every token separately, in which each token processes what it gathered. The MLP widens the embedding four
# times, applies a non-linearity — **`nn.GELU`**, a smooth ReLU (`x · Φ(x)`, where `Φ` is the normal CDF) that
# BERT and GPT made the standard — and projects back.
#
# Where does the LayerNorm go? The original transformer normalised *after* adding the residual ("post-norm").
# Modern models normalise the **input** of each sub-layer and leave the residual path untouched ("**pre-norm**"):
#
# ```
# x = x + attention(ln_1(x))
# x = x + mlp(ln_2(x))
# ```
#
# The residual stream then carries the signal (and the gradient) straight from the first block to the last,
# which makes deep stacks train without a careful warm-up. A final LayerNorm follows the last block.

# %%
class Block(nn.Module):
    """A pre-norm transformer block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(), nn.Linear(4 * embed_dim, embed_dim))

    def forward(self, x, attn_mask=None):
        h = self.ln_1(x)                                                   # (B, T, E)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))                                  # (B, T, E)


t = torch.linspace(-4, 4, 200)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(t, F.relu(t), label="ReLU")
ax.plot(t, nn.GELU()(t), label="GELU")
ax.legend()
ax.set_title("GELU: a smooth ReLU with a small dip below 0")
plt.show()

# %% [markdown]
# PyTorch ships this block as **`nn.TransformerEncoderLayer`**; `norm_first=True` makes it pre-norm,
# `activation="gelu"` picks GELU, `dim_feedforward` is the MLP's width and `batch_first=True` the layout (its
# defaults are post-norm, ReLU and `(T, B, E)`; its `dropout=0.1` default is on in training mode).
# `nn.TransformerEncoder(layer, num_layers)` stacks copies of a layer. Its `mask` argument follows
# `nn.MultiheadAttention`'s convention (True or `-inf` = masked); `nn.Transformer.generate_square_subsequent_mask(T)`
# builds the causal float mask, and `is_causal=True` is a hint that the mask you pass is that one.
# **`nn.Transformer`** is the whole encoder–decoder of the original paper, for translation-like tasks; a GPT
# uses only a stack of causal blocks (a "decoder-only" model, built from encoder layers with a causal mask).

# %%
layer = nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=64, dropout=0.0, activation="gelu",
                                   batch_first=True, norm_first=True)
encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
causal = nn.Transformer.generate_square_subsequent_mask(5)        # (T, T) float: 0 on and below, -inf above
print(causal)
x = torch.randn(3, 5, 16)                                        # (B, T, E)
y = encoder(x, mask=causal, is_causal=True)
print(tuple(y.shape), "— changing the last token leaves the earlier outputs alone:",
      torch.allclose(y[:, :4], encoder(torch.cat([x[:, :4], torch.randn(3, 1, 16)], dim=1), mask=causal,
                                       is_causal=True)[:, :4], atol=1e-5))
transformer = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                             batch_first=True)
print("nn.Transformer (source, target) ->", tuple(transformer(torch.randn(3, 7, 16), torch.randn(3, 5, 16)).shape))

# %% [markdown]
# ## 8. Language models predict the next token
#
# A large language model (LLM) such as GPT is, at heart, a transformer trained on one task: **given the tokens
# so far, predict the next one**. Its output at position `t` is a vector of `vocab_size` logits for token
# `t + 1`; the causal mask makes sure position `t` cannot peek at the answer. One sequence of `T + 1` tokens
# gives `T` training examples at once: the input is `tokens[:-1]`, the targets are `tokens[1:]`, and the loss is
# the cross-entropy averaged over all positions.
#
# - **Pre-training** runs this on an enormous amount of text; the model learns spelling, grammar, facts and a
#   good deal of reasoning, only because all of it helps to predict the next token. It is by far the most
#   expensive step.
# - **Fine-tuning** continues training a pre-trained model, with a small learning rate, on a small data set for
#   a purpose: following instructions, a chat style, a classification task (often with a new head, as in
#   lesson 08). It is cheap because nearly everything is already learned. Lesson 11 fine-tunes a pre-trained
#   model from Hugging Face.
#
# **Generating** text is the same model in a loop: feed the tokens so far (at most the last `block_size`), take
# the logits of the **last** position, draw a token from them, append it, repeat.
#
# ## 9. Sampling: `torch.multinomial`, temperature and top-k
#
# The logits of the last position become probabilities with a softmax. Always taking the most likely token
# (greedy decoding) tends to repeat itself; drawing at random from the probabilities gives varied text.
# `torch.multinomial(probs, num_samples=1)` draws one index per row of a `(B, V)` tensor of probabilities
# (pass `generator=` for reproducible draws that leave the global random state alone). Two knobs shape the
# distribution first:
#
# - **temperature** `τ`: softmax of `logits / τ`. `τ < 1` sharpens the distribution (safer, more repetitive),
#   `τ > 1` flattens it (more surprising, more mistakes); `τ → 0` is greedy decoding;
# - **top-k**: keep only the `k` largest logits, set the others to `-inf`, so the long tail of unlikely tokens
#   can never be drawn.

# %%
logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -2.0]])        # (B, V)
fig, axes = plt.subplots(1, 4, figsize=(14, 2.6), sharey=True)
for ax, (tau, top_k) in zip(axes, [(1.0, None), (0.5, None), (2.0, None), (1.0, 3)]):
    scaled = logits / tau
    if top_k is not None:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]            # (B, 1): the k-th largest
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    ax.bar(range(6), scaled.softmax(dim=-1)[0])
    ax.set_title(f"temperature {tau}" + (f", top-k {top_k}" if top_k else ""), fontsize=9)
    ax.set_xlabel("token")
plt.tight_layout()
plt.show()

g = torch.Generator().manual_seed(0)
draws = torch.multinomial(logits.softmax(dim=-1).expand(4000, -1), 1, generator=g).flatten()
print("frequencies of 4000 draws:", (torch.bincount(draws, minlength=6) / 4000).tolist())
print("probabilities:            ", [round(p, 3) for p in logits.softmax(dim=-1)[0].tolist()])

# %% [markdown]
# ## Exercise: `sample_next`
#
# Write `sample_next(logits, temperature=1.0, top_k=None, generator=None)` that draws the next token of every
# row of `logits (B, V)` and returns the ids `(B,)` as int64 (`(1,)` for a single row), on the logits' device:
#
# - draw with `torch.multinomial(..., generator=generator)` from `softmax(logits / temperature)` restricted to
#   the `top_k` largest logits (ties at the k-th value may be kept; `top_k >= V` means no restriction);
# - leave `logits` unmodified; the same seeded generator gives the same draws;
# - `temperature <= 0` or `top_k < 1` raises `ValueError`.
#
# The check is statistical: it draws many tokens and compares their frequencies with the distribution you should
# be sampling from.

# %%
def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator=None) -> torch.Tensor:
    """Draw one token id per row of logits (B, V) with temperature and top-k; returns (B,) int64."""
    ### BEGIN SOLUTION
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    scaled = logits / temperature                                          # a new tensor: logits untouched
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]                    # (B, 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(dim=-1)                                         # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)     # (B,)
    ### END SOLUTION


# %%
check(sample_next)

# %% [markdown]
# ## 10. A tiny GPT on the village chronicle
#
# The course ships a corpus written for it: `datasets/corpus/tiny_corpus.txt`, a day-by-day chronicle of an
# invented village, Pellmoor (about 320,000 characters). It is regular enough that a small character-level model
# learns its names, places, punctuation and layout in a minute on a CPU.
#
# The vocabulary is the corpus's **characters, sorted**; each character's id is its index in that list. The
# text is split once: the first part trains, the last part validates.

# %%
text = (datasets_dir() / "corpus" / "tiny_corpus.txt").read_text(encoding="utf-8")
chars = sorted(set(text))                                      # the vocabulary: every character, sorted
stoi = {ch: i for i, ch in enumerate(chars)}
data = torch.tensor([stoi[ch] for ch in text])                 # (N,) int64
n_train = int(0.9 * len(data))                                 # the first 90% train, the last 10% validate
train_data, val_data = data[:n_train], data[n_train:]
print(f"{len(text):,} characters, vocabulary of {len(chars)}: {''.join(chars)!r}")
print(f"train {len(train_data):,} · validation {len(val_data):,}")
print(text[:200])

# %% [markdown]
# Training examples are windows of `block_size + 1` consecutive characters at random places: the first
# `block_size` are the input `x`, the same window shifted by one is the target `y`. Every position is an
# example: from `x[:t+1]` the model must predict `y[t]`.

# %%
block_size = 8
start = 100
x, y = train_data[start:start + block_size], train_data[start + 1:start + block_size + 1]
for t in range(4):
    print(f"seeing {''.join(chars[i] for i in x[:t + 1])!r:<8} -> predict {chars[y[t]]!r}")

# %% [markdown]
# ### The teaching model
#
# The teaching GPT is the pieces of this lesson put together: token embeddings plus learned position embeddings,
# a stack of pre-norm blocks with causal self-attention (here `nn.TransformerEncoderLayer` with
# `norm_first=True` and GELU, and the causal mask), a final LayerNorm and a linear head that turns each
# position's vector into `vocab_size` logits for the next character.

# %%
class TeachingGPT(nn.Module):
    """Token + position embeddings, causal pre-norm encoder layers, LayerNorm, a linear head."""

    def __init__(self, vocab_size: int, block_size: int, embed_dim: int = 64, num_heads: int = 4,
                 num_layers: int = 2):
        super().__init__()
        self.token = nn.Embedding(vocab_size, embed_dim)
        self.position = nn.Embedding(block_size, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, 4 * embed_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab_size)

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, vocab_size); position t sees positions <= t only."""
        T = idx.shape[1]
        x = self.token(idx) + self.position(torch.arange(T, device=idx.device))     # (B, T, E)
        causal = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        return self.head(self.ln(self.blocks(x, mask=causal, is_causal=True)))      # (B, T, V)


print(f"{sum(p.numel() for p in TeachingGPT(len(chars), 64).parameters()):,} parameters")

# %% [markdown]
# ### `AdamW`, the optimizer of transformers
#
# Transformers are nearly always trained with **AdamW**. Plain `Adam(weight_decay=...)` adds the decay to the
# gradient, where Adam's per-parameter scaling then shrinks it for exactly the parameters with large gradients;
# AdamW **decouples** it: every step first shrinks each weight by `lr · weight_decay · w`, then takes the Adam
# step. Its default `weight_decay` is 0.01 (Adam's is 0). Larger models usually go further — `weight_decay=0.1`,
# `betas=(0.9, 0.95)`, a warm-up of the learning rate followed by a slow decay, gradient clipping at 1.0 — and
# often exempt biases, LayerNorm weights and embeddings from the decay with two **parameter groups**:

# %%
model = TeachingGPT(len(chars), 64)
decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "token" not in name and "position" not in name]
no_decay = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "token" not in name
                                                              and "position" not in name)]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95))
print([(len(group["params"]), group["weight_decay"]) for group in optimizer.param_groups])

# %% [markdown]
# For a model as small and a training as short as ours none of this matters much, and the recipe below keeps
# AdamW's defaults.
#
# ### The training recipe
#
# The `TinyGPT` check at the end trains **your** model itself with one fixed recipe; the check module keeps it in
# `GPT_RECIPE`, and this notebook reads it from there:
#
# - `torch.manual_seed(seed)`, then the model is built: `TinyGPT(vocab_size, block_size)`;
# - `AdamW(model.parameters(), lr=lr)` with its default weight decay; `model.train()`;
# - `steps` steps, each on a batch of `batch_size` windows of `block_size + 1` characters of the training split,
#   whose starts are drawn with `torch.randint(len(train) - block_size - 1, (batch_size,), generator=g)` from one
#   `torch.Generator` `g` seeded with `seed` for the whole run;
# - the loss is `F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))`, over every position of every window;
# - the validation loss is the same cross-entropy on evenly spaced windows of the validation split, in
#   evaluation mode without gradients.

# %%
from grader.checks.lesson10_attention import GPT_MAX_VAL_LOSS, GPT_RECIPE, VAL_WINDOWS

print(GPT_RECIPE, "· required validation loss at most", GPT_MAX_VAL_LOSS)


def validation_loss(model, block_size: int) -> float:
    """Mean cross-entropy over VAL_WINDOWS evenly spaced windows of the validation split, in eval mode."""
    stride = (len(val_data) - block_size - 1) // VAL_WINDOWS
    windows = val_data[torch.arange(VAL_WINDOWS)[:, None] * stride + torch.arange(block_size + 1)]   # (W, T+1)
    model.eval()
    with torch.no_grad():
        logits = model(windows[:, :-1])                                        # (W, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
    model.train()
    return loss.item()


def train_gpt(make_model, block_size: int, batch_size: int, steps: int, lr: float, seed: int, eval_every: int = 50):
    """Train make_model(vocab_size, block_size) with the recipe; return it and its losses along the way."""
    torch.manual_seed(seed)
    model = make_model(len(chars), block_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    offsets = torch.arange(block_size + 1)
    history = {"step": [], "train": [], "val_step": [0], "val": [validation_loss(model, block_size)]}
    model.train()
    for step in range(1, steps + 1):
        starts = torch.randint(len(train_data) - block_size - 1, (batch_size,), generator=g)
        windows = train_data[starts[:, None] + offsets]                         # (B, T+1)
        x, y = windows[:, :-1], windows[:, 1:]                                  # (B, T) each: y is x shifted by one
        logits = model(x)                                                       # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["step"].append(step)
        history["train"].append(loss.item())
        if step % eval_every == 0 or step == steps:
            history["val_step"].append(step)
            history["val"].append(validation_loss(model, block_size))
    model.eval()
    return model, history


start = time.perf_counter()
gpt, history = train_gpt(TeachingGPT, **GPT_RECIPE)
print(f"trained in {time.perf_counter() - start:.1f} s; validation loss {history['val'][-1]:.3f} "
      f"(uniform guessing: ln {len(chars)} = {math.log(len(chars)):.2f})")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(history["step"], history["train"], lw=0.8, alpha=0.6, label="training batch")
ax.plot(history["val_step"], history["val"], "o-", label="validation")
ax.axhline(GPT_MAX_VAL_LOSS, color="0.5", ls="--", lw=1, label=f"the check's bar ({GPT_MAX_VAL_LOSS})")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy (nats per character)")
ax.set_title("the tiny GPT learning the chronicle")
ax.legend()
plt.show()

# %% [markdown]
# The loss starts near `ln V` (every character equally likely) and falls steeply as the model learns first the
# character frequencies, then words and names, then the phrases that the chronicle repeats. Training and
# validation losses stay together: with 300,000 characters and a few steps the model is far from memorising.
#
# ### Generating text
#
# Generation needs a sampler; `sample_next` is your exercise, so the teaching cell writes the same few lines
# inline. The context is cropped to the last `block_size` characters, since the position table has only that
# many rows.

# %%
def generate(model, prompt: str, n_chars: int, block_size: int, temperature: float = 1.0, top_k=None, seed=0):
    """Continue `prompt` by n_chars characters drawn from the model."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor([[stoi[ch] for ch in prompt]])                         # (1, T)
    model.eval()
    with torch.no_grad():
        for _ in range(n_chars):
            logits = model(idx[:, -block_size:])[:, -1] / temperature        # (1, V): the last position only
            if top_k is not None:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=g)   # (1, 1)
            idx = torch.cat([idx, nxt], dim=1)
    return "".join(chars[i] for i in idx[0].tolist())


bs = GPT_RECIPE["block_size"]
print(generate(gpt, "Day 7 of spring in Pellmoor.\n", 300, bs))
print("--- temperature 0.5, top-k 5: safer, more repetitive ---")
print(generate(gpt, "Day 7 of spring in Pellmoor.\n", 200, bs, temperature=0.5, top_k=5))
print("--- temperature 1.5: more inventive, more mistakes ---")
print(generate(gpt, "Day 7 of spring in Pellmoor.\n", 200, bs, temperature=1.5))

# %% [markdown]
# In a few hundred steps the model has picked up the layout of a day, the villagers' names, the quoted
# dialogue and much of the vocabulary; the sentences are plausible in form and often nonsense in content. A real
# LLM is this recipe scaled up by many orders of magnitude: tokens of several characters, more and wider
# blocks, far more text and steps.

# %% [markdown]
# ## Exercise: `TinyGPT`
#
# Write `TinyGPT(vocab_size, block_size)`, an `nn.Module` whose `forward(idx)` takes ids `idx (B, T)` (int64,
# `T <= block_size`) and returns logits `(B, T, vocab_size)`, **causal**: the logits at position `t` depend only
# on `idx[:, :t + 1]`.
#
# **How it is graded.** The check does not use anything you train here: it builds a fresh
# `TinyGPT(len(chars), GPT_RECIPE["block_size"])` after `torch.manual_seed(0)` and
#
# 1. checks the structure before training: the logits' shape for `T = block_size` and a shorter `T`, causality
#    (changing later ids must not change earlier logits), and that the fresh model is still near uniform (so
#    nothing is trained or loaded in `__init__`); without a GPU it also runs one forward on the `meta` device to
#    catch tensors made on the CPU (use `device=idx.device`);
# 2. trains it with exactly the recipe above (`train_gpt`), which must fit in about **30 s** on a 2-core CPU
#    (the check stops at 90 s), and requires a **validation loss of at most `GPT_MAX_VAL_LOSS`** — only the
#    optimizer may change the parameters, and a fresh model loaded with the trained `state_dict` must give the
#    same logits (everything learned lives in the parameters);
# 3. generates text with its own sampler, with contexts of every length up to `block_size`.
#
# Any building blocks are allowed here, `nn.MultiheadAttention`, `F.scaled_dot_product_attention` and
# `nn.LayerNorm` included. Two pre-norm blocks of width 64 with 4 heads and a GELU MLP, learned position
# embeddings and a final LayerNorm — the teaching model's size — pass with room to spare, while a single small
# block does not. Try yours first with `train_gpt(TinyGPT, **GPT_RECIPE)`.

# %%
class TinyGPT(nn.Module):
    """A character-level GPT: embeddings, causal pre-norm blocks, a linear head; (B, T) ids -> (B, T, V) logits."""

    def __init__(self, vocab_size: int, block_size: int):
        super().__init__()
        ### BEGIN SOLUTION
        self.embed_dim, self.num_heads = 64, 4
        E = self.embed_dim
        self.token = nn.Embedding(vocab_size, E)
        self.position = nn.Embedding(block_size, E)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "ln_1": nn.LayerNorm(E),
                "qkv": nn.Linear(E, 3 * E),                  # queries, keys and values in one matrix product
                "proj": nn.Linear(E, E),
                "ln_2": nn.LayerNorm(E),
                "mlp": nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E)),
            })
            for _ in range(2))
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, vocab_size)
        ### END SOLUTION

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, vocab_size), position t seeing positions <= t only."""
        ### BEGIN SOLUTION
        B, T = idx.shape
        H, D = self.num_heads, self.embed_dim // self.num_heads
        x = self.token(idx) + self.position(torch.arange(T, device=idx.device))    # (B, T, E)
        for block in self.blocks:
            q, k, v = block["qkv"](block["ln_1"](x)).split(self.embed_dim, dim=-1)  # each (B, T, E)
            q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))      # each (B, H, T, D)
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)      # (B, H, T, D)
            x = x + block["proj"](attended.transpose(1, 2).reshape(B, T, self.embed_dim))
            x = x + block["mlp"](block["ln_2"](x))
        return self.head(self.ln_f(x))                                              # (B, T, V)
        ### END SOLUTION


# %%
check(TinyGPT)

# %% [markdown]
# ## Summary
#
# - Attention: `softmax(q kᵀ / √E + mask) v`; queries ask, keys answer, values are what is handed over; the
#   `1/√E` keeps the softmax from saturating.
# - Masks: float masks are **added** (`-inf` removes a key); boolean masks mean **"may attend"** in
#   `F.scaled_dot_product_attention` and **"masked"** in `nn.MultiheadAttention` (`attn_mask`,
#   `key_padding_mask`) — convert with `~`. A query with every key masked gives nan (zeros from the fused CPU
#   kernel). Causal = lower-triangular, top-left aligned.
# - `nn.MultiheadAttention` packs `W_q, W_k, W_v` into `in_proj_weight (3E, E)` (and `in_proj_bias (3E,)`),
#   splits heads as `(B, L, H, D) -> (B, H, L, D)`, scales by `1/√D`, returns head-averaged weights; use
#   `batch_first=True`. A per-sequence 3-D `attn_mask` is `(B * num_heads, L, S)`, made with
#   `repeat_interleave(num_heads, dim=0)`; `(1, L, S)` is refused.
# - Attention ignores order: add positions (learned embeddings, or the sinusoidal table).
# - `LayerNorm` normalises each token over its features with the **biased** variance; no batch statistics.
# - A pre-norm block: `x + attn(ln(x))`, then `x + mlp(ln(x))` with a GELU MLP of width `4E`;
#   `nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)` is that block.
# - A GPT predicts the next token at every position with a causal mask; pre-training does that on huge corpora,
#   fine-tuning adapts the result with little data. Generate by sampling with `torch.multinomial`, shaped by
#   temperature and top-k. Train transformers with `AdamW`.
