"""End-to-end speed of ``pcnn predict`` per face on this machine, by stage: decode + detect + align + classify.

Rows, all in the same run on the same images:

* ``before`` – the pipeline as it was: colour dlib HOG at threshold 0.2, PyTorch backend (optimised PCNN);
* ``after`` – today's defaults: the ``auto`` detector (HOG on luminance, threshold 0.25) and the ``auto`` backend
  (onnxruntime when installed);
* ``ResNet-18`` – a plain torchvision ResNet-18 at 224×224 behind today's decoding, detection and alignment.

The PCNN is the bundled default model when present, else a freshly built ``compact`` PCNN of the same architecture
(8 classes, 48×48, lowres stem; the speed does not depend on the weights).

    python benchmarks/predict_speed.py         # astronaut sample (1 face) and its upper half tiled 2×2 (4 faces)
    python benchmarks/predict_speed.py --threads 1 2 --repeats 30

Times are medians over ``--repeats`` runs after ``--warmup`` runs, in milliseconds; "per face" divides the image
time by the faces found (the faces of one image are classified in one batch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from detect_speed import cpu_capabilities  # noqa: E402

from pcnn_fer.backends.dispatch import create_backend, describe_backend  # noqa: E402
from pcnn_fer.backends.torch_backend import TorchClassifier  # noqa: E402
from pcnn_fer.faces.align import align_face  # noqa: E402
from pcnn_fer.faces.detect import DlibHOGDetector, create_detector  # noqa: E402
from pcnn_fer.faces.imageio import load_image, save_image  # noqa: E402
from pcnn_fer.faces.recognizer import Recognizer  # noqa: E402
from pcnn_fer.models.pcnn import REGIONS, PCNNConfig, count_parameters, create_model  # noqa: E402
from pcnn_fer.weights import DEFAULT_MODEL, load_model  # noqa: E402


class ResNet18Classifier:
    """Backend: torchvision ResNet-18 (random weights, 8 classes) on 224×224 RGB crops, ImageNet normalisation.
    It has no regions, so it reports uniform region probabilities."""

    name = "resnet18"

    def __init__(self, device: str = "cpu") -> None:
        import torch
        import torchvision

        self.device = torch.device(device)
        self.model = torchvision.models.resnet18(num_classes=8).to(self.device).eval()
        self.config = PCNNConfig(num_classes=8, input_size=224)

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of a normalised NCHW batch (+ uniform region probabilities)."""
        import torch

        with torch.inference_mode():
            probs = torch.softmax(self.model(torch.from_numpy(batch).to(self.device)), 1).cpu().numpy()
        return probs, np.full((len(batch), len(REGIONS), 8), 1 / 8, np.float32)


def time_pipelines(recs: dict[str, Recognizer], path: Path, repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median stage times (ms) for one image file per pipeline, and the number of faces; the pipelines run in
    interleaved rounds, so that machine noise hits them alike."""
    stages = {name: {"decode": [], "detect": [], "align": [], "classify": []} for name in recs}
    faces = dict.fromkeys(recs, 0)
    for i in range(warmup + repeats):
        for name, rec in recs.items():
            t0 = time.perf_counter()
            rgb = load_image(path)
            t1 = time.perf_counter()
            detections = rec.detect(rgb)
            t2 = time.perf_counter()
            crops = [align_face(rgb, d, rec.input_size).image for d in detections]
            t3 = time.perf_counter()
            rec.classify(crops)
            t4 = time.perf_counter()
            faces[name] = len(detections)
            if i >= warmup:
                for key, dt in zip(stages[name], (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    stages[name][key].append(dt * 1000)
    out = {}
    for name in recs:
        out[name] = {k: statistics.median(v) for k, v in stages[name].items()}
        out[name]["total"] = sum(out[name].values())
        out[name]["faces"] = faces[name]
    return out


def main() -> None:
    """Run the comparison and print a table."""
    import torch

    shared = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="PCNN model (default: bundled model, else fresh compact)")
    parser.add_argument("--image", type=Path, default=shared / "samples" / "astronaut.png")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="torch CPU thread counts to try (e.g. 1 2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if not args.image.is_file():
        raise SystemExit(f"{args.image} not found (set PCNN_FER_SHARED or pass --image)")

    if args.checkpoint:
        pcnn, which = load_model(args.checkpoint), f"checkpoint {args.checkpoint}"
    elif DEFAULT_MODEL.exists():
        pcnn, which = load_model("default"), f"bundled default model ({DEFAULT_MODEL.name})"
    else:
        torch.manual_seed(0)
        pcnn = create_model("compact", num_classes=8).eval()
        which = "fresh compact PCNN (random weights; the bundled default model is not built yet)"
    detector = create_detector("auto")
    before_rec = Recognizer(backend=TorchClassifier(pcnn, args.device),
                            detector=DlibHOGDetector(gray=False, threshold=0.2))
    after_backend = create_backend("auto", pcnn, args.device)
    after_rec = Recognizer(backend=after_backend, detector=detector)
    resnet = ResNet18Classifier(args.device)
    resnet_rec = Recognizer(backend=resnet, detector=detector, color="rgb")

    with tempfile.TemporaryDirectory() as tmp:
        one = args.image
        rgb = load_image(one)
        tiled = Path(tmp) / f"tiled{one.suffix}"
        top = rgb[: rgb.shape[0] // 2]  # the upper half of the sample holds the face and nothing face-like
        save_image(tiled, np.concatenate([np.concatenate([top, top], 1)] * 2, 0))
        images = [(f"{one.name}", one), ("4 faces (2x2)", tiled)]
        print(cpu_capabilities())
        print(f"PCNN: {which}, {count_parameters(pcnn) / 1e6:.2f} M parameters, {pcnn.config.input_size}px "
              f"{'gray' if after_rec.gray else 'rgb'}; after: backend {describe_backend(after_backend)}, "
              f"detector {type(detector).__name__}; ResNet-18: {count_parameters(resnet.model) / 1e6:.2f} M "
              f"parameters, 224px rgb")
        header = (f"{'pipeline':<11} {'threads':>7} {'image':<16} {'faces':>5} {'decode':>7} {'detect':>7} "
                  f"{'align':>7} {'classify':>8} {'total':>7} {'ms/face':>8} {'faces/s':>7}")
        print(header)
        print("-" * len(header))
        for threads in args.threads:
            torch.set_num_threads(threads)
            after_rec.backend = create_backend("auto", pcnn, args.device, threads=threads)
            for label, path in images:
                recs = {"before": before_rec, "after": after_rec, "ResNet-18": resnet_rec}
                for name, r in time_pipelines(recs, path, args.repeats, args.warmup).items():
                    per_face = r["total"] / max(1, r["faces"])
                    print(f"{name:<11} {threads:>7} {label:<16} {r['faces']:>5} {r['decode']:>7.1f} "
                          f"{r['detect']:>7.1f} {r['align']:>7.2f} {r['classify']:>8.1f} {r['total']:>7.1f} "
                          f"{per_face:>8.1f} {1000 / per_face:>7.1f}")
        print("times in ms (medians); decode = PNG/JPEG decoding, detect = face detection + 5 landmarks; before = "
              "colour HOG (threshold 0.2) + torch backend (optimize_for_inference), after = the auto detector + the "
              "auto backend")


if __name__ == "__main__":
    main()
