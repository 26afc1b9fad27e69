"""Exponential moving average (EMA) of a model's weights, the usual cheap gain for short from-scratch schedules."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["WeightAverage"]


class WeightAverage:
    """An EMA copy of ``model``: ``update()`` after each optimiser step; ``module`` is the averaged model.

    Parameters follow ``ema = d·ema + (1 − d)·w`` with the decay warmed up as ``min(decay, (1 + t) / (10 + t))``
    (t = updates so far), so the random initial weights fade out within the first few hundred steps. BatchNorm
    running statistics are averaged the same way (they track the averaged weights' activations only loosely, but
    the averaged model is validated every epoch, which is what selection relies on).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise UsageError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._floats, self._others = _split_state(self.module)
        self._source: tuple[int, list[torch.Tensor], list[torch.Tensor]] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current floating-point weights and buffers into the average (integer buffers such as
        BatchNorm's ``num_batches_tracked`` are copied). Create the average after moving ``model`` to its final
        device and memory format: the tensors are looked up once per model and reused, so a step costs one
        ``_foreach_lerp_``."""
        if self._source is None or self._source[0] != id(model):
            self._source = (id(model), *_split_state(model))
        _, floats, others = self._source
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._floats, floats, 1.0 - decay)
        for ours, theirs in zip(self._others, others, strict=True):
            ours.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        """Averaged weights + update count (for training checkpoints)."""
        return {"updates": self.updates, "decay": self.decay, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])


def _split_state(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``model``'s state tensors (parameters and buffers, detached, sharing storage): floating point, and the rest."""
    state = [t.detach() for t in model.state_dict(keep_vars=True).values()]
    return [t for t in state if t.dtype.is_floating_point], [t for t in state if not t.dtype.is_floating_point]
