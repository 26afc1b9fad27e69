"""``pcnn cv``: cross-validation, subject-independent by default (CK+: 10 folds by subject; JAFFE: 10 folds or LOSO),
subject-dependent with ``--protocol random``.

Each fold trains on the other folds' subjects (a validation split carved from them, by subject, selects the epoch)
and is evaluated once on its own subjects. Every fold lives in ``OUT/foldNN`` (a normal run directory plus
``metrics.json``, written last), its further members in ``OUT/foldNN/memberM``. Re-running the same command after a
crash continues where it stopped: a fold whose metrics exist is reused, a member whose ``last.pt`` has every epoch
(and whose ``results.json`` exists) is not trained again, an unfinished member resumes from its ``last.pt``, and a
fold whose members are all trained but whose evaluation did not finish is evaluated. ``OUT/cv.json`` holds the
per-fold accuracies and their mean ± std. On a CPU the fold members train in parallel worker processes sized to
the cores measured free (:mod:`pcnn_fer.engine.cv_workers`), which on small datasets uses the cores better than one
process with several threads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
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
from .checkpoint import CheckpointError, load_checkpoint
from .cores import measure_free_cores
from .cv_setup import check_fold_setup, fold_setup, record_fold_setup
from .cv_workers import MemberJob, MemberTrainer, size_workers
from .devices import resolve_device, set_threads
from .distributed import env_world_size
from .logs import plot_confusion, write_json
from .loop import confusion_matrix, metrics_from_confusion, predict_logits
from .options import TrainOptions
from .predictions import faces_of, write_predictions
from .recipes import Recipe

__all__ = ["cross_validate", "ensemble_metrics", "ensemble_probabilities", "summarise"]


def summarise(values: list[float]) -> tuple[float, float]:
    """(mean, population standard deviation) of ``values``; NaN for an empty list."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))


def cross_validate(recipe: Recipe, opts: TrainOptions, folds: int = 10, protocol: str = "kfold",
                   only_folds: list[int] | None = None, use_val: bool | None = None, tta: str | None = None,
                   members: int | None = None, workers: int | None = None,
                   log: Any = print) -> dict[str, Any]:
    """Train and evaluate every fold of ``opts.dataset`` and write ``OUT/cv.json``; returns its content.

    ``use_val``: carve a validation split from each fold's train to select the epoch (else the last epoch).
    ``tta='flip'`` averages each test face's prediction with its mirror's. ``members`` > 1 trains that many models
    per fold (training seeds ``seed``, ``seed + 1``, ...; the same folds and validation split) and averages their
    probabilities. None takes the recipe's ``cv_val`` / ``cv_tta`` / ``cv_members``. A finished fold whose metrics
    were made with another ``tta`` or ``members`` is evaluated again from its saved models; only missing members
    are trained. ``workers``: processes that train the members in parallel on a CPU, splitting ``opts.threads``
    between them (None: sized to the free cores measured now and followed between members,
    :func:`~pcnn_fer.engine.cv_workers.size_workers`; 1: train in this process)."""
    use_val = recipe.cv_val if use_val is None else use_val
    tta = recipe.cv_tta if tta is None else tta
    members = recipe.cv_members if members is None else members
    if members < 1:
        raise UsageError(f"--members must be at least 1, got {members}")
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
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
    setup = fold_setup(recipe, opts, protocol, len(all_folds), use_val, split)
    check_fold_setup(out, setup)  # before any fold is reused
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
    plans = [_plan(fold, split, full, recipe, opts, protocol, use_val, (tta, members), detector, log)
             for fold in fold_list]
    to_train = sum(len(plan.jobs) for plan in plans)
    measure = to_train and device.type == "cpu" and not (workers and opts.threads)
    sizing = size_workers(to_train, device.type, threads, workers, opts.threads,
                          measure_free_cores() if measure else None)
    if to_train:
        log(sizing.describe())
    with removed_on_failure(out, keep=lambda: has_checkpoints(out)), \
            MemberTrainer(recipe, opts, sizing, log) as trainer:
        record_fold_setup(out, setup)
        for plan in plans:  # every model is queued before the first fold waits for its own
            trainer.submit(plan.jobs)
        results = []
        for plan in plans:
            if plan.metrics is None:
                trainer.wait(plan.fold.index)
                plan.metrics = _evaluate(plan, opts.eval_batch_size, device, detector, log)
            results.append(plan.metrics)
        summary = {**_summary(reader.name, protocol, len(all_folds), results, recipe, opts, use_val), "tta": tta,
                   "members": members, "threads": sizing.budget if to_train else threads,
                   "workers": sizing.max_workers if to_train else 1,
                   "worker_sizing": sizing.to_dict() if to_train else None, "workers_timeline": trainer.timeline,
                   "face_alignment": face_summary([full], detector)}
        write_json(out / "cv.json", summary)
    how = f"{members} member(s), tta {tta}, {'epoch selected on validation' if use_val else 'last epoch'}"
    log(f"{reader.name} {PROTOCOLS[protocol]} ({how}): accuracy {summary['accuracy_mean']:.2f} ± "
        f"{summary['accuracy_std']:.2f}% over {len(results)} fold(s) "
        f"(pooled {summary['pooled_accuracy']:.2f}%) -> {out / 'cv.json'}")
    return summary


def has_checkpoints(out: Path) -> bool:
    """Whether a cv directory holds a training checkpoint of any fold member (worth keeping after a failure)."""
    return any(out.glob("fold*/last.pt")) or any(out.glob("fold*/member*/last.pt"))


