"""11_huggingface: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from grader import evaluate
from verdicts import assert_passes, assert_rejects


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["tokenize", "mean_pool", "embed", "top_k_similar", "SentimentClassifier"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


@pytest.mark.parametrize("name, right", [("tokenize", "tokenize_then_pad"), ("mean_pool", "mean_pool_loop"),
                                         ("top_k_similar", "top_k_argsort")])
def test_correct_answers_pass_the_hidden_round(name, right, monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "918273645")
    report = evaluate(globals()[right], name=name)
    assert report.passed and any(c.hidden for c in report.cases), report.text()


# --- tokenize ---------------------------------------------------------------------------------------------------
def tokenize_call(tokenizer, texts, max_length):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def tokenize_then_pad(tokenizer, texts, max_length):
    """Encode without padding, then let the tokenizer pad the batch."""
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return tokenizer.pad(enc, padding="longest", return_tensors="pt")


def tokenize_max_length_padding(tokenizer, texts, max_length):
    return tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")


def tokenize_no_truncation(tokenizer, texts, max_length):
    return tokenizer(texts, padding=True, return_tensors="pt")


def test_tokenize_too_long_names_the_mistake_not_a_broadcast():
    text = evaluate(tokenize_no_truncation, name="tokenize").text()
    assert "truncation=True" in text and "broadcast" not in text, text


def tokenize_no_special_tokens(tokenizer, texts, max_length):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, add_special_tokens=False,
                     return_tensors="pt")


def tokenize_lists(tokenizer, texts, max_length):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length)


def tokenize_by_hand(tokenizer, texts, max_length):
    """Pads on the right with 0 by hand, whatever the tokenizer says."""
    from transformers import BatchEncoding
    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})


def tokenize_right_padded(tokenizer, texts, max_length):
    """Pads with the right id, but always on the right."""
    from transformers import BatchEncoding
    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})


def tokenize_dict(tokenizer, texts, max_length):
    return dict(tokenize_call(tokenizer, texts, max_length))


def tokenize_minus_two(tokenizer, texts, max_length):
    """Leaves room for [CLS] and [SEP] a second time."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length - 2, return_tensors="pt")


def tokenize_sliced(tokenizer, texts, max_length):
    """Truncates by slicing the ids, which cuts the [SEP] off long rows."""
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    for key in list(enc.keys()):
        enc[key] = enc[key][:, :max_length]
    return enc


def tokenize_sorts_texts(tokenizer, texts, max_length):
    texts.sort(key=len)
    return tokenize_call(tokenizer, texts, max_length)


@pytest.mark.parametrize("right", [tokenize_call, tokenize_then_pad])
def test_tokenize_passes(right):
    assert_passes(right, "tokenize")


@pytest.mark.parametrize("wrong, fragments", [
    (tokenize_max_length_padding, ["padding='max_length'"]), (tokenize_no_truncation, ["truncation=True"]),
    (tokenize_no_special_tokens, ["special tokens"]), (tokenize_lists, ["return_tensors"]),
    (tokenize_by_hand, ["pad_token_id"]), (tokenize_right_padded, ["wrong side"]),
    (tokenize_dict, ["BatchEncoding"]),
    (tokenize_minus_two, ["max_length - 2", "already counts"]), (tokenize_sliced, ["slicing", "[SEP]"]),
    (tokenize_sorts_texts, ["list of texts in place"]),
])
def test_tokenize_rejects(wrong, fragments):
    assert_rejects(wrong, "tokenize", *fragments)


# --- mean_pool --------------------------------------------------------------------------------------------------
def mean_pool_right(last_hidden_state, attention_mask):
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)


def mean_pool_loop(last_hidden_state, attention_mask):
    """Row by row, selecting the real tokens."""
    rows = []
    for h, m in zip(last_hidden_state, attention_mask.bool()):
        rows.append(h[m].mean(0) if m.any() else h.sum(0) * 0)
    return torch.stack(rows)


