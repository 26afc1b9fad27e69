"""Decode a split once into a cached uint8 tensor ``[N, C, H, W]`` so training epochs never touch JPEG/PNG again.

``C`` is 1 when every kept image is grayscale (FER2013, FERPlus, CK+, JAFFE), else 3. The tensor is stored under
the cache directory (default ``~/.cache/pcnn_fer``, or ``$PCNN_FER_CACHE``) in a file keyed by a hash of the
dataset, split, file list with each file's size and modification time (or the pixel bytes of csv datasets), and
the requested size, so any change to the data or the size decodes afresh. Decoding runs in a thread pool (PIL
releases the GIL while decoding). Unreadable or missing images are skipped with a count and a warning; the
returned ``index`` lists the kept samples so labels stay aligned.

With a :class:`~pcnn_fer.data.align.FaceAligner` each image is decoded as its aligned face instead (see
:mod:`pcnn_fer.data.align`); the key then also holds the aligner's signature (detector and its settings, template,
fallback), and the file records which samples had a face (``face_found``). Aligned decoding runs in one thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import UsageError
from .datasets import DatasetError, Split

if TYPE_CHECKING:
    import torch

    from .align import FaceAligner

__all__ = ["CACHE_VERSION", "DecodedSplit", "cache_dir", "cache_key", "decode_split", "clear_cache"]

#: Bumped whenever the on-disk format or decoding changes, invalidating older cache files (2: decoding follows
#: :mod:`pcnn_fer.imageio`: EXIF orientation, alpha over white, 16-bit and float scaling).
CACHE_VERSION = 2


def cache_dir(override: Path | str | None = None) -> Path:
    """The cache directory: ``override``, else ``$PCNN_FER_CACHE``, else ``~/.cache/pcnn_fer``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("PCNN_FER_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pcnn_fer"


def _size_tuple(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        h = w = size
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise UsageError(f"size must be positive, got {size}")
    return h, w


def cache_key(split: Split, size: int | tuple[int, int] | None = None,
              align: dict[str, object] | None = None) -> str:
    """Hex digest identifying ``split``'s decoded content at ``size`` (files, their sizes and mtimes), face-aligned
    with the aligner whose :meth:`~pcnn_fer.data.align.FaceAligner.signature` is ``align`` (None: not aligned)."""
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "dataset": split.dataset, "split": split.name, "size": _size_tuple(size),
            "n": len(split)}
    if align is not None:
        head["align"] = align
    h.update(json.dumps(head).encode())
    if split.paths is None:
        assert split.pixels is not None
        h.update(np.ascontiguousarray(split.pixels).tobytes())
    else:
        for p in split.paths:
            try:
                st = os.stat(p)
                sig = f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n"
            except OSError:
                sig = f"{p}\0missing\n"
            h.update(sig.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass
class DecodedSplit:
    """A decoded split: ``images`` uint8 [M, C, H, W] for the kept samples ``index`` (indices into the split)."""

    images: torch.Tensor
    index: np.ndarray
    labels: torch.Tensor
    soft_labels: torch.Tensor | None
    classes: tuple[str, ...]
    skipped: int
    path: Path | None
    from_cache: bool
    face_found: np.ndarray | None = None  # per kept sample, when face-aligned: a face was found (else fallback)

    def __len__(self) -> int:
        """Number of decoded (kept) samples."""
        return int(self.images.shape[0])


def _decode_aligned(split: Split, size: tuple[int, int], aligner: FaceAligner
                    ) -> tuple[list[np.ndarray], list[int], list[str], list[bool]]:
    if size[0] != size[1]:
        raise ValueError(f"face-aligned decoding needs a square size, got {size}")
    arrays, kept, errors, found = [], [], [], []
    for i in range(len(split)):
        try:
            img = split.native_image(i)
        except DatasetError as e:
            errors.append(str(e))
            continue
        crop, has_face = aligner.align(img, size[0])
        arrays.append(crop)
        kept.append(i)
        found.append(has_face)
    return arrays, kept, errors, found


def _decode_one(split: Split, i: int, size: tuple[int, int] | None) -> np.ndarray | str:
    try:
        img = split.native_image(i)
    except DatasetError as e:
        return str(e)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


def _decode_all(split: Split, size: tuple[int, int] | None, workers: int) -> tuple[list[np.ndarray], list[int],
                                                                                   list[str]]:
    n = len(split)
    results: list[np.ndarray | str]

    def run(indices: range) -> list[np.ndarray | str]:
        return [_decode_one(split, i, size) for i in indices]

    if workers <= 1 or n < 128:
        results = run(range(n))
    else:
        # contiguous chunks: one task per chunk keeps pool overhead negligible for tiny (48x48) images
        step = max(32, min(1024, -(-n // (workers * 8))))
        chunks = [range(a, min(n, a + step)) for a in range(0, n, step)]
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = [r for part in ex.map(run, chunks) for r in part]
    arrays, kept, errors = [], [], []
    for i, r in enumerate(results):
        if isinstance(r, str):
            errors.append(r)
        else:
            arrays.append(r)
            kept.append(i)
    return arrays, kept, errors


def decode_split(split: Split, size: int | tuple[int, int] | None = None, cache: Path | str | None = None,
                 use_cache: bool = True, workers: int | None = None, align: FaceAligner | None = None,
                 log: Callable[[str], None] | None = None) -> DecodedSplit:
    """Decode ``split`` to a uint8 tensor [N, C, H, W] (C = 1 if all grayscale), from/to the on-disk cache.

    ``size`` (int or (H, W)) resizes every image (bilinear); without it all images must share one size.
    ``cache`` overrides the cache directory; ``use_cache=False`` neither reads nor writes it.
    ``align`` decodes each image as its aligned face at ``size`` (square, required), see :mod:`pcnn_fer.data.align`;
    ``log`` then receives a line with the time aligning took.
    """
    import torch

    hw = _size_tuple(size)
    if align is not None and hw is None:
        raise ValueError("face-aligned decoding needs a size")
    key = cache_key(split, hw, align.signature() if align is not None else None)
    directory = cache_dir(cache)
    tag = "-aligned" if align is not None else ""
    path = directory / f"{split.dataset}-{split.name.replace('/', '_')}{tag}-{key[:24]}.pt"

    def finish(images: torch.Tensor, index: np.ndarray, skipped: int, from_cache: bool,
               found: np.ndarray | None) -> DecodedSplit:
        idx_t = torch.from_numpy(index)
        soft = None if split.soft_labels is None else torch.from_numpy(split.soft_labels[index])
        return DecodedSplit(images, index, torch.from_numpy(split.labels)[idx_t], soft, split.classes, skipped,
                            path if use_cache else None, from_cache, found)

    if use_cache and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("key") == key:
                skipped = int(blob["skipped"])
                if skipped:
                    warnings.warn(f"{split.dataset}/{split.name}: {skipped} unreadable images were skipped when "
                                  f"this cache was built ({path})", stacklevel=2)
                found = blob["face_found"].numpy().astype(bool) if align is not None else None
                return finish(blob["images"], blob["index"].numpy().astype(np.int64), skipped, True, found)
        except Exception as e:  # a corrupt or foreign cache file is rebuilt, never trusted
            warnings.warn(f"ignoring unreadable cache file {path}: {e}", stacklevel=2)

    face_found = None
    if align is not None:
        assert hw is not None
        started = time.perf_counter()
        arrays, kept, errors, found_list = _decode_aligned(split, hw, align)
        face_found = np.array(found_list, dtype=bool)
        if log is not None and kept:
            seconds = time.perf_counter() - started
            log(f"aligned the faces of {len(kept)} images of {split.dataset}/{split.name} in {seconds:.1f} s "
                f"({1000 * seconds / len(kept):.0f} ms per image, detector {align.name})")
    else:
        n_workers = workers if workers is not None else min(8, os.cpu_count() or 1)
        arrays, kept, errors = _decode_all(split, hw, n_workers)
    if errors:
        warnings.warn(f"{split.dataset}/{split.name}: skipped {len(errors)} of {len(split)} unreadable or missing "
                      f"images; first: {errors[0]}", stacklevel=2)
    if not arrays:
        raise DatasetError(f"{split.dataset}/{split.name}: no readable image among {len(split)}"
                           + (f"; first error: {errors[0]}" if errors else ""))
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise DatasetError(f"{split.dataset}/{split.name}: images have different sizes {sorted(shapes)[:4]}; "
                           f"pass size= to resize them")
    gray = all(a.ndim == 2 for a in arrays)
    if gray:
        stacked = np.stack(arrays)[:, None]
    else:
        stacked = np.stack([a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays])
        stacked = stacked.transpose(0, 3, 1, 2)
    images = torch.from_numpy(np.ascontiguousarray(stacked))
    index = np.array(kept, dtype=np.int64)
    if use_cache:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        blob = {"key": key, "images": images, "index": torch.from_numpy(index), "skipped": len(errors),
                "classes": list(split.classes)}
        if face_found is not None:
            blob["face_found"] = torch.from_numpy(face_found)
        torch.save(blob, tmp)
        os.replace(tmp, path)
    return finish(images, index, len(errors), False, face_found)


def clear_cache(cache: Path | str | None = None, dataset: str | None = None) -> int:
    """Delete cached tensors (all, or only ``dataset``'s); returns the number of files removed."""
    directory = cache_dir(cache)
    if not directory.is_dir():
        return 0
    n = 0
    for p in directory.glob(f"{dataset + '-' if dataset else ''}*.pt"):
        p.unlink()
        n += 1
    return n
