"""AffectNet reader: csv files of image paths and expression ids (7 or 8 classes)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...classes import canonical_name
from ._base import DatasetError, DatasetReader, Split, dataset_root, find_root, line_error, open_text, register_dataset

__all__ = ["AFFECTNET_CLASSES", "AffectNetReader"]


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
    uncertain, non-face) are dropped. The class set (option ``classes``, ``--classes``) ``8`` (default) keeps
    contempt, ``7`` drops it. The label column may
    also hold class names. Image paths are resolved against ``Manually_Annotated_Images/`` when present, else
    against the csv's folder. Splits: train, valid (the usual evaluation set), test when a test csv exists.
    """

    name = "affectnet"
    option = "classes"
    option_values = ("8", "7")
    test_split = "valid"
    description = "AffectNet (csv of paths + expression ids), 7 or 8 classes (--classes)"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """AffectNet id order, 8 classes (class set '8') or without contempt ('7')."""
        m = self.check_option(str(mode) if mode is not None else None)
        return AFFECTNET_CLASSES if m == "8" else AFFECTNET_CLASSES[:7]

    def _locate(self, root: Path | str) -> Path:
        r = dataset_root(root, self.name)
        if r.is_file():
            return r.parent

        def ok(d: Path) -> bool:
            return any((d / n).is_file() for names in _AFFECTNET_CSV.values() for n in names)

        return find_root(r, ok, self.name, "training.csv / validation.csv (AffectNet)")

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
        """Read one AffectNet split; non-expression ids (>7), and contempt in class set '7', are dropped."""
        m = self.check_option(str(mode) if mode is not None else None)
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
        with open_text(path) as f:
            reader = csv.reader(f)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise DatasetError(f"{path}: empty file") from None
            ip = next((header.index(c) for c in _AFFECTNET_PATH_COLS if c in header), None)
            il = next((header.index(c) for c in _AFFECTNET_LABEL_COLS if c in header), None)
            if ip is None or il is None:
                raise line_error(path, 1, f"header needs a path column ({'/'.join(_AFFECTNET_PATH_COLS[:5])}) and "
                                         f"a label column ({'/'.join(_AFFECTNET_LABEL_COLS)}); got {header}")
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ip, il):
                    raise line_error(path, line_no, f"expected at least {max(ip, il) + 1} fields, got {len(row)}")
                raw = row[il].strip()
                try:
                    code = int(float(raw))
                    if code < 0:
                        raise line_error(path, line_no, f"negative expression id {code}")
                    if code > 7:
                        continue
                    cname = AFFECTNET_CLASSES[code]
                except ValueError:
                    try:
                        cname = canonical_name(raw)
                    except ValueError:
                        raise line_error(path, line_no, f"label {raw!r} is neither an id nor a class name") from None
                if cname not in classes:
                    continue
                rel = row[ip].strip().replace("\\", "/")
                if not rel:
                    raise line_error(path, line_no, "empty image path")
                p = Path(rel)
                paths.append(p if p.is_absolute() else img_dir / p)
                labels.append(classes.index(cname))
        return Split(self.name, split, classes, paths, np.array(labels), stems=[p.stem for p in paths], root=r,
                     mode=m)


register_dataset(AffectNetReader())
