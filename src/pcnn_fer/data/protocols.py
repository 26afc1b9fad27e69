"""Evaluation protocols: subject-independent folds, seeded validation carving, and published challenge subsets.

* :func:`subject_kfold` / :func:`leave_one_subject_out` / :func:`cross_validation`: folds that never share a
  subject (CK+: 10 folds by subject; JAFFE: 10 folds or leave-one-subject-out), deterministic from a seed.
* :func:`train_val_split` / :func:`train_val`: a stratified, seeded validation split carved from train where a
  dataset has none of its own.
* :func:`apply_subset`: restrict a split to a published occlusion / pose list (RAF-DB, FERPlus), matching entries
  to images by file stem; labels always come from the dataset, never from the list.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .datasets import DatasetError, Split, SubsetInfo, get_dataset, open_text

__all__ = [
    "Fold",
    "apply_subset",
    "check_folds",
    "cross_validation",
    "leave_one_subject_out",
    "PROTOCOLS",
    "match_subset",
    "read_subset_list",
    "stratified_kfold",
    "subject_kfold",
    "subset_key",
    "train_val",
    "train_val_split",
]


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: sample indices into the split for training and testing."""

    index: int
    train: np.ndarray
    test: np.ndarray
    test_subjects: tuple[str, ...]

    def split(self, split: Split) -> tuple[Split, Split]:
        """The (train, test) Splits of ``split`` for this fold, named ``fold<k>_train`` / ``fold<k>_test``."""
        tr = replace(split.subset(self.train), name=f"{split.name}_fold{self.index}_train")
        te = replace(split.subset(self.test), name=f"{split.name}_fold{self.index}_test")
        return tr, te


def _subjects(split: Split) -> np.ndarray:
    if split.subjects is None:
        raise DatasetError(f"{split.dataset}/{split.name} has no subject ids; subject-independent folds need them")
    return np.asarray(split.subjects, dtype=object)


def subject_kfold(split: Split, k: int = 10, seed: int = 0) -> list[Fold]:
    """``k`` subject-independent folds of ``split``, deterministic from ``seed``.

    Subjects are shuffled with ``seed``, then assigned largest-first to the fold with the fewest samples so far, which
    balances fold sizes; every subject's samples sit in exactly one test fold.
    """
    subj = _subjects(split)
    uniq, inverse, counts = np.unique(subj, return_inverse=True, return_counts=True)
    if k < 2:
        raise DatasetError(f"subject_kfold needs k >= 2, got {k}")
    if k > len(uniq):
        raise DatasetError(f"{split.dataset}/{split.name}: {k} folds but only {len(uniq)} subjects")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    fold_of = np.empty(len(uniq), dtype=np.int64)
    for s in order:
        f = int(np.argmin(load))
        fold_of[s] = f
        load[f] += counts[s]
    sample_fold = fold_of[inverse]
    folds = []
    for f in range(k):
        test = np.flatnonzero(sample_fold == f)
        train = np.flatnonzero(sample_fold != f)
        folds.append(Fold(f, train, test, tuple(sorted(str(u) for u in uniq[fold_of == f]))))
    return folds


def stratified_kfold(split: Split, k: int = 10, seed: int = 0) -> list[Fold]:
    """``k`` subject-DEPENDENT folds: each class's samples are shuffled with ``seed`` and dealt round-robin to the
    folds, ignoring subjects (the same person may be in train and test). Many papers report this protocol."""
    if k < 2:
        raise DatasetError(f"stratified k-fold needs k >= 2, got {k}")
    labels = np.asarray(split.labels)
    if k > len(labels):
        raise DatasetError(f"{split.dataset}/{split.name}: {k} folds but only {len(labels)} samples")
    rng = np.random.default_rng(seed)
    sample_fold = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        sample_fold[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)  # continue the deal where the last class stopped: fold sizes stay balanced
    return [Fold(f, np.flatnonzero(sample_fold != f), np.flatnonzero(sample_fold == f), ()) for f in range(k)]


def leave_one_subject_out(split: Split) -> list[Fold]:
    """One fold per subject (sorted by subject id): that subject's samples are the test set."""
    subj = _subjects(split)
    uniq = np.unique(subj)
    if len(uniq) < 2:
        raise DatasetError(f"{split.dataset}/{split.name}: leave-one-subject-out needs >= 2 subjects")
    return [Fold(i, np.flatnonzero(subj != s), np.flatnonzero(subj == s), (str(s),)) for i, s in enumerate(uniq)]


