# %% [markdown]
# # 09 · Recurrent networks: sequences, hidden state, padding and packing
#
# A name, a sentence, a sensor trace: the inputs of this lesson are **sequences**, and they do not all have the
# same length. A recurrent network reads a sequence one step at a time and carries a **hidden state** from each
# step to the next, a fixed-size summary of everything it has read so far. The same weights are used at every
# step, so one network handles sequences of any length.
#
# You will write the recurrence yourself (an RNN step, an LSTM step, a whole RNN layer), learn the shapes and
# parameter layouts of PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU` (where most bugs hide), turn text into
# integer ids without torchtext, batch sequences of different lengths with padding, keep the padding out of the
# result, and train a classifier that tells the language of a surname from its letters. Packing, PyTorch's way
# of skipping the padding altogether, closes the lesson.
#
# One rule for the exercises: `nn.RNN`, `nn.LSTM`, `nn.GRU`, their `...Cell` versions and the functional
# recurrent ops (`torch.rnn_tanh_cell`, `torch.lstm_cell`, ...) are forbidden in every exercise except the last,
# which is about running such a module. And as in every lesson, each answer cell is graded on its own with only
# the lesson's imports around it: a helper or an import your answer needs belongs in that cell.

# %%
from grader import check, hint

# %%
import csv
import re
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, Rectangle
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from grader.data import datasets_dir, surnames

# A recurrent step is a handful of small operations; on a CPU one thread runs them faster than several that
# must wait for each other (the checks run your code on one thread too).
torch.set_num_threads(1)
torch.manual_seed(0)

# %% [markdown]
# ## 1. Sequences and a hidden state
#
# A sequence is `x_1, x_2, ..., x_T`, each `x_t` a vector of `I` features (here: a letter, one-hot encoded). The
# simplest recurrent network, the **Elman RNN**, keeps a hidden state `h_t` of `H` numbers and updates it once
# per step:
#
# $$h_t = \tanh(x_t W_{ih}^\top + b_{ih} + h_{t-1} W_{hh}^\top + b_{hh}), \qquad h_0 = 0$$
#
# - `W_ih (H, I)` reads the new input, `W_hh (H, H)` carries the previous state forward; both are shared by
#   every step, so the number of parameters does not depend on `T`.
# - `tanh` keeps every entry of the state in (-1, 1), however long the sequence.
# - `h_T`, the state after the last step, summarises the whole sequence; `h_1, ..., h_T` together are the
#   **outputs** (one per step).
#
# Drawing the loop once per step gives the **unrolled** network: a chain of `T` copies of the same cell, each
# passing its state to the next. Backpropagation runs backwards along this chain ("backpropagation through time"),
# which is why long sequences make gradients vanish or explode (section 7).
#
# Here is one step after another for the letters of a name, with a random cell of `H = 6`:

# %%
letters = "abcdefghijklmnopqrstuvwxyz"
word = "nowak"
H = 6
W_ih = torch.randn(H, len(letters)) * 0.8   # (H, I): one column per letter
W_hh = torch.randn(H, H) * 0.5              # (H, H)
b = torch.zeros(H)

x = F.one_hot(torch.tensor([letters.index(c) for c in word]), len(letters)).float()  # (T, I) = (5, 26)
h = torch.zeros(H)                                                                     # h_0
states = []
for x_t in x:                                    # one step per letter, the same weights every time
    h = torch.tanh(W_ih @ x_t + W_hh @ h + b)    # (H,)
    states.append(h)
states = torch.stack(states)                     # (T, H): row t is h_{t+1}
print(states.shape)
print(states.round(decimals=2))


# %%
def draw_unrolled(word, states):
    """The unrolled RNN: a cell per step, its input letter below, its hidden state as a coloured column above."""
    cmap, T, H = plt.get_cmap("coolwarm"), len(word), states.shape[1]
    fig, ax = plt.subplots(figsize=(10, 4))
    arrow = dict(arrowstyle="-|>", mutation_scale=12, color="black", lw=1)
    for t in range(T + 1):
        left = 2.0 * t
        if t < T:
            ax.add_patch(Rectangle((left, 0), 1.2, 0.8, fc="#e3e3f3", ec="black"))
            ax.text(left + 0.6, 0.4, "cell", ha="center", va="center", fontsize=9)
            ax.text(left + 0.6, -0.95, f"x{t + 1} = '{word[t]}'", ha="center", fontsize=10)
            ax.add_patch(FancyArrowPatch((left + 0.6, -0.6), (left + 0.6, 0), **arrow))
            ax.add_patch(FancyArrowPatch((left + 0.6, 0.8), (left + 0.6, 1.15), **arrow))
            for k in range(H):  # h_t, one square per hidden unit
                ax.add_patch(Rectangle((left + 0.35, 1.2 + 0.32 * k), 0.5, 0.3,
                                       fc=cmap((states[t, k].item() + 1) / 2), ec="gray", lw=0.5))
            ax.text(left + 0.6, 1.3 + 0.32 * H, f"h{t + 1}", ha="center", fontsize=10)
        if t == 0:
            ax.text(-1.2, 0.4, "h0 = 0", ha="right", va="center", fontsize=10)
        else:
            ax.text(left - 0.4, 0.55, f"h{t}", ha="center", fontsize=8)
        ax.add_patch(FancyArrowPatch((left - 0.8, 0.4), (left if t < T else left - 0.1, 0.4), **arrow))
    ax.set_xlim(-2.6, 2.0 * T)
    ax.set_ylim(-1.3, 1.8 + 0.32 * H)
    ax.axis("off")
    fig.colorbar(plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(-1, 1)), ax=ax, shrink=0.6,
                 label="hidden unit value")
    ax.set_title("An unrolled RNN: the same cell at every step, the state carried to the right")
    plt.show()


draw_unrolled(word, states)

# %% [markdown]
# Batched, the step is the same formula with one row per sequence: `x (B, I)`, `h (B, H)`, and the products
# become `x @ W_ih.T` and `h @ W_hh.T`. That is what `nn.RNNCell` computes, and `nn.RNN` is a loop over it.
#
# ## Exercise: `rnn_cell`
#
# Write `rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh)`, one step of an Elman RNN for a batch:
#
# - `x (B, I)`, `h (B, H)`, `W_ih (H, I)`, `W_hh (H, H)`, `b_ih (H,)` and `b_hh (H,)`, the layout of
#   `nn.RNNCell`'s `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`;
# - return `tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`, shape `(B, H)`;
# - either bias may be `None`: leave that term out.
#
# No recurrent modules or functions: the arithmetic is yours. The check also uses `I == H`, where swapping
# `W_ih` and `W_hh` gives the right shape and wrong numbers, and it compares gradients.

