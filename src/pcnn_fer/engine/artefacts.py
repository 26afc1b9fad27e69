"""What a training run writes into its run directory (rank 0 only)::

    RUN_DIR/last.pt              training checkpoint of the last finished epoch (atomic; pcnn train --resume RUN_DIR)
    RUN_DIR/model.safetensors    the selected model (best validation metric) + RUN_DIR/model.json (pcnn_fer.load_model)
    RUN_DIR/recipe.json          the resolved recipe (pcnn train --recipe RUN_DIR/recipe.json trains it again)
    RUN_DIR/history.csv|json     one row per epoch: lr, train loss/acc, val acc, val mean-class acc, time, img/s
    RUN_DIR/curves.png           loss and accuracy curves
    RUN_DIR/results.json         the selection: split, epoch, validation metrics, recipe, options
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..weights import save_model
from .checkpoint import save_checkpoint
from .logs import plot_history, write_history, write_json
from .options import TrainOptions
from .parts import TrainingParts
from .recipes import Recipe
from .state import RunState

__all__ = ["RunFolder", "model_extra"]


def model_extra(recipe: Recipe, opts: TrainOptions, info: dict[str, Any], state: RunState) -> dict[str, Any]:
    """The training provenance and validation metrics stored in the selected model's ``model.json``."""
    return {"training": {"dataset": info.get("dataset", opts.dataset), "recipe": recipe.to_dict(),
                         "epoch": state.best_epoch, "train_label_mode": info.get("train_mode"),
                         "selected_on": info.get("val_split"), "test_selection": bool(info.get("test_selection")),
                         "init": info.get("init"), "amp": info.get("amp")},
            "validation": state.best_val}


class RunFolder:
    """A run directory; only the writer (rank 0 of a DDP job) touches the disk, the other ranks' calls do nothing."""

    def __init__(self, path: str | Path, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer

    def save_epoch(self, state: RunState, parts: TrainingParts, info: dict[str, Any], is_best: bool,
                   say: Any = print) -> None:
        """After an epoch: the model when it is the new best, the recipe (a time budget may have changed its epoch
        count), the history and curves, then ``last.pt`` (last, so a checkpoint never points at artefacts that were
        not written)."""
        if not self.writer:
            return
        recipe, opts = parts.recipe, parts.opts
        if is_best:
            save_model(parts.selected_model, self.path / "model.safetensors",
                       extra=model_extra(recipe, opts, info, state))
        write_json(self.path / "recipe.json", recipe.to_dict())
        write_history(self.path, state.history)
        try:
            plot_history(self.path / "curves.png", state.history)
        except Exception as e:  # noqa: BLE001 - a plotting failure must never lose a training run
            say(f"warning: could not plot the curves ({e})")
        save_checkpoint(self.path / "last.pt", {
            **parts.state_dicts(), **state.to_checkpoint(), "args": opts.to_dict(), "recipe": recipe.to_dict(),
            "info": info, "classes": list(parts.data.classes)})

    def results(self, state: RunState, parts: TrainingParts, info: dict[str, Any], threads: int) -> dict[str, Any]:
        """``results.json``'s content (written by the writer); returned on every rank."""
        recipe, opts = parts.recipe, parts.opts
        speeds = [r["img_per_s"] for r in state.history if r["img_per_s"] is not None and math.isfinite(r["img_per_s"])]
        results = {
            "finished": bool(state.history) and state.epochs_done >= recipe.epochs, "epochs": recipe.epochs,
            "epochs_done": state.epochs_done, "selected_epoch": state.best_epoch,
            "select_metric": recipe.select_metric, "selected_on": info.get("val_split"),
            "test_selection": bool(info.get("test_selection", False)), "validation": state.best_val,
            "train_img_per_s": sum(speeds) / len(speeds) if speeds else None, "device": str(parts.data.device),
            "world_size": parts.dist_info.world_size, "threads": threads, "recipe": recipe.to_dict(),
            "options": opts.to_dict(), "data": info, "model": str(self.path / "model.safetensors"),
        }
        if self.writer:
            write_json(self.path / "results.json", results)
        return results
