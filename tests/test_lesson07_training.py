"""07_training: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import csv
import random

import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image

from grader import evaluate
from grader.data import datasets_dir
from verdicts import assert_passes, assert_rejects


def stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("name", ["set_seed", "train_one_epoch", "evaluate_accuracy", "save_checkpoint",
                                  "load_checkpoint", "train_digits_classifier"])
def test_stub_is_not_attempted(name):
    report = evaluate(stub, name=name)
    assert report.status == "not_attempted" and report.points == 0, report.text()


# --- set_seed --------------------------------------------------------------------------------------------------
def seed_everything(seed):
    np.random.seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.random.manual_seed(seed)
    random.seed(seed)


def seed_no_numpy(seed):
    random.seed(seed)
    torch.manual_seed(seed)


def seed_default_rng(seed):
    random.seed(seed)
    np.random.default_rng(seed)
    torch.manual_seed(seed)


def seed_no_python(seed):
    np.random.seed(seed)
    torch.manual_seed(seed)


def seed_hard_coded(seed):
    seed_everything(42)


def seed_new_generator(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.Generator().manual_seed(seed)


def seed_cpu_generator_only(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)


def test_set_seed_passes():
    assert_passes(seed_everything, "set_seed")


@pytest.mark.parametrize("wrong, fragments", [
    (seed_no_numpy, ("np.random.seed",)),
    (seed_default_rng, ("default_rng",)),
    (seed_no_python, ("random.seed(seed)",)),
    (seed_hard_coded, ("hard-coded",)),
    (seed_new_generator, ("torch.manual_seed",)),
    (seed_cpu_generator_only, ("manual_seed_all",)),
])
def test_set_seed_rejects(wrong, fragments):
    assert_rejects(wrong, "set_seed", *fragments)


# --- train_one_epoch -------------------------------------------------------------------------------------------
def epoch_right(model, loader, loss_fn, optimizer, device):
    model.train()
    seen, total = 0, torch.zeros((), dtype=torch.float64)
    for batch in loader:
        inputs, targets = (b.to(device) for b in batch)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        optimizer.step()
        total += loss.detach().double() * inputs.shape[0]
        seen += inputs.shape[0]
    return float(total / seen)


def _epoch(model, loader, loss_fn, optimizer, device, *, train=True, zero=True, move_y=True, reduce="weighted",
           item=True):
    if train:
        model.train()
    losses, sizes = [], []
    for x, y in loader:
        x = x.to(device)
        if move_y:
            y = y.to(device)
        loss = loss_fn(model(x), y)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item() if item else loss)
        sizes.append(len(x))
    if reduce == "mean_of_batches":
        return sum(losses) / len(losses)
    if reduce == "last":
        return losses[-1]
    return sum(l * s for l, s in zip(losses, sizes)) / sum(sizes)


def epoch_mean_of_batches(*args):
    return _epoch(*args, reduce="mean_of_batches")


def epoch_no_zero_grad(*args):
    return _epoch(*args, zero=False)


def epoch_no_train_call(*args):
    return _epoch(*args, train=False)


def epoch_eval_mode(model, *args):
    model.eval()
    return _epoch(model, *args, train=False)


def epoch_labels_not_moved(*args):
    return _epoch(*args, move_y=False)


def epoch_returns_tensor(*args):
    return _epoch(*args, item=False)


def epoch_last_loss(*args):
    return _epoch(*args, reduce="last")


def epoch_not_moved(model, loader, loss_fn, optimizer, device):
    model.train()
    total = 0.0
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader.dataset)


def test_train_one_epoch_passes():
    assert_passes(epoch_right, "train_one_epoch")


@pytest.mark.parametrize("wrong, fragments", [
    (epoch_mean_of_batches, ("plain mean of the batch losses",)),
    (epoch_no_zero_grad, ("zero_grad",)),
    (epoch_no_train_call, ("model.train()",)),
    (epoch_eval_mode, ("eval mode",)),
    (epoch_not_moved, ("inputs of a batch were not moved",)),
    (epoch_labels_not_moved, ("labels of a batch were not moved",)),
    (epoch_returns_tensor, ("python float", "tensor")),
    (epoch_last_loss, ("last batch only",)),
])
def test_train_one_epoch_rejects(wrong, fragments):
    assert_rejects(wrong, "train_one_epoch", *fragments)


# --- evaluate_accuracy -----------------------------------------------------------------------------------------
def accuracy_right(model, loader, device):
    was_training = model.training
    model.eval()
    hits = count = 0
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x.to(device))
            hits += int((logits.max(dim=-1).indices == y.to(device)).sum())
            count += y.numel()
    model.train(was_training)
    return hits / count


def _accuracy(model, loader, device, *, eval_=True, no_grad=True, reduce="samples", item=True, dim=1):
    if eval_:
        model.eval()
    correct, per_batch = 0, []
    with torch.set_grad_enabled(not no_grad):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            hits = (model(x).argmax(dim=dim) == y).sum()
            correct = correct + (hits.item() if item else hits)
            per_batch.append(hits.item() / len(y))
    if reduce == "batches":
        return sum(per_batch) / len(per_batch)
    if reduce == "len_loader":
        return correct / len(loader)
    return correct / len(loader.dataset)


def accuracy_no_eval(*args):
    return _accuracy(*args, eval_=False)


def accuracy_with_grad(*args):
    return _accuracy(*args, no_grad=False)


def accuracy_mean_of_batches(*args):
    return _accuracy(*args, reduce="batches")


def accuracy_by_batches(*args):
    return _accuracy(*args, reduce="len_loader")


def accuracy_tensor(*args):
    return _accuracy(*args, item=False)


def test_evaluate_accuracy_passes():
    assert_passes(accuracy_right, "evaluate_accuracy")


@pytest.mark.parametrize("wrong, fragments", [
    (accuracy_no_eval, ("model.eval()",)),
    (accuracy_with_grad, ("no_grad",)),
    (accuracy_mean_of_batches, ("averaged the accuracies of the batches",)),
    (accuracy_by_batches, ("above 1",)),
    (accuracy_tensor, ("python float", "tensor")),
])
def test_evaluate_accuracy_rejects(wrong, fragments):
    assert_rejects(wrong, "evaluate_accuracy", *fragments)


# --- save_checkpoint / load_checkpoint ---------------------------------------------------------------------------
def save_right(path, model, optimizer, epoch):
    checkpoint = dict(epoch=int(epoch), optimizer=optimizer.state_dict(), model=model.state_dict())
    with open(path, "wb") as f:
        torch.save(checkpoint, f)


def save_whole_objects(path, model, optimizer, epoch):
    torch.save({"model": model, "optimizer": optimizer, "epoch": epoch}, path)


def save_tutorial_keys(path, model, optimizer, epoch):
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "epoch": epoch}, path)


def save_model_only(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "epoch": epoch}, path)


def save_epoch_tensor(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": torch.tensor(epoch)},
               path)


def save_next_epoch(path, model, optimizer, epoch):
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}, path)


def save_nothing(path, model, optimizer, epoch):
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}


def test_save_checkpoint_passes():
    assert_passes(save_right, "save_checkpoint")


@pytest.mark.parametrize("wrong, fragments", [
    (save_whole_objects, ("weights_only=True", "not the model or optimizer objects")),
    (save_tutorial_keys, ("keys should be exactly",)),
    (save_model_only, ("keys should be exactly",)),
    (save_epoch_tensor, ("python int", "tensor")),
    (save_next_epoch, ("store it as given",)),
    (save_nothing, ("no file was written",)),
])
def test_save_checkpoint_rejects(wrong, fragments):
    assert_rejects(wrong, "save_checkpoint", *fragments)


def load_right(path, model, optimizer):
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    model.load_state_dict(state["model"])
    return int(state["epoch"])


def load_model_only(path, model, optimizer):
    ckpt = torch.load(path, weights_only=True)
    model.load_state_dict(ckpt["model"])
    return ckpt["epoch"]


def load_unsafe(path, model, optimizer):
    ckpt = torch.load(path, weights_only=False)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_next_epoch(path, model, optimizer):
    return load_right(path, model, optimizer) + 1


def load_whole_dict_into_model(path, model, optimizer):
    ckpt = torch.load(path, weights_only=True)
    model.load_state_dict(ckpt)
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_rebinds_model(path, model, optimizer):
    ckpt = torch.load(path, weights_only=True)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_returns_tensor(path, model, optimizer):
    return torch.tensor(load_right(path, model, optimizer))


def test_load_checkpoint_passes():
    assert_passes(load_right, "load_checkpoint")


@pytest.mark.parametrize("wrong, fragments", [
    (load_model_only, ("optimizer's state was not restored",)),
    (load_unsafe, ("weights_only=False",)),
    (load_next_epoch, ("return the saved epoch itself",)),
    (load_whole_dict_into_model, ("loading failed", "ckpt['model']")),
    (load_rebinds_model, ("weights were not restored",)),
    (load_returns_tensor, ("python int", "tensor")),
])
def test_load_checkpoint_rejects(wrong, fragments):
    assert_rejects(wrong, "load_checkpoint", *fragments)


# --- train_digits_classifier -----------------------------------------------------------------------------------
def _train_split(scale: float = 1 / 255):
    root = datasets_dir() / "digits"
    with open(root / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    x = torch.stack([torch.tensor(np.asarray(Image.open(root / r["filename"]), dtype=np.float32))[None]
                     for r in rows]) * scale  # (N, 1, 8, 8)
    return x, torch.tensor([int(r["label"]) for r in rows])


def _fit(x, y, epochs, lr=0.003):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 160), nn.ReLU(), nn.Linear(160, 80), nn.ReLU(),
                          nn.Linear(80, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(100):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def digits_right():
    return _fit(*_train_split(), epochs=25, lr=0.002)


def digits_untrained():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def digits_unnormalised():
    return _fit(*_train_split(scale=1.0), epochs=12, lr=0.001)


def digits_too_few_steps():
    x, y = _train_split()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for idx in torch.arange(len(x)).split(64)[:20]:
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def digits_returns_history():
    return digits_untrained(), [2.3, 1.1]


def test_train_digits_classifier_passes():
    assert_passes(digits_right, "train_digits_classifier")


@pytest.mark.parametrize("wrong, fragments", [
    (digits_untrained, ("about chance", "untrained")),
    (digits_unnormalised, ("divide the pixels by 255",)),
    (digits_too_few_steps, ("below 0.95", "train longer")),
    (digits_returns_history, ("nn.Module", "tuple")),
])
def test_train_digits_classifier_rejects(wrong, fragments):
    assert_rejects(wrong, "train_digits_classifier", *fragments)


def test_train_digits_classifier_over_the_time_limit(monkeypatch):
    import dataclasses

    from grader import registry
    exercise = registry.get("train_digits_classifier")
    monkeypatch.setitem(registry._EXERCISES, exercise.name, dataclasses.replace(exercise, time_limit_s=0.0))
    assert_rejects(digits_untrained, "train_digits_classifier", "over the budget")