#: Cross-validation protocols by name, with the words every summary prints about them.
PROTOCOLS: dict[str, str] = {
    "kfold": "subject-independent k-fold",
    "loso": "subject-independent leave-one-subject-out",
    "random": "subject-dependent stratified k-fold (a subject may appear in train and test)",
}


def cross_validation(split: Split, protocol: str = "kfold", k: int = 10, seed: int = 0) -> list[Fold]:
    """Folds for ``protocol``: ``kfold`` (subject k-fold), ``loso`` (leave one subject out) or ``random``
    (subject-dependent stratified k-fold); see :data:`PROTOCOLS`."""
    p = protocol.lower().replace("-", "").replace("_", "")
    if p in ("kfold", "subjectkfold"):
        return subject_kfold(split, k=k, seed=seed)
    if p in ("loso", "leaveonesubjectout"):
        return leave_one_subject_out(split)
    if p in ("random", "stratifiedkfold"):
        return stratified_kfold(split, k=k, seed=seed)
    raise DatasetError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")


def check_folds(split: Split, folds: Iterable[Fold]) -> None:
    """Raise DatasetError unless test folds partition the split and no fold shares a subject between train/test."""
    subj = _subjects(split)
    seen = np.zeros(len(split), dtype=np.int64)
    for f in folds:
        seen[f.test] += 1
        if np.intersect1d(f.train, f.test).size:
            raise DatasetError(f"fold {f.index}: train and test share samples")
        shared = set(subj[f.train]) & set(subj[f.test])
        if shared:
            raise DatasetError(f"fold {f.index}: subjects in both train and test: {sorted(shared)[:5]}")
    if not np.all(seen == 1):
        raise DatasetError("test folds do not partition the split (a sample is in zero or several test folds)")


def train_val_split(split: Split, val_fraction: float = 0.1, seed: int = 0,
                    by_subject: bool = False) -> tuple[Split, Split]:
    """Carve a stratified, seeded validation split from ``split``; returns (train, val) named ``train``/``val``.

    Per class, ``round(n_c * val_fraction)`` samples go to validation (at least one when the class has two or
    more). With ``by_subject`` whole subjects are moved instead (subject-independent; stratified only roughly).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    n = len(split)
    is_val = np.zeros(n, dtype=bool)
    if by_subject:
        subj = _subjects(split)
        uniq = np.unique(subj)
        perm = rng.permutation(len(uniq))
        target = max(1, int(round(n * val_fraction)))
        taken = 0
        chosen = []
        for s in uniq[perm]:
            if taken >= target:
                break
            chosen.append(s)
            taken += int(np.sum(subj == s))
        is_val = np.isin(subj, np.array(chosen, dtype=object))
    else:
        for c in range(split.num_classes):
            idx = np.flatnonzero(split.labels == c)
            if len(idx) < 2:
                continue
            m = min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
            is_val[rng.choice(idx, size=m, replace=False)] = True
    train = replace(split.subset(np.flatnonzero(~is_val)), name=f"{split.name}-minus-val")
    val = replace(split.subset(np.flatnonzero(is_val)), name=f"{split.name}-val")
    return train, val


def train_val(name: str, root: Path | str, mode: str | None = None, val_fraction: float = 0.1,
              seed: int = 0) -> tuple[Split, Split]:
    """(train, validation) Splits for dataset ``name``: its own validation split if it has one, else carved."""
    reader = get_dataset(name)
    train = reader.load(root, reader.train_split, mode)
    if reader.val_split is not None and reader.val_split in reader.splits(root):
        return train, reader.load(root, reader.val_split, mode)
    if reader.name == "folder":
        for cand in ("val", "valid", "validation"):
            if cand in reader.splits(root):
                return train, reader.load(root, cand, mode)
    return train_val_split(train, val_fraction=val_fraction, seed=seed, by_subject=train.subjects is not None)


# ----------------------------------------------------------------------------------------------------------------------
# Challenge subsets
# ----------------------------------------------------------------------------------------------------------------------

_LEADING_INDEX = re.compile(r"^\d+_(?=\D)")
_ALIGNED = re.compile(r"_aligned$", re.IGNORECASE)


def subset_key(name: str) -> str:
    """Normalised matching key of an image name: base name, no extension, no ``_aligned``, no leading ``<n>_``.

    ``0/test_0004_aligned.jpg`` -> ``test_0004``; ``1_fer0034656.png`` -> ``fer0034656``;
    ``fer0032226.jpg`` -> ``fer0032226``.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = _ALIGNED.sub("", stem)
    stem = _LEADING_INDEX.sub("", stem)
    return stem.lower()


