"""The work of ``pcnn predict`` (its parser: :mod:`pcnn_fer.cli.predict`): recognise expressions in images, folders,
globs, videos, webcams and image sequences (``--sequence FPS``: each folder is one video of frames).

Argument checks and output planning happen before any model is loaded; then the command drains
:meth:`Recognizer.predict_stream <pcnn_fer.faces.recognizer.Recognizer.predict_stream>`, writing each result as it
comes (:mod:`pcnn_fer.faces.outputs`) and reporting it on the console.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..backends.dispatch import create_backend, describe_backend
from ..errors import UsageError
from . import outputs
from .imageio import ImageLoadError, load_image
from .people_outputs import PeopleFiles
from .records import RecordError, check_record_classes
from .sources import expand_sources, sequence_images, video_frame_count
from .spec import RecognizerSpec
from .stream import frames_per_chunk
from .tracking import TrackingConfig

#: Where outputs go when --save-json / --save-csv / --save-jsonl is given without --out.
DEFAULT_OUT = Path("runs") / "predict"


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--every", args.every), ("--batch-size", args.batch_size), ("--threads", args.threads),
                        ("--max-frames", args.max_frames), ("--max-pixels", args.max_pixels),
                        ("--detect-every", args.detect_every), ("--actors", args.actors)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    for flag, seconds in (("--smooth", args.smooth), ("--reid-seconds", args.reid_seconds)):
        if not math.isfinite(seconds) or seconds < 0:
            raise UsageError(f"{flag} must be a number of seconds >= 0, got {seconds}")
    if args.sequence is not None and (not math.isfinite(args.sequence) or args.sequence <= 0):
        raise UsageError(f"--sequence must be a frame rate > 0 (frames per second), got {args.sequence}")


def describe_detector(detector: Any) -> str:
    """The detector's class, and for ``auto`` what it runs and why (``AutoDetector (yunet)``)."""
    name = type(detector).__name__
    primary = getattr(detector, "primary", None)
    if primary is None:
        return name
    note = getattr(detector, "note", "")
    return f"{name} ({getattr(primary, 'name', type(primary).__name__)}{': ' + note if note else ''})"


def run_predict(args: argparse.Namespace) -> int:
    """Run ``pcnn predict``; 0 when at least one input could be read (or there was nothing left to do), else 1."""
    _check_numbers(args)
    spec = RecognizerSpec.from_args(args)
    ray_engine = getattr(args, "engine", "local") == "ray"
    if ray_engine:
        from .ray_engine import RayOptions, check_ray_installed

        check_ray_installed()
        ray_options = RayOptions(address=args.ray_address, actors=args.actors)
    elif args.ray_address or args.actors:
        raise UsageError("--ray-address and --actors apply to --engine ray")
    workers = _workers_flag(getattr(args, "workers", "1"))
    if args.save_parquet:
        from .parquet import require_pyarrow

        require_pyarrow()
    jsonl = args.save_jsonl or args.resume
    out: Path | None = args.out
    if out is None and (args.save_json or args.save_csv or args.save_parquet or jsonl):
        out = DEFAULT_OUT
    sources = expand_sources(args.sources, sequence_fps=args.sequence)
    annotated: dict[int, list[Path]] = {}
    keep_bytes, kept, start = None, [], 0
    tracking = TrackingConfig(smooth_seconds=args.smooth, reid_seconds=args.reid_seconds, reid=not args.no_reid)
    people = None
    if out is not None:  # every output is checked before any work
        outputs.check_out_folder(out)
        if not args.no_annotate:
            annotated = outputs.annotated_paths(sources, out)
        names = [n for n, wanted in ((outputs.JSON_NAME, args.save_json), (outputs.CSV_NAME, args.save_csv),
                                     (outputs.PARQUET_NAME, args.save_parquet), (outputs.JSONL_NAME, jsonl))
                 if wanted]
        people = PeopleFiles(out, sources, args.every, timelines=not args.no_annotate)
        outputs.check_no_overwrite(sources, [p for ps in annotated.values() for p in ps] + [out / n for n in names]
                                   + people.planned())
    if args.resume and (out / outputs.JSONL_NAME).is_file():
        done = list(outputs.read_jsonl(out / outputs.JSONL_NAME))
        count, start = outputs.resume_point(sources, [r["source"] for _, r in done],
                                            frames_per_chunk(not args.no_detect, args.batch_size))
        keep_bytes, kept = (done[count - 1][0] if count else 0), [r for _, r in done[:count]]
    ray_start = None
    if ray_engine and sources[start:]:
        from .ray_engine import RayStart, starts_local_ray

        if starts_local_ray(ray_options):  # a local Ray for the job: begun once the driver's pace says it pays
            ray_start = RayStart(ray_options)
    try:
        return _run(args, spec, _Plan(sources, start, out, annotated, keep_bytes, kept, people, tracking, jsonl,
                                      workers), ray_start)
    finally:
        if ray_start is not None:
            ray_start.close()


