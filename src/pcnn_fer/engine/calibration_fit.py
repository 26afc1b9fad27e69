"""Fitting and measuring confidence calibration: temperature and vector scaling fitted by minimising the negative
log-likelihood (L-BFGS), the choice between them on held-out folds, and the reliability figures ``pcnn evaluate``
reports (expected calibration error over 15 equal-width bins, NLL, Brier score, risk–coverage)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import PCNNError
from ..models.calibration import CALIBRATION_METHODS, Calibration, calibrate_logits

__all__ = ["CalibrationError", "ECE_BINS", "calibration_metrics", "check_calibration_data", "choose_calibration",
           "cross_fitted_probs", "fit_calibration", "reliability_bins", "risk_coverage"]

#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: Shares of faces answered at which ``risk_coverage`` reports accuracy (most confident first).
COVERAGES: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5)


class CalibrationError(PCNNError, ValueError):
    """Data a calibration cannot be fitted on: empty, one class only, or NaN / infinite logits."""


def check_calibration_data(logits: torch.Tensor, labels: torch.Tensor, where: str = "the calibration split") -> None:
    """Raise :class:`CalibrationError` (one line) for an empty split, a single class or non-finite logits."""
    if logits.ndim != 2 or len(logits) == 0:
        raise CalibrationError(f"{where} is empty: nothing to calibrate on")
    if len(labels) != len(logits):
        raise CalibrationError(f"{where}: {len(labels)} labels for {len(logits)} logit rows")
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise CalibrationError(f"{where}: the model gives NaN or infinite logits for {bad} of {len(logits)} faces "
                               "(a diverged or damaged model)")
    if len(torch.unique(labels)) < 2:
        raise CalibrationError(f"{where} holds one class only ({len(labels)} faces): a calibration needs faces of "
                               "at least two classes")


def _fit_parameters(logits: torch.Tensor, labels: torch.Tensor, method: str,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias) per class minimising the mean NLL of ``logits × scale + bias``; ``weights`` is 1 for the
    classes the scale/bias may move (vector scaling leaves absent classes at the temperature's values)."""
    logits, labels = logits.double(), labels.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def nll_t() -> torch.Tensor:
        return F.cross_entropy(logits * log_t.exp(), labels)

    _lbfgs([log_t], nll_t)
    k = logits.shape[1]
    scale0 = float(log_t.detach().exp())
    if method == "temperature":
        return torch.full((k,), scale0, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    free = torch.ones(k, dtype=torch.float64) if weights is None else weights.double()
    log_s = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(k, dtype=torch.float64, requires_grad=True)

    def nll_v() -> torch.Tensor:
        scale = scale0 * (log_s * free).exp()
        return F.cross_entropy(logits * scale + bias * free, labels) + 1e-3 * ((log_s ** 2).sum() + (bias ** 2).sum())

    _lbfgs([log_s, bias], nll_v)
    return (scale0 * (log_s.detach() * free).exp(), (bias.detach() * free))


def _lbfgs(params: list[torch.Tensor], closure_loss: Any) -> None:
    """Minimise ``closure_loss()`` over ``params`` with L-BFGS (strong Wolfe line search)."""
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = closure_loss()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_calibration(logits: torch.Tensor, labels: torch.Tensor, method: str = "temperature", fitted_on: str = "",
                    present: torch.Tensor | None = None) -> Calibration:
    """A :class:`Calibration` of ``method`` fitted on raw ``logits`` (N, C) and ``labels`` (N,) (model indices);
    ``present`` (C,) bool marks the classes the split can have (others keep temperature values)."""
    if method not in CALIBRATION_METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose {', '.join(CALIBRATION_METHODS)}")
    logits = logits.detach().float().cpu()
    labels = labels.detach().long().cpu()
    check_calibration_data(logits, labels, fitted_on or "the calibration split")
    masked = logits if present is None else logits.masked_fill(~present.cpu(), float("-inf"))
    finite = torch.where(torch.isfinite(masked), masked, torch.full_like(masked, -1e4))
    scale, bias = _fit_parameters(finite, labels, method, None if present is None else present.cpu().double())
    return Calibration(method, tuple(scale.tolist()), tuple(bias.tolist()), fitted_on, int(len(labels)))


def _folds(labels: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """``k`` stratified index folds of ``labels`` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        for i, r in enumerate(rows.tolist()):
            folds[i % k].append(r)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def cross_fitted_probs(logits: torch.Tensor, labels: torch.Tensor, method: str, folds: int = 2, seed: int = 0,
                       present: torch.Tensor | None = None) -> torch.Tensor:
    """Calibrated probabilities where each fold's faces are calibrated by a map fitted on the other folds (with
    ``folds=2``: fit on one half, test on the other, both ways)."""
    logits, labels = logits.detach().float().cpu(), labels.detach().long().cpu()
    check_calibration_data(logits, labels)
    if folds < 2:
        raise CalibrationError(f"cross-fitting needs at least 2 folds, got {folds}")
    out = torch.empty_like(logits)
    parts = _folds(labels, folds, seed)
    for part in parts:
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[part] = False
        calibration = fit_calibration(logits[rest], labels[rest], method, present=present)
        z = calibrate_logits(logits[part], calibration)
        if present is not None:
            z = z.masked_fill(~present, float("-inf"))
        out[part] = z.softmax(1)
    return out


def choose_calibration(logits: torch.Tensor, labels: torch.Tensor, folds: int = 5, seed: int = 0,
                       present: torch.Tensor | None = None) -> tuple[str, dict[str, dict[str, float]]]:
    """The method (of :data:`CALIBRATION_METHODS`) with the lower expected calibration error on held-out folds (NLL
    breaks ties within 0.05 points) and each method's held-out metrics."""
    scores = {m: calibration_metrics(cross_fitted_probs(logits, labels, m, folds, seed, present), labels)
              for m in CALIBRATION_METHODS}
    best = min(CALIBRATION_METHODS, key=lambda m: (round(scores[m]["ece"] / 0.05), scores[m]["nll"]))
    return best, scores


def calibration_metrics(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict[str, float]:
    """``ece`` (%, ``bins`` equal-width confidence bins), ``nll``, ``brier`` (sum over classes, mean over faces),
    ``mean_confidence`` (%) and ``accuracy`` (%) of probabilities ``probs`` (N, C) against ``labels`` (N,)."""
    probs, labels = probs.detach().double().cpu(), labels.detach().long().cpu()
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    table = reliability_bins(confidence, correct, bins)
    ece = sum(row["count"] * abs(row["confidence"] - row["accuracy"]) for row in table) / max(len(labels), 1)
    onehot = F.one_hot(labels, probs.shape[1]).double()
    nll = float(-probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean())
    return {"ece": 100.0 * ece, "nll": nll, "brier": float(((probs - onehot) ** 2).sum(1).mean()),
            "mean_confidence": 100.0 * float(confidence.mean()), "accuracy": 100.0 * float(correct.mean())}


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per equal-width confidence bin ``(lo, hi]``: ``lo``, ``hi``, ``count``, mean ``confidence`` and
    ``accuracy`` (fractions; the empty bins are left out)."""
    confidence, correct = confidence.detach().double().cpu(), correct.detach().double().cpu()
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1]) if i else (confidence <= edges[1])
        if bool(inside.any()):
            rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(inside.sum()),
                         "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return rows


def risk_coverage(score: torch.Tensor, correct: torch.Tensor) -> dict[str, Any]:
    """Accuracy of the faces answered when only the most confident are answered: ``curve`` (coverage and
    accuracy in %, one point per face count), ``at`` (accuracy at the :data:`COVERAGES`, keyed ``"90"`` etc.) and
    ``aurc`` (area under the risk–coverage curve, in %; lower is better)."""
    score, correct = score.detach().double().cpu(), correct.detach().double().cpu()
    n = len(score)
    if n == 0:
        return {"curve": [], "at": {}, "aurc": float("nan")}
    order = torch.argsort(score, descending=True, stable=True)
    hits = correct[order].cumsum(0)
    count = torch.arange(1, n + 1, dtype=torch.float64)
    accuracy = 100.0 * hits / count
    at = {f"{round(c * 100)}": float(accuracy[max(1, int(c * n)) - 1]) for c in COVERAGES}
    step = max(1, n // 200)
    keep = list(range(step - 1, n, step)) + ([n - 1] if (n - 1) % step != step - 1 else [])
    curve = [[float(100.0 * count[i] / n), float(accuracy[i])] for i in keep]
    return {"curve": curve, "at": at, "aurc": float((100.0 - accuracy).mean())}
