"""Hidden rounds bite where the input space is small.

For every exercise whose inputs are few or small (sizes, counts, names, fixed cases), a lookup-table answer —
right for every input the public round can draw, wrong or raising for any other — passes the public round and
fails once the instructor's seed adds the hidden round, which draws from beyond the public range
(`Tester.unseen`). A correct answer passes both rounds.
"""
import pytest
import torch
from torch import nn

from grader import evaluate
from test_lesson00_setup import pick_device_other
from test_lesson01_tensors import broadcast_shape_ok, causal_mask_ok, one_hot_ok
from test_lesson03_modules import LinearOK, MLPOK, RunningMeanOK, count_ok, freeze_ok, init_ok
from test_lesson05_optim import AdamWOther, SGDOther, lr_other
from test_lesson06_data import StridedRange, split_right

SEEDS = ["1", "77", "918273645"]


class NotInTable(KeyError):
    """A lookup-table answer was asked for an input the public round never draws."""


# --- lookup-table answers: each knows the public round's whole input range, nothing beyond ----------------

def pick_device_table(prefer=None):
    """Knows the public machines: no GPU, one or two."""
    if torch.cuda.device_count() > 2:
        raise NotInTable(torch.cuda.device_count())
    return pick_device_other(prefer)


def broadcast_shape_table(a, b):
    """Knows shapes of up to 4 dimensions of sizes up to 9."""
    if max(len(a), len(b)) > 4 or max(tuple(a) + tuple(b), default=0) > 9:
        raise NotInTable((a, b))
    return broadcast_shape_ok(a, b)


ONE_HOT_ROWS = torch.eye(6, dtype=torch.int64)  # the one-hot rows of classes 0 … 5, all the public round uses


def one_hot_table(labels, num_classes=-1):
    k = int(labels.max()) + 1 if num_classes == -1 else num_classes
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise RuntimeError("class values must be in [0, num_classes)")
    return ONE_HOT_ROWS.to(labels.device)[labels][..., :k]


MASKS = {n: causal_mask_ok(n) for n in range(12)}  # every mask the public round can ask for


def causal_mask_table(n, device=None):
    return MASKS[n].to("cpu" if device is None else device)


LINEAR_BOUNDS = {7: 7 ** -0.5, 16: 0.25, 160: 160 ** -0.5}  # 1/sqrt(in_features) of every public size


class LinearTable(LinearOK):
    """Builds the public sizes only, with the init bound looked up by in_features."""

    def __init__(self, in_features, out_features, bias=True):
        if (in_features, out_features) not in {(7, 5), (160, 200), (16, 2000)}:
            raise NotInTable((in_features, out_features))
        nn.Module.__init__(self)
        k = LINEAR_BOUNDS[in_features]
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-k, k))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-k, k)) if bias else None


class MLPTable(MLPOK):
    """Builds the public configurations only."""

    def __init__(self, sizes, activation=torch.nn.ReLU, dropout=0.0):
        if tuple(sizes) not in {(3, 9, 4), (5, 8, 6, 2), (4, 7, 7, 3), (6, 1, 5), (3, 2)}:
            raise NotInTable(sizes)
        super().__init__(sizes, activation, dropout)


def count_table():
    """The public round's answers, recorded from a correct count by the model's repr."""
    table = {}

    def record(module, trainable_only=True):
        table[repr(module), trainable_only] = count_ok(module, trainable_only)
        return table[repr(module), trainable_only]

    assert evaluate(record, name="count_parameters").passed

    def count_parameters(module, trainable_only=True):
        return table[repr(module), trainable_only]
    return count_parameters


# the Xavier bound sqrt(6 / (fan_in + fan_out)) of every weight shape the public model has
XAVIER_BOUNDS = {shape: (6 / sum(shape)) ** 0.5 for shape in [(200, 160), (3, 7), (5, 6), (2, 5)]}


def init_weights_table(m):
    """Looks the bound up by weight shape; any other shape gets a made-up one."""
    if isinstance(m, nn.Linear):
        a = XAVIER_BOUNDS.get(tuple(m.weight.shape), 123.0)
        with torch.no_grad():
            m.weight.uniform_(-a, a)
            if m.bias is not None:
                m.bias.zero_()


class RunningMeanTable(RunningMeanOK):
    """Always five features (the public round's), whatever num_features says."""

    def __init__(self, num_features, momentum=0.1):
        nn.Module.__init__(self)
        self.register_buffer("mean", torch.zeros(5))
        self.m = momentum


