"""``pcnn train``: fit a PCNN on a dataset with a recipe, select on validation data, resume exactly after a crash.

:func:`train` starts a run and :func:`resume` continues one from its ``last.pt``; both decode the data and call
:func:`fit`, the epoch loop. The pieces it is made of, one job each: run options (:mod:`.options`), the data
(:mod:`.train_data`), the model / optimiser / schedule / EMA and their checkpoint states (:mod:`.parts`,
:mod:`.optim`), where the run stands (:mod:`.state`), the time budget (:mod:`.budget`) and the run directory's
files (:mod:`.artefacts`, which also documents the layout). Works under torchrun (DDP) as well as alone.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data.loader import TensorData
from ..fileio import removed_on_failure
from .artefacts import RunFolder
from .budget import TimeBudget
from .checkpoint import CheckpointError, load_checkpoint
from .devices import resolve_device, set_threads
from .distributed import DistInfo, barrier, broadcast_int, cleanup, env_rank, init_distributed
from .options import RESUMABLE_OVERRIDES, TrainOptions
from .parts import TrainingParts, build_parts
from .recipes import Recipe
from .state import RunState
from .train_data import load_train_val

__all__ = ["TrainOptions", "fit", "resume", "train"]


def _quiet(*_: Any, **__: Any) -> None:
    """The log of a DDP rank other than 0."""


#: ``info`` entries a resumed run takes from its checkpoint (decided once, at the run's first start).
CARRIED_ON_RESUME = ("init", "time_budget_epochs")


def fit(
    recipe: Recipe,
    opts: TrainOptions,
    train_data: TensorData,
    val_data: TensorData | None,
    out: str | Path,
    dist_info: DistInfo | None = None,
    checkpoint: dict[str, Any] | None = None,
    stop_after: int | None = None,
    info: dict[str, Any] | None = None,
    log: Any = print,
    budget: TimeBudget | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` on ``train_data`` (already on the training device), select on ``val_data`` every epoch.

    Writes the run directory from rank 0 and returns the results dict. With ``val_data`` None the last epoch is
    selected. ``checkpoint`` (a loaded ``last.pt``) continues exactly where it stopped; ``stop_after`` ends this
    call after that many epochs (resumable, like a kill at an epoch boundary); ``budget`` may lower the epoch count.
    """
    dist_info = dist_info or DistInfo()
    say = log if dist_info.is_main else _quiet
    info = dict(info or {})
    if checkpoint is not None:  # what only the run's first start knew: where its weights came from, its budget
        info.update({k: v for k, v in checkpoint.get("info", {}).items() if k in CARRIED_ON_RESUME and k not in info})
    folder = RunFolder(out, writer=dist_info.is_main)
    parts = build_parts(recipe, opts, train_data, dist_info, info, say, fresh=checkpoint is None)
    state = RunState()
    if checkpoint is not None:
        parts.load_state_dicts(checkpoint, out)
        state = RunState.from_checkpoint(checkpoint)  # restores the RNG states: after everything above
        say(f"resuming {out} after epoch {state.epoch}")
    parts.wrap()
    say(_describe(parts, val_data, info))

    epochs_run = 0
    while state.epoch < parts.recipe.epochs:
        start, lr = time.perf_counter(), parts.optimizer.param_groups[0]["lr"]
        stats = parts.train_one_epoch(state.epoch)
        val = parts.validate(val_data)
        row = _history_row(state.epoch + 1, lr, stats, val, time.perf_counter() - start)
        is_best = state.record(row, val, parts.recipe.select_metric)
        say(_epoch_line(row, parts.recipe.epochs, is_best))
        if budget is not None:
            _apply_budget(budget, state, parts, info, say)
        folder.save_epoch(state, parts, info, is_best, say)
        barrier(dist_info)
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after and state.epoch < parts.recipe.epochs:
            say(f"stopping after {epochs_run} epoch(s) as asked; continue with: pcnn train --resume {out}")
            break

    results = folder.results(state, parts, info, threads=set_threads(None))
    if results["finished"] and state.best_val is not None:
        say(f"selected epoch {state.best_epoch}: {info.get('val_split') or 'validation'} accuracy "
            f"{state.best_val['accuracy']:.2f}% (mean-class {state.best_val['mean_class_accuracy']:.2f}%) -> "
            f"{results['model']}")
    return results


def _describe(parts: TrainingParts, val_data: TensorData | None, info: dict[str, Any]) -> str:
    recipe, d = parts.recipe, parts.dist_info
    return (f"training {recipe.name} ({recipe.model}, {recipe.input_size}px) on {len(parts.data)} "
            f"{info.get('dataset', parts.data.name)} images, selecting on {len(val_data) if val_data else 0} "
            f"({info.get('val_split') or 'validation'}); {len(parts.batches(0))} steps/epoch x {recipe.epochs} "
            f"epochs on {parts.data.device}" + (f" x {d.world_size} processes" if d.enabled else ""))


