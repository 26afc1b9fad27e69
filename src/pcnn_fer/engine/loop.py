"""The inner loops: one training epoch over tensor-resident data, batched prediction and confusion-matrix metrics.

Nothing here synchronises the host with the device per step: the running loss and correct counts stay on the
device and are read once per epoch (and every ``log_every`` steps for the progress bar).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..data.loader import TensorData
from ..data.transforms import BatchAugment, eval_transform, flip_batch
from ..errors import PCNNError, UsageError
from .distributed import DistInfo, all_reduce_sum
from .recipes import TTA_CHOICES

__all__ = ["AMP_DTYPES", "TrainingDiverged", "autocast", "confusion_matrix", "evaluate_data",
           "metrics_from_confusion", "predict_logits", "train_epoch"]

AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(PCNNError, RuntimeError):
    """The training loss became NaN or infinite (learning rate too high, or fp16 overflow)."""


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``amp`` (``none``/``bf16``/``fp16``); a no-op for ``none``."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(
    model: nn.Module,
    data: TensorData,
    batches: Sequence[torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    augment: BatchAugment,
    generator: torch.Generator | None = None,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
    progress: bool = True,
    description: str = "train",
    log_every: int = 25,
    after_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``batches`` (index tensors into ``data``); returns loss, accuracy (%), samples, seconds, img/s.

    ``after_step`` is called after every optimiser step (e.g. to update a weight average).

    Loss and accuracy are averaged over every rank's samples. The model must be in train mode.
    """
    dist_info = dist_info or DistInfo()
    device = data.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    bar = tqdm(total=len(batches), desc=description, unit="step", leave=False, dynamic_ncols=True,
               disable=not (progress and dist_info.is_main))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for step, index in enumerate(batches):
        images = data.images[index]
        targets = data.targets(index)
        labels = data.labels[index]
        x = augment(images, generator=generator)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            global_logits, local_logits = model(x)
        loss = loss_fn(global_logits.float(), local_logits.float(), targets)  # the loss in float32
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        batch = int(index.shape[0])
        seen += batch
        loss_sum += loss.detach().double() * batch
        correct += (global_logits.detach().argmax(1) == labels).sum()
        bar.update(1)
        if bar.disable is False and (step % log_every == 0 or step == len(batches) - 1):
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), device=device, dtype=torch.float64)])
    totals = all_reduce_sum(totals, dist_info)
    loss_total, correct_total, n = (float(v) for v in totals.tolist())
    if not math.isfinite(loss_total):
        raise TrainingDiverged(f"training diverged: the loss became {loss_total} (lower --lr or use --amp bf16/none)")
    return {"loss": loss_total / max(n, 1), "accuracy": 100.0 * correct_total / max(n, 1), "samples": int(n),
            "seconds": seconds, "images_per_second": n / seconds if seconds > 0 else float("nan")}


def _chunks(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(n, s + size))


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    tta: str | None = None,
    amp: str = "none",
    channels_last: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
    description: str = "eval",
) -> torch.Tensor:
    """Global logits ``(N, C)`` (float32, on the images' device) of uint8 ``images`` ``(N, C, H, W)``.

    Images are resized to ``input_size`` and normalised with ``mean``/``std``. ``tta='flip'`` averages the softmax
    of the image and its mirror and returns log-probabilities (argmax-compatible with logits). The model is put in
    eval mode and restored to its previous mode.
    """
    if tta not in (None, *TTA_CHOICES):
        raise UsageError(f"unknown test-time augmentation {tta!r}; choose {' or '.join(TTA_CHOICES)}")
    device = torch.device(device) if device is not None else images.device
    was_training = model.training
    model.eval()
    out = []
    try:
        for sl in tqdm(list(_chunks(images.shape[0], batch_size)), desc=description, unit="batch", leave=False,
                       disable=not progress, dynamic_ncols=True):
            x = eval_transform(images[sl].to(device, non_blocking=True), input_size, tuple(mean), tuple(std))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(x)[0].float()
                if tta == "flip":
                    flipped = model(flip_batch(x))[0].float()
                    logits = torch.log((logits.softmax(1) + flipped.softmax(1)) / 2)
            out.append(logits)
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, 0, device=device)
    return torch.cat(out)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def metrics_from_confusion(cm: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean class accuracy (over classes with samples) and per-class accuracy, all in percent.

    A class without samples has per-class accuracy ``None`` and does not count towards the mean.
    """
    cm = cm.detach().cpu().double()
    total = float(cm.sum())
    support = cm.sum(1)
    diag = cm.diagonal()
    per_class: dict[str, float | None] = {}
    for i, name in enumerate(classes):
        per_class[name] = None if support[i] == 0 else 100.0 * float(diag[i] / support[i])
    present = [v for v in per_class.values() if v is not None]
    return {
        "num_samples": int(total),
        "accuracy": 100.0 * float(diag.sum()) / total if total else float("nan"),
        "mean_class_accuracy": sum(present) / len(present) if present else float("nan"),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.long().tolist(),
    }


def evaluate_data(
    model: nn.Module,
    data: TensorData,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
    amp: str = "none",
    channels_last: bool = False,
    dist_info: DistInfo | None = None,
    tta: str | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (same classes as the model). In a DDP job every rank predicts a strided
    share and the confusion matrices are summed, so each rank returns the metrics of the whole split."""
    dist_info = dist_info or DistInfo()
    rows = torch.arange(dist_info.rank, len(data), dist_info.world_size, device=data.device)
    logits = predict_logits(model, data.images[rows], input_size, mean, std, batch_size=batch_size, tta=tta,
                            amp=amp, channels_last=channels_last)
    k = data.num_classes
    if logits.numel():
        cm = confusion_matrix(logits.argmax(1), data.labels[rows], k)
    else:
        cm = torch.zeros(k, k, dtype=torch.int64, device=data.device)
    cm = all_reduce_sum(cm.to(data.device), dist_info)
    return metrics_from_confusion(cm, data.classes)
