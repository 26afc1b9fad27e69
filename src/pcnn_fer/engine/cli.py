"""``pcnn train``, ``pcnn evaluate`` and ``pcnn cv``: argument parsing; the work is in train / evaluate / cv.

Recipe overrides and run options are generated from the :class:`~pcnn_fer.engine.recipes.Recipe` and
:class:`~pcnn_fer.engine.options.TrainOptions` fields (:mod:`pcnn_fer.engine.typed_fields`); building the parser
imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ..errors import UsageError
from .options import TrainOptions
from .precision import AMP_CHOICES
from .recipes import Recipe, load_recipe
from .typed_fields import add_flags, flag_values

__all__ = ["add_align_flag", "add_parser", "recipe_from_args", "run_cv", "run_evaluate", "run_train",
           "train_options"]

#: Run options ``pcnn cv`` does not offer (selection is per fold; there is no budget over folds).
CV_SKIPS = ("select_on", "allow_test_selection", "time_budget")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_recipe_flags(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--recipe", "--preset", dest="recipe", default=default, metavar="NAME|FILE",
                   help="training recipe: a name (see --list-recipes; default paper) or a .json/.yaml file of "
                        "recipe fields (\"base\": NAME fills the rest; RUN_DIR/recipe.json works)")
    add_flags(p.add_argument_group("recipe overrides (default: the recipe's value)"), Recipe, overrides=True)


def add_align_flag(p: Any) -> None:
    """Add ``--align-faces / --no-align-faces`` (default None: the dataset's own default) to a parser or group."""
    add_flags(p, TrainOptions, overrides=False, only=("align_faces",))


def add_parser(subparsers: Any) -> None:
    """Add the ``train``, ``evaluate`` and ``cv`` verbs to the ``pcnn`` sub-parser collection."""
    t = subparsers.add_parser(
        "train", help="train a PCNN with a recipe",
        description="Train a PCNN on a dataset with a recipe; select the model on validation data.")
    t.add_argument("--dataset", help="dataset name (ferplus, fer2013, ckplus, jaffe, rafdb, affectnet, folder)")
    t.add_argument("--root", help="dataset root folder")
    t.add_argument("--out", help="run directory (checkpoints, logs, model.safetensors)")
    t.add_argument("--list-presets", "--list-recipes", dest="list_recipes", action="store_true",
                   help="print every recipe with its cost and exit")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--stop-after", type=_positive_int, metavar="N",
                   help="stop after N epochs of this invocation (resumable with --resume)")
    _add_recipe_flags(t, default=None)
    add_flags(t.add_argument_group("run options"), TrainOptions, overrides=False)
    t.set_defaults(func=run_train)

    e = subparsers.add_parser(
        "evaluate", help="evaluate a model on a dataset split",
        description="Evaluate a model (run directory, .safetensors, official .pth, or 'default') on a dataset split; "
                    "writes DIR/metrics.json and a confusion-matrix PNG.")
    e.add_argument("--checkpoint", default="default", help="run dir, model file, official .pth, or 'default'")
    e.add_argument("--dataset", required=True)
    e.add_argument("--root", required=True)
    e.add_argument("--split", help="split to evaluate (default: the dataset's test split, else its validation split)")
    e.add_argument("--mode", help="label mode (FERPlus: majority by default)")
    e.add_argument("--subset-list", metavar="FILE", help="restrict to a published subset list (occlusion, pose)")
    e.add_argument("--tta", default="none", choices=["none", "flip"], help="test-time augmentation")
    e.add_argument("--batch-size", type=_positive_int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--amp", default="none", choices=AMP_CHOICES,
                   help="autocast precision (auto = bf16 where the CPU/GPU has it natively; default fp32)")
    e.add_argument("--out", required=True, help="output folder for metrics.json and confusion.png")
    e.add_argument("--cache-dir")
    e.add_argument("--no-cache", action="store_true")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_align_flag(e)
    add_flags(e, TrainOptions, overrides=False, only=("threads",))
    e.set_defaults(func=run_evaluate)

    c = subparsers.add_parser(
        "cv", help="subject-independent cross-validation (CK+, JAFFE)",
        description="Train and evaluate every subject-independent fold; writes DIR/cv.json (mean ± std).")
    c.add_argument("--dataset", required=True)
    c.add_argument("--root", required=True)
    c.add_argument("--folds", type=_positive_int, default=10, help="number of folds (kfold protocol)")
    c.add_argument("--protocol", default="kfold", choices=["kfold", "loso", "random"],
                   help="kfold / loso: subject-independent (default kfold); random: subject-dependent stratified "
                        "k-fold (a subject's images may be in train and test)")
    c.add_argument("--out", required=True)
    c.add_argument("--only-folds", type=int, nargs="+", metavar="K", help="run only these fold indices")
    c.add_argument("--no-val", action="store_true",
                   help="do not carve a validation split from each fold's train (select the last epoch)")
    _add_recipe_flags(c, default="paper")
    add_flags(c.add_argument_group("run options"), TrainOptions, overrides=False, skip=CV_SKIPS)
    c.set_defaults(func=run_cv)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The ``--recipe`` (name or file) with the recipe flags given on the command line applied."""
    return load_recipe(args.recipe or "paper").with_overrides(**flag_values(args, Recipe))


def train_options(args: argparse.Namespace) -> TrainOptions:
    """:class:`TrainOptions` from parsed arguments (run options absent from the verb keep their defaults)."""
    return TrainOptions(dataset=args.dataset, root=args.root, out=args.out, **flag_values(args, TrainOptions))


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What ``pcnn train --resume`` was asked to change: recipe flags and run options set away from their defaults."""
    defaults = {f.name: f.default for f in fields(TrainOptions)}
    changed = {k: v for k, v in flag_values(args, TrainOptions).items() if v != defaults[k]}
    return {**flag_values(args, Recipe), **changed}


def run_train(args: argparse.Namespace) -> int:
    """``pcnn train``."""
    if args.list_recipes:
        from .recipe_table import format_recipes

        print(format_recipes())
        return 0
    from .train import resume, train

    if args.resume:
        resume(args.resume, overrides=_resume_overrides(args), stop_after=args.stop_after)
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--root", args.root), ("--out", args.out))
               if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or pass --resume RUN_DIR / --list-recipes)")
    train(train_options(args), recipe_from_args(args), stop_after=args.stop_after)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``pcnn evaluate``."""
    from .evaluate import evaluate_command

    return evaluate_command(args)


def run_cv(args: argparse.Namespace) -> int:
    """``pcnn cv``."""
    from .cv import cross_validate

    cross_validate(recipe_from_args(args), train_options(args), folds=args.folds, protocol=args.protocol,
                   only_folds=args.only_folds, use_val=not args.no_val)
    return 0