def mean_pool_all_t(last_hidden_state, attention_mask):
    return last_hidden_state.mean(1)


def mean_pool_sum(last_hidden_state, attention_mask):
    return (last_hidden_state * attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)).sum(1)


def mean_pool_nan(last_hidden_state, attention_mask):
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * m).sum(1) / m.sum(1)


def mean_pool_plus_one(last_hidden_state, attention_mask):
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * m).sum(1) / (m.sum(1) + 1)


def mean_pool_max(last_hidden_state, attention_mask):
    peak = last_hidden_state.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf")).amax(1)
    return torch.where(peak.isinf(), torch.zeros_like(peak), peak)


def mean_pool_masked_rows_plain_mean(last_hidden_state, attention_mask):
    m = attention_mask.to(last_hidden_state.dtype)
    count = m.sum(1, keepdim=True)
    pooled = (last_hidden_state * m.unsqueeze(-1)).sum(1) / count.clamp(min=1)
    return torch.where(count > 0, pooled, last_hidden_state.mean(1))


def mean_pool_over_h(last_hidden_state, attention_mask):
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * m).sum(2) / m.sum(2).clamp(min=1)


def mean_pool_einsum_uncast(last_hidden_state, attention_mask):
    summed = torch.einsum("bth,bt->bh", last_hidden_state, attention_mask)
    return summed / attention_mask.sum(1, keepdim=True).clamp(min=1)


def mean_pool_cpu_zeros(last_hidden_state, attention_mask):
    m = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    counts = m.sum(1)
    B, _, H = last_hidden_state.shape
    return torch.where(counts > 0, (last_hidden_state * m).sum(1) / counts, torch.zeros(B, H, dtype=m.dtype))


@pytest.mark.parametrize("right", [mean_pool_right, mean_pool_loop])
def test_mean_pool_passes(right):
    assert_passes(right, "mean_pool")


@pytest.mark.parametrize("wrong, fragments", [
    (mean_pool_all_t, ["padding included"]), (mean_pool_sum, ["not divided"]), (mean_pool_nan, ["nan"]),
    (mean_pool_einsum_uncast, ["cast it to the hidden states' dtype"]), (mean_pool_cpu_zeros, ["on a GPU"]),
    (mean_pool_plus_one, ["real tokens + 1"]), (mean_pool_max, ["max pooling"]),
    (mean_pool_masked_rows_plain_mean, ["fully masked row gives the mean"]), (mean_pool_over_h, ["hidden size H"]),
])
def test_mean_pool_rejects(wrong, fragments):
    assert_rejects(wrong, "mean_pool", *fragments)


