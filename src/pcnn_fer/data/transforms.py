"""Batched tensor transforms: the paper's training augmentation and plain evaluation preprocessing.

Images travel as uint8 ``(B, C, H, W)`` batches (C = 1 for grayscale sources, given to the model as 3 channels) and
are augmented on whatever device the model runs on, the whole batch at once: flip, rotation, crop-with-padding and
resizing become one affine warp (one ``grid_sample``), random erasing one masked fill. This keeps a 2-core CPU or a
GPU fed without worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. Defaults are the paper's: flip; with p=0.2 rotate ±20° and random-crop with 32/224
    padding; random erasing (p=0.5, area 2–25 %)."""

    flip: float = 0.5
    affine_p: float = 0.2
    rotate: float = 20.0  # degrees
    translate: float = 32 / 224  # max shift as a fraction of the image side (crop padding / size)
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range (>1 zooms in)
    erasing_p: float = 0.5
    erasing_scale: tuple[float, float] = (0.02, 0.25)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    region_erasing_p: float = 0.0  # blank one whole PCNN region (eye, cheek or mouth box) of this share of samples


_STRONG = AugmentConfig(affine_p=0.8, rotate=15.0, translate=0.1, scale=(0.85, 1.15), erasing_p=0.5)

#: Named augmentation recipes: ``paper`` as published, ``strong`` for training small models from scratch on 48×48.
AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "paper": AugmentConfig(),
    "strong": _STRONG,
    "none": AugmentConfig(flip=0.0, affine_p=0.0, erasing_p=0.0),
    # ``strong`` plus region erasing: a blanked eye, cheek or mouth makes the other branches carry the decision.
    "regions": replace(_STRONG, region_erasing_p=0.3),
}


def _box_mask(h: int, w: int, top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor,
              right: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` mask of one box per sample: rows ``top`` ≤ r < ``bottom``, columns ``left`` ≤ c < ``right``."""
    b = top.shape[0]
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    return ((rows >= top.view(b, 1, 1)) & (rows < bottom.view(b, 1, 1))
            & (cols >= left.view(b, 1, 1)) & (cols < right.view(b, 1, 1)))



class Normalize:
    """uint8 or [0, 1] float batch → normalised float batch with 3 channels. The mean/std tensors are made once per
    device (building them from Python lists on every call would be a blocking host-to-device copy on a GPU)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self._tensors: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise a batch ``(B, 1|3, H, W)``."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
        if x.device not in self._tensors:
            self._tensors[x.device] = (torch.tensor(self.mean).view(1, 3, 1, 1).to(x.device),
                                       torch.tensor(self.std).view(1, 3, 1, 1).to(x.device))
        m, s = self._tensors[x.device]
        return (x - m) / s


def to_float(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 or [0, 1] float batch → normalised float batch with 3 channels (one-off; see :class:`Normalize`)."""
    return Normalize(mean, std)(images)


def eval_transform(images: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Plain evaluation preprocessing: resize to ``size``×``size`` (antialiased bilinear) and normalise."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
    return to_float(x, mean, std)


def flip_batch(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of a batch (for flip test-time augmentation)."""
    return x.flip(-1)


class BatchAugment:
    """Random training augmentation of a whole batch on its own device; returns normalised 3-channel floats."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 config: AugmentConfig | None = None, region_boxes: Sequence[tuple[int, int, int, int]] = ()) -> None:
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.normalize = Normalize(mean, std)
        self.config = config or AugmentConfig()
        # (top, bottom, left, right) pixel boxes of the model's regions at ``size`` (see FaceRegions.boxes).
        self.boxes = torch.tensor(list(region_boxes), dtype=torch.long).view(-1, 4)
        if self.config.region_erasing_p > 0 and len(self.boxes) == 0:
            raise ValueError("region erasing needs the model's region boxes")

    def affine(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """Per-sample 2×3 sampling matrices (output → input normalised coordinates)."""
        c = self.config

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.rand(batch, generator=generator, device=device) * (high - low) + low

        apply = (torch.rand(batch, generator=generator, device=device) < c.affine_p).float()
        angle = uniform(-c.rotate, c.rotate) * math.pi / 180 * apply
        zoom = 1 + (uniform(*c.scale) - 1) * apply
        # A crop with padding p shifts the image by up to ±p pixels: ±2p/size in normalised coordinates.
        tx = uniform(-2 * c.translate, 2 * c.translate) * apply
        ty = uniform(-2 * c.translate, 2 * c.translate) * apply
        flip = torch.where(torch.rand(batch, generator=generator, device=device) < c.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        return theta

    def erase(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random erasing (value 0 after normalisation), one rectangle per selected sample, vectorised."""
        c = self.config
        b, _, h, w = x.shape
        dev = x.device
        rand = lambda: torch.rand(b, generator=generator, device=dev)  # noqa: E731
        area = (rand() * (c.erasing_scale[1] - c.erasing_scale[0]) + c.erasing_scale[0]) * h * w
        log_r = rand() * (math.log(c.erasing_ratio[1]) - math.log(c.erasing_ratio[0])) + math.log(c.erasing_ratio[0])
        ratio = torch.exp(log_r)
        eh = torch.sqrt(area * ratio).clamp(1, h).floor()
        ew = torch.sqrt(area / ratio).clamp(1, w).floor()
        top = (rand() * (h - eh + 1)).floor()
        left = (rand() * (w - ew + 1)).floor()
        inside = _box_mask(h, w, top, top + eh, left, left + ew)
        selected = (rand() < c.erasing_p).view(b, 1, 1)
        return x.masked_fill((inside & selected).unsqueeze(1), 0.0)

    def erase_regions(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Blank (value 0 after normalisation) one whole PCNN region, chosen uniformly, of each selected sample."""
        b, _, h, w = x.shape
        dev = x.device
        selected = torch.rand(b, generator=generator, device=dev) < self.config.region_erasing_p
        region = torch.randint(0, len(self.boxes), (b,), generator=generator, device=dev)
        inside = _box_mask(h, w, *self.boxes.to(dev)[region].unbind(1))
        return x.masked_fill((inside & selected.view(b, 1, 1)).unsqueeze(1), 0.0)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8/float batch ``(B, 1|3, H, W)`` into a normalised ``(B, 3, size, size)`` float batch."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        b = x.shape[0]
        theta = self.affine(b, x.device, generator)
        grid = F.affine_grid(theta, [b, x.shape[1], self.size, self.size], align_corners=False)
        if x.shape[-1] > 2 * self.size:  # large downscale: antialias first so the warp does not alias
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = self.normalize(x)
        if self.config.erasing_p > 0:
            x = self.erase(x, generator)
        if self.config.region_erasing_p > 0:
            x = self.erase_regions(x, generator)
        return x
