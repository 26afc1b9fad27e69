"""Accuracy of every model and of every combination of them (the mean of their probabilities) on one split.

    python benchmarks/ensemble_accuracy.py --dataset fer2013 --root ../shared/data/fer2013 --split public_test \\
        runs/fer2013-v3b runs/fer2013-compact [MORE ...] [--tta none flip] [--threads 1]

Answers "would shipping several models as one ensemble reach the target?" before anything is built for it. Each
model brings its own input size (the faces are loaded once per size), normalisation and classes; the models must
share their classes, in the same order, and the dataset must have the same classes (e.g. the FER2013 models on
FER2013). fp32, the torch backend. Prints the CPU, each model's accuracy, then each combination's, for every
test-time augmentation asked for.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from pcnn_fer.data.datasets import get_dataset  # noqa: E402
from pcnn_fer.data.loader import load_tensor_data  # noqa: E402
from pcnn_fer.engine.cv import ensemble_probabilities  # noqa: E402
from pcnn_fer.engine.evaluate import load_any_model, match_classes  # noqa: E402
from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402


def main() -> int:
    """Parse the command line and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="run directories, .safetensors files or bundled model names")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", required=True)
    parser.add_argument("--tta", nargs="+", choices=("none", "flip"), default=["none", "flip"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu: {cpu_model()} {cpu_capabilities()}; torch {torch.__version__}, {args.threads} thread(s), fp32")
    models = {name: load_any_model(name) for name in args.models}
    first = next(iter(models.values()))
    if any(tuple(m.classes) != tuple(first.classes) for m in models.values()):
        sys.exit("ensemble_accuracy: the models' classes differ; " + "; ".join(
            f"{n}: {', '.join(m.classes)}" for n, m in models.items()))
    split, mapping = match_classes(first, get_dataset(args.dataset).load(args.root, args.split, None))
    if any(k != v for k, v in mapping.items()) or len(mapping) != len(first.classes):
        sys.exit(f"ensemble_accuracy: {args.dataset} classes {', '.join(split.classes)} are not the models' "
                 f"{', '.join(first.classes)} in the same order")
    # the same faces in the same order at each model's own input size
    data_at = {size: load_tensor_data(split, size, "cpu", None, True, None, None)[0]
               for size in sorted({m.config.input_size for m in models.values()})}
    data = next(iter(data_at.values()))
    print(f"{args.dataset}/{args.split}: {len(data)} faces at {', '.join(f'{s} px' for s in data_at)}")
    probs = {}
    for name, model in models.items():
        for tta in args.tta:
            start = time.perf_counter()
            probs[name, tta] = ensemble_probabilities([model], data_at[model.config.input_size], tta=tta)
            print(f"  predicted {name} (tta {tta}) in {time.perf_counter() - start:.1f}s")
    for size in range(1, len(models) + 1):
        for combo in itertools.combinations(models, size):
            for tta in args.tta:
                mean = sum(probs[name, tta] for name in combo) / size
                accuracy = 100 * (mean.argmax(1) == data.labels).double().mean().item()
                print(f"{accuracy:6.2f}%  tta {tta:<4}  {' + '.join(combo)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
