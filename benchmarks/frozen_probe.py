"""Frozen-feature ridge probe: how much expression a face network's features carry, before any fine-tuning.

Protocol (issue 35; the same for every row): 4000 FERPlus training faces (a seeded sample of the majority-rule
faces) and all 3191 FER2013Valid faces (majority rule); each network's frozen features are z-scored with the
training statistics, a ridge regression onto one-hot labels is fitted (its λ picked on 800 of the 4000 training
faces, then refitted on all 4000) and the arg-max is scored on FER2013Valid. Features are cached in ``--cache``;
``--train-faces`` / ``--valid-faces`` shrink the samples when CPU time is short (the report says so).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/frozen_probe.py --root ../shared/data/ferplus \
        --cache /tmp/probe35 [--faceres-dir DIR]

Rows: raw pixels (48×48); SFace (``pcnn_fer.sface_weights``, 112 px): the last convolutional map (conv_14)
average-pooled (1024-d) and pooled to 3×3 (9216-d), and its 128-d descriptor; dlib's ResNet-29
(``pcnn_fer.dlib_weights``, 150 px): its 128-d descriptor and the pooled level0 map (256-d); FaceRes
(``pcnn_fer.faceres_weights``, the user's ``faceres.json`` + ``faceres.bin`` from ``--faceres-dir``, not bundled: its
licence is unsettled), fed 224 px and 112 px: the last convolutional map (conv_pw_13) average-pooled (1024-d, the
graph's ``global_pooling/Mean`` descriptor) and pooled to 3×3 (9216-d), and its 256-d ``feats`` layer, with
upstream's input normalisation (BGR minus the VGGFace means); ``faceres_human`` is the 224-px pooled map with the
Human library's normalisation (RGB 0…255 as is).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pcnn_fer.data.datasets import get_dataset
from pcnn_fer.data.loader import load_tensor_data
from pcnn_fer.dlib_weights import load_dlib_resnet
from pcnn_fer.faceres_weights import load_faceres_net
from pcnn_fer.sface_weights import load_sface_net

TRAIN_FACES = 4000
LAMBDAS = (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


def faces(root: str, split: str, count: int | None, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (N, 1|3, 48, 48) faces and majority labels of a FERPlus split (a seeded sample of ``count``)."""
    data, _ = load_tensor_data(get_dataset("ferplus").load(root, split, "majority"), 48)
    images, labels = data.images, data.labels.numpy()
    if count is not None:
        rows = np.random.default_rng(seed).choice(len(labels), count, replace=False)
        images, labels = images[torch.from_numpy(rows)], labels[rows]
    return images, labels


def rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """0…255 float RGB at ``size`` (gray faces repeated on three channels)."""
    x = images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@torch.inference_mode()
