"""Does face alignment through a detector give the classifier the faces it was trained on? Accuracy of the bundled
model on FERPlus validation faces put back into a picture and cut out again by each detector's alignment.

Every ``--step``-th face of FERPlus ``FER2013Valid`` (majority labels; validation data, never a test split) is
upscaled to 90–150 px, rotated by up to ±15°, and pasted with soft edges at a random spot of a 256×256 blurred
background (the astronaut's suit or the cat). The pictures are written as an image-folder dataset (``--out``, one
folder per class) so that ``pcnn evaluate --dataset folder --root OUT --align-faces`` reads the same files. Each
detector then aligns every picture exactly as ``--align-faces`` does (:class:`pcnn_fer.data.align.FaceAligner`:
the largest face onto its template, else the centre square) and the bundled model classifies the 48×48 crops.
The first row classifies the original crops (what the model was validated on).

    OMP_NUM_THREADS=1 python benchmarks/align_accuracy.py --step 5 --out /tmp/ferplus_in_context
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from detector_choice import soft_paste  # noqa: E402

from pcnn_fer.data.align import FaceAligner  # noqa: E402
from pcnn_fer.data.datasets import load_split  # noqa: E402
from pcnn_fer.faces.detect import create_detector  # noqa: E402
from pcnn_fer.faces.recognizer import Recognizer  # noqa: E402

SHARED = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))


def build(step: int, out: Path, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, tuple]:
    """(original 48×48 faces, in-context pictures, labels, classes); the pictures are also written under ``out``."""
    import cv2

    split = load_split("ferplus", SHARED / "data" / "ferplus", "valid")
    rows = np.arange(0, len(split.labels), step)
    rng = np.random.default_rng(seed)
    astronaut = np.asarray(Image.open(SHARED / "samples" / "astronaut.png").convert("RGB"))
    chelsea = np.asarray(Image.open(SHARED / "samples" / "chelsea.png").convert("RGB"))
    backgrounds = [cv2.GaussianBlur(cv2.resize(b, (512, 512)), (0, 0), 3) for b in (astronaut[260:], chelsea)]
    faces, pictures = [], []
    for n, i in enumerate(rows):
        face = np.asarray(Image.open(split.paths[i]).convert("RGB"))
        side = int(rng.integers(90, 151))
        bg = backgrounds[n % 2]
        x0, y0 = int(rng.integers(0, 512 - 256)), int(rng.integers(0, 512 - 256))
        canvas = np.ascontiguousarray(bg[y0:y0 + 256, x0:x0 + 256])
        lo = side // 2 + 2
        cx, cy = int(rng.integers(lo, 256 - lo)), int(rng.integers(lo, 256 - lo))
        soft_paste(canvas, face, cx, cy, side, float(rng.uniform(-15, 15)))
        folder = out / split.classes[split.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).convert("L").save(folder / f"{split.stems[i]}.png")  # FERPlus is gray
        faces.append(face)
        pictures.append(np.asarray(Image.fromarray(canvas).convert("L")))
    return faces, pictures, split.labels[rows], split.classes


class YuNetBoxDlibPoints:
    """YuNet's boxes with dlib's 5-point landmarks predicted in them (dlib's template then aligns them)."""

    name = "yunet+dlib5"

    def __init__(self) -> None:
        self.yunet = create_detector("yunet")

    def detect(self, rgb: np.ndarray) -> list:
        """YuNet faces, landmarks replaced by dlib's."""
        from pcnn_fer.faces.align import convert_box
        from pcnn_fer.faces.detect import _DlibLandmarks
        from pcnn_fer.faces.detection import Detection

        return [Detection(d.box, _DlibLandmarks.predict(rgb, convert_box(d.box, "yunet", "dlib-hog")), d.score,
                          self.name) for d in self.yunet.detect(rgb)]


def main() -> None:
    """Build the set, align with each detector, classify, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=5, help="every STEP-th validation face")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ferplus_in_context"))
    parser.add_argument("--detectors", nargs="+", default=["dlib-auto", "yunet", "yunet+dlib5"],
                        help="detector names; yunet@T is YuNet at face score threshold T")
    args = parser.parse_args()
    faces, pictures, labels, classes = build(args.step, args.out)
    rec = Recognizer(detector="none", backend="torch")
    order = [classes.index(c) if c in classes else -1 for c in rec.classes]
    assert all(k >= 0 for k in order), (classes, rec.classes)

    def accuracy(crops: list[np.ndarray]) -> float:
        probs, _ = rec.classify(crops)
        predicted = np.array([order[k] for k in probs.argmax(1)])
        return float((predicted == labels).mean())

    print(f"{len(faces)} FERPlus FER2013Valid faces (every {args.step}th), pictures in {args.out}")
    print("| alignment | faces found | accuracy | s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| original 48×48 crops (no detection) | – | {accuracy(faces):.4f} | – |")
    for name in args.detectors:
        if name == "yunet+dlib5":
            aligner = FaceAligner(YuNetBoxDlibPoints())
        elif name.startswith("yunet@"):
            aligner = FaceAligner(create_detector("yunet", threshold=float(name.split("@")[1])))
        else:
            aligner = FaceAligner(name)
        t0 = time.perf_counter()
        aligned = [aligner.align(Image.fromarray(p), rec.input_size) for p in pictures]
        seconds = time.perf_counter() - t0
        crops = [np.repeat(a[..., None], 3, 2) for a, _ in aligned]
        found = sum(f for _, f in aligned)
        print(f"| {name} | {found}/{len(pictures)} | {accuracy(crops):.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
