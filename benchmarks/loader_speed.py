"""Input-pipeline throughput (decoded-tensor cache + batched augmentation) next to the training throughput of a
compact CPU preset, measured in the same run on the same data.

    python benchmarks/loader_speed.py --root ../shared/data/ferplus --model small --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pcnn_fer import TwoPhaseLoss, create_model
from pcnn_fer.data import load_split
from pcnn_fer.data.loader import epoch_batches, load_tensor_data
from pcnn_fer.data.transforms import AUGMENT_PRESETS, BatchAugment


def main() -> None:
    """Print loader img/s, training img/s and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--model", "--preset", dest="model", default="small")
    parser.add_argument("--augment", default="strong")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    start = time.perf_counter()
    split = load_split("ferplus", args.root, "train", label_rule="probability")
    data, _ = load_tensor_data(split, 48)
    print(f"decode/cache load of {len(data)} images: {time.perf_counter() - start:.1f} s")
    model = create_model(args.model, num_classes=8).train()
    augment = BatchAugment(48, model.config.mean, model.config.std, AUGMENT_PRESETS[args.augment])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = TwoPhaseLoss()
    batches = epoch_batches(len(data), args.batch_size, epoch=0)
    loader_t, train_t = [], []
    for i in range(args.steps + 1):
        index = batches[i]
        t0 = time.perf_counter()
        x = augment(data.images[index])
        y = data.soft_labels[index]
        t1 = time.perf_counter()
        g, local = model(x)
        loss = loss_fn(g, local, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if i:
            loader_t.append(t1 - t0)
            train_t.append(t2 - t1)
    loader_ips = args.batch_size / statistics.median(loader_t)
    train_ips = args.batch_size / statistics.median(train_t)
    print(f"loader (index + {args.augment} augmentation): {loader_ips:8.0f} img/s")
    print(f"training step ({args.model}, batch {args.batch_size}): {train_ips:8.1f} img/s")
    print(f"loader / training throughput: {loader_ips / train_ips:.1f}x")


if __name__ == "__main__":
    main()
