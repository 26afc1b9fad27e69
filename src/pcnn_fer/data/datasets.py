"""Dataset readers: one registry, each reader parsing its dataset's native (as-downloaded) layout.

Every reader returns :class:`Split` objects: file paths (or in-memory pixels for csv-pixel releases), integer labels
in the dataset's declared class order (canonical names, see :mod:`pcnn_fer.classes`), optional soft labels, file
stems (used to match published subset lists) and subjects (for subject-independent protocols).

Readers never decode images to build a split: counts come from label files / directory listings, so a split can be
described even when its images are absent (RAF-DB here ships labels only). Decoding happens lazily
(:meth:`Split.image`) or in bulk through :mod:`pcnn_fer.data.cache`.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..classes import CANONICAL_CLASSES, canonical_name
from ..errors import PCNNError

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "AffectNetReader",
    "CKPlusReader",
    "DatasetError",
    "DatasetReader",
    "FER2013Reader",
    "FERPlusReader",
    "FolderReader",
    "JAFFEReader",
    "RAFDBReader",
    "Split",
    "SubsetInfo",
    "describe_datasets",
    "ferplus_label",
    "get_dataset",
    "load_split",
    "open_image",
    "register_dataset",
]

#: File extensions treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

# Keep csv's field limit large enough for FER2013 pixel strings (2304 numbers, ~8.5 kB; default limit is 128 kB, but
# some mirrors store larger faces).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DatasetError(PCNNError, ValueError):
    """A dataset cannot be read: wrong root, missing label file, malformed line, unreadable image, unknown name."""


def _err_line(path: Path | str, line_no: int, msg: str) -> DatasetError:
    return DatasetError(f"{path}:{line_no}: {msg}")


# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------


def _native(img: Image.Image) -> Image.Image:
    """Return ``img`` as mode ``L`` (any grayscale source, grayscale palettes included) or ``RGB``."""
    mode = img.mode
    if mode == "L":
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode in ("I", "F") and arr.max() <= 255:
            hi = 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        # Palette images (some JAFFE TIFFs): grayscale when every used palette entry is gray.
        rgb = img.convert("RGB")
        arr = np.asarray(rgb)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L")
        return rgb
    return img if mode == "RGB" else img.convert("RGB")


def open_image(path: Path | str, gray_if_possible: bool = True) -> Image.Image:
    """Decode an image file to mode ``L`` (grayscale sources) or ``RGB``; raise DatasetError if unreadable.

    With ``gray_if_possible``, RGB images whose three channels are identical are returned as ``L`` too.
    """
    try:
        with Image.open(path) as im:
            im.load()
            out = _native(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # PIL raises all of these
        raise DatasetError(f"cannot read image {path}: {e}") from e
    if gray_if_possible and out.mode == "RGB":
        arr = np.asarray(out)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            out = Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L")
    return out


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    with os.scandir(directory) as it:
        names = sorted(e.name for e in it if e.is_file() and _is_image(e.name) and not e.name.startswith("."))
    return [directory / n for n in names]


def _list_dirs(directory: Path) -> list[Path]:
    with os.scandir(directory) as it:
        names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    return [directory / n for n in names]


# ----------------------------------------------------------------------------------------------------------------------
# Split
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SubsetInfo:
    """How a published subset list matched a split (set by :func:`pcnn_fer.data.protocols.apply_subset`).

    ``matched`` counts list entries naming an image of the split (repeats included); ``duplicates`` counts entries
    repeating an earlier one; the restricted split holds ``matched - duplicates`` images unless repeats are kept.
    """

    list_file: str
    entries: int
    matched: int
    unmatched: int
    duplicates: int = 0
    unmatched_examples: tuple[str, ...] = ()


@dataclass
class Split:
    """One split of one dataset: sample references, labels in ``classes`` order, stems and subjects.

    ``paths`` is None for csv-pixel datasets (FER2013 csv), whose faces live in ``pixels`` (uint8 [N, H, W]).
    ``extras`` holds further per-sample arrays (e.g. FERPlus ``votes`` [N, 10]) that :meth:`subset` keeps aligned.
    """

    dataset: str
    name: str
    classes: tuple[str, ...]
    paths: list[Path] | None
    labels: np.ndarray
    soft_labels: np.ndarray | None = None
    stems: list[str] = field(default_factory=list)
    subjects: list[str] | None = None
    pixels: np.ndarray | None = None
    root: Path | None = None
    mode: str | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    subset_info: SubsetInfo | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        if self.soft_labels is not None:
            self.soft_labels = np.asarray(self.soft_labels, dtype=np.float32)
            if self.soft_labels.shape != (n, len(self.classes)):
                raise ValueError(f"soft_labels shape {self.soft_labels.shape} != {(n, len(self.classes))}")
        if self.paths is None and self.pixels is None:
            raise ValueError("a Split needs paths or pixels")
        for what, seq in (("paths", self.paths), ("stems", self.stems), ("subjects", self.subjects),
                          ("pixels", self.pixels)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{what} has {len(seq)} entries for {n} labels")
        for k, v in self.extras.items():
            if len(v) != n:
                raise ValueError(f"extras[{k!r}] has {len(v)} entries for {n} labels")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels out of range for {len(self.classes)} classes")

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.labels)

    def __repr__(self) -> str:
        return f"Split(dataset={self.dataset!r}, name={self.name!r}, n={len(self)}, classes={self.classes})"

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def image(self, i: int) -> Image.Image:
        """Sample ``i`` decoded as an RGB PIL image (DatasetError if its file is missing or unreadable)."""
        return self.native_image(i).convert("RGB")

    def native_image(self, i: int, gray_if_possible: bool = True) -> Image.Image:
        """Sample ``i`` decoded as mode ``L`` (grayscale source) or ``RGB``."""
        if self.pixels is not None:
            px = self.pixels[i]
            return Image.fromarray(np.ascontiguousarray(px), "L" if px.ndim == 2 else "RGB")
        assert self.paths is not None
        p = self.paths[i]
        if not p.exists():
            raise DatasetError(f"{self.dataset}/{self.name}: image file missing: {p}")
        return open_image(p, gray_if_possible=gray_if_possible)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
        """A new Split with samples ``indices`` (int indices or a boolean mask), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask of shape {idx.shape} for a split of {len(self)}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        lst = idx.tolist()
        return replace(
            self,
            paths=None if self.paths is None else [self.paths[i] for i in lst],
            labels=self.labels[idx],
            soft_labels=None if self.soft_labels is None else self.soft_labels[idx],
            stems=[self.stems[i] for i in lst],
            subjects=None if self.subjects is None else [self.subjects[i] for i in lst],
            pixels=None if self.pixels is None else self.pixels[idx],
            extras={k: v[idx] for k, v in self.extras.items()},
        )

    def counts(self) -> dict[str, int]:
        """Samples per class, in class order (zero counts included)."""
        c = np.bincount(self.labels, minlength=len(self.classes))
        return {name: int(c[i]) for i, name in enumerate(self.classes)}

    def missing_images(self) -> list[int]:
        """Indices of samples whose image file does not exist (always empty for csv-pixel splits)."""
        if self.paths is None:
            return []
        return [i for i, p in enumerate(self.paths) if not p.is_file()]

    def with_images(self, warn: bool = True) -> Split:
        """This split restricted to samples whose image file exists; warns with the count of missing ones.

        Raises DatasetError when no image at all is present (e.g. a RAF-DB label list without its images).
        """
        missing = self.missing_images()
        if not missing:
            return self
        if len(missing) == len(self):
            example = self.paths[0] if self.paths else "?"
            raise DatasetError(
                f"{self.dataset}/{self.name}: none of the {len(self)} images exist (e.g. {example}); "
                f"only the label list is present under {self.root}"
            )
        if warn:
            warnings.warn(
                f"{self.dataset}/{self.name}: {len(missing)} of {len(self)} image files missing, skipped "
                f"(e.g. {self.paths[missing[0]] if self.paths else '?'})",
                stacklevel=2,
            )
        keep = np.ones(len(self), dtype=bool)
        keep[missing] = False
        return self.subset(keep)


