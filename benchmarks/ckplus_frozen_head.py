"""CK+ 10-fold from a FERPlus-trained PCNN's frozen features with a ridge head per fold: does a feature cache with
trained heads reach CK+ faster than fine-tuning (issue 35's "frozen-feature cache with trained heads")?

Protocol: CK+48, 7 classes, the 10 subject-independent folds of ``pcnn cv`` (seed 0). Each model is run once over
all 981 faces and their mirror images; a face's features are its fused global layer4 map and its five local layer3
maps, each average-pooled and concatenated. Per fold a ridge regression onto one-hot labels is fitted on the training
faces and their mirrors (z-scored with the training statistics), its λ chosen by a subject 5-fold split of the
training subjects only (the test fold never chooses anything), and the test face's scores are averaged with its
mirror's. ``--models`` takes run folders, weight files or bundled names; with several, a last row concatenates them.

    OMP_NUM_THREADS=1 python benchmarks/ckplus_frozen_head.py --root ../shared/data/ckplus48/CK+48 \
        --models default runs/sface-ferplus-80-cont
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pcnn_fer.data.datasets import get_dataset
from pcnn_fer.data.loader import load_tensor_data
from pcnn_fer.data.protocols import subject_kfold
from pcnn_fer.data.transforms import eval_transform
from pcnn_fer.engine.precision import cpu_capabilities, cpu_model
from pcnn_fer.weights import load_model

LAMBDAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)


@torch.inference_mode()
def pooled_features(model_name: str, split, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(faces, mirrored faces) × (pooled fused layer4 map ⊕ five pooled local layer3 maps) of one model."""
    model = load_model(model_name).eval()
    config = model.config
    data, _ = load_tensor_data(split, config.input_size)
    views = []
    for mirror in (False, True):
        rows = []
        for start in range(0, len(data.labels), batch):
            x = eval_transform(data.images[start:start + batch], config.input_size, config.mean, config.std)
            fused, local_maps = model.forward_features(x.flip(3) if mirror else x)
            rows.append(torch.cat([fused.mean((2, 3))] + [m.mean((2, 3)) for m in local_maps], 1).numpy())
        views.append(np.concatenate(rows))
    return views[0], views[1]


def fit_ridge(x: np.ndarray, labels: np.ndarray, classes: int, lam: float) -> np.ndarray:
    """Ridge weights (with a bias row) from rows ``x`` onto ±1 one-hot targets."""
    x1 = np.hstack([x, np.ones((len(x), 1))])
    targets = np.eye(classes)[labels] * 2 - 1
    if x1.shape[1] > len(x1):  # dual form for wide features
        return x1.T @ np.linalg.solve(x1 @ x1.T + lam * np.eye(len(x1)), targets)
    return np.linalg.solve(x1.T @ x1 + lam * np.eye(x1.shape[1]), x1.T @ targets)


def scores(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Ridge scores of rows ``x``."""
    return np.hstack([x, np.ones((len(x), 1))]) @ w


def fold_accuracy(views: tuple[np.ndarray, np.ndarray], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                  subjects: np.ndarray, classes: int) -> tuple[int, float]:
    """(correct test faces, λ) of one fold: λ from a subject split of the training faces, then fitted on all."""
    plain, mirror = views

    def run(fit_rows: np.ndarray, eval_rows: np.ndarray, lam: float) -> np.ndarray:
        x = np.concatenate([plain[fit_rows], mirror[fit_rows]])
        mean, std = x.mean(0), x.std(0) + 1e-6
        w = fit_ridge((x - mean) / std, np.concatenate([labels[fit_rows]] * 2), classes, lam)
        return (scores(w, (plain[eval_rows] - mean) / std) + scores(w, (mirror[eval_rows] - mean) / std)).argmax(1)

    inner_subjects = np.unique(subjects[train])
    inner_fold = {s: i % 5 for i, s in enumerate(np.random.default_rng(1).permutation(inner_subjects))}
    inner = np.array([inner_fold[s] for s in subjects[train]])

    def inner_correct(lam: float) -> int:
        return sum(int((run(train[inner != k], train[inner == k], lam) == labels[train[inner == k]]).sum())
                   for k in range(5))

    lam = max(LAMBDAS, key=inner_correct)
    return int((run(train, test, lam) == labels[test]).sum()), lam


def main() -> None:
    """Print each model's (and their concatenation's) CK+ 10-fold accuracy with ridge heads on frozen features."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="CK+48 root (its class folders)")
    parser.add_argument("--models", nargs="+", required=True, help="run folders, weight files or bundled names")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 1)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu: {cpu_model()}; {cpu_capabilities()}")
    split = get_dataset("ckplus").load(args.root, "all")
    labels, subjects = np.asarray(split.labels), np.asarray(split.subjects, dtype=object)
    classes = len(split.classes)
    folds = subject_kfold(split, 10, 0)
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in args.models:
        start = time.perf_counter()
        features[name] = pooled_features(name, split)
        print(f"{name}: {features[name][0].shape[1]} features per face, {time.perf_counter() - start:.1f} s for "
              f"{len(labels)} faces and their mirrors ({args.threads} thread(s))")
    if len(args.models) > 1:
        features[" + ".join(args.models)] = tuple(np.concatenate([features[n][i] for n in args.models], 1)
                                                   for i in (0, 1))
    for name, views in features.items():
        start = time.perf_counter()
        results = [fold_accuracy(views, labels, f.train, f.test, subjects, classes) for f in folds]
        per_fold = [100 * c / len(f.test) for (c, _), f in zip(results, folds)]
        pooled = 100 * sum(c for c, _ in results) / len(labels)
        print(f"{name}: pooled {pooled:.2f} %, per fold {np.mean(per_fold):.2f} ± {np.std(per_fold):.2f} % "
              f"(λ {sorted({lam for _, lam in results})}; heads {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
