"""The optimiser (SGD / AdamW with per-group weight decay and a fine-tuning learning-rate split) and the per-step
learning-rate schedule (linear warm-up, then StepLR or cosine)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .finetune import is_head_parameter
from .recipes import Recipe

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(model: nn.Module, recipe: Recipe, finetune: bool = False) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW with the recipe's weight decay (optionally not on BN / biases).

    When ``finetune`` (a run started with ``--init``), everything but the heads learns at ``lr * init_lr_scale``.
    """
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            slow = finetune and not is_head_parameter(name)
            decay = recipe.decay_norm_bias or p.ndim > 1
            groups.setdefault((slow, decay), []).append(p)
    param_groups = [{"params": params, "weight_decay": recipe.weight_decay if decay else 0.0,
                     "lr": recipe.lr * (recipe.init_lr_scale if slow else 1.0)}
                    for (slow, decay), params in sorted(groups.items(), key=lambda kv: (kv[0][0], not kv[0][1]))]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    return torch.optim.AdamW(param_groups, lr=recipe.lr)


def lr_factor(step: int, recipe: Recipe, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then StepLR or cosine (per step)."""
    steps_per_epoch = max(1, steps_per_epoch)
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))
    if warm and step < warm:
        return (step + 1) / warm
    if recipe.schedule == "step":
        return recipe.gamma ** ((step // steps_per_epoch) // max(1, recipe.step_epochs))
    total = recipe.epochs * steps_per_epoch
    t = min(1.0, (step - warm) / max(1, total - warm))
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe | Callable[[], Recipe],
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following :func:`lr_factor` (its state is the step count: checkpoint-friendly).

    ``recipe`` may be a zero-argument callable returning the current recipe (a time budget can lower the epoch
    count during warm-up).
    """
    current = recipe if callable(recipe) else (lambda: recipe)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, current(), steps_per_epoch))
