"""Ablation baselines of PCNN: what is left when one of its ideas is taken away.

Each baseline is built from a :class:`~pcnn_fer.models.pcnn.PCNNConfig` (``arch`` names it) with the width, stem,
input size, crop fractions and normalisation of the PCNN preset it ablates, and keeps PCNN's interface, so that
training, saving (the config travels in the weights file), loading, evaluation, ONNX export and ``pcnn robustness``
treat it exactly like PCNN: ``forward(x)`` → ``(logits, local_logits)``, with ``return_regions=True`` also
``region_logits (B, 5, C)``. The first output is the prediction everywhere.

* ``resnet`` – a plain ResNet-18 (conv1…layer4, pool, linear): PCNN's global branch without anything else. It has
  one output, so ``local_logits`` repeats it and the two-phase loss becomes (α + β)·CE, the same step size as PCNN.
* ``global`` – global-only PCNN: the local branches (and so MDIM) are removed, the rest is kept, including the
  two-term loss: the local term is taken by one linear head on the global layer3 map, where PCNN's local heads sit.
* ``nomdim`` – PCNN without MDIM: global and local branches run side by side with no stitching or registration;
  the prediction is the global logits plus the summed region logits (late fusion), the local term is unchanged.

Models without region heads return zero region logits (no evidence: uniform region probabilities). Presets are
``<preset>-<arch>`` for every PCNN preset, e.g. ``small-resnet``, ``small-global``, ``small-nomdim``, plus
``<preset>-resnet-wide``: the ResNet-18 at √2 × the width, which costs as many FLOPs as the PCNN (PCNN runs about
two trunks' worth of convolutions: the global one and five local ones on a fifth of the face each, plus layer4 twice).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .backbones import branch_channels, init_backbone, make_layer4, make_trunk
from .pcnn import ARCHITECTURES, MODEL_PRESETS, REGIONS, FaceRegions, PCNNConfig

__all__ = ["BASELINE_ARCHS", "GlobalOnlyPCNN", "NoMDIMPCNN", "ResNet18", "baseline_presets"]

#: The ablation architectures, by ``PCNNConfig.arch``.
BASELINE_ARCHS: tuple[str, ...] = ("resnet", "global", "nomdim")


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool to (B, C)."""
    return x.mean((2, 3))


def _outputs(logits: torch.Tensor, local_logits: torch.Tensor, region_logits: torch.Tensor | None,
             return_regions: bool, return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
    """PCNN's output tuple; zero region logits stand in for models without region heads, NaN occlusion scores for
    models without occlusion heads (no baseline has them)."""
    outputs: tuple[torch.Tensor, ...] = (logits, local_logits)
    if return_regions:
        if region_logits is None:
            region_logits = logits.new_zeros(logits.shape[0], len(REGIONS), logits.shape[1])
        outputs += (region_logits,)
    if return_occlusion:
        outputs += (logits.new_full((logits.shape[0], len(REGIONS)), float("nan")),)
    return outputs


class _Baseline(nn.Module):
    """Config handling shared by the baselines."""

    arch = ""

    def __init__(self, config: PCNNConfig) -> None:
        super().__init__()
        if config.arch != self.arch:
            raise ValueError(f"{type(self).__name__} needs arch {self.arch!r}, got {config.arch!r}")
        self.config = config
        self.dropout = nn.Dropout(config.dropout)

    @property
    def classes(self) -> tuple[str, ...]:
        """Canonical class names of the outputs."""
        return self.config.classes


class ResNet18(_Baseline):
    """Plain ResNet-18 of PCNN's width and stem: trunk (conv1…layer3) → layer4 → pool → linear."""

    arch = "resnet"

    def __init__(self, config: PCNNConfig) -> None:
        super().__init__(config)
        _, c4 = branch_channels(config)
        self.trunk = make_trunk(config)
        self.layer4 = make_layer4(config)
        self.global_head = nn.Linear(c4, config.num_classes)
        init_backbone(config, self.trunk, self.layer4)

    def forward(self, x: torch.Tensor, return_regions: bool = False,
                return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """``(logits, logits)`` (plus zero region logits and NaN occlusion scores on request)."""
        logits = self.global_head(self.dropout(_pool(self.layer4(self.trunk(x)))))
        return _outputs(logits, logits, None, return_regions, return_occlusion)


class GlobalOnlyPCNN(ResNet18):
    """PCNN's global branch (the ResNet-18) with a second head on its layer3 map for the local term of the
    two-phase loss."""

    arch = "global"

    def __init__(self, config: PCNNConfig) -> None:
        super().__init__(config)
        self.local_head = nn.Linear(branch_channels(config)[0], config.num_classes)

    def forward(self, x: torch.Tensor, return_regions: bool = False,
                return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """``(global_logits, layer3-head logits)`` (plus zero region logits and NaN occlusion on request)."""
        features = self.trunk(x)
        global_logits = self.global_head(self.dropout(_pool(self.layer4(features))))
        local_logits = self.local_head(self.dropout(_pool(features)))
        return _outputs(global_logits, local_logits, None, return_regions, return_occlusion)


class NoMDIMPCNN(_Baseline):
    """PCNN without MDIM: the global branch and the five local branches are fused only by adding their logits."""

    arch = "nomdim"

    def __init__(self, config: PCNNConfig) -> None:
        super().__init__(config)
        c3, c4 = branch_channels(config)
        self.regions = FaceRegions(config.crop_fractions)
        self.global_trunk = make_trunk(config)
        self.local_trunks = nn.ModuleDict({name: make_trunk(config) for name in REGIONS})
        self.layer4 = make_layer4(config)
        self.global_head = nn.Linear(c4, config.num_classes)
        self.local_heads = nn.ModuleDict({name: nn.Linear(c3, config.num_classes) for name in REGIONS})
        init_backbone(config, self.global_trunk, self.local_trunks, self.layer4)

    def forward(self, x: torch.Tensor, return_regions: bool = False,
                return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """``(global + summed local logits, summed local logits)`` (plus the per-region logits and NaN occlusion
        on request)."""
        crops = self.regions(x)
        global_logits = self.global_head(self.dropout(_pool(self.layer4(self.global_trunk(x)))))
        region_logits = torch.stack([self.local_heads[name](self.dropout(_pool(self.local_trunks[name](crop))))
                                     for name, crop in zip(REGIONS, crops)], 1)
        local_logits = region_logits.sum(1)
        return _outputs(global_logits + local_logits, local_logits, region_logits, return_regions, return_occlusion)


def baseline_presets(pcnn_preset: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The baselines of one PCNN preset, by name suffix (``resnet``, ``resnet-wide``, ``global``, ``nomdim``)."""
    presets = {arch: {**pcnn_preset, "arch": arch} for arch in BASELINE_ARCHS}
    if pcnn_preset.get("backbone", "resnet18") == "resnet18":  # dlib's widths are its own
        presets["resnet-wide"] = {**pcnn_preset, "arch": "resnet", "width": pcnn_preset["width"] * math.sqrt(2)}
    return presets


ARCHITECTURES.update({"resnet": ResNet18, "global": GlobalOnlyPCNN, "nomdim": NoMDIMPCNN})
MODEL_PRESETS.update({f"{name}-{suffix}": params for name, pcnn_preset in list(MODEL_PRESETS.items())
                      for suffix, params in baseline_presets(pcnn_preset).items()})
