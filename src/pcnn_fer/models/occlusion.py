"""Per-region occlusion heads: one small MLP per PCNN region on that region's own local map (its layer3 features,
average- and max-pooled), giving the probability that the region is covered. Trained as a second stage on a frozen
PCNN (:mod:`pcnn_fer.engine.occlusion`), so the expression outputs are untouched; built when
``PCNNConfig.occlusion_hidden`` > 0."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["OcclusionHeads", "region_descriptor"]


def region_descriptor(local_map: torch.Tensor) -> torch.Tensor:
    """(B, 2C) descriptor of a (B, C, H, W) local map: its spatial mean and maximum."""
    return torch.cat([local_map.mean((2, 3)), local_map.amax((2, 3))], 1)


class OcclusionHeads(nn.Module):
    """Five heads (one per region, in the order of the local maps): descriptor → hidden → ReLU → 1 logit."""

    def __init__(self, regions: tuple[str, ...], channels: int, hidden: int) -> None:
        super().__init__()
        self.regions = regions
        self.heads = nn.ModuleDict({name: nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                                        nn.Linear(hidden, 1)) for name in regions})

    def logits_of_descriptors(self, descriptors: torch.Tensor) -> torch.Tensor:
        """(B, 5) occlusion logits from (B, 5, 2C) region descriptors."""
        return torch.cat([self.heads[name](descriptors[:, i]) for i, name in enumerate(self.regions)], 1)

    def forward(self, local_maps: list[torch.Tensor]) -> torch.Tensor:
        """(B, 5) occlusion probabilities of the five local maps."""
        descriptors = torch.stack([region_descriptor(m.float()) for m in local_maps], 1)
        return torch.sigmoid(self.logits_of_descriptors(descriptors))
