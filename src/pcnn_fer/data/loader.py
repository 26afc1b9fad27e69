"""Tensor-resident training data: a split decoded once (via :mod:`pcnn_fer.data.cache`) into a uint8 tensor that
lives on the training device, plus seeded, shardable index batches.

There are no worker processes and no per-sample Python: an epoch is a permutation of row indices (made on the CPU
from ``(seed, epoch)`` so every DDP rank draws the same one), cut into batches that index the device tensor; the
batch is then augmented on the device by :class:`pcnn_fer.data.transforms.BatchAugment`.

Derived splits (a validation split carved from train, cross-validation folds) index the decoded tensor of their
parent through the ``_row`` column that :func:`tag_rows` adds to ``Split.extras`` (``Split.subset`` keeps extras
aligned), so a dataset is decoded once however it is cut.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import decode_split
from .datasets import DatasetError, Split

__all__ = ["ROW_KEY", "TensorData", "decode_size", "epoch_batches", "load_tensor_data", "rows_of",
           "sample_weights_balanced", "seed_for", "subset_rows", "tag_rows"]

#: ``Split.extras`` key holding each sample's row in the split it was derived from.
ROW_KEY = "_row"


@dataclass
class TensorData:
    """Decoded images ``(N, C, H, W)`` uint8, hard labels ``(N,)`` int64, optional soft labels ``(N, K)`` float."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    classes: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        n = self.images.shape[0]
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
        if self.soft_labels is not None and self.soft_labels.shape != (n, len(self.classes)):
            raise ValueError(f"soft labels must have shape {(n, len(self.classes))}, got "
                             f"{tuple(self.soft_labels.shape)}")

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        """Device holding the images."""
        return self.images.device

    def to(self, device: torch.device | str) -> TensorData:
        """A copy on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        soft = None if self.soft_labels is None else self.soft_labels.to(device)
        return TensorData(self.images.to(device), self.labels.to(device), soft, self.classes, self.name)

    def subset(self, rows: Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None) -> TensorData:
        """The samples at ``rows`` (in that order)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64) if not isinstance(rows, torch.Tensor) else rows,
                              dtype=torch.long, device=self.images.device)
        soft = None if self.soft_labels is None else self.soft_labels[idx]
        return TensorData(self.images[idx], self.labels[idx], soft, self.classes, name or self.name)

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """Float training targets ``(B, K)`` for rows ``index``: soft labels, else one-hot hard labels.

        One-hot targets give exactly the cross-entropy of the hard labels (label smoothing included) without the
        host synchronisation that validating integer labels costs on a GPU.
        """
        if self.soft_labels is not None:
            return self.soft_labels[index]
        return torch.nn.functional.one_hot(self.labels[index], self.num_classes).float()

    def class_counts(self) -> torch.Tensor:
        """Samples per class (CPU int64 tensor)."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes)


def tag_rows(split: Split) -> Split:
    """``split`` with ``extras['_row'] = arange(N)`` so subsets remember their rows in it (modified in place)."""
    split.extras[ROW_KEY] = np.arange(len(split), dtype=np.int64)
    return split


def rows_of(split: Split) -> np.ndarray:
    """Rows of ``split``'s samples in the split :func:`tag_rows` was applied to."""
    if ROW_KEY not in split.extras:
        raise ValueError(f"{split.dataset}/{split.name} was not derived from a split tagged with tag_rows")
    return np.asarray(split.extras[ROW_KEY], dtype=np.int64)


def decode_size(split: Split, input_size: int) -> tuple[int, int] | None:
    """The size to decode ``split`` at: native (None) when its first image is no larger than ``input_size``
    (augmentation resamples on the device), else ``input_size`` square (large sources such as JAFFE)."""
    if len(split) == 0:
        raise DatasetError(f"{split.dataset}/{split.name} is empty")
    try:
        width, height = split.native_image(0).size
    except DatasetError:
        return (input_size, input_size)
    if max(width, height) <= input_size:
        return None
    return (input_size, input_size)


