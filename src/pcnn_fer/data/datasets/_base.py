"""The dataset layer's foundations: :class:`Split`, the reader base classes, the registry and root helpers.

Every reader (one module per dataset in this package) returns :class:`Split` objects: file paths (or in-memory pixels
for csv-pixel releases), integer labels in the dataset's declared class order (canonical names, see
:mod:`pcnn_fer.classes`), optional soft labels, file stems (used to match published subset lists) and subjects (for
subject-independent protocols).

Readers never decode images to build a split: counts come from label files / directory listings, so a split can be
described even when its images are absent (RAF-DB here ships labels only). Decoding happens lazily
(:meth:`Split.image`) or in bulk through :mod:`pcnn_fer.data.cache`.
"""

from __future__ import annotations

import csv
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from ...errors import PCNNError
from ...imageio import DECODE_ERRORS, decode_file

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetReader",
    "Split",
    "SubsetInfo",
    "UnsplitDatasetReader",
    "dataset_root",
    "describe_datasets",
    "find_root",
    "get_dataset",
    "line_error",
    "list_dirs",
    "list_images",
    "load_split",
    "open_image",
    "open_text",
    "register_dataset",
]

#: File extensions treated as images when scanning folders (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

# Keep csv's field limit large enough for FER2013 pixel strings (2304 numbers, ~8.5 kB; default limit is 128 kB, but
# some mirrors store larger faces).
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class DatasetError(PCNNError, ValueError):
    """A dataset cannot be read: wrong root, missing label file, malformed line, unreadable image, unknown name."""


def line_error(path: Path | str, line_no: int, msg: str) -> DatasetError:
    """The DatasetError for a malformed line: ``path:line_no: msg``."""
    return DatasetError(f"{path}:{line_no}: {msg}")


