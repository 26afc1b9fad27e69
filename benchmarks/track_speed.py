"""Real-time factor of people tracking on a 960×540, 25-fps video with three faces (issue 30's target: ≥ 1×).

The clip is the crossing scene of ``benchmarks/people_clips.py`` (three real faces moving, crossing, one leaving and
coming back; CK+48 faces from ../shared). Both pipelines read the same file with their defaults, in alternating
rounds, after their start-up (model load, ONNX session, dlib networks, a warm-up frame):

* ``predict_stream``: what ``pcnn predict VIDEO`` ran before issue 30 (window search around the previous faces on
  every frame with the old half-side margins, unscaled, no optical flow; every face classified every frame; no ids);
* ``track_stream``: ``pcnn predict VIDEO`` now (ids, re-identification, classification only when a face changed,
  classification overlapped with the next frame's detection, smoothing and summaries).

Printed per pipeline: frames/s, the real-time factor (video seconds / wall seconds), CPU seconds per video second
of the whole process and of the main thread (detection, ids, alignment; decoding and classification run in their
own threads), plus the CPU model and the load. On a shared machine the wall-clock figures fall with the load; the
CPU figures give what 2 idle cores would do: the video seconds over the larger of the main thread's CPU seconds
(its work is sequential) and half the process's (two cores share the rest).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/track_speed.py --seconds 12 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import people_clips  # noqa: E402

from pcnn_fer.engine.precision import cpu_model  # noqa: E402
from pcnn_fer.faces.track import FrameTracker  # noqa: E402


def _run(recognizer, path: Path, tracked: bool) -> tuple[float, float, float, int, str]:
    """(wall s, process CPU s, main-thread CPU s, frames, what was found) of one pass over the clip."""
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    frames, last = 0, None
    stream = recognizer.track_stream([str(path)]) if tracked else recognizer.predict_stream([str(path)])
    for result in stream:
        frames += 1
        last = result
    wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
    found = last.people.line() if tracked and last is not None and last.people is not None else f"{frames} frames"
    return wall, cpu, main, frames, found


def main() -> None:
    """Build the clip, time both pipelines, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="clip length (the scene holds still after 8 s)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="classifier threads (default: the backend's)")
    parser.add_argument("--detector", default="auto", help="face detector of both pipelines (default: the default)")
    args = parser.parse_args()
    if not people_clips.CKPLUS.is_dir():
        sys.exit(f"track_speed: CK+48 not found at {people_clips.CKPLUS}")
    from pcnn_fer.backends.dispatch import create_backend, describe_backend
    from pcnn_fer.faces import Recognizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "three_people_960x540_25fps.mp4"
        people_clips.render(path, people_clips.crossing_scene(1.0), size=(960, 540), fps=25.0, seconds=args.seconds)
        backend = create_backend(args.backend, "default", "cpu", threads=args.threads)
        recognizer = Recognizer(backend=backend, detector=args.detector)
        before = Recognizer(backend=backend, detector=recognizer.detector)
        before.tracker = FrameTracker(before.detector, margin=0.5, face_side=None, flow_frames=0)  # pre-issue-30
        recognizer.track(path, max_frames=3)  # start-up: ONNX session, dlib networks, a warm-up
        before.track(path, max_frames=3)
        print(f"CPU: {cpu_model()}; cores usable: {len(os.sched_getaffinity(0))}; backend: "
              f"{describe_backend(backend)}; detector: {type(recognizer.detector).__name__}; load average before: "
              f"{os.getloadavg()[0]:.2f}")
        times: dict[str, list[tuple[float, float, float]]] = {"predict_stream (before)": [],
                                                              "track_stream (now)": []}
        found = {}
        for _ in range(args.repeats):
            for name in times:
                tracked = name.startswith("track")
                wall, cpu, main, frames, found[name] = _run(recognizer if tracked else before, path, tracked)
                times[name].append((wall, cpu, main))
        print(f"clip: 960x540, 25 fps, {args.seconds:g} s ({frames} frames), three faces; median of {args.repeats}; "
              f"load average after: {os.getloadavg()[0]:.2f}")
        print("| pipeline | frames/s | real-time factor | CPU s per video s: all threads | main thread | "
              "real-time factor on 2 idle cores (estimate) | found |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, runs in times.items():
            wall, cpu, main = (statistics.median(r[k] for r in runs) for k in range(3))
            idle = args.seconds / max(main, cpu / 2)
            print(f"| {name} | {frames / wall:.1f} | {args.seconds / wall:.2f}x | {cpu / args.seconds:.2f} | "
                  f"{main / args.seconds:.2f} | {idle:.2f}x | {found[name]} |")


if __name__ == "__main__":
    main()
