"""What every face-pretrained start (dlib's ResNet, SFace) shares: which part of the pretrained network goes into
which module of a PCNN or plain baseline, the copy itself, and the batch-norm recalibration on training faces."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .models.pcnn import REGIONS

#: Our module prefix → the pretrained network's part copied into it ("trunk" up to MDIM's stage, "head" = layer4),
#: for every module a PCNN or baseline may have.
TRUNK_LAYER_MAP: dict[str, str] = {
    "global_trunk": "trunk",
    **{f"local_trunks.{name}": "trunk" for name in REGIONS},
    "trunk": "trunk",  # the plain baselines' single trunk
    "layer4": "head",
}


def copy_trunks(model: nn.Module, value_of: Callable[[str, torch.Tensor], torch.Tensor], network: str,
                parts: dict[str, str], unused: str, calibration: torch.Tensor | None = None) -> tuple[list[str], int]:
    """Copy a pretrained network into every trunk and layer4 of ``model``: ``value_of(source_key, like)`` gives the
    tensor for the key of the pretrained part (``trunk.`` / ``head.`` + our key's rest). Returns the layer mapping
    (one line per module, ``parts`` describing each part, ``unused`` the network's layers left out) and the number
    of tensors copied; with ``calibration`` the batch norms are then recalibrated (:func:`calibrate_batchnorm`)."""
    own = model.state_dict()
    new_state, lines = {}, []
    for prefix, part in TRUNK_LAYER_MAP.items():
        keys = [k for k in own if k.startswith(prefix + ".") and not k.endswith(".num_batches_tracked")]
        if not keys:
            continue
        for key in keys:
            new_state[key] = value_of(part + key[len(prefix):], own[key])
        lines.append(f"{prefix} <- {network} {parts[part]} ({len(keys)} tensors)")
    lines.append(f"{unused}: not used; heads and MDIM start fresh")
    model.load_state_dict(new_state, strict=False)
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
        lines.append(f"batch-norm statistics measured on {len(calibration)} training faces (eval output unchanged)")
    return lines, len(new_state)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> None:
    """Set every batch norm's running statistics to those of its input on ``images`` (model in eval mode) and
    rescale its weight and bias so that its eval-mode output stays what it was."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].float()
        totals = sums.setdefault(module, [torch.zeros(x.shape[1]), torch.zeros(x.shape[1]), torch.zeros(())])
        totals[0] += x.sum((0, 2, 3))
        totals[1] += (x * x).sum((0, 2, 3))
        totals[2] += x.numel() / x.shape[1]

    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for bn in bns:
        if bn not in sums:
            continue
        total, square, count = sums[bn]
        mean = total / count
        var = (square / count - mean * mean).clamp_min(0)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # what the layer multiplies by now
        shift = bn.bias - scale * bn.running_mean
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(scale * torch.sqrt(var + bn.eps))
        bn.bias.copy_(shift + scale * mean)


__all__ = ["TRUNK_LAYER_MAP", "calibrate_batchnorm", "copy_trunks"]
