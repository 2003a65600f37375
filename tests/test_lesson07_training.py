"""07_training: independent correct implementations pass; the usual mistakes are rejected with a diagnosis."""
import csv
import pickle
import random
import warnings

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
                                  "load_checkpoint", "EarlyStopping", "train_digits_classifier"])
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


def epoch_zero_before_step(model, loader, loss_fn, optimizer, device):
    """zero_grad between backward and step: every step sees no gradient."""
    model.train()
    total = seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        total, seen = total + loss.item() * len(x), seen + len(x)
    return total / seen


def epoch_step_once(model, loader, loss_fn, optimizer, device):
    """Gradients summed over the epoch, one step after the loop."""
    model.train()
    optimizer.zero_grad()
    total = seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        loss.backward()
        total, seen = total + loss.item() * len(x), seen + len(x)
    optimizer.step()
    return total / seen


def epoch_step_after_loop(model, loader, loss_fn, optimizer, device):
    """zero_grad per batch, but step() outdented out of the loop: only the last batch counts."""
    model.train()
    total = seen = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        total, seen = total + loss.item() * len(x), seen + len(x)
    optimizer.step()
    return total / seen


def epoch_divide_by_batches(model, loader, loss_fn, optimizer, device):
    model.train()
    total = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader)


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


def epoch_move_thrown_away(model, loader, loss_fn, optimizer, device):
    model.train()
    total = 0.0
    for x, y in loader:
        x.to(device)  # the moved copy is thrown away: on a GPU, model(x) mixes devices
        y = y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader.dataset)


def epoch_labels_move_thrown_away(model, loader, loss_fn, optimizer, device):
    model.train()
    total = 0.0
    for x, y in loader:
        x = x.to(device)
        y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader.dataset)


