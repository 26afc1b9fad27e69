"""Where a training run stands: finished epochs, the best validation result so far and the per-epoch history.

Together with the RNG states it is the part of ``last.pt`` that is not a ``state_dict`` (the model, optimiser,
scheduler, scaler and EMA states are saved by :class:`~pcnn_fer.engine.parts.TrainingParts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import capture_rng_state, restore_rng_state

__all__ = ["VAL_KEYS", "RunState"]

#: The validation metrics kept for the selected epoch (``results.json`` ``validation``, ``model.json``).
VAL_KEYS = ("accuracy", "mean_class_accuracy", "per_class_accuracy", "num_samples")


@dataclass
class RunState:
    """Finished epochs, the selection so far and the history of a run."""

    epoch: int = 0  # epochs finished
    best_metric: float = -math.inf
    best_epoch: int = 0
    best_val: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, row: dict[str, Any], val: dict[str, Any] | None, select_metric: str) -> bool:
        """Add a finished epoch's history ``row`` and its validation metrics (None: no validation data, the last
        epoch is selected); returns whether it is the new best (also stored in the row as ``best``)."""
        self.epoch = int(row["epoch"])
        metric = val[select_metric] if val is not None else float(self.epoch - 1)
        is_best = val is None or metric > self.best_metric
        if is_best:
            self.best_metric, self.best_epoch = metric, self.epoch
            self.best_val = None if val is None else {k: val[k] for k in VAL_KEYS}
        self.history.append({**row, "best": is_best})
        return is_best

    @property
    def epochs_done(self) -> int:
        """The last finished epoch according to the history (0 before the first)."""
        return self.history[-1]["epoch"] if self.history else 0

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint entries of this state, with the RNG states captured now."""
        return {"epoch": self.epoch, "rng": capture_rng_state(), "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "best_val": self.best_val, "history": self.history}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> RunState:
        """The state saved in ``checkpoint`` (a loaded ``last.pt``); restores the RNG states it captured, so call it
        after everything that draws random numbers while a run is being built."""
        state = cls(epoch=int(checkpoint["epoch"]), best_metric=float(checkpoint["best_metric"]),
                    best_epoch=int(checkpoint["best_epoch"]), best_val=checkpoint.get("best_val"),
                    history=list(checkpoint.get("history", [])))
        restore_rng_state(checkpoint["rng"])
        return state
