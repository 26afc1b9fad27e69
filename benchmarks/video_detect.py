"""Video frames: full detection on every frame vs :class:`~pcnn_fer.faces.track.FrameTracker` (full detection every
``--detect-every`` frames, a search around the previous faces in between).

Clips are built in memory (deterministic): the astronaut's head (and, in the group clip, three more heads of other
sizes) drifting and slowly zooming over the blurred cat photo at 640×360, 1280×720 and 1920×1080. A face counts as
found when a detection's centre lies inside it and its side is 0.4–1.5× the face's. Both pipelines run on the same
frames in interleaved rounds; the table gives faces found / faces present, false detections, and median CPU ms per
frame (detection + landmarks; one thread).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/video_detect.py --frames 60 --repeats 3
    OMP_WAIT_POLICY=PASSIVE python benchmarks/video_detect.py --detector yunet dlib --frames 20 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pcnn_fer.engine.precision import cpu_capabilities, cpu_model  # noqa: E402
from pcnn_fer.faces.detect import create_detector  # noqa: E402
from pcnn_fer.faces.track import FrameTracker  # noqa: E402

ASSETS = ROOT / "src" / "pcnn_fer" / "assets"
SAMPLES = ROOT.parent / "shared" / "samples"


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def make_clip(width: int, height: int, frames: int, heads: int) -> tuple[list[np.ndarray], list[list[tuple]]]:
    """Frames and, per frame, the pasted face boxes (x1, y1, x2, y2)."""
    import cv2

    astronaut = _rgb(ASSETS / "astronaut.png")
    head = astronaut[40:210, 137:307]
    cat = SAMPLES / "chelsea.png"
    base = _rgb(cat) if cat.is_file() else astronaut[300:, 300:]
    background = cv2.GaussianBlur(cv2.resize(base, (width, height)), (0, 0), 3)
    unit = height / 720
    # (x, y, side, dx per frame, zoom per frame) at 1280×720, scaled to the clip.
    layout = [(200, 200, 220, 4, 0.002), (800, 150, 160, -3, 0.0), (950, 430, 120, 2, 0.003), (450, 480, 180, 0, 0.0)]
    clip, boxes = [], []
    for t in range(frames):
        frame = background.copy()
        present = []
        for x, y, side, dx, zoom in layout[:heads]:
            s = int(side * unit * (1 + zoom * t))
            x0, y0 = int((x + dx * t) * unit), int(y * unit)
            frame[y0:y0 + s, x0:x0 + s] = cv2.resize(head, (s, s))
            present.append((x0, y0, x0 + s, y0 + s))
        clip.append(frame)
        boxes.append(present)
    return clip, boxes


def score(detections: list, faces: list[tuple]) -> tuple[int, int]:
    """(faces found, false detections) of one frame."""
    found, used = 0, set()
    for fx1, fy1, fx2, fy2 in faces:
        side = fx2 - fx1
        for i, d in enumerate(detections):
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            if i not in used and fx1 < cx < fx2 and fy1 < cy < fy2 and 0.4 * side <= d.width <= 1.5 * side:
                found += 1
                used.add(i)
                break
    return found, len(detections) - len(used)


def run_clip(detector, clip: list[np.ndarray], boxes: list[list[tuple]], repeats: int, every: int) -> str:
    """The table cells of one clip and detector: full detection on every frame against the frame tracker."""
    times: dict[str, list[float]] = {"full": [], "tracked": []}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for name in ("full", "tracked"):
            tracker = FrameTracker(detector, refresh=1 if name == "full" else every)
            found = false = 0
            for frame, faces in zip(clip, boxes, strict=True):
                start = time.process_time()  # CPU time: steadier than wall time on a shared machine
                detections, _ = tracker.detect_traced("clip", frame)
                times[name].append((time.process_time() - start) * 1000)
                f, x = score(detections, faces)
                found, false = found + f, false + x
            counts[name] = (found, false)
    present = sum(len(b) for b in boxes)
    full, tracked = (statistics.median(times[k]) for k in ("full", "tracked"))
    return (f"{counts['full'][0]}/{present}, {counts['full'][1]} | {full:.1f} | {counts['tracked'][0]}/{present}, "
            f"{counts['tracked'][1]} | {tracked:.1f} | {tracked / full:.2f}× |")


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--detect-every", type=int, default=10)
    ap.add_argument("--detector", nargs="+", default=["dlib"], help="detector names (create_detector)")
    args = ap.parse_args()
    print(f"CPU: {cpu_model()}; {cpu_capabilities()}")
    rows = []
    for width, height in ((640, 360), (1280, 720), (1920, 1080)):
        for heads in (1, 4):
            clip, boxes = make_clip(width, height, args.frames, heads)
            for name in args.detector:
                rows.append(f"| {width}×{height} | {heads} | {name} | "
                            + run_clip(create_detector(name), clip, boxes, args.repeats, args.detect_every))
    print(f"\n{args.frames} frames per clip, {args.repeats} interleaved rounds, --detect-every {args.detect_every}\n")
    print("| clip | heads | detector | every frame: found, false | ms/frame | tracked: found, false | ms/frame "
          "| ratio |")
    print("| --- | ---: | --- | --- | ---: | --- | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