def sface_features(images: torch.Tensor, batch: int = 32, size: int = 112) -> dict[str, np.ndarray]:
    """SFace's conv_14 map pooled (1024), pooled to 3×3 (9216) and (at 112 px only) its 128-d descriptor."""
    net = load_sface_net()
    out: dict[str, list[np.ndarray]] = {"sface_pool": [], "sface_grid3": []}
    if size == 112:  # pre_fc1 reads the whole 7×7 map
        out["sface_descriptor"] = []
    for start in range(0, len(images), batch):
        x = rgb(images[start:start + batch], size)
        fmap = net.features(x)
        out["sface_pool"].append(fmap.mean((2, 3)).numpy())
        out["sface_grid3"].append(F.adaptive_avg_pool2d(fmap, 3).flatten(1).numpy())
        if "sface_descriptor" in out:
            out["sface_descriptor"].append(net.fc1(net.pre_fc1(net.bn1(fmap).flatten(1))).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.inference_mode()
def dlib_features(images: torch.Tensor, batch: int = 32) -> dict[str, np.ndarray]:
    """dlib's 128-d descriptor and its pooled level0 map (256) on 150-px chips."""
    net = load_dlib_resnet()
    out: dict[str, list[np.ndarray]] = {"dlib_descriptor": [], "dlib_pool": []}
    for start in range(0, len(images), batch):
        x = (rgb(images[start:start + batch], 150) - net.pixel_mean) / 256.0
        pooled = net.head(net.trunk(x)).mean((2, 3))
        out["dlib_pool"].append(pooled.numpy())
        out["dlib_descriptor"].append(net.fc(pooled).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.inference_mode()
def faceres_features(images: torch.Tensor, folder: str | None, batch: int = 32) -> dict[str, np.ndarray]:
    """FaceRes's conv_pw_13 map pooled (1024) and pooled to 3×3 (9216) and its 256-d feats, at 224 and 112 px."""
    net = load_faceres_net(folder)
    out: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), batch):
        for size in (224, 112):
            fmap = net.features(rgb(images[start:start + batch], size))
            out.setdefault(f"faceres{size}_pool", []).append(fmap.mean((2, 3)).numpy())
            out.setdefault(f"faceres{size}_grid3", []).append(F.adaptive_avg_pool2d(fmap, 3).flatten(1).numpy())
            out.setdefault(f"faceres{size}_feats", []).append(net.heads(fmap).feats.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.inference_mode()
def faceres_human_features(images: torch.Tensor, folder: str | None, batch: int = 32) -> dict[str, np.ndarray]:
    """FaceRes's pooled conv_pw_13 map at 224 px, fed RGB 0…255 as the Human library feeds it."""
    net = load_faceres_net(folder, normalisation="human")
    pooled = [net.features(rgb(images[s:s + batch], 224)).mean((2, 3)).numpy() for s in range(0, len(images), batch)]
    return {"faceres224_human_pool": np.concatenate(pooled)}


def ridge_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray,
                   classes: int) -> tuple[float, float]:
    """(test accuracy, λ) of a ridge probe, λ chosen on the last fifth of the training rows (800 of 4000)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    a, b = (train - mean) / std, (test - mean) / std
    targets = np.eye(classes)[y_train] * 2 - 1

    def fit(x: np.ndarray, t: np.ndarray, lam: float) -> np.ndarray:
        x1 = np.hstack([x, np.ones((len(x), 1))])
        if x1.shape[1] > len(x1):  # dual form for wide features
            return x1.T @ np.linalg.solve(x1 @ x1.T + lam * np.eye(len(x1)), t)
        return np.linalg.solve(x1.T @ x1 + lam * np.eye(x1.shape[1]), x1.T @ t)

    def score(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        return float(((np.hstack([x, np.ones((len(x), 1))]) @ w).argmax(1) == y).mean())

    fit_rows = len(a) - len(a) // 5
    best = max(LAMBDAS, key=lambda lam: score(fit(a[:fit_rows], targets[:fit_rows], lam), a[fit_rows:],
                                              y_train[fit_rows:]))
    return score(fit(a, targets, best), b, y_test), best


def main() -> None:
    """Extract (or read cached) features and print one probe row per feature."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="FERPlus root (FER2013Train/, FER2013Valid/)")
    parser.add_argument("--cache", type=Path, required=True, help="folder for the extracted features")
    parser.add_argument("--only", nargs="*", default=["raw", "sface", "dlib"],
                        choices=["raw", "sface", "dlib", "faceres", "faceres_human"], help="feature families")
    parser.add_argument("--faceres-dir", help="folder holding FaceRes's faceres.json and faceres.bin (default: "
                        "$PCNN_FACERES_DIR)")
    parser.add_argument("--sface-size", type=int, default=112, help="SFace's input size in pixels (default 112, "
                        "its training size; the descriptor row needs 112)")
    parser.add_argument("--extract-only", choices=["train", "valid"], help="only extract (and cache) this split's "
                        "features, e.g. in a second process beside a running probe")
    parser.add_argument("--train-faces", type=int, default=TRAIN_FACES, help="training faces (seeded sample)")
    parser.add_argument("--valid-faces", type=int, default=0, help="FER2013Valid faces (seeded sample; 0 = all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    args.cache.mkdir(parents=True, exist_ok=True)
    train, y_train = faces(args.root, "train", args.train_faces)
    valid, y_valid = faces(args.root, "valid", args.valid_faces or None)
    classes = int(max(y_train.max(), y_valid.max())) + 1
    print(f"{len(train)} training faces, {len(valid)} FER2013Valid faces, {classes} classes", flush=True)
    extractors = {"raw": lambda im: {"raw_pixels": im.float().flatten(1).numpy() / 255},
                  "sface": lambda im: sface_features(im, size=args.sface_size), "dlib": dlib_features,
                  "faceres": lambda im: faceres_features(im, args.faceres_dir),
                  "faceres_human": lambda im: faceres_human_features(im, args.faceres_dir)}
    for family in args.only:
        start = time.time()
        feats = {}
        for split, images in (("train", train), ("valid", valid)):
            if args.extract_only not in (None, split):
                continue
            tag = f"sface{args.sface_size}" if family == "sface" and args.sface_size != 112 else family
            path = args.cache / f"{tag}_{split}.npz"
            if not path.exists():  # written whole, then renamed: a second process may read the cache
                np.savez(path.with_suffix(".tmp.npz"), **extractors[family](images))
                os.replace(path.with_suffix(".tmp.npz"), path)
            feats[split] = dict(np.load(path))
        took = time.time() - start
        if args.extract_only:
            print(f"{family} {args.extract_only}: features cached in {took:.0f} s", flush=True)
            continue
        for name in feats["train"]:
            acc, lam = ridge_accuracy(feats["train"][name], y_train, feats["valid"][name], y_valid, classes)
            print(f"{name:<18} {feats['train'][name].shape[1]:>6}-d  FER2013Valid {100 * acc:6.2f} %  (λ {lam:g}; "
                  f"features {took:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
