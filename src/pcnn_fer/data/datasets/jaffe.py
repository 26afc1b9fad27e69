"""JAFFE reader: a flat folder of ``XX.EEn.NNN.tiff`` files (subject, expression code, index)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ._base import Split, UnsplitDatasetReader, dataset_root, find_root, list_images, register_dataset

__all__ = ["JAFFE_CLASSES", "JAFFE_CODES", "JAFFEReader"]


JAFFE_CODES: dict[str, str] = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral",
                               "SA": "sadness", "SU": "surprise"}
JAFFE_CLASSES: tuple[str, ...] = tuple(JAFFE_CODES.values())
_JAFFE_NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?$")


class JAFFEReader(UnsplitDatasetReader):
    """JAFFE: a flat folder of ``XX.EEn.NNN.tiff`` (subject XX, expression EE in AN DI FE HA NE SA SU).

    Split ``all``; classes in code order anger, disgust, fear, happiness, neutral, sadness, surprise. Some files are
    palette-mode TIFFs: decoding converts them to grayscale. Other image files in the folder are skipped with a
    warning; non-image files (README) are ignored. The images are 256×256 whole-head portraits, so training and
    evaluation decode them face-aligned by default (``--no-align-faces`` turns it off).
    """

    name = "jaffe"
    class_order = JAFFE_CLASSES
    description = "JAFFE (flat XX.EEn.NNN.tiff folder), 7 classes, subject k-fold / LOSO, faces aligned"
    align_faces_default = True

    def _locate(self, root: Path | str) -> Path:
        r = dataset_root(root, self.name)

        def ok(d: Path) -> bool:
            if not d.is_dir():
                return False
            with os.scandir(d) as it:
                return any(e.is_file() and _JAFFE_NAME.match(e.name) for e in it)

        return find_root(r, ok, self.name, "a folder of XX.EEn.NNN.tiff files")

    def _read_all(self, r: Path) -> Split:
        paths, labels, subjects, skipped = [], [], [], []
        for p in list_images(r):
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


register_dataset(JAFFEReader())