# ----------------------------------------------------------------------------------------------------------------------
# Reader base and registry
# ----------------------------------------------------------------------------------------------------------------------


class DatasetReader:
    """Base class of dataset readers. Subclasses set ``name`` and implement ``splits``, ``load`` and ``classes``.

    ``modes`` lists the accepted values of ``mode`` (the first is the default; None selects it).
    ``val_split`` names the dataset's own validation split (None: carve one from ``train_split``).
    """

    name: str = ""
    modes: tuple[str, ...] = ()
    train_split: str = "train"
    val_split: str | None = None
    test_split: str | None = "test"
    description: str = ""

    def check_mode(self, mode: str | None) -> str | None:
        """Return the effective mode (default for None), or raise DatasetError for an unknown one."""
        if not self.modes:
            if mode is not None:
                raise DatasetError(f"dataset {self.name!r} has no modes (got mode={mode!r})")
            return None
        if mode is None:
            return self.modes[0]
        if mode not in self.modes:
            raise DatasetError(f"dataset {self.name!r}: unknown mode {mode!r}; choose from {', '.join(self.modes)}")
        return mode

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """Class order (canonical names) of this dataset's labels under ``mode``."""
        raise NotImplementedError

    def splits(self, root: Path | str) -> list[str]:
        """Names of the splits present under ``root``."""
        raise NotImplementedError

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read split ``split`` of the dataset at ``root`` (labels only; images are decoded lazily)."""
        raise NotImplementedError

    def _check_split(self, root: Path, split: str) -> None:
        present = self.splits(root)
        if split not in present:
            raise DatasetError(
                f"{self.name}: no split {split!r} under {root}; present: {', '.join(present) or 'none'}"
            )


class UnsplitDatasetReader(DatasetReader):
    """A dataset without an official split (CK+, JAFFE): one split ``all``, evaluated by subject k-fold / LOSO.

    Subclasses set ``class_order`` and implement ``_locate(root) -> Path`` and ``_read_all(folder) -> Split``.
    """

    train_split = "all"
    test_split = None
    class_order: tuple[str, ...] = ()

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """The dataset's classes in its own label order."""
        self.check_mode(mode)
        return self.class_order

    def _locate(self, root: Path | str) -> Path:
        raise NotImplementedError

    def _read_all(self, folder: Path) -> Split:
        raise NotImplementedError

    def splits(self, root: Path | str) -> list[str]:
        """Always ``["all"]`` (no official split: use subject k-fold or leave-one-subject-out)."""
        self._locate(root)
        return ["all"]

    def load(self, root: Path | str, split: str = "all", mode: str | None = None) -> Split:
        """Read the whole dataset (split ``all``) with subjects from the file names."""
        self.check_mode(mode)
        folder = self._locate(root)
        if split != "all":
            raise DatasetError(f"{self.name}: only split 'all' exists (got {split!r}); use protocols.subject_kfold")
        return self._read_all(folder)


