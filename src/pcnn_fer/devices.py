"""One check of a device name (``--device`` of every command): a torch device that exists on this machine, or a
one-line :class:`~pcnn_fer.errors.UsageError` instead of torch's parser or driver error."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["torch_device"]


def torch_device(name: str | torch.device) -> torch.device:
    """``name`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) as a :class:`torch.device` this machine has."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {name!r} (use cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"device {name}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r} (use cpu, cuda, cuda:N or mps)")
    return device
