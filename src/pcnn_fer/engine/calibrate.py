"""``pcnn calibrate``: fit a model's confidence calibration on a named split and write the calibrated model.

The raw global logits of the split are computed once (plain PyTorch, no test-time augmentation, the same
preprocessing as ``pcnn evaluate``); ``--method auto`` fits temperature and vector scaling on all but one of
``--folds`` stratified folds in turn and keeps the map with the lower expected calibration error on the held-out
faces; the kept map is then fitted on the whole split and stored in the new model file's config
(:class:`~pcnn_fer.models.calibration.Calibration`). The report also gives the figures of a two-fold cross-fit (fit
on one half, measure on the other, both ways), which are what docs/model-card.md quotes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..data.align import FaceAligner, wants_alignment
from ..data.loader import load_tensor_data
from ..errors import UsageError
from ..models.calibration import calibrate_logits
from ..weights import resolve_model_path, save_model
from .calibration_fit import (
    CalibrationError,
    calibration_metrics,
    choose_calibration,
    cross_fitted_probs,
    fit_calibration,
    risk_coverage,
)
from .devices import set_threads
from .evaluate import load_target, match_classes
from .loop import predict_logits

__all__ = ["calibrate_command", "calibration_report", "resolved_model_file", "source_extra", "stored_half"]


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, present: torch.Tensor, method: str,
                       folds: int) -> tuple[str, dict[str, Any]]:
    """The method to keep (``method``, or the better one on held-out folds for ``auto``) and the report: raw
    metrics, each method's held-out metrics and the two-fold cross-fit of the kept method (ECE, NLL, Brier, accuracy
    of the 90 % most confident faces)."""
    mask = torch.where(present, 0.0, float("-inf"))
    raw = (logits + mask).softmax(1)
    report: dict[str, Any] = {"raw": _figures(raw, labels)}
    if method == "auto":
        if len(logits) < 2 * folds:
            raise CalibrationError(f"{len(logits)} faces are too few for {folds} folds: name --method or lower --folds")
        method, held_out = choose_calibration(logits, labels, folds=folds, present=present)
        report["held_out_folds"] = {"folds": folds, **held_out}
    report["method"] = method
    if len(logits) >= 4:
        report["two_fold"] = _figures(cross_fitted_probs(logits, labels, method, 2, present=present), labels)
    return method, report


def _figures(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Calibration metrics plus the accuracy of the 90 % most confident faces."""
    confidence, predicted = probs.max(1)
    return {**calibration_metrics(probs, labels),
            "accuracy_at_90": risk_coverage(confidence, predicted == labels)["at"]["90"]}


def stored_half(path: Path) -> bool:
    """Whether a ``.safetensors`` model stores fp16 weights (kept so when it is saved again)."""
    try:
        with safe_open(str(path), "pt") as f:
            return any(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    except Exception:  # noqa: BLE001 - not a safetensors file (an official .pth): save fp32
        return False


def source_extra(path: Path | None) -> dict[str, Any]:
    """The fields of a model's JSON beside it other than its config (training, validation, ...)."""
    if path is None or not path.with_suffix(".json").is_file():
        return {}
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in info.items() if k not in ("format", "weights", "config")} if isinstance(info, dict) else {}


def calibrate_command(args: argparse.Namespace) -> int:
    """Run ``pcnn calibrate`` from parsed arguments: fit, report, write ``--out``."""
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got {out}")
    if out.exists():
        raise UsageError(f"{out} exists: pcnn calibrate never overwrites a file; name a new --out")
    threads = set_threads(args.threads)
    if not args.split:
        from ..data.datasets import get_dataset

        reader = get_dataset(args.dataset)
        args.split = reader.val_split or reader.train_split
    target = load_target(args)
    model = target.model
    split, mapping = match_classes(model, target.split)
    config = model.config
    data, _ = load_tensor_data(split, config.input_size, target.device, args.cache_dir, not args.no_cache,
                               FaceAligner() if wants_alignment(target.reader, args.align_faces) else None, print)
    print(f"calibrating {args.checkpoint} on {target.title}: {len(data)} faces, {threads} CPU thread(s)")
    logits = predict_logits(model, data.images, config.input_size, config.mean, config.std,
                            batch_size=args.batch_size, device=target.device).float().cpu()
    labels = torch.tensor([mapping[int(k)] for k in data.labels.cpu().tolist()], dtype=torch.long)
    present = torch.zeros(len(config.classes), dtype=torch.bool)
    present[sorted(mapping.values())] = True
    method = args.method
    if method == "vector" and not bool(present.all()):
        raise UsageError(f"vector scaling needs every model class in the split; {target.title} lacks "
                         f"{', '.join(c for c, p in zip(config.classes, present.tolist()) if not p)} (use temperature)")
    if method == "auto" and not bool(present.all()):
        method = "temperature"
    fitted_on = f"{target.reader.name}/{target.split_name}" + (f" ({args.dataset_option})" if args.dataset_option
                                                              else "")
    method, report = calibration_report(logits, labels, present, method, args.folds)
    calibration = fit_calibration(logits, labels, method, fitted_on, present=present)
    calibrated = calibration_metrics((calibrate_logits_masked(logits, calibration, present)).softmax(1), labels)
    report["fitted"] = {"calibration": calibration.to_dict(), "in_sample": calibrated}
    model.config = replace(config, calibration=calibration)
    source = None if str(args.checkpoint).endswith(".pt") else resolved_model_file(args.checkpoint)
    extra = {**source_extra(source), "calibration_report": report}
    save_model(model, out, half=source is not None and stored_half(source), extra=extra)
    for name in ("raw", "two_fold"):
        if name in report:
            r = report[name]
            print(f"{name:>9}: ECE {r['ece']:.2f}%  NLL {r['nll']:.4f}  Brier {r['brier']:.4f}  mean confidence "
                  f"{r['mean_confidence']:.2f}%  accuracy {r['accuracy']:.2f}%  90% most confident "
                  f"{r['accuracy_at_90']:.2f}%")
    for name, r in report.get("held_out_folds", {}).items():
        if isinstance(r, dict):
            print(f"held-out {name}: ECE {r['ece']:.2f}%  NLL {r['nll']:.4f}")
    print(f"kept {calibration.describe()} -> {out}")
    return 0


def resolved_model_file(checkpoint: str) -> Path | None:
    """The model file behind ``checkpoint`` (None when it is not a file this package saved or names)."""
    try:
        return resolve_model_path(checkpoint)
    except ValueError:
        return None


def calibrate_logits_masked(logits: torch.Tensor, calibration: Any, present: torch.Tensor) -> torch.Tensor:
    """Calibrated logits with the classes absent from the split masked out (-inf)."""
    return calibrate_logits(logits, calibration).masked_fill(~present, float("-inf"))
