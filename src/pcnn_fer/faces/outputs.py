"""What ``pcnn predict`` writes, planned and checked before any work: annotated images and videos under ``--out``
(never over an input), and the result files, streamed as results come so that memory stays flat:

* ``predictions.jsonl`` – one JSON record per line, flushed line by line; ``--resume`` keeps its complete lines
  (cut back to a batch boundary, see :func:`resume_point`) and carries on after them;
* ``predictions.json`` – the same records as one JSON list (a record per line), written to a temporary file and put
  in place at the end;
* ``predictions.csv`` – one row per face, likewise;
* ``predictions.parquet`` – the CSV's rows and columns as a typed Parquet table (:mod:`pcnn_fer.faces.parquet`),
  likewise.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..errors import UsageError
from ..fileio import check_out_folder, publish, temporary_beside
from .records import RecordError, check_record
from .sources import Source, sequence_images
from .stream import MOVING_KINDS, STILL_KINDS, chunk_starts

JSONL_NAME, JSON_NAME, CSV_NAME = "predictions.jsonl", "predictions.json", "predictions.csv"
PARQUET_NAME = "predictions.parquet"


def relative_output_name(source: Source) -> Path:
    """The input's path below its folder argument (its file name for files named directly)."""
    loc = Path(source.location)
    if source.kind == "webcam":
        return Path(f"webcam{source.location}")
    if source.kind == "sequence":  # a folder of frames: its name (of the folder it means, for ``.`` or ``..``)
        return Path(loc.name if loc.name not in ("", ".", "..") else loc.resolve().name or "sequence")
    if source.root:
        try:
            return loc.relative_to(source.root)
        except ValueError:
            pass
    return Path(loc.name)


def annotated_paths(sources: Sequence[Source], out: Path) -> dict[int, list[Path]]:
    """Unique annotated-output paths per source index, mirroring each input below its folder argument: ``.jpg``
    for JPEG inputs, ``.png`` for other images; for videos, webcams and image sequences ``.mp4`` and the ``.avi``
    used when no mp4 encoder is available (named apart from every input)."""
    inputs = _input_files(sources) if any(s.kind in MOVING_KINDS for s in sources) else {}
    used: set[str] = set()
    paths: dict[int, list[Path]] = {}

    def unique(base: Path, suffix: str, avoid_inputs: bool = False) -> Path:
        candidate, n = base.with_name(base.name + suffix), 1
        while str(candidate) in used or (avoid_inputs and _file_key(out / candidate) in inputs):
            candidate = base.with_name(f"{base.name}_{n}{suffix}")
            n += 1
        used.add(str(candidate))
        return out / candidate

    for i, source in enumerate(sources):
        if source.kind == "missing":
            continue
        base = relative_output_name(source).with_suffix("")
        if source.kind in MOVING_KINDS:
            paths[i] = [unique(base, ".mp4"), unique(base, ".avi", avoid_inputs=True)]
        else:
            paths[i] = [unique(base, ".jpg" if source.location.lower().endswith((".jpg", ".jpeg")) else ".png")]
    return paths


