"""``pcnn train --list-recipes``: every recipe with its cost (parameters, forward GFLOPs per image) and its main
hyper-parameters.

Counting a recipe's cost builds its model under ``FlopCounterMode`` (torch: seconds per recipe); the costs of the
built-in recipes are read from ``assets/recipe_costs.json`` instead, so that listing them imports no torch.
``tests/test_engine.py`` recounts every entry of that file and fails when one is stale;
:func:`write_recipe_costs` rewrites it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .recipes import RECIPES, Recipe

__all__ = ["COSTS_FILE", "format_recipes", "recipe_cost", "recorded_cost", "write_recipe_costs"]

#: Parameters and GFLOPs of the built-in recipes' models, keyed by :func:`cost_key`.
COSTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "recipe_costs.json"


def recipe_cost(recipe: Recipe, num_classes: int = 7) -> tuple[int, float]:
    """(parameters, forward GFLOPs per image at the recipe's input size), counted by ``FlopCounterMode`` on the
    meta device (no memory, no compute; falls back to the CPU)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.pcnn import count_parameters, create_model

    classes = tuple(f"class_{i}" for i in range(num_classes)) if num_classes > 8 else ()
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = create_model(recipe.model, num_classes=num_classes, classes=classes,
                                     input_size=recipe.input_size, **recipe.model_overrides)
                x = torch.zeros(1, 3, recipe.input_size, recipe.input_size)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model.eval()(x)
            return count_parameters(model), counter.get_total_flops() / 1e9
        except (NotImplementedError, RuntimeError):
            continue
    raise RuntimeError(f"could not count the FLOPs of recipe {recipe.name!r}")


def cost_key(recipe: Recipe) -> str:
    """What a recipe's cost depends on: its model preset, input size and model overrides (7 classes)."""
    return json.dumps([recipe.model, recipe.input_size, recipe.model_overrides], sort_keys=True)


def _recorded() -> dict[str, Any]:
    try:
        return json.loads(COSTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def recorded_cost(recipe: Recipe, recorded: dict[str, Any] | None = None) -> tuple[int, float]:
    """The recipe's cost from :data:`COSTS_FILE`, or counted (:func:`recipe_cost`) when it is not recorded."""
    entry = (_recorded() if recorded is None else recorded).get(cost_key(recipe))
    if entry is None:
        return recipe_cost(recipe)
    return int(entry["params"]), float(entry["gflops"])


def write_recipe_costs() -> Path:
    """Count every built-in recipe's cost and write :data:`COSTS_FILE`."""
    costs = {}
    for recipe in RECIPES.values():
        params, gflops = recipe_cost(recipe)
        costs[cost_key(recipe)] = {"params": params, "gflops": round(gflops, 6), "example_recipe": recipe.name}
    COSTS_FILE.write_text(json.dumps(dict(sorted(costs.items())), indent=1) + "\n")
    return COSTS_FILE


def format_recipes() -> str:
    """A table of every recipe with its cost (parameters, GFLOPs/image) and main hyper-parameters."""
    header = (f"{'recipe':<16} {'model':<8} {'input':>5} {'params':>8} {'GFLOPs':>7} {'optim':<10} {'lr':>6} "
              f"{'schedule':<14} {'epochs':>6} {'batch':>5} {'augment':<7} {'labels':<12}")
    lines = [header, "-" * len(header)]
    recorded = _recorded()
    for r in RECIPES.values():
        params, gflops = recorded_cost(r, recorded)
        optim = r.optimizer + ("+nesterov" if r.nesterov and r.optimizer == "sgd" else "")
        if r.schedule == "step":
            sched = f"step/{r.step_epochs}x{r.gamma:g}"
        else:
            sched = "cosine" + (f"+wu{r.warmup_epochs:g}" if r.warmup_epochs else "")
        lines.append(f"{r.name:<16} {r.model:<8} {r.input_size:>5} {params / 1e6:>7.2f}M {gflops:>7.3f} {optim:<10} "
                     f"{r.lr:>6g} {sched:<14} {r.epochs:>6} {r.batch_size:>5} {r.augment:<7} "
                     f"{r.label_rule or 'default':<12}")
        lines.append(f"{'':<16} {r.description}")
    lines.append("GFLOPs: forward FLOPs per image (multiply-add = 2) at the recipe's input size, 7 classes.")
    return "\n".join(lines)
