"""Tensor-resident training data: a split decoded once (via :mod:`pcnn_fer.data.cache`) into a uint8 tensor that
lives on the training device, plus seeded, shardable index batches.

There are no worker processes and no per-sample Python: an epoch is a permutation of row indices (made on the CPU
from ``(seed, epoch)`` so every DDP rank draws the same one), cut into batches that index the device tensor; the
batch is then augmented on the device by :class:`pcnn_fer.data.transforms.BatchAugment`.

A dataset is decoded once however it is cut: :meth:`TensorData.subset` takes a split derived from the decoded one (a
validation split carved from train, a cross-validation fold; every ``Split`` knows its rows in the split its reader
returned, ``Split.origin_rows``) and returns its samples, leaving out images that could not be decoded.

Portrait datasets can be decoded face-aligned (``align``, see :mod:`pcnn_fer.data.align`): each row then records
whether a face was found (``TensorData.face_found``), and subsets keep the flags so every report can count them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .align import FaceAligner, face_summary, summary_line
from .cache import DecodedSplit, decode_split
from .datasets import DatasetError, Split

__all__ = ["TensorData", "decode_size", "epoch_batches", "load_tensor_data", "sample_weights_balanced", "seed_for"]


@dataclass
class TensorData:
    """Decoded images ``(N, C, H, W)`` uint8, hard labels ``(N,)`` int64, optional soft labels ``(N, K)`` float.

    Data decoded from a split (:func:`load_tensor_data`) also knows, for each row, the sample's row in the split's
    origin (``origin_rows``, see ``Split.origin_rows``) and which origin rows could not be decoded
    (``unreadable_rows``): that is what lets :meth:`subset` take a derived split. Face-aligned data holds, per
    row, whether a face was found (``face_found``; False: the centre-square fallback), else None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    classes: tuple[str, ...]
    name: str = ""
    origin_rows: np.ndarray | None = None
    unreadable_rows: np.ndarray | None = None
    face_found: np.ndarray | None = None

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
        if self.origin_rows is not None and self.origin_rows.shape != (n,):
            raise ValueError(f"origin_rows must have shape ({n},), got {tuple(self.origin_rows.shape)}")
        if self.face_found is not None and self.face_found.shape != (n,):
            raise ValueError(f"face_found must have shape ({n},), got {tuple(self.face_found.shape)}")

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
        return replace(self, images=self.images.to(device), labels=self.labels.to(device), soft_labels=soft)

    def subset(self, rows: Split | Sequence[int] | np.ndarray | torch.Tensor, name: str | None = None) -> TensorData:
        """The samples at row indices ``rows`` (in that order), or the samples of ``rows`` given as a :class:`Split`.

        A split must derive (``Split.subset``, folds, train/validation carving) from the split this data was decoded
        from; its samples whose image could not be decoded are left out with a warning, and a sample the data never
        held is a DatasetError.
        """
        if isinstance(rows, Split):
            rows = self._rows_of_split(rows)
        idx_np = rows.cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows, dtype=np.int64)
        idx = torch.as_tensor(idx_np, dtype=torch.long, device=self.images.device)
        soft = None if self.soft_labels is None else self.soft_labels[idx]
        rows_np = idx_np.astype(np.int64).reshape(-1)
        origin = None if self.origin_rows is None else self.origin_rows[rows_np]
        found = None if self.face_found is None else self.face_found[rows_np]
        return replace(self, images=self.images[idx], labels=self.labels[idx], soft_labels=soft,
                       name=name or self.name, origin_rows=origin, face_found=found)

    def _rows_of_split(self, split: Split) -> np.ndarray:
        """Rows of this data holding the samples of ``split`` (unreadable ones left out with a warning)."""
        what = f"{split.dataset}/{split.name}"
        if self.origin_rows is None:
            raise DatasetError(f"{self.name or 'this data'} was not decoded from a split: cannot select {what} in it")
        if tuple(split.classes) != tuple(self.classes):
            raise DatasetError(f"{what} has classes {split.classes}, the decoded data {self.classes}")
        wanted = np.asarray(split.origin_rows, dtype=np.int64)
        order = np.argsort(self.origin_rows, kind="stable")
        held = self.origin_rows[order]
        pos = np.clip(np.searchsorted(held, wanted), 0, max(len(held) - 1, 0))
        found = (held[pos] == wanted) if len(held) else np.zeros(len(wanted), dtype=bool)
        if not found.all():
            missing = wanted[~found]
            unreadable = np.isin(missing, self.unreadable_rows if self.unreadable_rows is not None else [])
            if not unreadable.all():
                raise DatasetError(f"{what}: {int((~unreadable).sum())} samples are not in the decoded data "
                                   f"{self.name} (is {what} derived from the split it was decoded from?)")
            warnings.warn(f"{what}: {len(missing)} unreadable images left out", stacklevel=3)
        return order[pos[found]]

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        """Float training targets ``(B, K)`` for rows ``index``: soft labels, else one-hot hard labels.

        One-hot targets give exactly the cross-entropy of the hard labels (label smoothing included) without the
        host synchronisation that validating integer labels costs on a GPU.
        """
        if self.soft_labels is not None:
            return self.soft_labels[index]
        return torch.nn.functional.one_hot(self.labels[index], self.num_classes).float()



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
                     cache: Path | str | None = None, use_cache: bool = True, align: FaceAligner | bool | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[TensorData, np.ndarray]:
    """Decode ``split`` (through the on-disk cache) into :class:`TensorData` on ``device``.

    Returns the data and, for each row of ``split``, its row in the data (-1 for an unreadable image, which the
    cache skips with a warning). Raises DatasetError for an empty split. ``align`` (True: a default
    :class:`~pcnn_fer.data.align.FaceAligner`) decodes every image as its aligned face at ``input_size``; ``log``
    then receives the count of faces found and of centre-square fallbacks.
    """
    if len(split) == 0:
        raise DatasetError(f"{split.dataset}/{split.name} is empty: nothing to train or evaluate on")
    if split.paths is not None and len(split.missing_images()) == len(split):
        split.with_images()  # raises a clear DatasetError (e.g. RAF-DB labels without its images)
    if align:
        aligner = align if isinstance(align, FaceAligner) else FaceAligner()
        decoded = decode_split(split, size=input_size, cache=cache, use_cache=use_cache, align=aligner, log=log)
        return _tensor_data(split, decoded, device, aligner, log)
    size = decode_size(split, input_size)
    try:
        decoded = decode_split(split, size=size, cache=cache, use_cache=use_cache)
    except DatasetError as e:
        if size is not None or "different sizes" not in str(e):
            raise
        decoded = decode_split(split, size=(input_size, input_size), cache=cache, use_cache=use_cache)
    return _tensor_data(split, decoded, device)


