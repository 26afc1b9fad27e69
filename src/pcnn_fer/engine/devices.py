"""Where and how a run computes: device resolution, CPU threads, backend switches and global seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..devices import torch_device
from ..errors import UsageError
from .distributed import DistInfo

__all__ = ["resolve_device", "seed_everything", "set_threads", "setup_backends"]


def resolve_device(name: str | None, dist_info: DistInfo | None = None) -> torch.device:
    """``auto`` → CUDA when available else CPU; in a DDP job a CUDA device becomes ``cuda:LOCAL_RANK``."""
    dist_info = dist_info or DistInfo()
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch_device(name)
    if device.type == "cuda":
        if dist_info.enabled:
            device = torch.device("cuda", dist_info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads in torch (None: leave torch's default); returns the count in use."""
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def setup_backends(device: torch.device) -> None:
    """cuDNN autotuning and TF32 matmuls on CUDA (nothing elsewhere)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
