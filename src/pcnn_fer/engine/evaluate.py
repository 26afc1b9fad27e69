"""``pcnn evaluate``: accuracy, mean-class accuracy, per-class accuracy and confusion matrix of a model on a split.

Any model works: a run directory, a ``.safetensors`` file, a training checkpoint (``last.pt``), an official PCNN
checkpoint (``.pth``, converted by :func:`pcnn_fer.weights.load_model`) or ``default`` (the bundled model). Each
model brings its own input size, normalisation and class names. Classes are matched to the dataset's by canonical
name: predictions are restricted to the classes both share, and samples of a class the model lacks are dropped
(the mapping and the dropped count are printed).

Predictions come from a classifier backend (:func:`pcnn_fer.backends.dispatch.create_backend`: ``--backend auto``
runs onnxruntime on the CPU when it is installed, else torch), fed the same normalised float32 NCHW batches as
``pcnn predict``; the backend used is printed.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backends.dispatch import ClassifierBackend, create_backend, describe_backend
from ..classes import canonical_name, class_mapping, describe_mapping
from ..data.align import FaceAligner, face_summary, wants_alignment
from ..data.datasets import DatasetError, DatasetReader, Split, dataset_root, get_dataset
from ..data.loader import load_tensor_data
from ..data.protocols import apply_subset
from ..fileio import check_out_folder
from ..models.pcnn import PCNN
from ..typed_fields import given_flag
from ..weights import BUNDLED_MODELS, WeightsError, load_model
from .calibration_fit import ECE_BINS, calibration_metrics, reliability_bins, risk_coverage
from .checkpoint import CheckpointError, load_checkpoint
from .devices import resolve_device, set_threads
from .logs import plot_confusion, write_json
from .loop import confusion_matrix, metrics_from_confusion, predict_logits
from .precision import resolve_amp
from .predictions import faces_of, write_predictions
from .recipes import Recipe
from .reliability_plots import plot_reliability, plot_risk_coverage

__all__ = ["METRIC_KEYS", "BackendModule", "EvaluationTarget", "default_split", "evaluate_command", "evaluate_split",
           "load_any_model", "load_target", "match_classes", "metrics_of_logits", "shared_predictions"]

#: The keys of metrics.json, in order.
METRIC_KEYS: tuple[str, ...] = ("dataset", "split", "subset", "num_samples", "classes", "accuracy",
                                "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "calibration",
                                "risk_coverage", "checkpoint", "face_alignment")


def load_any_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> PCNN:
    """A PCNN in eval mode from ``default``, a run directory, a ``.safetensors`` model, a training checkpoint
    (``last.pt``) or an official PCNN ``.pth``; WeightsError (a ValueError) when it cannot be used."""
    if str(checkpoint) in BUNDLED_MODELS:
        return load_model(checkpoint, device=device)
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise WeightsError(f"no such checkpoint: {path}")
    if path.is_dir() and not (path / "model.safetensors").exists() and (path / "last.pt").exists():
        path = path / "last.pt"
    if path.is_file() and path.suffix == ".pt":
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            state = None  # not a training checkpoint: maybe an official or plain state dict
        if state is not None:
            try:
                recipe = Recipe.from_dict(state["recipe"])
                model = recipe.create_model(tuple(state["classes"]))
                model.load_state_dict(state["model"])
            except (KeyError, TypeError, RuntimeError) as e:
                raise WeightsError(f"{path}: training checkpoint does not rebuild its model "
                                   f"({str(e).splitlines()[0]})") from None
            return model.eval().to(device)
    return load_model(path, device=device)


def default_split(reader: DatasetReader, root: str | Path) -> str:
    """The split ``pcnn evaluate`` uses without ``--split``: the test split if present, else validation, else
    the training split (e.g. CK+ ``all``)."""
    present = reader.splits(root)
    for name in (reader.test_split, reader.val_split, reader.train_split):
        if name is not None and name in present:
            return name
    if not present:
        raise DatasetError(f"{reader.name}: no split found under {root}")
    return present[0]


def match_classes(model: PCNN | ClassifierBackend, split: Split, log: Any = print) -> tuple[Split, dict[int, int]]:
    """``split`` without the samples of classes the model (a PCNN or a backend) lacks (logged) and the dataset →
    model class-index mapping of the classes both share (by canonical name)."""
    if len(split) == 0:
        raise DatasetError(f"{split.dataset}/{split.name} is empty: nothing to evaluate")
    model_classes = tuple(model.config.classes)
    try:
        same = tuple(canonical_name(c) for c in split.classes) == tuple(canonical_name(c) for c in model_classes)
    except ValueError:
        same = tuple(split.classes) == model_classes
    if same:
        mapping = {i: i for i in range(len(split.classes))}
    else:
        mapping = class_mapping(split.classes, model_classes)  # dataset index -> model index
        log(describe_mapping(split.classes, model_classes).replace("class mapping:", "class mapping (dataset -> "
                                                                                     "model):"))
    keep = np.isin(split.labels, np.array(sorted(mapping), dtype=np.int64))
    dropped = int((~keep).sum())
    if dropped:
        lacking = sorted({split.classes[i] for i in split.labels[~keep].tolist()})
        log(f"dropped {dropped} of {len(split)} samples whose class the model lacks ({', '.join(lacking)})")
        split = split.subset(keep)
    if len(split) == 0:
        raise DatasetError(f"{split.dataset}/{split.name}: no sample of a class the model knows")
    return split, mapping


def _shared_mask(mapping: dict[int, int], num_model_classes: int, device: torch.device) -> torch.Tensor:
    """0 for the model classes ``mapping`` shares with the dataset, -inf for the others (added to logits)."""
    allowed = torch.full((num_model_classes,), float("-inf"), device=device)
    allowed[sorted(mapping.values())] = 0.0
    return allowed


def shared_predictions(logits: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int],
                       split_classes: tuple[str, ...], num_model_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pred, target)`` on CPU as positions among the classes ``mapping`` shares (:func:`match_classes`), in the
    dataset's order: the argmax over the shared model classes only, and each label's position (-1 for a label the
    model does not know)."""
    shared_ds = sorted(mapping)  # dataset indices of shared classes, in dataset order
    pred_model = (logits + _shared_mask(mapping, num_model_classes, logits.device)).argmax(1).cpu()
    pos_of_model = torch.full((num_model_classes,), -1, dtype=torch.long)
    pos_of_ds = torch.full((len(split_classes),), -1, dtype=torch.long)
    for k, ds in enumerate(shared_ds):
        pos_of_model[mapping[ds]] = k
        pos_of_ds[ds] = k
    return pos_of_model[pred_model], pos_of_ds[labels.cpu().long()]


