"""The guarded step of the graded training checks' own loops: only the optimizer changes weights, in time."""
import time

import torch
from torch import nn

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
