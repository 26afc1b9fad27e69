"""``predictions.csv``: one row per evaluated face (its label, the prediction and the class probabilities), written
by ``pcnn evaluate`` and by every ``pcnn cv`` fold so that the faces a model gets wrong can be looked up."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import Split
from ..data.loader import TensorData
from ..fileio import atomic_write
from ..models.pcnn import REGIONS

__all__ = ["OCCLUSION_COLUMNS", "PREDICTION_COLUMNS", "faces_of", "write_predictions"]

#: The leading columns of predictions.csv; one ``p_<class>`` column per model class follows, then
#: :data:`OCCLUSION_COLUMNS`.
PREDICTION_COLUMNS: tuple[str, ...] = ("stem", "path", "label", "predicted", "confidence", "correct")
#: The region occlusion scores (empty for a model without occlusion heads), as in ``pcnn predict``'s CSV.
OCCLUSION_COLUMNS: tuple[str, ...] = tuple(f"occluded_{r}" for r in REGIONS)


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
                      classes: Sequence[str], occlusion: np.ndarray | None = None) -> int:
    """Write ``path`` (CSV, :data:`PREDICTION_COLUMNS`, ``p_<class>``, :data:`OCCLUSION_COLUMNS`) and return how many
    faces are wrong.

    ``probs`` ``(N, K)`` are the probabilities over the model's ``classes``; ``targets`` ``(N,)`` the index of each
    face's true class among them; ``labels`` the true class names as the dataset spells them; ``occlusion``
    ``(N, 5)`` the region occlusion scores (None: the columns stay empty).
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
    if occlusion is not None and np.shape(occlusion) != (n, len(OCCLUSION_COLUMNS)):
        raise ValueError(f"write_predictions: occlusion {np.shape(occlusion)} for {n} faces")
    writer.writerow([*PREDICTION_COLUMNS, *(f"p_{c}" for c in classes), *OCCLUSION_COLUMNS])
    for i in range(n):
        occluded = ([""] * len(OCCLUSION_COLUMNS) if occlusion is None else
                    [f"{float(v):.4f}" for v in occlusion[i]])
        writer.writerow([stems[i], "" if paths[i] is None else str(paths[i]), labels[i], classes[int(predicted[i])],
                         f"{float(confidence[i]):.4f}", int(correct[i]), *(f"{float(p):.4f}" for p in probs[i]),
                         *occluded])
    atomic_write(Path(path), buffer.getvalue())
    return int(n - correct.sum())
