"""The convolutional bodies a PCNN (or an ablation baseline) is built on, chosen by ``PCNNConfig.backbone``.

* ``resnet18`` – the paper's: a ResNet-18 trunk (conv1…layer3) per branch and ResNet-18's layer4, at the config's
  width and stem (:mod:`pcnn_fer.models.resnet`); torchvision initialisation.
* ``dlib`` – dlib's face-recognition ResNet-29 (:mod:`pcnn_fer.models.dlib_resnet`): its stem and levels 4–2
  (stride 16, 128 channels, where ResNet-18's layer3 also ends at stride 16) per branch, and levels 1–0 (256
  channels) as layer4; padded ("same") geometry so the thin cheek crops survive. Meant to start from dlib's
  face-recognition weights (``--init dlib``, :mod:`pcnn_fer.dlib_weights`); width and stem do not apply.
* ``sface`` – OpenCV Zoo's SFace face-recognition network (:mod:`pcnn_fer.models.sface_net`, a MobileNet-v1 of
  depthwise-separable blocks): ``conv_1`` … ``conv_12`` (stride 8, 512 channels) per branch and ``conv_13`` …
  ``conv_14`` (stride 16, 1024 channels) as layer4. Meant to start from SFace's weights (``--init sface``,
  :mod:`pcnn_fer.sface_weights`); width and stem do not apply.
* ``faceres`` – HSE's FaceRes MobileNet-v1 (:mod:`pcnn_fer.models.faceres_net`): ``conv1`` … ``conv_pw_11`` (stride
  16, 512 channels) per branch and ``conv_dw_12`` … ``conv_pw_13`` (stride 32, 1024 channels) as layer4, the paper's
  geometry at 224 px. Meant to start from the user's FaceRes files (``--init PATH/faceres.json``,
  :mod:`pcnn_fer.faceres_weights`; not bundled, its licence is unsettled); width and stem do not apply.
"""

from __future__ import annotations

from typing import Protocol

from torch import nn

from .dlib_resnet import DlibHead, DlibTrunk
from .faceres_net import FaceResHead, FaceResTrunk
from .resnet import Trunk, init_resnet_weights, make_stage, stage_channels
from .sface_net import SFaceHead, SFaceTrunk

BACKBONES: tuple[str, ...] = ("resnet18", "dlib", "sface", "faceres")
#: Backbones whose widths are fixed by their pretrained weights (``width`` must stay 1.0).
FIXED_WIDTH_BACKBONES: tuple[str, ...] = ("dlib", "sface", "faceres")


class BackboneConfig(Protocol):
    """The fields of a PCNNConfig that choose the backbone."""

    backbone: str
    width: float
    stem: str


def branch_channels(config: BackboneConfig) -> tuple[int, int]:
    """Channels of a branch's trunk output (PCNN's layer3 maps) and of layer4."""
    if config.backbone == "dlib":
        return DlibTrunk.out_channels, DlibHead.out_channels
    if config.backbone == "sface":
        return SFaceTrunk.out_channels, SFaceHead.out_channels
    if config.backbone == "faceres":
        return FaceResTrunk.out_channels, FaceResHead.out_channels
    _, _, c3, c4 = stage_channels(config.width)
    return c3, c4


def make_trunk(config: BackboneConfig) -> nn.Module:
    """A branch trunk (image → layer3-level map)."""
    if config.backbone == "dlib":
        return DlibTrunk("same")
    if config.backbone == "sface":
        return SFaceTrunk()
    if config.backbone == "faceres":
        return FaceResTrunk()
    return Trunk(config.width, config.stem)  # type: ignore[arg-type]


def make_layer4(config: BackboneConfig) -> nn.Module:
    """A layer4 (trunk map → the map that is pooled for the global head)."""
    if config.backbone == "dlib":
        return DlibHead("same")
    if config.backbone == "sface":
        return SFaceHead()
    if config.backbone == "faceres":
        return FaceResHead()
    c3, c4 = branch_channels(config)
    return make_stage(c3, c4, 2)


def init_backbone(config: BackboneConfig, *modules: nn.Module) -> None:
    """Initialise trunks and layer4 as their backbone does from scratch (torchvision's ResNet init for resnet18;
    torch's defaults, unit affines, for dlib, SFace and FaceRes, whose real starts are ``--init dlib`` / ``--init
    sface`` / ``--init PATH/faceres.json``),
    after all modules exist."""
    if config.backbone == "resnet18":
        for module in modules:
            init_resnet_weights(module)


__all__ = ["BACKBONES", "FIXED_WIDTH_BACKBONES", "BackboneConfig", "branch_channels", "init_backbone", "make_layer4",
           "make_trunk"]
