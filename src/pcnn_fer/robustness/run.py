"""The robustness benchmark: accuracy of a model on a dataset split under every corruption × strength.

Models and data are loaded by :mod:`pcnn_fer.engine.evaluate` (any checkpoint it accepts; classes matched by
canonical name). The decoded faces are brought to the model's input size once (as ``pcnn evaluate`` feeds them),
then each corruption is applied in fixed chunks of :data:`CHUNK` images with a generator seeded by
``(seed, corruption, strength, chunk)``: the same seed gives the same corrupted images whatever the batch size or
device. Writes ``OUT/robustness.json`` and ``OUT/robustness.png``.
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.loader import load_tensor_data, seed_for
from ..engine.evaluate import load_target, match_classes, metrics_of_logits
from ..engine.logs import write_json
from ..engine.loop import predict_logits
from ..errors import UsageError
from ..models.pcnn import REGIONS, count_parameters
from .corruptions import CORRUPTIONS, GROUPS, MAX_STRENGTH, expand_names
from .plot import plot_robustness

__all__ = ["CHUNK", "parse_strengths", "robustness_command", "run_benchmark", "summarise"]

#: Images corrupted per generator (fixed, so results do not depend on the batch size).
CHUNK = 256


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


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size``×``size`` as ``pcnn evaluate`` resizes them (antialiased bilinear), rounded
    back to uint8; unchanged when already that size."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def corrupted_logits(model: torch.nn.Module, images: torch.Tensor, name: str | None, strength: int, seed: int,
                     batch_size: int = 256, amp: str = "none") -> torch.Tensor:
    """Logits of ``model`` on ``images`` (uint8, any size) corrupted by ``name`` at ``strength`` (None: clean)."""
    config = model.config
    device = next(model.parameters()).device
    block = CHUNK * max(1, -(-batch_size // CHUNK))  # corrupt whole chunks, predict whole batches
    out = []
    for start in range(0, images.shape[0], block):
        parts = []
        for first in range(start, min(start + block, images.shape[0]), CHUNK):
            x = _at_size(images[first:first + CHUNK].to(device), config.input_size)
            if name is not None:
                g = torch.Generator().manual_seed(seed_for(seed, zlib.crc32(name.encode()), strength, first // CHUNK))
                x = CORRUPTIONS[name](x, strength, g, config.crop_fractions)
            parts.append(x)
        out.append(predict_logits(model, torch.cat(parts), config.input_size, config.mean, config.std,
                                  batch_size=batch_size, amp=amp, device=device))
    return torch.cat(out)


def run_benchmark(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int],
                  split_classes: tuple[str, ...], corruptions: Sequence[str], strengths: Sequence[int],
                  seed: int = 0, batch_size: int = 256, amp: str = "none", progress: bool = True) -> dict[str, Any]:
    """Clean metrics and the metrics of every corruption × strength; returns ``clean``, ``corruptions`` (name →
    group, parameter, results [{strength, value, accuracy, mean_class_accuracy}]) and ``summary``."""
    model.eval()
    num_model_classes = len(model.classes)

    def metrics(name: str | None, strength: int) -> dict[str, float]:
        logits = corrupted_logits(model, images, name, strength, seed, batch_size, amp)
        m = metrics_of_logits(logits, labels, mapping, split_classes, num_model_classes)
        return {"accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"]}

    runs = [(name, s) for name in corruptions for s in strengths]
    bar = tqdm(total=1 + len(runs), desc="robustness", unit="run", dynamic_ncols=True, disable=not progress)
    clean = metrics(None, 0)
    bar.set_postfix(clean=f"{clean['accuracy']:.1f}%")
    bar.update(1)
    results: dict[str, Any] = {}
    for name, strength in runs:
        c = CORRUPTIONS[name]
        entry = results.setdefault(name, {"group": c.group, "parameter": c.parameter, "results": []})
        value = 0.0 if strength == 0 else c.levels[strength - 1]
        entry["results"].append({"strength": strength, "value": value, **metrics(name, strength)})
        bar.set_postfix(run=f"{name}@{strength}", acc=f"{entry['results'][-1]['accuracy']:.1f}%")
        bar.update(1)
    bar.close()
    return {"clean": clean, "corruptions": results, "summary": summarise(results)}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Mean accuracy and mean-class accuracy over the strengths ≥ 1 of each group, of all corruptions and of each
    region's occlusions (None where nothing was run)."""

    def mean_of(names: list[str]) -> dict[str, float | None]:
        rows = [r for n in names for r in results[n]["results"] if r["strength"] > 0]
        return {key: (sum(r[key] for r in rows) / len(rows) if rows else None)
                for key in ("accuracy", "mean_class_accuracy")}

    summary: dict[str, Any] = {group: mean_of([n for n in results if results[n]["group"] == group])
                               for group in GROUPS}
    summary["all"] = mean_of(list(results))
    summary["regions"] = {region: mean_of([n for n in results if n.split(":")[0] == region])["accuracy"]
                          for region in REGIONS}
    return summary


def robustness_command(args: argparse.Namespace) -> int:
    """Run ``pcnn robustness`` from parsed arguments; writes OUT/robustness.json and OUT/robustness.png."""
    corruptions = expand_names(args.corruptions)
    strengths = parse_strengths(args.strengths)
    if args.max_samples is not None and args.max_samples < 1:
        raise UsageError(f"--max-samples must be at least 1, got {args.max_samples}")
    target = load_target(args)
    model = target.model
    split, mapping = match_classes(model, target.split)
    aligner = FaceAligner() if wants_alignment(target.reader, args.align_faces) else None
    data, _ = load_tensor_data(split, model.config.input_size, "cpu", args.cache_dir, not args.no_cache, aligner, print)
    if args.max_samples is not None and args.max_samples < len(data):
        g = torch.Generator().manual_seed(seed_for(args.seed, 104729, len(data)))
        data = data.subset(torch.randperm(len(data), generator=g)[: args.max_samples].sort().values)
    print(f"robustness of {args.checkpoint} ({model.config.arch}, {model.config.input_size}px) on {target.title}: "
          f"{len(data)} samples, {len(corruptions)} corruptions x strengths {', '.join(map(str, strengths))}, "
          f"seed {args.seed}")
    started = time.perf_counter()
    result = run_benchmark(model, data.images, data.labels, mapping, tuple(split.classes), corruptions, strengths,
                           seed=args.seed, batch_size=args.batch_size, amp=target.amp, progress=not args.no_progress)
    report = {"checkpoint": str(args.checkpoint), "arch": model.config.arch, "input_size": model.config.input_size,
              "params": count_parameters(model), "dataset": target.reader.name, "split": target.split_name,
              "subset": target.subset, "num_samples": len(data), "seed": args.seed, "strengths": strengths,
              "face_alignment": face_summary([data], aligner.name if aligner else None),
              **result, "seconds": round(time.perf_counter() - started, 1)}
    out = Path(args.out)
    write_json(out / "robustness.json", report)
    plot_robustness(out / "robustness.png", report, title=f"{Path(str(args.checkpoint)).name} on {target.title}")
    summary = report["summary"]
    parts = [f"{k} {summary[k]['accuracy']:.2f}%" for k in (*GROUPS, "all") if summary[k]["accuracy"] is not None]
    print(f"clean {report['clean']['accuracy']:.2f}%; mean under corruption: {', '.join(parts)} -> "
          f"{out / 'robustness.json'}")
    return 0
