"""PCNN: a Perception CNN for facial expression recognition (Tian et al., IEEE TIP 34, 2025).

The file follows the paper's figure:

1. **Regions** – the aligned face is cut into five fixed crops: left/right eye+brow (rows 0–h1), left/right cheek
   (rows h1–h2, split at w1) and mouth (rows h2–1, full width).
2. **Trunks** – one global ResNet-18 trunk (conv1…layer3) on the whole face, one local trunk per crop.
3. **MDIM** – the five local maps are stitched back into a face-shaped map, registered onto the global map by a
   spatial transformer (θ regressed from layer4 of the stitched map) and added to the global map.
4. **Heads** – layer4 → pool → linear on the fused map (global logits); one linear head per local map, whose
   logits are summed (local logits). Training uses the two-phase loss in :mod:`pcnn_fer.loss`.

Unlike the official code, the network is size-agnostic (the STN pools layer4 to a fixed grid), registers only the
modules it uses, is channels_last/torch.compile friendly and identity-initialises θ by default.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..classes import CANONICAL_CLASSES, REGIONS
from ..errors import UsageError
from .backbones import BACKBONES, FIXED_WIDTH_BACKBONES, branch_channels, init_backbone, make_layer4, make_trunk
from .calibration import Calibration
from .dlib_resnet import DLIB_PIXEL_MEAN, DLIB_PIXEL_SCALE
from .faceres_net import FACERES_BGR_MEAN
from .occlusion import OcclusionHeads
from .resnet import STEMS, Stem
from .sface_net import SFACE_PIXEL_MEAN, SFACE_PIXEL_SCALE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class PCNNConfig:
    """Everything needed to rebuild a PCNN and feed it: architecture, classes and preprocessing."""

    num_classes: int = 7
    width: float = 1.0
    stem: Stem = "imagenet"
    crop_fractions: tuple[float, float, float] = (0.5, 0.65, 0.5)  # h1, h2, w1
    theta_init: Literal["identity", "official"] = "identity"
    stn_grid: int = 7  # layer4 of the stitched map is pooled to stn_grid² before the localisation MLP
    stn_hidden: int = 32
    dropout: float = 0.0
    input_size: int = 224  # the size images are resized to for this model (the network accepts any size ≥ 32)
    classes: tuple[str, ...] = ()  # canonical class names; empty → the first num_classes canonical names
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    arch: str = "pcnn"  # a key of ARCHITECTURES: "pcnn" or an ablation baseline of models/baselines.py
    backbone: str = "resnet18"  # a key of models/backbones.py: resnet18 (the paper's); dlib, sface, faceres (faces)
    calibration: Calibration | None = None  # confidence calibration of the global logits (pcnn calibrate)
    occlusion_hidden: int = 0  # > 0: per-region occlusion heads of this hidden width (pcnn occlusion); 0: none

    def __post_init__(self) -> None:
        num_classes = _integer("num_classes", self.num_classes, minimum=2)
        if not self.classes:
            if num_classes > len(CANONICAL_CLASSES):
                object.__setattr__(self, "classes", tuple(f"class_{i}" for i in range(num_classes)))
            else:
                object.__setattr__(self, "classes", CANONICAL_CLASSES[:num_classes])
        values = {
            "num_classes": num_classes,
            "width": _number("width", self.width, above=0.0),
            "stem": _choice("stem", self.stem, STEMS),
            "backbone": _choice("backbone", self.backbone, BACKBONES),
            "crop_fractions": _numbers("crop_fractions", self.crop_fractions),
            "theta_init": _choice("theta_init", self.theta_init, ("identity", "official")),
            "stn_grid": _integer("stn_grid", self.stn_grid, minimum=1),
            "stn_hidden": _integer("stn_hidden", self.stn_hidden, minimum=1),
            "dropout": _number("dropout", self.dropout, at_least=0.0, below=1.0),
            "input_size": _integer("input_size", self.input_size, minimum=MIN_INPUT_SIZE),
            "classes": _class_names(self.classes, num_classes),
            "mean": _numbers("mean", self.mean),
            "std": _numbers("std", self.std),
            "calibration": None if self.calibration is None else Calibration.from_dict(self.calibration),
            "occlusion_hidden": _integer("occlusion_hidden", self.occlusion_hidden, minimum=0),
        }
        h1, h2, w1 = values["crop_fractions"]
        if not (0 < h1 < h2 < 1 and 0 < w1 < 1):
            raise UsageError(f"crop fractions need 0 < h1 < h2 < 1 and 0 < w1 < 1, got {list(self.crop_fractions)}")
        if values["backbone"] in FIXED_WIDTH_BACKBONES and values["width"] != 1.0:
            raise UsageError(f"the {values['backbone']} backbone has its pretrained widths; width must be 1.0, got "
                             f"{self.width}")
        if not isinstance(self.arch, str):
            raise UsageError(f"arch must be an architecture name, got {self.arch!r}")
        if values["calibration"] is not None and len(values["calibration"].scale) != num_classes:
            raise UsageError(f"the calibration has {len(values['calibration'].scale)} classes, the model "
                             f"{num_classes}")
        if min(values["std"]) <= 0:
            raise UsageError(f"std must be 3 positive numbers (pixels are divided by it), got {list(self.std)}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PCNNConfig:
        """Build a config from :meth:`to_dict` output, rejecting unknown keys."""
        if not isinstance(data, Mapping):
            raise UsageError(f"a PCNN config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"unknown PCNN config keys: {sorted(unknown)}")
        return cls(**data)


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (UsageError for strings, bools, fractions, smaller numbers)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or value != int(value):
        raise UsageError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def _number(name: str, value: Any, above: float | None = None, at_least: float | None = None,
            below: float | None = None) -> float:
    """``value`` as a finite float within the given bounds (UsageError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if (above is not None and value <= above) or (at_least is not None and value < at_least) or (
            below is not None and value >= below):
        bounds = [f"> {above}" if above is not None else "", f">= {at_least}" if at_least is not None else "",
                  f"< {below}" if below is not None else ""]
        raise UsageError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {value!r}")
    return float(value)


def _numbers(name: str, values: Any) -> tuple[float, float, float]:
    """``values`` as 3 finite floats (UsageError otherwise)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 3:
        raise UsageError(f"{name} must be a list of 3 numbers, got {values!r}")
    a, b, c = (_number(name, v) for v in values)
    return a, b, c


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices`` (UsageError otherwise)."""
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _class_names(classes: Any, num_classes: int) -> tuple[str, ...]:
    """``classes`` as a tuple of ``num_classes`` distinct non-empty names (UsageError otherwise)."""
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise UsageError(f"classes must be a list of names, got {classes!r}")
    names = tuple(classes)
    if not all(isinstance(c, str) and c.strip() for c in names):
        raise UsageError(f"classes must be non-empty strings, got {list(names)}")
    if len(names) != num_classes:
        raise UsageError(f"{len(names)} class names given for num_classes={num_classes}")
    if len(set(names)) != len(names):
        raise UsageError(f"class names repeat: {list(names)}")
    return names


class FaceRegions(nn.Module):
    """Cuts an aligned face batch into the five fixed PCNN crops (integer cut points as in the official code)."""

    def __init__(self, crop_fractions: tuple[float, float, float]) -> None:
        super().__init__()
        self.h1, self.h2, self.w1 = crop_fractions

    def boxes(self, height: int, width: int) -> dict[str, tuple[int, int, int, int]]:
        """Pixel boxes (top, bottom, left, right) of each region for an input of the given size."""
        r1, r2, c1 = int(height * self.h1), int(height * self.h2), int(width * self.w1)
        return {
            "left_eye": (0, r1, 0, c1),
            "right_eye": (0, r1, c1, width),
            "left_cheek": (r1, r2, 0, c1),
            "right_cheek": (r1, r2, c1, width),
            "mouth": (r2, height, 0, width),
        }

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five crops in :data:`REGIONS` order."""
        height, width = x.shape[-2:]
        if min(height, width) < MIN_INPUT_SIZE:
            raise UsageError(f"PCNN needs inputs of at least {MIN_INPUT_SIZE}×{MIN_INPUT_SIZE}, got {height}×{width}")
        boxes = self.boxes(height, width)
        return [x[:, :, t:b, left:right] for t, b, left, right in (boxes[name] for name in REGIONS)]


def region_boxes(config: PCNNConfig, size: int) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (top, bottom, left, right) of the five regions of a ``size``×``size`` input, in :data:`REGIONS`
    order (what region-erasing augmentation blanks)."""
    boxes = FaceRegions(config.crop_fractions).boxes(size, size)
    return [boxes[name] for name in REGIONS]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with align_corners=True (the official code's choice); a no-op when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class MDIM(nn.Module):
    """Multi-domain interaction: stitch the local maps into a face, register it onto the global map, add them.

    θ is regressed from layer4 of the stitched map (layer4 is the classifier's, passed in) pooled to a fixed
    ``grid × grid`` so any input size works; at 224×224 layer4 is already 7×7 and the pooling is the identity.
    """

    def __init__(self, channels: int, grid: int, hidden: int, theta_init: str) -> None:
        super().__init__()
        self.grid = grid
        self.localization = nn.Sequential(nn.Linear(channels * grid * grid, hidden), nn.ReLU(inplace=True),
                                          nn.Linear(hidden, 6))
        if theta_init == "identity":
            nn.init.zeros_(self.localization[2].weight)
            with torch.no_grad():
                self.localization[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    @staticmethod
    def stitch(local_maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Reassemble eyes / cheeks / mouth rows into one face-shaped map of the global map's size."""
        left_eye, right_eye, left_cheek, right_cheek, mouth = local_maps
        width = size[1]
        rows = [torch.cat([left_eye, right_eye], 3), torch.cat([left_cheek, right_cheek], 3), mouth]
        rows = [_resize(r, (r.shape[2], width)) for r in rows]
        return _resize(torch.cat(rows, 2), size)

    def theta(self, stitched: torch.Tensor, layer4: nn.Module) -> torch.Tensor:
        """Affine registration parameters (B, 2, 3) from layer4 of the stitched map."""
        features = F.adaptive_avg_pool2d(layer4(stitched), self.grid)
        return self.localization(features.flatten(1)).view(-1, 2, 3)

    def forward(self, global_map: torch.Tensor, local_maps: list[torch.Tensor], layer4: nn.Module) -> torch.Tensor:
        """Fused map = global map + local maps stitched and registered by the spatial transformer."""
        stitched = self.stitch(local_maps, tuple(global_map.shape[-2:]))
        theta = self.theta(stitched, layer4).to(stitched.dtype)
        grid = F.affine_grid(theta, list(global_map.shape), align_corners=True)
        registered = F.grid_sample(stitched, grid, align_corners=True)
        return global_map + registered


class PCNN(nn.Module):
    """Perception CNN. ``forward(x)`` → ``(global_logits, local_logits)``; with ``return_regions=True`` also the
    per-region logits ``(B, 5, C)`` in :data:`REGIONS` order (their sum is ``local_logits``)."""

    def __init__(self, config: PCNNConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = replace(config or PCNNConfig(), **overrides)
        if config.arch != "pcnn":
            raise ValueError(f"a {config.arch!r} config builds another architecture: use build_model(config)")
        self.config = config
        c3, c4 = branch_channels(config)
        self.regions = FaceRegions(config.crop_fractions)
        self.global_trunk = make_trunk(config)
        self.local_trunks = nn.ModuleDict({name: make_trunk(config) for name in REGIONS})
        self.layer4 = make_layer4(config)
        self.mdim = MDIM(c4, config.stn_grid, config.stn_hidden, config.theta_init)
        self.dropout = nn.Dropout(config.dropout)
        self.global_head = nn.Linear(c4, config.num_classes)
        self.local_heads = nn.ModuleDict({name: nn.Linear(c3, config.num_classes) for name in REGIONS})
        if config.occlusion_hidden:
            self.occlusion_heads = OcclusionHeads(REGIONS, c3, config.occlusion_hidden)
        init_backbone(config, self.global_trunk, self.local_trunks, self.layer4)

    @property
    def classes(self) -> tuple[str, ...]:
        """Canonical class names of the outputs."""
        return self.config.classes

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Fused global layer4 map and the five local layer3 maps."""
        crops = self.regions(x)
        global_map = self.global_trunk(x)
        local_maps = [self.local_trunks[name](crop) for name, crop in zip(REGIONS, crops)]
        fused = self.mdim(global_map, local_maps, self.layer4)
        return self.layer4(fused), local_maps

    def forward(self, x: torch.Tensor, return_regions: bool = False,
                return_occlusion: bool = False) -> tuple[torch.Tensor, ...]:
        """Logits of the fused global branch and the summed local heads (plus per-region logits on request, and
        with ``return_occlusion`` the (B, 5) occlusion probabilities of the regions last; a model without occlusion
        heads gives NaN there)."""
        fused, local_maps = self.forward_features(x)
        global_logits = self.global_head(self.dropout(_pool(fused)))
        region_logits = torch.stack(
            [self.local_heads[name](self.dropout(_pool(m))) for name, m in zip(REGIONS, local_maps)], 1
        )
        local_logits = region_logits.sum(1)
        outputs: tuple[torch.Tensor, ...] = (global_logits, local_logits)
        if return_regions:
            outputs += (region_logits,)
        if return_occlusion:
            outputs += (occlusion_of(self, local_maps),)
        return outputs


def occlusion_of(model: nn.Module, local_maps: list[torch.Tensor]) -> torch.Tensor:
    """(B, 5) occlusion probabilities from ``model``'s occlusion heads, NaN when it has none."""
    heads = getattr(model, "occlusion_heads", None)
    if heads is None:
        return torch.full((local_maps[0].shape[0], len(REGIONS)), float("nan"), device=local_maps[0].device)
    return heads(local_maps)


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pool to (B, C)."""
    return x.mean((2, 3))


#: Named architectures. ``paper`` is the official geometry; the others are compact variants for 48×48 sources.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(width=1.0, stem="imagenet", input_size=224, crop_fractions=(0.5, 0.65, 0.5), stn_grid=7),
    "paper-v1": dict(width=1.0, stem="imagenet", input_size=224, crop_fractions=(0.4, 0.65, 0.5), stn_grid=7),
    "compact": dict(width=0.5, stem="lowres", input_size=48, stn_grid=3, mean=(0.5,) * 3, std=(0.5,) * 3),
    "small": dict(width=0.25, stem="lowres", input_size=48, stn_grid=3, mean=(0.5,) * 3, std=(0.5,) * 3),
    "tiny": dict(width=0.125, stem="lowres", input_size=48, stn_grid=2, mean=(0.5,) * 3, std=(0.5,) * 3),
    # dlib's face-recognition ResNet-29 trunks (--init dlib); its pixel normalisation, (p - mean) / 256 on 0…255
    "dlib": dict(backbone="dlib", input_size=112, stn_grid=2, mean=tuple(m / 255 for m in DLIB_PIXEL_MEAN),
                 std=(DLIB_PIXEL_SCALE / 255,) * 3),
    # OpenCV Zoo's SFace trunks (--init sface): MDIM on the stride-8 map (14×14 at 112 px), layer4 7×7 as in the
    # paper at 224; SFace's pixel normalisation, (p - 127.5) / 128 on 0…255
    "sface": dict(backbone="sface", input_size=112, stn_grid=7, mean=(SFACE_PIXEL_MEAN / 255,) * 3,
                  std=(1 / (SFACE_PIXEL_SCALE * 255),) * 3),
    # HSE's FaceRes trunks (--init PATH/faceres.json): the paper's geometry (MDIM on the stride-16 map, 14×14 at
    # 224 px); FaceRes's normalisation, p - VGGFace mean on 0…255 (its conv1 takes BGR; the start flips it to RGB)
    "faceres": dict(backbone="faceres", input_size=224, stn_grid=7,
                    mean=tuple(m / 255 for m in FACERES_BGR_MEAN[::-1]), std=(1 / 255,) * 3),
}


def preset_config(name: str, **overrides: Any) -> PCNNConfig:
    """The :class:`PCNNConfig` of a named preset, with keyword overrides."""
    if name not in MODEL_PRESETS:
        raise UsageError(f"unknown PCNN preset {name!r}; available: {', '.join(MODEL_PRESETS)}")
    params = {**MODEL_PRESETS[name], **overrides}
    return PCNNConfig(**params)


#: Architecture name (``PCNNConfig.arch``) → the class built from the config. :mod:`pcnn_fer.models.baselines`
#: registers the ablation baselines (imported by the package, so they are always there).
ARCHITECTURES: dict[str, Callable[[PCNNConfig], nn.Module]] = {"pcnn": PCNN}


def build_model(config: PCNNConfig) -> nn.Module:
    """The model of ``config.arch`` (PCNN or an ablation baseline) built from ``config``."""
    if config.arch not in ARCHITECTURES:
        raise UsageError(f"unknown architecture {config.arch!r}; available: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[config.arch](config)


def create_model(name: str = "paper", **overrides: Any) -> nn.Module:
    """Build a model from a preset name plus keyword overrides, e.g. ``create_model("compact", num_classes=8)``
    (a PCNN, or an ablation baseline for presets such as ``small-resnet``)."""
    return build_model(preset_config(name, **overrides))


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


__all__ = ["PCNN", "PCNNConfig", "REGIONS", "MODEL_PRESETS", "ARCHITECTURES", "build_model", "create_model",
           "preset_config", "count_parameters", "FaceRegions", "MDIM", "region_boxes", "occlusion_of"]
