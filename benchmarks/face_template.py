"""Measure the face-alignment template of pcnn_fer.faces.align on FER2013 faces.

Every sampled 48×48 FER2013 face (FERPlus folder layout) is upscaled to 192×192 with bicubic interpolation, padded
by a quarter of its size on every side (edge pixels repeated, so faces that fill the crop are still detected), and
run through the same dlib HOG detector + 5-point landmark model used at inference time (upsample 0, threshold 0,
best-scoring box). Landmark positions are divided by 192 (padding removed) and averaged: that mean is
``TEMPLATE_5PT``. On the same faces the mean dlib and Haar boxes are measured (``BOX_TEMPLATES``) and, with
``--mouth``, the mean mouth centre from dlib's 68-point model (reference only; that model is not used at run time).

    python benchmarks/face_template.py --count 600 --mouth --preview /tmp/aligned.png

Prints the constants to paste into src/pcnn_fer/faces/align.py. ``--preview`` writes a PNG: the mean FER2013 face
with the template, and the sample astronaut photo aligned onto the template, each with PCNN's five crop boxes.
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

from pcnn_fer.faces.detect import DlibHOGDetector, HaarDetector, _model_file  # noqa: E402
from pcnn_fer.faces.yunet import YuNetDetector  # noqa: E402


def shared_dir() -> Path:
    """The shared data folder (env PCNN_FER_SHARED overrides ../shared)."""
    return Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))


def sample_files(folder: Path, count: int) -> list[Path]:
    """``count`` files spread evenly over the sorted folder listing (deterministic)."""
    files = sorted(folder.glob("fer*.png"))
    if not files:
        raise SystemExit(f"no fer*.png files in {folder}")
    idx = np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)
    return [files[i] for i in idx]


def measure(files: list[Path], size: int, pad_fraction: float, mouth: bool) -> dict:
    """Landmarks, boxes and (optionally) mouth centres of every face the detector finds, in unit coordinates."""
    import dlib

    hog = DlibHOGDetector(upsample=0, threshold=0.0)
    haar = HaarDetector(landmarks=False)
    yunet = YuNetDetector(threshold=0.3)
    predictor68 = dlib.shape_predictor(_model_file("shape_predictor_68_face_landmarks.dat")) if mouth else None
    pad = round(size * pad_fraction)
    out: dict[str, list] = {"landmarks": [], "hog_box": [], "haar_box": [], "pair_hog": [], "pair_haar": [],
                            "mouth": [], "faces": [], "pair_dlib_marks": [], "yunet_marks": [], "yunet_box": [],
                            "pair_images": [], "yunet_all": 0}
    for f in files:
        gray = Image.open(f).convert("L").resize((size, size), Image.BICUBIC)
        arr = np.pad(np.asarray(gray), pad, mode="edge")
        rgb = np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
        found = hog.detect(rgb)
        hf = haar.detect(rgb)
        haar_box = None
        if hf:
            haar_box = (max(hf, key=lambda d: d.width).box - pad) / size
            out["haar_box"].append(haar_box)
        yf = yunet.detect(rgb)
        out["yunet_all"] += bool(yf)
        if not found:
            continue
        best = max(found, key=lambda d: d.score)
        if yf:
            yb = max(yf, key=lambda d: d.score)
            out["pair_dlib_marks"].append((best.landmarks - pad) / size)
            out["yunet_marks"].append((yb.landmarks - pad) / size)
            out["yunet_box"].append((yb.box - pad) / size)
            out["pair_images"].append(rgb[pad:pad + size, pad:pad + size])
        out["faces"].append(f)
        out["landmarks"].append((best.landmarks - pad) / size)
        out["hog_box"].append((best.box - pad) / size)
        if haar_box is not None:
            out["pair_hog"].append((best.box - pad) / size)
            out["pair_haar"].append(haar_box)
        if predictor68 is not None:
            x1, y1, x2, y2 = (int(v) for v in best.box)
            shape = predictor68(rgb, dlib.rectangle(x1, y1, x2, y2))
            pts = np.array([(p.x, p.y) for p in shape.parts()], float)[48:68]
            out["mouth"].append((pts.mean(0) - pad) / size)
    return {k: (np.array(v) if k not in ("faces", "yunet_all") else v) for k, v in out.items()}


def crop_agreement(m: dict, template_yunet: np.ndarray, crop: int = 48) -> dict:
    """How the YuNet-aligned crop of each face (its points onto ``template_yunet``) compares with the dlib-aligned
    crop of the same face (dlib's points onto ``TEMPLATE_5PT``): where dlib's five points land in the YuNet crop
    (RMS distance to ``TEMPLATE_5PT``, fraction of the crop side) next to where they land in the dlib crop (the
    residual of dlib's own fit), and the mean absolute pixel difference of the two ``crop``-px crops (0-255)."""
    from pcnn_fer.faces.align import TEMPLATE_5PT, apply_affine, similarity_transform, warp

    rms_yunet, rms_dlib, pixels = [], [], []
    for dlib_marks, yunet_marks, image in zip(m["pair_dlib_marks"], m["yunet_marks"], m["pair_images"], strict=True):
        unit = image.shape[0]
        to_dlib = similarity_transform(dlib_marks * unit, TEMPLATE_5PT * crop)
        to_yunet = similarity_transform(yunet_marks * unit, template_yunet * crop)
        for matrix, out in ((to_yunet, rms_yunet), (to_dlib, rms_dlib)):
            moved = apply_affine(matrix, dlib_marks * unit) / crop
            out.append(float(np.sqrt(((moved - TEMPLATE_5PT) ** 2).sum(1).mean())))
        a = warp(image, to_dlib, crop).astype(float)
        b = warp(image, to_yunet, crop).astype(float)
        pixels.append(float(np.abs(a - b).mean()))
    return {"faces": len(pixels), "rms_dlib_points_in_yunet_crop": float(np.median(rms_yunet)),
            "rms_dlib_points_in_dlib_crop": float(np.median(rms_dlib)), "mean_abs_pixel_diff": float(np.median(pixels))}


def fmt(a: np.ndarray) -> str:
    """Numbers rounded to 3 decimals, as a Python list literal."""
    return str(np.round(np.asarray(a, float), 3).tolist())


def preview(path: Path, files: list[Path], template: np.ndarray, sample: Path) -> None:
    """Write a PNG: mean FER face + template | aligned sample photo + template + landmarks, with the crop boxes."""
    import cv2

    from pcnn_fer.faces.align import TEMPLATE_5PT, align_face, apply_affine
    from pcnn_fer.models.pcnn import FaceRegions, preset_config

    regions = FaceRegions(preset_config("compact").crop_fractions)
    view = 384
    mean_face = np.mean([np.asarray(Image.open(f).convert("L"), float) for f in files], 0).astype(np.uint8)
    panels = [cv2.resize(np.repeat(mean_face[..., None], 3, 2), (view, view), interpolation=cv2.INTER_CUBIC)]
    points = [template * view]
    if sample.is_file():
        rgb = np.asarray(Image.open(sample).convert("RGB"))
        faces = DlibHOGDetector().detect(rgb)
        if faces:
            aligned = align_face(rgb, faces[0], 48)
            small = cv2.resize(aligned.image, (view, view), interpolation=cv2.INTER_NEAREST)
            big = align_face(rgb, faces[0], view).image
            panels += [big, small]
            marks = apply_affine(aligned.matrix, faces[0].landmarks) * view / 48
            points += [marks, marks]
    canvas = []
    for panel, pts in zip(panels, points, strict=True):
        panel = np.ascontiguousarray(panel.copy())
        for name, (t, b, left, right) in regions.boxes(view, view).items():
            cv2.rectangle(panel, (left + 1, t + 1), (right - 2, b - 2), (255, 215, 0), 2)
            cv2.putText(panel, name, (left + 6, t + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 215, 0), 1, cv2.LINE_AA)
        for x, y in TEMPLATE_5PT * view:
            cv2.drawMarker(panel, (int(x), int(y)), (0, 255, 0), cv2.MARKER_CROSS, 12, 2)
        for x, y in pts:
            cv2.circle(panel, (int(x), int(y)), 4, (255, 0, 0), -1)
        canvas.append(panel)
    Image.fromarray(np.concatenate(canvas, 1)).save(path)
    print(f"preview written to {path} (yellow: PCNN crops, green: template, red: this face's landmarks)")


def main() -> None:
    """Run the measurement and print the constants."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "ferplus" / "FER2013Train")
    parser.add_argument("--count", type=int, default=600, help="faces to sample (evenly over the folder)")
    parser.add_argument("--size", type=int, default=192, help="upscaled size (bicubic)")
    parser.add_argument("--pad", type=float, default=0.25, help="edge padding per side, fraction of --size")
    parser.add_argument("--mouth", action="store_true", help="also measure the mouth centre (68-point model)")
    parser.add_argument("--preview", type=Path, help="write a PNG of the template and an aligned sample photo")
    parser.add_argument("--sample", type=Path, default=shared_dir() / "samples" / "astronaut.png")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found (set PCNN_FER_SHARED)")
    files = sample_files(args.data, args.count)
    start = time.perf_counter()
    m = measure(files, args.size, args.pad, args.mouth)
    n = len(m["landmarks"])
    print(f"{len(files)} faces sampled from {args.data}, {n} detected with landmarks "
          f"({len(m['haar_box'])} by Haar, {len(m['pair_hog'])} by both) in {time.perf_counter() - start:.1f} s")
    lm = m["landmarks"]
    print("mean   ", fmt(lm.mean(0)))
    print("median ", fmt(np.median(lm, 0)))
    print("std    ", fmt(lm.std(0)))
    print(f"TEMPLATE_5PT = np.array({fmt(lm.mean(0))})")
    print(f"BOX_TEMPLATES = {{'dlib-hog': {fmt(m['pair_hog'].mean(0))}, 'haar': {fmt(m['pair_haar'].mean(0))}}}"
          f"  # on the {len(m['pair_hog'])} faces both found")
    print(f"mean dlib box over all {n}: {fmt(m['hog_box'].mean(0))}")
    if args.mouth:
        print(f"TEMPLATE_MOUTH = np.array({fmt(m['mouth'].mean(0))})  # std {fmt(m['mouth'].std(0))}")
    print(f"TEMPLATE_FACES = {n}")
    pairs = len(m["yunet_marks"])
    print(f"yunet (threshold 0.3) found {m['yunet_all']} of {len(files)} faces; both yunet and dlib: {pairs}")
    template_yunet = m["yunet_marks"].mean(0)
    print(f"TEMPLATE_YUNET = np.array({fmt(template_yunet)})  # std {fmt(m['yunet_marks'].std(0))}")
    print(f"BOX_TEMPLATES['yunet'] = {fmt(m['yunet_box'].mean(0))}")
    print("crop agreement (medians over the faces both found):", crop_agreement(m, template_yunet))
    if args.preview:
        preview(args.preview, m["faces"], lm.mean(0), args.sample)


if __name__ == "__main__":
    main()