@dataclass
class _Plan:
    """What ``pcnn predict`` planned and checked before loading any model."""

    sources: list
    start: int
    out: Path | None
    annotated: dict[int, list[Path]]
    keep_bytes: int | None
    kept: list[dict[str, Any]]
    people: PeopleFiles | None
    tracking: TrackingConfig
    jsonl: bool
    workers: int | None


def _run(args: argparse.Namespace, spec: RecognizerSpec, plan: _Plan, ray_start: Any) -> int:
    """Load the model and drain the chosen engine's stream into the outputs and the console report."""
    sources, start, out, annotated, kept, people = (plan.sources, plan.start, plan.out, plan.annotated, plan.kept,
                                                    plan.people)
    ray_engine = getattr(args, "engine", "local") == "ray"
    # onnxruntime's spinning workers would take the cores from the decode-ahead thread (and from other jobs)
    backend = create_backend(args.backend, args.checkpoint, args.device, threads=args.threads, spinning=False)
    recognizer = spec.build(backend)  # with --engine ray: checks the model and warms the export cache here
    _check_kept_classes(kept, out, recognizer.classes)
    if people is not None:
        people.add_kept(kept, recognizer.classes)
    report = _Report(args.quiet, sources[start:], args.every, args.max_frames)
    report.line(f"backend: {describe_backend(backend)}; detector: {describe_detector(recognizer.detector)}"
                + ("; engine: ray" if ray_engine else "")
                + (f"; resuming after {len(kept)} record(s), {start} of {len(sources)} input(s) done" if args.resume
                   else ""), err=True)
    files = outputs.ResultFiles(out, recognizer.classes, plan.jsonl, args.save_json, args.save_csv,
                                args.save_parquet) if out else None
    annotator = outputs.Annotator(annotated, sources, args.every) if annotated else None
    complete, stream, ray_run = False, None, None
    try:
        if files is not None:
            files.open(plan.keep_bytes)
            for record in kept:
                files.add(record, stream=False)
        if ray_engine:
            from .ray_engine import RayOptions, RayRun, ray_predict_stream

            if annotator is not None and any(s.kind not in ("image", "missing") for s in sources[start:]):
                raise UsageError("annotated videos are drawn by the local engine: add --no-annotate to --engine ray")
            ray_run = RayRun()
            stream = ray_predict_stream(sources[start:], spec, recognizer.classes,
                                        RayOptions(address=args.ray_address, actors=args.actors), every=args.every,
                                        max_frames=args.max_frames, tracking=plan.tracking, driver=recognizer,
                                        start=ray_start, run=ray_run)
        elif (count := _worker_count(plan.workers, sources[start:], spec)) > 1:
            from .workers import pool_predict_stream

            if annotator is not None and any(s.kind not in ("image", "missing") for s in sources[start:]):
                raise UsageError("annotated videos are drawn by the main process: use --workers 1 (or --no-annotate)")

            report.line(f"{count} worker processes", err=True)
            stream = pool_predict_stream(sources[start:], spec, recognizer.classes, count, every=args.every,
                                         max_frames=args.max_frames, tracking=plan.tracking)
        else:
            stream = ((r.to_dict(), r) for r in recognizer.track_stream(sources[start:], every=args.every,
                                                                      max_frames=args.max_frames,
                                                                      config=plan.tracking))
        for record, result in stream:
            if result.origin is not report.source:
                report.end_source(annotator.end_source() if annotator else None, people)
                report.source = result.origin
            if files is not None:
                files.add(record)
            if annotator is not None:
                annotator.add(result if result.image is not None else _with_image(result, args.max_pixels))
            report.add(result)
        complete = True
    finally:
        if stream is not None and hasattr(stream, "close"):
            stream.close()  # the Ray engine shuts down a Ray it started itself
        report.end_source(annotator.end_source() if annotator else None, people)
        report.close()
        if files is not None:
            files.close(complete)
    if ray_run is not None and ray_run.batches:
        ray_started = ray_start is None or ray_start.begun
        if ray_run.actors:
            pool = f"{ray_run.actors} model actor(s)"
        elif ray_started:
            pool = "no model actor started (this process was due to finish first)"
        else:
            pool = ("no local Ray started (this process was due to finish before a local Ray could start and answer; "
                    "--engine ray pays from jobs of about a minute)")
        if not ray_started:
            share = f"this process classified all {ray_run.batches} batch(es)"
        elif ray_run.shared:
            share = f"this process classified {ray_run.driver_batches} of {ray_run.batches} batch(es) while Ray started"
        else:
            share = f"{ray_run.batches} batch(es), all on the actors"
        report.line(f"ray: {pool}; {share}", err=True)
    report.summary(out)
    if report.inputs and not report.read:
        print(f"pcnn predict: error: no input could be read ({report.inputs} skipped)", file=sys.stderr)
        return 1
    return 0


