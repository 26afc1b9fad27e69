"""``pcnn calibrate``: its parser (the work is in :mod:`pcnn_fer.engine.calibrate`)."""

from __future__ import annotations

from typing import Any

from ..engine.options import TrainOptions
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
    """Add the ``calibrate`` verb to the ``pcnn`` sub-parser collection."""
    c = subparsers.add_parser(
        "calibrate", help="calibrate a model's confidences on a split and save the calibrated model",
        description="Fit temperature or vector scaling of a model's confidences on a dataset split (by default its "
                    "validation split) and write a new model file that carries it; every backend applies it.")
    add_checkpoint_flag(c)
    add_dataset_flags(c)
    c.add_argument("--split", help="split to fit on (default: the dataset's validation split; never the test split "
                                   "of a model you will report)")
    add_dataset_option_flags(c)
    c.add_argument("--method", default="auto", choices=("auto", "temperature", "vector"),
                   help="calibration map (auto: the one with the lower calibration error on held-out folds)")
    c.add_argument("--folds", type=positive_int, default=5, help="held-out folds that choose the method (auto)")
    c.add_argument("--out", required=True, help="the calibrated model to write (.safetensors; must not exist)")
    c.add_argument("--batch-size", type=positive_int, default=256)
    c.add_argument("--device", default="auto")
    c.add_argument("--cache-dir")
    c.add_argument("--no-cache", action="store_true")
    add_align_flag(c)
    add_flags(c, TrainOptions, overrides=False, only=("threads",))
    c.set_defaults(func=LazyHandler("pcnn_fer.engine.calibrate", "calibrate_command"), subset_list=None,
                   amp="none")
