"""Sampling for ``pcnn robustness``: the seeded face subset it runs on and the 95 % confidence intervals of the
accuracies it reports.

* :func:`subset_rows` – a uniform subset drawn with the run's seed (the same faces for every model, so models are
  compared on the same faces; the same rule as before the subset became the default, so older ``--max-samples``
  results repeat).
* :func:`wilson_interval` – the Wilson score interval of one accuracy (k correct of n faces).
* :func:`mean_interval` – the interval of a mean of several accuracies on the same faces (a summary group): the
  normal approximation over the per-face share of runs predicted correctly, which keeps the correlation between
  runs on the same face.

The intervals describe the sampling of faces; the corruptions' own random choices are fixed by the seed.
"""

from __future__ import annotations

import math

import torch

from ..data.loader import seed_for

__all__ = ["Z95", "mean_interval", "subset_rows", "wilson_interval"]

#: The two-sided 95 % quantile of the standard normal distribution.
Z95 = 1.959963984540054
#: Mixed into the subset's seed (kept from the first ``--max-samples``, so its subsets are unchanged).
_SUBSET_SALT = 104729


def subset_rows(total: int, max_samples: int, seed: int) -> torch.Tensor | None:
    """Sorted row indices of a seeded uniform subset of ``max_samples`` of ``total`` faces, or None for all of them
    (``max_samples`` 0 or at least ``total``)."""
    if max_samples <= 0 or max_samples >= total:
        return None
    g = torch.Generator().manual_seed(seed_for(seed, _SUBSET_SALT, total))
    return torch.randperm(total, generator=g)[:max_samples].sort().values


def wilson_interval(correct: int, total: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval ``[low, high]`` (percent) of ``correct`` of ``total``; None when ``total`` is 0."""
    if total <= 0:
        return None
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def mean_interval(hits: torch.Tensor, z: float = Z95) -> list[float] | None:
    """The normal-approximation interval ``[low, high]`` (percent) of the mean accuracy of several runs on the same
    faces, from ``hits`` (runs, faces) of 0/1 (correct or not); None without runs or faces."""
    if hits.ndim != 2 or hits.shape[0] == 0 or hits.shape[1] == 0:
        return None
    per_face = hits.double().mean(0)
    mean = float(per_face.mean())
    half = z * float(per_face.std(unbiased=True)) / math.sqrt(per_face.numel()) if per_face.numel() > 1 else 0.0
    return [100 * max(0.0, mean - half), 100 * min(1.0, mean + half)]