# %%
def rnn_cell(x, h, W_ih, W_hh, b_ih, b_hh):
    """One Elman RNN step: tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh), a bias left out when it is None."""
    ### BEGIN SOLUTION
    pre = x @ W_ih.T + h @ W_hh.T            # (B, H)
    if b_ih is not None:
        pre = pre + b_ih
    if b_hh is not None:
        pre = pre + b_hh
    return torch.tanh(pre)
    ### END SOLUTION


# %%
check(rnn_cell)

# %% [markdown]
# ## 2. PyTorch's recurrent layers: shapes and `batch_first`
#
# `nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
# dropout=0.0, bidirectional=False)` runs the whole loop (in fast C++ code, or cuDNN on a GPU). `nn.LSTM` and
# `nn.GRU` take the same arguments. With `D = 2` for a bidirectional layer and `D = 1` otherwise:
#
# | tensor | `batch_first=False` (the default) | `batch_first=True` |
# | --- | --- | --- |
# | input `x` | `(T, B, I)` | `(B, T, I)` |
# | `output`: the last layer's state at every step | `(T, B, D * H)` | `(B, T, D * H)` |
# | `h_0` (optional, zeros if left out) and `h_n`: every layer's final state | `(D * num_layers, B, H)` | **still** `(D * num_layers, B, H)` |
#
# An unbatched input `(T, I)` gives `output (T, D * H)` and `h_n (D * num_layers, H)`.
#
# **Pitfall: `batch_first` does not apply to the hidden state.** It changes the layout of the input and the
# output only; `h_0` and `h_n` keep the layer dimension first and the batch second. A `(B, 1, H)` hidden state
# is refused (and when `B` happens to equal `D * num_layers`, a transposed one is silently accepted):

# %%
rnn = nn.RNN(input_size=4, hidden_size=5, batch_first=True)
x = torch.randn(3, 7, 4)                     # (B, T, I)
output, h_n = rnn(x)
print("output", tuple(output.shape), " h_n", tuple(h_n.shape))
try:
    rnn(x, torch.zeros(3, 1, 5))             # (B, 1, H): the batch_first layout, wrongly
except RuntimeError as e:
    print("RuntimeError:", e)
print("h_0 as (1, B, H) works:", tuple(rnn(x, torch.zeros(1, 3, 5))[1].shape))

# %% [markdown]
# For one layer in one direction, `output[:, -1]` (the last step's state) and `h_n[0]` are the same numbers;
# with more layers or two directions they are not, as we see next.

# %%
print(torch.allclose(output[:, -1], h_n[0]))

# %% [markdown]
# ### `num_layers` and `bidirectional`
#
# - **`num_layers = L`** stacks `L` RNNs: layer `l` reads the outputs of layer `l - 1` at every step (with
#   `dropout` between layers, when set). `output` is the **last** layer's; `h_n` holds the final state of
#   **every** layer, and `h_n[-1]` is the last layer's.
# - **`bidirectional=True`** runs a second RNN from the end of the sequence to its start. `output` concatenates
#   the two directions on the feature dimension, `[forward | backward]`, so its last dimension is `2 * H`. In
#   `h_n` the directions alternate: `(num_layers * 2, B, H)` is `h_n.view(num_layers, 2, B, H)`, and `h_n[-2]`,
#   `h_n[-1]` are the last layer's forward and backward final states.
#
# **Pitfall: `output[:, -1]` is not a summary of a bidirectional run.** Its backward half comes from the backward
# RNN's *first* step (it has read only the last element); the backward direction's summary of the whole
# sequence sits at `output[:, 0, H:]`.

# %%
gru = nn.GRU(input_size=4, hidden_size=5, num_layers=2, bidirectional=True, batch_first=True)
output, h_n = gru(x)                                      # x (3, 7, 4)
print("output", tuple(output.shape), " h_n", tuple(h_n.shape))
by_layer = h_n.view(2, 2, 3, 5)                           # (num_layers, directions, B, H)
print("last layer, forward  == output[:, -1, :H]:", torch.allclose(by_layer[-1, 0], output[:, -1, :5]))
print("last layer, backward == output[:, 0, H:]: ", torch.allclose(by_layer[-1, 1], output[:, 0, 5:]))
print("last layer, backward == output[:, -1, H:]:", torch.allclose(by_layer[-1, 1], output[:, -1, 5:]))

# %% [markdown]
# ### Parameter names and the default initialisation
#
# A recurrent layer names its parameters after the layer `l` they belong to: `weight_ih_l{l}`, `weight_hh_l{l}`,
# `bias_ih_l{l}`, `bias_hh_l{l}`, with the suffix `_reverse` for the backward direction. Layer 0 reads the input
# (`I` features); a layer above it reads `D * H`. An LSTM stacks its 4 gates and a GRU its 3 in the rows, so
# `weight_ih_l0` is `(G * H, I)` with `G` = 1 (RNN), 4 (LSTM), 3 (GRU).

# %%
for name, p in nn.LSTM(input_size=3, hidden_size=5, num_layers=2, bidirectional=True).named_parameters():
    print(f"{name:<24} {tuple(p.shape)}")

# %% [markdown]
# Every weight and bias of `nn.RNN`, `nn.LSTM` and `nn.GRU` starts uniform in `(-1/√H, 1/√H)`, where `H` is the
# hidden size (not the input size, as for `nn.Linear`):

# %%
big = nn.RNN(input_size=10, hidden_size=400)
print(f"1/sqrt(H) = {400 ** -0.5:.4f}")
for name, p in big.named_parameters():
    print(f"{name:<14} min {p.min().item():+.4f}  max {p.max().item():+.4f}")

