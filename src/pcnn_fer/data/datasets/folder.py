"""Generic image-folder reader: any ``[split/]class/*.jpg`` tree whose folder names are class names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...classes import CANONICAL_CLASSES, canonical_name
from ._base import DatasetError, DatasetReader, Split, dataset_root, list_dirs, list_images, register_dataset

__all__ = ["FolderReader"]


def _class_dirs(d: Path) -> dict[str, Path] | None:
    """Canonical class name -> folder if every sub-folder of ``d`` is a class name (and there is one), else None."""
    subs = list_dirs(d)
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
    aliases = ("imagefolder",)
    val_split = None
    test_split = None
    description = "any ImageFolder tree ([split/]class/*.jpg), canonical class names"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """All canonical classes; a loaded Split's ``classes`` holds those actually present (authoritative)."""
        self.check_option(mode)
        return CANONICAL_CLASSES

    def _tree(self, root: Path | str) -> tuple[Path, dict[str, dict[str, Path]]]:
        r = dataset_root(root, self.name)
        if not r.is_dir():
            raise DatasetError(f"folder: root {r} is not a directory")
        top = _class_dirs(r)
        if top is not None:
            return r, {"all": top}
        tree = {}
        for d in list_dirs(r):
            cd = _class_dirs(d)
            if cd is not None:
                tree[d.name] = cd
        if not tree:
            names = [d.name for d in list_dirs(r)]
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
        self.check_option(mode)
        r, tree = self._tree(root)
        if split not in tree:
            raise DatasetError(f"folder: no split {split!r} under {r}; present: {', '.join(tree)}")
        classes = self.class_order(r)
        paths: list[Path] = []
        labels: list[int] = []
        for ci, c in enumerate(classes):
            if c in tree[split]:
                imgs = list_images(tree[split][c])
                paths.extend(imgs)
                labels.extend([ci] * len(imgs))
        return Split(self.name, split, classes, paths, np.array(labels, dtype=np.int64),
                     stems=[p.stem for p in paths], root=r)


register_dataset(FolderReader())
