"""``pcnn robustness`` from parsed arguments: load the model and the faces (:mod:`pcnn_fer.engine.evaluate`, any
checkpoint it accepts; classes matched by canonical name), draw the seeded face subset (:mod:`.stats`), print the
estimated time, run the benchmark (:mod:`.run`), print every accuracy with its 95 % confidence interval and write
``OUT/robustness.json`` and ``OUT/robustness.png``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.loader import load_tensor_data
from ..engine.evaluate import load_target, match_classes
from ..engine.logs import write_json
from ..models.pcnn import count_parameters
from ..typed_fields import flag_values
from .corruptions import GROUPS, expand_names
from .options import RobustnessOptions
from .plot import plot_robustness
from .run import parse_strengths, run_benchmark
from .stats import subset_rows

__all__ = ["accuracy_table", "format_accuracy", "robustness_command"]

#: What the intervals in the report are (stored in robustness.json).
CONFIDENCE = ("95% intervals over the sampling of faces: Wilson score interval of each accuracy; normal "
              "approximation over per-face means for the summary means")


def format_accuracy(accuracy: float | None, interval: list[float] | None) -> str:
    """``88.25% [86.51, 89.80]``: an accuracy and its 95 % interval (``-`` when nothing was run)."""
    if accuracy is None:
        return "-"
    return f"{accuracy:.2f}%" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def accuracy_table(report: dict[str, Any]) -> list[str]:
    """Lines of a table of every accuracy of a report with its 95 % interval: clean, then one row per corruption
    and one column per strength."""
    strengths = report["strengths"]
    width = 27
    lines = [f"accuracy with 95% confidence interval on {report['num_samples']} faces:",
             f"{'clean':<18} {format_accuracy(report['clean']['accuracy'], report['clean']['accuracy_ci95'])}",
             f"{'strength':<18} " + "".join(f"{s:<{width}}" for s in strengths).rstrip()]
    for name, entry in report["corruptions"].items():
        cells = {r["strength"]: format_accuracy(r["accuracy"], r.get("accuracy_ci95")) for r in entry["results"]}
        lines.append(f"{name:<18} " + "".join(f"{cells.get(s, '-'):<{width}}" for s in strengths).rstrip())
    return lines


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def robustness_command(args: argparse.Namespace) -> int:
    """Run ``pcnn robustness`` from parsed arguments; writes OUT/robustness.json and OUT/robustness.png."""
    options = RobustnessOptions(**flag_values(args, RobustnessOptions))
    corruptions = expand_names(args.corruptions)
    strengths = parse_strengths(args.strengths)
    target = load_target(args)
    model = target.model
    split, mapping = match_classes(model, target.split)
    aligner = FaceAligner() if wants_alignment(target.reader, args.align_faces) else None
    data, _ = load_tensor_data(split, model.config.input_size, "cpu", args.cache_dir, not args.no_cache, aligner, print)
    split_samples = len(data)
    rows = subset_rows(split_samples, options.max_samples, options.seed)
    if rows is not None:
        data = data.subset(rows)
        sampling = f"uniform seeded subset of {len(data)} of {split_samples} faces (seed {options.seed})"
    else:
        sampling = f"the full split ({split_samples} faces)"
    passes = 1 + len(corruptions) * sum(s > 0 for s in strengths)
    print(f"robustness of {args.checkpoint} ({model.config.arch}, {model.config.input_size}px) on {target.title}: "
          f"{len(data)} samples, {len(corruptions)} corruptions x strengths {', '.join(map(str, strengths))}, "
          f"seed {options.seed}")
    print(f"faces: {sampling}" + ("; --max-samples 0 runs the full split" if rows is not None else ""))
    estimate: dict[str, float] = {}

    def on_estimate(seconds: float, rate: float) -> None:
        estimate.update(estimated_seconds=round(seconds, 1), images_per_second=round(rate, 1))
        print(f"estimated time: {_minutes(seconds)} ({len(data)} faces x {passes} passes = {len(data) * passes} "
              f"images at {rate:.0f} img/s, measured on the first faces' clean pass)", flush=True)

    started = time.perf_counter()
    result = run_benchmark(model, data.images, data.labels, mapping, tuple(split.classes), corruptions, strengths,
                           seed=options.seed, batch_size=options.batch_size, amp=target.amp,
                           progress=not args.no_progress, on_estimate=on_estimate)
    seconds = time.perf_counter() - started
    report = {"checkpoint": str(args.checkpoint), "arch": model.config.arch, "input_size": model.config.input_size,
              "params": count_parameters(model), "dataset": target.reader.name, "split": target.split_name,
              "subset": target.subset, "num_samples": len(data), "seed": options.seed, "strengths": strengths,
              "face_alignment": face_summary([data], aligner.name if aligner else None),
              "split_samples": split_samples, "max_samples": options.max_samples, "sampling": sampling,
              "confidence": CONFIDENCE, "batch_size": options.batch_size,
              **result, **estimate, "seconds": round(seconds, 1)}
    out = Path(args.out)
    write_json(out / "robustness.json", report)
    plot_robustness(out / "robustness.png", report, title=f"{Path(str(args.checkpoint)).name} on {target.title}")
    print("\n".join(accuracy_table(report)))
    summary = report["summary"]
    parts = [f"{k} {format_accuracy(summary[k]['accuracy'], summary[k].get('accuracy_ci95'))}"
             for k in (*GROUPS, "all") if summary[k]["accuracy"] is not None]
    print(f"clean {format_accuracy(report['clean']['accuracy'], report['clean']['accuracy_ci95'])}; mean under "
          f"corruption: {', '.join(parts)} ({_minutes(seconds)}) -> {out / 'robustness.json'}")
    return 0