def load_tensor_data(split: Split, input_size: int, device: torch.device | str = "cpu",
                     cache: Path | str | None = None, use_cache: bool = True) -> tuple[TensorData, np.ndarray]:
    """Decode ``split`` (through the on-disk cache) into :class:`TensorData` on ``device``.

    Returns the data and, for each row of ``split``, its row in the data (-1 for an unreadable image, which the
    cache skips with a warning). Raises DatasetError for an empty split.
    """
    if len(split) == 0:
        raise DatasetError(f"{split.dataset}/{split.name} is empty: nothing to train or evaluate on")
    if split.paths is not None and len(split.missing_images()) == len(split):
        split.with_images()  # raises a clear DatasetError (e.g. RAF-DB labels without its images)
    size = decode_size(split, input_size)
    try:
        decoded = decode_split(split, size=size, cache=cache, use_cache=use_cache)
    except DatasetError as e:
        if size is not None or "different sizes" not in str(e):
            raise
        decoded = decode_split(split, size=(input_size, input_size), cache=cache, use_cache=use_cache)
    where = np.full(len(split), -1, dtype=np.int64)
    where[decoded.index] = np.arange(len(decoded.index))
    soft = decoded.soft_labels.float() if decoded.soft_labels is not None else None
    data = TensorData(decoded.images.contiguous(), decoded.labels.long(), soft, tuple(split.classes),
                      f"{split.dataset}/{split.name}")
    return data.to(device), where


def subset_rows(where: np.ndarray, rows: np.ndarray, what: str = "split") -> np.ndarray:
    """Map rows of a parent split to rows of its decoded data, dropping (with a warning) unreadable images."""
    mapped = where[rows]
    if (mapped < 0).any():
        warnings.warn(f"{what}: {int((mapped < 0).sum())} unreadable images left out", stacklevel=2)
        mapped = mapped[mapped >= 0]
    return mapped


def epoch_batches(num_samples: int, batch_size: int, epoch: int, seed: int = 0, shuffle: bool = True,
                  rank: int = 0, world_size: int = 1, drop_last: bool = True,
                  sample_weights: torch.Tensor | None = None,
                  device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Index batches of one epoch for one rank, identical on every call with the same arguments.

    ``batch_size`` is the global batch: each of the ``world_size`` ranks gets ``batch_size // world_size`` rows per
    step. The epoch's order is a permutation (or, with ``sample_weights``, a weighted draw with replacement of
    ``num_samples`` rows: class-balanced sampling) seeded by ``(seed, epoch)``; it is padded by wrapping around to a
    multiple of ``world_size`` and dealt round-robin like ``DistributedSampler``, so every rank runs the same number
    of steps. ``drop_last`` drops a final partial batch unless it would be the only one.
    """
    if num_samples <= 0:
        raise ValueError("no samples to draw batches from")
    if batch_size < world_size:
        raise ValueError(f"batch size {batch_size} is smaller than the number of processes ({world_size})")
    generator = torch.Generator().manual_seed(_mix(seed, epoch))
    if sample_weights is not None:
        order = torch.multinomial(sample_weights.double().cpu(), num_samples, replacement=True, generator=generator)
    elif shuffle:
        order = torch.randperm(num_samples, generator=generator)
    else:
        order = torch.arange(num_samples)
    per_rank = math.ceil(len(order) / world_size)
    pad = per_rank * world_size - len(order)
    if pad:
        order = torch.cat([order, order[:pad]])
    mine = order[rank::world_size].to(device)
    local = batch_size // world_size
    full = len(mine) // local
    sizes = [local] * full
    rest = len(mine) - full * local
    if rest and (not drop_last or full == 0):
        sizes.append(rest)
    return list(torch.split(mine[: sum(sizes)], sizes))


def _mix(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def sample_weights_balanced(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): each class is drawn equally often on average."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    return (1.0 / counts.clamp(min=1))[labels.cpu()]


def seed_for(*values: int) -> int:
    """Public alias of the seed mixer used for per-epoch / per-rank generators."""
    return _mix(*values)
