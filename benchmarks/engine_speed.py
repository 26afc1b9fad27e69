"""Training throughput through the engine (``train_epoch``: batch indexing, on-device augmentation, two-phase loss,
SGD step) in fp32 NCHW, fp32 channels_last and bf16 autocast + channels_last, for the small / compact / paper
presets, plus the official model's layout at 224 in the same run. Variants are interleaved round by round so that
machine noise hits them alike; the CPU's capabilities are printed with the table.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/engine_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_reference import OfficialLayoutPCNN  # noqa: E402

from pcnn_fer import TwoPhaseLoss, create_model  # noqa: E402
from pcnn_fer.data.loader import TensorData, epoch_batches  # noqa: E402
from pcnn_fer.data.transforms import AUGMENT_PRESETS, BatchAugment  # noqa: E402
from pcnn_fer.engine.loop import train_epoch  # noqa: E402
from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402

#: (preset, input size, batch size, steps per round)
PRESETS = (("small", 48, 64, 12), ("compact", 48, 128, 6), ("paper", 224, 16, 3))
MODES = (("fp32 NCHW", "none", False), ("fp32 channels_last", "none", True), ("bf16 channels_last", "bf16", True))


def _variant(model: torch.nn.Module, size: int, batch: int, steps: int, amp: str, channels_last: bool):
    classes = model.classes if hasattr(model, "classes") else tuple(f"c{i}" for i in range(7))
    n = batch * steps
    data = TensorData(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8), torch.randint(0, 7, (n,)), None,
                      tuple(classes)[:7])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    augment = BatchAugment(size, (0.5,) * 3, (0.5,) * 3, AUGMENT_PRESETS["strong"])
    loss = TwoPhaseLoss()

    def run(epoch: int) -> float:
        stats = train_epoch(model.train(), data, epoch_batches(n, batch, epoch), loss, optimizer, None, augment,
                            torch.Generator().manual_seed(epoch), amp=amp, channels_last=channels_last,
                            progress=False)
        return stats["images_per_second"]
    return run


def main() -> None:
    """Print one table: img/s per preset and precision, and the ratio to fp32 NCHW (and to the official layout)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per variant (after one warm-up)")
    parser.add_argument("--presets", nargs="+", default=[p[0] for p in PRESETS])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"cpu: {cpu_model()}; torch {torch.__version__}; {cpu_capabilities()}")
    variants = {}
    for preset, size, batch, steps in PRESETS:
        if preset not in args.presets:
            continue
        for label, amp, cl in MODES:
            variants[(preset, label)] = _variant(create_model(preset), size, batch, steps, amp, cl)
        if preset == "paper":
            for label, amp, cl in MODES[:1] + MODES[2:]:
                variants[("official layout", label)] = _variant(OfficialLayoutPCNN(7), size, batch, steps, amp, cl)
    speeds: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    for r in range(args.rounds + 1):
        for key, run in variants.items():
            ips = run(r)
            if r:
                speeds[key].append(ips)
    print(f"\nengine training img/s, median of {args.rounds} interleaved rounds, {torch.get_num_threads()} threads")
    print("| model | input, batch | " + " | ".join(m[0] for m in MODES) + " | best / fp32 NCHW |")
    print("| --- | --- | " + " | ".join("---" for _ in MODES) + " | --- |")
    shapes = {p[0]: (p[1], p[2]) for p in PRESETS}
    shapes["official layout"] = shapes["paper"]
    for model in dict.fromkeys(k[0] for k in variants):
        cells = {label: statistics.median(speeds[(model, label)]) for label, _, _ in MODES if (model, label) in speeds}
        base = cells.get("fp32 NCHW")
        row = " | ".join(f"{cells[m[0]]:.1f}" if m[0] in cells else "-" for m in MODES)
        size, batch = shapes[model]
        print(f"| {model} | {size}, {batch} | {row} | {max(cells.values()) / base:.2f}x |")
    if ("official layout", "fp32 NCHW") in speeds:
        official = statistics.median(speeds[("official layout", "fp32 NCHW")])
        for label, _, _ in MODES:
            ours = statistics.median(speeds[("paper", label)])
            print(f"paper preset {label}: {ours / official:.2f}x the official layout in fp32 NCHW")


if __name__ == "__main__":
    main()