# %% [markdown]
# ## 3. LSTM and GRU: gated recurrences
#
# The Elman RNN rewrites its whole state at every step, and its gradients shrink or grow geometrically along the
# sequence. The **LSTM** adds a second state, the **cell** `c`, which changes only through gates: numbers in
# (0, 1) that decide, unit by unit, what to forget, what to write and what to show. From the pre-activations
# `x W_ihᵀ + b_ih + h W_hhᵀ + b_hh`, of shape `(B, 4H)`, cut into four blocks of `H` columns:
#
# | block | gate | activation | role |
# | --- | --- | --- | --- |
# | 0 | `i`, input gate | sigmoid | how much of the candidate to write |
# | 1 | `f`, forget gate | sigmoid | how much of the old cell to keep |
# | 2 | `g`, candidate | **tanh** | what could be written |
# | 3 | `o`, output gate | sigmoid | how much of the cell to show |
#
# $$c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')$$
#
# **Pitfall: the gate order.** PyTorch stacks the blocks as **i, f, g, o** in `weight_ih`, `weight_hh` and both
# biases. Other libraries chose otherwise (TensorFlow 1's `LSTMCell` used i, g, f, o), so weights moved between
# frameworks must be reordered, and a hand-written cell that cuts the blocks in another order has the right
# shapes and the wrong numbers. The order also tells you where the forget gate's bias lives, which many people
# initialise to 1 so that a fresh LSTM keeps its cell by default:

# %%
H = 5
lstm = nn.LSTM(input_size=3, hidden_size=H, batch_first=True)
print("weight_ih_l0", tuple(lstm.weight_ih_l0.shape), "=", [tuple(w.shape) for w in lstm.weight_ih_l0.chunk(4)])
with torch.no_grad():
    lstm.bias_ih_l0[H:2 * H] = 1.0      # block 1 of 4: the forget gate
    lstm.bias_hh_l0[H:2 * H] = 0.0      # the two biases are added, so set both
print("forget-gate bias:", (lstm.bias_ih_l0 + lstm.bias_hh_l0)[H:2 * H])

# %% [markdown]
# An LSTM's state is the pair `(h, c)`: it takes `(h_0, c_0)` and returns `output, (h_n, c_n)`, both states
# laid out `(D * num_layers, B, H)`. `output` holds only `h` at every step.
#
# **Pitfall: `h[-1]` on an LSTM's state.** Code written for `nn.RNN`/`nn.GRU`, `output, h = rnn(x)` then
# `h[-1]`, picks `c_n` when the module is an LSTM, because `h` is then the tuple `(h_n, c_n)`:

# %%
output, state = lstm(torch.randn(2, 6, 3))       # (B, T, I) = (2, 6, 3)
print(type(state).__name__, [tuple(s.shape) for s in state])
h_n, c_n = state
print("state[-1] is c_n:", state[-1] is c_n, "· the last layer's h:", tuple(h_n[-1].shape))

# %% [markdown]
# The **GRU** is a lighter gated cell with one state. Its blocks are **r, z, n** (reset, update, new), 3H rows:
#
# $$r = \sigma(\dots), \quad z = \sigma(\dots), \quad n = \tanh(x W_{in}^\top + b_{in} + r \odot (h W_{hn}^\top + b_{hn})), \quad h' = (1 - z) \odot n + z \odot h$$
#
# where each `...` is that gate's block of `x W_ihᵀ + b_ih + h W_hhᵀ + b_hh`. Note where the reset gate acts:
# on the hidden part of `n` *including its bias* `b_hn`, which is why the GRU's two biases cannot simply be merged
# into one. A `z` near 1 keeps the old state. A GRU often trains as well as an LSTM, and a little faster.
#
# ## Exercise: `lstm_cell`
#
# Write `lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh)`, one LSTM step for a batch, matching `nn.LSTMCell`:
#
# - `x (B, I)`, `state` the tuple `(h, c)` with `h (B, H)` and `c (B, H)`; `W_ih (4H, I)`, `W_hh (4H, H)`,
#   `b_ih (4H,)`, `b_hh (4H,)`, the blocks stacked in the order **i, f, g, o**; either bias may be `None`;
# - return the tuple `(h', c')` from the equations above (sigmoid for i, f, o; tanh for g; `h' = o ⊙ tanh(c')`).

# %%
def lstm_cell(x, state, W_ih, W_hh, b_ih, b_hh):
    """One LSTM step (gates i, f, g, o): returns (h', c')."""
    ### BEGIN SOLUTION
    h, c = state
    gates = x @ W_ih.T + h @ W_hh.T                  # (B, 4H)
    if b_ih is not None:
        gates = gates + b_ih
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=-1)              # each (B, H)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    return h_next, c_next
    ### END SOLUTION


# %%
check(lstm_cell)

# %% [markdown]
# ## 4. A recurrent layer of your own
#
# `nn.RNN` is the step of section 1 in a loop over time, plus the bookkeeping: parameters with the right names,
# an optional initial state, every step's state collected into `output`. Writing it yourself is the surest way to
# remember its layouts.
#
# Two habits for loops like this one. Collect the states in a Python list and `torch.stack` them at the end
# (writing each step into a preallocated tensor in place works too, but is easy to get wrong under autograd).
# And create the zero initial state with the input's device and dtype, `x.new_zeros(...)`, so that the module
# works on a GPU and in float64.
#
# ## Exercise: `RNN`
#
# Write the module `RNN(input_size, hidden_size)`: one layer, tanh, `batch_first=True`.
#
# - Parameters named and shaped exactly like `nn.RNN(input_size, hidden_size)`'s: `weight_ih_l0 (H, I)`,
#   `weight_hh_l0 (H, H)`, `bias_ih_l0 (H,)`, `bias_hh_l0 (H,)`, so that a `state_dict` loads strictly from
#   `nn.RNN` into your module and back. Initialise them as you like (`nn.RNN` uses U(-1/√H, 1/√H)); the check
#   loads its own values.
# - `forward(x, h0=None)`: `x (B, T, I)`, `h0 (1, B, H)` or `None` for zeros. Return `(output, h_n)` with
#   `output (B, T, H)` the state after every step and `h_n (1, B, H)` the last one: the same numbers as
#   `nn.RNN(input_size, hidden_size, batch_first=True)` with the same parameters.

