"""Batch-1 latency at 224 px of the PCNN ``paper`` model (plain module and ``optimize_for_inference``) against the
official model's layout (tests/official_reference.py), in interleaved rounds; ``--src`` times another checkout's
``src`` folder (e.g. an older commit extracted with ``git archive``) in the same way, to compare commits side by side.
Prints the CPU, torch's kernel capability and any instruction-set cap set in the environment: on an AVX-512 machine
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` emulates an AVX2-only CPU
(torch's, oneDNN's and MKL's kernels).

    OMP_NUM_THREADS=1 python benchmarks/batch1_official.py --rounds 15
    git archive 8263f65 src | tar -x -C /tmp/old && python benchmarks/batch1_official.py --src /tmp/old/src
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 OMP_NUM_THREADS=1 \
        python benchmarks/batch1_official.py
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
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

    caps = {name: os.environ[name] for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
            if name in os.environ}  # spelled out: an older checkout's cpu_capabilities() does not report them
    fused = "n/a (this checkout has no models/onednn.py)"
    if importlib.util.find_spec("pcnn_fer.models.onednn") is not None:
        from pcnn_fer.models.onednn import onednn_fusion_available
        fused = onednn_fusion_available()
    print(f"{pcnn_fer.__file__}; cpu: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{cpu_capabilities()}; isa caps from the environment: {caps or 'none'}; oneDNN fused convs: {fused}")
    torch.manual_seed(0)
    plain = create_model("paper", num_classes=7, input_size=args.size).eval()
    optimised = optimize_for_inference(plain)
    official = OfficialLayoutPCNN(7).eval()
    x = torch.randn(1, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runs = {"official layout": lambda: official(x), "plain": lambda: plain(x), "optimised": lambda: optimised(x_cl)}
    if "onednn" in inspect.signature(optimize_for_inference).parameters:  # this checkout fuses into oneDNN kernels
        unfused = optimize_for_inference(plain, onednn=False)
        runs["optimised, aten convs"] = lambda: unfused(x_cl)
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
        print(f"{name:<22} {t * 1000:8.1f} ms   x official {t / medians['official layout']:.2f}")


if __name__ == "__main__":
    main()
