"""``pcnn evaluate``: its parser (the work is in :mod:`pcnn_fer.engine.evaluate`)."""

from __future__ import annotations

from typing import Any

from ..backends.dispatch import BACKEND_NAMES
from ..engine.options import TrainOptions
from ..engine.precision import AMP_CHOICES
from ..engine.recipes import TTA_CHOICES
from ..typed_fields import add_flags
from .common import (
    LazyHandler,
    add_align_flag,
    add_checkpoint_flag,
    add_dataset_flags,
    add_dataset_option_flags,
    positive_int,
)

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add the ``evaluate`` verb to the ``pcnn`` sub-parser collection."""
    e = subparsers.add_parser(
        "evaluate", help="evaluate a model on a dataset split",
        description="Evaluate a model (run directory, .safetensors, official .pth, or 'default') on a dataset split; "
                    "writes DIR/metrics.json and a confusion-matrix PNG.")
    add_checkpoint_flag(e)
    add_dataset_flags(e)
    e.add_argument("--split", help="split to evaluate (default: the dataset's test split, else its validation split)")
    add_dataset_option_flags(e)
    e.add_argument("--subset-list", metavar="FILE", help="restrict to a published subset list (occlusion, pose)")
    e.add_argument("--tta", default="none", choices=TTA_CHOICES, help="test-time augmentation")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="classifier backend: auto (onnxruntime on the CPU when installed, else torch; default), "
                        "torch or onnx")
    e.add_argument("--amp", default="none", choices=AMP_CHOICES,
                   help="autocast precision of the torch backend (auto = bf16 where the CPU/GPU has it natively; "
                        "default fp32)")
    e.add_argument("--out", required=True, help="output folder for metrics.json and confusion.png")
    e.add_argument("--cache-dir")
    e.add_argument("--no-cache", action="store_true")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_align_flag(e)
    add_flags(e, TrainOptions, overrides=False, only=("threads",))
    e.set_defaults(func=LazyHandler("pcnn_fer.engine.evaluate", "evaluate_command"))
