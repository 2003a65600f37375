"""The guarded step of the graded training checks' own loops: only the optimizer changes weights, in time."""
import time

import torch
from torch import nn

from grader.compare import Mismatch, one_line
from grader.runner import untraced


def _same(p: torch.Tensor, a: torch.Tensor) -> bool:
    """Whether parameter p still holds exactly the values a."""
    p = p.detach()
    # a weight gone nan (a diverging model) is not a change made outside the optimizer, hence equal_nan
    return (p.shape == a.shape and p.dtype == a.dtype and p.device == a.device
            and bool(torch.isclose(p, a, rtol=0, atol=0, equal_nan=True).all()))


class Guard:
    """Steps the optimizer of a check's loop; refuses once the weights changed outside it or time ran out."""

    def __init__(self, params, limit_s: float, start: float | None = None):
        """Watches `params` from their values now; times from `start` (perf_counter; default now)."""
        self.params, self.limit_s = list(params), limit_s
        self.start = time.perf_counter() if start is None else start
        self.tampered, self.timed_out, self.steps = False, False, 0
        # values, not version counters: writes through p.data do not bump p._version; the baseline is taken
        # now so that a change in the very first forward is caught too
        with untraced():
            self._after = [p.detach().clone() for p in self.params]

    def step(self, optimizer, clip: float | None = None) -> bool:
        """After loss.backward(): clip, step and count unless the weights changed since the last step; False to stop."""
        with untraced():
            self.tampered = not all(_same(p, a) for p, a in zip(self.params, self._after))
            if self.tampered:
                return False
            if clip is not None:
                nn.utils.clip_grad_norm_(self.params, clip)
            optimizer.step()
            self._after = [p.detach().clone() for p in self.params]
            self.steps += 1
        self.timed_out = time.perf_counter() - self.start > self.limit_s
        return not self.timed_out

    @property
    def stopped(self) -> bool:
        """Whether the loop was refused (tampered or timed out)."""
        return self.tampered or self.timed_out


# What every graded training check says when its loop or the reload below caught the model out
TAMPERED = ("the model's parameters changed between two optimizer steps — forward must only compute the logits: "
            "leave the training to the optimizer")
STATE_ONLY = ("everything the model learns must live in its parameters (its state_dict): keep no tables, no models "
              "in plain lists or dicts, and nothing in forward that changes with the calls")


def reloaded_logits(make, model: nn.Module, device, logits_of):
    """Sandbox side, after training: logits_of(twin) in eval mode without a graph, where twin = make() on `device`
    loaded strictly with the trained model's state_dict — (logits, None), or (None, why it would not load).
    Whatever the model learned outside its state_dict (a table, a hidden twin, a call counter) shows as a
    difference."""
    twin = make()
    with untraced():
        twin.to(device)
        try:
            twin.load_state_dict(model.state_dict(), strict=True)
        except RuntimeError as e:
            return None, one_line(e)
    twin.eval()
    with torch.no_grad():
        return logits_of(twin), None


def expect_reload_agrees(run: dict, cls_name: str, trained: torch.Tensor, on: str) -> None:
    """Trusted side: Mismatch unless the twin of reloaded_logits (run["reloaded"], run["reload_error"]) gave the
    trained model's logits `trained` (the same rows) on `on`."""
    if run["reload_error"]:
        raise Mismatch(f"a fresh {cls_name} could not load the trained model's state_dict: {run['reload_error']} — "
                       f"{STATE_ONLY}")
    reloaded = run["reloaded"]
    if not (isinstance(reloaded, torch.Tensor) and reloaded.shape == trained.shape
            and torch.allclose(reloaded, trained, atol=1e-4, rtol=1e-4)):
        raise Mismatch(f"a fresh {cls_name} loaded with the trained model's state_dict gives other logits {on} than "
                       f"the trained model — {STATE_ONLY}")
