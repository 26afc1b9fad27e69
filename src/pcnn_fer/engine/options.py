"""Run options: everything about a training run that is not the recipe (data, device, precision, selection,
bookkeeping). The ``pcnn train`` / ``pcnn cv`` run-option flags are generated from these fields
(:mod:`pcnn_fer.typed_fields`). No torch import."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import UsageError
from ..typed_fields import check_types
from .precision import AMP_CHOICES

__all__ = ["RESUMABLE_OVERRIDES", "TrainOptions"]

#: Options that may be changed when resuming (everything else comes from the checkpoint).
RESUMABLE_OVERRIDES = ("epochs", "device", "progress", "stop_after", "eval_batch_size", "threads")

#: Field names of older runs' stored options and their names now.
_OLD_NAMES = {"mode": "dataset_option", "val_mode": "val_dataset_option"}


def _opt(default: Any, text: str, **more: Any) -> Any:
    return field(default=default, metadata={"help": text, **more})


@dataclass
class TrainOptions:
    """Everything about a run that is not the recipe: data, device, precision, selection and bookkeeping."""

    dataset: str = field(metadata={"cli": False})
    root: str = field(metadata={"cli": False})
    out: str = field(metadata={"cli": False})
    device: str = _opt("auto", "cpu, cuda, cuda:N or auto (default: CUDA when available)")
    amp: str = _opt("auto", "mixed precision: auto (default) = bf16 on CPUs with native bf16 and on CUDA, else "
                            "fp32; fp16 (CUDA only) uses a GradScaler. On a CPU bf16 trains 1.3-1.7x faster, lags in "
                            "the first epochs and matched fp32 over a full run (docs/performance.md); none = fp32",
                    choices=AMP_CHOICES)
    channels_last: bool = _opt(False, "channels_last memory format (faster on GPUs and on most CPUs; "
                                      "docs/training.md has measurements)")
    compile: bool = _opt(False, "torch.compile the training model")
    balanced: bool = _opt(False, "class-balanced sampling (with replacement)")
    init_resnet: str | None = _opt(None, "initialise the trunks from a torchvision-format ResNet-18 (e.g. MS-Celeb) "
                                         "state dict", metavar="PATH")
    init: str | None = _opt(None, "fine-tune from a trained PCNN: run dir, .safetensors, official .pth, or a bundled "
                                  "model (default, fer2013); heads are mapped by class name. 'dlib' (or a dlib .dat "
                                  "file) starts a --model dlib network from dlib's face-recognition ResNet; 'sface' "
                                  "(or an SFace .onnx file) a --model sface network from OpenCV Zoo's SFace; a FaceRes "
                                  "faceres.json (or 'faceres': $PCNN_FACERES_DIR, not bundled) a --model faceres one",
                            metavar="CHECKPOINT")
    init_widen: bool = _opt(False, "with --init: grow a narrower source to the recipe's width first (e.g. the small "
                                   "default model for --model compact), keeping its predictions (Net2Net)")
    dataset_option: str | None = _opt(
        None, "FERPlus label rule: majority, plurality, probability, crossentropy (default: the recipe's when "
              "training, else majority)", flag="--label-rule", metavar="RULE", deprecated=("--mode",),
        also=(("--image-variant", "VARIANT", "RAF-DB images: aligned (default when present) or original"),
              ("--classes", "{8,7}", "AffectNet class set: 8 (default) or 7 (without contempt)")))
    val_dataset_option: str | None = _opt(
        None, "FERPlus label rule of the validation split (default: the recipe's, else majority)",
        flag="--val-label-rule", metavar="RULE", deprecated=("--val-mode",))
    val_fraction: float = _opt(0.1, "fraction of train carved out (seeded, by subject when known) when the dataset "
                                    "has no validation split (default 0.1)")
    seed: int = _opt(0, "seed of model init, validation carving, epoch order and augmentation (default 0)")
    select_on: str | None = _opt(None, "select the model on this split instead of validation", metavar="SPLIT")
    allow_test_selection: bool = _opt(False, "permit --select-on a test split (recorded in the results)")
    max_train_samples: int | None = _opt(None, "train on a seeded subset of this size (0 = all)")
    eval_batch_size: int = _opt(256, "validation batch size (default 256)")
    progress: bool = _opt(True, "no tqdm progress bars", flag="--no-progress")
    cache_dir: str | None = _opt(None, "decoded-tensor cache (default $PCNN_FER_CACHE or ~/.cache/pcnn_fer)")
    use_cache: bool = _opt(True, "decode the images without the on-disk cache", flag="--no-cache")
    time_budget: float | None = _opt(None, "wall-clock minutes for the whole run: after the first (and each "
                                           "warm-up) epoch the epoch count is lowered so that training ends in "
                                           "time (never raised above --epochs)", metavar="MIN")
    threads: int | None = _opt(None, "CPU threads of torch (torch.set_num_threads; 0 = torch's default)",
                               metavar="N")
    align_faces: bool | None = _opt(None, "decode each image as its face, detected and aligned as pcnn predict does "
                                          "(images without a face: centre crop, counted); default: on for JAFFE, "
                                          "off for other datasets")

    def __post_init__(self) -> None:
        check_types(self, "options")
        checks = [
            (self.amp in AMP_CHOICES, f"--amp must be one of {', '.join(AMP_CHOICES)}, got {self.amp!r}"),
            (self.init or not self.init_widen, "--init-widen needs --init (the checkpoint to widen)"),
            (not (self.init and self.init_resnet),
             "--init and --init-resnet exclude each other (one source of initial weights)"),
            (0.0 < self.val_fraction < 1.0, f"--val-fraction must be in (0, 1), got {self.val_fraction}"),
            (self.max_train_samples is None or self.max_train_samples >= 2, "--max-train-samples must be at least 2"),
            (self.eval_batch_size >= 1, "--eval-batch-size must be positive"),
            (self.time_budget is None or self.time_budget > 0, "--time-budget must be a positive number of minutes"),
            (self.threads is None or self.threads >= 1, f"--threads must be positive, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored in checkpoints and results)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        """Inverse of :meth:`to_dict` (unknown keys ignored)."""
        known = {f.name for f in fields(cls)}
        data = {"align_faces": False, **data}  # runs stored before the option decoded without alignment
        for old, new in _OLD_NAMES.items():  # runs stored before the rename
            if old in data:
                data.setdefault(new, data[old])
        return cls(**{k: v for k, v in data.items() if k in known})
