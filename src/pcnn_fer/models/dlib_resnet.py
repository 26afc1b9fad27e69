"""dlib's ResNet-29 face-recognition network (``dlib_face_recognition_resnet_model_v1``) as a torch module.

The architecture is the one dlib documents in ``examples/dnn_face_recognition_ex.cpp`` (the network that ships
inside ``face_recognition_models``; trained by Davis King for face recognition on about 3 M faces):

* stem: ``con<32,7,7,2,2>`` → ``affine`` → ``relu`` → ``max_pool<3,3,2,2>`` (stride 4);
* five levels of residual blocks, each block ``con 3×3 → affine → relu → con 3×3 → affine`` plus the shortcut,
  then ``relu``: level4 3 × 32 channels, level3 4 × 64, level2 3 × 128, level1 3 × 256, level0 1 × 256; the first
  block of levels 3 … 0 is strided (``ares_down``) and its shortcut is ``avg_pool<2,2,2,2>`` of its input;
* ``avg_pool_everything`` → ``fc_no_bias<128>``: the 128-d face descriptor.

dlib has no batch norm at inference: ``affine`` is a per-channel scale and shift (:class:`Affine`). Its ``add_prev``
adds two tensors of different shapes by zero-padding both to the larger one (channels, rows and columns), which is
how the 32 → 64 shortcut gains channels and how a 3×3 block output meets a 4×4 shortcut.

``geometry="dlib"`` reproduces dlib exactly: strided convolutions and pools have no padding, so feature maps shrink
by the kernel (150 px → 72 → 35 → 17 → 8 → 4 → 2). ``geometry="same"`` pads them (conv k//2, max-pool 1, the
shortcut's average pool in ceil mode) so every stage halves ``ceil``-wise and any input of at least 16 px works: the
weights are the same, the grid is shifted by half a pixel. PCNN's trunks use it, because its cheek crops are too thin
for dlib's unpadded geometry (a 150-px face gives a 22-row cheek band, which vanishes by level2).

PCNN's trunks also use ``norm="batchnorm"``: dlib trained this network with batch norm (``bn_con``) and stores the
folded ``affine`` form; fine-tuning the folded form without batch statistics diverged in the first steps here
(gradient norm 1.3e3 at step 0, NaN at step 2 at lr 0.01), so the loader turns each affine back into a batch norm
with statistics measured on the training faces (:func:`pcnn_fer.dlib_weights.load_dlib_trunks`).

Reading the weights from dlib's ``.dat`` file is :mod:`pcnn_fer.dlib_weights`.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Geometry = Literal["dlib", "same"]
Norm = Literal["affine", "batchnorm"]

#: (channels, blocks, first block strided) of levels 4, 3, 2, 1, 0, in forward order.
LEVELS: tuple[tuple[int, int, bool], ...] = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True),
                                             (256, 1, True))
LEVEL_NAMES: tuple[str, ...] = ("level4", "level3", "level2", "level1", "level0")
STEM_CHANNELS = 32
DESCRIPTOR_SIZE = 128
CHIP_SIZE = 150  # the face chip size dlib's network was trained on
#: dlib's input_rgb_image normalisation: (pixel - mean) / 256 on 0…255 RGB pixels.
DLIB_PIXEL_MEAN = (122.782, 117.001, 104.298)
DLIB_PIXEL_SCALE = 256.0


class Affine(nn.Module):
    """dlib's ``affine_`` layer: ``x * weight + bias`` per channel (a batch norm folded into its statistics)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel scale and shift."""
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum of two maps, each zero-padded (channels, rows, columns) to the larger shape."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return grow(a) + grow(b)


def make_norm(norm: Norm, channels: int) -> nn.Module:
    """dlib's ``affine`` as it is (:class:`Affine`), or as the batch norm it was trained as (for fine-tuning:
    :func:`pcnn_fer.dlib_weights.load_dlib_trunks` sets its statistics so that it computes the same function)."""
    return Affine(channels) if norm == "affine" else nn.BatchNorm2d(channels)


