"""Batch-1 latency at 224 px of the PCNN ``paper`` model (plain module and ``optimize_for_inference``) against the
official model's layout (tests/official_reference.py), in interleaved rounds; ``--src`` times another checkout's
``src`` folder (e.g. an older commit extracted with ``git archive``) in the same way, to compare commits side by side.

    OMP_NUM_THREADS=1 python benchmarks/batch1_official.py --rounds 15
    git archive 8263f65 src | tar -x -C /tmp/old && python benchmarks/batch1_official.py --src /tmp/old/src
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Print the medians and the ratios to the official layout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the pcnn_fer source folder to time")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    sys.path.insert(0, str(args.src))
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from official_reference import OfficialLayoutPCNN

    import pcnn_fer
    from pcnn_fer.engine.precision import cpu_capabilities, cpu_model
    from pcnn_fer.models.fuse import optimize_for_inference
    from pcnn_fer.models.pcnn import create_model

    print(f"{pcnn_fer.__file__}; cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{cpu_capabilities()}")
    torch.manual_seed(0)
    plain = create_model("paper", num_classes=7, input_size=args.size).eval()
    optimised = optimize_for_inference(plain)
    official = OfficialLayoutPCNN(7).eval()
    x = torch.randn(1, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runs = {"official layout": lambda: official(x), "plain": lambda: plain(x), "optimised": lambda: optimised(x_cl)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()
            run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in medians.items():
        print(f"{name:<16} {t * 1000:8.1f} ms   x official {t / medians['official layout']:.2f}")


if __name__ == "__main__":
    main()