# %%
class RNN(nn.Module):
    """A one-layer tanh RNN with batch_first=True, parameters laid out like nn.RNN's."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        ### BEGIN SOLUTION
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = hidden_size ** -0.5
        self.weight_ih_l0 = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh_l0 = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias_ih_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))
        self.bias_hh_l0 = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))
        ### END SOLUTION

    def forward(self, x, h0=None):
        """x (B, T, I), h0 (1, B, H) or None -> (output (B, T, H), h_n (1, B, H))."""
        ### BEGIN SOLUTION
        h = x.new_zeros(x.shape[0], self.hidden_size) if h0 is None else h0[0]  # (B, H)
        outputs = []
        for t in range(x.shape[1]):
            h = torch.tanh(x[:, t] @ self.weight_ih_l0.T + self.bias_ih_l0
                           + h @ self.weight_hh_l0.T + self.bias_hh_l0)         # (B, H)
            outputs.append(h)
        return torch.stack(outputs, dim=1), h.unsqueeze(0)
        ### END SOLUTION


# %%
check(RNN)

# %% [markdown]
# ## 5. From text to integer ids
#
# A network reads numbers, so text goes through two steps first:
#
# 1. a **tokenizer** cuts a string into tokens: characters for names, words (and punctuation) for sentences;
# 2. a **vocabulary** gives every token an integer id, and turns ids back into tokens.
#
# Two special tokens take the first ids by convention: **`<pad>`** (id 0), the filler that makes sequences of
# different lengths the same length in a batch, and **`<unk>`** (id 1), what a token the vocabulary has never seen
# becomes. The vocabulary is built from the **training** data only: at test time an unseen token must become
# `<unk>`, exactly as it would for new data.
#
# **torchtext is retired.** Older tutorials use `torchtext.data.get_tokenizer("basic_english")` and
# `torchtext.vocab.build_vocab_from_iterator(..., specials=["<unk>"])`. torchtext's development stopped in 2024
# (0.18 was its last release, built for torch 2.3), and current PyTorch has no matching version. Both pieces are a
# few lines of plain Python:

# %%
def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: 'Not bad, really!' -> ['not', 'bad', ',', 'really', '!']."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_vocab(token_lists, min_freq: int = 1) -> list[str]:
    """id -> token: <pad> and <unk> first, then every token seen at least min_freq times, most frequent first."""
    counts = Counter(token for tokens in token_lists for token in tokens)
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return ["<pad>", "<unk>"] + kept


with open(datasets_dir() / "sentiment" / "train.csv", newline="", encoding="utf-8") as f:
    sentences = [row["text"] for row in csv.DictReader(f)]
itos_words = build_vocab(tokenize(text) for text in sentences)                    # id -> token
stoi_words = {token: i for i, token in enumerate(itos_words)}                        # token -> id
print(len(itos_words), "tokens:", itos_words[:12], "...")

ids = [stoi_words.get(token, stoi_words["<unk>"]) for token in tokenize("The soup was not bland, it was gorgeous!")]
print(ids)
print([itos_words[i] for i in ids])

# %% [markdown]
# `min_freq` sends rare tokens to `<unk>` on purpose: the model then sees `<unk>` during training and learns
# something useful for it, instead of meeting it for the first time at test time.
#
# ### `nn.Embedding`: ids to vectors
#
# `nn.Embedding(num_embeddings, embedding_dim)` is a learnable table `weight (V, E)`; given integer ids of any
# shape `(...)` it returns their rows, `(..., E)`. That is the same as multiplying a one-hot vector by the table,
# without building the one-hot vectors. A few facts to know:
#
# - the table starts **N(0, 1)**, not scaled by the size like `nn.Linear`;
# - **`padding_idx=0`** makes row 0 start at zeros and never receive a gradient, so the `<pad>` vector stays zero;
# - **`max_norm`** rescales, *in place in `weight`*, every looked-up row whose norm exceeds it: a forward pass
#   changes the parameter (so do not reuse `weight` in the same computation before the lookup);
# - ids must be int64 (or int32) and in `[0, V)`.

# %%
emb = nn.Embedding(num_embeddings=10, embedding_dim=4, padding_idx=0)
ids = torch.tensor([[3, 1, 0], [2, 0, 0]])                 # (B, T) = (2, 3), 0 is <pad>
vectors = emb(ids)                                         # (2, 3, 4)
print(tuple(vectors.shape), "· a large table's mean and std:",
      [round(v.item(), 3) for v in torch.std_mean(nn.Embedding(10_000, 64).weight)][::-1])
vectors.sum().backward()
print("gradient of row 0 (<pad>):", emb.weight.grad[0], "· of row 3:", emb.weight.grad[3])

capped = nn.Embedding(10, 4, max_norm=1.0)
print("row 5 norm before a lookup:", round(capped.weight[5].norm().item(), 3))
capped(torch.tensor([5]))
print("row 5 norm after a lookup: ", round(capped.weight[5].norm().item(), 3), "← the parameter itself changed")

for bad in (torch.tensor([1.0, 2.0]), torch.tensor([10])):
    try:
        emb(bad)
    except (RuntimeError, IndexError) as e:
        print(type(e).__name__ + ":", str(e).splitlines()[0][:100])

# %% [markdown]
# (On a GPU, an id out of range fails as a device-side assertion with a much less helpful message; check
# `ids.max() < V` on the CPU when in doubt.)
#
# ### The surnames
#
# The course ships surnames in eight languages, one file per language in `datasets/surnames/`. The classes are
# the files in sorted order; the split is fixed: a permutation of all names seeded with 0, whose **last fifth is
# held out** and never used for training (this is the split the `NameClassifier` check uses). The vocabulary is
# character-level: `<pad>` 0, `<unk>` 1, then every character of the training names, case kept, in sorted order.

# %%
PAD, UNK = 0, 1
names, labels, classes = surnames()   # one name per line of datasets/surnames/<language>.txt; languages sorted

perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(0)).tolist()
n_held_out = len(names) // 5
train_idx, held_out_idx = perm[:len(names) - n_held_out], perm[len(names) - n_held_out:]

itos = ["<pad>", "<unk>"] + sorted(set("".join(names[i] for i in train_idx)))   # id -> character
stoi = {ch: i for i, ch in enumerate(itos)}                                       # character -> id
print(f"{len(names)} names, {len(train_idx)} for training, {len(held_out_idx)} held out; {len(itos)} ids")
print("characters:", "".join(itos[2:]))
unseen = sum(ch not in stoi for i in held_out_idx for ch in names[i])
print("held-out characters that become <unk>:", unseen)

counts = Counter(labels[i] for i in train_idx)
for label, language in enumerate(classes):
    examples = ", ".join(names[i] for i in train_idx if labels[i] == label)[:60]
    print(f"{language:<8} {counts[label]:5}  {examples}...")

# %% [markdown]
# The classes are far from balanced. The **majority-class baseline**, always answering the most common training
# language, is the accuracy any classifier must beat to have learned anything:

# %%
majority = counts.most_common(1)[0][0]
baseline = sum(labels[i] == majority for i in held_out_idx) / len(held_out_idx)
print(f"always '{classes[majority]}': held-out accuracy {baseline:.3f}")

# %% [markdown]
# ## 6. Batches of different lengths: padding, and what it does to the recurrence
#
# A batch is one tensor, so shorter names are **padded** on the right with `<pad>` up to the longest name of the
# batch, and the true **lengths** travel alongside. `pad_sequence` does the padding:

# %%
def encode_names(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, T) int64 ids right-padded with <pad> to the longest name, lengths (B,), labels y (B,)."""
    seqs = [torch.tensor([stoi.get(ch, UNK) for ch in names[i]]) for i in idx]
    x = pad_sequence(seqs, batch_first=True, padding_value=PAD)          # (B, T)
    lengths = torch.tensor([len(s) for s in seqs])                        # (B,) int64
    return x, lengths, torch.tensor([labels[i] for i in idx])


