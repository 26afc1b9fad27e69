"""Training throughput of our PCNN vs the official model's layout (tests/official_reference.py: seven torchvision
ResNet-18s, six used, NCHW) in the same run, interleaved step by step so machine noise hits both alike.

    python benchmarks/train_speed.py --size 224 --batch-size 32 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_reference import OfficialLayoutPCNN  # noqa: E402

from pcnn_fer import TwoPhaseLoss, create_model  # noqa: E402


def main() -> None:
    """Print img/s of each variant and the ratio to the official layout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    variants = {
        "official-layout (NCHW)": (OfficialLayoutPCNN(7), False),
        "pcnn (NCHW)": (create_model("paper"), False),
        "pcnn (channels_last)": (create_model("paper").to(memory_format=torch.channels_last), True),
    }
    loss_fn = TwoPhaseLoss()
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = torch.randint(0, 7, (args.batch_size,))
    optimizers = {n: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                  for n, (m, _) in variants.items()}
    times: dict[str, list[float]] = {n: [] for n in variants}
    for step in range(args.steps + 1):
        for name, (model, channels_last) in variants.items():
            model.train()
            inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            start = time.perf_counter()
            g, local = model(inp)
            loss = loss_fn(g, local, y)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            if step:  # step 0 is warm-up
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["official-layout (NCHW)"])
    print(f"training, batch {args.batch_size}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} interleaved steps")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:<26} {args.batch_size / t:7.2f} img/s   x{base / t:5.2f} vs official layout")


if __name__ == "__main__":
    main()
