"""oneDNN convolutions with pre-packed weights and fused ReLU / residual add, for the CPU inference form of a
ResNet-18 PCNN (:func:`pcnn_fer.models.fuse.optimize_for_inference`).

PyTorch's eager ``conv2d`` on a channels_last CPU tensor runs oneDNN's convolution but re-lays the weights out into
the kernel's blocked format on every call; at batch 1 that copy of all 26 M weights is a large part of a forward
pass. :class:`FusedConv2d` packs its weights once (``mkldnn_reorder_conv2d_weight``, the packing ``torch.compile``'s
CPU freezing uses) and runs ``mkldnn::_convolution_pointwise``, with the block's ReLU and residual add as oneDNN
post-ops: the same kernels on the same numbers, so the outputs equal the unfused ones. Whether the path is used is
probed at run time (oneDNN present and computing what ``conv2d`` computes on this CPU); wherever it does not apply
(no oneDNN, a GPU, another dtype, autocast, gradients, tracing, ONNX export, ``torch.compile``, a dispatch mode such
as FLOP counting) the module runs the plain ``conv2d`` → add → ReLU.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .resnet import BasicBlock, Trunk


@functools.cache
def onednn_fusion_available() -> bool:
    """Whether this process's PyTorch has oneDNN's fused convolution and it matches ``conv2d`` on this CPU (probed
    once: a small conv + add + ReLU both ways)."""
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_convolution_pointwise"):
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)
        conv = nn.Conv2d(8, 8, 3, 1, 1, bias=True).to(memory_format=torch.channels_last).requires_grad_(False)
        other = torch.randn(1, 8, 9, 9, generator=gen).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            packed = _pack(conv.weight, conv, x.shape)
            fused = torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, packed, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                "add", None, "relu", [], "")
            return bool(torch.allclose(fused, F.relu(conv(x) + other), atol=1e-5))
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):  # an older op signature, no kernel
        return False


def _pack(weight: torch.Tensor, conv: nn.Conv2d, input_shape: torch.Size) -> torch.Tensor:
    """``weight`` in the blocked layout oneDNN's convolution of ``conv`` picks for inputs of ``input_shape``."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.detach().to_mkldnn(), list(conv.padding),
                                                      list(conv.stride), list(conv.dilation), conv.groups,
                                                      list(input_shape))


def _plain_ops_needed(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether this call must run aten's ``conv2d`` (autograd, autocast, tracing, export, compile, dispatch modes,
    non-CPU or non-float32 tensors) rather than the packed oneDNN kernel."""
    return (torch.compiler.is_compiling() or torch.jit.is_scripting() or torch.jit.is_tracing()
            or x.device.type != "cpu" or x.dtype != torch.float32 or weight.device.type != "cpu"
            or weight.dtype != torch.float32
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or torch.is_autocast_enabled("cpu") or torch.onnx.is_in_onnx_export()
            or _get_current_dispatch_mode() is not None or not onednn_fusion_available())


class FusedConv2d(nn.Conv2d):
    """A convolution followed by an optional residual add and ReLU (``relu``), run as one oneDNN kernel on weights
    packed once (repacked when the weights or the input's C×H×W change); the same parameters and state-dict keys as
    the ``nn.Conv2d`` it was made from."""

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError(f"FusedConv2d needs numeric zero padding, got {conv.padding!r} / {conv.padding_mode}")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                         conv.dilation, conv.groups, bias=True, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias if conv.bias is not None else nn.Parameter(
            torch.zeros(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device),
            requires_grad=conv.weight.requires_grad)
        self.relu = relu
        self._packed: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The weights packed for inputs like ``x`` (cached; one packed copy per module)."""
        # inference tensors (a copy made under inference_mode) keep no version counter: their storage then keys it
        version = -1 if self.weight.is_inference() else self.weight._version
        key = (self.weight.data_ptr(), version, tuple(x.shape[1:]))
        cached = self._packed
        if cached is None or cached[0] != key:
            cached = self._packed = (key, _pack(self.weight, self, x.shape))
        return cached[1]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``relu(conv(x) + residual)`` (no add without ``residual``, no ReLU without ``relu``)."""
        if _plain_ops_needed(x, self.weight) or (residual is not None and residual.dtype != torch.float32):
            out = self._conv_forward(x, self.weight, self.bias)
            if residual is not None:
                out = out + residual
            return F.relu(out, inplace=True) if self.relu else out
        x = x.contiguous(memory_format=torch.channels_last)
        args = (self.packed_weight(x), self.bias, list(self.padding), list(self.stride), list(self.dilation),
                self.groups)
        unary = "relu" if self.relu else None
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, *args, unary or "none", [], "")
        residual = residual.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, unary, [], "")

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and deep-copied without the packed weights (they are rebuilt on the next call)."""
        state = dict(super().__getstate__())
        state["_packed"] = None
        return state


class FusedBasicBlock(nn.Module):
    """A BN-folded ResNet :class:`~pcnn_fer.models.resnet.BasicBlock` as two :class:`FusedConv2d` (conv1 + ReLU;
    conv2 + shortcut + ReLU); same state-dict keys as the folded block."""

    def __init__(self, block: BasicBlock) -> None:
        super().__init__()
        if not isinstance(block.bn1, nn.Identity) or not isinstance(block.bn2, nn.Identity):
            raise ValueError("fold the block's BatchNorm before fusing it")
        self.conv1 = FusedConv2d(block.conv1, relu=True)
        self.conv2 = FusedConv2d(block.conv2, relu=True)
        self.downsample = None
        if block.downsample is not None:
            if len(block.downsample) != 1:
                raise ValueError("fold the shortcut's BatchNorm before fusing the block")
            self.downsample = nn.Sequential(FusedConv2d(block.downsample[0], relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward: ``relu(conv2(relu(conv1(x))) + shortcut(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x), identity)


def fuse_resnet_blocks(module: nn.Module) -> nn.Module:
    """Replace (in place) every BN-folded ResNet block under ``module`` by a :class:`FusedBasicBlock` and every
    folded trunk stem's conv by a :class:`FusedConv2d` with its ReLU; returns ``module``."""
    for parent in list(module.modules()):
        if isinstance(parent, Trunk) and isinstance(parent.bn1, nn.Identity) and not isinstance(parent.conv1,
                                                                                                 FusedConv2d):
            parent.conv1, parent.relu = FusedConv2d(parent.conv1, relu=True), nn.Identity()
        for name, child in list(parent.named_children()):
            if isinstance(child, BasicBlock):
                setattr(parent, name, FusedBasicBlock(child))
    return module


__all__ = ["FusedBasicBlock", "FusedConv2d", "fuse_resnet_blocks", "onednn_fusion_available"]