# --- embed ------------------------------------------------------------------------------------------------------
def _embed(texts, model, tokenizer, batch_size=32, *, eval_mode=True, normalise=True, pool="mean",
           max_length=256, one_batch=False, to_cpu=False):
    if eval_mode:
        model.eval()
    device = next(model.parameters()).device
    step = len(texts) if one_batch else batch_size
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), step):
            batch = tokenizer(texts[i:i + step], padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(device)
            h = model(**batch).last_hidden_state
            if pool == "cls":
                out.append(h[:, 0])
            else:
                m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
                out.append((h * m).sum(1) / m.sum(1).clamp(min=1e-9))
    x = torch.cat(out)
    x = F.normalize(x, dim=1) if normalise else x
    return x.cpu() if to_cpu else x


def embed_right(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size)


def embed_sorted(texts, model, tokenizer, batch_size=32):
    """Batches texts of similar lengths together (as sentence-transformers does), then restores the order."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    chunks = []
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            enc = tokenizer([texts[j] for j in order[i:i + batch_size]], padding=True, truncation=True,
                            max_length=256, return_tensors="pt")
            enc = {k: v.to(model.device) for k, v in enc.items()}
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
            w = enc["attention_mask"][..., None].float()
            chunks.append((h * w).sum(1) / w.sum(1))
    pooled = torch.cat(chunks)
    result = torch.empty_like(pooled)
    result[torch.tensor(order, device=pooled.device)] = pooled
    return result / result.norm(dim=1, keepdim=True)


def embed_no_eval(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, eval_mode=False)


def embed_not_normalised(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, normalise=False)


def embed_cls(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, pool="cls")


def embed_one_batch(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, one_batch=True)


def embed_128(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, max_length=128)


def embed_512(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, max_length=512)


def embed_to_cpu(texts, model, tokenizer, batch_size=32):
    return _embed(texts, model, tokenizer, batch_size, to_cpu=True)


def embed_batch_on_cpu(texts, model, tokenizer, batch_size=32):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append((h * m).sum(1) / m.sum(1))
    return F.normalize(torch.cat(out), dim=1)


def embed_with_graph(texts, model, tokenizer, batch_size=32):
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        h = model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        out.append((h * m).sum(1) / m.sum(1))
    return F.normalize(torch.cat(out), dim=1)


def embed_sentence_transformers(texts, model, tokenizer, batch_size=32):
    from sentence_transformers import SentenceTransformer
    from grader.data import minilm_dir
    st = SentenceTransformer(str(minilm_dir()), device=str(model.device))
    return st.encode(texts, batch_size=batch_size, convert_to_tensor=True)


def embed_list(texts, model, tokenizer, batch_size=32):
    return list(embed_right(texts, model, tokenizer, batch_size))


def embed_no_truncation(texts, model, tokenizer, batch_size=32):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, return_tensors="pt").to(model.device)
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append((h * m).sum(1) / m.sum(1))
    return F.normalize(torch.cat(out), dim=1)


def embed_sorted_not_restored(texts, model, tokenizer, batch_size=32):
    return embed_right(sorted(texts, key=len), model, tokenizer, batch_size)


def _embed_with(texts, model, tokenizer, batch_size, vector):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=256,
                              return_tensors="pt").to(model.device)
            out.append(vector(model, batch))
    return F.normalize(torch.cat(out), dim=1)


def _masked_mean(h, mask):
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1)


def embed_pooler(texts, model, tokenizer, batch_size=32):
    return _embed_with(texts, model, tokenizer, batch_size, lambda model, b: model(**b).pooler_output)


def embed_mask_not_passed(texts, model, tokenizer, batch_size=32):
    return _embed_with(texts, model, tokenizer, batch_size,
                       lambda model, b: _masked_mean(model(input_ids=b["input_ids"]).last_hidden_state,
                                                     b["attention_mask"]))


def embed_double(texts, model, tokenizer, batch_size=32):
    return embed_right(texts, model, tokenizer, batch_size).double()


@pytest.mark.parametrize("right", [embed_right, embed_sorted])
def test_embed_passes(right):
    assert_passes(right, "embed")


@pytest.mark.parametrize("wrong, fragments", [
    (embed_no_eval, ["model.eval()"]), (embed_not_normalised, ["not L2-normalised"]), (embed_cls, ["[CLS]"]),
    (embed_one_batch, ["more than batch_size"]), (embed_128, ["truncate at 256"]), (embed_512, ["truncate at 256"]),
    (embed_to_cpu, ["no .cpu()"]), (embed_batch_on_cpu, ["stayed on the CPU"]), (embed_with_graph, ["no_grad"]),
    (embed_sentence_transformers, ["forbids"]),
    (embed_list, ["got a list", "torch.cat"]), (embed_no_truncation, ["512 positions", "truncation=True"]),
    (embed_sorted_not_restored, ["another order"]), (embed_pooler, ["pooler_output"]),
    (embed_mask_not_passed, ["without the attention_mask"]), (embed_double, ["model's dtype (float32"]),
])
def test_embed_rejects(wrong, fragments):
    assert_rejects(wrong, "embed", *fragments)


def test_embed_without_truncation_is_not_called_a_broadcast():
    text = evaluate(embed_no_truncation, name="embed").text()
    assert "broadcast" not in text, text


# --- top_k_similar ----------------------------------------------------------------------------------------------
def top_k_right(query, corpus, k):
    scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=-1).T
    return torch.topk(scores, k, dim=-1)


def top_k_argsort(query, corpus, k):
    """F.cosine_similarity by broadcasting, then argsort descending."""
    scores = F.cosine_similarity(query.unsqueeze(-2), corpus, dim=-1)   # (N,) or (Q, N)
    idx = scores.argsort(dim=-1, descending=True)[..., :k]
    return scores.gather(-1, idx), idx


def top_k_dot(query, corpus, k):
    return torch.topk(query @ corpus.T, k, dim=-1)


def top_k_ascending(query, corpus, k):
    scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=-1).T
    return torch.topk(scores, k, dim=-1, largest=False)


def top_k_swapped(query, corpus, k):
    values, indices = top_k_right(query, corpus, k)
    return indices, values


def top_k_wrong_dim(query, corpus, k):
    scores = F.normalize(query, dim=-1) @ F.normalize(corpus, dim=0).T
    return torch.topk(scores, k, dim=-1)


def top_k_cpu_scores(query, corpus, k):
    q = query / query.norm(dim=-1, keepdim=True)
    c = corpus / corpus.norm(dim=-1, keepdim=True)
    scores = torch.tensor((q @ c.T).tolist()) if query.device.type != "meta" else torch.zeros(q.shape[:-1] + (len(c),))
    return torch.topk(scores, k, dim=-1)


def top_k_pair(query, corpus, k):
    """A plain tuple made by hand (top_k_right returns torch.topk's named tuple)."""
    values, indices = top_k_right(query, corpus, k)
    return values, indices


def top_k_normalises_in_place(query, corpus, k):
    query.div_(query.norm(dim=-1, keepdim=True))
    corpus.div_(corpus.norm(dim=-1, keepdim=True))
    return torch.topk(query @ corpus.T, k, dim=-1)


def top_k_zeroes_inputs(query, corpus, k):
    result = top_k_pair(query, corpus, k)
    query.zero_()
    return result


def top_k_list(query, corpus, k):
    return list(top_k_right(query, corpus, k))


def top_k_skips_best(query, corpus, k):
    values, indices = top_k_right(query, corpus, min(k + 1, len(corpus)))
    return values[..., 1:], indices[..., 1:]


def top_k_euclidean(query, corpus, k):
    d = torch.cdist(query.reshape(-1, query.shape[-1]), corpus).reshape(*query.shape[:-1], len(corpus))
    return torch.topk(-d, k, dim=-1)


def top_k_distances(query, corpus, k):
    qn, cn = F.normalize(query, dim=-1), F.normalize(corpus, dim=-1)
    d = torch.cdist(qn.reshape(-1, qn.shape[-1]), cn).reshape(*query.shape[:-1], len(corpus))
    return torch.topk(d, k, dim=-1, largest=False)


def top_k_float_indices(query, corpus, k):
    values, indices = top_k_right(query, corpus, k)
    return values, indices.float()


def top_k_query_only(query, corpus, k):
    return torch.topk(F.normalize(query, dim=-1) @ corpus.T, k, dim=-1)


@pytest.mark.parametrize("right", [top_k_right, top_k_argsort, top_k_pair])
def test_top_k_similar_passes(right):
    assert_passes(right, "top_k_similar")


@pytest.mark.parametrize("wrong, fragments", [
    (top_k_dot, ["dot products"]), (top_k_ascending, ["worst first"]), (top_k_swapped, ["(indices, scores)"]),
    (top_k_wrong_dim, ["wrong dim"]), (top_k_cpu_scores, ["on a GPU"]),
    (top_k_normalises_in_place, ["changed query and corpus in place"]), (top_k_zeroes_inputs, ["query in place"]),
    (top_k_list, ["a list", "return a tuple"]), (top_k_skips_best, ["best) match is skipped"]),
    (top_k_euclidean, ["Euclidean distance"]), (top_k_distances, ["the scores are distances"]),
    (top_k_float_indices, ["float32", "int64"]), (top_k_query_only, ["only the query is normalised", "both"]),
])
def test_top_k_similar_rejects(wrong, fragments):
    assert_rejects(wrong, "top_k_similar", *fragments)


# --- SentimentClassifier ----------------------------------------------------------------------------------------
class ClassifierMean(nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 2)

    def forward(self, input_ids, attention_mask):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1e-9))