def _finished(run_dir: Path, epochs: int) -> bool:
    """Whether the member in ``run_dir`` needs no training: its ``last.pt`` has ``epochs`` epochs and its
    ``results.json`` was written (a member stopped between the two only has its results written again)."""
    if not (run_dir / "last.pt").exists():
        return False
    try:
        done = int(load_checkpoint(run_dir)["epoch"])
    except CheckpointError as e:
        raise CheckpointError(f"{e}; delete it to train this member again") from None
    return done >= epochs and (run_dir / "results.json").is_file()


@dataclass
class _FoldPlan:
    """What one fold needs: its metrics when they can be reused as they are, else its data, its member run
    directories and which of them still have to be trained."""

    fold: Fold
    evaluation: tuple[str, int]
    metrics: dict[str, Any] | None = None
    data: tuple[TensorData, TensorData | None, TensorData] | None = None
    info: dict[str, Any] | None = None
    member_dirs: list[Path] | None = None
    jobs: list[MemberJob] = field(default_factory=list)
    test_faces: tuple[list[str], list[Path | None]] = ([], [])  # stems and paths of the test rows, in data order


def _plan(fold: Fold, split: Split, full: TensorData, recipe: Recipe, opts: TrainOptions, protocol: str,
          use_val: bool, evaluation: tuple[str, int], detector: str | None, log: Any) -> _FoldPlan:
    """Reuse one fold's metrics (``OUT/foldNN/metrics.json``) when they were made with ``evaluation = (tta,
    members)``; else split its data and list the members (``OUT/foldNN``, then ``OUT/foldNN/memberM``) whose
    training is missing or unfinished (``detector``: the face aligner's name when the data was decoded
    face-aligned)."""
    tta, members = evaluation
    fold_dir = Path(opts.out) / f"fold{fold.index:02d}"
    metrics_path = fold_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        made_with = (metrics.get("tta", "none"), metrics.get("members", 1))
        if made_with == evaluation:
            log(f"fold {fold.index}: reusing {metrics_path} ({metrics['accuracy']:.2f}%)")
            return _FoldPlan(fold, evaluation, metrics=metrics)
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
    jobs = [MemberJob(fold.index, m, members, d, train_data, val_data, info)
            for m, d in enumerate(member_dirs) if not _finished(d, recipe.epochs)]
    return _FoldPlan(fold, evaluation, None, (train_data, val_data, test_data), info, member_dirs, jobs,
                     faces_of(test_data, split))


def _evaluate(plan: _FoldPlan, batch_size: int, device: torch.device, detector: str | None,
              log: Any) -> dict[str, Any]:
    """Evaluate ``plan``'s trained members on its fold's test rows (the mean of their probabilities) and write its
    ``metrics.json``, confusion plot and ``predictions.csv``."""
    tta, members = plan.evaluation
    fold, fold_dir, test_data = plan.fold, plan.member_dirs[0], plan.data[2]
    models = [load_model(d, device=device) for d in plan.member_dirs]
    probs = ensemble_probabilities(models, test_data, batch_size, tta)
    m = _metrics_of_probabilities(probs, test_data)
    misclassified = write_predictions(fold_dir / "predictions.csv", *plan.test_faces,
                                      [test_data.classes[k] for k in test_data.labels.tolist()], test_data.labels,
                                      probs, models[0].classes)
    metrics = {"dataset": plan.info["dataset"], "split": f"fold{fold.index}_test", "subset": None,
               "num_samples": m["num_samples"], "classes": list(test_data.classes), "accuracy": m["accuracy"],
               "mean_class_accuracy": m["mean_class_accuracy"], "per_class_accuracy": m["per_class_accuracy"],
               "confusion_matrix": m["confusion_matrix"], "checkpoint": str(fold_dir / "model.safetensors"),
               "fold": fold.index, "test_subjects": list(fold.test_subjects), "tta": tta, "members": members,
               "misclassified": misclassified,
               "face_alignment": face_summary([test_data], detector)}
    plot_confusion(fold_dir / "confusion.png", metrics["confusion_matrix"], metrics["classes"],
                   title=f"fold {fold.index}: {metrics['accuracy']:.2f}%")
    write_json(fold_dir / "metrics.json", metrics)  # last: its presence says the fold is done
    log(f"fold {fold.index}: test accuracy {m['accuracy']:.2f}% (mean-class {m['mean_class_accuracy']:.2f}%)")
    return metrics


def ensemble_probabilities(models: list[torch.nn.Module], data: TensorData, batch_size: int = 256,
                           tta: str = "none") -> torch.Tensor:
    """The mean softmax ``(N, C)`` of ``models`` (each with its own input size and normalisation) on ``data``."""
    return sum(predict_logits(model, data.images, model.config.input_size, model.config.mean, model.config.std,
                              batch_size=batch_size, tta=tta).softmax(1) for model in models) / len(models)


def ensemble_metrics(models: list[torch.nn.Module], data: TensorData, batch_size: int = 256,
                     tta: str = "none") -> dict[str, Any]:
    """Metrics of the mean softmax of ``models`` (:func:`ensemble_probabilities`) on ``data``."""
    return _metrics_of_probabilities(ensemble_probabilities(models, data, batch_size, tta), data)


def _metrics_of_probabilities(probs: torch.Tensor, data: TensorData) -> dict[str, Any]:
    return metrics_from_confusion(confusion_matrix(probs.argmax(1), data.labels, data.num_classes), data.classes)


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
