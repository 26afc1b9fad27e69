"""``predictions.csv``: one row per evaluated face (its label, the prediction and the class probabilities), written
by ``pcnn evaluate`` and by every ``pcnn cv`` fold so that the faces a model gets wrong can be looked up."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.datasets import Split
from ..data.loader import TensorData
from ..fileio import atomic_write

__all__ = ["PREDICTION_COLUMNS", "faces_of", "write_predictions"]

#: The leading columns of predictions.csv; one ``p_<class>`` column per model class follows.
PREDICTION_COLUMNS: tuple[str, ...] = ("stem", "path", "label", "predicted", "confidence", "correct")


def faces_of(data: TensorData, split: Split) -> tuple[list[str], list[Path | None]]:
    """The stems and paths (None for csv-pixel datasets) of ``data``'s rows, in its order: ``data`` was decoded from
    ``split`` or from a split sharing its origin (``origin_rows``), so unreadable images are simply absent."""
    if data.origin_rows is None:
        raise ValueError(f"{data.name or 'this data'} was not decoded from a split: its faces have no names")
    row_of = {int(o): i for i, o in enumerate(split.origin_rows)}
    rows = [row_of[int(o)] for o in data.origin_rows]
    return [split.stems[r] for r in rows], [None if split.paths is None else split.paths[r] for r in rows]


def write_predictions(path: str | Path, stems: Sequence[str], paths: Sequence[Path | str | None],
                      labels: Sequence[str], targets: torch.Tensor, probs: torch.Tensor,
                      classes: Sequence[str]) -> int:
    """Write ``path`` (CSV, :data:`PREDICTION_COLUMNS` then ``p_<class>``) and return how many faces are wrong.

    ``probs`` ``(N, K)`` are the probabilities over the model's ``classes``; ``targets`` ``(N,)`` the index of each
    face's true class among them; ``labels`` the true class names as the dataset spells them.
    """
    probs = probs.detach().float().cpu()
    targets = targets.detach().long().cpu()
    n = len(targets)
    if not (probs.shape == (n, len(classes)) and len(stems) == len(paths) == len(labels) == n):
        raise ValueError(f"write_predictions: {n} targets, probs {tuple(probs.shape)}, {len(classes)} classes, "
                         f"{len(stems)} stems, {len(paths)} paths, {len(labels)} labels")
    confidence, predicted = probs.max(1)
    correct = predicted == targets
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*PREDICTION_COLUMNS, *(f"p_{c}" for c in classes)])
    for i in range(n):
        writer.writerow([stems[i], "" if paths[i] is None else str(paths[i]), labels[i], classes[int(predicted[i])],
                         f"{float(confidence[i]):.4f}", int(correct[i]), *(f"{float(p):.4f}" for p in probs[i])])
    atomic_write(Path(path), buffer.getvalue())
    return int(n - correct.sum())
