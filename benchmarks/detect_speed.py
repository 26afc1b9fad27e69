"""Face detection: recall, false detections and time on real photos and on faces pasted into large canvases.

The set (built in memory, deterministic):

* the sample photos ``astronaut.png`` (1 face), ``camera.png`` (1 small, half-turned face) and ``chelsea.png``
  (a cat, no face);
* the astronaut tiled 4×4 (16 faces, 2048×2048), decoded from PNG and from JPEG quality 90;
* canvases of 0.8, 3 and 12 MP (the camera and cat photos blown up) with FER2013 test faces and the astronaut's
  head pasted at several sizes (faces from 60 to 600 px).

A pasted face counts as found when a detection's centre lies inside it and the detection's side is 0.4–1.5 times
its side; every other detection is a false one. ``--before PATH`` loads another ``detect.py`` (e.g. main's) next
to this tree's and times both in interleaved rounds on the same images; ``--scores`` prints the score distribution
of faces and of everything else at a low threshold (used to choose the default threshold).

    python benchmarks/detect_speed.py --before /work/main/src/pcnn_fer/faces/detect.py --repeats 3
    python benchmarks/detect_speed.py --scores
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402
from pcnn_fer.faces import detect as detect_now  # noqa: E402

SHARED = Path(os.environ.get("PCNN_FER_SHARED", ROOT.parent / "shared"))
#: Face regions [x1, y1, x2, y2] read off the sample photos.
ASTRONAUT_FACE = (172, 70, 272, 180)
CAMERAMAN_FACE = (175, 105, 270, 200)


@dataclass
class Case:
    """One test image and the faces it holds."""

    name: str
    rgb: np.ndarray
    faces: list[tuple[float, float, float, float]] = field(default_factory=list)


def cpu_line() -> str:
    """CPU model, core count, torch version and what torch sees of the CPU (``cpu_capabilities``), as one line."""
    import torch

    return f"CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; {cpu_capabilities()}"


def load_detect_module(path: Path) -> ModuleType:
    """Another version of ``pcnn_fer/faces/detect.py``, imported under its own name (relative imports resolve)."""
    spec = importlib.util.spec_from_file_location("pcnn_fer.faces._detect_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _fer_faces(count: int) -> list[np.ndarray]:
    """``count`` FER2013 test faces (48×48 gray → RGB), spread evenly over the sorted file list."""
    root = SHARED / "data" / "fer2013" / "test"
    files = sorted(root.rglob("*.jpg")) + sorted(root.rglob("*.png"))
    if not files:
        return []
    picks = [files[i] for i in np.linspace(0, len(files) - 1, count).astype(int)]
    return [_rgb(p) for p in picks]


def _canvas(background: np.ndarray, size: tuple[int, int], faces: list[np.ndarray], sides: list[int],
            seed: int) -> Case:
    """``background`` blown up to ``size`` with each face pasted (resized to its side) at a random free spot."""
    import cv2

    w, h = size
    canvas = cv2.resize(background, (w, h), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    boxes: list[tuple[float, float, float, float]] = []
    for face, side in zip(faces, sides, strict=True):
        for _ in range(200):
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            if all(x + side < b[0] or x > b[2] or y + side < b[1] or y > b[3] for b in boxes):
                break
        else:
            continue
        canvas[y:y + side, x:x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        boxes.append((x, y, x + side, y + side))
    return Case("", canvas, boxes)


def build_cases() -> list[Case]:
    """The test set described in the module docstring."""
    samples = SHARED / "samples"
    astronaut, camera, chelsea = (_rgb(samples / f"{n}.png") for n in ("astronaut", "camera", "chelsea"))
    tiled = np.tile(astronaut, (4, 4, 1))
    tile_faces = [(ASTRONAUT_FACE[0] + 512 * i, ASTRONAUT_FACE[1] + 512 * j, ASTRONAUT_FACE[2] + 512 * i,
                   ASTRONAUT_FACE[3] + 512 * j) for j in range(4) for i in range(4)]
    cases = [Case("astronaut.png", astronaut, [ASTRONAUT_FACE]), Case("camera.png", camera, [CAMERAMAN_FACE]),
             Case("chelsea.png (no face)", chelsea), Case("astronaut 4x4 png", tiled, tile_faces),
             Case("astronaut 4x4 jpeg q90", _jpeg(tiled, 90), tile_faces)]
    head = astronaut[40:210, 137:307]  # the astronaut's head with a little context (170×170, face ~100 px)
    fer = _fer_faces(12)
    for (w, h), sides, label in (((1024, 768), [60, 90, 140, 220], "0.8 MP"),
                                 ((2000, 1500), [90, 140, 220, 350], "3 MP"),
                                 ((4000, 3000), [220, 350, 450, 600], "12 MP")):
        for bg_name, bg in (("camera", camera), ("chelsea", chelsea)):
            pasted = [head] + fer[:3] if bg_name == "camera" else fer[3:7] if fer else [head] * 4
            case = _canvas(bg, (w, h), pasted, sides, seed=w + len(bg_name))
            # the head crop is 170 px for a 100-px face: shrink its box to the face
            if bg_name == "camera":
                x1, y1, x2, y2 = case.faces[0]
                s = (x2 - x1) / 170
                case.faces[0] = (x1 + (ASTRONAUT_FACE[0] - 137) * s, y1 + (ASTRONAUT_FACE[1] - 40) * s,
                                 x1 + (ASTRONAUT_FACE[2] - 137) * s, y1 + (ASTRONAUT_FACE[3] - 40) * s)
            case.name = f"{label} canvas ({bg_name}), faces {min(sides)}-{max(sides)} px"
            cases.append(case)
    return cases


def tuning_cases(count: int = 8, per_canvas: int = 10) -> list[Case]:
    """More faces for choosing the threshold: ``count`` 1200×900 canvases (camera and cat backgrounds in turn),
    each with ``per_canvas`` FER2013 test faces of 100–220 px."""
    samples = SHARED / "samples"
    backgrounds = [_rgb(samples / "camera.png"), _rgb(samples / "chelsea.png")]
    fer = _fer_faces(count * per_canvas)
    cases = []
    for k in range(count):
        faces = fer[k * per_canvas:(k + 1) * per_canvas]
        sides = list(np.linspace(100, 220, len(faces)).astype(int))
        case = _canvas(backgrounds[k % 2], (1200, 900), faces, sides, seed=100 + k)
        case.name = f"tuning canvas {k}"
        cases.append(case)
    return cases


def match(boxes: list[np.ndarray], faces: list[tuple[float, float, float, float]]) -> tuple[int, int]:
    """(faces found, false detections) of detected boxes against the known faces."""
    found, used = 0, set()
    for fx1, fy1, fx2, fy2 in faces:
        side = ((fx2 - fx1) + (fy2 - fy1)) / 2
        for k, b in enumerate(boxes):
            cx, cy, bside = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, ((b[2] - b[0]) + (b[3] - b[1])) / 2
            if k not in used and fx1 < cx < fx2 and fy1 < cy < fy2 and 0.4 <= bside / side <= 1.5:
                used.add(k)
                found += 1
                break
    return found, len(boxes) - len(used)


def time_detectors(detectors: dict[str, Any], cases: list[Case], repeats: int) -> dict[str, list[dict]]:
    """Per detector and case: faces found, false detections, median ms (detectors interleaved per round)."""
    rows: dict[str, list[dict]] = {name: [] for name in detectors}
    for case in cases:
        times: dict[str, list[float]] = {name: [] for name in detectors}
        result: dict[str, Any] = {}
        for _ in range(repeats):
            for name, det in detectors.items():
                t0 = time.perf_counter()
                found = det.detect(case.rgb)
                times[name].append((time.perf_counter() - t0) * 1e3)
                result[name] = found
        for name in detectors:
            hits, false = match([d.box for d in result[name]], case.faces)
            by = sorted({d.detector for d in result[name]})
            rows[name].append({"case": case.name, "pixels": int(case.rgb.shape[0] * case.rgb.shape[1]),
                               "faces": len(case.faces), "found": hits, "false": false,
                               "ms": statistics.median(times[name]), "by": by})
    return rows


def score_distribution(module: ModuleType, cases: list[Case], gray: bool) -> None:
    """Print HOG window scores (threshold -0.3, no fallback) of faces and of everything else."""
    det = module.DlibHOGDetector(threshold=-0.3, gray=gray)
    face_scores, other = [], []
    for case in cases:
        for d in det.detect(case.rgb):
            hit, _ = match([d.box], case.faces)
            (face_scores if hit else other).append(d.score)
    face_scores.sort()
    other.sort()
    print(f"gray={gray}: {len(face_scores)} face windows, {len(other)} other windows")
    print("  highest other scores:", [round(s, 3) for s in other[-6:]])
    for t in (0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5):
        kept = sum(s >= t for s in face_scores)
        print(f"  threshold {t:>4}: faces {kept}/{len(face_scores)}, other {sum(s >= t for s in other)}")


def main() -> None:
    """Build the set, time the detector(s), print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another detect.py to compare with (e.g. main's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scores", action="store_true", help="print score distributions instead of timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (SHARED / "samples" / "astronaut.png").is_file():
        raise SystemExit(f"sample photos not found under {SHARED} (set PCNN_FER_SHARED)")
    cases = build_cases()
    if args.scores:
        cases += tuning_cases()
        score_distribution(detect_now, cases, gray=False)
        score_distribution(detect_now, cases, gray=True)
        return
    detectors: dict[str, Any] = {}
    if args.before:
        detectors["before"] = load_detect_module(args.before).create_detector("auto")
    detectors["after: hog"] = detect_now.create_detector("hog")
    detectors["after: auto"] = detect_now.create_detector("auto")  # hog, then the CNN fallback on still images
    rows = time_detectors(detectors, cases, args.repeats)
    if args.json:
        print(json.dumps({"cpu": cpu_line(), "rows": rows}, indent=1))
        return
    print(cpu_line())
    names = list(detectors)
    print("| image | MP | faces | " + " | ".join(f"{n}: found, false, ms" for n in names) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " |")
    for i, case in enumerate(cases):
        cells = [f"{rows[n][i]['found']}, {rows[n][i]['false']}, {rows[n][i]['ms']:.0f}" for n in names]
        print(f"| {case.name} | {rows[names[0]][i]['pixels'] / 1e6:.2f} | {len(case.faces)} | " + " | ".join(cells)
              + " |")
    for n in names:
        found = sum(r["found"] for r in rows[n])
        false = sum(r["false"] for r in rows[n])
        print(f"{n}: {found}/{sum(len(c.faces) for c in cases)} faces, {false} false, "
              f"{sum(r['ms'] for r in rows[n]):.0f} ms in all")


if __name__ == "__main__":
    main()
