"""The options of ``pcnn robustness`` that shape its numbers and its speed: one typed dataclass whose fields are the
defaults of the benchmark functions and generate the command-line flags (:mod:`pcnn_fer.typed_fields`). No torch
import (the ``pcnn`` parser reads it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ..typed_fields import check_types

__all__ = ["RobustnessOptions"]


def _opt(default: Any, text: str, **more: Any) -> Any:
    return field(default=default, metadata={"help": text, **more})


@dataclass(frozen=True)
class RobustnessOptions:
    """Seed, face subset and batch size of a robustness run."""

    seed: int = _opt(0, "seed of the corruptions' random choices and of the face subset (default 0)")
    max_samples: int = _opt(1500, "a seeded uniform subset of N faces, the same for every model (default 1500: "
                                  "about 5.6 minutes for the bundled 48-pixel model on 2 shared CPU cores; every "
                                  "accuracy is printed with its 95%% confidence interval); 0 = the full split",
                            metavar="N")
    batch_size: int = _opt(64, "images per forward pass (default 64)", metavar="N")

    def __post_init__(self) -> None:
        check_types(self, "robustness options")
        if self.max_samples < 0:
            raise UsageError(f"--max-samples must be 0 (the full split) or positive, got {self.max_samples}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
