"""FERPlus reader: Microsoft's ``FER2013{Train,Valid,Test}/label.csv`` vote files and the four label modes."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...classes import CANONICAL_CLASSES
from ._base import DatasetError, DatasetReader, Split, dataset_root, find_root, line_error, open_text, register_dataset

__all__ = ["FERPLUS_CLASSES", "FERPLUS_VOTE_COLUMNS", "FERPlusReader", "ferplus_label"]


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
    fear, contempt, unknown, NF). Label rules (option ``label_rule``, ``--label-rule``): majority (default),
    plurality, probability, crossentropy (see :func:`ferplus_label`). 8 classes in the FERPlus column order;
    splits train, valid, test.
    """

    name = "ferplus"
    aliases = ("fer+", "fer2013plus")
    option = "label_rule"
    option_values = ("majority", "plurality", "probability", "crossentropy")
    val_split = "valid"
    test_split = "test"
    description = "FERPlus (Microsoft label.csv per split), 8 classes, 4 label rules (--label-rule)"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """The 8 FERPlus emotions (canonical order) for every label rule."""
        self.check_option(mode)
        return FERPLUS_CLASSES

    def _locate(self, root: Path | str) -> Path:
        r = dataset_root(root, self.name)
        return find_root(r, lambda d: any((d / s).is_dir() for s in _FERPLUS_DIRS.values()), self.name,
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
        first_line: dict[str, int] = {}
        with open_text(path) as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 12:
                    raise line_error(path, line_no, f"expected 12 fields (image, face box, 10 votes), got {len(row)}")
                try:
                    v = [float(x) for x in row[2:]]
                except ValueError:
                    if line_no == 1 and not names:  # tolerate a header row
                        continue
                    raise line_error(path, line_no, f"vote counts must be numbers: {row[2:]}") from None
                if not all(math.isfinite(x) for x in v):
                    raise line_error(path, line_no, f"vote counts must be finite numbers: {row[2:]}")
                if any(x < 0 for x in v):
                    raise line_error(path, line_no, "negative vote count")
                name = row[0].strip()
                if not name:
                    raise line_error(path, line_no, "empty image name")
                if name in first_line:
                    raise line_error(path, line_no, f"image {name} is listed again (first on line {first_line[name]}); "
                                                    "each face must be listed once")
                first_line[name] = line_no
                names.append(name)
                votes.append(v)
                lines.append(line_no)
        return d, names, np.array(votes, dtype=np.float32).reshape(-1, 10), lines

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one FERPlus split under label rule ``mode``; dropped faces are left out."""
        m = self.check_option(mode)
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


register_dataset(FERPlusReader())
