"""Choosing ``--smooth``: flicker against lag of the smoothed label on jittered real-photo clips.

Each clip shows one CK+48 subject sad for the first half and happy for the second (10 s, 25 fps, 960×540), with
per-frame jitter that makes the raw per-frame labels flicker as in a real clip: the face's size and position wobble
(±8 %, ±6 px), its brightness varies (±35 levels), it is blurred (σ up to 2.5 px at 170 px) and sensor noise (σ 10)
is added, and in a random 15 % of the frames a hand-coloured bar covers the lower third of the face. One tracking
pass per clip with smoothing off gives the raw per-frame probabilities; the exponential smoother is then applied with
each time constant and label margin (hysteresis). Printed per setting: label changes of the smoothed label (1 is the
true count), frames whose smoothed label is wrong, and the lag of the sad → happy change (seconds after the true
change at 5 s).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/smooth_choice.py --subjects S011 S026 S071
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import people_clips  # noqa: E402

from pcnn_fer.faces.smoothing import ExpressionSmoother  # noqa: E402


def jittered_clip(path: Path, subject: str, seconds: float = 10.0, fps: float = 25.0, seed: int = 0) -> None:
    """Write the sad-then-happy clip of ``subject`` with per-frame jitter (see the module docstring)."""
    import cv2

    rng = np.random.default_rng(seed)
    sad, happy = people_clips.ckplus_faces(subject, "sadness"), people_clips.ckplus_faces(subject, "happiness")
    base = people_clips.background(960, 540).astype(np.int16)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (960, 540))
    for k in range(int(seconds * fps)):
        t = k / fps
        faces = sad if t < seconds / 2 else happy
        side = int(170 * (1 + rng.uniform(-0.08, 0.08)))
        x, y = 400 + int(rng.integers(-6, 7)), 180 + int(rng.integers(-6, 7))
        face = cv2.resize(faces[int(t * 5) % len(faces)], (side, side), interpolation=cv2.INTER_CUBIC)
        face = cv2.GaussianBlur(face, (0, 0), float(rng.uniform(0.1, 2.5)))
        if rng.random() < 0.15:
            face = face.copy()
            face[int(side * 0.68):int(side * 0.95), int(side * 0.15):int(side * 0.85)] = (190, 150, 125)
        frame = base.copy()
        frame[y:y + side, x:x + side] = face.astype(np.int16) + int(rng.integers(-35, 36))
        frame += rng.normal(0, 10, frame.shape).round().astype(np.int16)
        writer.write(np.clip(frame, 0, 255).astype(np.uint8)[..., ::-1].copy())
    writer.release()


def main() -> None:
    """Print the flicker / lag table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", nargs="+", default=["S011", "S026", "S071"])
    parser.add_argument("--taus", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--margins", nargs="+", type=float, default=[0.0, 0.1, 0.2], help="label hysteresis")
    parser.add_argument("--holds", nargs="+", type=int, default=[1, 4, 8],
                        help="also hold every k-th frame's probabilities for k frames (errors in runs, as in real "
                             "clips, where a wrong reading lasts while a hand or a turn lasts)")
    parser.add_argument("--cache", type=Path, help="keep the raw probabilities in this .npz (re-used when present)")
    args = parser.parse_args()
    from pcnn_fer.faces import Recognizer

    recognizer = Recognizer()
    classes = recognizer.classes
    runs = {}
    if args.cache is not None and args.cache.is_file():
        runs = dict(np.load(args.cache))
    with tempfile.TemporaryDirectory() as tmp:
        for subject in args.subjects:
            if f"{subject}_t" in runs:
                continue
            path = Path(tmp) / f"{subject}.mp4"
            jittered_clip(path, subject)
            df = recognizer.track(path, smooth_seconds=0, change=0).to_pandas()
            df = df[df.face_id == df.face_id.mode()[0]]
            runs[f"{subject}_t"] = df.time_s.to_numpy()
            runs[f"{subject}_p"] = df[[f"p_{c}" for c in classes]].to_numpy()
    if args.cache is not None:
        np.savez(args.cache, **runs)
    rows: dict[tuple[int, float, float], list[tuple[int, int, float]]] = {}
    for subject in args.subjects:
        times, raw = runs[f"{subject}_t"], runs[f"{subject}_p"]
        truth = np.where(times < 5.0, classes.index("sadness"), classes.index("happiness"))
        for hold in args.holds:
            held = raw[(np.arange(len(raw)) // hold) * hold]
            for tau in args.taus:
                for margin in args.margins if tau else [0.0]:
                    smoother = ExpressionSmoother(tau, margin=margin)
                    labels = np.array([smoother.label(1, smoother.update(1, t, p))
                                       for t, p in zip(times, held, strict=True)])
                    changes = int((labels[1:] != labels[:-1]).sum())
                    happy_after = times[(times >= 5.0) & (labels == classes.index("happiness"))]
                    lag = float(happy_after[0] - 5.0) if len(happy_after) else float("nan")
                    rows.setdefault((hold, tau, margin), []).append((changes, int((labels != truth).sum()), lag))
    print(f"subjects {' '.join(args.subjects)}; {len(times)} frames each; true label changes: 1")
    print("| held frames | --smooth (s) | label margin | label changes per clip | wrong frames per clip | "
          "lag of the change (s) |")
    print("| ---: | ---: | ---: | --- | --- | --- |")
    for (hold, tau, margin), got in rows.items():
        print(f"| {hold} | {tau:g} | {margin:g} | {' / '.join(str(c) for c, _, _ in got)} | "
              f"{' / '.join(str(w) for _, w, _ in got)} | {' / '.join(f'{lag:.2f}' for _, _, lag in got)} |")


if __name__ == "__main__":
    main()