def read_subset_list(list_file: Path | str) -> list[str]:
    """Image names of a published subset list (first token of each non-empty line).

    Accepts RAF-DB occlusion lines (``test_0003_aligned 3 4``), pose lines (``0/test_0004_aligned.jpg``) and the
    FERPlus equivalents (``1_fer0034656.png 8 0``, ``0/fer0032226.jpg``). A label-only file (such as RAF-DB's
    ``val_raf_db_label.txt``) is rejected with a DatasetError naming the file and line.
    """
    path = Path(list_file)
    if not path.is_file():
        raise DatasetError(f"subset list {path} not found")
    names = []
    with open_text(path) as f:
        for line_no, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            tok = parts[0]
            if re.fullmatch(r"[\d.]+", tok):
                raise DatasetError(f"{path}:{line_no}: {line.strip()!r} is not an image name "
                                   f"(a label file? subset lists name images, e.g. 0/test_0004_aligned.jpg)")
            names.append(tok)
    if not names:
        raise DatasetError(f"subset list {path} is empty")
    return names


def match_subset(split: Split, entries: Iterable[str],
                 keep_duplicates: bool = False) -> tuple[np.ndarray, list[str], int]:
    """Indices of ``split`` samples named by ``entries``, the unmatched entries, and the count of repeated entries.

    Matching is by file stem: exact stem first, then the normalised :func:`subset_key` (so ``.jpg`` entries match
    ``.png`` files and ``_aligned`` / leading ``<n>_`` decorations are ignored). Indices are unique and in split order,
    unless ``keep_duplicates`` (then in list order, repeated as often as listed).
    """
    index: dict[str, int] = {}
    for i, s in enumerate(split.stems):
        index.setdefault(s.lower(), i)
    for i, s in enumerate(split.stems):
        index.setdefault(subset_key(s), i)
    hits: list[int] = []
    seen: set[int] = set()
    duplicates = 0
    unmatched: list[str] = []
    for e in entries:
        base = e.replace("\\", "/").rsplit("/", 1)[-1]
        exact = base.rsplit(".", 1)[0].lower() if "." in base else base.lower()
        i = index.get(exact)
        if i is None:
            i = index.get(subset_key(e))
        if i is None:
            unmatched.append(e)
            continue
        if i in seen:
            duplicates += 1
            if not keep_duplicates:
                continue
        seen.add(i)
        hits.append(i)
    idx = np.array(hits if keep_duplicates else sorted(hits), dtype=np.int64)
    return idx, unmatched, duplicates


def apply_subset(split: Split, list_file: Path | str, warn: bool = True, keep_duplicates: bool = False) -> Split:
    """``split`` restricted to the images named in a published subset list (labels from the dataset).

    The result's ``subset_info`` records how many list entries there were, how many matched, how many matched no
    image (also warned about with ``warn``) and how many repeat an earlier entry (the published RAF-DB occlusion
    list names ``test_2464`` twice: 735 lines, 734 images). Repeats are kept only with ``keep_duplicates``.
    Raises DatasetError when no entry matches.
    """
    entries = read_subset_list(list_file)
    idx, unmatched, duplicates = match_subset(split, entries, keep_duplicates=keep_duplicates)
    if idx.size == 0:
        example = split.stems[0] if split.stems else "empty split"
        raise DatasetError(
            f"subset list {list_file}: none of its {len(entries)} entries (e.g. {entries[0]!r}) matches an image of "
            f"{split.dataset}/{split.name} (e.g. {example!r}); is it a list for another dataset or split?"
        )
    if unmatched and warn:
        warnings.warn(f"subset list {list_file}: {len(unmatched)} of {len(entries)} entries match no image of "
                      f"{split.dataset}/{split.name} (e.g. {unmatched[0]!r})", stacklevel=2)
    out = split.subset(idx)
    out.name = f"{split.name}[{Path(list_file).stem}]"
    out.subset_info = SubsetInfo(str(list_file), len(entries), len(entries) - len(unmatched), len(unmatched),
                                 duplicates, tuple(unmatched[:10]))
    return out
