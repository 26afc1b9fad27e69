"""CK+ reader (the CK+48 release): class folders of ``S###_###_########.png`` frames; subject-independent folds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...classes import canonical_name
from ._base import (
    DatasetError,
    Split,
    UnsplitDatasetReader,
    dataset_root,
    find_root,
    list_dirs,
    list_images,
    register_dataset,
)

__all__ = ["CKPLUS_CLASSES", "CKPLUS_CODE_ORDER", "CKPlusReader"]


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
    aliases = ("ck", "ck+", "ck+48", "ck48")
    class_order = CKPLUS_CLASSES
    description = "CK+48 (class folders, subject in file name), 7 classes, subject k-fold"

    def _locate(self, root: Path | str) -> Path:
        r = dataset_root(root, self.name)

        def ok(d: Path) -> bool:
            subs = list_dirs(d) if d.is_dir() else []
            names = set()
            for s in subs:
                try:
                    names.add(canonical_name(s.name))
                except ValueError:
                    return False
            return len(names) >= 2

        return find_root(r, ok, self.name, "<class>/S###_###_########.png class folders (CK+48)")

    def _read_all(self, r: Path) -> Split:
        dirs: dict[str, Path] = {}
        for d in list_dirs(r):
            c = canonical_name(d.name)
            if c in dirs:
                raise DatasetError(f"ckplus: folders {dirs[c]} and {d} both name class {c!r}: merge them or remove "
                                   "one")
            dirs[c] = d
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
            for p in list_images(dirs[c]):
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


register_dataset(CKPlusReader())
