"""Training recipes: typed, named bundles of model preset, input size, optimiser, schedule and augmentation.

The command line calls them presets (``pcnn train --recipe NAME`` or ``--preset NAME``); every field can be
overridden by a flag (``--epochs``, ``--lr``, ...), which :meth:`Recipe.with_overrides` applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch

from ..data.transforms import AUGMENT_PRESETS
from ..loss import LOSSES
from ..models.pcnn import MODEL_PRESETS, count_parameters, create_model

__all__ = ["RECIPES", "Recipe", "get_recipe", "recipe_cost", "format_recipes"]

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine"]


@dataclass(frozen=True)
class Recipe:
    """One training recipe. ``epochs``/``batch_size`` are global (a DDP run splits the batch across processes)."""

    name: str
    description: str
    model: str
    input_size: int
    epochs: int
    batch_size: int
    lr: float
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_bias: bool = True  # False: no weight decay on BatchNorm parameters and biases
    schedule: Schedule = "step"
    step_epochs: int = 15  # StepLR period (epochs)
    gamma: float = 0.5  # StepLR factor
    warmup_epochs: float = 0.0  # linear warm-up (per step) before the schedule
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    augment: str = "paper"
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # > 0: validate, select and ship an exponential moving average of the weights
    init_lr_scale: float = 0.1  # with --init: learning-rate factor of the pretrained tensors (heads keep lr)
    alpha: float = 12.0  # two-phase loss weights
    beta: float = 8.0
    loss: str = "two-phase"  # a key of pcnn_fer.loss.LOSSES: "two-phase", or "ce" (the ablation: global CE only)
    label_mode: str | None = None  # training label mode for datasets with modes (FERPlus); None: dataset default
    val_mode: str | None = None  # validation label mode (None: dataset default, FERPlus majority)
    select_metric: Literal["accuracy", "mean_class_accuracy"] = "accuracy"
    max_steps: int | None = None  # cap on optimiser steps per epoch (smoke tests)
    max_val_samples: int | None = None  # cap on validation samples (seeded subset; smoke tests)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODEL_PRESETS:
            raise ValueError(f"recipe {self.name!r}: unknown model preset {self.model!r}; available: "
                             f"{', '.join(MODEL_PRESETS)}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be step or cosine, got {self.schedule!r}")
        if self.augment not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augmentation preset {self.augment!r}; choose from {', '.join(AUGMENT_PRESETS)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch size must be at least 2 (BatchNorm), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.input_size < 32:
            raise ValueError(f"input size must be at least 32, got {self.input_size}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ValueError("warm-up epochs and weight decay must be non-negative")
        if not 0.0 < self.init_lr_scale <= 1.0:
            raise ValueError(f"init_lr_scale must be in (0, 1], got {self.init_lr_scale}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max steps must be at least 1, got {self.max_steps}")

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with ``overrides`` applied (unknown names are an error; None clears the optional caps)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown recipe fields: {sorted(unknown)}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def create_model(self, classes: tuple[str, ...]) -> torch.nn.Module:
        """The recipe's PCNN for ``classes`` (canonical names)."""
        return create_model(self.model, num_classes=len(classes), classes=tuple(classes),
                            input_size=self.input_size, **self.model_overrides)


