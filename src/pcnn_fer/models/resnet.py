"""ResNet-18 building blocks with a width multiplier and a low-resolution stem.

Module names follow torchvision's ResNet (conv1, bn1, layer1…layer4, downsample) so torchvision-format state dicts,
such as the MS-Celeb ResNet-18 used by the paper, load without renaming.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import UsageError

Stem = Literal["imagenet", "lowres"]
STEMS: tuple[str, ...] = ("imagenet", "lowres")


def stage_channels(width: float) -> tuple[int, int, int, int]:
    """Channel counts of the four ResNet-18 stages for a width multiplier (64·w, 128·w, 256·w, 512·w, at least 8)."""
    if width <= 0:
        raise UsageError(f"width multiplier must be positive, got {width}")
    return tuple(max(8, int(round(c * width))) for c in (64, 128, 256, 512))  # type: ignore[return-value]


class BasicBlock(nn.Module):
    """The two-convolution residual block of ResNet-18."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_stage(in_channels: int, channels: int, stride: int, blocks: int = 2) -> nn.Sequential:
    """A ResNet-18 stage: `blocks` basic blocks, the first one strided."""
    layers = [BasicBlock(in_channels, channels, stride)]
    layers += [BasicBlock(channels, channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class Trunk(nn.Module):
    """ResNet-18 cut after layer3 (conv1, bn1, relu, maxpool, layer1-3): the feature extractor of every PCNN branch.

    The ``imagenet`` stem is torchvision's (7×7/2 conv + 3×3/2 max-pool, stride 4); the ``lowres`` stem is a 3×3/1
    conv without max-pool (stride 1), for 48×48 sources such as FER2013, FERPlus and CK+.
    """

    def __init__(self, width: float = 1.0, stem: Stem = "imagenet", in_chans: int = 3) -> None:
        super().__init__()
        if stem not in STEMS:
            raise UsageError(f"unknown stem {stem!r}; choose one of {STEMS}")
        c1, c2, c3, _ = stage_channels(width)
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, c1, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_chans, c1, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_stage(c1, c1, 1)
        self.layer2 = make_stage(c1, c2, 2)
        self.layer3 = make_stage(c2, c3, 2)
        self.out_channels = c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → layer3 feature map (stride 16 with the imagenet stem, 4 with the lowres stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal convs, unit BN, zero-γ on each block's last BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
