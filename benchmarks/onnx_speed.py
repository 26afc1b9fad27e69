"""PyTorch vs onnxruntime on the same PCNN, timed side by side in one run (interleaved rounds, medians).

For each (preset, input size) – by default the compact preset at 48 (the bundled model's geometry) and the paper
preset at 224 – a random PCNN is exported with ``pcnn export`` settings (dynamic batch, inference-optimised graph)
and timed as:

* ``torch``      – the plain PCNN (eval, NCHW);
* ``torch-opt``  – what ``TorchClassifier`` runs: BN folded, paired trunks, channels_last (input conversion timed);
* ``ort``        – onnxruntime, ORT_ENABLE_ALL, sequential, the same number of intra-op threads as torch,
  spinning off (as ``pcnn serve`` uses it);
* ``ort-spin``   – the same with onnxruntime's default spinning workers.

Batch-1 latency (ms) and batch-N throughput (images/s) are reported for every thread count of ``--threads``, with
the ratio of onnxruntime's batch-1 latency to torch-opt's.

    python benchmarks/onnx_speed.py                       # compact@48 and paper@224, threads 1 and all cores
    python benchmarks/onnx_speed.py --models compact:48 --threads 1 --rounds 9 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcnn_fer.backends.onnx_export import INPUT_NAME, OUTPUT_NAMES, export_onnx, ort_session
from pcnn_fer.bench import median_times
from pcnn_fer.models.fuse import optimize_for_inference
from pcnn_fer.models.pcnn import create_model


def ort_runner(session: Any, batch: np.ndarray) -> Callable[[], object]:
    """A no-argument callable running ``session`` on ``batch``."""
    return lambda: session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})


def bench_one(preset: str, size: int, threads: list[int], batch: int, rounds: int, folder: Path) -> list[dict]:
    """Rows of results for one model, one per thread count."""
    torch.manual_seed(0)
    model = create_model(preset, num_classes=8, input_size=size).eval()
    result = export_onnx(model, folder / f"{preset}-{size}.onnx", dynamic_batch=True)
    fast = optimize_for_inference(model).eval()
    rows = []
    for n in threads:
        torch.set_num_threads(n)
        ort = ort_session(result.path, threads=n, spinning=False)
        ort_spin = ort_session(result.path, threads=n, spinning=True)
        row = {"model": f"pcnn-{preset}", "input_size": size, "threads": n, "batch": batch,
               "graph": result.graph, "parity_max_abs_diff": result.max_abs_diff}
        for b, key, repeats, r in ((1, "b1_ms", 5, rounds), (batch, "bn_img_s", 1, max(3, rounds // 2))):
            x = torch.randn(b, 3, size, size)
            xn = x.numpy()

            with torch.inference_mode():
                medians = median_times({
                    "torch": lambda x=x: model(x, return_regions=True),
                    "torch-opt": lambda x=x: fast(x.contiguous(memory_format=torch.channels_last), return_regions=True),
                    "ort": ort_runner(ort, xn),
                    "ort-spin": ort_runner(ort_spin, xn),
                }, r, repeats)
            for name, seconds in medians.items():
                row[f"{name}_{key}"] = seconds * 1e3 if b == 1 else b / seconds
        row["ort_over_torch_opt_b1"] = row["ort_b1_ms"] / row["torch-opt_b1_ms"]
        row["ort_over_torch_b1"] = row["ort_b1_ms"] / row["torch_b1_ms"]
        best_ort = min(row["ort_b1_ms"], row["ort-spin_b1_ms"])
        row["best_ort_over_best_torch_b1"] = best_ort / min(row["torch_b1_ms"], row["torch-opt_b1_ms"])
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table."""
    head = (f"{'model':<14}{'size':>5}{'thr':>4} | {'b1 ms: torch':>12}{'opt':>7}{'ort':>7}{'spin':>7}{'ort/opt':>8} | "
            f"{'img/s @N: torch':>15}{'opt':>7}{'ort':>7}{'spin':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<14}{r['input_size']:>5}{r['threads']:>4} | {r['torch_b1_ms']:>12.1f}"
                     f"{r['torch-opt_b1_ms']:>7.1f}{r['ort_b1_ms']:>7.1f}{r['ort-spin_b1_ms']:>7.1f}"
                     f"{r['ort_over_torch_opt_b1']:>8.2f} | {r['torch_bn_img_s']:>15.1f}{r['torch-opt_bn_img_s']:>7.1f}"
                     f"{r['ort_bn_img_s']:>7.1f}{r['ort-spin_bn_img_s']:>7.1f}")
    lines.append(f"(N = {rows[0]['batch']}; opt = torch inference-optimised form; spin = onnxruntime with spinning "
                 "workers; ort/opt = onnxruntime b1 latency / torch-opt b1 latency)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the benchmark and print the table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="compact:48,paper:224", help="comma-separated preset:size pairs")
    p.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts")
    p.add_argument("--batch-size", type=int, default=32, help="batch size of the throughput figure")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    threads = sorted({int(t) for t in args.threads.split(",")})
    rows = []
    with tempfile.TemporaryDirectory(prefix="pcnn-onnx-speed-") as tmp:
        for item in args.models.split(","):
            preset, _, size = item.partition(":")
            rows += bench_one(preset, int(size) if size else 48, threads, args.batch_size, args.rounds, Path(tmp))
    import onnxruntime

    meta = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "cpus": os.cpu_count(),
            "numpy": np.__version__, "loadavg": os.getloadavg()}
    if args.json:
        print(json.dumps({**meta, "results": rows}, indent=2))
    else:
        print(format_rows(rows))
        print(f"torch {meta['torch']}, onnxruntime {meta['onnxruntime']}, {meta['cpus']} CPUs, load average "
              f"{', '.join(f'{v:.1f}' for v in meta['loadavg'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
