"""``pcnn train``: its parser and the translation of its arguments into a :class:`~pcnn_fer.engine.recipes.Recipe`
and :class:`~pcnn_fer.engine.options.TrainOptions` (the work is in :mod:`pcnn_fer.engine.train`).

Recipe overrides and run options are generated from the dataclass fields (:mod:`pcnn_fer.typed_fields`), so
a new field needs no edit here; building the parser imports no torch.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from ..engine.options import TrainOptions
from ..engine.recipes import Recipe, load_recipe
from ..errors import UsageError
from ..typed_fields import add_flags, flag_values, given_flag
from .common import add_dataset_flags, positive_int

__all__ = ["add_parser", "add_recipe_flags", "check_option_flags", "recipe_from_args", "run_train", "train_options"]


def add_recipe_flags(p: argparse.ArgumentParser, default: str | None) -> None:
    """``--recipe NAME|FILE`` and one override flag per :class:`Recipe` field (``pcnn train`` and ``pcnn cv``)."""
    p.add_argument("--preset", dest="recipe", help=argparse.SUPPRESS)  # deprecated spelling of --recipe
    p.add_argument("--recipe", dest="recipe", default=default, metavar="NAME|FILE",
                   help="training recipe: a name (see --list-recipes; default paper) or a .json/.yaml file of "
                        "recipe fields (\"base\": NAME fills the rest; RUN_DIR/recipe.json works)")
    add_flags(p.add_argument_group("recipe overrides (default: the recipe's value)"), Recipe, overrides=True)


def add_parser(subparsers: Any) -> None:
    """Add the ``train`` verb to the ``pcnn`` sub-parser collection."""
    t = subparsers.add_parser(
        "train", help="train a PCNN with a recipe",
        description="Train a PCNN on a dataset with a recipe; select the model on validation data.")
    add_dataset_flags(t, required=False)
    t.add_argument("--out", help="run directory (checkpoints, logs, model.safetensors)")
    t.add_argument("--list-presets", dest="list_recipes", action="store_true", help=argparse.SUPPRESS)  # old name
    t.add_argument("--list-recipes", dest="list_recipes", action="store_true",
                   help="print every recipe with its cost and exit")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--stop-after", type=positive_int, metavar="N",
                   help="stop after N epochs of this invocation (resumable with --resume)")
    add_recipe_flags(t, default=None)
    add_flags(t.add_argument_group("run options"), TrainOptions, overrides=False)
    t.set_defaults(func=run_train)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The ``--recipe`` (name or file) with the recipe flags given on the command line applied."""
    return load_recipe(args.recipe or "paper").with_overrides(**flag_values(args, Recipe))


def train_options(args: argparse.Namespace) -> TrainOptions:
    """:class:`TrainOptions` from parsed arguments (run options absent from the verb keep their defaults)."""
    return TrainOptions(dataset=args.dataset, root=args.root, out=args.out, **flag_values(args, TrainOptions))


def check_option_flags(args: argparse.Namespace) -> None:
    """Refuse a dataset option spelled for another dataset (``--image-variant`` for FERPlus), in one line."""
    flags = [(given_flag(args, dest), getattr(args, dest, None)) for dest in ("dataset_option", "val_dataset_option")]
    if args.dataset and any(flag for flag, _ in flags):
        from ..data.datasets import get_dataset

        reader = get_dataset(args.dataset)
        for flag, value in flags:
            reader.check_option(value, flag)


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What ``pcnn train --resume`` was asked to change: recipe flags and run options set away from their defaults."""
    defaults = {f.name: f.default for f in fields(TrainOptions)}
    changed = {k: v for k, v in flag_values(args, TrainOptions).items() if v != defaults[k]}
    return {**flag_values(args, Recipe), **changed}


def run_train(args: argparse.Namespace) -> int:
    """``pcnn train``: list the recipes, resume a run, or start one (the engine is imported here)."""
    if args.list_recipes:
        from ..engine.recipe_table import format_recipes

        print(format_recipes())
        return 0
    from ..engine.train import resume, train

    if args.resume:
        resume(args.resume, overrides=_resume_overrides(args), stop_after=args.stop_after)
        return 0
    missing = [flag for flag, value in (("--dataset", args.dataset), ("--root", args.root), ("--out", args.out))
               if not value]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or pass --resume RUN_DIR / --list-recipes)")
    check_option_flags(args)
    train(train_options(args), recipe_from_args(args), stop_after=args.stop_after)
    return 0
