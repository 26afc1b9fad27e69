"""Dataset readers, cache and stats: small native-layout fixtures built here, plus exact counts on the real data.

Real data is read from ``../shared/data`` (next to the repository) or ``$PCNN_FER_SHARED``; tests needing it skip with
the reason when it is absent. Only label files are parsed and a few dozen images decoded, so the file runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcnn_fer.classes import CANONICAL_CLASSES
from pcnn_fer.cli.data import add_data_parser
from pcnn_fer.data import (
    DATASETS,
    DatasetError,
    Split,
    dataset_stats,
    decode_split,
    ferplus_label,
    get_dataset,
    load_split,
)
from pcnn_fer.data.loader import load_tensor_data
from pcnn_fer.data.protocols import train_val_split
from pcnn_fer.data.stats import run_stats

# ----------------------------------------------------------------------------------------------------------------------
# fixture helpers
# ----------------------------------------------------------------------------------------------------------------------


def gray_img(path: Path, value: int = 128, size: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(size * size).reshape(size, size) + value) % 256
    Image.fromarray(arr.astype(np.uint8), "L").save(path)
    return path


def rgb_img(path: Path, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(path)
    return path


def palette_tiff(path: Path, gray_palette: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    idx = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    if gray_palette:
        im.putpalette([v for i in range(256) for v in (i, i, i)])
    else:
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    im.save(path, format="TIFF")
    return path


# ----------------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------------


def test_registry_and_class_orders():
    assert set(DATASETS) == {"fer2013", "ferplus", "rafdb", "ckplus", "jaffe", "affectnet", "folder"}
    assert get_dataset("FER+") is DATASETS["ferplus"]
    assert get_dataset("RAF-DB") is DATASETS["rafdb"]
    assert get_dataset("CK+48") is DATASETS["ckplus"]
    with pytest.raises(DatasetError, match="unknown dataset"):
        get_dataset("mnist")
    for reader in DATASETS.values():
        for c in reader.classes():
            assert c in CANONICAL_CLASSES
    assert DATASETS["fer2013"].classes() == ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    assert DATASETS["ferplus"].classes() == CANONICAL_CLASSES
    assert DATASETS["rafdb"].classes() == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    assert DATASETS["affectnet"].classes("7") == ("neutral", "happiness", "sadness", "surprise", "fear", "disgust",
                                                  "anger")
    assert len(DATASETS["affectnet"].classes()) == 8
    with pytest.raises(DatasetError, match="unknown --label-rule 'softmax'"):
        DATASETS["ferplus"].classes("softmax")


def test_wrong_root_is_a_dataset_error(tmp_path):
    for name in DATASETS:
        with pytest.raises(DatasetError):
            load_split(name, tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    for name in ("ferplus", "rafdb", "ckplus", "jaffe", "affectnet", "folder", "fer2013"):
        with pytest.raises(DatasetError, match="expected|holds neither"):
            DATASETS[name].splits(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------------------------
# FERPlus
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "votes, expected",
    [
        # votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF
        ([0, 10, 0, 0, 0, 0, 0, 0, 0, 0], {"majority": 1, "plurality": 1, "probability": 1}),
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], {"majority": None, "plurality": 0, "probability": 0}),
        ([2, 0, 0, 0, 0, 0, 0, 0, 8, 0], {"majority": None, "plurality": None, "probability": None}),
        ([6, 1, 1, 1, 1, 0, 0, 0, 0, 0], {"majority": 0, "plurality": 0, "probability": 0}),
        ([3, 1, 1, 1, 1, 1, 1, 1, 0, 0], {"majority": 0, "plurality": 0, "probability": 0}),
        ([0, 0, 0, 0, 0, 0, 0, 3, 0, 7], {"majority": None, "plurality": None, "probability": None}),
    ],
)
def test_ferplus_label_modes(votes, expected):
    for mode, want in expected.items():
        dist = ferplus_label(votes, mode)
        if want is None:
            assert dist is None, (votes, mode)
        else:
            assert dist is not None and int(np.argmax(dist)) == want, (votes, mode, dist)
            assert dist.shape == (8,) and abs(float(dist.sum()) - 1.0) < 1e-6


def test_ferplus_probability_distribution():
    # outliers (single votes) removed, top classes until >= 75 % of the rest: neutral 4, anger 3 of 9 votes
    dist = ferplus_label([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "probability")
    np.testing.assert_allclose(dist, [4 / 7, 0, 0, 0, 3 / 7, 0, 0, 0], atol=1e-6)
    assert np.array_equal(dist, ferplus_label([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "crossentropy"))
    # a tie is kept together: 5/5 -> 0.5/0.5 (hard label = first in column order)
    np.testing.assert_allclose(ferplus_label([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], "probability")[:2], [0.5, 0.5])
    # five classes tie at the top: more than three classes -> dropped
    assert ferplus_label([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], "probability") is None


def _ferplus_fixture(root: Path) -> Path:
    rows = {
        "FER2013Train": [
            ("fer0000000.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]),
            ("fer0000001.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),
            ("fer0000002.png", [2, 0, 0, 0, 0, 0, 0, 0, 8, 0]),
            ("fer0000003.png", [1, 0, 0, 0, 0, 0, 0, 9, 0, 0]),
            ("fer0000004.png", [0, 0, 7, 0, 0, 0, 3, 0, 0, 0]),
        ],
        "FER2013Valid": [("fer0000005.png", [0, 0, 0, 6, 0, 0, 0, 0, 0, 4]),
                         ("fer0000006.png", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10])],
    }
    for d, items in rows.items():
        (root / d).mkdir(parents=True)
        with open(root / d / "label.csv", "w") as f:
            for i, (name, votes) in enumerate(items):
                f.write(f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}\n')
                gray_img(root / d / name, value=i * 10)
    return root


def test_ferplus_fixture_modes(tmp_path):
    root = _ferplus_fixture(tmp_path / "ferplus")
    reader = get_dataset("ferplus")
    assert reader.splits(root) == ["train", "valid"]
    tr = reader.load(root, "train")
    assert tr.mode == "majority" and tr.soft_labels is None
    assert tr.stems == ["fer0000000", "fer0000003", "fer0000004"]
    assert [tr.classes[i] for i in tr.labels] == ["happiness", "contempt", "surprise"]
    assert tr.extras["votes"].shape == (3, 10)
    pl = reader.load(root, "train", "plurality")
    assert pl.stems == ["fer0000000", "fer0000001", "fer0000003", "fer0000004"]
    pr = reader.load(root, "train", "probability")
    assert pr.soft_labels is not None and pr.soft_labels.shape == (len(pr), 8)
    assert np.array_equal(pr.labels, pr.soft_labels.argmax(1))
    np.testing.assert_allclose(pr.soft_labels.sum(1), 1.0, atol=1e-6)
    assert len(reader.load(root, "valid")) == 1  # the NF winner is dropped
    im = tr.image(0)
    assert im.mode == "RGB" and im.size == (48, 48)
    with pytest.raises(DatasetError, match="label file .*FER2013Test"):
        reader.load(root, "test")
    assert dataset_stats("ferplus", root)["splits"]["train"]["happiness"] == 1


def test_ferplus_malformed_line_names_file_and_line(tmp_path):
    root = _ferplus_fixture(tmp_path / "ferplus")
    with open(root / "FER2013Train" / "label.csv", "a") as f:
        f.write('fer0000009.png,"(0, 0, 48, 48)",1,2,x,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"FER2013Train[/\\]label\.csv:6: vote counts"):
        load_split("ferplus", root, "train")
    with open(root / "FER2013Valid" / "label.csv", "a") as f:
        f.write("fer0000010.png,1,2,3\n")
    with pytest.raises(DatasetError, match=r"label\.csv:3: expected 12 fields"):
        load_split("ferplus", root, "valid")



def test_ferplus_duplicated_row_is_an_error_naming_both_lines(tmp_path):
    """Issue 33 item 4: a repeated label.csv row was counted twice without a word."""
    root = _ferplus_fixture(tmp_path / "ferplus")
    with open(root / "FER2013Train" / "label.csv", "a") as f:
        f.write('fer0000000.png,"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"label\.csv:6: image fer0000000\.png is listed again \(first on line 1\)"):
        load_split("ferplus", root, "train")
    with pytest.raises(DatasetError, match="listed again"):
        dataset_stats("ferplus", root)


def test_ferplus_without_train_labels_never_trains_on_validation(tmp_path, run_cli):
    """Issue 33 item 1: without FER2013Train/label.csv, train used FER2013Valid for training and selection."""
    root = _ferplus_fixture(tmp_path / "ferplus")
    (root / "FER2013Train" / "label.csv").unlink()
    code, _, err = run_cli(["train", "--dataset", "ferplus", "--root", root, "--recipe", "tiny", "--out",
                            tmp_path / "run"])
    assert code == 1 and "no training split 'train'" in err and "present: valid" in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    code, out, err = run_cli(["data", "stats", "--dataset", "ferplus", "--root", root])
    assert code == 0 and "note: ferplus: no 'train' split" in err and "no 'test' split" in err, err


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_ferplus_non_finite_vote_is_an_error(tmp_path, bad):
    root = _ferplus_fixture(tmp_path / "ferplus")
    with open(root / "FER2013Train" / "label.csv", "a") as f:  # once read as a neutral face
        f.write(f'fer0000009.png,"(0, 0, 48, 48)",{bad},2,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DatasetError, match=r"FER2013Train[/\\]label\.csv:6: vote counts must be finite"):
        load_split("ferplus", root, "train", "plurality")
    with pytest.raises(DatasetError, match=r"label\.csv:6: vote counts must be finite"):
        dataset_stats("ferplus", root)


# ----------------------------------------------------------------------------------------------------------------------
# FER2013
# ----------------------------------------------------------------------------------------------------------------------


def _fer_csv(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for e, px, usage in rows:
            f.write(f"{e},{px},{usage}\n")
    return path


def test_fer2013_csv(tmp_path):
    px = " ".join(str(i % 256) for i in range(48 * 48))
    rows = [(0, px, "Training"), (3, px, "Training"), (6, px, "PublicTest"), (1, px, "PrivateTest"),
            (4, px, "Training")]
    path = _fer_csv(tmp_path / "fer" / "fer2013.csv", rows)
    reader = get_dataset("fer2013")
    assert reader.splits(tmp_path / "fer") == ["train", "public_test", "private_test"]
    assert reader.splits(path) == ["train", "public_test", "private_test"]
    tr = reader.load(path, "train")
    assert tr.paths is None and tr.pixels is not None and tr.pixels.shape == (3, 48, 48)
    assert [tr.classes[i] for i in tr.labels] == ["anger", "happiness", "sadness"]
    assert tr.image(1).mode == "RGB" and tr.image(1).size == (48, 48)
    assert tr.subset([2]).pixels.shape == (1, 48, 48)
    stats = dataset_stats("fer2013", path)
    assert list(stats["splits"]) == ["train", "public_test", "private_test"]
    assert stats["splits"]["public_test"]["neutral"] == 1


@pytest.mark.parametrize(
    "bad, match",
    [
        ((0, "1 2 3", "Training"), r"fer2013\.csv:3: 3 pixels is not a square"),
        ((9, "0 " * 2304, "Training"), r"fer2013\.csv:3: emotion 9 outside"),
        ((1, "0 " * 2304, "Validation"), r"fer2013\.csv:3: unknown Usage"),
        (("x", "0 " * 2304, "Training"), r"fer2013\.csv:3: emotion 'x'"),
    ],
)
def test_fer2013_csv_malformed(tmp_path, bad, match):
    px = " ".join(["7"] * 2304)
    path = _fer_csv(tmp_path / "fer2013.csv", [(0, px, "Training"), bad])
    with pytest.raises(DatasetError, match=match):
        load_split("fer2013", path, "train")


def test_fer2013_folder_release(tmp_path):
    root = tmp_path / "fer2013"
    gray_img(root / "train" / "angry" / "Training_1.jpg")
    gray_img(root / "train" / "happy" / "Training_2.jpg")
    gray_img(root / "test" / "happy" / "PublicTest_3.jpg")
    gray_img(root / "test" / "sad" / "PrivateTest_4.jpg")
    gray_img(root / "test" / "sad" / "PrivateTest_5.jpg")
    reader = get_dataset("fer2013")
    assert reader.splits(root) == ["train", "public_test", "private_test"]
    pt = reader.load(root, "private_test")
    assert pt.stems == ["PrivateTest_4", "PrivateTest_5"] and set(pt.labels) == {4}
    assert reader.load(tmp_path, "train").stems == ["Training_1", "Training_2"]  # root found one level down
    (root / "test" / "smirk").mkdir()
    with pytest.raises(DatasetError, match="smirk"):
        reader.load(root, "train")


# ----------------------------------------------------------------------------------------------------------------------
# RAF-DB
# ----------------------------------------------------------------------------------------------------------------------


def _rafdb_fixture(root: Path, with_images: int = 3) -> Path:
    (root / "EmoLabel").mkdir(parents=True)
    lines = ["train_00001.jpg 5", "train_00002.jpg 4", "train_00003.jpg 7", "test_0001.jpg 1", "test_0002.jpg 6",
             "test_0003.jpg 4"]
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\r\n".join(lines) + "\r\n")
    for stem in ["train_00001", "train_00002", "test_0001"][:with_images]:
        rgb_img(root / "Image" / "aligned" / f"{stem}_aligned.jpg", (100, 100))
    return root


def test_rafdb_fixture_and_missing_images(tmp_path):
    root = _rafdb_fixture(tmp_path / "rafdb")
    reader = get_dataset("rafdb")
    assert reader.splits(root) == ["train", "test"]
    tr = reader.load(root, "train")
    assert tr.mode == "aligned" and tr.stems == ["train_00001", "train_00002", "train_00003"]
    assert [tr.classes[i] for i in tr.labels] == ["sadness", "happiness", "neutral"]
    assert tr.paths[0].name == "train_00001_aligned.jpg"
    assert tr.missing_images() == [2]
    with pytest.warns(UserWarning, match="1 of 3 image files missing"):
        kept = tr.with_images()
    assert kept.stems == ["train_00001", "train_00002"]
    assert tr.image(0).size == (100, 100)
    with pytest.raises(DatasetError, match="image file missing"):
        tr.image(2)
    orig = reader.load(root, "test", "original")
    assert orig.paths[0] == root / "Image" / "original" / "test_0001.jpg"
    assert dataset_stats("rafdb", root)["splits"] == {
        "train": {"surprise": 0, "fear": 0, "disgust": 0, "happiness": 1, "sadness": 1, "anger": 0, "neutral": 1},
        "test": {"surprise": 1, "fear": 0, "disgust": 0, "happiness": 1, "sadness": 0, "anger": 1, "neutral": 0},
    }


def test_rafdb_labels_only_is_a_clear_error(tmp_path):
    root = _rafdb_fixture(tmp_path / "rafdb", with_images=0)
    test = load_split("rafdb", root, "test")
    assert len(test) == 3  # counts still come from the label list
    with pytest.raises(DatasetError, match="none of the 3 images exist"):
        test.with_images()


def test_rafdb_malformed(tmp_path):
    root = _rafdb_fixture(tmp_path / "rafdb")
    p = root / "EmoLabel" / "list_patition_label.txt"
    p.write_text("train_00001.jpg 5\ntrain_00002.jpg 9\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:2: label 9 outside 1\.\.7"):
        load_split("rafdb", root, "train")
    p.write_text("train_00001.jpg\n")
    with pytest.raises(DatasetError, match=r"list_patition_label\.txt:1: expected"):
        load_split("rafdb", root, "train")
    p.unlink()
    with pytest.raises(DatasetError, match="list_patition_label"):
        load_split("rafdb", root, "train")


# ----------------------------------------------------------------------------------------------------------------------
# CK+, JAFFE
# ----------------------------------------------------------------------------------------------------------------------


def test_ckplus_fixture(tmp_path):
    root = tmp_path / "ck" / "CK+48"
    for cls, names in {"anger": ["S010_004_00000017", "S011_001_00000001"], "happy": ["S010_006_00000013"],
                       "contempt": ["S138_008_00000007"]}.items():
        for n in names:
            gray_img(root / cls / f"{n}.png")
    sp = load_split("ckplus", tmp_path / "ck", "all")
    assert sp.classes == ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
    assert sp.subjects == ["S010", "S011", "S138", "S010"]
    assert sp.counts() == {"anger": 2, "contempt": 1, "disgust": 0, "fear": 0, "happiness": 1, "sadness": 0,
                           "surprise": 0}
    with pytest.raises(DatasetError, match="only split 'all'"):
        load_split("ckplus", root, "train")
    gray_img(root / "happy" / "frame1.png")
    with pytest.raises(DatasetError, match="subject id"):
        load_split("ckplus", root, "all")


def test_ckplus_two_folders_of_one_class_are_refused_naming_both(tmp_path):
    """Issue 33 item 3: ``happy/`` and ``joy/`` both mean happiness; the later one silently replaced the earlier."""
    root = tmp_path / "ck"
    for cls, name in (("anger", "S010_004_00000017"), ("happy", "S010_006_00000013"), ("joy", "S011_006_00000013")):
        gray_img(root / cls / f"{name}.png")
    with pytest.raises(DatasetError, match=r"ckplus: folders .*happy and .*joy both name class 'happiness'"):
        load_split("ckplus", root, "all")


def test_jaffe_fixture_with_palette_tiff(tmp_path):
    root = tmp_path / "jaffe"
    palette_tiff(root / "KA.AN1.39.tiff")
    gray_img(root / "KA.HA2.30.tiff", size=64)
    gray_img(root / "NA.SU1.79.tiff", size=64)
    gray_img(root / "YM.NE3.51.tiff", size=64)
    palette_tiff(root / "TM.DI2.195.tiff", gray_palette=False)
    (root / "README").write_text("JAFFE")
    gray_img(root / "notes.png", size=8)
    with pytest.warns(UserWarning, match="skipped 1 image files"):
        sp = load_split("jaffe", root, "all")
    assert sp.stems == ["KA.AN1.39", "KA.HA2.30", "NA.SU1.79", "TM.DI2.195", "YM.NE3.51"]
    assert sp.subjects == ["KA", "KA", "NA", "TM", "YM"]
    assert [sp.classes[i] for i in sp.labels] == ["anger", "happiness", "surprise", "disgust", "neutral"]
    with Image.open(sp.paths[0]) as raw:
        assert raw.mode == "P"
    assert sp.native_image(0).mode == "L"  # gray palette -> grayscale
    assert sp.native_image(3).mode == "RGB"  # colour palette stays colour
    assert sp.image(0).mode == "RGB" and sp.image(0).size == (64, 64)


# ----------------------------------------------------------------------------------------------------------------------
# AffectNet, folder
# ----------------------------------------------------------------------------------------------------------------------


def test_affectnet_csv(tmp_path):
    root = tmp_path / "affectnet"
    imgs = root / "Manually_Annotated_Images"
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    rows = [("1/a.jpg", 1), ("1/b.jpg", 7), ("2/c.jpg", 8), ("2/d.jpg", 10), ("3/e.jpg", 6), ("3/f.jpg", 0)]
    root.mkdir()
    for fname, subset in (("training.csv", rows), ("validation.csv", rows[:2])):
        with open(root / fname, "w") as f:
            f.write(header)
            for p, e in subset:
                f.write(f'{p},0,0,10,10,"1;2;3",{e},0.1,0.2\n')
    rgb_img(imgs / "1" / "a.jpg")
    reader = get_dataset("affectnet")
    assert reader.splits(root) == ["train", "valid"]
    tr8 = reader.load(root, "train")
    assert [tr8.classes[i] for i in tr8.labels] == ["happiness", "contempt", "anger", "neutral"]
    assert tr8.paths[0] == imgs / "1" / "a.jpg"
    tr7 = reader.load(root, "train", "7")
    assert len(tr7.classes) == 7 and [tr7.classes[i] for i in tr7.labels] == ["happiness", "anger", "neutral"]
    assert dataset_stats("affectnet", root, "7")["splits"]["valid"]["happiness"] == 1
    # a label column holding names also works
    (root / "test.csv").write_text("pth,label\nx/g.png,contempt\nx/h.png,Happy\n")
    te = reader.load(root, "test")
    assert [te.classes[i] for i in te.labels] == ["contempt", "happiness"]
    (root / "test.csv").write_text("pth,label\nx/g.png,smug\n")
    with pytest.raises(DatasetError, match=r"test\.csv:2: label 'smug'"):
        reader.load(root, "test")
    (root / "test.csv").write_text("file_id,score\nx,1\n")
    with pytest.raises(DatasetError, match=r"test\.csv:1: header needs"):
        reader.load(root, "test")


def test_folder_reader(tmp_path):
    root = tmp_path / "tree"
    gray_img(root / "train" / "happy" / "a.png")
    gray_img(root / "train" / "Angry" / "b.png")
    gray_img(root / "val" / "happy" / "c.png")
    gray_img(root / "val" / "contempt" / "d.png")
    (root / "notes").mkdir()
    reader = get_dataset("folder")
    assert reader.splits(root) == ["train", "val"]
    tr = reader.load(root, "train")
    assert tr.classes == ("happiness", "anger", "contempt")  # canonical order, same for every split
    assert [tr.classes[i] for i in tr.labels] == ["happiness", "anger"]
    flat = tmp_path / "flat"
    gray_img(flat / "sad" / "x.png")
    gray_img(flat / "neutral" / "y.png")
    assert reader.splits(flat) == ["all"]
    assert load_split("folder", flat, "all").classes == ("neutral", "sadness")
    bad = tmp_path / "bad"
    gray_img(bad / "dogs" / "z.png")
    with pytest.raises(DatasetError, match="class names must be canonical"):
        reader.splits(bad)


# ----------------------------------------------------------------------------------------------------------------------
# Split, cache
# ----------------------------------------------------------------------------------------------------------------------


def test_split_subset_keeps_everything_aligned():
    soft = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
    sp = Split("x", "all", ("anger", "fear", "neutral"), [Path(f"{i}.png") for i in range(4)], np.array([0, 1, 2, 1]),
               soft_labels=soft, stems=["a", "b", "c", "d"], subjects=["s1", "s1", "s2", "s3"],
               extras={"votes": np.arange(4)})
    sub = sp.subset(np.array([False, True, False, True]))
    assert sub.stems == ["b", "d"] and sub.subjects == ["s1", "s3"] and list(sub.extras["votes"]) == [1, 3]
    assert sub.soft_labels.shape == (2, 3) and list(sub.labels) == [1, 1]
    assert sp.subset([3, 0]).stems == ["d", "a"]
    with pytest.raises(ValueError):
        Split("x", "all", ("anger",), None, np.array([0]))


def test_decoded_data_subset_by_derived_split(tmp_path):
    root = tmp_path / "tree"
    for c, base in (("happy", 0), ("sad", 100), ("fear", 200)):
        for i in range(8):
            gray_img(root / c / f"{c}{i}.png", value=base + i)
    (root / "sad" / "sad3.png").write_bytes(b"not a png")
    full_split = load_split("folder", root, "all")
    with pytest.warns(UserWarning, match="skipped 1 of 24"):
        full, _ = load_tensor_data(full_split, 48, cache=tmp_path / "cache")
    tr, va = train_val_split(full_split, 0.25, seed=0)
    derived = [tr.subset(np.arange(0, len(tr), 2)), replace(va.subset([2, 0]), name="va2"), va]
    for part in derived:  # selecting by split == decoding that split on its own
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            got = full.subset(part, name="x")
            alone, _ = load_tensor_data(part, 48, use_cache=False)
        assert got.name == "x" and len(got) == len(alone) and torch.equal(got.images, alone.images)
        assert torch.equal(got.labels, alone.labels) and got.origin_rows.tolist() == alone.origin_rows.tolist()
    bad = full_split.stems.index("sad3")
    with_bad = tr if bad in tr.origin_rows else va
    with pytest.warns(UserWarning, match="1 unreadable images left out"):
        assert len(full.subset(with_bad)) == len(with_bad) - 1
    # a subset of the data still selects by split; a split it does not hold is an error, not a wrong answer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        part = full.subset(tr, name="train")
    assert torch.equal(part.subset(derived[0]).images, full.subset(derived[0]).images)
    backwards = full.subset(torch.arange(len(full) - 1, -1, -1))
    assert torch.equal(backwards.subset(derived[1]).images, full.subset(derived[1]).images)
    with pytest.raises(DatasetError, match="not in the decoded data"):
        part.subset(va)
    other = load_split("folder", root, "all")
    other.classes = ("fear", "happiness", "sadness")
    with pytest.raises(DatasetError, match="has classes"):
        full.subset(other)


def test_cache_decodes_once_and_skips_unreadable(tmp_path, monkeypatch):
    monkeypatch.setenv("PCNN_FER_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tree"
    for i in range(5):
        gray_img(root / "happy" / f"h{i}.png", value=i)
    for i in range(3):
        gray_img(root / "sad" / f"s{i}.png", value=50 + i)
    (root / "sad" / "s9.png").write_bytes(b"this is not a png")
    sp = load_split("folder", root, "all")
    assert len(sp) == 9
    with pytest.warns(UserWarning, match="skipped 1 of 9 unreadable"):
        first = decode_split(sp, workers=2)
    assert not first.from_cache and first.skipped == 1
    assert tuple(first.images.shape) == (8, 1, 48, 48) and str(first.images.dtype) == "torch.uint8"
    assert first.path is not None and first.path.parent == tmp_path / "cache"
    bad = sp.stems.index("s9")
    assert bad not in first.index.tolist() and len(first.index) == 8
    assert first.labels.tolist() == sp.labels[first.index].tolist()
    expected = np.asarray(Image.open(sp.paths[int(first.index[3])]))
    assert np.array_equal(first.images[3, 0].numpy(), expected)
    with pytest.warns(UserWarning, match="were skipped when this cache was built"):
        second = decode_split(sp)
    assert second.from_cache and np.array_equal(second.index, first.index)
    assert bool((second.images == first.images).all())
    # a changed size is another cache entry; resizing works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = decode_split(sp, size=24)
    assert tuple(small.images.shape) == (8, 1, 24, 24) and not small.from_cache
    # touching a file invalidates the entry
    gray_img(root / "happy" / "h0.png", value=99)
    os.utime(root / "happy" / "h0.png", ns=(1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        third = decode_split(sp)
    assert not third.from_cache


def test_cache_rgb_and_mixed_sizes(tmp_path):
    root = tmp_path / "tree"
    gray_img(root / "fear" / "g.png", size=30)
    rgb_img(root / "fear" / "c.png", size=(40, 30))
    sp = load_split("folder", root, "all")
    with pytest.raises(DatasetError, match="different sizes"):
        decode_split(sp, cache=tmp_path / "c")
    out = decode_split(sp, size=(20, 16), cache=tmp_path / "c")
    assert tuple(out.images.shape) == (2, 3, 20, 16)  # one colour image -> 3 channels for all
    im = decode_split(sp, size=(20, 16), cache=tmp_path / "c", use_cache=False)
    assert im.path is None and bool((im.images == out.images).all())


def test_cache_csv_pixels(tmp_path):
    px = " ".join(str(i % 256) for i in range(48 * 48))
    path = _fer_csv(tmp_path / "fer2013.csv", [(0, px, "Training"), (2, px, "Training")])
    sp = load_split("fer2013", path, "train")
    out = decode_split(sp, cache=tmp_path / "c")
    assert tuple(out.images.shape) == (2, 1, 48, 48) and out.labels.tolist() == [0, 2]
    assert decode_split(sp, cache=tmp_path / "c").from_cache


# ----------------------------------------------------------------------------------------------------------------------
# stats CLI
# ----------------------------------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pcnn")
    add_data_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_stats_cli(tmp_path, capsys):
    root = _rafdb_fixture(tmp_path / "rafdb")
    args = _cli(["data", "stats", "--dataset", "rafdb", "--root", str(root), "--json"])
    assert args.func(args) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert set(data) == {"dataset", "root", "splits"} and data["dataset"] == "rafdb"
    assert sum(data["splits"]["test"].values()) == 3
    assert "train: 1 of 3 image files are missing" in out.err
    args = _cli(["data", "stats", "--dataset", "rafdb", "--root", str(root)])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "happiness" in table and "total" in table
    args = _cli(["data", "stats", "--dataset", "ferplus", "--root", str(tmp_path / "missing")])
    with pytest.raises(DatasetError, match="^ferplus: root"):  # printed as one line by pcnn (test_bad_input.py)
        run_stats(args)


@pytest.mark.parametrize("flag", ["--label-rule", "--mode"])  # --mode: the old spelling, still accepted
def test_stats_label_rule_old_and_new_flag(tmp_path, run_cli, flag):
    root = _ferplus_fixture(tmp_path / "ferplus")
    code, out, _ = run_cli(["data", "stats", "--dataset", "ferplus", "--root", root, flag, "plurality", "--json"])
    assert code == 0 and sum(json.loads(out)["splits"]["train"].values()) == 4  # majority keeps 3


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "ferplus", "--image-variant", "aligned"],
     "dataset 'ferplus' has no --image-variant; its option is --label-rule (majority, plurality, probability, "
     "crossentropy)"),
    (["--dataset", "rafdb", "--classes", "7"], "dataset 'rafdb' has no --classes; its option is --image-variant"),
    (["--dataset", "fer2013", "--label-rule", "majority"], "dataset 'fer2013' has no --label-rule"),
    (["--dataset", "affectnet", "--classes", "6"], "dataset 'affectnet': unknown --classes '6'; choose from 8, 7"),
])
def test_stats_option_of_another_dataset_is_one_line(tmp_path, run_cli, argv, message):
    code, _, err = run_cli(["data", "stats", "--root", tmp_path, *argv])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_load_split_takes_the_option_by_its_name(tmp_path):
    root = _ferplus_fixture(tmp_path / "ferplus")
    assert load_split("ferplus", root, "train", label_rule="plurality").mode == "plurality"
    with pytest.raises(DatasetError, match="has no option 'image_variant'; its option is 'label_rule'"):
        load_split("ferplus", root, "train", image_variant="aligned")
    assert [r.option for r in DATASETS.values() if r.option] == ["label_rule", "image_variant", "classes"]


# ----------------------------------------------------------------------------------------------------------------------
# real data (exact counts; label files only, a few images decoded)
# ----------------------------------------------------------------------------------------------------------------------


def test_real_ferplus_majority_counts(real_dataset):
    root = real_dataset("ferplus")
    stats = dataset_stats("ferplus", root)
    totals = {s: sum(c.values()) for s, c in stats["splits"].items()}
    assert totals == {"train": 25045, "valid": 3191}
    assert list(stats["splits"]["train"]) == list(CANONICAL_CLASSES)
    plur = dataset_stats("ferplus", root, "plurality")["splits"]
    assert sum(plur["train"].values()) == 28385 and sum(plur["valid"].values()) == 3555


def test_real_ferplus_decode_small_subset(tmp_path, real_dataset):
    root = real_dataset("ferplus")
    sp = load_split("ferplus", root, "valid", "crossentropy")
    assert sp.soft_labels is not None and sp.soft_labels.shape == (len(sp), 8)
    sub = sp.subset(np.arange(160))
    out = decode_split(sub, cache=tmp_path / "cache", workers=2)  # >= 128 images: the threaded path
    assert tuple(out.images.shape) == (160, 1, 48, 48) and out.skipped == 0
    assert out.soft_labels is not None and tuple(out.soft_labels.shape) == (160, 8)
    assert np.array_equal(out.images[150, 0].numpy(), np.asarray(Image.open(sub.paths[150])))
    assert decode_split(sub, cache=tmp_path / "cache").from_cache


def test_real_fer2013_folder_counts(real_dataset):
    root = real_dataset("fer2013")
    stats = dataset_stats("fer2013", root)
    totals = {s: sum(c.values()) for s, c in stats["splits"].items()}
    assert totals == {"train": 28709, "public_test": 3589}
    assert list(stats["splits"]["train"]) == list(get_dataset("fer2013").classes())


def test_real_ckplus_counts(real_dataset):
    root = real_dataset("ckplus48")
    sp = load_split("ckplus", root, "all")
    assert len(sp) == 981 and len(sp.classes) == 7 and len(set(sp.subjects)) == 118
    assert sp.counts() == {"anger": 135, "contempt": 54, "disgust": 177, "fear": 75, "happiness": 207,
                           "sadness": 84, "surprise": 249}
    assert sp.native_image(0).mode == "L"


def test_real_rafdb_label_list_counts(real_dataset):
    root = real_dataset("rafdb")
    stats = dataset_stats("rafdb", root)
    totals = {s: sum(c.values()) for s, c in stats["splits"].items()}
    assert totals == {"train": 12271, "test": 3068}
    test = load_split("rafdb", root, "test")
    if not (Path(root) / "Image").exists():
        assert len(test.missing_images()) == 3068
        with pytest.raises(DatasetError, match="none of the 3068 images exist"):
            test.with_images()
