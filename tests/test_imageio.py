"""One image decoder: a file decodes to the same pixels through a dataset reader (training) and ``load_image``
(``pcnn predict`` / the server), for every PIL mode the two once treated differently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.data import decode_split, load_split
from pcnn_fer.faces.imageio import load_image

GRAY = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8)


def _palette(colour: bool) -> Image.Image:
    img = Image.fromarray(GRAY).convert("P")
    img.putpalette([v for i in range(256) for v in ((i, 255 - i, (7 * i) % 256) if colour else (i, i, i))])
    return img


def _files(folder: Path) -> dict[str, Path]:
    """One small file per awkward mode, all in one class folder."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    alpha = np.tile((np.arange(32) * 8).astype(np.uint8), (32, 1))  # column 0 fully transparent
    exif_img = Image.fromarray(colour[:20])
    exif = exif_img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    saves = {
        "l.png": lambda p: Image.fromarray(GRAY).save(p),
        "bilevel.png": lambda p: Image.fromarray(GRAY > 128).save(p),
        "palette_gray.png": lambda p: _palette(False).save(p),
        "palette_colour.png": lambda p: _palette(True).save(p),
        "palette_transparent.png": lambda p: _palette(True).save(p, transparency=0),
        "sixteen.png": lambda p: Image.fromarray(GRAY.astype(np.uint16) * 257).save(p),
        "int32.tif": lambda p: Image.fromarray(GRAY.astype(np.int32) * 100).save(p),
        "float.tif": lambda p: Image.fromarray(GRAY.astype(np.float32) / 255).save(p),
        "rgba.png": lambda p: Image.fromarray(np.dstack([colour, alpha])).save(p),
        "la.png": lambda p: Image.merge("LA", [Image.fromarray(GRAY), Image.fromarray(alpha)]).save(p),
        "cmyk.jpg": lambda p: Image.fromarray(colour).convert("CMYK").save(p),
        "cmyk.tif": lambda p: Image.fromarray(colour).convert("CMYK").save(p),
        "exif.jpg": lambda p: exif_img.save(p, exif=exif),
    }
    for name, save in saves.items():
        save(folder / name)
    return {name: folder / name for name in saves}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("modes")
    return root, _files(root / "happy")


def test_dataset_and_faces_paths_decode_identically(awkward):
    root, files = awkward
    split = load_split("folder", root, "all")
    assert sorted(p.name for p in split.paths) == sorted(files)
    for i, path in enumerate(split.paths):
        served = load_image(path)
        trained = np.asarray(split.image(i))
        native = split.native_image(i)  # what the decode cache stores
        assert trained.shape == served.shape and np.array_equal(trained, served), path.name
        assert native.mode in ("L", "RGB"), path.name
        assert np.array_equal(np.asarray(native.convert("RGB")), served), path.name
        assert (native.mode == "L") == bool((served[..., 0] == served[..., 1]).all()
                                             and (served[..., 0] == served[..., 2]).all()), path.name


def test_the_shared_rule_where_the_two_paths_used_to_differ(awkward):
    _, files = awkward
    gray = GRAY.astype(np.float64)
    # alpha is composited over white: a fully transparent column is white, an opaque-ish one keeps its colour
    rgba = load_image(files["rgba.png"])
    assert (rgba[:, 0] == 255).all() and not (rgba[:, 31] == 255).all()
    la = load_image(files["la.png"])
    assert (la[:, 0] == 255).all()
    assert (load_image(files["palette_transparent.png"])[GRAY == 0] == 255).all()
    # 32-bit integers within 0..65535 are 16-bit data: / 257, not stretched to the image's own maximum
    np.testing.assert_array_equal(load_image(files["int32.tif"])[..., 0], np.floor(gray * 100 / 257 + 0.5))
    # floats in [0, 1] are scaled by 255 (they once decoded almost black for training)
    assert np.abs(load_image(files["float.tif"])[..., 0].astype(int) - GRAY).max() <= 1
    np.testing.assert_array_equal(load_image(files["sixteen.png"])[..., 0], GRAY)
    # EXIF orientation is applied: a 32x20 photo tagged "rotate 90" is 20 wide, 32 high
    assert load_image(files["exif.jpg"]).shape == (32, 20, 3)


def test_decode_cache_uses_the_shared_rule(awkward, tmp_path):
    root, files = awkward
    split = load_split("folder", root, "all")
    keep = [i for i, p in enumerate(split.paths) if p.name != "exif.jpg"]  # the one 20x32 image
    sub = split.subset(keep)
    decoded = decode_split(sub, cache=tmp_path / "cache")
    assert decoded.skipped == 0 and decoded.images.shape[1] == 3
    for row, i in enumerate(decoded.index):
        served = load_image(sub.paths[int(i)])
        assert np.array_equal(decoded.images[row].permute(1, 2, 0).numpy(), served), sub.paths[int(i)].name