demo_idx = [next(i for i in train_idx if len(names[i]) == n) for n in (6, 11, 4, 8, 9)]  # a few lengths
x_demo, lengths_demo, _ = encode_names(demo_idx)
print([names[i] for i in demo_idx], lengths_demo.tolist())
print(x_demo)

# %% [markdown]
# **Pitfall: padding enters the recurrence.** A recurrent layer does not know which steps are padding: it keeps
# updating the state through them. Even with `padding_idx=0` (a zero input vector), `h' = tanh(h W_hhᵀ + b)` still
# changes `h`. So for every name shorter than the batch:
#
# - `h_n` and `output[:, -1]` are the state after the padding, not after the name's last letter;
# - the state we want is `output[b, lengths[b] - 1]`, which the padding has not reached yet (it only comes
#   *after* it, on the right).
#
# Compare each name run alone with the same names in one padded batch:

# %%
torch.manual_seed(0)
embed = nn.Embedding(len(itos), 8, padding_idx=PAD)
rnn = nn.RNN(8, 16, batch_first=True)
with torch.no_grad():
    output, h_n = rnn(embed(x_demo))                              # (B, T, H), (1, B, H)
    for b, i in enumerate(demo_idx):
        _, alone = rnn(embed(x_demo[b:b + 1, :lengths_demo[b]]))  # the name without padding
        last_real = output[b, lengths_demo[b] - 1]
        print(f"{names[i]:<12} |h_n - alone| = {(h_n[0, b] - alone[0, 0]).abs().max():.3f}   "
              f"|output at lengths-1 - alone| = {(last_real - alone[0, 0]).abs().max():.3f}")

# %% [markdown]
# Only the longest name (no padding) gets the right state from `h_n`; the output at position `lengths - 1` is
# right for every name.
#
# ## Exercise: `last_timestep`
#
# Write `last_timestep(outputs, lengths)` that picks, for every sequence of a padded batch, its output at its
# last real step:
#
# - `outputs (B, T, H)`, `lengths (B,)` int64 with every entry `>= 1`, possibly on **another device** than
#   `outputs` (lengths often stay on the CPU); the padded positions of `outputs` may hold anything, `inf` and
#   `nan` included, so select the real steps rather than multiply the padding by 0 (`0 * inf` is `nan`);
# - return `(B, H)`, row `b` being `outputs[b, lengths[b] - 1]`, on `outputs`' device, attached to the graph;
# - no Python loop over the batch: build an index (advanced indexing with `torch.arange`, or `gather`) on
#   `outputs.device`.

# %%
def last_timestep(outputs, lengths):
    """outputs (B, T, H), lengths (B,) -> (B, H): each sequence's output at position lengths - 1."""
    ### BEGIN SOLUTION
    rows = torch.arange(outputs.shape[0], device=outputs.device)   # (B,)
    steps = lengths.to(outputs.device) - 1                          # (B,)
    return outputs[rows, steps]
    ### END SOLUTION


# %%
check(last_timestep)

# %% [markdown]
# ## 7. Gradient clipping: exploding gradients through time
#
# Backpropagation through time multiplies, once per step, by `W_hhᵀ` and the derivative of `tanh`. Over many
# steps that product shrinks towards zero (**vanishing** gradients: the first letters stop influencing learning)
# or grows geometrically (**exploding** gradients: one step throws the weights far away, and the loss turns
# into `nan`). Here is the size of the gradient that reaches the *first* input, for recurrent weights scaled
# small, about right, and large:

# %%
lengths_T = [5, 10, 20, 40, 80]
fig, ax = plt.subplots(figsize=(6, 3.5))
for scale in (0.5, 1.0, 3.0):
    norms = []
    for T in lengths_T:
        torch.manual_seed(0)
        probe = nn.RNN(8, 32, batch_first=True)
        with torch.no_grad():
            nn.init.orthogonal_(probe.weight_hh_l0)
            probe.weight_hh_l0 *= scale                      # every singular value of W_hh is now `scale`
        x = (0.1 * torch.randn(16, T, 8)).requires_grad_()  # (B, T, I)
        _, h_n = probe(x)
        h_n.sum().backward()
        norms.append(x.grad[:, 0].norm().item() + 1e-30)     # the gradient that reaches step 1
    ax.plot(lengths_T, norms, marker="o", label=f"W_hh scaled to {scale}")
ax.set_xlabel("sequence length T")
ax.set_ylabel("|dLoss / dx_1|")
ax.set_yscale("log")
ax.set_title("Gradients through time vanish or explode", fontsize=10)
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Gated cells (LSTM, GRU) ease the vanishing side. For the exploding side, the standard remedy is
# **gradient clipping**: after `backward()` and before `optimizer.step()`,
# `torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)` computes the norm of *all* gradients together
# and, when it is larger than `max_norm`, scales every gradient down by the same factor. The step keeps its
# direction and loses only its excessive length. It returns the norm measured **before** clipping, worth
# logging: a run whose norms are far above `max_norm` at every step is clipped all the time, and its `max_norm`
# (or learning rate) deserves a second look.
#
# Pitfalls: clipping before `backward()` (there is nothing to clip yet) or after `step()` (too late); with
# mixed precision, call `scaler.unscale_(optimizer)` first, or you clip the *scaled* gradients; and
# `clip_grad_value_` clips each entry separately, which changes the direction of the step.