def _check_kept_classes(kept: list[dict[str, Any]], out: Path | None, classes: Any) -> None:
    """Refuse to resume over records made by a model with other classes (their CSV columns would not exist)."""
    from ..classes import REGIONS

    for number, record in enumerate(kept, 1):
        try:
            check_record_classes(record, classes, REGIONS)
        except RecordError as e:
            raise UsageError(f"{out / outputs.JSONL_NAME}:{number}: {e}; remove the file or drop --resume") from None


def _workers_flag(text: str) -> int | None:
    """``--workers``: a count of at least 1, or None for auto."""
    if str(text) == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise UsageError(f"--workers must be a number or auto, got {text!r}") from None
    if count < 1:
        raise UsageError(f"--workers must be at least 1, got {count}")
    return count


def _worker_count(workers: int | None, sources: list, spec: RecognizerSpec) -> int:
    """The worker processes of a local job (``--workers``; auto: :func:`~pcnn_fer.faces.workers.auto_workers`)."""
    if workers is not None:
        return workers
    from ..engine.cores import usable_cpus
    from .workers import auto_workers

    return auto_workers(sources, spec.detector != "none", spec.batch_size, len(usable_cpus()))


def _with_image(result: Any, max_pixels: int) -> Any:
    """A worker's result of a still image (Ray actors and pool processes send records, not pixels) with its image
    decoded again here, for the annotated copy; video frames stay without (annotated videos need the main
    process: --workers 1)."""
    if result.frame is None and result.skipped is None and result.origin is not None:
        try:
            result.image = load_image(result.origin.location, max_pixels=max_pixels)
        except ImageLoadError:
            result.image = None
    return result