class ClassifierSoftmax(ClassifierMean):
    def forward(self, input_ids, attention_mask):
        return super().forward(input_ids, attention_mask).softmax(-1)


class ClassifierIgnoresEncoder(nn.Module):
    """A bag of its own word embeddings: the encoder is kept but never used."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.emb = nn.EmbeddingBag(encoder.config.vocab_size, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask):
        return self.head(self.emb(input_ids, per_sample_weights=None))


class ClassifierLoadsItsOwn(ClassifierMean):
    def __init__(self, encoder):
        from transformers import AutoModel
        from grader.data import minilm_dir
        super().__init__(AutoModel.from_pretrained(minilm_dir()))


class ClassifierKeywords(nn.Module):
    """A keyword rule: positive words vote for class 1, with a learnable scale."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        from grader.checks.lesson11_huggingface import minilm_tokenizer
        words = ["great", "lovely", "wonderful", "excellent", "fantastic", "brilliant", "superb", "charming"]
        self.register_buffer("good", torch.tensor(minilm_tokenizer().convert_tokens_to_ids(words)))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, input_ids, attention_mask):
        votes = torch.isin(input_ids, self.good).sum(1).float() - 0.5
        return self.scale * torch.stack([-votes, votes], dim=1)


class ClassifierPerToken(ClassifierMean):
    def forward(self, input_ids, attention_mask):
        return self.head(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)