# %%
torch.manual_seed(0)
layer = nn.Linear(3, 2)
(100 * layer(torch.randn(4, 3))).pow(2).sum().backward()
grads_before = [p.grad.clone() for p in layer.parameters()]
total = nn.utils.clip_grad_norm_(layer.parameters(), max_norm=1.0)
after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in layer.parameters()]))
print(f"norm before {total.item():.1f} (returned), after {after.item():.3f}")
print("same direction:", torch.allclose(grads_before[0] / total, layer.weight.grad, atol=1e-6))

# %% [markdown]
# ## 8. A character-level classifier for surnames
#
# Now everything comes together: ids → `nn.Embedding` → a recurrence over the letters → the state after each
# name's **last real letter** → `nn.Linear` → one logit per language. The model below uses `nn.GRU`; since the
# padding comes after the letters, picking the output at `lengths - 1` is exact (section 6).
#
# It is trained with the **very recipe the `NameClassifier` check uses**: `torch.manual_seed(0)` before building
# the model; `Adam(lr=5e-3)`; 6 epochs over the training names in batches of 64, shuffled at epoch `e` by
# `torch.randperm` with a `torch.Generator` seeded with `e`; each batch padded to its own longest name;
# `F.cross_entropy`; `clip_grad_norm_(model.parameters(), 1.0)` before every step; `model.train()` for training,
# `model.eval()` and `torch.no_grad()` for evaluating on the held-out names.