DATASETS: dict[str, DatasetReader] = {}


def register_dataset(reader: DatasetReader) -> DatasetReader:
    """Add ``reader`` to :data:`DATASETS` under ``reader.name`` (replacing any previous one)."""
    DATASETS[reader.name] = reader
    return reader


def get_dataset(name: str) -> DatasetReader:
    """The registered reader called ``name`` (DatasetError listing the known ones otherwise)."""
    key = name.strip().lower().replace("-", "").replace("_", "").replace("+", "plus")
    aliases = {"fer": "fer2013", "ferplus": "ferplus", "fer2013plus": "ferplus", "raf": "rafdb", "ck": "ckplus",
               "ckplus48": "ckplus", "ck48": "ckplus", "imagefolder": "folder"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


def load_split(name: str, root: Path | str, split: str, mode: str | None = None) -> Split:
    """Read split ``split`` of dataset ``name`` stored at ``root``."""
    return get_dataset(name).load(root, split, mode)


def _root(root: Path | str, dataset: str) -> Path:
    p = Path(root).expanduser()
    if not p.exists():
        raise DatasetError(f"{dataset}: root {p} does not exist")
    return p


def _find_root(root: Path, ok: Callable[[Path], bool], dataset: str, expected: str, depth: int = 2) -> Path:
    """``root`` itself, or the unique descendant (up to ``depth`` levels) satisfying ``ok``."""
    if ok(root):
        return root
    frontier = [root] if root.is_dir() else []
    for _ in range(depth):
        nxt: list[Path] = []
        for d in frontier:
            try:
                nxt.extend(_list_dirs(d))
            except OSError:
                continue
        hits = [d for d in nxt if ok(d)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DatasetError(f"{dataset}: several candidate roots under {root}: {', '.join(map(str, hits))}")
        frontier = nxt
    raise DatasetError(f"{dataset}: {root} does not look like a {dataset} root; expected {expected}")


# ----------------------------------------------------------------------------------------------------------------------
# FER2013
# ----------------------------------------------------------------------------------------------------------------------

def _parse_pixels(text: str) -> np.ndarray | None:
    """Space-separated integers -> int64 array (None if malformed); 5x faster than split() for FER2013 rows."""
    try:
        return np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning):
        return None


FER2013_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
_FER2013_USAGE = {"training": "train", "publictest": "public_test", "privatetest": "private_test"}
_FER2013_SPLIT_ORDER = ("train", "public_test", "private_test", "test")


class FER2013Reader(DatasetReader):
    """FER2013: the Kaggle csv (``emotion,pixels,Usage``) or the image-folder release (``train/``, ``test/``).

    Labels: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral. Splits train / public_test /
    private_test, taken from the csv's Usage column or from the file-name prefix (Training_, PublicTest_,
    PrivateTest_) in the folder release; an unprefixed file under ``test/`` goes to a split named ``test``.
    """

    name = "fer2013"
    val_split = "public_test"
    test_split = "private_test"
    description = "FER2013 (Kaggle csv or image folders), 7 classes, 48x48 gray"
    CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")

    def __init__(self) -> None:
        self._memo: tuple[tuple[str, int, int], dict[str, tuple[list[int], list[np.ndarray], list[int]]]] | None = None

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """FER2013 class order (emotion ids 0..6) in canonical names."""
        self.check_mode(mode)
        return FER2013_CLASSES

    def _locate(self, root: Path | str) -> tuple[str, Path]:
        r = _root(root, self.name)
        if r.is_file():
            return "csv", r
        for n in self.CSV_NAMES:
            if (r / n).is_file():
                return "csv", r / n

        def ok(d: Path) -> bool:
            return (d / "train").is_dir() or (d / "test").is_dir()

        try:
            return "folder", _find_root(r, ok, self.name, "train/<class>/*.jpg and test/<class>/*.jpg, or fer2013.csv")
        except DatasetError:
            for d in [r, *_list_dirs(r)]:
                for n in self.CSV_NAMES:
                    if (d / n).is_file():
                        return "csv", d / n
            raise

    # -- csv -----------------------------------------------------------------------------------------------------
    def _read_csv(self, path: Path) -> dict[str, tuple[list[int], list[np.ndarray], list[int]]]:
        st = path.stat()
        memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if self._memo is not None and self._memo[0] == memo_key:
            return self._memo[1]
        out = self._parse_csv(path)
        self._memo = (memo_key, out)
        return out

    def _parse_csv(self, path: Path) -> dict[str, tuple[list[int], list[np.ndarray], list[int]]]:
        out: dict[str, tuple[list[int], list[np.ndarray], list[int]]] = {}
        with open(path, newline="") as f, warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # older numpy: fromstring warns on bad data
            reader = csv.reader(f)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise DatasetError(f"{path}: empty file") from None
            try:
                ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("usage")
            except ValueError:
                raise _err_line(path, 1, f"expected a header with emotion, pixels, Usage; got {header}") from None
            side = None
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise _err_line(path, line_no, f"expected {len(header)} fields, got {len(row)}")
                try:
                    label = int(row[ie])
                except ValueError:
                    raise _err_line(path, line_no, f"emotion {row[ie]!r} is not an integer") from None
                if not 0 <= label < 7:
                    raise _err_line(path, line_no, f"emotion {label} outside 0..6")
                usage = row[iu].strip().lower().replace(" ", "")
                if usage not in _FER2013_USAGE:
                    raise _err_line(path, line_no, f"unknown Usage {row[iu]!r} (Training, PublicTest, PrivateTest)")
                px = _parse_pixels(row[ip])
                if px is None:
                    raise _err_line(path, line_no, "pixels are not space-separated integers")
                s = int(round(np.sqrt(px.size)))
                if px.size == 0 or s * s != px.size:
                    raise _err_line(path, line_no, f"{px.size} pixels is not a square image")
                if side is None:
                    side = s
                elif s != side:
                    raise _err_line(path, line_no, f"{s}x{s} image, earlier rows are {side}x{side}")
                if px.min() < 0 or px.max() > 255:
                    raise _err_line(path, line_no, "pixel values outside 0..255")
                labels, pixels, lines = out.setdefault(_FER2013_USAGE[usage], ([], [], []))
                labels.append(label)
                pixels.append(px.astype(np.uint8).reshape(s, s))
                lines.append(line_no)
        return out

    # -- folders -------------------------------------------------------------------------------------------------
    def _scan_folder(self, root: Path) -> dict[str, tuple[list[Path], list[int]]]:
        out: dict[str, tuple[list[Path], list[int]]] = {}
        for top in ("train", "test", "val", "valid", "validation"):
            d = root / top
            if not d.is_dir():
                continue
            for cdir in _list_dirs(d):
                try:
                    label = FER2013_CLASSES.index(canonical_name(cdir.name))
                except ValueError as e:
                    raise DatasetError(f"fer2013: class folder {cdir} is not a FER2013 class: {e}") from None
                for p in _list_images(cdir):
                    prefix = p.name.split("_", 1)[0].lower()
                    split = _FER2013_USAGE.get(prefix)
                    if split is None:
                        split = "train" if top == "train" else "test"
                    paths, labels = out.setdefault(split, ([], []))
                    paths.append(p)
                    labels.append(label)
        return out

    def splits(self, root: Path | str) -> list[str]:
        """Splits present: train, public_test, private_test (csv Usage values or folder file prefixes)."""
        kind, loc = self._locate(root)
        found = self._read_csv(loc) if kind == "csv" else self._scan_folder(loc)
        return [s for s in _FER2013_SPLIT_ORDER if s in found]

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one FER2013 split from the csv (pixels in memory) or the folder release (paths)."""
        self.check_mode(mode)
        kind, loc = self._locate(root)
        if kind == "csv":
            found = self._read_csv(loc)
            if split not in found:
                raise DatasetError(f"fer2013: no split {split!r} in {loc}; present: {', '.join(found) or 'none'}")
            labels, pixels, lines = found[split]
            return Split(self.name, split, FER2013_CLASSES, None, np.array(labels),
                         stems=[f"{split}_{ln}" for ln in lines], pixels=np.stack(pixels), root=loc,
                         extras={"csv_line": np.array(lines, dtype=np.int64)})
        found_f = self._scan_folder(loc)
        if split not in found_f:
            raise DatasetError(f"fer2013: no split {split!r} under {loc}; present: {', '.join(found_f) or 'none'}")
        paths, labels = found_f[split]
        return Split(self.name, split, FER2013_CLASSES, paths, np.array(labels), stems=[p.stem for p in paths],
                     root=loc)


# ----------------------------------------------------------------------------------------------------------------------
# FERPlus
# ----------------------------------------------------------------------------------------------------------------------

#: FERPlus vote columns of label.csv, in file order.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                         "contempt", "unknown", "NF")
FERPLUS_CLASSES: tuple[str, ...] = CANONICAL_CLASSES
_FERPLUS_DIRS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}


def ferplus_label(votes: Sequence[float], mode: str) -> np.ndarray | None:
    """FERPlus label distribution over the 8 emotions from 10 vote counts, or None if the face is dropped.

    Follows Microsoft's reference code (FERPlus ``ferplus.py``, ``_process_data``):

    * all modes but ``plurality`` first zero vote counts of 1 (single-annotator outliers);
    * ``majority``: the top class needs more than half of the remaining votes -> one-hot;
    * ``plurality``: the top class of the raw votes (first in column order on ties) -> one-hot;
    * ``probability`` / ``crossentropy``: take the top-voted classes (ties together) until they hold >= 75 % of the
      remaining votes, at most 3 classes; drop the face when they hold <= 50 % or more than 3 tie; the
      distribution is their normalised votes (the training loss decides how it is used);

    in every mode a face whose winner is ``unknown`` or ``NF`` (non-face) is dropped.
    """
    raw = np.asarray(votes, dtype=np.float64).copy()
    if raw.shape != (10,):
        raise ValueError(f"expected 10 vote counts, got {raw.shape}")
    size = 10
    if mode == "plurality":
        if raw.sum() <= 0:
            return None
        win = int(np.argmax(raw))
        if win >= 8:
            return None
        out = np.zeros(8, dtype=np.float32)
        out[win] = 1.0
        return out
    raw[raw < 1.0 + sys.float_info.epsilon] = 0.0
    total = raw.sum()
    emotion = np.zeros(size, dtype=np.float64)
    if mode == "majority":
        maxval = raw.max()
        if total <= 0 or maxval <= 0.5 * total:
            return None
        emotion[int(np.argmax(raw))] = maxval
    elif mode in ("probability", "crossentropy"):
        sum_part = 0.0
        count = 0
        valid = True
        while sum_part < 0.75 * total and count < 3 and valid:
            maxval = raw.max()
            for i in range(size):
                if raw[i] == maxval:
                    emotion[i] = maxval
                    raw[i] = 0
                    sum_part += emotion[i]
                    count += 1
                    if i >= 8:  # unknown / non-face shares the top vote count
                        valid = False
                        if emotion.sum() > maxval:  # emotions came before it: keep them, drop unknown/NF
                            emotion[i] = 0
                            count -= 1
                        break
        if total <= 0 or emotion.sum() <= 0.5 * total or count > 3:
            return None
    else:
        raise ValueError(f"unknown FERPlus label mode {mode!r}")
    if emotion.sum() <= 0 or int(np.argmax(emotion)) >= 8:
        return None
    dist = emotion[:8]
    return (dist / dist.sum()).astype(np.float32)


class FERPlusReader(DatasetReader):
    """FERPlus in Microsoft's layout: ``FER2013{Train,Valid,Test}/label.csv`` (no header) next to the PNGs.

    label.csv rows: ``image, face box, 10 vote counts`` (neutral, happiness, surprise, sadness, anger, disgust,
    fear, contempt, unknown, NF). Modes: majority (default), plurality, probability, crossentropy
    (see :func:`ferplus_label`). 8 classes in the FERPlus column order; splits train, valid, test.
    """

    name = "ferplus"
    modes = ("majority", "plurality", "probability", "crossentropy")
    val_split = "valid"
    test_split = "test"
    description = "FERPlus (Microsoft label.csv per split), 8 classes, 4 label modes"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """The 8 FERPlus emotions (canonical order) for every mode."""
        self.check_mode(mode)
        return FERPLUS_CLASSES

    def _locate(self, root: Path | str) -> Path:
        r = _root(root, self.name)
        return _find_root(r, lambda d: any((d / s).is_dir() for s in _FERPLUS_DIRS.values()), self.name,
                          "FER2013Train/, FER2013Valid/, FER2013Test/ folders each holding label.csv")

    def splits(self, root: Path | str) -> list[str]:
        """Splits whose folder holds a label.csv (train, valid, test)."""
        r = self._locate(root)
        return [s for s, d in _FERPLUS_DIRS.items() if (r / d / "label.csv").is_file()]

    def read_votes(self, root: Path | str, split: str) -> tuple[Path, list[str], np.ndarray, list[int]]:
        """Folder, image names, vote counts [N, 10] and line numbers of one split's label.csv."""
        r = self._locate(root)
        if split not in _FERPLUS_DIRS:
            raise DatasetError(f"ferplus: unknown split {split!r}; choose from {', '.join(_FERPLUS_DIRS)}")
        d = r / _FERPLUS_DIRS[split]
        path = d / "label.csv"
        if not path.is_file():
            raise DatasetError(f"ferplus: label file {path} not found (split {split!r}); "
                               f"present splits: {', '.join(self.splits(r)) or 'none'}")
        names: list[str] = []
        votes: list[list[float]] = []
        lines: list[int] = []
        with open(path, newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 12:
                    raise _err_line(path, line_no, f"expected 12 fields (image, face box, 10 votes), got {len(row)}")
                try:
                    v = [float(x) for x in row[2:]]
                except ValueError:
                    if line_no == 1 and not names:  # tolerate a header row
                        continue
                    raise _err_line(path, line_no, f"vote counts must be numbers: {row[2:]}") from None
                if any(x < 0 for x in v):
                    raise _err_line(path, line_no, "negative vote count")
                name = row[0].strip()
                if not name:
                    raise _err_line(path, line_no, "empty image name")
                names.append(name)
                votes.append(v)
                lines.append(line_no)
        return d, names, np.array(votes, dtype=np.float32).reshape(-1, 10), lines

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one FERPlus split under label mode ``mode``; dropped faces are left out."""
        m = self.check_mode(mode)
        assert m is not None
        d, names, votes, _ = self.read_votes(root, split)
        keep: list[int] = []
        dists: list[np.ndarray] = []
        for i, v in enumerate(votes):
            dist = ferplus_label(v, m)
            if dist is not None:
                keep.append(i)
                dists.append(dist)
        soft = np.stack(dists) if dists else np.zeros((0, 8), np.float32)
        labels = soft.argmax(axis=1) if len(dists) else np.zeros(0, np.int64)
        paths = [d / names[i] for i in keep]
        return Split(self.name, split, FERPLUS_CLASSES, paths, labels,
                     soft_labels=soft if m in ("probability", "crossentropy") else None,
                     stems=[Path(names[i]).stem for i in keep], root=d.parent, mode=m,
                     extras={"votes": votes[keep] if keep else np.zeros((0, 10), np.float32)})


# ----------------------------------------------------------------------------------------------------------------------
# RAF-DB
# ----------------------------------------------------------------------------------------------------------------------

RAFDB_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


class RAFDBReader(DatasetReader):
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7) plus images in
    ``Image/aligned/<stem>_aligned.jpg`` or ``Image/original/<stem>.jpg``.

    Mode selects the image variant: ``aligned`` (default when present) or ``original``. Splits train / test from
    the name prefix. Splits are built from the label list alone, so counts work without images; use
    :meth:`Split.with_images` / :meth:`Split.missing_images` to handle absent files.
    """

    name = "rafdb"
    modes = ("aligned", "original")
    test_split = "test"
    description = "RAF-DB basic (list_patition_label.txt + Image/aligned), 7 classes"
    LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """RAF-DB official label order (1 surprise .. 7 neutral) in canonical names."""
        self.check_mode(mode)
        return RAFDB_CLASSES

    def _locate(self, root: Path | str) -> Path:
        r = _root(root, self.name)
        return _find_root(r, lambda d: (d / self.LABEL_FILE).is_file(), self.name,
                          f"{self.LABEL_FILE} (and Image/aligned/ or Image/original/)")

    def read_labels(self, root: Path | str) -> tuple[Path, list[tuple[str, str, int, int]]]:
        """Root and (split, image name, label index, line number) for every line of the label list."""
        r = self._locate(root)
        path = r / self.LABEL_FILE
        out = []
        with open(path) as f:
            for line_no, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise _err_line(path, line_no, f"expected '<image> <label>', got {line.strip()!r}")
                name, lab = parts
                try:
                    label = int(lab)
                except ValueError:
                    raise _err_line(path, line_no, f"label {lab!r} is not an integer") from None
                if not 1 <= label <= 7:
                    raise _err_line(path, line_no, f"label {label} outside 1..7")
                prefix = name.split("_", 1)[0].lower()
                if prefix not in ("train", "test"):
                    raise _err_line(path, line_no, f"image name {name!r} does not start with train_ or test_")
                out.append((prefix, name, label - 1, line_no))
        return r, out

    def splits(self, root: Path | str) -> list[str]:
        """train and/or test, as named in the label list."""
        _, rows = self.read_labels(root)
        present = {s for s, *_ in rows}
        return [s for s in ("train", "test") if s in present]

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one RAF-DB split from the label list; image paths follow ``mode`` (aligned/original)."""
        r, rows = self.read_labels(root)
        if mode is None:
            mode = "original" if (not (r / "Image" / "aligned").is_dir() and (r / "Image" / "original").is_dir()) \
                else "aligned"
        m = self.check_mode(mode)
        rows = [row for row in rows if row[0] == split]
        if not rows:
            raise DatasetError(f"rafdb: no split {split!r} in {r / self.LABEL_FILE}; present: train, test")
        stems = [Path(name).stem for _, name, _, _ in rows]
        if m == "aligned":
            paths = [r / "Image" / "aligned" / f"{s}_aligned.jpg" for s in stems]
        else:
            paths = [r / "Image" / "original" / name for _, name, _, _ in rows]
        return Split(self.name, split, RAFDB_CLASSES, paths, np.array([lab for _, _, lab, _ in rows]), stems=stems,
                     root=r, mode=m)


# ----------------------------------------------------------------------------------------------------------------------
# CK+ (CK+48 release)
# ----------------------------------------------------------------------------------------------------------------------

#: CK+ emotion codes 0..7 (0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise).
CKPLUS_CODE_ORDER: tuple[str, ...] = ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness",
                                      "surprise")
CKPLUS_CLASSES: tuple[str, ...] = CKPLUS_CODE_ORDER[1:]
_CK_SUBJECT = re.compile(r"^(S\d+)_", re.IGNORECASE)


class CKPlusReader(UnsplitDatasetReader):
    """CK+48: ``<class>/S###_###_########.png`` (subject ``S###``); one split ``all``.

    Classes in CK+ emotion-code order: anger, contempt, disgust, fear, happiness, sadness, surprise; a ``neutral``
    folder, when present, is prepended (code 0).
    """

    name = "ckplus"
    class_order = CKPLUS_CLASSES
    description = "CK+48 (class folders, subject in file name), 7 classes, subject k-fold"

    def _locate(self, root: Path | str) -> Path:
        r = _root(root, self.name)

        def ok(d: Path) -> bool:
            subs = _list_dirs(d) if d.is_dir() else []
            names = set()
            for s in subs:
                try:
                    names.add(canonical_name(s.name))
                except ValueError:
                    return False
            return len(names) >= 2

        return _find_root(r, ok, self.name, "<class>/S###_###_########.png class folders (CK+48)")

    def _read_all(self, r: Path) -> Split:
        dirs = {canonical_name(d.name): d for d in _list_dirs(r)}
        unknown = [c for c in dirs if c not in CKPLUS_CODE_ORDER]
        if unknown:
            raise DatasetError(f"ckplus: class folders {unknown} under {r} are not CK+ classes")
        classes = CKPLUS_CLASSES if "neutral" not in dirs else CKPLUS_CODE_ORDER
        paths: list[Path] = []
        labels: list[int] = []
        subjects: list[str] = []
        for ci, c in enumerate(classes):
            if c not in dirs:
                continue
            for p in _list_images(dirs[c]):
                m = _CK_SUBJECT.match(p.name)
                if not m:
                    raise DatasetError(f"ckplus: file name {p} does not start with a subject id S###_")
                paths.append(p)
                labels.append(ci)
                subjects.append(m.group(1).upper())
        if not paths:
            raise DatasetError(f"ckplus: no images under {r}")
        return Split(self.name, "all", classes, paths, np.array(labels), stems=[p.stem for p in paths],
                     subjects=subjects, root=r)


# ----------------------------------------------------------------------------------------------------------------------
# JAFFE
# ----------------------------------------------------------------------------------------------------------------------

JAFFE_CODES: dict[str, str] = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
                               "SA": "sadness", "SU": "surprise"}
JAFFE_CLASSES: tuple[str, ...] = tuple(JAFFE_CODES.values())
_JAFFE_NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?$")


class JAFFEReader(UnsplitDatasetReader):
    """JAFFE: a flat folder of ``XX.EEn.NNN.tiff`` (subject XX, expression EE in AN DI FE HA NE SA SU).

    Split ``all``; classes in code order anger, disgust, fear, happiness, neutral, sadness, surprise. Some files are
    palette-mode TIFFs: decoding converts them to grayscale. Other image files in the folder are skipped with a
    warning; non-image files (README) are ignored.
    """

    name = "jaffe"
    class_order = JAFFE_CLASSES
    description = "JAFFE (flat XX.EEn.NNN.tiff folder), 7 classes, subject k-fold / LOSO"

    def _locate(self, root: Path | str) -> Path:
        r = _root(root, self.name)

        def ok(d: Path) -> bool:
            if not d.is_dir():
                return False
            with os.scandir(d) as it:
                return any(e.is_file() and _JAFFE_NAME.match(e.name) for e in it)

        return _find_root(r, ok, self.name, "a folder of XX.EEn.NNN.tiff files")

    def _read_all(self, r: Path) -> Split:
        paths, labels, subjects, skipped = [], [], [], []
        for p in _list_images(r):
            m = _JAFFE_NAME.match(p.name)
            code = m.group(2).upper() if m else None
            if m is None or code not in JAFFE_CODES:
                skipped.append(p.name)
                continue
            paths.append(p)
            labels.append(JAFFE_CLASSES.index(JAFFE_CODES[code]))
            subjects.append(m.group(1).upper())
        if skipped:
            warnings.warn(f"jaffe: skipped {len(skipped)} image files not named XX.EEn.NNN.tiff in {r} "
                          f"(e.g. {skipped[0]})", stacklevel=2)
        return Split(self.name, "all", JAFFE_CLASSES, paths, np.array(labels), stems=[p.stem for p in paths],
                     subjects=subjects, root=r)


# ----------------------------------------------------------------------------------------------------------------------
# AffectNet
# ----------------------------------------------------------------------------------------------------------------------

AFFECTNET_CLASSES: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger",
                                      "contempt")
_AFFECTNET_CSV = {"train": ("training.csv", "train.csv"), "valid": ("validation.csv", "valid.csv", "val.csv"),
                  "test": ("test.csv",)}
_AFFECTNET_PATH_COLS = ("subdirectory_filepath", "filepath", "file_path", "path", "pth", "image", "file", "filename")
_AFFECTNET_LABEL_COLS = ("expression", "label", "emotion", "class")
_AFFECTNET_IMAGE_DIRS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images",
                         "Manually_Annotated_compressed/Manually_Annotated_Images", "images")


class AffectNetReader(DatasetReader):
    """AffectNet: csv files (training.csv, validation.csv[, test.csv]) of image paths and expression ids.

    Ids: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt; ids above 7 (none,
    uncertain, non-face) are dropped. Mode ``8`` (default) keeps contempt, ``7`` drops it. The label column may
    also hold class names. Image paths are resolved against ``Manually_Annotated_Images/`` when present, else
    against the csv's folder. Splits: train, valid (the usual evaluation set), test when a test csv exists.
    """

    name = "affectnet"
    modes = ("8", "7")
    test_split = "valid"
    description = "AffectNet (csv of paths + expression ids), 7 or 8 classes"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """AffectNet id order, 8 classes (mode '8') or without contempt (mode '7')."""
        m = self.check_mode(str(mode) if mode is not None else None)
        return AFFECTNET_CLASSES if m == "8" else AFFECTNET_CLASSES[:7]

    def _locate(self, root: Path | str) -> Path:
        r = _root(root, self.name)
        if r.is_file():
            return r.parent

        def ok(d: Path) -> bool:
            return any((d / n).is_file() for names in _AFFECTNET_CSV.values() for n in names)

        return _find_root(r, ok, self.name, "training.csv / validation.csv (AffectNet)")

    def _csv(self, r: Path, split: str) -> Path | None:
        for n in _AFFECTNET_CSV.get(split, ()):
            if (r / n).is_file():
                return r / n
        return None

    def splits(self, root: Path | str) -> list[str]:
        """Splits with a csv: train (training.csv), valid (validation.csv), test (test.csv)."""
        r = self._locate(root)
        return [s for s in _AFFECTNET_CSV if self._csv(r, s) is not None]

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one AffectNet split; non-expression ids (>7), and contempt in mode '7', are dropped."""
        m = self.check_mode(str(mode) if mode is not None else None)
        classes = self.classes(m)
        r = self._locate(root)
        if split not in _AFFECTNET_CSV:
            raise DatasetError(f"affectnet: unknown split {split!r}; choose from {', '.join(_AFFECTNET_CSV)}")
        path = self._csv(r, split)
        if path is None:
            raise DatasetError(f"affectnet: no csv for split {split!r} under {r} "
                               f"(looked for {', '.join(_AFFECTNET_CSV[split])})")
        img_dir = next((r / d for d in _AFFECTNET_IMAGE_DIRS if (r / d).is_dir()), r)
        paths: list[Path] = []
        labels: list[int] = []
        with open(path, newline="") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise DatasetError(f"{path}: empty file") from None
            ip = next((header.index(c) for c in _AFFECTNET_PATH_COLS if c in header), None)
            il = next((header.index(c) for c in _AFFECTNET_LABEL_COLS if c in header), None)
            if ip is None or il is None:
                raise _err_line(path, 1, f"header needs a path column ({'/'.join(_AFFECTNET_PATH_COLS[:5])}) and "
                                         f"a label column ({'/'.join(_AFFECTNET_LABEL_COLS)}); got {header}")
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ip, il):
                    raise _err_line(path, line_no, f"expected at least {max(ip, il) + 1} fields, got {len(row)}")
                raw = row[il].strip()
                try:
                    code = int(float(raw))
                    if code < 0:
                        raise _err_line(path, line_no, f"negative expression id {code}")
                    if code > 7:
                        continue
                    cname = AFFECTNET_CLASSES[code]
                except ValueError:
                    try:
                        cname = canonical_name(raw)
                    except ValueError:
                        raise _err_line(path, line_no, f"label {raw!r} is neither an id nor a class name") from None
                if cname not in classes:
                    continue
                rel = row[ip].strip().replace("\\", "/")
                if not rel:
                    raise _err_line(path, line_no, "empty image path")
                p = Path(rel)
                paths.append(p if p.is_absolute() else img_dir / p)
                labels.append(classes.index(cname))
        return Split(self.name, split, classes, paths, np.array(labels), stems=[p.stem for p in paths], root=r,
                     mode=m)


# ----------------------------------------------------------------------------------------------------------------------
# Generic image folder
# ----------------------------------------------------------------------------------------------------------------------


def _class_dirs(d: Path) -> dict[str, Path] | None:
    """Canonical class name -> folder if every sub-folder of ``d`` is a class name (and there is one), else None."""
    subs = _list_dirs(d)
    if not subs:
        return None
    out: dict[str, Path] = {}
    for s in subs:
        try:
            c = canonical_name(s.name)
        except ValueError:
            return None
        if c in out:
            raise DatasetError(f"folder: {out[c]} and {s} both map to class {c!r}")
        out[c] = s
    return out


class FolderReader(DatasetReader):
    """Any ImageFolder tree. Splits are the top-level folders that hold class folders; if the top level itself
    holds class folders there is one split ``all``. Folder names must map to canonical class names; the class order
    is canonical order restricted to the classes found (the same for every split of one root).
    """

    name = "folder"
    val_split = None
    test_split = None
    description = "any ImageFolder tree ([split/]class/*.jpg), canonical class names"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """All canonical classes; a loaded Split's ``classes`` holds those actually present (authoritative)."""
        self.check_mode(mode)
        return CANONICAL_CLASSES

    def _tree(self, root: Path | str) -> tuple[Path, dict[str, dict[str, Path]]]:
        r = _root(root, self.name)
        if not r.is_dir():
            raise DatasetError(f"folder: root {r} is not a directory")
        top = _class_dirs(r)
        if top is not None:
            return r, {"all": top}
        tree = {}
        for d in _list_dirs(r):
            cd = _class_dirs(d)
            if cd is not None:
                tree[d.name] = cd
        if not tree:
            names = [d.name for d in _list_dirs(r)]
            raise DatasetError(f"folder: {r} holds neither class folders nor split folders of class folders "
                               f"(top-level folders: {names}); class names must be canonical names or aliases")
        return r, tree

    def splits(self, root: Path | str) -> list[str]:
        """Top-level split folders holding class folders, or ``["all"]``."""
        return list(self._tree(root)[1])

    def class_order(self, root: Path | str) -> tuple[str, ...]:
        """Classes present anywhere under ``root``, in canonical order."""
        _, tree = self._tree(root)
        present = {c for cd in tree.values() for c in cd}
        return tuple(c for c in CANONICAL_CLASSES if c in present)

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one split of an image-folder tree (images directly inside each class folder)."""
        self.check_mode(mode)
        r, tree = self._tree(root)
        if split not in tree:
            raise DatasetError(f"folder: no split {split!r} under {r}; present: {', '.join(tree)}")
        classes = self.class_order(r)
        paths: list[Path] = []
        labels: list[int] = []
        for ci, c in enumerate(classes):
            if c in tree[split]:
                imgs = _list_images(tree[split][c])
                paths.extend(imgs)
                labels.extend([ci] * len(imgs))
        return Split(self.name, split, classes, paths, np.array(labels, dtype=np.int64),
                     stems=[p.stem for p in paths], root=r)


for _reader in (FER2013Reader(), FERPlusReader(), RAFDBReader(), CKPlusReader(), JAFFEReader(), AffectNetReader(),
                FolderReader()):
    register_dataset(_reader)


def describe_datasets() -> list[dict[str, Any]]:
    """Name, modes, class order and description of every registered dataset (for help texts)."""
    return [{"name": r.name, "modes": list(r.modes), "classes": list(r.classes()), "description": r.description}
            for r in DATASETS.values()]

