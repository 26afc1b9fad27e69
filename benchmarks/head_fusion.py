"""Does fusing PCNN's region heads into the prediction help? FER2013Valid accuracy (majority labels) of
softmax(global) + w × softmax(summed region logits), without and with horizontal-flip averaging.

    python benchmarks/head_fusion.py [CHECKPOINT] [--root ../shared/data/ferplus]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pcnn_fer.data.datasets import load_split  # noqa: E402
from pcnn_fer.data.loader import load_tensor_data  # noqa: E402
from pcnn_fer.data.transforms import eval_transform  # noqa: E402
from pcnn_fer.engine.evaluate import load_any_model  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


def main() -> None:
    """Print one line per (flip, w)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", default="default")
    ap.add_argument("--root", default="../shared/data/ferplus")
    args = ap.parse_args()
    model = load_any_model(args.checkpoint).eval()
    size, mean, std = model.config.input_size, model.config.mean, model.config.std
    data, _ = load_tensor_data(load_split("ferplus", args.root, "valid", label_rule="majority"), size)
    probs = {}  # flip -> (global, local) softmax probabilities
    with torch.no_grad():
        for flip in (False, True):
            g, loc = [], []
            for i in range(0, len(data.labels), 256):
                x = eval_transform(data.images[i:i + 256], size, mean, std)
                out = model(x.flip(-1) if flip else x)
                g.append(torch.softmax(out[0], 1))
                loc.append(torch.softmax(out[1], 1))
            probs[flip] = (torch.cat(g), torch.cat(loc))
    print(f"{args.checkpoint}: {len(data.labels)} FER2013Valid faces")
    for flip in (False, True):
        g, loc = probs[False] if not flip else [(a + b) / 2 for a, b in zip(probs[False], probs[True], strict=True)]
        for w in WEIGHTS:
            accuracy = ((g + w * loc).argmax(1) == data.labels).float().mean().item() * 100
            print(f"flip {'on ' if flip else 'off'} w = {w:<4}: {accuracy:.2f} %")


if __name__ == "__main__":
    main()