def freeze_table(module, prefixes):
    """Knows the public prefix lists only."""
    if tuple(prefixes) not in {("layer1",), ("layer2",), ("layer2.0",), ("layer10.weight", "head"),
                               ("layer1", "layer2.2"), (), ("nothing", "layer")}:
        raise NotInTable(prefixes)
    freeze_ok(module, prefixes)


class SGDTable(SGDOther):
    """Rejects the public round's invalid arguments by table, and nothing else."""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
        if (lr, momentum, dampening, weight_decay, nesterov) in {
                (-0.1, 0.0, 0.0, 0.0, False), (0.1, -0.5, 0.0, 0.0, False), (0.1, 0.0, 0.0, -0.01, False),
                (0.1, 0.0, 0.0, 0.0, True), (0.1, 0.9, 0.1, 0.0, True)}:
            raise ValueError("invalid (it is in my table)")
        torch.optim.Optimizer.__init__(self, params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                                          weight_decay=weight_decay, nesterov=nesterov,
                                                          maximize=maximize))


class AdamWTable(AdamWOther):
    """Rejects the public round's invalid arguments by table, and nothing else."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        if (lr, tuple(betas), eps, weight_decay) in {
                (-1e-3, (0.9, 0.999), 1e-8, 1e-2), (1e-3, (0.9, 0.999), -1e-8, 1e-2), (1e-3, (1.0, 0.999), 1e-8, 1e-2),
                (1e-3, (0.9, 1.0), 1e-8, 1e-2), (1e-3, (-0.1, 0.999), 1e-8, 1e-2), (1e-3, (0.9, 0.999), 1e-8, -0.01)}:
            raise ValueError("invalid (it is in my table)")
        torch.optim.Optimizer.__init__(self, params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                                          amsgrad=amsgrad))
        self.calls = 0


def warmup_cosine_lr_table(step, total_steps, base_lr, warmup_steps, min_lr=0.0):
    """Knows runs of under 50 steps with under 9 warm-up steps."""
    if total_steps >= 50 or warmup_steps >= 9:
        raise NotInTable((total_steps, warmup_steps))
    return lr_other(step, total_steps, base_lr, warmup_steps, min_lr)


def split_dataset_table(dataset, fractions, seed):
    """Knows datasets of up to 100 items."""
    if len(dataset) > 100:
        raise NotInTable(len(dataset))
    return split_right(dataset, fractions, seed)


class ShardedRangeTable(StridedRange):
    """Knows ranges that start below 15 and hold at most 23 integers."""

    def __init__(self, start, end):
        if start >= 15 or end - start > 23:
            raise NotInTable((start, end))
        super().__init__(start, end)


# exercise: (lookup-table answer, a correct answer written independently of the lesson)
EXERCISES = {
    "pick_device": (pick_device_table, pick_device_other),
    "broadcast_shape": (broadcast_shape_table, broadcast_shape_ok),
    "one_hot": (one_hot_table, one_hot_ok),
    "causal_mask": (causal_mask_table, causal_mask_ok),
    "Linear": (LinearTable, LinearOK),
    "MLP": (MLPTable, MLPOK),
    "count_parameters": (count_table, count_ok),  # the table is recorded when the test runs
    "init_weights": (init_weights_table, init_ok),
    "RunningMean": (RunningMeanTable, RunningMeanOK),
    "freeze": (freeze_table, freeze_ok),
    "SGD": (SGDTable, SGDOther),
    "AdamW": (AdamWTable, AdamWOther),
    "warmup_cosine_lr": (warmup_cosine_lr_table, lr_other),
    "split_dataset": (split_dataset_table, split_right),
    "ShardedRange": (ShardedRangeTable, StridedRange),
}


@pytest.mark.parametrize("name", EXERCISES)
def test_lookup_table_passes_the_public_round_and_fails_the_hidden_one(name, monkeypatch):
    table = EXERCISES[name][0]
    if table is count_table:
        table = count_table()
    assert evaluate(table, name=name).passed  # right on every public input
    for seed in SEEDS:
        monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
        report = evaluate(table, name=name)
        failed = [c for c in report.cases if not c.passed and not c.skipped]
        assert report.status == "failed" and failed, f"seed {seed}: the hidden round drew only public inputs"
        assert all(c.hidden for c in failed), report.text()


@pytest.mark.parametrize("name", EXERCISES)
def test_correct_answer_passes_the_hidden_rounds(name, monkeypatch):
    for seed in SEEDS:
        monkeypatch.setenv("TORCHDOJO_HIDDEN_SEED", seed)
        report = evaluate(EXERCISES[name][1], name=name)
        assert report.passed and any(c.hidden for c in report.cases), f"seed {seed}:\n{report.text()}"
