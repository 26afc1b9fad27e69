"""``pcnn predict``: recognise expressions in images, folders, globs, videos and webcams."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_write
from .imageio import MAX_PIXELS
from .sources import Frame, Source, expand_sources, iter_frames, video_frame_count

DEFAULT_OUT = Path("runs") / "predict"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` verb to the ``pcnn`` sub-parsers (sets ``func``)."""
    p = subparsers.add_parser(
        "predict", help="recognise facial expressions in photos, folders, videos or a webcam",
        description="Detect faces, align them onto the training crops and classify their expressions. SOURCE: image "
                    "files, folders (recursive), glob patterns, video files, or a webcam index (0, 1, ...). Unusable "
                    "inputs and images without faces are reported, not errors.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--checkpoint", default="default", help="model: 'default' (bundled) or a .safetensors file")
    p.add_argument("--backend", default="torch", help="classifier backend (default: torch)")
    p.add_argument("--out", type=Path, help="write annotated images/videos (and JSON/CSV) to this folder")
    p.add_argument("--save-json", action="store_true", help="write OUT/predictions.json (one record per input/frame)")
    p.add_argument("--save-csv", action="store_true", help="write OUT/predictions.csv (one row per face)")
    p.add_argument("--no-annotate", action="store_true", help="with --out: do not write annotated images/videos")
    p.add_argument("--no-detect", action="store_true", help="each input is already a cropped face")
    p.add_argument("--detector", default="auto", choices=["auto", "dlib", "cnn", "haar"],
                   help="face detector (auto: dlib HOG + 5 landmarks, Haar cascade when dlib is missing)")
    p.add_argument("--detect-threshold", type=float,
                   help="dlib HOG detector: minimum window score (default 0.2; dlib's own default is 0.0)")
    p.add_argument("--color", default="auto", choices=["auto", "gray", "rgb"],
                   help="feed faces as gray (FER-trained models) or colour; auto decides from the model input size")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    p.add_argument("--batch-size", type=int, default=32, help="faces per forward pass")
    p.add_argument("--threads", type=int, help="CPU threads for inference (torch.set_num_threads); 1 is often "
                   "fastest for a few small faces per image and on busy machines")
    p.add_argument("--every", type=int, default=1, metavar="N", help="videos/webcams: analyse every N-th frame")
    p.add_argument("--max-frames", type=int, help="videos/webcams: stop after this many analysed frames")
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="skip images larger than this many pixels")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-input lines")
    p.set_defaults(func=run_predict)
    return p


class _OutputNames:
    """Unique output file names under OUT, mirroring the input's path below its folder argument."""

    def __init__(self, out: Path) -> None:
        self.out, self.used = out, set()

    def __call__(self, source: Source, suffix: str) -> Path:
        loc = Path(source.location)
        if source.kind == "webcam":
            rel = Path(f"webcam{source.location}")
        elif source.root:
            try:
                rel = loc.relative_to(source.root)
            except ValueError:
                rel = Path(loc.name)
        else:
            rel = Path(loc.name)
        base = rel.with_suffix("")
        candidate, n = base.with_name(base.name + suffix), 1
        while str(candidate) in self.used:
            candidate = base.with_name(f"{base.name}_{n}{suffix}")
            n += 1
        self.used.add(str(candidate))
        return self.out / candidate


def csv_rows(records: list[dict], classes: tuple[str, ...]) -> tuple[list[str], list[list[Any]]]:
    """Header and one row per face of the JSON records: source, frame, face index, box, label, score, the class
    probabilities and every region's class probabilities."""
    from ..models.pcnn import REGIONS

    header = ["source", "frame", "face", "x1", "y1", "x2", "y2", "label", "score", *(f"p_{c}" for c in classes),
              *(f"{r}_{c}" for r in REGIONS for c in classes)]
    rows = []
    for rec in records:
        for i, face in enumerate(rec["faces"]):
            rows.append([rec["source"], "" if rec["frame"] is None else rec["frame"], i, *face["box"], face["label"],
                         face["score"], *(face["probabilities"][c] for c in classes),
                         *(face["regions"][r][c] for r in REGIONS for c in classes)])
    return header, rows


