"""Run-directory logs: per-epoch CSV + JSON, training-curve and confusion-matrix PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..fileio import atomic_write

__all__ = ["EPOCH_FIELDS", "history_figure", "plot_confusion", "plot_history", "write_history", "write_json"]

#: Columns of ``history.csv`` (and keys of each ``history.json`` entry).
EPOCH_FIELDS: tuple[str, ...] = ("epoch", "lr", "train_loss", "train_acc", "val_acc", "val_mean_class_acc", "time",
                                 "img_per_s", "best", "samples")


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (temporary file + ``os.replace``)."""
    return atomic_write(path, json.dumps(data, indent=2, allow_nan=True) + "\n")


def write_history(run_dir: str | Path, history: Sequence[dict[str, Any]]) -> None:
    """Write ``history.csv`` and ``history.json`` (one row per finished epoch) into ``run_dir``."""
    run_dir = Path(run_dir)
    write_json(run_dir / "history.json", list(history))
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(EPOCH_FIELDS), extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _fmt(row.get(k)) for k in EPOCH_FIELDS})
    atomic_write(run_dir / "history.csv", buffer.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return ""
    return v


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def history_figure(history: Sequence[dict[str, Any]]) -> Any:
    """A matplotlib figure of the training loss (left) and train / validation accuracy (right) per epoch: integer
    epoch ticks, legends below the plots (never over a curve)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    ax1.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train loss")
    ax1.set_ylabel("loss")
    ax2.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train acc")
    val = [(r["epoch"], r["val_acc"]) for r in history if r.get("val_acc") is not None]
    if val:
        ax2.plot([e for e, _ in val], [v for _, v in val], marker="o", label="val acc")
        ax2.plot([r["epoch"] for r in history if r.get("val_mean_class_acc") is not None],
                 [r["val_mean_class_acc"] for r in history if r.get("val_mean_class_acc") is not None],
                 marker=".", linestyle="--", label="val mean-class acc")
    ax2.set_ylabel("accuracy (%)")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
    return fig


def plot_history(path: str | Path, history: Sequence[dict[str, Any]]) -> Path:
    """PNG of :func:`history_figure`."""
    fig = history_figure(history)
    path = Path(path)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_confusion(path: str | Path, matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> Path:
    """PNG of a confusion matrix (rows = true class), cells coloured by row-normalised rate and labelled by count."""
    plt = _pyplot()
    import numpy as np

    cm = np.asarray(matrix, dtype=np.float64)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
