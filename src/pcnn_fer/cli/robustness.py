"""``pcnn robustness``: its parser and handler (the work is in :mod:`pcnn_fer.robustness.command`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.precision import AMP_CHOICES
from ..errors import UsageError
from ..robustness.options import RobustnessOptions
from ..typed_fields import add_flags
from .common import add_align_flag, add_checkpoint_flag, add_dataset_flags, add_dataset_option_flags

__all__ = ["add_parser", "run_robustness"]


def add_parser(subparsers: Any) -> None:
    """Add the ``robustness`` verb to the ``pcnn`` sub-parser collection."""
    p = subparsers.add_parser(
        "robustness", help="accuracy under occlusion, pose and quality corruptions of the aligned face",
        description="Evaluate a model (run directory, .safetensors, official .pth, or 'default') on a dataset split "
                    "under seeded corruptions of the aligned faces (each PCNN region and random patches occluded, "
                    "sunglasses, mask, hand; rotation, shift, scale; blur, low resolution, JPEG) at strengths 1-3; "
                    "writes DIR/robustness.json and DIR/robustness.png. By default on a seeded subset of 1500 faces "
                    "(--max-samples 0: the full split), every accuracy with its 95% confidence interval. See "
                    "docs/robustness.md.")
    add_checkpoint_flag(p)
    add_dataset_flags(p, required=False)
    p.add_argument("--split", help="split (default: the dataset's test split, else its validation split)")
    add_dataset_option_flags(p)
    p.add_argument("--subset-list", metavar="FILE", help="restrict to a published subset list (occlusion, pose)")
    p.add_argument("--out", help="output folder for robustness.json and robustness.png")
    p.add_argument("--corruptions", nargs="+", metavar="NAME",
                   help="corruptions, groups (occlusion, pose, quality), regions (left_eye ...) or all (default)")
    p.add_argument("--strengths", nargs="+", metavar="S", help="strengths 0-3 (0 = clean; default 1 2 3)")
    add_flags(p, RobustnessOptions, overrides=False)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", choices=AMP_CHOICES, help="mixed precision, as in pcnn evaluate")
    p.add_argument("--cache-dir")
    p.add_argument("--no-cache", action="store_true")
    add_align_flag(p)
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("--list", action="store_true", help="list the corruptions and their strengths, then exit")
    p.set_defaults(func=run_robustness)


def run_robustness(args: argparse.Namespace) -> int:
    """``pcnn robustness``."""
    if args.list:
        from ..robustness.corruptions import CORRUPTIONS

        for c in CORRUPTIONS.values():
            print(f"{c.name:<18} {c.group:<10} {c.parameter}: {', '.join(f'{v:.3g}' for v in c.levels)}")
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--root", args.root), ("--out", args.out))
               if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or pass --list)")
    from ..robustness.command import robustness_command

    return robustness_command(args)