@contextmanager
def open_text(path: Path | str) -> Iterator[TextIO]:
    """``path`` open for reading text (``newline=""``, ready for :mod:`csv`); a file that cannot be read or is not
    text is a DatasetError naming it (the reader's own DatasetErrors pass through)."""
    try:
        with open(path, newline="") as f:
            yield f
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a text file (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None


# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------


def open_image(path: Path | str, gray_if_possible: bool = True) -> Image.Image:
    """Decode an image file to mode ``L`` (grayscale sources) or ``RGB``; raise DatasetError if unreadable.

    Decoding follows :mod:`pcnn_fer.imageio` (the rule ``pcnn predict`` uses too): EXIF orientation applied, alpha
    composited over white, high bit depths scaled. With ``gray_if_possible``, RGB images whose three channels are
    identical are returned as ``L`` too.
    """
    try:
        return decode_file(path, gray_if_possible)
    except DECODE_ERRORS as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    with os.scandir(directory) as it:
        names = sorted(e.name for e in it if e.is_file() and _is_image(e.name) and not e.name.startswith("."))
    return [directory / n for n in names]


def list_dirs(directory: Path) -> list[Path]:
    """Sub-folders of ``directory`` (hidden ones left out), sorted by name."""
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
    ``origin_rows`` is each sample's row in the split its reader returned (``arange(N)`` for that split itself, the
    default); :meth:`subset` keeps it, so data decoded from a split can be cut by any split derived from it
    (:meth:`pcnn_fer.data.loader.TensorData.subset`).
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
    origin_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.labels)
        if self.origin_rows is None:
            self.origin_rows = np.arange(n, dtype=np.int64)
        self.origin_rows = np.asarray(self.origin_rows, dtype=np.int64).reshape(-1)
        if self.soft_labels is not None:
            self.soft_labels = np.asarray(self.soft_labels, dtype=np.float32)
            if self.soft_labels.shape != (n, len(self.classes)):
                raise ValueError(f"soft_labels shape {self.soft_labels.shape} != {(n, len(self.classes))}")
        if self.paths is None and self.pixels is None:
            raise ValueError("a Split needs paths or pixels")
        for what, seq in (("paths", self.paths), ("stems", self.stems), ("subjects", self.subjects),
                          ("pixels", self.pixels), ("origin_rows", self.origin_rows)):
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
            origin_rows=self.origin_rows[idx],
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

    ``aliases`` are further names :func:`get_dataset` accepts (compared without case, ``-``, ``_``; ``+`` = plus).

    ``option`` names the one variant a dataset may have (``label_rule`` for FERPlus, ``image_variant`` for RAF-DB,
    ``classes`` for AffectNet; the command line's ``--label-rule`` / ``--image-variant`` / ``--classes``) and
    ``option_values`` its accepted values (the first is the default; None selects it). The readers' methods take
    its value as their generic ``mode`` argument; :func:`load_split` also takes it by its name.
    ``val_split`` names the dataset's own validation split (None: carve one from ``train_split``).
    ``align_faces_default``: whether training / evaluation decode its images face-aligned unless told otherwise
    (``--align-faces`` / ``--no-align-faces``; see :mod:`pcnn_fer.data.align`): on for datasets of whole portraits.
    """

    name: str = ""
    aliases: tuple[str, ...] = ()
    option: str | None = None
    option_values: tuple[str, ...] = ()
    train_split: str = "train"
    val_split: str | None = None
    test_split: str | None = "test"
    description: str = ""
    align_faces_default: bool = False

    @property
    def option_flag(self) -> str | None:
        """The command-line flag of :attr:`option` (``--label-rule``), None for a dataset without one."""
        return "--" + self.option.replace("_", "-") if self.option else None

    def check_option(self, value: str | None, flag: str | None = None) -> str | None:
        """Return the effective option value (the default for None), or raise DatasetError (one line naming the
        option) for an unknown value, or for any value, or a ``flag`` naming another option, when the dataset has
        none. ``flag``: the command-line spelling the value came with (``--mode``, the old generic one, fits all)."""
        if flag is not None and flag not in ("--mode", "--val-mode") and self.option_flag is not None:
            wanted = self.option_flag[2:]
            if flag.lstrip("-").removeprefix("val-") != wanted:
                raise DatasetError(f"dataset {self.name!r} has no {flag}; its option is "
                                   f"{self.option_flag} ({', '.join(self.option_values)})")
        if not self.option_values:
            if value is not None:
                raise DatasetError(f"dataset {self.name!r} has no {flag or 'option'} (it has no label rule, image "
                                   f"variant or class set to choose; got {value!r})")
            return None
        if value is None:
            return self.option_values[0]
        if value not in self.option_values:
            raise DatasetError(f"dataset {self.name!r}: unknown {self.option_flag} {value!r}; choose from "
                               f"{', '.join(self.option_values)}")
        return value

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """Class order (canonical names) of this dataset's labels under ``mode``."""
        raise NotImplementedError

    def splits(self, root: Path | str) -> list[str]:
        """Names of the splits present under ``root``."""
        raise NotImplementedError

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read split ``split`` of the dataset at ``root`` (labels only; images are decoded lazily)."""
        raise NotImplementedError


class UnsplitDatasetReader(DatasetReader):
    """A dataset without an official split (CK+, JAFFE): one split ``all``, evaluated by subject k-fold / LOSO.

    Subclasses set ``class_order`` and implement ``_locate(root) -> Path`` and ``_read_all(folder) -> Split``.
    """

    train_split = "all"
    test_split = None
    class_order: tuple[str, ...] = ()

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """The dataset's classes in its own label order."""
        self.check_option(mode)
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
        self.check_option(mode)
        folder = self._locate(root)
        if split != "all":
            raise DatasetError(f"{self.name}: only split 'all' exists (got {split!r}); use protocols.subject_kfold")
        return self._read_all(folder)


#: Registered readers by canonical name, in registration order.
DATASETS: dict[str, DatasetReader] = {}
_ALIASES: dict[str, str] = {}


def _lookup_key(name: str) -> str:
    """``name`` folded for lookup: lower case, no ``-``/``_``, ``+`` spelled ``plus`` (``CK+48`` -> ``ckplus48``)."""
    return name.strip().lower().replace("-", "").replace("_", "").replace("+", "plus")


def register_dataset(reader: DatasetReader) -> DatasetReader:
    """Add ``reader`` to :data:`DATASETS` under ``reader.name`` (replacing any previous one), with its aliases."""
    DATASETS[reader.name] = reader
    for alias in reader.aliases:
        _ALIASES[_lookup_key(alias)] = reader.name
    return reader


def get_dataset(name: str) -> DatasetReader:
    """The registered reader called ``name`` or one of its aliases (DatasetError listing the known ones otherwise)."""
    key = _lookup_key(name)
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


def load_split(name: str, root: Path | str, split: str, mode: str | None = None, **option: str | None) -> Split:
    """Read split ``split`` of dataset ``name`` stored at ``root``; the dataset's option by its name
    (``label_rule="probability"``, ``image_variant=``, ``classes=``) or as the generic ``mode``."""
    reader = get_dataset(name)
    for key, value in option.items():
        if key != reader.option:
            raise DatasetError(f"dataset {reader.name!r} has no option {key!r}"
                               + (f"; its option is {reader.option!r}" if reader.option else ""))
        mode = value
    return reader.load(root, split, mode)


def dataset_root(root: Path | str, dataset: str) -> Path:
    """``root`` as a Path (``~`` expanded); DatasetError ``"<dataset>: root <root> does not exist"`` if it is absent.

    The one existence check of a dataset root: readers, ``train``, ``evaluate`` and ``cv`` all call it.
    """
    p = Path(root).expanduser()
    if not p.exists():
        raise DatasetError(f"{dataset}: root {p} does not exist")
    return p


def find_root(root: Path, ok: Callable[[Path], bool], dataset: str, expected: str, depth: int = 2) -> Path:
    """``root`` itself, or the unique descendant (up to ``depth`` levels) satisfying ``ok``."""
    if ok(root):
        return root
    frontier = [root] if root.is_dir() else []
    for _ in range(depth):
        nxt: list[Path] = []
        for d in frontier:
            try:
                nxt.extend(list_dirs(d))
            except OSError:
                continue
        hits = [d for d in nxt if ok(d)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DatasetError(f"{dataset}: several candidate roots under {root}: {', '.join(map(str, hits))}")
        frontier = nxt
    raise DatasetError(f"{dataset}: {root} does not look like a {dataset} root; expected {expected}")


def describe_datasets() -> list[dict[str, Any]]:
    """Name, option (its name and values), class order and description of every registered dataset."""
    return [{"name": r.name, "option": r.option, "option_values": list(r.option_values),
             "classes": list(r.classes()), "description": r.description}
            for r in DATASETS.values()]

