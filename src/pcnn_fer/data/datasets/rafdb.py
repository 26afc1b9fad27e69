"""RAF-DB (basic) reader: the label list ``EmoLabel/list_patition_label.txt`` and the aligned/original images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import DatasetError, DatasetReader, Split, dataset_root, find_root, line_error, open_text, register_dataset

__all__ = ["RAFDB_CLASSES", "RAFDBReader"]


RAFDB_CLASSES: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


class RAFDBReader(DatasetReader):
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``, labels 1..7) plus images in
    ``Image/aligned/<stem>_aligned.jpg`` or ``Image/original/<stem>.jpg``.

    The option ``image_variant`` (``--image-variant``) selects the images: ``aligned`` (default when present) or
    ``original``. Splits train / test from the name prefix. Splits are built from the label list alone, so counts
    work without images; use :meth:`Split.with_images` / :meth:`Split.missing_images` to handle absent files.
    """

    name = "rafdb"
    aliases = ("raf", "raf-db")
    option = "image_variant"
    option_values = ("aligned", "original")
    test_split = "test"
    description = "RAF-DB basic (list_patition_label.txt + Image/aligned), 7 classes"
    LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"

    def classes(self, mode: str | None = None) -> tuple[str, ...]:
        """RAF-DB official label order (1 surprise .. 7 neutral) in canonical names."""
        self.check_option(mode)
        return RAFDB_CLASSES

    def _locate(self, root: Path | str) -> Path:
        r = dataset_root(root, self.name)
        return find_root(r, lambda d: (d / self.LABEL_FILE).is_file(), self.name,
                          f"{self.LABEL_FILE} (and Image/aligned/ or Image/original/)")

    def read_labels(self, root: Path | str) -> tuple[Path, list[tuple[str, str, int, int]]]:
        """Root and (split, image name, label index, line number) for every line of the label list."""
        r = self._locate(root)
        path = r / self.LABEL_FILE
        out = []
        with open_text(path) as f:
            for line_no, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    raise line_error(path, line_no, f"expected '<image> <label>', got {line.strip()!r}")
                name, lab = parts
                try:
                    label = int(lab)
                except ValueError:
                    raise line_error(path, line_no, f"label {lab!r} is not an integer") from None
                if not 1 <= label <= 7:
                    raise line_error(path, line_no, f"label {label} outside 1..7")
                prefix = name.split("_", 1)[0].lower()
                if prefix not in ("train", "test"):
                    raise line_error(path, line_no, f"image name {name!r} does not start with train_ or test_")
                out.append((prefix, name, label - 1, line_no))
        return r, out

    def splits(self, root: Path | str) -> list[str]:
        """train and/or test, as named in the label list."""
        _, rows = self.read_labels(root)
        present = {s for s, *_ in rows}
        return [s for s in ("train", "test") if s in present]

    def load(self, root: Path | str, split: str, mode: str | None = None) -> Split:
        """Read one RAF-DB split from the label list; image paths follow the variant ``mode``."""
        r, rows = self.read_labels(root)
        if mode is None:
            mode = "original" if (not (r / "Image" / "aligned").is_dir() and (r / "Image" / "original").is_dir()) \
                else "aligned"
        m = self.check_option(mode)
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


register_dataset(RAFDBReader())