def epoch_move_thrown_away_reshaped(model, loader, loss_fn, optimizer, device):
    """The unmoved batch reaches the model through a view: only the meta-device rerun can see it."""
    model.train()
    total = 0.0
    for x, y in loader:
        x.to(device)
        y = y.to(device)
        loss = loss_fn(model(x.view(len(x), -1)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader.dataset)


def epoch_cpu_total(model, loader, loss_fn, optimizer, device):
    """Right on a CPU; on a GPU `total += ...` adds a GPU number into a tensor made on the CPU."""
    model.train()
    total = torch.zeros(1)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(x)
    return total.item() / len(loader.dataset)


def test_train_one_epoch_passes():
    assert_passes(epoch_right, "train_one_epoch")


def epoch_new_names(model, loader, loss_fn, optimizer, device):
    """Moves into new names and reads the batch size off the unmoved tensors: correct."""
    model.train()
    total = 0.0
    for xb, yb in loader:
        x, y = xb.to(device), yb.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * xb.shape[0] + 0 * len(yb)
    return total / len(loader.dataset)


def epoch_loss_via_cpu(model, loader, loss_fn, optimizer, device):
    """Reads each loss with .cpu().item(): correct (and it must pass the meta-device rerun too)."""
    model.train()
    total = 0.0
    for x, y in loader:
        x = x.to(device)
        y = y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.detach().cpu().item() * len(x)
    return total / len(loader.dataset)


@pytest.mark.parametrize("right", [epoch_new_names, epoch_loss_via_cpu])
def test_train_one_epoch_passes_written_other_ways(right):
    assert_passes(right, "train_one_epoch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device rerun runs only without CUDA")
@pytest.mark.parametrize("right", [epoch_right, epoch_loss_via_cpu])
def test_train_one_epoch_meta_rerun_passes_correct_code(right):
    """The rerun is not merely skipped: the epoch runs on the meta device (loss.item() gets a stand-in)."""
    report = evaluate(right, name="train_one_epoch")
    rerun = [c for c in report.cases if c.name.startswith("device check")]
    assert rerun and all(c.passed and not c.skipped for c in rerun), report.text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the meta-device rerun runs only without CUDA")
def test_train_one_epoch_meta_rerun_catches_what_the_cpu_cannot():
    report = evaluate(epoch_move_thrown_away_reshaped, name="train_one_epoch")
    failed = [c for c in report.cases if not c.passed and not c.skipped]
    assert [c.name for c in failed] == [c.name for c in report.cases if c.name.startswith("device check")], \
        report.text()


@pytest.mark.parametrize("wrong, fragments", [
    (epoch_mean_of_batches, ("plain mean of the batch losses",)),
    (epoch_no_zero_grad, ("zero_grad",)),
    (epoch_no_train_call, ("model.train()",)),
    (epoch_eval_mode, ("eval mode",)),
    (epoch_not_moved, ("inputs of a batch were not moved",)),
    (epoch_labels_not_moved, ("labels of a batch were not moved",)),
    (epoch_returns_tensor, ("python float", "tensor")),
    (epoch_last_loss, ("last batch only",)),
    (epoch_move_thrown_away, ("x.to(device) returns a new tensor; assign it: x = x.to(device)",)),
    (epoch_labels_move_thrown_away, ("y.to(device) returns a new tensor; assign it: y = y.to(device)",)),
    (epoch_move_thrown_away_reshaped, ("device check", "combines a CPU tensor")),
    (epoch_cpu_total, ("device check", "combines a CPU tensor")),
    (epoch_zero_before_step, ("did not move", "between loss.backward() and optimizer.step()")),
    (epoch_step_once, ("once per epoch", "inside the loop")),
    (epoch_step_after_loop, ("once per epoch", "only the last batch's gradients")),
    (epoch_divide_by_batches, ("divided by the number of batches", "number of samples seen")),
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


def save_named_parameters(path, model, optimizer, epoch):
    torch.save({"model": dict(model.named_parameters()), "optimizer": optimizer.state_dict(), "epoch": epoch},
               path)


def save_parameters_detached(path, model, optimizer, epoch):
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    torch.save({"model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch}, path)


def save_with_pickle(path, model, optimizer, epoch):
    with open(path, "wb") as f:
        pickle.dump({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, f)


def save_model_to_cpu(path, model, optimizer, epoch):
    """Right file, but model.cpu() moves the caller's model off its GPU."""
    torch.save({"model": model.cpu().state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, path)


def save_copies_on_cpu(path, model, optimizer, epoch):
    """Also right: CPU copies of the tensors, the model itself left alone."""
    weights = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
    torch.save({"model": weights, "optimizer": optimizer.state_dict(), "epoch": epoch}, path)


def test_save_checkpoint_passes():
    assert_passes(save_right, "save_checkpoint")
    assert_passes(save_copies_on_cpu, "save_checkpoint")


def test_save_checkpoint_pickle_leaks_no_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_rejects(save_with_pickle, "save_checkpoint", "torch.save", "not pickle")
    assert not [w for w in caught if "pickle" in str(w.message)], [str(w.message) for w in caught]


@pytest.mark.parametrize("wrong, fragments", [
    (save_whole_objects, ("weights_only=True", "not the model or optimizer objects")),
    (save_tutorial_keys, ("keys should be exactly",)),
    (save_model_only, ("keys should be exactly",)),
    (save_epoch_tensor, ("python int", "not torch.tensor(epoch)")),
    (save_with_pickle, ("plain pickle", "write the file with torch.save")),
    (save_model_to_cpu, ("model.cpu() moves the caller's model", "map_location")),
    (save_next_epoch, ("store it as given",)),
    (save_nothing, ("no file was written",)),
    (save_named_parameters, ("buffers", "running_mean", "running_var", "save model.state_dict()")),
    (save_parameters_detached, ("buffers", "num_batches_tracked", "save model.state_dict()")),
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
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_returns_tensor(path, model, optimizer):
    return torch.tensor(load_right(path, model, optimizer))


def load_parameters_only(path, model, optimizer):
    """Copies the parameters by name: batch norm's buffers keep their fresh values."""
    ckpt = torch.load(path, weights_only=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(ckpt["model"][name])
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_assign(path, model, optimizer):
    """assign=True swaps in new Parameter objects: the optimizer keeps stepping the old ones."""
    ckpt = torch.load(path, weights_only=True)
    model.load_state_dict(ckpt["model"], assign=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def load_new_parameters(path, model, optimizer):
    ckpt = torch.load(path, weights_only=True)
    for name, value in ckpt["model"].items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        if leaf in owner._parameters:
            setattr(owner, leaf, nn.Parameter(value.clone()))
        else:
            getattr(owner, leaf).copy_(value)
    optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt["epoch"]


def test_load_checkpoint_passes():
    assert_passes(load_right, "load_checkpoint")


@pytest.mark.parametrize("wrong, fragments", [
    (load_model_only, ("optimizer's state was not restored",)),
    (load_unsafe, ("weights_only=False",)),
    (load_next_epoch, ("return the saved epoch itself",)),
    (load_whole_dict_into_model, ("loading failed", "ckpt['model']")),
    (load_rebinds_model, ("were not restored", "in place")),
    (load_returns_tensor, ("python int", "tensor")),
    (load_parameters_only, ("buffers", "running_mean", "were not", "model.load_state_dict(ckpt['model'])")),
    (load_assign, ("replaced by new tensors", "optimizer still updates the old objects", "load in place")),
    (load_new_parameters, ("replaced by new tensors", "optimizer still updates the old objects", "load in place")),
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


# --- EarlyStopping ---------------------------------------------------------------------------------------------
class StopperRight:
    """Written another way: a sign folds the two modes into one comparison."""

    def __init__(self, patience, min_delta=0.0, mode="min"):
        if mode not in {"min", "max"}:
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError("patience must be at least 1")
        if min_delta < 0:
            raise ValueError("min_delta must be >= 0")
        self.patience, self.min_delta = patience, min_delta
        self.sign = -1.0 if mode == "min" else 1.0
        self.best = None
        self.num_bad_epochs = 0

    def step(self, metric):
        if self.best is None or self.sign * (metric - self.best) > self.min_delta:
            self.best = metric
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience


class _Stopper:
    """A plain version with one knob per classic mistake."""
    improve_equal = update_best_always = update_best_on_any_gain = keep_count = once = only_min = False
    first_is_bad = validate = True

    def __init__(self, patience, min_delta=0.0, mode="min"):
        if self.validate and (mode not in ("min", "max") or patience < 1 or min_delta < 0):
            raise ValueError("invalid arguments")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best, self.num_bad_epochs = None, 0

    def _better(self, metric, delta):
        if self.mode == "max" and not self.only_min:
            return metric >= self.best + delta if self.improve_equal else metric > self.best + delta
        return metric <= self.best - delta if self.improve_equal else metric < self.best - delta

    def step(self, metric):
        if self.best is None:
            self.best = metric
            if self.first_is_bad:
                self.num_bad_epochs = 0
            else:
                self.num_bad_epochs += 1
        elif self._better(metric, self.min_delta):
            self.best = metric
            if not self.keep_count:
                self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
            if self.update_best_always or (self.update_best_on_any_gain and self._better(metric, 0.0)):
                self.best = metric
        if self.once:
            return self.num_bad_epochs == self.patience
        return self.num_bad_epochs >= self.patience


class StopperLessOrEqual(_Stopper):
    improve_equal = True


class StopperBestOnEveryCall(_Stopper):
    update_best_always = True


class StopperBestOnSmallGains(_Stopper):
    update_best_on_any_gain = True


class StopperNoReset(_Stopper):
    keep_count = True


class StopperTrueOnce(_Stopper):
    once = True


class StopperIgnoresMode(_Stopper):
    only_min = True


class StopperFirstCallBad(_Stopper):
    first_is_bad = False


class StopperNoValidation(_Stopper):
    validate = False


class StopperInfStart:
    """Starts from best = inf, as many tutorials do: `best` is not None before the first call."""

    def __init__(self, patience, min_delta=0.0, mode="min"):
        if mode not in ("min", "max") or patience < 1 or min_delta < 0:
            raise ValueError("invalid arguments")
        self.patience, self.min_delta, self.mode = patience, min_delta, mode
        self.best = float("inf") if mode == "min" else -float("inf")
        self.num_bad_epochs = 0

    def step(self, metric):
        better = metric < self.best - self.min_delta if self.mode == "min" else metric > self.best + self.min_delta
        if better:
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience


class StopperFalsyBest(StopperRight):
    """`not self.best` as the first-call test: a best of 0.0 looks like no best yet."""

    def step(self, metric):
        if not self.best or self.sign * (metric - self.best) > self.min_delta:
            self.best, self.num_bad_epochs = metric, 0
        else:
            self.num_bad_epochs += 1
        return self.num_bad_epochs >= self.patience


class StopperCounterOnly:
    """Never keeps `best` as an attribute (a private name instead)."""

    def __init__(self, patience, min_delta=0.0, mode="min"):
        if mode not in ("min", "max") or patience < 1 or min_delta < 0:
            raise ValueError("invalid arguments")
        self._inner = StopperRight(patience, min_delta, mode)
        self.num_bad_epochs = 0

    def step(self, metric):
        out = self._inner.step(metric)
        self.num_bad_epochs = self._inner.num_bad_epochs
        return out


def test_early_stopping_passes():
    assert_passes(StopperRight, "EarlyStopping")


@pytest.mark.parametrize("wrong, fragments", [
    (StopperLessOrEqual, ("exactly min_delta", "strictly")),
    (StopperBestOnEveryCall, ("`best` follows every metric", "only on an improvement")),
    (StopperBestOnSmallGains, ("smaller than min_delta", "only on an improvement")),
    (StopperNoReset, ("not reset",)),
    (StopperTrueOnce, ("only on the patience-th", "num_bad_epochs >= patience")),
    (StopperIgnoresMode, ("mode='max' is ignored",)),
    (StopperFirstCallBad, ("first call did not count as an improvement",)),
    (StopperNoValidation, ("should raise ValueError",)),
    (StopperInfStart, ("`best` should be None before the first step()",)),
    (StopperCounterOnly, ("attribute `best`",)),
    (StopperFalsyBest, ("best is 0.0, which is falsy", "self.best is none")),
])
def test_early_stopping_rejects(wrong, fragments):
    assert_rejects(wrong, "EarlyStopping", *fragments)


class StopperPublicOnly(StopperRight):
    """Right for the public round's patience values and sequence lengths only (a lookup-table answer)."""

    def __init__(self, patience, min_delta=0.0, mode="min"):
        if patience in (0, -1) or mode not in ("min", "max") or min_delta < 0:
            raise ValueError("invalid arguments")
        if patience > 3:
            raise KeyError(patience)
        super().__init__(patience, min_delta, mode)
        self.calls = 0

    def step(self, metric):
        self.calls += 1
        if self.calls > 18:
            raise KeyError(self.calls)
        return super().step(metric)


@pytest.mark.parametrize("seed", ["1", "77", "918273645"])
def test_early_stopping_hidden_round(monkeypatch, seed):
    assert evaluate(StopperPublicOnly, name="EarlyStopping").passed  # the public round alone
    monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
    assert_passes(StopperRight, "EarlyStopping")
    report = evaluate(StopperPublicOnly, name="EarlyStopping")
    assert not report.passed and all(c.passed for c in report.cases if not c.hidden), report.text()
