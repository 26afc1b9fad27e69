"""Turn ``pcnn predict`` SOURCE arguments into a stream of frames: image files, folders (recursive), glob patterns,
manifests (a ``.csv`` or ``.parquet`` table of paths), video files (every N-th frame), webcams (an integer index) and
image sequences (a folder of frames read as one video, ``pcnn predict --sequence FPS``).
Nothing here raises for a bad input: unusable inputs and unreadable video frames come out as :class:`Frame` records
with a ``skipped`` reason (an unreadable manifest itself is a one-line error)."""

from __future__ import annotations

import errno
import glob
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .imageio import MAX_PIXELS, ImageLoadError, load_image

#: Files with these suffixes are read with OpenCV's VideoCapture.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                              ".3gp", ".ts", ".mts", ".ogv"})
#: Files with these suffixes are collected from folders as images (an explicitly named file is tried whatever its
#: suffix).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".pnm", ".jfif", ".jp2", ".j2k", ".ico", ".tga", ".heic"})
#: Files with these suffixes, named as a SOURCE, are manifests: tables whose ``path`` column (else their first column)
#: lists the inputs, relative paths taken from the manifest's folder.
MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet"})
#: A video gives up after this many unreadable frames in a row.
MAX_BAD_FRAMES = 25
#: Frame rate assumed for a video that does not declare one (and an image sequence given none).
ASSUMED_FPS = 25.0


@dataclass(frozen=True)
class Source:
    """One input: ``kind`` is ``image``, ``video``, ``webcam``, ``sequence`` (a folder of frames read as one video,
    its images in name order) or ``missing``; ``location`` the path or camera index; ``root`` the folder it was found
    in (for output names), ``reason`` why a ``missing`` source is unusable, ``fps`` a sequence's frame rate."""

    kind: str
    location: str
    root: str | None = None
    reason: str | None = None
    fps: float | None = None

    @property
    def name(self) -> str:
        """The source as reported in outputs (the path as given, or ``webcam:N``)."""
        return f"webcam:{self.location}" if self.kind == "webcam" else self.location


@dataclass
class Frame:
    """One image to analyse: ``image`` (RGB uint8) or a ``skipped`` reason; ``frame`` is the video frame index
    (None for still images); ``fps`` the video's frame rate."""

    source: Source
    frame: int | None
    image: np.ndarray | None
    skipped: str | None = None
    fps: float | None = None


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def _classify(path: Path, root: str | None = None) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"
    return Source(kind, str(path), root)


def _walk(folder: Path) -> list[Source]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            suffix = Path(name).suffix.lower()
            if not name.startswith(".") and (suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS):
                found.append(_classify(Path(dirpath) / name, str(folder)))
    return found


def sequence_images(folder: str | Path) -> list[Source]:
    """The frames of an image sequence: the image files below ``folder`` (recursive), in name order."""
    return [s for s in _walk(Path(folder).expanduser()) if s.kind == "image"]


def _sequence(text: str, path: Path, fps: float) -> Source:
    """A folder SOURCE read as one image sequence at ``fps`` frames per second (``--sequence``)."""
    if not math.isfinite(fps) or fps <= 0:
        raise UsageError(f"--sequence must be a frame rate > 0 (frames per second), got {fps}")
    if not path.is_dir():
        raise UsageError(f"--sequence reads folders of frames as image sequences: {text} is not a folder")
    if not sequence_images(path):
        return Source("missing", text, reason="folder holds no image files (an image sequence is a folder of "
                                              "frames)")
    return Source("sequence", text, fps=float(fps))


def expand_sources(specs: Sequence[str | Path | Source], sequence_fps: float | None = None) -> list[Source]:
    """Expand SOURCE arguments: folders recursively (image and video suffixes only), glob patterns (``**``
    allowed), files as given, integer strings as webcam indices (unless a file of that name exists). Unusable
    arguments become ``missing`` sources with a reason; :class:`Source` objects are kept as they are. With
    ``sequence_fps`` every argument must be a folder, read as one image sequence at that frame rate (a
    :class:`~pcnn_fer.errors.UsageError` otherwise)."""
    sources: list[Source] = []
    for spec in specs:
        if isinstance(spec, Source):
            sources.append(spec)
            continue
        text = str(spec)
        path = Path(text).expanduser()
        if sequence_fps is not None:
            sources.append(_sequence(text, path, sequence_fps))
        elif path.is_dir():
            found = _walk(path)
            sources.extend(found or [Source("missing", text, reason="folder holds no image or video files")])
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
            sources.extend(read_manifest(path))
        elif path.is_file():
            sources.append(_classify(path))
        elif text.strip().isdigit():
            sources.append(Source("webcam", str(int(text))))
        elif _is_glob(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            expanded: list[Source] = []
            for m in matches:
                p = Path(m)
                expanded.extend(_walk(p) if p.is_dir() else [_classify(p)] if p.is_file() else [])
            sources.extend(expanded or [Source("missing", text, reason="no file matches this pattern")])
        else:
            sources.append(Source("missing", text, reason=_why_unusable(path)))
    return sources


def _why_unusable(path: Path) -> str:
    """Why a path that is neither a file nor a folder cannot be read: missing, a symlink loop, a dangling link,
    a special file or the OS's own reason."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop: too many levels of symbolic links"
        if e.errno == errno.ENOENT and path.is_symlink():
            return f"a broken symbolic link to {os.readlink(path)}"
        return "no such file or directory" if e.errno == errno.ENOENT else (e.strerror or str(e)).lower()
    return f"not a regular file or folder: {stat.filemode(st.st_mode)}"


def _manifest_paths(path: Path) -> list[str]:
    """The entries of a manifest's ``path`` column (else its first column), in order, blanks dropped."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(f"{path}: reading a Parquet manifest needs pyarrow (pip install 'pcnn-fer[scale]')") \
                from None
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
        if table.num_columns == 0:
            return []
        column = table.column("path" if "path" in table.column_names else 0)
        return [str(v) for v in column.to_pylist() if v is not None and str(v).strip()]
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"{path}: not a readable CSV manifest ({e})") from None
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0]]
    if "path" in header:
        k = header.index("path")
        return [row[k].strip() for row in rows[1:] if len(row) > k and row[k].strip()]
    first = rows[0][0].strip()  # no path column: the first column; its first cell is a header unless it is a file
    keep = rows if (path.parent / first).expanduser().exists() else rows[1:]
    return [row[0].strip() for row in keep if row[0].strip()]


