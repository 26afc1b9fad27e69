"""``pcnn cv``: its parser (the work is in :mod:`pcnn_fer.engine.cv`)."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.options import TrainOptions
from ..engine.recipes import TTA_CHOICES
from ..typed_fields import add_flags
from .common import add_dataset_flags, positive_int
from .train import add_recipe_flags, check_option_flags, recipe_from_args, train_options

__all__ = ["CV_SKIPS", "add_parser", "run_cv"]

#: Run options ``pcnn cv`` does not offer (selection is per fold; there is no budget over folds).
CV_SKIPS = ("select_on", "allow_test_selection", "time_budget")


def add_parser(subparsers: Any) -> None:
    """Add the ``cv`` verb to the ``pcnn`` sub-parser collection."""
    c = subparsers.add_parser(
        "cv", help="subject-independent cross-validation (CK+, JAFFE)",
        description="Train and evaluate every subject-independent fold; writes DIR/cv.json (mean ± std).")
    add_dataset_flags(c)
    c.add_argument("--folds", type=positive_int, default=10, help="number of folds (kfold protocol)")
    c.add_argument("--protocol", default="kfold", choices=["kfold", "loso", "random"],
                   help="kfold / loso: subject-independent (default kfold); random: subject-dependent stratified "
                        "k-fold (a subject's images may be in train and test)")
    c.add_argument("--out", required=True)
    c.add_argument("--only-folds", type=int, nargs="+", metavar="K", help="run only these fold indices")
    c.add_argument("--val", action=argparse.BooleanOptionalAction, default=None,
                   help="carve a validation split from each fold's train to select the epoch; --no-val: the last "
                        "epoch (default: the recipe's cv_val)")
    c.add_argument("--tta", default=None, choices=TTA_CHOICES,
                   help="test-time augmentation of each fold's test faces (flip: average with the mirror image; "
                        "default: the recipe's cv_tta); a finished fold is re-evaluated, not retrained")
    c.add_argument("--members", type=positive_int, default=None, metavar="K",
                   help="train K models per fold (training seeds SEED..SEED+K-1, the same folds) and average their "
                        "probabilities (default: the recipe's cv_members); a finished fold trains only its "
                        "missing members")
    c.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="train the fold members in N parallel processes on a CPU, the threads split between them "
                        "(default: one single-threaded process per thread in use, at most one per model to "
                        "train; 1: train in this process)")
    add_recipe_flags(c, default="paper")
    add_flags(c.add_argument_group("run options"), TrainOptions, overrides=False, skip=CV_SKIPS)
    c.set_defaults(func=run_cv)


def run_cv(args: argparse.Namespace) -> int:
    """``pcnn cv`` (the engine is imported here)."""
    from ..engine.cv import cross_validate

    check_option_flags(args)

    cross_validate(recipe_from_args(args), train_options(args), folds=args.folds, protocol=args.protocol,
                   only_folds=args.only_folds, use_val=args.val, tta=args.tta,
                   members=args.members, workers=args.workers)
    return 0
