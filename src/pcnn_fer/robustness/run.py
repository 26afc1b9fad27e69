"""The robustness benchmark: accuracy of a model on a set of faces under every corruption × strength.

The decoded faces are brought to the model's input size once (as ``pcnn evaluate`` feeds them), then each
corruption is applied in fixed chunks of :data:`CHUNK` images with a generator seeded by
``(seed, corruption, strength, chunk)``: the same seed gives the same corrupted images whatever the batch size or
device.

:func:`run_benchmark` walks the faces block by block and runs every corruption of a block before the next block
(each face is resized once, whatever the number of corruptions), on the model rewritten for inference
(:func:`inference_model`: BatchNorm folded, a PCNN's eye and cheek trunks paired, channels_last, as ``pcnn
evaluate``'s torch backend runs it). The clean pass is computed once and stands for every strength 0. The time
of the first block's clean pass gives the estimate of the whole run. :func:`corrupted_logits` is the plain
one-corruption-at-a-time path (the reference the batched one is tested against). The command that loads data and
writes the report is :mod:`.command`.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.loader import seed_for
from ..engine.evaluate import metrics_of_logits, shared_predictions
from ..engine.loop import predict_logits
from ..errors import UsageError
from ..models.pcnn import PCNN, REGIONS
from .corruptions import CORRUPTIONS, GROUPS, MAX_STRENGTH
from .options import RobustnessOptions
from .stats import mean_interval, wilson_interval

__all__ = ["CHUNK", "corrupted_logits", "describe_inference", "inference_model", "parse_strengths", "run_benchmark",
           "summarise"]

#: Images corrupted per generator (fixed, so results do not depend on the batch size).
CHUNK = 256
#: A run: (corruption name, strength ≥ 1).
Run = tuple[str, int]


def parse_strengths(values: Sequence[str] | None) -> list[int]:
    """Strengths from the command line (default 1 2 3), sorted and unique; UsageError for anything but 0…3."""
    if not values:
        return list(range(1, MAX_STRENGTH + 1))
    strengths = set()
    for text in values:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"--strengths: {text!r} is not an integer (0 = clean, 1…{MAX_STRENGTH})") from None
        if not 0 <= value <= MAX_STRENGTH:
            raise UsageError(f"--strengths: {value} is out of range (0 = clean, 1…{MAX_STRENGTH})")
        strengths.add(value)
    return sorted(strengths)


def inference_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` for fast evaluation with the same predictions (up to float rounding): a PCNN of even
    input size as :func:`~pcnn_fer.models.fuse.optimize_for_inference` rewrites it (what ``pcnn evaluate --backend
    torch`` runs: BatchNorm folded, ResNet trunks paired), any other model (baselines, odd sizes) BN-folded;
    channels_last either way."""
    from ..models.fuse import fold_batchnorm, optimize_for_inference

    if isinstance(model, PCNN) and model.config.input_size % 2 == 0:
        return optimize_for_inference(model)
    return fold_batchnorm(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)


def _pairs_trunks(model: torch.nn.Module) -> bool:
    """Whether :func:`inference_model` pairs the trunks of ``model``: even input size (equal left and right crops)
    and :func:`~pcnn_fer.models.fuse.pairs_trunks`."""
    from ..models.fuse import pairs_trunks

    return pairs_trunks(model) and model.config.input_size % 2 == 0