def metrics_of_logits(logits: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int],
                      split_classes: tuple[str, ...], num_model_classes: int) -> dict[str, Any]:
    """Metrics of model ``logits`` against dataset ``labels``, predicting only the classes of ``mapping``
    (:func:`match_classes`): ``classes`` (the shared ones, in the dataset's order) plus
    :func:`~pcnn_fer.engine.loop.metrics_from_confusion`'s keys."""
    pred, target = shared_predictions(logits, labels, mapping, split_classes, num_model_classes)
    classes = [split_classes[i] for i in sorted(mapping)]
    cm = confusion_matrix(pred, target, len(classes))
    return {"classes": classes, **metrics_from_confusion(cm, classes)}


class BackendModule(nn.Module):
    """A classifier backend behind the module face that :func:`~pcnn_fer.engine.loop.predict_logits` drives: a
    normalised float32 NCHW tensor in, ``(log-probabilities,)`` out (argmax-compatible with logits; their softmax is
    the backend's probabilities)."""

    def __init__(self, backend: ClassifierBackend) -> None:
        super().__init__()
        self.backend = backend
        self.occlusion: list[np.ndarray] = []  # per call: the (N, 5) region occlusion scores, when the model has them

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """The backend's class probabilities of ``x`` as log-probabilities, on ``x``'s device (the region
        occlusion scores of backends that give them are kept in :attr:`occlusion`)."""
        batch = x.detach().float().cpu().contiguous().numpy()
        outputs = getattr(self.backend, "outputs", None)
        if outputs is not None:
            out = outputs(batch)
            probs = out["probs"]
            if out["occlusion"] is not None:
                self.occlusion.append(np.asarray(out["occlusion"], dtype=np.float32))
        else:
            probs, _ = self.backend(batch)
        probs = torch.from_numpy(np.asarray(probs, dtype=np.float32)).to(x.device)
        return (probs.clamp_min(torch.finfo(torch.float32).tiny).log(),)

    def occlusion_scores(self, tta: str | None) -> np.ndarray | None:
        """The (N, 5) occlusion scores of the faces predicted (of the unflipped views with flip TTA), or None."""
        if not self.occlusion:
            return None
        return np.concatenate(self.occlusion[::2] if tta == "flip" else self.occlusion)


