"""Widen a trained network without changing what it computes (Net2WiderNet, Chen et al., ICLR 2016).

A ``small`` PCNN (width 0.25) grown to ``compact`` (width 0.5) starts from exactly the small model's predictions
and can then use the extra capacity, instead of paying for a from-scratch run of the wide model.

Every channel dimension that grows by an integer factor ``k`` is tiled: new channel ``i`` copies old channel
``i mod C``. Where a grown dimension is a layer's *input* (dim 1 of a convolution or linear weight), the ``k`` copies
of each weight are scaled by random positive fractions that sum to one, so the layer's output is unchanged (the
duplicated inputs are equal) while the copies differ: their gradients differ too and the duplicated channels drift
apart during training (Net2Net adds noise for this; random fractions break the symmetry without changing the
function). A flattened ``C×g×g`` input (the spatial transformer's first layer) tiles the same way, because tiling the
whole flattened dimension maps channel ``c`` to ``c mod C``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..errors import UsageError
from .pcnn import PCNNConfig, build_model

__all__ = ["widen_model"]


def _grown_tensor(name: str, old: torch.Tensor, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """``old`` tiled to ``shape`` along every grown dimension, the input dimension split by random fractions."""
    if old.dim() != len(shape):
        raise UsageError(f"cannot widen {name}: {tuple(old.shape)} vs {tuple(shape)}")
    factors = []
    for dim, (a, b) in enumerate(zip(old.shape, shape)):
        if b % a:
            raise UsageError(f"cannot widen {name}: dimension {dim} grows from {a} to {b}, not an integer factor")
        factors.append(b // a)
    if not old.is_floating_point() or all(f == 1 for f in factors):
        return old.clone()
    new = old.repeat(*factors)
    k = factors[1] if old.dim() >= 2 else 1
    if k > 1:  # the input dimension grew: split each weight over its k copies
        old_in = old.shape[1]
        rest = tuple(shape[2:])
        share = torch.rand((shape[0], k, old_in, *rest), generator=generator, dtype=torch.float64) + 0.5
        share = share / share.sum(1, keepdim=True)
        new = new * share.reshape(shape).to(new.dtype)
    return new


def widen_model(model: nn.Module, width: float, seed: int = 0) -> nn.Module:
    """A copy of ``model`` (a PCNN or ablation baseline with a ``config``) at width multiplier ``width``, computing
    the same function (up to float rounding); every channel count must grow by an integer factor."""
    config: PCNNConfig = model.config
    if width < config.width:
        raise UsageError(f"can only widen: the source has width {config.width}, asked for {width}")
    wide = build_model(replace(config, width=width))
    generator = torch.Generator().manual_seed(seed)
    source = model.state_dict()  # the same architecture at another width: the same tensor names
    wide.load_state_dict({k: _grown_tensor(k, source[k], t.shape, generator) for k, t in wide.state_dict().items()})
    return wide.train(model.training)
