"""Training, evaluation and cross-validation engine: recipes, the training loop, checkpoints, DDP and the CLI verbs
``pcnn train``, ``pcnn evaluate`` and ``pcnn cv``."""

from .recipes import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "get_recipe"]