def evaluate_split(
    model: ClassifierBackend | nn.Module,
    split: Split,
    device: torch.device,
    batch_size: int = 256,
    tta: str | None = None,
    amp: str = "none",
    cache: str | Path | None = None,
    use_cache: bool = True,
    log: Any = print,
    progress: bool = False,
    align: FaceAligner | None = None,
    predictions: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of ``model`` (a classifier backend of :func:`~pcnn_fer.backends.dispatch.create_backend`, or a PCNN
    module, run by the torch backend) on ``split`` through the canonical class mapping (see the module docstring); a
    progress bar of the prediction when ``progress``; ``amp`` applies to a torch backend.

    Returns ``num_samples``, ``classes`` (the shared classes, in the dataset's order), ``accuracy``,
    ``mean_class_accuracy``, ``per_class_accuracy``, ``confusion_matrix`` (rows = true class) and
    ``face_alignment`` (with ``align``, faces aligned when decoding: the count of faces found and centre-square
    fallbacks; else None). With ``predictions`` (a path), each face's label, prediction, class probabilities and
    (models with occlusion heads) region occlusion scores are written there
    (:func:`~pcnn_fer.engine.predictions.write_predictions`) and ``misclassified`` counts the wrong ones.
    """
    if isinstance(model, nn.Module):
        model = create_backend("torch", model, str(device))
    config = model.config
    split, mapping = match_classes(model, split, log)
    data, _ = load_tensor_data(split, config.input_size, device, cache, use_cache, align, log)
    module = BackendModule(model)
    logits = predict_logits(module, data.images, config.input_size, config.mean, config.std,
                            batch_size=batch_size, tta=tta, amp=amp, device=device, progress=progress,
                            description="predict")
    probs = (logits.float() + _shared_mask(mapping, len(config.classes), logits.device)).softmax(1)
    result = {**metrics_of_logits(logits, data.labels, mapping, tuple(split.classes), len(config.classes)),
              "face_alignment": face_summary([data], align.name if align else None),
              **confidence_figures(probs, data.labels, mapping)}
    if predictions is not None:
        labels = data.labels.cpu().tolist()
        result["misclassified"] = write_predictions(
            predictions, *faces_of(data, split), [split.classes[k] for k in labels],
            torch.tensor([mapping[k] for k in labels]), probs, tuple(config.classes),
            occlusion=module.occlusion_scores(tta))
    return result


def confidence_figures(probs: torch.Tensor, labels: torch.Tensor, mapping: dict[int, int]) -> dict[str, Any]:
    """``calibration`` (ECE over 15 equal-width bins, NLL, Brier score, mean confidence, the reliability bins and the
    model's calibration) and ``risk_coverage`` (accuracy of the most confident faces per share answered) of the
    probabilities ``probs`` over the model's classes (zero outside the shared ones) against dataset ``labels``."""
    shared = [mapping[k] for k in sorted(mapping)]  # model indices of the shared classes, in dataset order
    position = {ds: k for k, ds in enumerate(sorted(mapping))}
    target = torch.tensor([position[int(k)] for k in labels.cpu().tolist()], dtype=torch.long)
    p = probs.detach().double().cpu()[:, shared]
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    confidence, predicted = p.max(1)
    correct = predicted == target
    return {"calibration": {**calibration_metrics(p, target), "bins": ECE_BINS,
                            "reliability": reliability_bins(confidence, correct.double())},
            "risk_coverage": risk_coverage(confidence, correct)}


@dataclass
class EvaluationTarget:
    """A loaded model and the dataset split the command line names (``pcnn evaluate``, ``pcnn robustness``)."""

    reader: DatasetReader
    device: torch.device
    amp: str  # resolved: none, bf16 or fp16
    model: PCNN
    split_name: str
    split: Split
    subset: str | None  # file name of the subset list, if one was applied

    @property
    def title(self) -> str:
        """``dataset/split`` plus ``[subset]``."""
        return f"{self.reader.name}/{self.split_name}" + (f" [{self.subset}]" if self.subset else "")


def load_target(args: argparse.Namespace) -> EvaluationTarget:
    """Resolve ``--dataset --root --device --amp --checkpoint --split --label-rule|--image-variant|--classes
    --subset-list`` (printing the precision used) into an :class:`EvaluationTarget`; ``--out`` is checked first,
    before any work."""
    if getattr(args, "out", None):
        check_out_folder(args.out, create=False)
    reader = get_dataset(args.dataset)
    root = dataset_root(args.root, reader.name)
    device = resolve_device(args.device)
    amp, amp_reason = resolve_amp(args.amp, device)
    print(f"precision: {'fp32' if amp == 'none' else amp} ({amp_reason}; --amp {args.amp})")
    model = load_any_model(args.checkpoint, device=device)
    split_name = args.split or default_split(reader, root)
    option = reader.check_option(args.dataset_option, given_flag(args, "dataset_option"))
    split = reader.load(root, split_name, option)
    subset = None
    if args.subset_list:
        split = apply_subset(split, args.subset_list)
        subset = Path(args.subset_list).name
    return EvaluationTarget(reader, device, amp, model, split_name, split, subset)


def evaluate_command(args: argparse.Namespace) -> int:
    """Run ``pcnn evaluate`` from parsed arguments; writes OUT/metrics.json, OUT/confusion.png and
    OUT/predictions.csv."""
    threads = set_threads(args.threads)
    out = Path(args.out)
    target = load_target(args)
    reader, model, split_name, split, subset_name = (target.reader, target.model, target.split_name, target.split,
                                                     target.subset)
    backend = create_backend(args.backend, model, str(target.device), threads=args.threads)
    amp = target.amp if getattr(backend, "name", None) == "torch" else "none"  # autocast is torch's
    print(f"backend: {describe_backend(backend)}" + ("; --amp applies to the torch backend only: fp32"
                                                     if amp != target.amp else ""))
    print(f"evaluating {args.checkpoint} ({len(model.classes)} classes, {model.config.input_size}px) on "
          f"{target.title}: {len(split)} samples, {threads} CPU thread(s)")
    result = evaluate_split(backend, split, target.device, batch_size=args.batch_size,
                            tta=None if args.tta == "none" else args.tta, amp=amp,
                            cache=args.cache_dir, use_cache=not args.no_cache, progress=not args.no_progress,
                            align=FaceAligner() if wants_alignment(reader, args.align_faces) else None,
                            predictions=out / "predictions.csv")
    metrics = {"dataset": reader.name, "split": split_name, "subset": subset_name,
               "num_samples": result["num_samples"], "classes": result["classes"], "accuracy": result["accuracy"],
               "mean_class_accuracy": result["mean_class_accuracy"],
               "per_class_accuracy": result["per_class_accuracy"], "confusion_matrix": result["confusion_matrix"],
               "calibration": {**result["calibration"], "model_calibration": _calibration_of(backend)},
               "risk_coverage": result["risk_coverage"],
               "checkpoint": str(args.checkpoint), "face_alignment": result["face_alignment"]}
    write_json(out / "metrics.json", metrics)
    plot_confusion(out / "confusion.png", metrics["confusion_matrix"], metrics["classes"],
                   title=f"{target.title}: {metrics['accuracy']:.2f}%")
    cal = metrics["calibration"]
    plot_reliability(out / "reliability.png", cal["reliability"], cal["ece"], title=target.title)
    plot_risk_coverage(out / "risk_coverage.png", metrics["risk_coverage"], title=target.title)
    print(f"confidence: ECE {cal['ece']:.2f}% (15 bins), NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}, mean "
          f"{cal['mean_confidence']:.2f}%; 90% most confident {metrics['risk_coverage']['at']['90']:.2f}% correct "
          f"-> {out / 'reliability.png'}, {out / 'risk_coverage.png'}")
    print(f"accuracy {metrics['accuracy']:.2f}% (mean-class {metrics['mean_class_accuracy']:.2f}%) on "
          f"{metrics['num_samples']} samples -> {out / 'metrics.json'}; {result['misclassified']} misclassified "
          f"-> {out / 'predictions.csv'}")
    return 0


def _calibration_of(backend: Any) -> dict[str, Any] | None:
    """The calibration the backend's model carries (None: uncalibrated, temperature 1)."""
    calibration = getattr(getattr(backend, "config", None), "calibration", None)
    return None if calibration is None else calibration.to_dict()
