"""``pcnn cv``: cross-validation, subject-independent by default (CK+: 10 folds by subject; JAFFE: 10 folds or LOSO),
subject-dependent with ``--protocol random``.

Each fold trains on the other folds' subjects (a validation split carved from them, by subject, selects the epoch)
and is evaluated once on its own subjects. Every fold lives in ``OUT/foldNN`` (a normal run directory plus
``metrics.json``); a fold that already has its metrics is reused and an interrupted fold resumes from its
``last.pt``, so re-running the same command after a crash continues where it stopped. ``OUT/cv.json`` holds the
per-fold accuracies and their mean ± std.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.datasets import Split, dataset_root, get_dataset
from ..data.loader import TensorData, load_tensor_data
from ..data.protocols import PROTOCOLS, Fold, cross_validation, train_val_split
from ..errors import UsageError
from ..fileio import removed_on_failure
from ..weights import load_model
from .checkpoint import load_checkpoint
from .devices import resolve_device, set_threads
from .distributed import env_world_size
from .logs import plot_confusion, write_json
from .loop import confusion_matrix, metrics_from_confusion, predict_logits
from .options import TrainOptions
from .recipes import Recipe
from .train import fit

__all__ = ["cross_validate", "ensemble_metrics", "summarise"]


def summarise(values: list[float]) -> tuple[float, float]:
    """(mean, population standard deviation) of ``values``; NaN for an empty list."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))


def cross_validate(recipe: Recipe, opts: TrainOptions, folds: int = 10, protocol: str = "kfold",
                   only_folds: list[int] | None = None, use_val: bool | None = None, tta: str | None = None,
                   members: int | None = None, log: Any = print) -> dict[str, Any]:
    """Train and evaluate every fold of ``opts.dataset`` and write ``OUT/cv.json``; returns its content.

    ``use_val``: carve a validation split from each fold's train to select the epoch (else the last epoch).
    ``tta='flip'`` averages each test face's prediction with its mirror's. ``members`` > 1 trains that many models
    per fold (training seeds ``seed``, ``seed + 1``, ...; the same folds and validation split) and averages their
    probabilities. None takes the recipe's ``cv_val`` / ``cv_tta`` / ``cv_members``. A finished fold whose metrics
    were made with another ``tta`` or ``members`` is evaluated again from its saved models; only missing members
    are trained."""
    use_val = recipe.cv_val if use_val is None else use_val
    tta = recipe.cv_tta if tta is None else tta
    members = recipe.cv_members if members is None else members
    if members < 1:
        raise UsageError(f"--members must be at least 1, got {members}")
    if env_world_size() > 1:
        raise UsageError("pcnn cv runs in a single process (launch it without torchrun)")
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    threads = set_threads(opts.threads)
    reader = get_dataset(opts.dataset)
    root = dataset_root(opts.root, reader.name)
    out = Path(opts.out)
    split = reader.load(root, reader.train_split, opts.dataset_option)
    if protocol != "random" and split.subjects is None:
        raise UsageError(f"{reader.name} has no subject ids: subject-independent cross-validation is impossible "
                         "(--protocol random gives subject-dependent folds)")
    all_folds = cross_validation(split, protocol=protocol, k=folds, seed=opts.seed)
    fold_list = all_folds
    if only_folds:
        bad = [k for k in only_folds if not 0 <= k < len(all_folds)]
        if bad:
            raise UsageError(f"--only-folds {bad}: folds are numbered 0..{len(all_folds) - 1}")
        fold_list = [f for f in all_folds if f.index in set(only_folds)]
    device = resolve_device(opts.device)
    aligner = FaceAligner() if wants_alignment(reader, opts.align_faces) else None
    full, _ = load_tensor_data(split, recipe.input_size, device, opts.cache_dir, opts.use_cache, aligner, log)
    detector = aligner.name if aligner else None
    subjects = f"{len(set(split.subjects))} subjects" if split.subjects is not None else "no subject ids"
    log(f"{reader.name}: {len(split)} images, {subjects}, {PROTOCOLS[protocol]} with {len(fold_list)} fold(s), "
        f"recipe {recipe.name}")
    with removed_on_failure(out, keep=lambda: any(out.glob("fold*/last.pt"))):
        results = [_fold(fold, split, full, recipe, opts, protocol, use_val, (tta, members), device, detector, log)
                   for fold in fold_list]
        summary = {**_summary(reader.name, protocol, len(all_folds), results, recipe, opts, use_val), "tta": tta,
                   "members": members,
                   "threads": threads, "face_alignment": face_summary([full], detector)}
        write_json(out / "cv.json", summary)
    how = f"{members} member(s), tta {tta}, {'epoch selected on validation' if use_val else 'last epoch'}"
    log(f"{reader.name} {PROTOCOLS[protocol]} ({how}): accuracy {summary['accuracy_mean']:.2f} ± "
        f"{summary['accuracy_std']:.2f}% over {len(results)} fold(s) "
        f"(pooled {summary['pooled_accuracy']:.2f}%) -> {out / 'cv.json'}")
    return summary


