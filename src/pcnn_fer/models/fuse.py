"""Inference-time rewrite of a trained PCNN with identical outputs and less work per image.

* BatchNorm is folded into the preceding convolution (no BN kernels at inference).
* The two eye trunks and the two cheek trunks see crops of the same shape: each pair runs as **one** trunk of
  grouped convolutions (groups = 2) on the channel-stacked crops, halving the number of kernels launched. Only for
  ResNet-18 trunks: dlib's blocks zero-pad their shortcut's channels (``add_prev``), which would mix the two
  halves of a stacked pair, so a dlib PCNN is BN-folded and keeps its five local trunks; so is an SFace PCNN
  (its conv → BN → PReLU layers folded to conv → PReLU).
* On a CPU whose PyTorch has oneDNN (probed at run time), the ResNet-18 blocks run as oneDNN convolutions on
  weights packed once, with their ReLU and residual add fused (:mod:`pcnn_fer.models.onednn`); elsewhere, and under
  autograd, autocast, tracing, export or ``torch.compile``, as plain ``conv2d`` → add → ReLU. Same outputs.
* The result is channels_last by default; its parameters do not require gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UsageError
from .dlib_resnet import Affine, DlibBlock, DlibStem
from .onednn import fuse_resnet_blocks
from .pcnn import PCNN, REGIONS, _pool, occlusion_of
from .resnet import BasicBlock, Trunk
from .sface_net import ConvBNPReLU

PAIRS: tuple[tuple[str, str], ...] = (("left_eye", "right_eye"), ("left_cheek", "right_cheek"))


def _fold_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """``conv`` followed by ``norm`` (a BatchNorm in eval mode or dlib's per-channel :class:`Affine`) as one conv."""
    if isinstance(norm, nn.BatchNorm2d):
        return fuse_conv_bn_eval(conv, norm)
    if not isinstance(norm, Affine):
        raise TypeError(f"cannot fold {type(norm).__name__} into a convolution")
    fused = copy.deepcopy(conv)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.zeros(conv.out_channels))
    with torch.no_grad():
        fused.weight.mul_(norm.weight.view(-1, 1, 1, 1))
        fused.bias.copy_(fused.bias * norm.weight + norm.bias)
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm (and dlib affine) of ResNet, dlib and SFace trunks/blocks/stages in ``module`` (in place,
    eval mode) into its conv."""
    module.eval()
    for m in module.modules():
        if isinstance(m, ConvBNPReLU) and not isinstance(m.bn, nn.Identity):  # SFace's conv → BN → PReLU
            m.conv, m.bn = fuse_conv_bn_eval(m.conv, m.bn), nn.Identity()
        if isinstance(m, DlibStem) and not isinstance(m.norm, nn.Identity):
            m.conv, m.norm = _fold_norm(m.conv, m.norm), nn.Identity()
        if isinstance(m, DlibBlock) and not isinstance(m.norm1, nn.Identity):
            m.conv1, m.norm1 = _fold_norm(m.conv1, m.norm1), nn.Identity()
            m.conv2, m.norm2 = _fold_norm(m.conv2, m.norm2), nn.Identity()
        if isinstance(m, (Trunk, BasicBlock)):
            m.conv1 = fuse_conv_bn_eval(m.conv1, m.bn1)
            m.bn1 = nn.Identity()
        if isinstance(m, BasicBlock):
            m.conv2 = fuse_conv_bn_eval(m.conv2, m.bn2)
            m.bn2 = nn.Identity()
            if m.downsample is not None:
                m.downsample = nn.Sequential(fuse_conv_bn_eval(m.downsample[0], m.downsample[1]))
    return module


def stack_pair(a: nn.Module, b: nn.Module) -> nn.Module:
    """One module computing two BN-folded modules of identical structure side by side on channel-stacked inputs."""
    if isinstance(a, nn.Conv2d):
        conv = nn.Conv2d(a.in_channels * 2, a.out_channels * 2, a.kernel_size, a.stride, a.padding, a.dilation,
                         a.groups * 2, bias=True)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([a.weight, b.weight]))
            bias_a = a.bias if a.bias is not None else torch.zeros(a.out_channels)
            bias_b = b.bias if b.bias is not None else torch.zeros(b.out_channels)
            conv.bias.copy_(torch.cat([bias_a, bias_b]))
        return conv
    if isinstance(a, nn.BatchNorm2d):
        raise ValueError("fold BatchNorm before stacking a pair of trunks")
    stacked = copy.copy(a)
    stacked._modules = {name: None if child is None else stack_pair(child, b._modules[name])
                        for name, child in a._modules.items()}
    return stacked


def pairs_trunks(model: nn.Module) -> bool:
    """Whether :class:`InferencePCNN` stacks ``model``'s eye and cheek trunks in pairs: a PCNN on ResNet-18 trunks
    (dlib's shortcuts zero-pad channels, which would mix the halves of a stacked pair)."""
    return isinstance(model, PCNN) and model.config.backbone == "resnet18"


class InferencePCNN(nn.Module):
    """A BN-folded, pair-stacked PCNN for inference; same inputs and outputs as :class:`PCNN` in eval mode. A PCNN on
    dlib trunks is BN-folded only (``paired`` False: its local trunks run one by one)."""

    def __init__(self, model: PCNN, onednn: bool = True) -> None:
        super().__init__()
        model = fold_batchnorm(copy.deepcopy(model).eval())
        self.config = model.config
        self.regions = model.regions
        self.global_trunk = model.global_trunk
        self.paired = pairs_trunks(model)
        if self.paired:
            self.pairs = nn.ModuleList(stack_pair(model.local_trunks[a], model.local_trunks[b]) for a, b in PAIRS)
            self.mouth_trunk = model.local_trunks["mouth"]
        else:
            self.local_trunks = model.local_trunks
        self.layer4, self.mdim = model.layer4, model.mdim
        if self.paired and onednn:
            for part in (self.pairs, self.mouth_trunk, self.global_trunk, self.layer4):
                fuse_resnet_blocks(part)
        self.global_head, self.local_heads = model.global_head, model.local_heads
        if hasattr(model, "occlusion_heads"):
            self.occlusion_heads = model.occlusion_heads
        self.eval()

    @property
    def classes(self) -> tuple[str, ...]:
        """Canonical class names of the outputs."""
        return self.config.classes

    def forward(self, x: torch.Tensor, return_regions: bool = False,
                return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """Same contract as :meth:`PCNN.forward`."""
        crops = self.regions(x)
        if not self.paired:
            return self._heads(x, [self.local_trunks[name](crop) for name, crop in zip(REGIONS, crops)],
                               return_regions, return_occlusion)
        left_eye, right_eye, left_cheek, right_cheek, mouth = crops
        if left_eye.shape != right_eye.shape or left_cheek.shape != right_cheek.shape:
            raise UsageError(f"the optimised PCNN needs an even input width (equal left/right crops), got "
                             f"{x.shape[-1]}; use the plain PCNN for this size")
        eyes = self.pairs[0](torch.cat([left_eye, right_eye], 1)).chunk(2, 1)
        cheeks = self.pairs[1](torch.cat([left_cheek, right_cheek], 1)).chunk(2, 1)
        return self._heads(x, [*eyes, *cheeks, self.mouth_trunk(mouth)], return_regions, return_occlusion)

    def _heads(self, x: torch.Tensor, local_maps: list[torch.Tensor], return_regions: bool,
               return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """MDIM, layer4 and the heads on the global trunk's map of ``x`` and the five local maps."""
        fused = self.layer4(self.mdim(self.global_trunk(x), local_maps, self.layer4))
        global_logits = self.global_head(_pool(fused))
        region_logits = torch.stack([self.local_heads[n](_pool(m)) for n, m in zip(REGIONS, local_maps)], 1)
        outputs: tuple[torch.Tensor, ...] = (global_logits, region_logits.sum(1))
        if return_regions:
            outputs += (region_logits,)
        if return_occlusion:
            outputs += (occlusion_of(self, local_maps),)
        return outputs


def optimize_for_inference(model: PCNN, channels_last: bool = True, onednn: bool = True) -> InferencePCNN:
    """BN-folded, pair-stacked copy of ``model`` for fast inference (the original is left untouched; the copy's
    parameters do not require gradients); ``onednn=False`` keeps aten's unfused convolutions (for comparisons)."""
    fast = InferencePCNN(model, onednn).requires_grad_(False)
    return fast.to(memory_format=torch.channels_last) if channels_last else fast