def _tensor_data(split: Split, decoded: DecodedSplit, device: torch.device | str, aligner: FaceAligner | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[TensorData, np.ndarray]:
    """:class:`TensorData` on ``device`` from a decoded split, and each split row's row in it (-1: unreadable)."""
    where = np.full(len(split), -1, dtype=np.int64)
    where[decoded.index] = np.arange(len(decoded.index))
    soft = decoded.soft_labels.float() if decoded.soft_labels is not None else None
    origin = np.asarray(split.origin_rows, dtype=np.int64)
    data = TensorData(decoded.images.contiguous(), decoded.labels.long(), soft, tuple(split.classes),
                      f"{split.dataset}/{split.name}", origin_rows=origin[decoded.index],
                      unreadable_rows=origin[where < 0], face_found=decoded.face_found)
    if aligner is not None and log is not None:
        stems = [split.stems[i] for i in decoded.index.tolist()] if split.stems else None
        summary = face_summary([data], aligner.name, stems)
        if summary is not None:
            log(summary_line(data.name, summary))
    return data.to(device), where


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
        raise UsageError("no samples to draw batches from")
    if batch_size < world_size:
        raise UsageError(f"batch size {batch_size} is smaller than the number of processes ({world_size})")
    generator = torch.Generator().manual_seed(seed_for(seed, epoch))
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


def seed_for(*values: int) -> int:
    """A 63-bit seed from several integers (stable across runs and platforms): per-epoch / per-rank generators."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def sample_weights_balanced(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weights 1 / (count of its class): each class is drawn equally often on average."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes).double()
    return (1.0 / counts.clamp(min=1))[labels.cpu()]