def _fold(fold: Fold, split: Split, full: TensorData, recipe: Recipe, opts: TrainOptions, protocol: str,
          use_val: bool, evaluation: tuple[str, int], device: torch.device, detector: str | None,
          log: Any) -> dict[str, Any]:
    """Train (or resume, or reuse) one fold's ``members`` models (``OUT/foldNN``, then ``OUT/foldNN/memberM``) and
    evaluate them on its test rows with ``tta`` (``evaluation = (tta, members)``); its metrics (``detector``: the
    face aligner's name when the data was decoded face-aligned)."""
    tta, members = evaluation
    fold_dir = Path(opts.out) / f"fold{fold.index:02d}"
    metrics_path = fold_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        made_with = (metrics.get("tta", "none"), metrics.get("members", 1))
        if made_with == evaluation:
            log(f"fold {fold.index}: reusing {metrics_path} ({metrics['accuracy']:.2f}%)")
            return metrics
        log(f"fold {fold.index}: evaluating again with test-time augmentation {tta} and {members} member(s) "
            f"(was {made_with[0]}, {made_with[1]}: {metrics['accuracy']:.2f}%)")
    subject_independent = protocol != "random"
    train_split, test_split = fold.split(split)
    val_data = None
    if use_val:
        train_split, val_split = train_val_split(train_split, val_fraction=opts.val_fraction, seed=opts.seed,
                                                 by_subject=subject_independent)
        val_data = full.subset(val_split, name=f"fold{fold.index}-val")
    train_data = full.subset(train_split, name=f"fold{fold.index}-train")
    test_data = full.subset(test_split, name=f"fold{fold.index}-test")
    info = {"dataset": split.dataset, "fold": fold.index, "test_subjects": list(fold.test_subjects),
            "val_split": (f"fold{fold.index} train-val({opts.val_fraction:g}, "
                          f"{'by subject' if subject_independent else 'stratified'})") if use_val else None,
            "num_train": len(train_data), "num_val": len(val_data) if val_data is not None else 0,
            "face_alignment": face_summary([train_data] if val_data is None else [train_data, val_data], detector)}
    log(f"fold {fold.index}: train {len(train_data)}, val {info['num_val']}, test {len(test_data)} "
        + (f"({len(fold.test_subjects)} subjects)" if subject_independent else "(subject-dependent)"))
    member_dirs = [fold_dir] + [fold_dir / f"member{m}" for m in range(1, members)]
    for m, run_dir in enumerate(member_dirs):
        checkpoint = load_checkpoint(run_dir) if (run_dir / "last.pt").exists() else None
        if checkpoint is None or int(checkpoint["epoch"]) < recipe.epochs:
            if members > 1:
                log(f"fold {fold.index}: member {m + 1}/{members} (training seed {opts.seed + m})")
            fit(recipe, replace(opts, out=str(run_dir), seed=opts.seed + m), train_data, val_data, run_dir,
                checkpoint=checkpoint, info=info, log=log)
    m = ensemble_metrics([load_model(d, device=device) for d in member_dirs], test_data, opts.eval_batch_size, tta)
    metrics = {"dataset": split.dataset, "split": f"fold{fold.index}_test", "subset": None,
               "num_samples": m["num_samples"], "classes": list(test_data.classes), "accuracy": m["accuracy"],
               "mean_class_accuracy": m["mean_class_accuracy"], "per_class_accuracy": m["per_class_accuracy"],
               "confusion_matrix": m["confusion_matrix"], "checkpoint": str(fold_dir / "model.safetensors"),
               "fold": fold.index, "test_subjects": list(fold.test_subjects), "tta": tta, "members": members,
               "face_alignment": face_summary([test_data], detector)}
    write_json(metrics_path, metrics)
    plot_confusion(fold_dir / "confusion.png", metrics["confusion_matrix"], metrics["classes"],
                   title=f"fold {fold.index}: {metrics['accuracy']:.2f}%")
    log(f"fold {fold.index}: test accuracy {m['accuracy']:.2f}% (mean-class {m['mean_class_accuracy']:.2f}%)")
    return metrics


def ensemble_metrics(models: list[torch.nn.Module], data: TensorData, batch_size: int = 256,
                     tta: str = "none") -> dict[str, Any]:
    """Metrics of the mean softmax of ``models`` (each with its own input size and normalisation) on ``data``."""
    probs = sum(predict_logits(model, data.images, model.config.input_size, model.config.mean, model.config.std,
                               batch_size=batch_size, tta=tta).softmax(1) for model in models) / len(models)
    cm = confusion_matrix(probs.argmax(1), data.labels, data.num_classes)
    return metrics_from_confusion(cm, data.classes)


def _summary(dataset: str, protocol: str, total_folds: int, results: list[dict[str, Any]], recipe: Recipe,
             opts: TrainOptions, use_val: bool) -> dict[str, Any]:
    acc_mean, acc_std = summarise([r["accuracy"] for r in results])
    mca_mean, mca_std = summarise([r["mean_class_accuracy"] for r in results])
    correct = sum(sum(row[i] for i, row in enumerate(r["confusion_matrix"])) for r in results)
    total = sum(r["num_samples"] for r in results)
    return {
        "dataset": dataset, "protocol": protocol, "protocol_description": PROTOCOLS[protocol],
        "subject_independent": protocol != "random", "folds": total_folds, "complete": len(results) == total_folds,
        "per_fold": [{"fold": r["fold"], "accuracy": r["accuracy"], "mean_class_accuracy": r["mean_class_accuracy"],
                      "num_samples": r["num_samples"], "test_subjects": r["test_subjects"]} for r in results],
        "accuracy_mean": acc_mean, "accuracy_std": acc_std,
        "mean_class_accuracy_mean": mca_mean, "mean_class_accuracy_std": mca_std,
        "pooled_accuracy": 100.0 * correct / total if total else float("nan"),
        "std": "population standard deviation over folds (ddof=0)",
        "selection": (f"validation split carved ({'stratified' if protocol == 'random' else 'by subject'}) from "
                      "each fold's train") if use_val else "last epoch",
        "recipe": recipe.to_dict(), "options": opts.to_dict(),
    }
