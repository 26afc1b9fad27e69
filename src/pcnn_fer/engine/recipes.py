"""Training recipes: typed, named bundles of model preset, input size, optimiser, schedule and augmentation.

``pcnn train --recipe NAME`` picks one of :data:`RECIPES`; ``--recipe FILE.json`` (or ``.yaml`` with PyYAML) reads
one from a file (see :func:`load_recipe`). Every field with a flag can be overridden on the command line (``--epochs``,
``--lr``, ...): the flags are generated from the fields below (:mod:`pcnn_fer.typed_fields`), so a new field
needs only its line here. This module imports no torch (``pcnn train --help`` stays fast).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import UsageError
from ..typed_fields import check_types

__all__ = [  # and RECIPES (lazy)
    "TTA_CHOICES", "Recipe", "get_recipe", "load_recipe", "named_recipes", "read_recipe_file",
]

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine"]
SelectMetric = Literal["accuracy", "mean_class_accuracy"]
TestTimeAugment = Literal["none", "flip"]
#: Test-time augmentations of `pcnn evaluate --tta` and `pcnn cv --tta` / a recipe's ``cv_tta``.
TTA_CHOICES: tuple[str, ...] = get_args(TestTimeAugment)

#: Field names of recipes stored before the rename (old run folders' recipe.json / last.pt) and their names now.
_OLD_NAMES = {"label_mode": "label_rule", "val_mode": "val_label_rule"}


def _help(text: str, **more: Any) -> Any:
    return field(metadata={"help": text, **more})


def _opt(default: Any, text: str, **more: Any) -> Any:
    return field(default=default, metadata={"help": text, **more})


@dataclass(frozen=True)
class Recipe:
    """One training recipe. ``epochs``/``batch_size`` are global (a DDP run splits the batch across processes)."""

    name: str = field(metadata={"cli": False})
    description: str = field(metadata={"cli": False})
    model: str = _help("model architecture: a preset of pcnn_fer.models.MODEL_PRESETS, e.g. small, compact, paper, or "
                       "an ablation baseline such as small-resnet (docs/robustness.md)")
    input_size: int = _help("model input size in pixels")
    epochs: int = _help("number of epochs")
    batch_size: int = _help("global batch size (split across DDP processes)")
    lr: float = _help("peak learning rate")
    optimizer: Optimizer = _opt("sgd", "optimiser")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum (SGD)")
    weight_decay: float = _opt(1e-4, "weight decay")
    decay_norm_bias: bool = _opt(True, "weight decay on BatchNorm parameters and biases too")
    schedule: Schedule = _opt("step", "learning-rate schedule after the warm-up (StepLR or cosine, per step)")
    step_epochs: int = _opt(15, "StepLR period in epochs")
    gamma: float = _opt(0.5, "StepLR factor")
    warmup_epochs: float = _opt(0.0, "linear learning-rate warm-up (per step) before the schedule, in epochs")
    min_lr_ratio: float = _opt(0.0, "cosine floor as a fraction of --lr")
    augment: str = _opt("paper", "augmentation preset of pcnn_fer.data.transforms (paper, strong, regions, none)")
    label_smoothing: float = _opt(0.0, "label smoothing of the loss")
    ema_decay: float = _opt(0.0, "validate, select and ship an exponential moving average of the weights (e.g. "
                                 "0.998; 0 = off)")
    init_lr_scale: float = _opt(0.1, "with --init: learning-rate factor of the pretrained tensors (the heads keep "
                                     "--lr)")
    alpha: float = _opt(12.0, "two-phase loss weight of the global logits")
    beta: float = _opt(8.0, "two-phase loss weight of the region logits")
    loss: str = _opt("two-phase", "training loss: two-phase, or ce (cross-entropy of the global logits only, the "
                                  "ablation of the two-phase loss); a key of pcnn_fer.loss.LOSSES")
    label_rule: str | None = _opt(None, "FERPlus label rule for training (a dataset without label rules ignores "
                                        "it); None: the dataset default", cli=False)  # --label-rule overrides it
    val_label_rule: str | None = _opt(None, "FERPlus label rule of the validation split (None: majority)",
                                      cli=False)  # --val-label-rule overrides it
    select_metric: SelectMetric = _opt("accuracy", "validation metric used for model selection")
    max_steps: int | None = _opt(None, "cap on optimiser steps per epoch (smoke tests; 0 = no cap)")
    max_val_samples: int | None = _opt(None, "cap on validation samples (seeded subset; 0 = no cap)")
    model_overrides: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    # How `pcnn cv` trains and evaluates each fold with this recipe (its --members / --tta / --val flags override):
    cv_members: int = _opt(1, "pcnn cv: models trained per fold, their probabilities averaged", cli=False)
    cv_tta: TestTimeAugment = _opt("none", "pcnn cv: test-time augmentation of each fold's test faces", cli=False)
    cv_val: bool = _opt(True, "pcnn cv: carve a validation split to select the epoch (False: the last epoch)",
                        cli=False)

    def __post_init__(self) -> None:
        what = f"recipe {self.name!r}"
        check_types(self, what)
        from ..data.transforms import AUGMENT_PRESETS  # torch only when a recipe is built
        from ..loss import LOSSES
        from ..models.pcnn import MODEL_PRESETS

        checks = [
            (self.model in MODEL_PRESETS,
             f"unknown model preset {self.model!r}; available: {', '.join(MODEL_PRESETS)}"),
            (self.augment in AUGMENT_PRESETS,
             f"unknown augmentation preset {self.augment!r}; choose from {', '.join(AUGMENT_PRESETS)}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be at least 2 (BatchNorm), got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (self.input_size >= 32, f"input size must be at least 32, got {self.input_size}"),
            (self.step_epochs >= 1, f"step_epochs must be at least 1, got {self.step_epochs}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.warmup_epochs >= 0 and self.weight_decay >= 0, "warm-up epochs and weight decay must be "
                                                                  "non-negative"),
            (0.0 < self.init_lr_scale <= 1.0, f"init_lr_scale must be in (0, 1], got {self.init_lr_scale}"),
            (0.0 <= self.ema_decay < 1.0, f"EMA decay must be in [0, 1), got {self.ema_decay}"),
            (self.loss in LOSSES, f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}"),
            (self.max_steps is None or self.max_steps >= 1, f"max steps must be at least 1, got {self.max_steps}"),
            (self.max_val_samples is None or self.max_val_samples >= 1,
             f"max_val_samples must be at least 1, got {self.max_val_samples}"),
            (self.cv_members >= 1, f"cv_members must be at least 1, got {self.cv_members}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"{what}: {message}")

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with ``overrides`` applied (unknown names are an error; None clears the optional caps)."""
        unknown = set(overrides) - {f.name for f in fields(self)}
        if unknown:
            raise UsageError(f"unknown recipe fields: {sorted(unknown)}")
        return replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (what ``RUN_DIR/recipe.json`` holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict` (UsageError naming unknown or missing fields)."""
        known = {f.name for f in fields(cls)}
        data = {_OLD_NAMES.get(k, k): v for k, v in data.items()}  # recipes stored before the rename
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown recipe fields {unknown}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as e:  # missing required fields
            raise UsageError(f"incomplete recipe: {e}") from None

    def create_model(self, classes: tuple[str, ...]) -> Any:
        """The recipe's PCNN for ``classes`` (canonical names)."""
        from ..models.pcnn import create_model

        return create_model(self.model, num_classes=len(classes), classes=tuple(classes),
                            input_size=self.input_size, **self.model_overrides)


#: The optimiser and schedule of every recipe but ``paper``: SGD with Nesterov momentum 0.9 on a cosine schedule.
_NESTEROV_COSINE: dict[str, Any] = dict(optimizer="sgd", momentum=0.9, nesterov=True, schedule="cosine")

#: ``ferplus-cpu``, also the base of ``ferplus-cpu-ft`` (its second stage).
_FERPLUS_CPU: dict[str, Any] = dict(
    name="ferplus-cpu",
    description="FERPlus on 2 CPU cores (86 % in < 1 h with native bf16, < 2 h in fp32): small PCNN at 48, "
                "soft labels, cosine, weight EMA",
    model="small", input_size=48, epochs=26, batch_size=64, lr=0.01, **_NESTEROV_COSINE,
    weight_decay=5e-3, decay_norm_bias=False, warmup_epochs=0.5,
    augment="strong", label_rule="probability", val_label_rule="majority", ema_decay=0.998,
)

#: ``ferplus-dlib``, also the base of ``ferplus-sface`` (the same labels and regularisation on SFace trunks).
_FERPLUS_DLIB: dict[str, Any] = dict(
    name="ferplus-dlib",
    description="FERPlus from dlib's face-recognition ResNet (pcnn train --init dlib): PCNN on dlib trunks at "
                "112 px, lr 5e-4 everywhere (0.01 per CE term), soft labels, cosine, weight EMA",
    model="dlib", input_size=112, epochs=9, batch_size=64, lr=0.0005, **_NESTEROV_COSINE,
    weight_decay=5e-4, decay_norm_bias=False, warmup_epochs=0.3,
    augment="strong", label_rule="probability", val_label_rule="majority", ema_decay=0.998, init_lr_scale=1.0,
)

#: ``fer2013``, also the base of ``fer2013-dlib`` (the same labels and regularisation on dlib trunks).
_FER2013: dict[str, Any] = dict(
    name="fer2013",
    description="FER2013's own 7 labels: fine-tune the bundled small PCNN (pcnn train --init default), "
                "every tensor at the full lr, light weight decay, select on PublicTest",
    model="small", input_size=48, epochs=35, batch_size=64, lr=0.01, **_NESTEROV_COSINE,
    weight_decay=5e-4, decay_norm_bias=False, warmup_epochs=0.5,
    augment="strong", label_smoothing=0.1, ema_decay=0.998, init_lr_scale=1.0,
)

#: Cross-validation on a few hundred faces (CK+, JAFFE): a validation split of one fold's ~12 subjects is too small
#: to select an epoch, so every training face is used and the last epoch kept, and the mirror image is averaged; the
#: recipes add as many models per fold as their 30-minute budget allows (docs/results.md, CK+).
_SMALL_SET_CV: dict[str, Any] = dict(cv_tta="flip", cv_val=False)

#: ``ckplus-dlib``, also the base of ``ckplus-sface`` (the same folds and regularisation on SFace trunks).
_CKPLUS_DLIB: dict[str, Any] = dict(
    name="ckplus-dlib",
    description="CK+ folds from the dlib-started FERPlus PCNN (--init runs/ferplus-dlib): 112 px, region "
                "erasing, one model per fold",
    model="dlib", input_size=112, epochs=10, batch_size=32, lr=0.001, **_NESTEROV_COSINE,
    weight_decay=5e-4, decay_norm_bias=False, warmup_epochs=0.5,
    augment="regions", init_lr_scale=0.5, cv_members=1, **_SMALL_SET_CV,
)

#: The named recipes as plain fields; :data:`RECIPES` turns them into checked :class:`Recipe` objects on first use
#: (checking model / augmentation / loss names imports torch, which ``pcnn train --help`` must not). Measured speeds
#: and epoch sizing: docs/training.md. The FERPlus recipes use lr 0.01 / weight decay 5e-3: the two-phase loss scales
#: gradients by α + β = 20, so this is the usual "lr 0.2, lr·wd = 5e-5 per step" of a from-scratch ResNet on plain
#: cross-entropy.
_NAMED_RECIPES: tuple[dict[str, Any], ...] = (
    dict(
        name="paper",
        description="the paper's recipe: PCNN at 224, SGD 0.01, halve every 15 epochs, 100 epochs",
        model="paper", input_size=224, epochs=100, batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9,
        weight_decay=1e-4, schedule="step", step_epochs=15, gamma=0.5, augment="paper",
    ),
    dict(
        name="tiny",
        description="smoke test: tiny PCNN at 48, 4 steps x 2 epochs, seconds on a CPU",
        model="tiny", input_size=48, epochs=2, batch_size=16, lr=0.01, **_NESTEROV_COSINE,
        weight_decay=5e-4, augment="strong", max_steps=4, max_val_samples=256,
    ),
    dict(
        name="ferplus-compact",
        description="FERPlus from scratch on a GPU: compact PCNN at 48, soft (probability) labels, cosine",
        model="compact", input_size=48, epochs=60, batch_size=128, lr=0.01, **_NESTEROV_COSINE,
        weight_decay=5e-3, decay_norm_bias=False, warmup_epochs=2,
        augment="strong", label_rule="probability", val_label_rule="majority",
    ),
    _FERPLUS_CPU,
    dict(
        _FERPLUS_CPU, name="ferplus-cpu-ft",
        description="a second cosine cycle for the bundled FERPlus model (pcnn train --init default): region "
                    "erasing so the other branches learn to carry an occluded eye, cheek or mouth",
        epochs=16, augment="regions", init_lr_scale=0.3,
    ),
    _FERPLUS_DLIB,
    dict(
        _FERPLUS_DLIB, name="ferplus-sface",
        description="FERPlus from OpenCV Zoo's SFace (pcnn train --init sface): PCNN on SFace trunks at 112 px, "
                    "trunks at lr 5e-4 (0.01 per CE term), heads and MDIM at 2e-3, soft labels, cosine, weight EMA",
        model="sface", epochs=4, lr=0.002, warmup_epochs=0.2, init_lr_scale=0.25,
    ),
    _FER2013,
    dict(
        _FER2013, name="fer2013-dlib",
        description="FER2013's own 7 labels from the dlib-started FERPlus PCNN (--init runs/ferplus-dlib): the "
                    "fer2013 recipe on dlib trunks at 112 px, at ferplus-dlib's rate",
        model="dlib", input_size=112, epochs=6, lr=0.0005, warmup_epochs=0.3,
    ),
    dict(
        _FER2013, name="fer2013-sface",
        description="FER2013's own 7 labels from the SFace-started FERPlus PCNN (--init RUN_DIR of ferplus-sface): "
                    "the fer2013 recipe on SFace trunks at 80 px, heads at 2e-3, trunks at half that",
        model="sface", input_size=80, epochs=3, lr=0.002, warmup_epochs=0.2, init_lr_scale=0.5,
    ),
    dict(
        name="ckplus",
        description="CK+ folds: fine-tune the bundled small PCNN (--init default) with region erasing, 10 "
                    "subject-independent folds in minutes on a CPU",
        model="small", input_size=48, epochs=20, batch_size=32, lr=0.01, **_NESTEROV_COSINE,
        weight_decay=5e-4, warmup_epochs=0.5, augment="regions",
        init_lr_scale=0.3, cv_members=2, **_SMALL_SET_CV,
    ),
    _CKPLUS_DLIB,
    dict(
        _CKPLUS_DLIB, name="ckplus-sface",
        description="CK+ folds from the SFace-started FERPlus PCNN (--init RUN_DIR of ferplus-sface): 80 px, "
                    "region erasing, 4 epochs and one model per fold to fit 40 minutes on 2 cores",
        model="sface", input_size=80, epochs=4, lr=0.002,
    ),
    dict(
        name="jaffe",
        description="JAFFE folds (213 aligned portraits): fine-tune the bundled small PCNN (--init default)",
        model="small", input_size=48, epochs=30, batch_size=16, lr=0.01, **_NESTEROV_COSINE,
        weight_decay=5e-4, warmup_epochs=1, augment="strong",
        init_lr_scale=0.1, cv_members=3, **_SMALL_SET_CV,
    ),
)


@functools.cache
def named_recipes() -> dict[str, Recipe]:
    """The named recipes by name (built and checked once)."""
    return {spec["name"]: Recipe(**spec) for spec in _NAMED_RECIPES}


def __getattr__(name: str) -> Any:
    """``RECIPES``: :func:`named_recipes`, built on first use."""
    if name == "RECIPES":
        return named_recipes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Suffixes of recipe files ``--recipe`` reads.
RECIPE_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (UsageError naming the available ones otherwise)."""
    recipes = named_recipes()
    if name not in recipes:
        raise UsageError(f"unknown recipe {name!r}; available: {', '.join(recipes)} (or a .json/.yaml recipe file)")
    return recipes[name]


def load_recipe(spec: str) -> Recipe:
    """A named recipe, or the recipe in file ``spec`` (``.json``, or ``.yaml``/``.yml`` when PyYAML is installed)."""
    if Path(spec).suffix.lower() in RECIPE_FILE_SUFFIXES:
        return read_recipe_file(spec)
    return get_recipe(spec)


def read_recipe_file(path: str | Path) -> Recipe:
    """The recipe in a JSON/YAML file: an object of :class:`Recipe` fields. With ``"base": NAME`` the named recipe
    supplies every field the file does not set; ``name`` defaults to the file's stem. Errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read recipe file {path}: {e.strerror or e}") from None
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe file holds an object of recipe fields, got {type(data).__name__}")
    data = dict(data)
    base = data.pop("base", None)
    data.setdefault("name", path.stem)
    try:
        if base is not None:
            known = {f.name for f in fields(Recipe)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise UsageError(f"unknown recipe fields {unknown}")
            data.setdefault("description", f"{get_recipe(str(base)).description} (changed by {path.name})")
            return get_recipe(str(base)).with_overrides(**data)
        return Recipe.from_dict({"description": f"from {path.name}", **data})
    except UsageError as e:
        raise UsageError(f"{path}: {e}") from None


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    try:
        import yaml  # optional dependency
    except ImportError:
        raise UsageError(f"{path}: reading YAML recipes needs PyYAML (pip install pyyaml); or write it as "
                         ".json") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
