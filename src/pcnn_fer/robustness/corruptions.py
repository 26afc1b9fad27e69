"""Corruptions of aligned face batches for ``pcnn robustness``: pure functions of a uint8 ``(N, C, H, W)`` tensor
(C = 1 or 3, on any device) returning a new uint8 tensor of the same shape, batched, seeded by a CPU
``torch.Generator``.

Each :class:`Corruption` has three strengths (1, 2, 3) whose parameter is listed in :data:`CORRUPTIONS`; strength 0
returns the images unchanged. Groups:

* ``occlusion`` – each PCNN region (boxes from :class:`~pcnn_fer.models.pcnn.FaceRegions` and the model's crop
  fractions, so they are exactly what the branches see) and a random square patch, filled with mid-grey or with
  uniform grey-level noise; sunglasses, a lower-face mask and a hand, placed with the face template of
  :mod:`pcnn_fer.faces.align`.
* ``pose`` – in-plane rotation, shift and scale (misalignment), edges replicated.
* ``quality`` – Gaussian blur, low resolution (down- then up-sampling) and JPEG compression.

Random choices (patch and hand positions, rotation sign, shift direction, zoom in or out, noise, skin tone) are per
image and come only from the generator passed in.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import UsageError
from ..faces.align import TEMPLATE_5PT
from ..models.pcnn import REGIONS, FaceRegions

__all__ = ["CORRUPTIONS", "GROUPS", "MAX_STRENGTH", "Corruption", "expand_names", "region_mask"]

GROUPS: tuple[str, ...] = ("occlusion", "pose", "quality")
MAX_STRENGTH = 3
GREY = 128
FILLS: tuple[str, ...] = ("grey", "noise")
SUNGLASSES = (20, 20, 24)
MASK_BLUE = (150, 185, 210)
SKIN_TONES = ((236, 188, 160), (214, 160, 124), (168, 112, 80), (110, 70, 50))
#: Eye centres (x, y) as fractions of the aligned face, from the 5-point template (image-left eye first).
EYES = ((TEMPLATE_5PT[2] + TEMPLATE_5PT[3]) / 2, (TEMPLATE_5PT[0] + TEMPLATE_5PT[1]) / 2)

Function = Callable[[torch.Tensor, float, torch.Generator, tuple[float, float, float]], torch.Tensor]


@dataclass(frozen=True)
class Corruption:
    """A named corruption: its group, what its strengths measure and the parameter at strengths 1…3."""

    name: str
    group: str
    parameter: str
    levels: tuple[float, ...]
    function: Function

    def __call__(self, images: torch.Tensor, strength: int, generator: torch.Generator | None = None,
                 crop_fractions: tuple[float, float, float] = (0.5, 0.65, 0.5)) -> torch.Tensor:
        """``images`` corrupted at ``strength`` (0: the same tensor, unchanged)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected a uint8 (N, 1|3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        if not 0 <= strength <= len(self.levels):
            raise ValueError(f"{self.name}: strength must be 0…{len(self.levels)}, got {strength}")
        if strength == 0:
            return images
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        return self.function(images, self.levels[strength - 1], generator, crop_fractions)


# --- helpers ------------------------------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    """``n`` uniform draws in [low, high) as a (n, 1, 1, 1) tensor on ``device``."""
    return (low + (high - low) * torch.rand(n, generator=generator)).view(n, 1, 1, 1).to(device)


def _grid(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates as fractions of the side: x (1, 1, 1, W) and y (1, 1, H, 1)."""
    height, width = images.shape[-2:]
    x = (torch.arange(width, device=images.device, dtype=torch.float32) + 0.5) / width
    y = (torch.arange(height, device=images.device, dtype=torch.float32) + 0.5) / height
    return x.view(1, 1, 1, width), y.view(1, 1, height, 1)


def _colour(rgb: tuple[int, int, int] | torch.Tensor, channels: int, device: torch.device) -> torch.Tensor:
    """An RGB colour (3,) or per-image colours (N, 3) as a (N|1, C, 1, 1) float tensor; luminance when C = 1."""
    c = torch.as_tensor(rgb, dtype=torch.float32, device=device).reshape(-1, 3)
    if channels == 1:
        c = (c * torch.tensor([0.299, 0.587, 0.114], device=device)).sum(1, keepdim=True)
    return c.view(c.shape[0], channels, 1, 1)


def _paint(images: torch.Tensor, mask: torch.Tensor, fill: str | tuple[int, int, int] | torch.Tensor,
           generator: torch.Generator) -> torch.Tensor:
    """``images`` with the pixels of ``mask`` (broadcastable to N×1×H×W) replaced by grey, grey-level noise or a
    colour (one, or one per image)."""
    n, c, h, w = images.shape
    if isinstance(fill, str) and fill == "grey":
        value = torch.full((1, 1, 1, 1), float(GREY), device=images.device)
    elif isinstance(fill, str) and fill == "noise":
        value = torch.randint(0, 256, (n, 1, h, w), generator=generator).float().to(images.device)
    else:
        value = _colour(fill, c, images.device)
    return torch.where(mask, value.round().clamp(0, 255).to(torch.uint8), images)


def region_mask(crop_fractions: tuple[float, float, float], region: str, height: int, width: int,
                fraction: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 1, H, W) bool mask of the box of ``region`` cut by PCNN's :class:`FaceRegions`, shrunk about its centre
    to ``fraction`` of its area (1: the whole box, exactly the pixels of that branch's crop)."""
    top, bottom, left, right = FaceRegions(crop_fractions).boxes(height, width)[region]
    scale = math.sqrt(fraction)
    h, w = round((bottom - top) * scale), round((right - left) * scale)
    top, left = top + (bottom - top - h) // 2, left + (right - left - w) // 2
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool, device=device)
    mask[..., top:top + h, left:left + w] = True
    return mask


def _warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Affine warp (output pixel p samples input at θ·p, normalised coordinates), bilinear, edges replicated."""
    x = images.float()
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


# --- occlusion ----------------------------------------------------------------------------------------------------


def occlude_region(images: torch.Tensor, fraction: float, generator: torch.Generator,
                   crop_fractions: tuple[float, float, float], region: str, fill: str) -> torch.Tensor:
    """Fill the centred ``fraction`` (of the area) of one PCNN region's box."""
    mask = region_mask(crop_fractions, region, *images.shape[-2:], fraction=fraction, device=images.device)
    return _paint(images, mask, fill, generator)


def occlude_patch(images: torch.Tensor, area: float, generator: torch.Generator,
                  crop_fractions: tuple[float, float, float], fill: str) -> torch.Tensor:
    """Fill one square patch of ``area`` (fraction of the image) at a random place inside each image."""
    n, _, height, width = images.shape
    h, w = max(1, round(math.sqrt(area) * height)), max(1, round(math.sqrt(area) * width))
    top = (torch.rand(n, generator=generator) * (height - h + 1)).floor().view(n, 1, 1, 1).to(images.device)
    left = (torch.rand(n, generator=generator) * (width - w + 1)).floor().view(n, 1, 1, 1).to(images.device)
    rows = torch.arange(height, device=images.device).view(1, 1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, 1, width)
    mask = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    return _paint(images, mask, fill, generator)


def sunglasses(images: torch.Tensor, scale: float, generator: torch.Generator,
               crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Opaque dark lenses (rounded rectangles, ``scale`` × a 0.23 × 0.17 lens) on both eyes, joined by a bridge."""
    x, y = _grid(images)
    a, b = 0.115 * scale, 0.085 * scale
    mask = torch.zeros(1, 1, *images.shape[-2:], dtype=torch.bool, device=images.device)
    for cx, cy in EYES:
        mask |= ((x - float(cx)) / a) ** 4 + ((y - float(cy)) / b) ** 4 <= 1
    eye_y = float(EYES[0][1] + EYES[1][1]) / 2
    mask |= (x >= float(EYES[0][0])) & (x <= float(EYES[1][0])) & ((y - eye_y).abs() <= 0.02 * scale)
    return _paint(images, mask, SUNGLASSES, generator)


def face_mask(images: torch.Tensor, top: float, generator: torch.Generator,
              crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """A light-blue lower-face mask from the chin up to ``top`` (fraction of the height; its edge dips at the
    sides), narrowing towards the jaw."""
    x, y = _grid(images)
    edge = top + 0.06 * ((x - 0.5) / 0.36) ** 2
    half_width = 0.36 - 0.14 * ((y - top) / (1 - top)).clamp(0, 1)
    mask = (y >= edge) & ((x - 0.5).abs() <= half_width)
    return _paint(images, mask, MASK_BLUE, generator)


def hand(images: torch.Tensor, scale: float, generator: torch.Generator,
         crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """A skin-toned hand (palm, four fingers, thumb; about 0.16 × ``scale``² of the image) at a random place,
    angle and tone on each face."""
    n = images.shape[0]
    x, y = _grid(images)
    cx, cy = _uniform(generator, n, 0.3, 0.7, images.device), _uniform(generator, n, 0.3, 0.7, images.device)
    angle = _uniform(generator, n, 0.0, 2 * math.pi, images.device)
    tone = torch.randint(0, len(SKIN_TONES), (n,), generator=generator)
    dx, dy = x - cx, y - cy
    u = dx * torch.cos(angle) + dy * torch.sin(angle)  # across the fingers
    v = -dx * torch.sin(angle) + dy * torch.cos(angle)  # along the fingers (towards the palm)
    k = scale

    def ellipse(cu: float, cv: float, au: float, av: float) -> torch.Tensor:
        return ((u - cu * k) / (au * k)) ** 2 + ((v - cv * k) / (av * k)) ** 2 <= 1

    mask = ellipse(0.0, 0.0, 0.17, 0.2) | ellipse(0.2, 0.02, 0.1, 0.04)
    for cu in (-0.12, -0.04, 0.04, 0.12):
        mask |= ellipse(cu, -0.27, 0.038, 0.12)
    colours = torch.tensor(SKIN_TONES, dtype=torch.float32)[tone]
    return _paint(images, mask, colours, generator)


# --- pose / misalignment ------------------------------------------------------------------------------------------


def rotate(images: torch.Tensor, degrees: float, generator: torch.Generator,
           crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """In-plane rotation by ± ``degrees`` (random sign per image) about the centre."""
    n = images.shape[0]
    sign = torch.randint(0, 2, (n,), generator=generator).float() * 2 - 1
    a = sign * math.radians(degrees)
    theta = torch.stack([torch.stack([a.cos(), -a.sin(), torch.zeros(n)], 1),
                         torch.stack([a.sin(), a.cos(), torch.zeros(n)], 1)], 1)
    return _warp(images, theta)


def shift(images: torch.Tensor, fraction: float, generator: torch.Generator,
          crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Translation by ``fraction`` of the side in a random direction per image."""
    n = images.shape[0]
    direction = torch.rand(n, generator=generator) * 2 * math.pi
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * fraction * direction.cos()
    theta[:, 1, 2] = -2 * fraction * direction.sin()
    return _warp(images, theta)


def zoom(images: torch.Tensor, factor: float, generator: torch.Generator,
         crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Scale about the centre by ``factor`` (zoom in) or 1 / ``factor`` (zoom out), chosen per image."""
    n = images.shape[0]
    zoom_in = torch.randint(0, 2, (n,), generator=generator).bool()
    s = torch.where(zoom_in, torch.tensor(float(factor)), torch.tensor(1 / factor))
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    return _warp(images, theta)


# --- quality ------------------------------------------------------------------------------------------------------


def blur(images: torch.Tensor, sigma: float, generator: torch.Generator,
         crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Gaussian blur with ``sigma`` pixels of a 48-pixel face (scaled with the image size), reflected edges."""
    channels, height = images.shape[1], images.shape[-2]
    sigma_px = sigma * height / 48
    radius = max(1, math.ceil(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel = (kernel / kernel.sum()).repeat(channels, 1, 1, 1)
    x = F.pad(images.float(), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(x, kernel.view(channels, 1, -1, 1), groups=channels)
    return x.round().clamp(0, 255).to(torch.uint8)


def low_resolution(images: torch.Tensor, factor: float, generator: torch.Generator,
                   crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """Down-sample by ``factor`` (antialiased) and back up (bilinear)."""
    height, width = images.shape[-2:]
    small = (max(1, round(height / factor)), max(1, round(width / factor)))
    x = F.interpolate(images.float(), size=small, mode="bilinear", antialias=True, align_corners=False)
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def jpeg(images: torch.Tensor, quality: float, generator: torch.Generator,
         crop_fractions: tuple[float, float, float]) -> torch.Tensor:
    """JPEG compression at ``quality`` (PIL, 4:2:0 chroma subsampling for colour images)."""
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(array)
    for i, image in enumerate(array):
        buffer = io.BytesIO()
        pil = Image.fromarray(image[..., 0], "L") if image.shape[-1] == 1 else Image.fromarray(image, "RGB")
        pil.save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        out[i] = decoded.reshape(image.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)


# --- registry -----------------------------------------------------------------------------------------------------


def _registry() -> dict[str, Corruption]:
    found: list[Corruption] = []
    for region in REGIONS:
        for fill in FILLS:
            found.append(Corruption(f"{region}:{fill}", "occlusion", "fraction of the region covered",
                                    (1 / 3, 2 / 3, 1.0), partial(occlude_region, region=region, fill=fill)))
    for fill in FILLS:
        found.append(Corruption(f"patch:{fill}", "occlusion", "patch area (fraction of the image)",
                                (0.1, 0.2, 0.3), partial(occlude_patch, fill=fill)))
    found += [
        Corruption("sunglasses", "occlusion", "lens size (x 0.23 x 0.17 of the face)", (0.8, 1.0, 1.25), sunglasses),
        Corruption("mask", "occlusion", "top edge (fraction of the height)", (0.72, 0.61, 0.5), face_mask),
        Corruption("hand", "occlusion", "hand size (area ~ 0.16 x size^2)", (0.7, 1.0, 1.3), hand),
        Corruption("rotate", "pose", "degrees (random sign)", (15.0, 30.0, 45.0), rotate),
        Corruption("shift", "pose", "shift (fraction of the side, random direction)", (0.05, 0.1, 0.15), shift),
        Corruption("scale", "pose", "zoom factor (in or out at random)", (1.15, 1.3, 1.5), zoom),
        Corruption("blur", "quality", "Gaussian sigma (pixels of a 48-pixel face)", (0.5, 1.0, 2.0), blur),
        Corruption("lowres", "quality", "down-sampling factor", (2.0, 3.0, 4.0), low_resolution),
        Corruption("jpeg", "quality", "JPEG quality", (40.0, 20.0, 10.0), jpeg),
    ]
    return {c.name: c for c in found}


#: Every corruption by name, in report order: region occlusions, patches, occluders, pose, quality.
CORRUPTIONS: dict[str, Corruption] = _registry()


def expand_names(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Corruption names from names, group names (``occlusion``, ``pose``, ``quality``), region names (both fills)
    or ``all`` / None (every corruption), in report order; ValueError naming the choices for an unknown one."""
    if not names:
        return list(CORRUPTIONS)
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen |= set(CORRUPTIONS)
        elif name in CORRUPTIONS:
            chosen.add(name)
        elif name in GROUPS:
            chosen |= {c.name for c in CORRUPTIONS.values() if c.group == name}
        elif name in REGIONS or name == "patch":
            chosen |= {f"{name}:{fill}" for fill in FILLS}
        else:
            raise UsageError(f"unknown corruption {name!r}; choose from all, {', '.join(GROUPS)}, "
                             f"{', '.join(CORRUPTIONS)}")
    return [name for name in CORRUPTIONS if name in chosen]
