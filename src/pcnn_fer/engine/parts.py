"""The objects a training run works with — model (and its DDP / compiled wrapper), optimiser, schedule, gradient
scaler, weight average, loss, augmentation and the epoch's batches — built from a recipe and run options, saved to
and restored from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.loader import TensorData, epoch_batches, sample_weights_balanced, seed_for
from ..data.transforms import AUGMENT_PRESETS, BatchAugment, eval_transform
from ..loss import make_loss
from ..models.pcnn import region_boxes
from ..weights import load_resnet_trunks
from .checkpoint import CheckpointError
from .devices import seed_everything, setup_backends
from .distributed import DistInfo
from .ema import WeightAverage
from .finetune import init_from_pretrained, is_face_network_spec
from .loop import evaluate_data, train_epoch
from .optim import build_optimizer, build_scheduler
from .options import TrainOptions
from .precision import resolve_amp
from .recipes import Recipe

__all__ = ["TrainingParts", "build_parts"]

#: The checkpoint entries that hold a ``state_dict`` of one of the parts.
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "ema")


@dataclass
class TrainingParts:
    """Everything that trains; ``recipe`` is the run's recipe (a time budget may lower its epoch count, which the
    learning-rate schedule follows)."""

    recipe: Recipe
    opts: TrainOptions
    data: TensorData
    dist_info: DistInfo
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: WeightAverage | None
    amp: str
    eval_amp: str
    sample_weights: torch.Tensor | None = None
    train_model: nn.Module = field(init=False)
    scheduler: torch.optim.lr_scheduler.LambdaLR = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)
    loss_fn: nn.Module = field(init=False)
    augment: BatchAugment = field(init=False)

    def __post_init__(self) -> None:
        device, recipe = self.data.device, self.recipe
        self.train_model = self.model
        self.scheduler = build_scheduler(self.optimizer, lambda: self.recipe, len(self.batches(0)))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16" and device.type == "cuda")
        self.loss_fn = make_loss(recipe.loss, recipe.alpha, recipe.beta,
                                 label_smoothing=recipe.label_smoothing).to(device)
        self.augment = BatchAugment(recipe.input_size, self.model.config.mean, self.model.config.std,
                                    AUGMENT_PRESETS[recipe.augment], region_boxes(self.model.config, recipe.input_size))

    @property
    def selected_model(self) -> nn.Module:
        """The weights that are validated and shipped: the weight average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's index batches of ``epoch`` (capped at the recipe's ``max_steps``)."""
        d = self.dist_info
        b = epoch_batches(len(self.data), self.recipe.batch_size, epoch, seed=self.opts.seed, rank=d.rank,
                          world_size=d.world_size, sample_weights=self.sample_weights, device=self.data.device)
        return b[: self.recipe.max_steps] if self.recipe.max_steps else b

    def wrap(self) -> None:
        """Wrap the model for training: DistributedDataParallel in a DDP job, then ``torch.compile`` if asked."""
        device = self.data.device
        if self.dist_info.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if self.opts.compile:
            self.train_model = torch.compile(self.train_model)

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch (0-based ``epoch``) of seeded batches and augmentation; returns :func:`train_epoch`'s stats."""
        d = self.dist_info
        generator = torch.Generator(device=self.data.device).manual_seed(seed_for(self.opts.seed, epoch, d.rank, 1))
        self.train_model.train()
        return train_epoch(self.train_model, self.data, self.batches(epoch), self.loss_fn, self.optimizer,
                           self.scheduler, self.augment, generator=generator, amp=self.amp, scaler=self.scaler,
                           channels_last=self.opts.channels_last, dist_info=d, progress=self.opts.progress,
                           description=f"epoch {epoch + 1}/{self.recipe.epochs}",
                           after_step=None if self.ema is None else (lambda: self.ema.update(self.model)))

    def validate(self, data: TensorData | None) -> dict[str, Any] | None:
        """Metrics of :attr:`selected_model` on ``data`` (None without data)."""
        if data is None:
            return None
        config = self.model.config
        return evaluate_data(self.selected_model, data, self.recipe.input_size, config.mean, config.std,
                             batch_size=self.opts.eval_batch_size, amp=self.eval_amp,
                             channels_last=self.opts.channels_last, dist_info=self.dist_info)

    def state_dicts(self) -> dict[str, Any]:
        """The checkpoint entries of the parts (:data:`STATE_KEYS`)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def load_state_dicts(self, checkpoint: dict[str, Any], where: Any) -> None:
        """Restore the parts from a loaded ``last.pt`` (CheckpointError when it does not fit this model/recipe)."""
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(checkpoint["ema"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"the checkpoint in {where} does not fit this model/recipe: "
                                  f"{str(e).splitlines()[0]}") from None


#: Training faces whose statistics the batch norms of a dlib- or SFace-initialised model start from.
CALIBRATION_FACES = 512


def _calibration_faces(data: TensorData, recipe: Recipe, model: nn.Module) -> torch.Tensor:
    """A fixed, seeded sample of the training faces, preprocessed as for evaluation (CPU, float32)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randperm(len(data.images), generator=generator)[:CALIBRATION_FACES]
    return eval_transform(data.images[rows].cpu(), recipe.input_size, model.config.mean, model.config.std)


def build_parts(recipe: Recipe, opts: TrainOptions, train_data: TensorData, dist_info: DistInfo,
                info: dict[str, Any], say: Callable[[str], None], fresh: bool = True) -> TrainingParts:
    """Seed, resolve the precision (recorded in ``info["amp"]``), build the model (initialised from ``--init`` /
    ``--init-resnet`` when ``fresh``) and everything that trains it, on ``train_data``'s device."""
    device = train_data.device
    amp, amp_reason = resolve_amp(opts.amp, device)
    # On a CPU, bf16 validation changes the accuracy (docs/performance.md): selection and shipped figures stay fp32.
    eval_amp = amp if device.type == "cuda" else "none"
    info["amp"] = {"requested": opts.amp, "used": amp, "reason": amp_reason, "validation": eval_amp}
    say(f"precision: {'fp32' if amp == 'none' else amp} autocast ({amp_reason}; --amp {opts.amp}); "
        f"validation in {'fp32' if eval_amp == 'none' else eval_amp}")
    setup_backends(device)
    seed_everything(opts.seed)
    model = recipe.create_model(train_data.classes)
    if opts.init_resnet and fresh:
        skipped = load_resnet_trunks(model, opts.init_resnet)
        say(f"initialised the trunks from {opts.init_resnet}" + (f" ({len(skipped)} tensors skipped)"
                                                                 if skipped else ""))
    if opts.init and fresh:
        calibration = _calibration_faces(train_data, recipe, model) if is_face_network_spec(opts.init) else None
        report = init_from_pretrained(model, opts.init, widen=opts.init_widen, seed=opts.seed,
                                      calibration=calibration)
        say(report.describe())
        info["init"] = report.to_dict()
    model.to(device)
    if opts.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe, finetune=bool(opts.init))
    ema = WeightAverage(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    weights = sample_weights_balanced(train_data.labels, train_data.num_classes) if opts.balanced else None
    return TrainingParts(recipe, opts, train_data, dist_info, model, optimizer, ema, amp, eval_amp, weights)