class _Report:
    """Console output of ``pcnn predict``: progress bars, one line per image, one summary per video, the counts."""

    def __init__(self, quiet: bool, sources: list, every: int, max_frames: int | None) -> None:
        self.quiet, self.every, self.max_frames, self.tqdm = quiet, every, max_frames, tqdm
        still = sum(s.kind in ("image", "missing") for s in sources)
        # bars only on a terminal: written into a log or a pipe they mix into the per-image lines
        self.bars = not quiet and sys.stderr.isatty()
        self.bar = tqdm(total=still, unit="img", disable=not self.bars or still < 2, file=sys.stderr)
        self.frame_bar: Any = None
        self.source: Any = None
        self.inputs = self.read = self.faces = self.no_face = 0
        self.images = self.image_faces = self.image_no_face = self.image_skipped = 0
        self.videos = self.sequences = self.frames = self.people = 0
        self.video = {"frames": 0, "with_faces": 0, "skipped": 0}
        self.summary_so_far: Any = None

    def line(self, text: str, err: bool = False) -> None:
        """Print one line (unless --quiet) without breaking the progress bars."""
        if not self.quiet:
            self.tqdm.write(text, file=sys.stderr if err else sys.stdout)

    def add(self, result: Any) -> None:
        """Count and report one result."""
        video = result.frame is not None
        self.inputs += 1
        self.read += result.skipped is None
        self.faces += len(result)
        self.no_face += result.skipped is None and not result
        if not video:
            self.line(f"{result.source}: {result.summary()}")
            self.bar.update(result.origin.kind in ("image", "missing"))
            self.images += 1
            self.image_faces += len(result)
            self.image_no_face += result.skipped is None and not result
            self.image_skipped += result.skipped is not None
            return
        self.summary_so_far = result.people if result.people is not None else self.summary_so_far
        if self.frame_bar is None:
            self.frame_bar = self._frame_bar(result.origin)
        self.frame_bar.update(1)
        self.video["frames"] += 1
        self.video["skipped"] += result.skipped is not None
        self.video["with_faces"] += bool(result)

    def _frame_bar(self, origin: Any) -> Any:
        total = None
        if origin.kind == "video":
            declared = video_frame_count(origin.location)
            total = -(-declared // self.every) if declared else None
        elif origin.kind == "sequence":
            total = -(-len(sequence_images(origin.location)) // self.every)
        if self.max_frames is not None and total is not None:
            total = min(total, self.max_frames)
        return self.tqdm(total=total, unit="frame", desc=Path(origin.location).name, leave=False,
                         disable=not self.bars, file=sys.stderr)

    def end_source(self, written: Path | None, files: PeopleFiles | None = None) -> None:
        """Close the previous video's bar, print its people and dominant expressions, write its people files
        (summary.json, timeline) and say where its annotated video went."""
        people, self.summary_so_far = self.summary_so_far, None
        if self.frame_bar is not None:
            self.frame_bar.close()
            self.frame_bar = None
            v = self.video
            self.sequences += self.source.kind == "sequence"
            self.videos += self.source.kind != "sequence"
            self.frames += v["frames"]
            if people is not None:
                self.people += len(people.people)
                self.line(people.line() + f"; {v['frames']} frame(s) analysed, {v['with_faces']} with faces, "
                          f"{v['skipped']} unreadable")
            else:
                self.line(f"{self.source.name}: {v['frames']} frame(s), {v['skipped']} unreadable")
            self.video = {"frames": 0, "with_faces": 0, "skipped": 0}
        timeline = files.end_source(self.source, people) if files is not None else None
        if timeline is not None:
            self.line(f"{self.source.name}: timeline written to {timeline}")
        if written is not None:
            self.line(f"{self.source.name}: annotated video written to {written}")

    def close(self) -> None:
        """Close the progress bars."""
        self.bar.close()

    def summary(self, out: Path | None) -> None:
        """The closing line (printed with --quiet too): images (faces, without a face, skipped) and videos
        (frames, people)."""
        parts = []
        if self.images:
            parts.append(f"{self.images} image(s): {self.image_faces} face(s), {self.image_no_face} without a face, "
                         f"{self.image_skipped} skipped")
        if self.videos or self.sequences:
            what = [f"{self.videos} video(s)"] * bool(self.videos) + [f"{self.sequences} image sequence(s)"] * bool(
                self.sequences)
            parts.append(f"{' and '.join(what)}: {self.frames} frame(s), {self.people} "
                         f"{'person' if self.people == 1 else 'people'}")
        where = f"; outputs in {out}" if out is not None else ""
        self.tqdm.write("; ".join(parts or ["no input"]) + where, file=sys.stdout)


__all__ = ["run_predict", "DEFAULT_OUT"]
