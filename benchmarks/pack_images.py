"""Pack a folder tree of small same-size images into a few lossless PNG sheets, and unpack it again.

Used to carry FERPlus (32k 48×48 PNGs, 78 MB) to a lent GPU machine whose upload limit is 64 MiB: sheets compress
to ~70 % and unpack into the identical native layout, so ``pcnn train --dataset ferplus`` reads them unchanged.
Never commit the packed data (dataset licences forbid redistribution).

    python benchmarks/pack_images.py pack ../shared/data/ferplus .devdata/ferplus
    python benchmarks/pack_images.py unpack .devdata/ferplus /tmp/ferplus
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

PER_SHEET = 4096
COLUMNS = 64


def pack(src: Path, dst: Path) -> None:
    """Write sheets of every .png under ``src`` (same size, grayscale) plus an index; copy other small files."""
    files = sorted(p for p in src.rglob("*.png"))
    if not files:
        raise SystemExit(f"no PNG files under {src}")
    dst.mkdir(parents=True, exist_ok=True)
    first = np.array(Image.open(files[0]).convert("L"))
    h, w = first.shape
    names = [str(p.relative_to(src)) for p in files]
    for s in range(0, len(files), PER_SHEET):
        chunk = files[s : s + PER_SHEET]
        rows = -(-len(chunk) // COLUMNS)
        sheet = np.zeros((rows * h, COLUMNS * w), np.uint8)
        for i, p in enumerate(chunk):
            img = np.array(Image.open(p).convert("L"))
            if img.shape != (h, w):
                raise SystemExit(f"{p}: size {img.shape} differs from {(h, w)}")
            r, c = divmod(i, COLUMNS)
            sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
        Image.fromarray(sheet).save(dst / f"sheet_{s // PER_SHEET:03d}.png", optimize=True)
    for p in src.rglob("*"):
        if p.is_file() and p.suffix != ".png":
            (dst / "files" / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / "files" / p.relative_to(src))
    (dst / "index.json").write_text(json.dumps({"size": [h, w], "names": names}))
    print(f"packed {len(files)} images into {dst}")


def _unpack_sheet(job: tuple[Path, Path, int, list[str], int, int]) -> None:
    src, dst, number, names, h, w = job
    sheet = np.array(Image.open(src / f"sheet_{number:03d}.png"))
    for i, name in enumerate(names):
        r, c = divmod(i, COLUMNS)
        out = dst / name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet[r * h : (r + 1) * h, c * w : (c + 1) * w]).save(out)


def unpack(src: Path, dst: Path) -> None:
    """Recreate the original tree from ``pack`` output (one process per sheet)."""
    from concurrent.futures import ProcessPoolExecutor

    index = json.loads((src / "index.json").read_text())
    h, w = index["size"]
    names = index["names"]
    jobs = [(src, dst, s // PER_SHEET, names[s : s + PER_SHEET], h, w) for s in range(0, len(names), PER_SHEET)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_unpack_sheet, jobs))
    if (src / "files").exists():
        shutil.copytree(src / "files", dst, dirs_exist_ok=True)
    print(f"unpacked {len(names)} images into {dst}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.src, args.dst)