class ClassifierRuleAfterTraining(ClassifierMean):
    """Trains like ClassifierMean, then answers with a keyword rule in eval mode (the network's logits times 0)."""

    def __init__(self, encoder):
        super().__init__(encoder)
        from grader.checks.lesson11_huggingface import minilm_tokenizer
        words = ["great", "lovely", "wonderful", "excellent", "fantastic", "brilliant", "superb", "charming"]
        self.register_buffer("good", torch.tensor(minilm_tokenizer().convert_tokens_to_ids(words)))
        self.register_buffer("trained", torch.zeros(()))

    def forward(self, input_ids, attention_mask):
        logits = super().forward(input_ids, attention_mask)
        if self.training:
            self.trained.fill_(1.0)
        if self.training or not self.trained:
            return logits
        votes = torch.isin(input_ids, self.good).sum(1).float() - 0.5
        return torch.stack([-votes, votes], dim=1) + 0 * logits


class ClassifierFrozen(ClassifierMean):
    """Freezing the encoder is allowed, but with the check's short recipe only the head learns: too little."""

    def __init__(self, encoder):
        super().__init__(encoder)
        self.encoder.requires_grad_(False)


def test_sentiment_classifier_passes():
    assert_passes(ClassifierMean, "SentimentClassifier")


@pytest.mark.parametrize("wrong, fragments", [
    (ClassifierSoftmax, ["probabilities"]), (ClassifierIgnoresEncoder, ["encoder is not used"]),
    (ClassifierLoadsItsOwn, ["does not hold the encoder"]), (ClassifierKeywords, ["encoder is not used"]),
    (ClassifierPerToken, ["pool over the tokens"]), (ClassifierFrozen, ["encoder is frozen"]),
    (ClassifierRuleAfterTraining, ["do not depend on the model's parameters"]),
])
def test_sentiment_classifier_rejects(wrong, fragments):
    assert_rejects(wrong, "SentimentClassifier", *fragments)