def _file_key(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file (links followed), None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _input_files(sources: Sequence[Source]) -> dict[tuple[int, int] | None, str]:
    """(device, inode) → path as given, of every input file (the frames of image sequences included)."""
    keys = {_file_key(s.location): s.location for s in sources if s.kind in ("image", "video")}
    for sequence in (s for s in sources if s.kind == "sequence"):
        keys.update((_file_key(frame.location), frame.location) for frame in sequence_images(sequence.location))
    keys.pop(None, None)
    return keys


def check_no_overwrite(sources: Sequence[Source], outputs: Sequence[Path]) -> None:
    """Refuse (before any work) when an output file would be one of the inputs (the same file, through any link)."""
    existing = [key for key in map(_file_key, outputs) if key is not None]  # a file not there yet is no input
    if not existing:
        return
    inputs = _input_files(sources)
    for key in existing:
        hit = inputs.get(key)
        if hit is not None:
            raise UsageError(f"refusing to overwrite the input {hit} with an output: choose another --out folder "
                             f"(or --no-annotate)")


#: The per-region occlusion columns of predictions.csv (empty for a model without occlusion heads).
OCCLUSION_COLUMNS: tuple[str, ...] = ("occluded_left_eye", "occluded_right_eye", "occluded_left_cheek",
                                      "occluded_right_cheek", "occluded_mouth")
#: The face-quality columns (:func:`pcnn_fer.faces.quality.face_quality`; issues space-separated).
QUALITY_COLUMNS: tuple[str, ...] = ("size_px", "sharpness", "brightness", "clipped", "yaw", "pitch",
                                    "quality_issues")


#: The last column of predictions.csv: why an input (or a video frame) was skipped, on its one row.
ERROR_COLUMN = "error"


def csv_header(classes: Sequence[str]) -> list[str]:
    """CSV columns: source, frame, time in seconds and face id (video frames), face index, box, label, score,
    detection score, the class probabilities, every region's class probabilities, the smoothed label and
    probabilities (video frames; :mod:`pcnn_fer.faces.smoothing`), the region occlusion scores, the face
    quality and the error of a skipped input."""
    from ..models.pcnn import REGIONS

    return ["source", "frame", "time_s", "face_id", "face", "x1", "y1", "x2", "y2", "label", "score",
            "detection_score", *(f"p_{c}" for c in classes), *(f"{r}_{c}" for r in REGIONS for c in classes),
            "smooth_label", *(f"smooth_{c}" for c in classes), *OCCLUSION_COLUMNS, *QUALITY_COLUMNS, ERROR_COLUMN]


def csv_rows(record: dict[str, Any], classes: Sequence[str]) -> list[list[Any]]:
    """The CSV rows of a JSON record (columns of :func:`csv_header`): one per face; a skipped input (missing,
    unreadable, a manifest entry that is not there) or unreadable video frame is one row holding its source, frame
    and the reason in ``error``, every other field empty."""
    from ..models.pcnn import REGIONS

    if record.get("skipped"):
        row: list[Any] = [""] * len(csv_header(classes))
        row[:3] = [record["source"], "" if record["frame"] is None else record["frame"], record.get("time_s", "")]
        row[-1] = record["skipped"]
        return [row]

    def smoothed(face: dict[str, Any]) -> list[Any]:
        probs = face.get("smooth_probabilities")
        return [face.get("smooth_label", ""), *(probs[c] if probs else "" for c in classes)]

    def occluded(face: dict[str, Any]) -> list[Any]:
        scores = face.get("occlusion") or {}
        return [scores.get(r, "") for r in REGIONS]

    def quality(face: dict[str, Any]) -> list[Any]:
        q = face.get("quality") or {}
        return [*("" if q.get(k) is None else q[k] for k in QUALITY_COLUMNS[:-1]), " ".join(q.get("issues", []))]

    return [[record["source"], "" if record["frame"] is None else record["frame"], record.get("time_s", ""),
             face.get("face_id", ""), i, *face["box"], face["label"], face["score"], face["detection_score"],
             *(face["probabilities"][c] for c in classes), *(face["regions"][r][c] for r in REGIONS for c in classes),
             *smoothed(face), *occluded(face), *quality(face), ""]
            for i, face in enumerate(record["faces"])]


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(byte offset after the line, record) for each complete line of a JSONL results file; a torn last line (a
    killed job) is left out; a damaged line elsewhere is an error naming the file and line."""
    offset = 0
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last newline is torn or empty
        offset += len(line) + 1
        try:
            record = json.loads(line)
            check_record(record)
        except ValueError as e:
            why = f" ({e})" if isinstance(e, RecordError) else ""
            raise UsageError(f"{path}:{number}: not a pcnn predict record{why}; remove the file or drop --resume") \
                from None
        yield offset, record


def resume_point(sources: Sequence[Source], done: Sequence[str], frames_per_chunk: int) -> tuple[int, int]:
    """Where to resume: (records of ``done`` to keep, index of the first source to process). ``done`` lists the
    sources of the records already written, in order. The cut falls on a chunk boundary (:func:`chunk_starts`), so
    the remaining inputs form the same batches as in an uninterrupted run; a video whose records end the file may
    be incomplete and is done again."""
    starts = set(chunk_starts(sources, frames_per_chunk))
    best, r, i = (0, 0), 0, 0
    while i < len(sources) and r < len(done):
        if i in starts:
            best = (r, i)
        source = sources[i]
        if source.kind in STILL_KINDS:
            if done[r] != source.name:
                raise UsageError(f"{JSONL_NAME}: record {r + 1} is about {done[r]!r} but input {i + 1} is "
                                 f"{source.name!r}: it holds results of other inputs; remove it or drop --resume")
            r += 1
        else:
            end = r
            while end < len(done) and done[end] == source.name:
                end += 1
            if end == r:
                raise UsageError(f"{JSONL_NAME}: record {r + 1} is about {done[r]!r} but input {i + 1} is "
                                 f"{source.name!r}: it holds results of other inputs; remove it or drop --resume")
            if end == len(done):
                return best  # the video the job stopped in
            r = end
        i += 1
    if r == len(done) and i in starts:
        best = (r, i)
    return best


class ResultFiles:
    """The result files of one ``pcnn predict`` run, fed record by record (see the module docstring)."""

    def __init__(self, out: Path, classes: Sequence[str], jsonl: bool, json_list: bool, csv_table: bool,
                 parquet: bool = False) -> None:
        self.out, self.classes = out, tuple(classes)
        self._parquet_wanted = parquet
        self._parquet: Any = None
        self.jsonl: TextIO | None = None
        self._json: tuple[TextIO, str] | None = None
        self._csv: tuple[TextIO, str, Any] | None = None
        self._first = True
        self._jsonl_wanted, self._json_wanted, self._csv_wanted = jsonl, json_list, csv_table

    def open(self, keep_bytes: int | None = None) -> None:
        """Open the files; ``keep_bytes`` (resume) keeps that many bytes of the existing JSONL file."""
        if self._jsonl_wanted:
            path = self.out / JSONL_NAME
            if keep_bytes is None:
                self.jsonl = open(path, "w", encoding="utf-8")
            else:
                self.jsonl = open(path, "r+", encoding="utf-8")
                self.jsonl.truncate(keep_bytes)
                self.jsonl.seek(keep_bytes)
        if self._json_wanted:
            fd, tmp = temporary_beside(self.out / JSON_NAME)
            f = os.fdopen(fd, "w", encoding="utf-8")
            f.write("[")
            self._json = (f, tmp)
        if self._csv_wanted:
            fd, tmp = temporary_beside(self.out / CSV_NAME)
            f = os.fdopen(fd, "w", encoding="utf-8", newline="", errors="backslashreplace")  # undecodable file names
            writer = csv.writer(f)
            writer.writerow(csv_header(self.classes))
            self._csv = (f, tmp, writer)
        if self._parquet_wanted:
            from .parquet import ParquetRows

            self._parquet = ParquetRows(self.out / PARQUET_NAME, csv_header(self.classes))

    def add(self, record: dict[str, Any], stream: bool = True) -> None:
        """Write one record to every file (``stream=False``: not to the JSONL, for records it already holds)."""
        line = json.dumps(record) if self.jsonl is not None or self._json is not None else ""
        if self.jsonl is not None and stream:
            self.jsonl.write(line + "\n")
            self.jsonl.flush()
        if self._json is not None:
            self._json[0].write(("\n" if self._first else ",\n") + line)  # one record per line
            self._first = False
        if self._csv is not None or self._parquet is not None:
            rows = csv_rows(record, self.classes)
            if self._csv is not None:
                self._csv[2].writerows(rows)
            if self._parquet is not None:
                self._parquet.add(rows)

    def close(self, complete: bool = True) -> list[Path]:
        """Close the files; put the JSON and CSV files in place when ``complete`` (else drop them). Returns the
        paths written."""
        written = []
        if self.jsonl is not None:
            self.jsonl.close()
            written.append(self.out / JSONL_NAME)
        end = "]\n" if self._first else "\n]\n"
        for handle, name, suffix in ((self._json, JSON_NAME, end), (self._csv, CSV_NAME, "")):
            if handle is None:
                continue
            f, tmp = handle[0], handle[1]
            if complete:
                f.write(suffix)
            f.close()
            if complete:
                publish(tmp, self.out / name)
                written.append(self.out / name)
            else:
                Path(tmp).unlink(missing_ok=True)
        if self._parquet is not None:
            path = self._parquet.close(complete)
            written.extend([path] if path is not None else [])
        self._json = self._csv = self.jsonl = self._parquet = None
        return written


class Annotator:
    """Writes the annotated image of every still result and the annotated video of every video or webcam source, at
    the paths planned by :func:`annotated_paths` (by source index)."""

    def __init__(self, paths: dict[int, list[Path]], sources: Sequence[Source], every: int = 1) -> None:
        self.paths, self.every = paths, every
        self.index = {id(s): i for i, s in enumerate(sources)}
        self.video: VideoOut | None = None

    def add(self, result: Any) -> None:
        """Annotate one :class:`~pcnn_fer.faces.recognizer.Prediction` of a stream (skipped ones are ignored)."""
        if result.image is None or result.origin is None:
            return
        paths = self.paths[self.index[id(result.origin)]]
        if result.frame is None:
            result.save(paths[0])
            return
        if self.video is None:
            self.video = VideoOut(paths, result.fps / self.every if result.fps else None)
        self.video.write(result.plot())

    def end_source(self) -> Path | None:
        """Finish the current video, if any; its path, or None."""
        video, self.video = self.video, None
        return video.close() if video is not None else None


class VideoOut:
    """Lazily opened annotated-video writer (mp4v at ``paths[0]``, falling back to MJPG at ``paths[1]``)."""

    def __init__(self, paths: Sequence[Path], fps: float | None) -> None:
        self.paths, self.path, self.fps, self.writer = list(paths), Path(paths[0]), fps or 25.0, None
        self.size: tuple[int, int] = (0, 0)

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (resized to the first frame's size if needed)."""
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened() and len(self.paths) > 1:
                self.path = self.paths[1]
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


__all__ = ["Annotator", "annotated_paths", "relative_output_name", "check_out_folder", "check_no_overwrite",
           "csv_header", "csv_rows", "read_jsonl", "resume_point", "ResultFiles", "VideoOut", "JSONL_NAME", "JSON_NAME",
           "CSV_NAME", "PARQUET_NAME", "ERROR_COLUMN"]
