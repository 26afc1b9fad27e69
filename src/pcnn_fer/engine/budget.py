"""``--time-budget MIN``: fewer epochs so that a run ends within MIN minutes of its start.

The epoch count is decided from measured epoch times after the first epoch and after every warm-up epoch, while
the cosine / step schedule has not started to decay (so it can still follow the new count); never above the count
asked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["TimeBudget"]


@dataclass
class TimeBudget:
    """A wall-clock budget of ``minutes`` counted from ``started_at`` (``time.perf_counter()``)."""

    minutes: float
    requested_epochs: int
    started_at: float = field(default_factory=time.perf_counter)
    margin: float = 1.03  # headroom on the measured epoch time
    sync: Callable[[int], int] = lambda epochs: epochs  # e.g. rank 0's decision to every DDP rank

    def replan(self, epochs_done: int, epoch_seconds: float, epochs: int,
               warmup_epochs: float) -> tuple[int, str] | None:
        """After a finished epoch: the new epoch count and a line saying why when the budget changes ``epochs``,
        else None. Only decides after the first epoch and the warm-up epochs (on every rank alike)."""
        if not (epochs_done == 1 or epochs_done <= warmup_epochs):
            return None
        elapsed = time.perf_counter() - self.started_at
        more = int((self.minutes * 60 - elapsed) // (epoch_seconds * self.margin))
        planned = self.sync(max(epochs_done, min(self.requested_epochs, epochs_done + more)))
        if planned == epochs:
            return None
        return planned, (f"time budget {self.minutes:g} min: {epoch_seconds:.1f}s per epoch, {elapsed / 60:.1f} min "
                         f"used -> training {planned} epochs instead of {epochs}")