def read_manifest(path: Path) -> list[Source]:
    """The inputs a manifest lists (see :data:`MANIFEST_EXTENSIONS`): files as given, folders expanded; an entry
    that does not exist becomes a ``missing`` source naming the manifest line, so that it is one skipped record."""
    entries = _manifest_paths(path)
    if not entries:
        return [Source("missing", str(path), reason="manifest lists no paths")]
    sources: list[Source] = []
    for number, entry in enumerate(entries, 1):
        target = Path(entry).expanduser()
        if not target.is_absolute():
            target = path.parent / target
        if target.is_dir():
            sources.extend(_walk(target) or [Source("missing", str(target), reason="folder holds no image or video "
                                                                                   "files")])
        elif target.is_file():
            sources.append(_classify(target))
        else:
            sources.append(Source("missing", str(target), reason=f"{_why_unusable(target)} (entry {number} of "
                                                                 f"{path.name})"))
    return sources


def video_frame_count(path: str) -> int:
    """Number of frames a video file declares (0 when unknown or unreadable)."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def _read_video(source: Source, every: int, max_frames: int | None) -> Iterator[Frame]:
    import cv2

    webcam = source.kind == "webcam"
    cap = cv2.VideoCapture(int(source.location) if webcam else source.location)
    if not cap.isOpened():
        what = f"cannot open camera {source.location}" if webcam else "cannot open video (corrupt file or codec)"
        yield Frame(source, None, None, what)
        return
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or None
        declared = 0 if webcam else max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        index, bad, emitted, any_read = 0, 0, 0, False
        while max_frames is None or emitted < max_frames:
            wanted = index % every == 0
            if wanted:
                ok, bgr = cap.read()
                ok = ok and bgr is not None and bgr.size > 0
            else:
                ok, bgr = cap.grab(), None
            if ok:
                bad = 0
                any_read = True
                if wanted:
                    yield Frame(source, index, np.ascontiguousarray(bgr[..., ::-1] if bgr.ndim == 3 else
                                                                    np.repeat(bgr[..., None], 3, 2)), None, fps)
                    emitted += 1
            else:
                if not webcam and (declared == 0 or index >= declared):
                    break  # the end of the stream
                bad += 1
                if wanted:
                    yield Frame(source, index, None, "unreadable frame", fps)
                    emitted += 1
                if bad >= MAX_BAD_FRAMES:
                    break
            index += 1
        if not any_read and not webcam and emitted == 0:
            yield Frame(source, None, None, "video has no readable frames")
    finally:
        cap.release()


def iter_frames(source: Source, every: int = 1, max_pixels: int = MAX_PIXELS,
                max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of one source: one for an image, every ``every``-th frame of a video or webcam (at most
    ``max_frames``), or a single skipped record when the source cannot be used."""
    if every < 1:
        raise UsageError(f"every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"max_frames must be at least 1, got {max_frames}")
    if source.kind == "missing":
        yield Frame(source, None, None, source.reason or "unusable source")
    elif source.kind == "image":
        try:
            yield Frame(source, None, load_image(source.location, max_pixels=max_pixels))
        except ImageLoadError as e:
            yield Frame(source, None, None, e.reason)
    elif source.kind in ("video", "webcam"):
        yield from _read_video(source, every, max_frames)
    elif source.kind == "sequence":
        yield from image_sequence(source, sequence_images(source.location), source.fps, every, max_pixels,
                                  max_frames)
    else:
        raise ValueError(f"unknown source kind {source.kind!r}")


def image_sequence(sequence: str | Source, images: list[Source], fps: float | None, every: int = 1,
                   max_pixels: int | None = None, max_frames: int | None = None) -> Iterator[Frame]:
    """The image files ``images`` (in their order) as the frames of one video (``sequence``: its source, or a name
    for a new ``sequence`` source) at ``fps`` frames per second (:data:`ASSUMED_FPS` when None): every ``every``-th
    image, at most ``max_frames``; an unreadable image is a skipped frame."""
    rate = fps if fps and math.isfinite(fps) and fps > 0 else ASSUMED_FPS
    if not isinstance(sequence, Source):
        sequence = Source("sequence", sequence, fps=rate)
    for emitted, index in enumerate(range(0, len(images), every)):
        if max_frames is not None and emitted >= max_frames:
            return
        try:
            rgb = load_image(images[index].location, **({} if max_pixels is None else {"max_pixels": max_pixels}))
            yield Frame(sequence, index, rgb, None, rate)
        except ImageLoadError as e:
            yield Frame(sequence, index, None, e.reason, rate)


__all__ = ["Source", "Frame", "expand_sources", "read_manifest", "MANIFEST_EXTENSIONS", "iter_frames",
           "video_frame_count", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS", "MAX_BAD_FRAMES", "ASSUMED_FPS",
           "image_sequence", "sequence_images"]
