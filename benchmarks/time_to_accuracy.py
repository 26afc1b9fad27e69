"""Time to accuracy (issue 15 item 5): train a FERPlus recipe from scratch under a wall-clock budget and report when
FER2013Valid (majority labels, the selection split) first reached TARGET.

    python benchmarks/time_to_accuracy.py [--root ../shared/data/ferplus] [--out runs/tta] [--recipe ferplus-cpu]
        [--budget 60] [--amp auto] [--threads 2] [--target 86.2] [--report-only]

Prints the CPU, the command, the wall time of the whole run, the accuracy per epoch with the cumulative minutes of
epochs, and the first epoch at or above TARGET. ``--report-only`` reads an existing run folder (no training).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402


def report(out: Path, target: float, wall_s: float | None) -> None:
    """Print the per-epoch curve of run folder ``out`` and when it first reached ``target`` % accuracy."""
    rows = list(csv.DictReader((out / "history.csv").open()))
    results = json.loads((out / "results.json").read_text())
    amp = json.loads((out / "model.json").read_text())["training"].get("amp", {}).get("used", "fp32")
    minutes, first = 0.0, None
    print("| epoch | FER2013Valid % | minutes of epochs |\n| ---: | ---: | ---: |")
    for row in rows:
        minutes += float(row["time"]) / 60
        acc = float(row["val_acc"])
        if first is None and acc >= target:
            first = (int(row["epoch"]), acc, minutes)
        print(f"| {row['epoch']} | {acc:.2f} | {minutes:.1f} |")
    print(f"selected epoch {results['selected_epoch']}: {results['validation']['accuracy']:.2f} % "
          f"(mean-class {results['validation']['mean_class_accuracy']:.2f} %), {results['epochs_done']} epochs, "
          f"{results['threads']} thread(s), precision {amp}")
    if wall_s is not None:
        print(f"wall time of the whole run: {wall_s / 60:.1f} min")
    if first:
        print(f"first at or above {target:g} %: epoch {first[0]} ({first[1]:.2f} %) after {first[2]:.1f} min of epochs")
    else:
        print(f"never reached {target:g} %")


def main() -> None:
    """Train (unless --report-only), then report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/ferplus")
    ap.add_argument("--out", default="runs/tta")
    ap.add_argument("--recipe", default="ferplus-cpu")
    ap.add_argument("--budget", type=float, default=60.0, help="--time-budget in minutes")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", type=float, default=86.2)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    print("cpu:", cpu_model(), cpu_capabilities())
    wall = None
    if not args.report_only:
        cmd = ["pcnn", "train", "--dataset", "ferplus", "--root", args.root, "--recipe", args.recipe,
               "--channels-last", "--amp", args.amp, "--threads", str(args.threads), "--time-budget",
               f"{args.budget:g}", "--no-progress", "--out", args.out]
        print("$", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - start
    report(Path(args.out), args.target, wall)


if __name__ == "__main__":
    main()
