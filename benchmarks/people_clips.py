"""Short videos of several people built from real photos, with their ground truth (used by tests/test_identity.py,
tests/test_people.py and benchmarks/track_speed.py).

Faces are real photos: the astronaut of ``src/pcnn_fer/assets/astronaut.png`` and CK+48 subjects (48×48 peak frames
of posed sadness, happiness and surprise, upscaled) from ``../shared/data/ckplus48``. They are pasted over a blurred
corner of the astronaut photo, move along key-framed paths, cross (the one drawn later is in front),
leave the picture and come back, and change expression on a schedule (the three frames of a CK+ sequence cycle, so
consecutive frames differ as in a real clip). Light sensor noise is added to every frame. The ground truth of a
frame lists, per person, the pasted box when the face is wholly inside the picture and at least 70 % unoccluded.

    python benchmarks/people_clips.py --out demo_videos     # writes crossing.mp4 and group.mp4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "src" / "pcnn_fer" / "assets" / "astronaut.png"
SHARED = ROOT.parent / "shared"
CKPLUS = SHARED / "data" / "ckplus48" / "CK+48"
#: CK+ folder of each expression.
CK_FOLDERS = {"sadness": "sadness", "happiness": "happy", "surprise": "surprise", "anger": "anger",
              "disgust": "disgust", "fear": "fear", "contempt": "contempt"}


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def ckplus_faces(subject: str, expression: str) -> list[np.ndarray]:
    """The three peak frames of a CK+48 subject's sequence of ``expression`` (RGB 48×48)."""
    files = sorted((CKPLUS / CK_FOLDERS[expression]).glob(f"{subject}_*.png"))
    if not files:
        raise FileNotFoundError(f"no CK+48 {expression} frames of {subject} in {CKPLUS}")
    return [_rgb(f) for f in files]


def astronaut_face() -> list[np.ndarray]:
    """The astronaut's head (she smiles), RGB."""
    return [_rgb(ASTRONAUT)[40:210, 137:307]]


@dataclass
class Actor:
    """One person: ``schedule`` [(from second, expression, face images)], key frames [(second, centre x, centre y,
    side)] linearly interpolated (absent before the first, after the last, and inside ``gaps`` [(from, to)]), and
    ``depth`` (higher is drawn in front)."""

    name: str
    schedule: list[tuple[float, str, list[np.ndarray]]]
    keys: list[tuple[float, float, float, float]]
    depth: int = 0
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def place(self, t: float) -> tuple[float, float, float] | None:
        """(centre x, centre y, side) at time ``t``, or None when absent."""
        times = [k[0] for k in self.keys]
        if t < times[0] or t > times[-1] or any(a <= t < b for a, b in self.gaps):
            return None
        return tuple(float(np.interp(t, times, [k[i] for k in self.keys])) for i in (1, 2, 3))  # type: ignore

    def expression(self, t: float) -> tuple[str, list[np.ndarray]]:
        """The expression shown at time ``t`` and its face images."""
        current = self.schedule[0]
        for entry in self.schedule:
            if t >= entry[0]:
                current = entry
        return current[1], current[2]


def background(width: int, height: int) -> np.ndarray:
    """The astronaut photo's lower-right corner (suit, flag, no face), blurred, at ``width``×``height``. (The cat
    photo was used first; YuNet, the default detector since issue 32, finds the cat's face in it.)"""
    import cv2

    return cv2.GaussianBlur(cv2.resize(_rgb(ASTRONAUT)[300:, 300:], (width, height)), (0, 0), 3)