class _VideoOut:
    """Lazily opened annotated-video writer (mp4v .mp4, falling back to MJPG .avi)."""

    def __init__(self, path: Path, fps: float | None) -> None:
        self.path, self.fps, self.writer = path, fps or 25.0, None

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (resized to the first frame's size if needed)."""
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.path = self.path.with_suffix(".avi")
                self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
            self.size = (w, h)
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            rgb = cv2.resize(rgb, self.size)
        self.writer.write(rgb[..., ::-1].copy())

    def close(self) -> Path | None:
        """Finish the file; its path, or None when no frame was written."""
        if self.writer is None:
            return None
        self.writer.release()
        return self.path


def run_predict(args: argparse.Namespace) -> int:
    """Run ``pcnn predict``; returns 0 (unusable inputs and images without faces are reported, not errors)."""
    from tqdm import tqdm

    from .recognizer import Recognizer

    if args.every < 1:
        raise UsageError("--every must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    out: Path | None = args.out
    if out is None and (args.save_json or args.save_csv):
        out = DEFAULT_OUT
    sources = expand_sources(args.sources)
    from .detect import create_detector

    if args.no_detect:
        detector = create_detector("none")
    elif args.detect_threshold is not None:
        if args.detector not in ("auto", "dlib"):
            raise UsageError("--detect-threshold applies to the dlib HOG detector only")
        detector = create_detector("dlib", threshold=args.detect_threshold)
    else:
        detector = create_detector(args.detector)
    recognizer = Recognizer(checkpoint=args.checkpoint, device=args.device, backend=args.backend, detector=detector,
                            batch_size=args.batch_size, color=args.color, max_pixels=args.max_pixels)
    quiet = args.quiet
    annotate = out is not None and not args.no_annotate
    names = _OutputNames(out) if out is not None else None
    records: list[dict] = []
    counts = {"inputs": 0, "faces": 0, "no_face": 0, "skipped": 0}
    still = [s for s in sources if s.kind in ("image", "missing")]
    bar = tqdm(total=len(still), unit="img", disable=quiet or len(still) < 2, file=sys.stderr)

    def report(frame: Frame, line: str) -> None:
        """Print one line about an input (unless --quiet)."""
        if not quiet:
            where = frame.source.name + (f" [frame {frame.frame}]" if frame.frame is not None else "")
            tqdm.write(f"{where}: {line}", file=sys.stdout)

    for source in sources:
        video = source.kind in ("video", "webcam")
        writer = None
        if video and annotate:
            writer = _VideoOut(names(source, ".mp4"), None)
        total = None
        if source.kind == "video":
            declared = video_frame_count(source.location)
            total = -(-declared // args.every) if declared else None
            if args.max_frames is not None and total is not None:
                total = min(total, args.max_frames)
        frame_bar = tqdm(total=total, unit="frame", desc=Path(source.location).name, leave=False,
                         disable=quiet or not video, file=sys.stderr)
        seen = {"frames": 0, "with_faces": 0, "skipped": 0}
        labels: dict[str, int] = {}
        try:
            for frame in iter_frames(source, every=args.every, max_pixels=args.max_pixels,
                                     max_frames=args.max_frames):
                counts["inputs"] += 1
                seen["frames"] += frame.frame is not None
                if frame.image is None:
                    result = None
                    record = {"source": source.name, "frame": frame.frame, "skipped": frame.skipped, "faces": []}
                    counts["skipped"] += 1
                    if video and frame.frame is not None:
                        seen["skipped"] += 1
                    else:
                        report(frame, f"skipped ({frame.skipped})")
                else:
                    result = recognizer.predict_array(frame.image, source=source.name, frame=frame.frame)
                    record = result.to_dict()
                    counts["faces"] += len(result)
                    counts["no_face"] += not result
                    if video:
                        for face in result:
                            labels[face.label] = labels.get(face.label, 0) + 1
                        seen["with_faces"] += bool(result)
                    else:
                        report(frame, result.summary())
                records.append(record)
                if annotate and result is not None:
                    if writer is not None:
                        if writer.writer is None and frame.fps:
                            writer.fps = frame.fps / args.every
                        writer.write(result.plot())
                    else:
                        result.save(names(source, ".jpg" if source.location.lower().endswith((".jpg", ".jpeg"))
                                          else ".png"))
                frame_bar.update(1 if video else 0)
        finally:
            frame_bar.close()
            if video and not quiet and seen["frames"]:
                faces = ", ".join(f"{k} x{v}" for k, v in sorted(labels.items(), key=lambda kv: -kv[1]))
                tqdm.write(f"{source.name}: {seen['frames']} frame(s) analysed, {seen['with_faces']} with faces"
                           f"{f' ({faces})' if faces else ''}, {seen['skipped']} unreadable", file=sys.stdout)
            if writer is not None:
                written = writer.close()
                if written is not None and not quiet:
                    tqdm.write(f"{source.name}: annotated video written to {written}", file=sys.stdout)
        if not video:
            bar.update(1)
    bar.close()
    if out is not None and args.save_json:
        atomic_write(out / "predictions.json", json.dumps(records, indent=1))
    if out is not None and args.save_csv:
        header, rows = csv_rows(records, recognizer.classes)
        buffer = io.StringIO(newline="")
        writer_csv = csv.writer(buffer)
        writer_csv.writerow(header)
        writer_csv.writerows(rows)
        atomic_write(out / "predictions.csv", buffer.getvalue())
    if not quiet:
        where = f"; outputs in {out}" if out is not None else ""
        print(f"{counts['inputs']} input(s): {counts['faces']} face(s), {counts['no_face']} without a face, "
              f"{counts['skipped']} skipped{where}")
    return 0


__all__ = ["add_parser", "run_predict", "csv_rows"]