def _history_row(epoch: int, lr: float, stats: dict[str, float], val: dict[str, Any] | None,
                 seconds: float) -> dict[str, Any]:
    return {"epoch": epoch, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["accuracy"],
            "val_acc": None if val is None else val["accuracy"],
            "val_mean_class_acc": None if val is None else val["mean_class_accuracy"],
            "time": seconds, "img_per_s": stats["images_per_second"], "samples": stats["samples"]}


def _epoch_line(row: dict[str, Any], epochs: int, is_best: bool) -> str:
    val = "" if row["val_acc"] is None else f" val {row['val_acc']:.2f}% (mean-class {row['val_mean_class_acc']:.2f}%)"
    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} loss {row['train_loss']:.4f} train "
            f"{row['train_acc']:.2f}%{val} {row['time']:.1f}s {row['img_per_s']:.0f} img/s" + (" *" if is_best else ""))


def _apply_budget(budget: TimeBudget, state: RunState, parts: TrainingParts, info: dict[str, Any],
                  say: Any) -> None:
    plan = budget.replan(state.epoch, state.history[-1]["time"], parts.recipe.epochs, parts.recipe.warmup_epochs)
    if plan is not None:
        epochs, why = plan
        say(why)
        parts.recipe = parts.recipe.with_overrides(epochs=epochs)
        info["time_budget_epochs"] = epochs


def train(opts: TrainOptions, recipe: Recipe, stop_after: int | None = None, log: Any = print) -> dict[str, Any]:
    """Start a training run into ``opts.out`` (refused when it already holds one); returns the results dict."""
    out = Path(opts.out)
    if (out / "last.pt").exists():
        raise CheckpointError(f"{out} already holds a training run; continue it with --resume {out} or choose "
                              "another --out")
    return _run(opts, recipe, None, stop_after, log)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, stop_after: int | None = None,
           log: Any = print) -> dict[str, Any]:
    """Continue the run in ``run_dir`` (or its ``last.pt``) exactly where it stopped; returns the results dict.

    Options and recipe come from the checkpoint; ``overrides`` may change only :data:`RESUMABLE_OVERRIDES` (e.g.
    more ``epochs``, another ``device``), others are reported and ignored.
    """
    checkpoint = load_checkpoint(run_dir)
    folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    try:
        stored = TrainOptions.from_dict(checkpoint["args"])
        recipe = Recipe.from_dict(checkpoint["recipe"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{run_dir}: checkpoint lacks valid options/recipe ({e})") from None
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    ignored = sorted(k for k in overrides if k not in RESUMABLE_OVERRIDES)
    if ignored:
        log(f"note: resuming keeps the run's own settings; ignoring {', '.join(ignored)}")
    opts = replace(stored, out=str(folder),
                   **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES and hasattr(stored, k)})
    if "epochs" in overrides:
        recipe = recipe.with_overrides(epochs=overrides["epochs"])
    if int(checkpoint["epoch"]) >= recipe.epochs:
        if env_rank() == 0:
            log(f"{folder}: already trained for {checkpoint['epoch']} of {recipe.epochs} epochs; nothing to do "
                "(pass --epochs N to train longer)")
        results_path = folder / "results.json"
        return json.loads(results_path.read_text()) if results_path.exists() else {"finished": True}
    return _run(opts, recipe, checkpoint, stop_after, log)


def _run(opts: TrainOptions, recipe: Recipe, checkpoint: dict[str, Any] | None, stop_after: int | None,
         log: Any) -> dict[str, Any]:
    """Join the DDP job (if any), decode the data and fit; a new run folder that fails before its first checkpoint
    is removed again (with the temporary files a failure leaves)."""
    budget = TimeBudget(opts.time_budget, recipe.epochs) if opts.time_budget and checkpoint is None else None
    set_threads(opts.threads)
    dist_info = init_distributed(resolve_device(opts.device).type)
    out = Path(opts.out)
    try:
        device = resolve_device(opts.device, dist_info)
        if budget is not None:
            budget.sync = lambda epochs: broadcast_int(epochs, dist_info, device)
        guard = removed_on_failure(out, keep=lambda: (out / "last.pt").exists()) if dist_info.is_main else nullcontext()
        with guard:
            train_data, val_data, info = load_train_val(opts, recipe, device, log=log if dist_info.is_main else None)
            if checkpoint is not None and list(checkpoint.get("classes", [])) != list(train_data.classes):
                raise CheckpointError(f"{out}: the checkpoint's classes {checkpoint.get('classes')} differ from the "
                                      f"data's {list(train_data.classes)}")
            return fit(recipe, opts, train_data, val_data, out, dist_info=dist_info, checkpoint=checkpoint,
                       stop_after=stop_after, info=info, log=log, budget=budget)
    finally:
        cleanup(dist_info)