def render(path: Path, actors: Sequence[Actor], size: tuple[int, int] = (960, 540), fps: float = 25.0,
           seconds: float = 8.0, noise: float = 2.0, seed: int = 0) -> list[dict[str, tuple]]:
    """Write the clip to ``path`` (mp4v for .mp4, MJPG for .avi) and return, per frame, {actor name: (x1, y1, x2,
    y2, expression)} of the faces wholly inside the picture and at least 70 % unoccluded."""
    import cv2

    width, height = size
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    rng = np.random.default_rng(seed)
    base = background(width, height).astype(np.int16)
    grains = [rng.normal(0, noise, base.shape).round().astype(np.int16) for _ in range(7 if noise else 0)]
    truth = []
    try:
        for k in range(int(round(seconds * fps))):
            t = k / fps
            frame = base.copy()
            drawn: list[tuple[str, tuple[int, int, int, int], str]] = []
            for actor in sorted(actors, key=lambda a: a.depth):
                place = actor.place(t)
                if place is None:
                    continue
                cx, cy, side = place
                s = int(round(side))
                x1, y1 = int(round(cx - s / 2)), int(round(cy - s / 2))
                label, faces = actor.expression(t)
                face = cv2.resize(faces[int(t * 5) % len(faces)], (s, s), interpolation=cv2.INTER_CUBIC)
                fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(width, x1 + s), min(height, y1 + s)
                if fx2 > fx1 and fy2 > fy1:
                    frame[fy1:fy2, fx1:fx2] = face[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
                drawn.append((actor.name, (x1, y1, x1 + s, y1 + s), label))
            visible = {}
            for i, (name, box, label) in enumerate(drawn):
                inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
                if inside and _unoccluded(box, [b for _, b, _ in drawn[i + 1:]]) >= 0.7:
                    visible[name] = (*box, label)
            truth.append(visible)
            if grains:
                frame += grains[k % len(grains)]
            writer.write(np.clip(frame, 0, 255).astype(np.uint8)[..., ::-1].copy())
    finally:
        writer.release()
    return truth


def _unoccluded(box: tuple[int, int, int, int], front: Sequence[tuple[int, int, int, int]]) -> float:
    mask = np.ones((box[3] - box[1], box[2] - box[0]), bool)
    for f in front:
        x1, y1 = max(f[0], box[0]) - box[0], max(f[1], box[1]) - box[1]
        x2, y2 = min(f[2], box[2]) - box[0], min(f[3], box[3]) - box[1]
        if x2 > x1 and y2 > y1:
            mask[y1:y2, x1:x2] = False
    return float(mask.mean())


def crossing_scene(scale: float = 1.0) -> list[Actor]:
    """Three people over 8 s at 960×540 (``scale`` resizes everything): ``sad_then_happy`` (CK+ S011, sad until
    3 s then happy) walks right, ``surprised`` (S026) walks left behind her and they cross at about 2.5 s;
    ``astronaut`` (smiling) stands at the top, leaves the picture upwards at 3-3.5 s, stays out and comes back from
    the right at 5.5 s."""
    s = scale
    return [
        Actor("sad_then_happy", [(0.0, "sadness", ckplus_faces("S011", "sadness")),
                                 (3.0, "happiness", ckplus_faces("S011", "happiness"))],
              [(0.0, 180 * s, 330 * s, 150 * s), (5.0, 780 * s, 330 * s, 150 * s), (8.0, 780 * s, 330 * s, 150 * s)],
              depth=1),
        Actor("surprised", [(0.0, "surprise", ckplus_faces("S026", "surprise"))],
              [(0.0, 780 * s, 340 * s, 140 * s), (5.0, 180 * s, 340 * s, 140 * s), (8.0, 180 * s, 340 * s, 140 * s)],
              depth=0),
        Actor("astronaut", [(0.0, "happiness", astronaut_face())],
              [(0.0, 480 * s, 110 * s, 180 * s), (3.0, 480 * s, 110 * s, 180 * s), (3.5, 480 * s, -150 * s, 180 * s),
               (5.5, 1100 * s, 110 * s, 180 * s), (6.5, 820 * s, 110 * s, 180 * s), (8.0, 820 * s, 110 * s, 180 * s)],
              depth=2, gaps=[(3.5, 5.5)]),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Write the demo clips."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    if not CKPLUS.is_dir():
        sys.exit(f"people_clips: CK+48 not found at {CKPLUS}")
    args.out.mkdir(parents=True, exist_ok=True)
    render(args.out / "crossing.mp4", crossing_scene(), seconds=args.seconds)
    print(f"wrote {args.out / 'crossing.mp4'}")


if __name__ == "__main__":
    main()
