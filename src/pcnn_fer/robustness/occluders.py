"""Synthetic occlusions of aligned faces with their ground truth: which share of each PCNN region got covered.

:func:`occlude_batch` draws, per face, one of :data:`OCCLUDER_KINDS` (or none) at a random strength and returns the
occluded batch and the covered share of each of the five regions (:data:`~pcnn_fer.models.pcnn.REGIONS`), measured
from the pixels that changed. It trains and measures the per-region occlusion heads (:mod:`pcnn_fer.engine.occlusion`).
Kinds: the robustness module's hand, sunglasses and lower-face mask (:mod:`.corruptions`), hair (a dark fringe with
strands falling from the top or one side), objects (a disc or rounded rectangle cut from another face of the batch,
or a flat or shaded grey object: a cup, a phone, a microphone) and the grey / noise patches and region fills of
``pcnn robustness``.
"""

from __future__ import annotations

import math

import torch

from ..models.pcnn import REGIONS, FaceRegions
from .corruptions import CORRUPTIONS, _grid, _uniform

__all__ = ["COVERED", "OCCLUDER_KINDS", "occlude_batch", "region_coverage"]

#: A region counts as occluded when at least this share of its pixels is covered.
COVERED = 0.15
#: The occluder kinds :func:`occlude_batch` draws from.
OCCLUDER_KINDS: tuple[str, ...] = ("hand", "sunglasses", "mask", "hair", "object", "patch", "region")


def region_coverage(changed: torch.Tensor, crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """(N, 5) share of each region's pixels that are True in the (N, H, W) bool mask ``changed``."""
    height, width = changed.shape[-2:]
    boxes = FaceRegions(crop_fractions).boxes(height, width)
    shares = [changed[:, t:b, left:right].float().mean((1, 2)) for t, b, left, right in (boxes[r] for r in REGIONS)]
    return torch.stack(shares, 1)


def _hair(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A dark fringe with strands: from the top down to 25–60 % of the height, or from one side across 20–45 % of
    the width, its edge wavy, its tone 15–90 with lighter strands."""
    n = images.shape[0]
    x, y = _grid(images)
    device = images.device
    reach = _uniform(generator, n, 0.2, 0.6, device)
    phase = _uniform(generator, n, 0, 2 * math.pi, device)
    waves = _uniform(generator, n, 2, 6, device)
    side = torch.randint(0, 3, (n,), generator=generator).view(n, 1, 1, 1).to(device)  # 0 top, 1 left, 2 right
    along = torch.where(side == 0, x, y)
    depth = torch.where(side == 0, y, torch.where(side == 1, x, 1 - x))
    edge = reach * torch.where(side == 0, 1.0, 0.75) + 0.06 * torch.sin(waves * 2 * math.pi * along + phase)
    mask = depth <= edge
    tone = _uniform(generator, n, 15, 90, device)
    strands = 22 * torch.sin(55 * x + 3 * phase + 4 * torch.sin(3 * y + phase))  # strands falling downwards
    value = (tone + strands).clamp(0, 255).round().to(torch.uint8).expand(-1, images.shape[1], -1, -1)
    return torch.where(mask, value, images)


def _object(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A disc or rounded rectangle (15–45 % of the side) somewhere on the face, filled with the same place of
    another face of the batch (a texture that looks like skin, hair or background) or a shaded grey."""
    n = images.shape[0]
    x, y = _grid(images)
    device = images.device
    size = _uniform(generator, n, 0.15, 0.45, device)
    aspect = _uniform(generator, n, 0.5, 2.0, device)
    cx, cy = _uniform(generator, n, 0.15, 0.85, device), _uniform(generator, n, 0.15, 0.95, device)
    a, b = size * aspect.sqrt() / 2, size / aspect.sqrt() / 2
    power = torch.where(torch.rand(n, generator=generator).view(n, 1, 1, 1).to(device) < 0.5, 2.0, 6.0)
    mask = (((x - cx) / a).abs() ** power + ((y - cy) / b).abs() ** power) <= 1
    other = images[torch.roll(torch.arange(n), 1)] if n > 1 else 255 - images
    base = _uniform(generator, n, 20, 235, device)
    shade = (base + 60 * (x - cx) / (2 * a) + 25 * (y - cy) / (2 * b)).clamp(0, 255)
    grey = shade.round().to(torch.uint8).expand(-1, images.shape[1], -1, -1)
    textured = torch.rand(n, generator=generator).view(n, 1, 1, 1).to(device) < 0.5
    fill = torch.where(textured, other, grey)
    return torch.where(mask, fill, images)


def _robustness(name: str):
    """A :mod:`.corruptions` occluder at a strength drawn per call (1–3)."""

    def apply(images: torch.Tensor, generator: torch.Generator, crop_fractions: tuple[float, float, float]
              ) -> torch.Tensor:
        strength = int(torch.randint(1, 4, (1,), generator=generator))
        return CORRUPTIONS[name](images, strength, generator, crop_fractions)

    return apply


def _patch(images: torch.Tensor, generator: torch.Generator, crop_fractions: tuple[float, float, float]
           ) -> torch.Tensor:
    fill = ("grey", "noise")[int(torch.randint(0, 2, (1,), generator=generator))]
    return _robustness(f"patch:{fill}")(images, generator, crop_fractions)


def _region(images: torch.Tensor, generator: torch.Generator, crop_fractions: tuple[float, float, float]
            ) -> torch.Tensor:
    region = REGIONS[int(torch.randint(0, len(REGIONS), (1,), generator=generator))]
    fill = ("grey", "noise")[int(torch.randint(0, 2, (1,), generator=generator))]
    return _robustness(f"{region}:{fill}")(images, generator, crop_fractions)


_KIND_FUNCTIONS = {
    "hand": _robustness("hand"),
    "sunglasses": _robustness("sunglasses"),
    "mask": _robustness("mask"),
    "hair": lambda images, generator, crop_fractions: _hair(images, generator),
    "object": lambda images, generator, crop_fractions: _object(images, generator),
    "patch": _patch,
    "region": _region,
}


def occlude_batch(images: torch.Tensor, generator: torch.Generator, crop_fractions: tuple[float, float, float],
                  clean_share: float = 0.4, kinds: tuple[str, ...] = OCCLUDER_KINDS, group: int = 16
                  ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Occlude a uint8 ``(N, C, H, W)`` batch: ``clean_share`` of the faces stay as they are, the others get one
    occluder of ``kinds`` (drawn per ``group`` consecutive faces, which share a strength). Returns the batch, the
    (N, 5) covered share of each region and each face's kind (``clean`` for untouched faces)."""
    unknown = set(kinds) - set(_KIND_FUNCTIONS)
    if unknown:
        raise ValueError(f"unknown occluder kinds {sorted(unknown)}; choose from {', '.join(OCCLUDER_KINDS)}")
    n = images.shape[0]
    out = images.clone()
    names = ["clean"] * n
    order = torch.randperm(n, generator=generator)
    occluded = order[: n - round(clean_share * n)]
    for start in range(0, len(occluded), group):
        rows = occluded[start:start + group]
        kind = kinds[int(torch.randint(0, len(kinds), (1,), generator=generator))]
        out[rows] = _KIND_FUNCTIONS[kind](images[rows], generator, crop_fractions)
        for r in rows.tolist():
            names[r] = kind
    changed = (out != images).any(1)
    return out, region_coverage(changed, crop_fractions), names
