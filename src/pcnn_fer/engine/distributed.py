"""Multi-process training through ``torchrun``: process-group setup from the environment and small collectives.

``torchrun --nproc_per_node N -m pcnn_fer.cli train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
backend is NCCL on CUDA and Gloo on the CPU. Every rank holds the whole decoded split on its device and takes its
share of each epoch's seeded permutation (see :func:`pcnn_fer.data.loader.epoch_batches`); rank 0 alone logs and
writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UsageError

__all__ = ["DistInfo", "all_reduce_sum", "barrier", "broadcast_int", "cleanup", "env_rank", "env_world_size",
           "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True in a multi-process job."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that logs and writes files)."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by the torchrun environment; a single-process DistInfo otherwise.

    ``device_type`` ``cuda`` selects NCCL and binds this process to GPU ``LOCAL_RANK``; anything else uses Gloo.
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and not dist.is_initialized():
        if device_type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise UsageError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", timeout=timedelta(minutes=30),
                                    device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo", timeout=timedelta(minutes=30))
    return DistInfo(rank, world, local_rank)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (no-op for a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it (unchanged for a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_int(value: int, info: DistInfo, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (unchanged for a single process)."""
    if not info.enabled:
        return int(value)
    t = torch.tensor([int(value)], device=device, dtype=torch.int64)
    dist.broadcast(t, 0)
    return int(t.item())


def env_rank() -> int:
    """``RANK`` from the environment (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))