def describe_inference(model: torch.nn.Module, optimize: bool = True) -> str:
    """How :func:`run_benchmark` runs ``model`` (stored in robustness.json)."""
    if not optimize:
        return "torch, the model as loaded"
    return "torch, BatchNorm folded" + (", eye and cheek trunks paired" if _pairs_trunks(model) else "") + \
        ", channels_last"


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size``×``size`` as ``pcnn evaluate`` resizes them (antialiased bilinear), rounded
    back to uint8; unchanged when already that size."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _corrupt(x: torch.Tensor, name: str, strength: int, seed: int, chunk: int,
             crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Chunk number ``chunk`` (:data:`CHUNK` faces at input size) corrupted by ``name`` with its own generator."""
    g = torch.Generator().manual_seed(seed_for(seed, zlib.crc32(name.encode()), strength, chunk))
    return CORRUPTIONS[name](x, strength, g, crop_fractions)


def _block_size(batch_size: int) -> int:
    """Faces per block: whole chunks, at least one batch."""
    return CHUNK * max(1, -(-batch_size // CHUNK))


def _predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, amp: str, channels_last: bool) -> torch.Tensor:
    config = model.config
    return predict_logits(model, x, config.input_size, config.mean, config.std, batch_size=batch_size, amp=amp,
                          channels_last=channels_last, device=x.device)


def corrupted_logits(model: torch.nn.Module, images: torch.Tensor, name: str | None, strength: int, seed: int,
                     batch_size: int = RobustnessOptions.batch_size, amp: str = "none",
                     channels_last: bool = False) -> torch.Tensor:
    """Logits of ``model`` (as given: no rewrite) on ``images`` (uint8, any size) corrupted by ``name`` at
    ``strength`` (None: clean), one corruption at a time."""
    config = model.config
    device = next(model.parameters()).device
    block = _block_size(batch_size)
    out = []
    for start in range(0, images.shape[0], block):
        parts = []
        for first in range(start, min(start + block, images.shape[0]), CHUNK):
            x = _at_size(images[first:first + CHUNK].to(device), config.input_size)
            if name is not None:
                x = _corrupt(x, name, strength, seed, first // CHUNK, config.crop_fractions)
            parts.append(x)
        out.append(_predict(model, torch.cat(parts), batch_size, amp, channels_last))
    return torch.cat(out)


def _hits(logits: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int], split_classes: tuple[str, ...],
          num_model_classes: int) -> torch.Tensor:
    """Whether each face is predicted right (bool, CPU), by :func:`metrics_of_logits`' rule
    (:func:`~pcnn_fer.engine.evaluate.shared_predictions`)."""
    pred, target = shared_predictions(logits, labels, mapping, split_classes, num_model_classes)
    return (pred == target) & (target >= 0)


def run_benchmark(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int],
                  split_classes: tuple[str, ...], corruptions: Sequence[str], strengths: Sequence[int],
                  seed: int = RobustnessOptions.seed, batch_size: int = RobustnessOptions.batch_size,
                  amp: str = "none", progress: bool = True, optimize: bool = True,
                  on_estimate: Callable[[float, float], None] | None = None) -> dict[str, Any]:
    """Clean metrics and the metrics of every corruption × strength; returns ``clean``, ``corruptions`` (name →
    group, parameter, results [{strength, value, accuracy, accuracy_ci95, mean_class_accuracy}]), ``summary`` and
    ``inference`` (:func:`describe_inference`).

    ``optimize``: run :func:`inference_model` of ``model`` (False: ``model`` itself). ``on_estimate(seconds,
    images_per_second)`` is called once, after the first block's clean pass, with the estimated time of the whole
    run."""
    model.eval()
    net = inference_model(model) if optimize else model
    config = model.config
    device = next(net.parameters()).device
    runs: list[Run] = [(name, s) for name in corruptions for s in strengths if s > 0]
    total = images.shape[0]
    logits: dict[Run | None, list[torch.Tensor]] = {key: [] for key in (None, *runs)}
    bar = tqdm(total=total * (1 + len(runs)), desc="robustness", unit="img", dynamic_ncols=True,
               disable=not progress)
    block = _block_size(batch_size)
    for start in range(0, total, block):
        started = time.perf_counter()
        chunks = [(first // CHUNK, _at_size(images[first:first + CHUNK].to(device), config.input_size))
                  for first in range(start, min(start + block, total), CHUNK)]
        clean = torch.cat([x for _, x in chunks])
        logits[None].append(_predict(net, clean, batch_size, amp, optimize))
        if start == 0 and on_estimate is not None:
            rate = clean.shape[0] / max(time.perf_counter() - started, 1e-9)
            on_estimate(total * (1 + len(runs)) / rate, rate)
        bar.update(clean.shape[0])
        for name, strength in runs:
            x = torch.cat([_corrupt(c, name, strength, seed, index, config.crop_fractions) for index, c in chunks])
            logits[(name, strength)].append(_predict(net, x, batch_size, amp, optimize))
            bar.update(x.shape[0])
        bar.set_postfix(faces=f"{min(start + block, total)}/{total}")
    bar.close()

    num_model_classes = len(model.classes)
    hits: dict[Run | None, torch.Tensor] = {}

    def metrics(key: Run | None) -> dict[str, Any]:
        out = torch.cat(logits[key])
        m = metrics_of_logits(out, labels, mapping, split_classes, num_model_classes)
        hits[key] = _hits(out, labels, mapping, split_classes, num_model_classes)
        return {"accuracy": m["accuracy"], "accuracy_ci95": wilson_interval(int(hits[key].sum()), total),
                "mean_class_accuracy": m["mean_class_accuracy"]}

    clean_metrics = metrics(None)
    results: dict[str, Any] = {}
    for name in corruptions:
        c = CORRUPTIONS[name]
        entry = results.setdefault(name, {"group": c.group, "parameter": c.parameter, "results": []})
        for strength in strengths:
            value = 0.0 if strength == 0 else c.levels[strength - 1]
            if strength == 0:  # the clean images: the clean pass, not run again
                row, hits[(name, 0)] = dict(clean_metrics), hits[None]
            else:
                row = metrics((name, strength))
            entry["results"].append({"strength": strength, "value": value, **row})
    return {"clean": clean_metrics, "corruptions": results, "summary": summarise(results, hits),
            "inference": describe_inference(model, optimize)}


def summarise(results: dict[str, Any], hits: dict[Any, torch.Tensor] | None = None) -> dict[str, Any]:
    """Mean accuracy and mean-class accuracy over the strengths ≥ 1 of each group, of all corruptions and of each
    region's occlusions (None where nothing was run); with ``hits`` ((name, strength) → per-face correctness) each
    group's mean also gets its 95 % interval (``accuracy_ci95``)."""

    def mean_of(names: list[str]) -> dict[str, Any]:
        rows = [(n, r) for n in names for r in results[n]["results"] if r["strength"] > 0]
        out: dict[str, Any] = {key: (sum(r[key] for _, r in rows) / len(rows) if rows else None)
                               for key in ("accuracy", "mean_class_accuracy")}
        if hits is not None:
            out["accuracy_ci95"] = (mean_interval(torch.stack([hits[(n, r["strength"])] for n, r in rows]))
                                    if rows else None)
        return out

    summary: dict[str, Any] = {group: mean_of([n for n in results if results[n]["group"] == group])
                               for group in GROUPS}
    summary["all"] = mean_of(list(results))
    summary["regions"] = {region: mean_of([n for n in results if n.split(":")[0] == region])["accuracy"]
                          for region in REGIONS}
    return summary
