"""Face-aligned decoding (``--align-faces``): how many images have a face the detector finds, and the time per image
of the aligned decode (decode + detect + warp), without the cache. Takes a dataset (name and root, like ``pcnn
cv``) or a plain folder of images; ``--limit`` takes an evenly spaced sample.

    python benchmarks/aligned_decode.py --dataset jaffe --root DIR
    python benchmarks/aligned_decode.py --images ../shared/samples
    python benchmarks/aligned_decode.py --dataset fer2013 --root ../shared/data/fer2013 --split test --limit 300
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pcnn_fer.data.align import FaceAligner
from pcnn_fer.data.datasets import get_dataset, open_image
from pcnn_fer.data.datasets._base import list_images


def main() -> None:
    """Print faces found, fallbacks and milliseconds per image."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset")
    p.add_argument("--root")
    p.add_argument("--split", help="default: the dataset's training split")
    p.add_argument("--images", type=Path, help="a folder of images instead of a dataset")
    p.add_argument("--size", type=int, default=48, help="aligned crop size (the model's input size)")
    p.add_argument("--detector", default="auto")
    p.add_argument("--limit", type=int, help="evenly spaced sample of this many images")
    args = p.parse_args()
    if args.images is not None:
        paths = list_images(args.images)
        what = str(args.images)
    else:
        reader = get_dataset(args.dataset)
        split = reader.load(args.root, args.split or reader.train_split)
        paths = split.paths if split.paths is not None else None
        what = f"{reader.name}/{split.name}"
    aligner = FaceAligner(args.detector)
    n = len(paths) if paths is not None else len(split)
    rows = np.linspace(0, n - 1, min(n, args.limit or n)).round().astype(int).tolist()
    aligner.align(open_image(paths[rows[0]]) if paths is not None else split.native_image(rows[0]), args.size)
    times, missed = [], []
    for i in rows:  # the first image ran once before: detector and landmark models are loaded
        started = time.perf_counter()
        image = open_image(paths[i]) if paths is not None else split.native_image(i)
        _, found = aligner.align(image, args.size)
        times.append(time.perf_counter() - started)
        if not found:
            missed.append(paths[i].name if paths is not None else str(i))
    print(f"{what}: faces found in {len(rows) - len(missed)} of {len(rows)} images (detector {aligner.name}, "
          f"{args.size} px); {1000 * np.mean(times):.1f} ms per image (median {1000 * np.median(times):.1f}, "
          f"max {1000 * np.max(times):.1f})")
    if missed:
        print(f"no face ({len(missed)}): {', '.join(missed[:10])}" + (" ..." if len(missed) > 10 else ""))


if __name__ == "__main__":
    main()
