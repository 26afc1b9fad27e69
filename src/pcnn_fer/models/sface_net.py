"""SFace (OpenCV Zoo's ``face_recognition_sface_2021dec``) as a torch module.

SFace (Zhong et al., "SFace: Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition", IEEE TIP 2021) is a
MobileNet-v1-style network trained for face recognition on 112×112 aligned faces. The ONNX graph OpenCV Zoo ships
(Apache-2.0) is, in forward order:

* input: RGB 0…255 pixels, ``(p - 127.5) · 0.0078125``;
* ``conv_1``: a 3×3 convolution (32 channels, stride 1) → batch norm → PReLU;
* ``conv_2`` … ``conv_14``: depthwise-separable blocks, each a depthwise 3×3 convolution (``conv_N_dw``) → batch norm
  → PReLU, then a pointwise 1×1 convolution → batch norm → PReLU; channels and strides in :data:`BLOCKS` (strided
  depthwise convolutions at ``conv_3``, ``conv_5``, ``conv_7`` and ``conv_13``: stride 16 overall, 7×7 at 112 px);
* ``bn1`` (batch norm of the 1024×7×7 map) → flatten → ``pre_fc1`` (50176 → 128) → ``fc1`` (batch norm): the 128-d
  face descriptor.

No convolution has a bias and every batch norm is real (moving statistics stored, not folded), so the network can be
fine-tuned as it is. PCNN's branches use :class:`SFaceTrunk` (``conv_1`` … ``conv_12``: stride 8, 512 channels,
14×14 at 112 px) and :class:`SFaceHead` (``conv_13`` … ``conv_14``: stride 16, 1024 channels) as layer4; why that
split is in docs/training.md ("Face-pretrained trunks: SFace"). Reading the weights is :mod:`pcnn_fer.sface_weights`.
"""

from __future__ import annotations

import torch
from torch import nn

#: (name, input channels, output channels, depthwise stride) of the depthwise-separable blocks conv_2 … conv_14.
BLOCKS: tuple[tuple[str, int, int, int], ...] = (
    ("conv_2", 32, 64, 1), ("conv_3", 64, 128, 2), ("conv_4", 128, 128, 1), ("conv_5", 128, 256, 2),
    ("conv_6", 256, 256, 1), ("conv_7", 256, 512, 2), ("conv_8", 512, 512, 1), ("conv_9", 512, 512, 1),
    ("conv_10", 512, 512, 1), ("conv_11", 512, 512, 1), ("conv_12", 512, 512, 1), ("conv_13", 512, 1024, 2),
    ("conv_14", 1024, 1024, 1),
)
#: Blocks of the trunk (up to stride 8) and of the head (layer4, stride 16).
TRUNK_BLOCKS = tuple(b[0] for b in BLOCKS[:11])
HEAD_BLOCKS = tuple(b[0] for b in BLOCKS[11:])
STEM_CHANNELS = 32
DESCRIPTOR_SIZE = 128
CHIP_SIZE = 112  # the aligned face size SFace was trained on
#: SFace's input normalisation: (pixel - 127.5) · 0.0078125 on 0…255 RGB pixels.
SFACE_PIXEL_MEAN = 127.5
SFACE_PIXEL_SCALE = 0.0078125
#: Batch-norm epsilons of the graph: the convolutions' and the descriptor's (bn1, fc1).
CONV_BN_EPS = 1e-3
FEATURE_BN_EPS = 2e-5


class ConvBNPReLU(nn.Sequential):
    """convolution (no bias) → batch norm → PReLU, one of SFace's layers (``conv_N`` or ``conv_N_dw``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=CONV_BN_EPS)
        self.prelu = nn.PReLU(out_channels)


class SeparableBlock(nn.Sequential):
    """A depthwise 3×3 layer (``dw``, strided where SFace downsamples) and a pointwise 1×1 layer (``pw``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNPReLU(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pw = ConvBNPReLU(in_channels, out_channels, 1, 1)


def _blocks(names: tuple[str, ...]) -> dict[str, SeparableBlock]:
    spec = {name: (cin, cout, stride) for name, cin, cout, stride in BLOCKS}
    return {name: SeparableBlock(*spec[name]) for name in names}


class SFaceTrunk(nn.Sequential):
    """``conv_1`` … ``conv_12`` (stride 8, 512 channels): the part of SFace a PCNN branch runs."""

    out_channels = 512

    def __init__(self) -> None:
        super().__init__()
        self.add_module("conv_1", ConvBNPReLU(3, STEM_CHANNELS, 3, 1))
        for name, block in _blocks(TRUNK_BLOCKS).items():
            self.add_module(name, block)


class SFaceHead(nn.Sequential):
    """``conv_13`` and ``conv_14`` (stride 16, 1024 channels): PCNN's layer4 on SFace."""

    out_channels = 1024

    def __init__(self) -> None:
        super().__init__()
        for name, block in _blocks(HEAD_BLOCKS).items():
            self.add_module(name, block)


class SFaceNet(nn.Module):
    """The whole face-recognition network: ``forward`` maps 0…255 RGB pixels (B, 3, 112, 112) to SFace's 128-d
    descriptors (``fc1``), as OpenCV's ``FaceRecognizerSF.feature`` does on an aligned 112×112 face."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = SFaceTrunk()
        self.head = SFaceHead()
        self.bn1 = nn.BatchNorm2d(SFaceHead.out_channels, eps=FEATURE_BN_EPS)
        grid = CHIP_SIZE // 16
        self.pre_fc1 = nn.Linear(SFaceHead.out_channels * grid * grid, DESCRIPTOR_SIZE)
        self.fc1 = nn.BatchNorm1d(DESCRIPTOR_SIZE, eps=FEATURE_BN_EPS)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0…255 → the last convolutional map (B, 1024, H/16, W/16), ``conv_14``'s output."""
        return self.head(self.trunk((pixels - SFACE_PIXEL_MEAN) * SFACE_PIXEL_SCALE))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in 0…255 → (B, 128) descriptors."""
        return self.fc1(self.pre_fc1(self.bn1(self.features(pixels)).flatten(1)))


__all__ = ["BLOCKS", "CHIP_SIZE", "CONV_BN_EPS", "ConvBNPReLU", "DESCRIPTOR_SIZE", "FEATURE_BN_EPS", "HEAD_BLOCKS",
           "SFACE_PIXEL_MEAN", "SFACE_PIXEL_SCALE", "SFaceHead", "SFaceNet", "SFaceTrunk", "SeparableBlock",
           "TRUNK_BLOCKS"]
