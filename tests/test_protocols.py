"""Protocols: subject-independent folds, seeded validation carving, published challenge-subset lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcnn_fer.data import (
    DatasetError,
    Split,
    apply_subset,
    check_folds,
    cross_validation,
    leave_one_subject_out,
    load_split,
    read_subset_list,
    subject_kfold,
    train_val,
    train_val_split,
)
from pcnn_fer.data.protocols import match_subset, subset_key


def _img(path: Path, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (48, 48), 100).save(path)


def _subject_split(n_subjects: int = 13, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    subjects, labels = [], []
    for s in range(n_subjects):
        for _ in range(int(rng.integers(1, 9))):
            subjects.append(f"S{s:03d}")
            labels.append(int(rng.integers(0, 7)))
    n = len(labels)
    return Split("fixture", "all", ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),
                 [Path(f"{i}.png") for i in range(n)], np.array(labels), stems=[str(i) for i in range(n)],
                 subjects=subjects)


# ----------------------------------------------------------------------------------------------------------------------
# folds
# ----------------------------------------------------------------------------------------------------------------------


def _assert_subject_independent(split: Split, folds) -> None:
    check_folds(split, folds)
    subj = np.asarray(split.subjects, dtype=object)
    all_test = np.concatenate([f.test for f in folds])
    assert sorted(all_test.tolist()) == list(range(len(split)))
    for f in folds:
        assert not set(subj[f.train]) & set(subj[f.test])
        assert set(f.test_subjects) == set(subj[f.test])
    for a in folds:
        for b in folds:
            if a.index < b.index:
                assert not set(a.test_subjects) & set(b.test_subjects)


def test_subject_kfold_fixture():
    sp = _subject_split()
    folds = subject_kfold(sp, k=10, seed=3)
    assert len(folds) == 10
    _assert_subject_independent(sp, folds)
    again = subject_kfold(sp, k=10, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again, strict=True))
    other = subject_kfold(sp, k=10, seed=4)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other, strict=True))
    with pytest.raises(DatasetError, match="only 13 subjects"):
        subject_kfold(sp, k=14)
    tr, te = folds[0].split(sp)
    assert len(tr) + len(te) == len(sp) and te.name.endswith("fold0_test")


def test_loso_fixture():
    sp = _subject_split(10)
    folds = leave_one_subject_out(sp)
    assert len(folds) == 10 and all(len(f.test_subjects) == 1 for f in folds)
    _assert_subject_independent(sp, folds)
    assert len(cross_validation(sp, "loso")) == 10
    assert len(cross_validation(sp, "kfold", k=5)) == 5
    with pytest.raises(DatasetError, match="unknown protocol"):
        cross_validation(sp, "holdout")
    nosubj = Split("x", "train", ("anger",), [Path("a.png")], np.array([0]), stems=["a"])
    with pytest.raises(DatasetError, match="no subject ids"):
        subject_kfold(nosubj)


def test_check_folds_detects_leaks():
    sp = _subject_split()
    folds = subject_kfold(sp, k=5)
    bad = folds[0].__class__(0, np.arange(len(sp)), folds[0].test, folds[0].test_subjects)
    with pytest.raises(DatasetError):
        check_folds(sp, [bad, *folds[1:]])


def test_jaffe_fixture_folds(tmp_path):
    root = tmp_path / "jaffe"
    subjects = ["KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM"]
    codes = ["AN", "DI", "FE", "HA", "NE", "SA", "SU"]
    k = 0
    for s in subjects:
        for c in codes[: 3 + len(s) % 3]:
            k += 1
            _img(root / f"{s}.{c}1.{k}.tiff")
    sp = load_split("jaffe", root, "all")
    _assert_subject_independent(sp, subject_kfold(sp, k=10, seed=0))
    loso = cross_validation(sp, "loso")
    assert [f.test_subjects[0] for f in loso] == subjects
    _assert_subject_independent(sp, loso)


def test_real_ckplus_folds_never_share_a_subject(real_dataset):
    sp = load_split("ckplus", real_dataset("ckplus48"), "all")
    folds = subject_kfold(sp, k=10, seed=0)
    _assert_subject_independent(sp, folds)
    sizes = [len(f.test) for f in folds]
    assert sum(sizes) == 981 and max(sizes) - min(sizes) <= 12  # sizes balanced (3 frames per sequence)


# ----------------------------------------------------------------------------------------------------------------------
# validation carving
# ----------------------------------------------------------------------------------------------------------------------


def test_train_val_split_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [100, 50, 10, 1])
    n = len(labels)
    sp = Split("x", "train", ("anger", "fear", "neutral", "sadness"), [Path(f"{i}.png") for i in range(n)], labels,
               stems=[f"s{i}" for i in range(n)])
    tr, va = train_val_split(sp, 0.1, seed=1)
    assert len(tr) + len(va) == n and not set(tr.stems) & set(va.stems)
    assert va.counts() == {"anger": 10, "fear": 5, "neutral": 1, "sadness": 0}
    tr2, va2 = train_val_split(sp, 0.1, seed=1)
    assert va2.stems == va.stems
    assert train_val_split(sp, 0.1, seed=2)[1].stems != va.stems
    with pytest.raises(DatasetError):
        train_val_split(sp, 1.5)


def test_train_val_by_subject():
    sp = _subject_split(20)
    tr, va = train_val_split(sp, 0.2, seed=0, by_subject=True)
    assert len(va) > 0 and not set(tr.subjects) & set(va.subjects)


def test_train_val_uses_own_validation_split_or_carves(tmp_path):
    fp = tmp_path / "ferplus"
    for d, name in (("FER2013Train", "fer0000000.png"), ("FER2013Valid", "fer0000001.png")):
        (fp / d).mkdir(parents=True)
        (fp / d / "label.csv").write_text(f'{name},"(0, 0, 48, 48)",0,10,0,0,0,0,0,0,0,0\n')
    tr, va = train_val("ferplus", fp)
    assert va.name == "valid" and va.stems == ["fer0000001"]
    raf = tmp_path / "rafdb"
    (raf / "EmoLabel").mkdir(parents=True)
    (raf / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"train_{i:05d}.jpg {1 + i % 7}\n" for i in range(1, 71)) + "test_0001.jpg 1\n")
    tr, va = train_val("rafdb", raf, seed=0)
    assert len(tr) + len(va) == 70 and len(va) == 7 and set(va.labels) == set(range(7))


# ----------------------------------------------------------------------------------------------------------------------
# challenge subsets
# ----------------------------------------------------------------------------------------------------------------------


def test_subset_key():
    assert subset_key("0/test_0004_aligned.jpg") == "test_0004"
    assert subset_key("test_0003_aligned") == "test_0003"
    assert subset_key("1_fer0034656.png") == "fer0034656"
    assert subset_key("0/fer0032226.jpg") == "fer0032226"
    assert subset_key("Training_10118481") == "training_10118481"


def _raf(tmp_path: Path) -> Path:
    root = tmp_path / "rafdb"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 1\ntest_0001.jpg 5\ntest_0002.jpg 4\ntest_0003.jpg 4\ntest_0004.jpg 1\ntest_0005.jpg 7\n")
    return root


def test_apply_subset_rafdb_formats(tmp_path):
    test = load_split("rafdb", _raf(tmp_path), "test")
    occ = tmp_path / "occ.txt"
    lines = ["test_0003_aligned 3 4", "test_0005_aligned 6 1", "test_0005_aligned 6 1", "test_9999_aligned 0 2"]
    occ.write_text("\r\n".join(lines) + "\r\n")
    with pytest.warns(UserWarning, match="1 of 4 entries match no image"):
        sub = apply_subset(test, occ)
    assert sub.stems == ["test_0003", "test_0005"]
    assert [sub.classes[i] for i in sub.labels] == ["happiness", "neutral"]  # labels from the dataset
    info = sub.subset_info
    assert (info.entries, info.matched, info.unmatched, info.duplicates) == (4, 3, 1, 1)
    assert info.unmatched_examples == ("test_9999_aligned",)
    with pytest.warns(UserWarning):
        assert len(apply_subset(test, occ, keep_duplicates=True)) == 3
    pose = tmp_path / "pose.txt"
    pose.write_text("0/test_0004_aligned.jpg\n4/test_0001_aligned.jpg\n")
    sub = apply_subset(test, pose)
    assert sub.stems == ["test_0001", "test_0004"] and sub.subset_info.unmatched == 0
    train = load_split("rafdb", tmp_path / "rafdb", "train")
    with pytest.raises(DatasetError, match="none of its 2 entries"):
        apply_subset(train, pose)
    labels = tmp_path / "labels.txt"
    labels.write_text("2 7\n0\n4\n")
    with pytest.raises(DatasetError, match=r"labels\.txt:1: .* not an image name"):
        read_subset_list(labels)
    with pytest.raises(DatasetError, match="not found"):
        apply_subset(test, tmp_path / "nothing.txt")


def test_apply_subset_ferplus_formats(tmp_path):
    root = tmp_path / "ferplus" / "FER2013Test"
    root.mkdir(parents=True)
    names = ["fer0032220.png", "fer0032226.png", "fer0034656.png"]
    (root / "label.csv").write_text(
        "".join(f'{n},"(0, 0, 48, 48)",0,0,0,0,0,0,10,0,0,0\n' for n in names))
    for n in names:
        _img(root / n)
    test = load_split("ferplus", tmp_path / "ferplus", "test")
    occ = tmp_path / "ferplus_occlusion.txt"
    occ.write_text("1_fer0034656.png 8 0\n")
    sub = apply_subset(test, occ)
    assert sub.stems == ["fer0034656"] and sub.classes[int(sub.labels[0])] == "fear"
    pose = tmp_path / "ferplus_pose.txt"
    pose.write_text("0/fer0032226.jpg\n6/fer0032220.jpg\n")  # .jpg names for .png files
    sub = apply_subset(test, pose)
    assert sub.stems == ["fer0032220", "fer0032226"] and sub.paths[0].suffix == ".png"
    idx, unmatched, dups = match_subset(test, ["x/fer0000001.jpg"])
    assert idx.size == 0 and unmatched == ["x/fer0000001.jpg"] and dups == 0


def test_real_rafdb_challenge_lists(real_dataset):
    root = real_dataset("rafdb")
    lists = Path(root) / "ran_lists"
    if not lists.is_dir():
        pytest.skip(f"no RAF-DB subset lists in {lists}")
    test = load_split("rafdb", root, "test")
    expected = {"rafdb_occlusion_list.txt": (735, 734), "val_raf_db_list.txt": (1247, 1247),
                "val_raf_db_list_45.txt": (558, 558)}
    for fname, (entries, images) in expected.items():
        sub = apply_subset(test, lists / fname)
        assert (sub.subset_info.entries, len(sub), sub.subset_info.unmatched) == (entries, images, 0), fname
        # the lists' own label index (official label - 1) agrees with the dataset's labels
        listed = {}
        for line in (lists / fname).read_text().split("\n"):
            if not line.strip():
                continue
            tok = line.split()
            if "/" in tok[0]:
                listed[subset_key(tok[0])] = int(tok[0].split("/")[0])
            else:
                listed[subset_key(tok[0])] = int(tok[1])
        got = {subset_key(s): int(label) for s, label in zip(sub.stems, sub.labels, strict=True)}
        assert got == listed, fname