class DlibBlock(nn.Module):
    """One residual block (``ares`` / ``ares_down``): conv → affine → relu → conv → affine, + shortcut, relu."""

    def __init__(self, in_channels: int, channels: int, stride: int, geometry: Geometry,
                 norm: Norm = "affine") -> None:
        super().__init__()
        pad = 1 if stride == 1 or geometry == "same" else 0
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, pad)
        self.norm1 = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2 = make_norm(norm, channels)
        self.stride = stride
        self.geometry = geometry

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The input (``tag1``), average-pooled 2×2/2 in a strided block (``avg_pool<2,2,2,2>``)."""
        if self.stride == 1:
            return x
        if self.geometry == "same":
            return F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        return F.avg_pool2d(x, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Block forward; channels the shortcut lacks are zero (dlib's ``add_prev``)."""
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        return F.relu(add_prev(out, self.shortcut(x)))


def make_level(index: int, geometry: Geometry, norm: Norm = "affine") -> nn.Sequential:
    """Level ``LEVEL_NAMES[index]``: its residual blocks, the first strided for levels 3 … 0."""
    in_channels = STEM_CHANNELS if index == 0 else LEVELS[index - 1][0]
    channels, blocks, strided = LEVELS[index]
    layers = [DlibBlock(in_channels, channels, 2 if strided else 1, geometry, norm)]
    layers += [DlibBlock(channels, channels, 1, geometry, norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DlibStem(nn.Module):
    """``con<32,7,7,2,2>`` → ``affine`` → ``relu`` → ``max_pool<3,3,2,2>``."""

    def __init__(self, geometry: Geometry, norm: Norm = "affine") -> None:
        super().__init__()
        same = geometry == "same"
        self.conv = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 3 if same else 0)
        self.norm = make_norm(norm, STEM_CHANNELS)
        self.pool = nn.MaxPool2d(3, 2, 1 if same else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image → stride-4 map of 32 channels."""
        return self.pool(F.relu(self.norm(self.conv(x))))


class DlibTrunk(nn.Module):
    """Stem and levels 4, 3, 2 (stride 16, 128 channels): the part of dlib's net a PCNN branch runs, where the
    paper's ResNet-18 trunk stops after layer3 (also stride 16)."""

    out_channels = LEVELS[2][0]

    def __init__(self, geometry: Geometry = "same", norm: Norm = "batchnorm") -> None:
        super().__init__()
        self.stem = DlibStem(geometry, norm)
        self.level4 = make_level(0, geometry, norm)
        self.level3 = make_level(1, geometry, norm)
        self.level2 = make_level(2, geometry, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image batch → level2 map."""
        return self.level2(self.level3(self.level4(self.stem(x))))


class DlibHead(nn.Sequential):
    """Levels 1 and 0 (stride 64, 256 channels): PCNN's layer4 on dlib's net."""

    out_channels = LEVELS[4][0]

    def __init__(self, geometry: Geometry = "same", norm: Norm = "batchnorm") -> None:
        super().__init__()
        self.level1 = make_level(3, geometry, norm)
        self.level0 = make_level(4, geometry, norm)


class DlibResNet(nn.Module):
    """The whole face-recognition network: ``forward`` maps 0…255 RGB pixels (B, 3, H, W) to 128-d descriptors,
    as ``dlib.face_recognition_model_v1.compute_face_descriptor`` does on a 150×150 chip."""

    def __init__(self, geometry: Geometry = "dlib") -> None:
        super().__init__()
        self.trunk = DlibTrunk(geometry, "affine")
        self.head = DlibHead(geometry, "affine")
        self.fc = nn.Linear(DlibHead.out_channels, DESCRIPTOR_SIZE, bias=False)
        self.register_buffer("pixel_mean", torch.tensor(DLIB_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0…255 → (B, 128) descriptors."""
        x = (pixels - self.pixel_mean) / DLIB_PIXEL_SCALE
        return self.fc(self.head(self.trunk(x)).mean((2, 3)))


__all__ = ["Affine", "CHIP_SIZE", "DESCRIPTOR_SIZE", "DLIB_PIXEL_MEAN", "DLIB_PIXEL_SCALE", "DlibBlock", "DlibHead",
           "DlibResNet", "DlibStem", "DlibTrunk", "LEVELS", "LEVEL_NAMES", "add_prev", "make_level", "make_norm"]