def test_sentiment_classifier_skips_the_hidden_round(monkeypatch):
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", "5")
    report = evaluate(ClassifierSoftmax, name="SentimentClassifier")
    assert report.status == "failed" and not any(c.hidden for c in report.cases)


def test_sentiment_data_follows_the_stated_rules():
    from grader.checks.lesson11_huggingface import SENTIMENT_RECIPE, minilm_tokenizer, sentiment_rows
    texts, labels = sentiment_rows("train")
    test_texts, test_labels = sentiment_rows("test")
    assert len(texts) == 400 and len(test_texts) == 100 and set(labels.tolist()) == {0, 1}
    assert not set(texts) & set(test_texts)
    longest = max(len(ids) for ids in minilm_tokenizer()(texts + test_texts)["input_ids"])
    assert longest <= SENTIMENT_RECIPE["max_length"]  # nothing is cut off by the recipe's max_length


# --- the learner's session -------------------------------------------------------------------------------------
def test_loading_the_models_leaves_the_library_verbosity_and_progress_bars_as_they_were():
    from transformers.utils import logging
    from grader.checks import lesson11_huggingface as checks
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    try:
        logging.set_verbosity_info()
        logging.enable_progress_bar()
        checks.minilm_tokenizer.cache_clear()
        checks.minilm_tokenizer()
        assert logging.get_verbosity() == logging.INFO and logging.is_progress_bar_enabled()
        logging.set_verbosity_warning()
        logging.disable_progress_bar()
        checks.minilm_tokenizer.cache_clear()
        checks.minilm_tokenizer()
        assert logging.get_verbosity() == logging.WARNING and not logging.is_progress_bar_enabled()
    finally:
        logging.set_verbosity(level)
        (logging.enable_progress_bar if bars else logging.disable_progress_bar)()


# --- no network -------------------------------------------------------------------------------------------------
def test_hugging_face_paths_work_with_the_network_off(tmp_path):
    """MiniLM + embeddings, and a tiny GPT-2 saved and used through pipeline("text-generation"), with the hub
    switched off and every non-local connection refused."""
    script = textwrap.dedent("""
        import socket, sys
        _connect = socket.socket.connect
        def connect(self, address):
            if self.family != socket.AF_UNIX and address[0] not in ("127.0.0.1", "::1", "localhost"):
                raise OSError(f"network disabled: {address}")
            return _connect(self, address)
        socket.socket.connect = connect
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("network disabled"))

        import torch, torch.nn.functional as F
        from transformers import AutoModel, AutoTokenizer, GPT2Config, GPT2LMHeadModel, pipeline
        from grader.data import minilm_dir
        from grader.checks.lesson11_huggingface import toy_tokenizer
        tok = AutoTokenizer.from_pretrained(minilm_dir())
        model = AutoModel.from_pretrained(minilm_dir()).eval()
        with torch.no_grad():
            batch = tok(["a happy dog", "a glad puppy", "tax forms"], padding=True, return_tensors="pt")
            h = model(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).float()
            e = F.normalize((h * m).sum(1) / m.sum(1), dim=1)
        assert e.shape == (3, 384) and (e[0] @ e[1]) > (e[0] @ e[2])
        ctok = toy_tokenizer()
        config = GPT2Config(vocab_size=len(ctok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                            bos_token_id=ctok.cls_token_id, eos_token_id=ctok.sep_token_id,
                            pad_token_id=ctok.pad_token_id)
        torch.manual_seed(0)
        GPT2LMHeadModel(config).save_pretrained(sys.argv[1])
        ctok.save_pretrained(sys.argv[1])
        generate = pipeline("text-generation", model=sys.argv[1])
        out = generate("the film was", max_new_tokens=5, do_sample=False)
        assert isinstance(out[0]["generated_text"], str)
        print("OK")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tiny-gpt2")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr[-3000:]
