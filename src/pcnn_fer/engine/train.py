"""``pcnn train``: fit a PCNN on a dataset with a recipe, select on validation data, resume exactly after a crash.

Layout of a run directory::

    RUN_DIR/last.pt              training checkpoint of the last finished epoch (atomic; resume with --resume RUN_DIR)
    RUN_DIR/model.safetensors    the selected model (best validation metric) + RUN_DIR/model.json (pcnn_fer.load_model)
    RUN_DIR/history.csv|json     one row per epoch: lr, train loss/acc, val acc, val mean-class acc, time, img/s
    RUN_DIR/curves.png           loss and accuracy curves
    RUN_DIR/results.json         the selection: split, epoch, validation metrics, recipe, options
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.datasets import DatasetError, DatasetReader, dataset_root, get_dataset
from ..data.loader import (
    TensorData,
    epoch_batches,
    load_tensor_data,
    sample_weights_balanced,
    seed_for,
)
from ..data.protocols import train_val_split
from ..data.transforms import AUGMENT_PRESETS, BatchAugment
from ..loss import make_loss
from ..models.pcnn import PCNN
from ..weights import load_resnet_trunks, save_model
from .checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .distributed import DistInfo, barrier, broadcast_int, cleanup, init_distributed
from .ema import WeightAverage
from .finetune import init_from_pretrained, is_head_parameter
from .logs import plot_history, write_history, write_json
from .loop import evaluate_data, train_epoch
from .precision import AMP_CHOICES, resolve_amp
from .recipes import Recipe

__all__ = ["TrainOptions", "build_optimizer", "build_scheduler", "fit", "load_train_val", "lr_factor",
           "resolve_device", "train"]

#: Options that may be changed when resuming (everything else comes from the checkpoint).
RESUMABLE_OVERRIDES = ("epochs", "device", "progress", "stop_after", "eval_batch_size")


@dataclass
class TrainOptions:
    """Everything about a run that is not the recipe: data, device, precision, selection and bookkeeping."""

    dataset: str
    root: str
    out: str
    device: str = "auto"
    amp: str = "auto"  # none, bf16, fp16, or auto (bf16 where the hardware has it natively)
    channels_last: bool = False
    compile: bool = False
    balanced: bool = False
    init_resnet: str | None = None
    init: str | None = None  # fine-tune from a trained PCNN (run dir, .safetensors, official .pth, bundled name)
    mode: str | None = None  # training label mode (None: recipe's, if the dataset has it, else the dataset default)
    val_mode: str | None = None
    val_fraction: float = 0.1
    seed: int = 0
    select_on: str | None = None
    allow_test_selection: bool = False
    max_train_samples: int | None = None
    eval_batch_size: int = 256
    progress: bool = True
    cache_dir: str | None = None
    use_cache: bool = True
    time_budget: float | None = None  # minutes; fewer epochs (decided during warm-up) so that the run fits
    align_faces: bool | None = None  # decode face-aligned (None: the dataset's default, on for JAFFE)

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}")
        if self.init and self.init_resnet:
            raise ValueError("--init and --init-resnet exclude each other (one source of initial weights)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ValueError("--max-train-samples must be at least 2")
        if self.eval_batch_size < 1:
            raise ValueError("--eval-batch-size must be positive")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError("--time-budget must be a positive number of minutes")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in checkpoints and results)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        data = {"align_faces": False, **data}  # runs stored before the option decoded without alignment
        return cls(**{k: v for k, v in data.items() if k in known})


# ----------------------------------------------------------------------------------------------------------------------
# Devices, optimiser, schedule
# ----------------------------------------------------------------------------------------------------------------------


def resolve_device(name: str | None, dist_info: DistInfo | None = None) -> torch.device:
    """``auto`` → CUDA when available else CPU; in a DDP job a CUDA device becomes ``cuda:LOCAL_RANK``."""
    dist_info = dist_info or DistInfo()
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name}: CUDA is not available on this machine")
        if dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {name!r}")
    return device


def build_optimizer(model: nn.Module, recipe: Recipe, finetune: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW with the recipe's weight decay (optionally not on BN / biases).

    When ``finetune`` (a run started with ``--init``), everything but the heads learns at ``lr * init_lr_scale``.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            slow = finetune and not is_head_parameter(name)
            decay = recipe.decay_norm_bias or p.ndim > 1
            groups.setdefault((slow, decay), []).append(p)
    groups = [{"params": params, "weight_decay": recipe.weight_decay if decay else 0.0,
               "lr": recipe.lr * (recipe.init_lr_scale if slow else 1.0)}
              for (slow, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def lr_factor(step: int, recipe: Recipe, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then StepLR or cosine (per step)."""
    steps_per_epoch = max(1, steps_per_epoch)
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    if warm and step < warm:
        return (step + 1) / warm
    if recipe.schedule == "step":
        return recipe.gamma ** ((step // steps_per_epoch) // max(1, recipe.step_epochs))
    total = recipe.epochs * steps_per_epoch
    t = min(1.0, (step - warm) / max(1, total - warm))
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe | Callable[[], Recipe],
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`lr_factor` (its state is the step count: checkpoint-friendly).

    ``recipe`` may be a zero-argument callable returning the current recipe (the epoch count can change during
    warm-up under a time budget).
    """
    current = recipe if callable(recipe) else (lambda: recipe)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, current(), steps_per_epoch))


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def _mode_for(reader: DatasetReader, explicit: str | None, recipe_mode: str | None) -> str | None:
    if explicit is not None:
        return reader.check_mode(explicit)
    if recipe_mode is not None and recipe_mode in reader.modes:
        return recipe_mode
    return reader.check_mode(None)


def is_test_split(reader: DatasetReader, split: str) -> bool:
    """True for a dataset's held-out test split (model selection on it is refused by default)."""
    if split == reader.val_split:
        return False
    return split == reader.test_split or split in ("test", "private_test")


def _seeded_subset(data: TensorData, n: int | None, seed: int, what: str) -> TensorData:
    if n is None or n >= len(data):
        return data
    g = torch.Generator().manual_seed(seed_for(seed, 7919, len(data)))
    rows = torch.randperm(len(data), generator=g)[:n].sort().values
    return data.subset(rows, name=f"{data.name}[{n} of {len(data)}]")


def load_train_val(opts: TrainOptions, recipe: Recipe, device: torch.device,
                   log: Any = print) -> tuple[TensorData, TensorData, dict[str, Any]]:
    """Decode the training split and the selection split onto ``device``.

    Selection uses ``opts.select_on`` if given (a test split only with ``allow_test_selection``), else the dataset's
    own validation split, else a seeded validation split carved from train (by subject where subjects are known).
    """
    reader = get_dataset(opts.dataset)
    root = dataset_root(opts.root, reader.name)
    train_mode = _mode_for(reader, opts.mode, recipe.label_mode)
    val_mode = _mode_for(reader, opts.val_mode, recipe.val_mode)
    present = reader.splits(root)
    train_name = reader.train_split
    if train_name not in present:
        if len(present) == 1 and not is_test_split(reader, present[0]):
            train_name = present[0]  # e.g. an image folder without split folders ("all")
        else:
            raise DatasetError(f"{reader.name}: no training split {reader.train_split!r} under {root}; present: "
                               f"{', '.join(present) or 'none'}")
    train_split = reader.load(root, train_name, train_mode)
    info: dict[str, Any] = {"dataset": reader.name, "train_split": train_name, "train_mode": train_mode,
                            "val_mode": val_mode, "test_selection": False}
    aligner = FaceAligner() if wants_alignment(reader, opts.align_faces) else None
    decode = {"cache": opts.cache_dir, "use_cache": opts.use_cache, "align": aligner, "log": log}
    val_name = opts.select_on
    if val_name is None:
        if reader.val_split is not None and reader.val_split in present:
            val_name = reader.val_split
        elif reader.name == "folder":
            val_name = next((s for s in ("val", "valid", "validation") if s in present), None)
    if val_name is not None:
        if val_name == train_name:
            raise ValueError(f"--select-on {val_name}: that is the training split; select on validation data")
        if is_test_split(reader, val_name):
            if not opts.allow_test_selection:
                raise ValueError(f"--select-on {val_name} is a test split: model selection on test data is refused "
                                 "(pass --allow-test-selection to do it anyway; it is recorded in the results)")
            info["test_selection"] = True
        if val_name not in present:
            raise DatasetError(f"{reader.name}: no split {val_name!r} under {root}; present: {', '.join(present)}")
        val_split = reader.load(root, val_name, val_mode)
        train_data, _ = load_tensor_data(train_split, recipe.input_size, device, **decode)
        val_data, _ = load_tensor_data(val_split, recipe.input_size, device, **decode)
        info["val_split"] = val_name
    else:
        tr, va = train_val_split(train_split, val_fraction=opts.val_fraction, seed=opts.seed,
                                 by_subject=train_split.subjects is not None)
        full, _ = load_tensor_data(train_split, recipe.input_size, device, **decode)
        train_data = full.subset(tr, name=f"{full.name}-minus-val")
        val_data = full.subset(va, name=f"{full.name}-val")
        how = "by subject" if train_split.subjects is not None else "stratified"
        info["val_split"] = f"{train_name}-val({opts.val_fraction:g}, {how}, seed {opts.seed})"
    if len(train_data) == 0 or len(val_data) == 0:
        raise DatasetError(f"{reader.name}: empty training or validation data")
    if train_data.classes != val_data.classes:
        raise DatasetError(f"{reader.name}: training and validation classes differ")
    train_data = _seeded_subset(train_data, opts.max_train_samples, opts.seed, "train")
    val_data = _seeded_subset(val_data, recipe.max_val_samples, opts.seed, "val")
    info["num_train"], info["num_val"] = len(train_data), len(val_data)
    info["face_alignment"] = face_summary([train_data, val_data], aligner.name if aligner else None)
    return train_data, val_data, info


# ----------------------------------------------------------------------------------------------------------------------
# Fit
# ----------------------------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _setup_backends(device: torch.device) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def fit(
    recipe: Recipe,
    opts: TrainOptions,
    train_data: TensorData,
    val_data: TensorData | None,
    out: str | Path,
    dist_info: DistInfo | None = None,
    resume_state: dict[str, Any] | None = None,
    stop_after: int | None = None,
    info: dict[str, Any] | None = None,
    log: Any = print,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Train ``recipe`` on ``train_data`` (already on the training device), select on ``val_data`` every epoch.

    Writes the run directory (see module docstring) from rank 0; returns the results dict. With ``val_data`` None
    the last epoch is selected. ``resume_state`` (a loaded ``last.pt``) continues exactly where it stopped;
    ``stop_after`` ends this call after that many epochs (resumable, like a kill at an epoch boundary).
    With ``opts.time_budget`` (minutes, counted from ``started_at``, default now) the epoch count is lowered after
    the first epoch and after each warm-up epoch so that the run ends within the budget; the cosine / step schedule
    follows the new count (it has not started yet during warm-up).
    """
    started_at = time.perf_counter() if started_at is None else started_at
    dist_info = dist_info or DistInfo()
    info = dict(info or {})
    out = Path(out)
    device = train_data.device
    main = dist_info.is_main
    say = log if main else (lambda *a, **k: None)
    amp, amp_reason = resolve_amp(opts.amp, device)
    # On a CPU, bf16 validation changes the accuracy (docs/performance.md): selection and shipped figures stay fp32.
    eval_amp = amp if device.type == "cuda" else "none"
    info["amp"] = {"requested": opts.amp, "used": amp, "reason": amp_reason, "validation": eval_amp}
    say(f"precision: {'fp32' if amp == 'none' else amp} autocast ({amp_reason}; --amp {opts.amp}); "
        f"validation in {'fp32' if eval_amp == 'none' else eval_amp}")
    _setup_backends(device)
    _seed_everything(opts.seed)

    model: PCNN = recipe.create_model(train_data.classes)
    if opts.init_resnet and resume_state is None:
        skipped = load_resnet_trunks(model, opts.init_resnet)
        say(f"initialised the trunks from {opts.init_resnet}" + (f" ({len(skipped)} tensors skipped)"
                                                                 if skipped else ""))
    if opts.init and resume_state is None:
        report = init_from_pretrained(model, opts.init)
        say(report.describe())
        info["init"] = report.to_dict()
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe, finetune=bool(opts.init))
    ema = WeightAverage(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    weights = sample_weights_balanced(train_data.labels, train_data.num_classes) if opts.balanced else None

    def batches_for(epoch: int) -> list[torch.Tensor]:
        """This rank's index batches of ``epoch`` (capped at the recipe's ``max_steps``)."""
        b = epoch_batches(len(train_data), recipe.batch_size, epoch, seed=opts.seed, rank=dist_info.rank,
                          world_size=dist_info.world_size, sample_weights=weights, device=device)
        return b[: recipe.max_steps] if recipe.max_steps else b

    steps_per_epoch = len(batches_for(0))
    current = {"recipe": recipe}
    scheduler = build_scheduler(optimizer, lambda: current["recipe"], steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and device.type == "cuda")
    loss_fn = make_loss(recipe.loss, recipe.alpha, recipe.beta, label_smoothing=recipe.label_smoothing).to(device)
    augment = BatchAugment(recipe.input_size, model.config.mean, model.config.std,
                                 AUGMENT_PRESETS[recipe.augment])

    start_epoch, best_metric, best_epoch, best_val = 0, -math.inf, 0, None
    history: list[dict[str, Any]] = []
    if resume_state is not None:
        try:
            model.load_state_dict(resume_state["model"])
            optimizer.load_state_dict(resume_state["optimizer"])
            scheduler.load_state_dict(resume_state["scheduler"])
            if resume_state.get("scaler"):
                scaler.load_state_dict(resume_state["scaler"])
            if ema is not None:
                ema.load_state_dict(resume_state["ema"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f"the checkpoint in {out} does not fit this model/recipe: {str(e).splitlines()[0]}"
                             ) from None
        start_epoch = int(resume_state["epoch"])
        best_metric = float(resume_state["best_metric"])
        best_epoch = int(resume_state["best_epoch"])
        best_val = resume_state.get("best_val")
        history = list(resume_state.get("history", []))
        restore_rng_state(resume_state["rng"])
        say(f"resuming {out} after epoch {start_epoch}")

    train_model: nn.Module = model
    if dist_info.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if opts.compile:
        train_model = torch.compile(train_model)
    select_metric = recipe.select_metric
    val_desc = info.get("val_split") or "validation"
    say(f"training {recipe.name} ({recipe.model}, {recipe.input_size}px) on {len(train_data)} "
        f"{info.get('dataset', train_data.name)} images, selecting on {len(val_data) if val_data else 0} "
        f"({val_desc}); {steps_per_epoch} steps/epoch x {recipe.epochs} epochs on {device}"
        + (f" x {dist_info.world_size} processes" if dist_info.enabled else ""))

    epochs_run = 0
    requested_epochs = recipe.epochs
    epoch = start_epoch - 1
    while epoch + 1 < recipe.epochs:
        epoch += 1
        epoch_start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        generator = torch.Generator(device=device).manual_seed(seed_for(opts.seed, epoch, dist_info.rank, 1))
        train_model.train()
        stats = train_epoch(train_model, train_data, batches_for(epoch), loss_fn, optimizer, scheduler, augment,
                            generator=generator, amp=amp, scaler=scaler, channels_last=opts.channels_last,
                            dist_info=dist_info, progress=opts.progress,
                            description=f"epoch {epoch + 1}/{recipe.epochs}",
                            after_step=None if ema is None else (lambda: ema.update(model)))
        selected_model = model if ema is None else ema.module  # the weights that are validated and shipped
        val = None
        if val_data is not None:
            val = evaluate_data(selected_model, val_data, recipe.input_size, model.config.mean, model.config.std,
                                batch_size=opts.eval_batch_size, amp=eval_amp, channels_last=opts.channels_last,
                                dist_info=dist_info)
        metric = val[select_metric] if val is not None else float(epoch)
        is_best = val is None or metric > best_metric
        if is_best:
            best_metric, best_epoch = metric, epoch + 1
            best_val = None if val is None else {k: val[k] for k in ("accuracy", "mean_class_accuracy",
                                                                     "per_class_accuracy", "num_samples")}
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["accuracy"],
               "val_acc": None if val is None else val["accuracy"],
               "val_mean_class_acc": None if val is None else val["mean_class_accuracy"],
               "time": time.perf_counter() - epoch_start, "img_per_s": stats["images_per_second"], "best": is_best}
        history.append(row)
        val_text = "" if val is None else (f" val {val['accuracy']:.2f}% (mean-class "
                                           f"{val['mean_class_accuracy']:.2f}%)")
        say(f"epoch {epoch + 1}/{recipe.epochs} lr {lr:.3g} loss {stats['loss']:.4f} train {stats['accuracy']:.2f}%"
            f"{val_text} {row['time']:.1f}s {stats['images_per_second']:.0f} img/s" + (" *" if is_best else ""))
        if opts.time_budget and resume_state is None and (epoch == 0 or epoch + 1 <= recipe.warmup_epochs):
            elapsed = time.perf_counter() - started_at
            more = int((opts.time_budget * 60 - elapsed) // (row["time"] * 1.03))
            epochs = broadcast_int(max(epoch + 1, min(requested_epochs, epoch + 1 + more)), dist_info, device)
            if epochs != recipe.epochs:
                say(f"time budget {opts.time_budget:g} min: {row['time']:.1f}s per epoch, {elapsed / 60:.1f} min "
                    f"used -> training {epochs} epochs instead of {recipe.epochs}")
                recipe = recipe.with_overrides(epochs=epochs)
                current["recipe"] = recipe
                info["time_budget_epochs"] = epochs
        if main:
            if is_best:
                save_model(selected_model, out / "model.safetensors", extra=_model_extra(recipe, opts, info, best_epoch,
                                                                                best_val))
            write_history(out, history)
            try:
                plot_history(out / "curves.png", history)
            except Exception as e:  # noqa: BLE001 - a plotting failure must never lose a training run
                say(f"warning: could not plot the curves ({e})")
            save_checkpoint(out / "last.pt", {
                "epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "ema": ema.state_dict() if ema is not None else None,
                "rng": capture_rng_state(), "best_metric": best_metric, "best_epoch": best_epoch,
                "best_val": best_val, "history": history, "args": opts.to_dict(), "recipe": recipe.to_dict(),
                "info": info, "classes": list(train_data.classes),
            })
        barrier(dist_info)
        epochs_run += 1
        if stop_after is not None and epochs_run >= stop_after and epoch + 1 < recipe.epochs:
            say(f"stopping after {epochs_run} epoch(s) as asked; continue with: pcnn train --resume {out}")
            break

    finished = bool(history) and history[-1]["epoch"] >= recipe.epochs
    results = {
        "finished": finished, "epochs": recipe.epochs, "epochs_done": history[-1]["epoch"] if history else 0,
        "selected_epoch": best_epoch, "select_metric": select_metric, "selected_on": info.get("val_split"),
        "test_selection": bool(info.get("test_selection", False)), "validation": best_val,
        "train_img_per_s": _mean([r["img_per_s"] for r in history]), "device": str(device),
        "world_size": dist_info.world_size, "recipe": recipe.to_dict(), "options": opts.to_dict(), "data": info,
        "model": str(out / "model.safetensors"),
    }
    if main:
        write_json(out / "results.json", results)
        if finished and best_val is not None:
            say(f"selected epoch {best_epoch}: {val_desc} accuracy {best_val['accuracy']:.2f}% "
                f"(mean-class {best_val['mean_class_accuracy']:.2f}%) -> {out / 'model.safetensors'}")
    return results


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _model_extra(recipe: Recipe, opts: TrainOptions, info: dict[str, Any], epoch: int,
                 val: dict[str, Any] | None) -> dict[str, Any]:
    return {"training": {"dataset": info.get("dataset", opts.dataset), "recipe": recipe.to_dict(), "epoch": epoch,
                         "train_label_mode": info.get("train_mode"), "selected_on": info.get("val_split"),
                         "test_selection": bool(info.get("test_selection", False)), "init": info.get("init"),
                         "amp": info.get("amp")},
            "validation": val}


# ----------------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------------


def train(opts: TrainOptions | None, recipe: Recipe | None, resume: str | Path | None = None,
          overrides: dict[str, Any] | None = None, stop_after: int | None = None,
          log: Any = print) -> dict[str, Any]:
    """Run (or, with ``resume`` = a run directory, continue) a training run; returns the results dict.

    When resuming, options and recipe come from the checkpoint; ``overrides`` may change only
    :data:`RESUMABLE_OVERRIDES` (e.g. more ``epochs``). Works under torchrun (DDP) as well as alone.
    """
    resume_state = None
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if resume is not None:
        resume_state = load_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        try:
            stored = TrainOptions.from_dict(resume_state["args"])
            recipe = Recipe.from_dict(resume_state["recipe"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{resume}: checkpoint lacks valid options/recipe ({e})") from None
        ignored = sorted(k for k in overrides if k not in RESUMABLE_OVERRIDES)
        if ignored:
            log(f"note: resuming keeps the run's own settings; ignoring {', '.join(ignored)}")
        stored_out = Path(resume) if Path(resume).is_dir() else Path(resume).parent
        opts = replace(stored, out=str(stored_out),
                       **{k: v for k, v in overrides.items() if k in RESUMABLE_OVERRIDES and hasattr(stored, k)})
        if "epochs" in overrides:
            recipe = recipe.with_overrides(epochs=overrides["epochs"])
    if opts is None or recipe is None:
        raise ValueError("train needs options and a recipe (or --resume RUN_DIR)")
    started_at = time.perf_counter()
    out = Path(opts.out)
    if resume_state is None and (out / "last.pt").exists():
        raise ValueError(f"{out} already holds a training run; continue it with --resume {out} or choose another --out")
    device_type = resolve_device(opts.device).type if opts.device not in ("auto", None) else (
        "cuda" if torch.cuda.is_available() else "cpu")
    dist_info = init_distributed(device_type)
    try:
        device = resolve_device(opts.device, dist_info)
        if dist_info.is_main:
            out.mkdir(parents=True, exist_ok=True)
        if resume_state is not None and int(resume_state["epoch"]) >= recipe.epochs:
            if dist_info.is_main:
                log(f"{out}: already trained for {resume_state['epoch']} of {recipe.epochs} epochs; nothing to do "
                    "(pass --epochs N to train longer)")
            results_path = out / "results.json"
            return json.loads(results_path.read_text()) if results_path.exists() else {"finished": True}
        train_data, val_data, info = load_train_val(opts, recipe, device, log=log if dist_info.is_main else None)
        if resume_state is not None and list(resume_state.get("classes", [])) != list(train_data.classes):
            raise ValueError(f"{out}: the checkpoint's classes {resume_state.get('classes')} differ from the data's "
                             f"{list(train_data.classes)}")
        return fit(recipe, opts, train_data, val_data, out, dist_info=dist_info, resume_state=resume_state,
                   stop_after=stop_after, info=info, log=log, started_at=started_at)
    finally:
        cleanup(dist_info)

