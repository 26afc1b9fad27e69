"""Training, evaluation and cross-validation engine: recipes, the training loop, checkpoints, DDP and the work of
``pcnn train``, ``pcnn evaluate`` and ``pcnn cv`` (module map: docs/training.md; their parsers are in
:mod:`pcnn_fer.cli`). Importing the package imports no torch, so the parsers that read the recipe and option fields
build fast."""

from .recipes import Recipe, get_recipe, named_recipes

__all__ = ["RECIPES", "Recipe", "get_recipe"]


def __getattr__(name: str) -> object:
    """``RECIPES``: the named recipes, built on first use (:func:`~pcnn_fer.engine.recipes.named_recipes`)."""
    if name == "RECIPES":
        return named_recipes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