# %%
class GRUNameModel(nn.Module):
    """A teaching model: embedding, nn.GRU, a linear layer on the state after each name's last letter."""

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int = 32, hidden_size: int = 64):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.gru = nn.GRU(embed_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def states(self, x):
        """x (B, T) ids -> the hidden state after every step, (B, T, H)."""
        output, _ = self.gru(self.embedding(x))
        return output

    def forward(self, x, lengths):
        output = self.states(x)                                                     # (B, T, H)
        last = output[torch.arange(len(x), device=x.device), lengths.to(x.device) - 1]  # (B, H)
        return self.head(last)                                                      # (B, num_classes)


def train_on_names(model: nn.Module, epochs: int = 6) -> nn.Module:
    """Train `model` on the training names with the check's recipe; return it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    order = torch.tensor(train_idx)
    for epoch in range(epochs):
        model.train()
        shuffled = order[torch.randperm(len(order), generator=torch.Generator().manual_seed(epoch))]
        for batch in shuffled.split(64):
            x, lengths, y = encode_names(batch.tolist())
            loss = F.cross_entropy(model(x, lengths), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
        print(f"epoch {epoch}: last batch loss {loss.item():.3f}")
    return model


x_held, lengths_held, y_held = encode_names(held_out_idx)      # (N, T), (N,), (N,)

torch.manual_seed(0)
model = GRUNameModel(len(itos), len(classes))
model.eval()
with torch.no_grad():
    fresh = (model(x_held, lengths_held).argmax(dim=1) == y_held).float().mean().item()
start = time.perf_counter()
train_on_names(model)
seconds = time.perf_counter() - start
model.eval()
with torch.no_grad():
    predictions = model(x_held, lengths_held).argmax(dim=1)   # (N,)
accuracy = (predictions == y_held).float().mean().item()
print(f"trained in {seconds:.1f} s")
print(f"held-out accuracy: untrained {fresh:.3f} · trained {accuracy:.3f} · majority baseline {baseline:.3f}")

# %% [markdown]
# A **confusion matrix** shows where the remaining mistakes are: row = true language, column = prediction, each
# row divided by its number of names (so the diagonal is each language's recall).

# %%
confusion = torch.zeros(len(classes), len(classes))
for true, predicted in zip(y_held.tolist(), predictions.tolist()):
    confusion[true, predicted] += 1
per_row = confusion / confusion.sum(dim=1, keepdim=True)

fig, ax = plt.subplots(figsize=(6.5, 5.5))
ax.imshow(per_row, cmap="Blues", vmin=0, vmax=1)
for r in range(len(classes)):
    for c in range(len(classes)):
        if confusion[r, c]:
            ax.text(c, r, int(confusion[r, c]), ha="center", va="center", fontsize=8,
                    color="white" if per_row[r, c] > 0.5 else "black")
ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
ax.set_yticks(range(len(classes)), [f"{c} ({int(n)})" for c, n in zip(classes, confusion.sum(dim=1))])
ax.set_xlabel("predicted")
ax.set_ylabel("true (held-out names)")
ax.set_title(f"Surnames: held-out accuracy {accuracy:.3f} (baseline {baseline:.3f})", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# Polish, Italian and Spanish endings (*-ski*, *-ini*, *-ez*) are easy; English, Dutch and German share many
# spellings, and a small class like Czech is often taken for its big neighbour, Polish.
#
# **Reading a name letter by letter.** The GRU's output holds its state after every prefix of the name, so we can
# watch the state evolve and ask the classifier for its opinion after each letter (applying the final linear
# layer to every step's state):

# %%
shown = [next(i for i in held_out_idx if labels[i] == classes.index(language) and len(names[i]) >= 7)
         for language in ("Polish", "Italian", "Dutch")]
fig, axes = plt.subplots(2, len(shown), figsize=(13, 6.5), gridspec_kw={"height_ratios": [1.3, 1]})
with torch.no_grad():
    for col, i in enumerate(shown):
        x_one, _, _ = encode_names([i])                              # (1, T)
        states = model.states(x_one)[0]                              # (T, H)
        probabilities = model.head(states).softmax(dim=-1)           # (T, classes): after each prefix
        letters_of = list(names[i])
        axes[0, col].imshow(states.T, cmap="coolwarm", vmin=-1, vmax=1, aspect="auto")
        axes[0, col].set_title(f"{names[i]} ({classes[labels[i]]}): hidden state", fontsize=9)
        axes[0, col].set_ylabel("hidden unit")
        axes[0, col].set_xticks(range(len(letters_of)), letters_of)
        axes[1, col].imshow(probabilities.T, cmap="Greens", vmin=0, vmax=1, aspect="auto")
        axes[1, col].set_yticks(range(len(classes)), classes, fontsize=8)
        axes[1, col].set_xticks(range(len(letters_of)), letters_of)
        axes[1, col].set_title("probability of each language after each letter", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercise: `NameClassifier`
#
# Write the module `NameClassifier(vocab_size, num_classes)`, a surname classifier **with a recurrence you write
# yourself** (`nn.Embedding`, `nn.Linear`, and a loop over the time steps; `nn.RNN`, `nn.GRU`, `nn.LSTM` and their
# cells are forbidden). Its `forward(x, lengths)` takes
#
# - `x (B, T)` int64 character ids: `<pad>` = 0, `<unk>` = 1, then the training names' characters in sorted
#   order (the vocabulary of section 5; `vocab_size` counts all of them, `len(itos)`), right-padded with 0;
# - `lengths (B,)` int64, on the same device as `x`;
#
# and returns logits `(B, num_classes)` **in which padding plays no part**: a name's logits must not change when
# its batch is padded more, or less. Either keep a finished name's state unchanged while the loop goes on
# (`torch.where` with a mask `t < lengths`), or collect every step's state and pick position `lengths - 1`.
#
# **The check trains your model itself.** It does not use anything you train in this notebook: it calls
# `torch.manual_seed(0)`, builds `NameClassifier(len(itos), 8)`, and
#
# 1. fails fast on structural problems: not an `nn.Module`, logits of the wrong shape, logits that change with
#    extra padding, a forbidden recurrent module, and no recurrence at all: a loop over the time steps makes more
#    torch calls for longer names, so a `forward` that makes as many for 14-character names as for 3-character
#    ones (a convolution, a bag of characters) fails;
# 2. evaluates the **fresh** model: an untrained model is near chance, so one already above 0.55 on the held-out
#    names was not untrained (weights loaded or trained in `__init__` fail here);
# 3. trains it with the recipe of section 8 (Adam, lr 5e-3, 6 epochs, batches of 64, gradient clipping at 1.0);
# 4. loads the trained `state_dict` into a fresh `NameClassifier` (strict) and requires the same logits:
#    everything the model learns lives in its parameters, not in tables, counters or models kept outside them;
# 5. requires a **held-out accuracy of at least 0.70** (the baseline is 0.463). A model that does much better on
#    the held-out names than on the training names, or nearly perfectly, has seen the held-out names somewhere
#    else than in the check's training, and fails.
#
# Because the check's optimizer owns the parameters, `forward` must only compute: no writes into parameters
# (`nn.Embedding(..., max_norm=...)` rescales its weight in place during the forward pass, so leave it out).
#
# Training must fit in **30 s on a 2-core CPU** (the check allows 90 s, for a busy machine). A time-step loop
# costs a few Python operations per step, so keep the cell small: precompute the input part of every step for the
# whole sequence at once (`nn.Linear` applied to `(B, T, E)`), and only the hidden part inside the loop. A tanh
# RNN with 32-dimensional embeddings and 64 hidden units already reaches about 0.75; the teaching model above
# reaches about 0.77.
#
# To try your model before checking it, run `train_on_names(NameClassifier(len(itos), len(classes)))` in a
# cell of your own and evaluate it like the teaching model.

# %%
class NameClassifier(nn.Module):
    """Surname -> language logits: embedding, a hand-written recurrence, a linear layer on the last real state."""

    def __init__(self, vocab_size: int, num_classes: int):
        super().__init__()
        ### BEGIN SOLUTION
        embed_dim, self.hidden_size = 32, 64
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.input_part = nn.Linear(embed_dim, 3 * self.hidden_size)          # x W_ihᵀ + b_ih, blocks r, z, n
        self.hidden_part = nn.Linear(self.hidden_size, 3 * self.hidden_size)  # h W_hhᵀ + b_hh, blocks r, z, n
        self.head = nn.Linear(self.hidden_size, num_classes)
        ### END SOLUTION

    def forward(self, x, lengths):
        """x (B, T) ids right-padded with 0, lengths (B,) -> logits (B, num_classes)."""
        ### BEGIN SOLUTION
        from_input = self.input_part(self.embedding(x))            # (B, T, 3H): every step at once
        h = from_input.new_zeros(x.shape[0], self.hidden_size)     # (B, H)
        for t in range(x.shape[1]):
            r_x, z_x, n_x = from_input[:, t].chunk(3, dim=1)       # each (B, H)
            r_h, z_h, n_h = self.hidden_part(h).chunk(3, dim=1)
            r, z = torch.sigmoid(r_x + r_h), torch.sigmoid(z_x + z_h)
            n = torch.tanh(n_x + r * n_h)
            h_next = (1 - z) * n + z * h                            # a GRU step
            running = (t < lengths).unsqueeze(1)                   # (B, 1): False once the name has ended
            h = torch.where(running, h_next, h)                    # a finished name keeps its state
        return self.head(h)                                        # (B, num_classes)
        ### END SOLUTION


# %%
check(NameClassifier)

# %% [markdown]
# ## 9. Packing: skipping the padding altogether
#
# Picking the output at `lengths - 1` gives the right answer, but the recurrence still runs over every padded
# cell (work thrown away), and it is no help for a **bidirectional** layer, whose backward direction would start
# in the padding, nor for `h_n`. `pack_padded_sequence` removes the padding before the recurrence:
#
# ```python
# packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
# packed_output, h_n = rnn(packed)      # every recurrent module accepts a PackedSequence
# ```
#
# - It sorts the sequences by decreasing length and stores them **time-major**: first the first element of
#   every sequence, then the second element of every sequence still running, and so on. `packed.data` is those
#   rows, `(total length, I)`; `packed.batch_sizes[t]` says how many sequences are still running at step `t`, so
#   step `t` of the recurrence works on exactly that many rows and no padding is ever read.
# - `h_n` is each sequence's state after its **own** last element, and comes back in the **input order**
#   (`packed.unsorted_indices` undoes the sort), for every layer and direction, in the usual layout.
# - `pad_packed_sequence(packed_output, batch_first=True)` turns the output back into `(B, T, D * H)` plus the
#   lengths, with zeros at the padded positions.

# %%
x_pack = embed(x_demo).detach()                                                   # (B, T, 8)
packed = pack_padded_sequence(x_pack, lengths_demo, batch_first=True, enforce_sorted=False)
print("lengths", lengths_demo.tolist(), "· data", tuple(packed.data.shape), "· batch_sizes",
      packed.batch_sizes.tolist())
print("sorted_indices", packed.sorted_indices.tolist(), "· unsorted_indices", packed.unsorted_indices.tolist())
with torch.no_grad():
    packed_output, h_n = rnn(packed)
    padded_output, out_lengths = pad_packed_sequence(packed_output, batch_first=True)
    for b, i in enumerate(demo_idx):
        _, alone = rnn(x_pack[b:b + 1, :lengths_demo[b]])
        print(f"{names[i]:<12} |h_n - alone| = {(h_n[0, b] - alone[0, 0]).abs().max():.3f}")
print(tuple(padded_output.shape), out_lengths.tolist(), "· zeros in the padding:",
      bool((padded_output[0, lengths_demo[0]:] == 0).all()))


# %%
def draw_padding_vs_packing(words, lengths):
    """What the recurrence computes: every cell of the padded batch, or only the real ones, sorted, when packed."""
    T, order = int(lengths.max()), sorted(range(len(words)), key=lambda b: -int(lengths[b]))
    row_in_data, k = {}, 0            # packed.data is time-major: step 0 of every sequence, then step 1, ...
    for t in range(T):
        for b in order:
            if t < lengths[b]:
                row_in_data[b, t], k = k, k + 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.2))
    for ax, rows, title in ((left, range(len(words)), "padded: B × T steps, padding included"),
                            (right, order, "packed: sorted by length, only the real steps")):
        for r, b in enumerate(rows):
            for t in range(T):
                real = t < lengths[b]
                if ax is right and not real:
                    continue
                ax.add_patch(Rectangle((t, -r), 0.95, 0.9, fc="tab:blue" if real else "tab:orange", alpha=0.8))
                ax.text(t + 0.47, -r + 0.45, words[b][t] if real else "pad", ha="center", va="center",
                        fontsize=8 if real else 6, color="white")
                if ax is right:
                    ax.text(t + 0.08, -r + 0.8, row_in_data[b, t], fontsize=5, color="white", va="top")
            ax.text(-0.3, -r + 0.45, words[b], ha="right", va="center", fontsize=9)
        ax.set_xlim(-4, T)
        ax.set_ylim(-len(words) + 0.3, 1.6)
        ax.axis("off")
        ax.set_title(title, fontsize=10)
    sizes = [sum(int(l) > t for l in lengths) for t in range(T)]
    for t, size in enumerate(sizes):
        right.text(t + 0.47, 1.1, str(size), ha="center", fontsize=8)
    right.text(-0.3, 1.1, "batch_sizes", ha="right", fontsize=8)
    right.text(T / 2, -len(words) + 0.6, "small numbers: the cell's row in packed.data", ha="center", fontsize=8)
    computed = sum(sizes)
    left.text(T / 2, 1.1, f"{len(words) * T} cell updates, {len(words) * T - computed} on padding", ha="center",
              fontsize=8)
    plt.tight_layout()
    plt.show()


draw_padding_vs_packing([names[i] for i in demo_idx], lengths_demo)

# %% [markdown]
# Three pitfalls:
#
# - **`enforce_sorted=True` is the default**, and then the lengths must already be in decreasing order;
#   `enforce_sorted=False` sorts for you and restores the order in `h_n` (the sorted form exists for exporting
#   models to ONNX).
# - **`lengths` must be on the CPU** (a list, or a CPU int64 tensor) even when the data is on a GPU, where a CUDA
#   tensor fails with "'lengths' argument should be a 1D CPU int64 tensor": pass `lengths.cpu()`.
# - The **packed `output` is not a tensor** you can index by `[:, -1]`: unpack it first, or use `h_n`.

# %%
try:
    pack_padded_sequence(x_pack, lengths_demo, batch_first=True)          # enforce_sorted=True by default
except RuntimeError as e:
    print("RuntimeError:", str(e).split(".")[0])

# %% [markdown]
# ## Exercise: `packed_last_hidden`
#
# Write `packed_last_hidden(rnn, padded, lengths)` that returns, for every sequence, the **last layer's** final
# hidden state, with padding kept out of the recurrence by packing:
#
# - `rnn` is a one-directional `nn.RNN`, `nn.GRU` or `nn.LSTM` with `batch_first=True` and any `num_layers`;
# - `padded (B, T, I)` is on the module's device; `lengths (B,)` int64 on any device, in any order (not sorted),
#   every entry `>= 1`;
# - return `(B, H)` in the **input order**, on `padded`'s device and attached to the graph (a loss on it must
#   train the module); for an LSTM, the hidden state `h`, not the cell `c`;
# - use `pack_padded_sequence(..., enforce_sorted=False)`. This exercise runs the module it is given, so the
#   lesson's rule against recurrent modules does not apply here.

# %%
def packed_last_hidden(rnn, padded, lengths):
    """The last layer's final hidden state (B, H) of each sequence, computed on a packed batch."""
    ### BEGIN SOLUTION
    packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, state = rnn(packed)
    h_n = state[0] if isinstance(state, tuple) else state    # an LSTM returns (h_n, c_n)
    return h_n[-1]                                           # (num_layers, B, H) -> the last layer, input order
    ### END SOLUTION


# %%
check(packed_last_hidden)

# %% [markdown]
# ## Summary
#
# - An RNN carries a hidden state along the sequence with the same weights at every step:
#   `h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)`. Unrolled, it is a deep network as long as the sequence.
# - `nn.RNN`/`nn.GRU`/`nn.LSTM`: input `(T, B, I)`, or `(B, T, I)` with `batch_first=True`; `output` is the
#   last layer at every step, `(B, T, D * H)`; `h_0`/`h_n` are **always** `(D * num_layers, B, H)`, whatever
#   `batch_first` says. `h_n[-1]` is the last layer; bidirectional `output` is `[forward | backward]`.
# - Parameters `weight_ih_l{l}`, `weight_hh_l{l}`, `bias_ih_l{l}`, `bias_hh_l{l}` (`_reverse`), gates stacked
#   in the rows: LSTM **i, f, g, o**, GRU **r, z, n**; all initialised U(-1/√H, 1/√H). An LSTM's state is the
#   tuple `(h, c)`.
# - Text → tokens → ids with a plain-Python tokenizer and vocabulary (`<pad>` 0, `<unk>` 1, built on the
#   training data); `nn.Embedding` (N(0, 1), `padding_idx`, `max_norm` in place) turns ids into vectors.
# - Padding enters the recurrence: take the output at `lengths - 1`, mask the updates, or pack with
#   `pack_padded_sequence(..., lengths.cpu(), enforce_sorted=False)` and read `h_n`.
# - Clip gradients (`clip_grad_norm_` between `backward()` and `step()`) when training recurrent networks.
