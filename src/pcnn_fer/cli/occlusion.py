"""``pcnn occlusion``: its parser (the work is in :mod:`pcnn_fer.engine.occlusion`)."""

from __future__ import annotations

from typing import Any

from ..engine.options import TrainOptions
from ..typed_fields import add_flags
from .common import LazyHandler, add_checkpoint_flag, add_dataset_flags, positive_int

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> None:
    """Add the ``occlusion`` verb to the ``pcnn`` sub-parser collection."""
    o = subparsers.add_parser(
        "occlusion", help="train per-region occlusion heads on a frozen model",
        description="Train one small head per PCNN region (eyes, cheeks, mouth) on synthetic occlusions of the "
                    "dataset's training faces (hands, sunglasses, masks, hair, objects, patches) and write the model "
                    "with them; the expression outputs are unchanged. Measured on the validation split, occluded "
                    "with another seed.")
    add_checkpoint_flag(o)
    add_dataset_flags(o)
    o.add_argument("--train-faces", type=positive_int, default=12000, help="training faces sampled (seeded)")
    o.add_argument("--epochs", type=positive_int, default=40)
    o.add_argument("--hidden", type=positive_int, default=32, help="hidden width of each region's head")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--out", required=True, help="the model with occlusion heads (.safetensors; must not exist)")
    o.add_argument("--cache-dir")
    add_flags(o, TrainOptions, overrides=False, only=("threads",))
    o.set_defaults(func=LazyHandler("pcnn_fer.engine.occlusion", "occlusion_command"))