#: The named recipes. The FERPlus recipes use lr 0.01 / weight decay 5e-3: the two-phase loss scales gradients by
#: α + β = 20, so this is the usual "lr 0.2, lr·wd = 5e-5 per step" of a from-scratch ResNet on plain cross-entropy.
#: ``ferplus-cpu`` epochs were sized from a measured 117 img/s (training steps only, channels_last, 2 idle CPU
#: cores); the bundled model's run then measured 109-116 img/s, 250-265 s per epoch of FERPlus probability-mode train
#: (27,947 faces) plus validation (3,191), and benchmarks/train_bundled_model.sh's ``--time-budget 114`` trained 25
#: of the 26 epochs (108 minutes in all); a slower machine trains fewer.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="paper",
            description="the paper's recipe: PCNN at 224, SGD 0.01, halve every 15 epochs, 100 epochs",
            model="paper", input_size=224, epochs=100, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9,
            weight_decay=1e-4, schedule="step", step_epochs=15, gamma=0.5, augment="paper",
        ),
        Recipe(
            name="tiny",
            description="smoke test: tiny PCNN at 48, 4 steps x 2 epochs, seconds on a CPU",
            model="tiny", input_size=48, epochs=2, batch_size=16, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-4, schedule="cosine", augment="strong", max_steps=4, max_val_samples=256,
        ),
        Recipe(
            name="ferplus-compact",
            description="FERPlus from scratch on a GPU: compact PCNN at 48, soft (probability) labels, cosine",
            model="compact", input_size=48, epochs=60, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-3, decay_norm_bias=False, schedule="cosine", warmup_epochs=2,
            augment="strong", label_mode="probability", val_mode="majority",
        ),
        Recipe(
            name="ferplus-cpu",
            description="FERPlus on 2 CPU cores in < 2 h: small PCNN at 48, soft labels, cosine, weight EMA",
            model="small", input_size=48, epochs=26, batch_size=64, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-3, decay_norm_bias=False, schedule="cosine", warmup_epochs=0.5,
            augment="strong", label_mode="probability", val_mode="majority", ema_decay=0.998,
        ),
        Recipe(
            name="fer2013",
            description="FER2013's own 7 labels: fine-tune the bundled small PCNN (pcnn train --init default), "
                        "select on PublicTest",
            model="small", input_size=48, epochs=20, batch_size=64, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-3, decay_norm_bias=False, schedule="cosine", warmup_epochs=0.5,
            augment="strong", label_smoothing=0.1, ema_decay=0.998, init_lr_scale=0.5,
        ),
        Recipe(
            name="ckplus",
            description="CK+ folds: fine-tune the bundled small PCNN (--init default), 10 subject-independent folds "
                        "in minutes on a CPU",
            model="small", input_size=48, epochs=12, batch_size=32, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-4, schedule="cosine", warmup_epochs=0.5, augment="strong",
            init_lr_scale=0.1,
        ),
        Recipe(
            name="jaffe",
            description="JAFFE folds (213 aligned portraits): fine-tune the bundled small PCNN (--init default)",
            model="small", input_size=48, epochs=30, batch_size=16, lr=0.01, optimizer="sgd", momentum=0.9,
            nesterov=True, weight_decay=5e-4, schedule="cosine", warmup_epochs=1, augment="strong",
            init_lr_scale=0.1,
        ),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (ValueError naming the available ones otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_cost(recipe: Recipe, num_classes: int = 7) -> tuple[int, float]:
    """(parameters, forward GFLOPs per image at the recipe's input size), counted by ``FlopCounterMode`` on the
    meta device (no memory, no compute; falls back to the CPU)."""
    from torch.utils.flop_counter import FlopCounterMode

    classes = tuple(f"class_{i}" for i in range(num_classes)) if num_classes > 8 else ()
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = create_model(recipe.model, num_classes=num_classes, classes=classes,
                                     input_size=recipe.input_size, **recipe.model_overrides)
                x = torch.zeros(1, 3, recipe.input_size, recipe.input_size)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model.eval()(x)
            return count_parameters(model), counter.get_total_flops() / 1e9
        except (NotImplementedError, RuntimeError):
            continue
    raise RuntimeError(f"could not count the FLOPs of recipe {recipe.name!r}")


def format_recipes() -> str:
    """A table of every recipe with its cost (parameters, GFLOPs/image) and main hyper-parameters."""
    header = (f"{'recipe':<16} {'model':<8} {'input':>5} {'params':>8} {'GFLOPs':>7} {'optim':<10} {'lr':>6} "
              f"{'schedule':<14} {'epochs':>6} {'batch':>5} {'augment':<7} {'labels':<12}")
    lines = [header, "-" * len(header)]
    for r in RECIPES.values():
        params, gflops = recipe_cost(r)
        optim = r.optimizer + ("+nesterov" if r.nesterov and r.optimizer == "sgd" else "")
        if r.schedule == "step":
            sched = f"step/{r.step_epochs}x{r.gamma:g}"
        else:
            sched = "cosine" + (f"+wu{r.warmup_epochs:g}" if r.warmup_epochs else "")
        lines.append(f"{r.name:<16} {r.model:<8} {r.input_size:>5} {params / 1e6:>7.2f}M {gflops:>7.3f} {optim:<10} "
                     f"{r.lr:>6g} {sched:<14} {r.epochs:>6} {r.batch_size:>5} {r.augment:<7} "
                     f"{r.label_mode or 'default':<12}")
        lines.append(f"{'':<16} {r.description}")
    lines.append("GFLOPs: forward FLOPs per image (multiply-add = 2) at the recipe's input size, 7 classes.")
    return "\n".join(lines)
