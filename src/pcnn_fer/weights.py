"""Weights handling, kept apart from the architecture: our safetensors files, torchvision ResNet-18 state dicts
(e.g. MS-Celeb ``resnet18_msceleb.pth``) and official PCNN checkpoints. Pickled files are always read with
``torch.load(weights_only=True)``: no code is ever unpickled."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .classes import official_pcnn_classes
from .errors import PCNNError, UsageError
from .fileio import atomic_path, atomic_write
from .models.pcnn import PCNN, PCNNConfig, build_model
from .models.resnet import Trunk

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "pcnn_ferplus.safetensors"
#: Models shipped in the package, by the name ``load_model``/``--checkpoint``/``--init`` accept (docs/model-card.md).
BUNDLED_MODELS = {"default": DEFAULT_MODEL, "ferplus": DEFAULT_MODEL, "fer2013": ASSETS / "pcnn_fer2013.safetensors"}
CONFIG_KEY = "pcnn_config"


class WeightsError(PCNNError, ValueError):
    """A weights file that cannot be used: unreadable, wrong format, wrong shapes or class count."""


def _config_path(weights_path: Path) -> Path:
    return weights_path.with_suffix(".json")


def save_model(model: PCNN, path: str | Path, half: bool = False, extra: Mapping | None = None) -> Path:
    """Write ``model`` as ``path`` (safetensors, config in its metadata) plus ``path.json`` beside it, atomically.

    ``half`` stores fp16 tensors (BatchNorm counters stay int); ``extra`` adds JSON fields (e.g. metrics).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UsageError(f"model files end in .safetensors, got {path}")
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value
    config = model.config.to_dict()
    with atomic_path(path) as tmp:  # a failed write leaves the previous file and no temporary
        try:
            save_file(state, str(tmp), metadata={CONFIG_KEY: json.dumps(config)})
        except SafetensorError as e:  # the writer's I/O errors (a full disk) as the OSError they are, naming path
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
    info = {"format": "pcnn-fer", "weights": path.name, "config": config, **(dict(extra) if extra else {})}
    atomic_write(_config_path(path), json.dumps(info, indent=2))
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], PCNNConfig]:
    try:
        state = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    if CONFIG_KEY in metadata:
        source, config_dict = path, _parse_json(path, metadata[CONFIG_KEY], f"its {CONFIG_KEY} metadata")
    elif _config_path(path).exists():
        source = _config_path(path)
        sidecar = _parse_json(source, _read_text(source), "")
        if not isinstance(sidecar, dict) or not isinstance(sidecar.get("config"), dict):
            raise WeightsError(f"{source}: expected a JSON object with a 'config' object (the PCNN config of "
                               f"{path.name}), as save_model writes it")
        config_dict = sidecar["config"]
    else:
        raise WeightsError(f"{path}: no PCNN config in its metadata and no {_config_path(path).name} beside it")
    try:
        return state, PCNNConfig.from_dict(config_dict)
    except UsageError as e:
        raise WeightsError(f"{source}: bad PCNN config: {e}") from None


def _read_text(path: Path) -> str:
    """The text of ``path`` (WeightsError naming it when it cannot be read or is not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise WeightsError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _parse_json(path: Path, text: str, where: str) -> object:
    """``text`` parsed as JSON; a malformed one is a WeightsError naming ``path`` (and ``where`` in it)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        place = f" ({where})" if where else ""
        raise WeightsError(f"{path}{place}: malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def torch_load(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Load a pickled checkpoint safely (``weights_only=True``) and return its state dict (``state_dict`` unwrapped,
    ``module.`` prefixes removed)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no such weights file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for refused or corrupt pickles
        raise WeightsError(f"{path}: cannot be loaded safely with weights_only=True ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors (optionally under 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# --- torchvision ResNet-18 (e.g. MS-Celeb) ------------------------------------------------------------------------

_TRUNK_KEY = re.compile(r"^(conv1|bn1|layer[123])\.")


def load_resnet_trunks(model: nn.Module, state: Mapping[str, torch.Tensor] | str | Path) -> list[str]:
    """Initialise every trunk (PCNN's six, a baseline's one or six) and layer4 from a torchvision-format ResNet-18
    state dict (fc ignored).

    Returns the keys that were skipped because their shapes do not fit (e.g. conv1 with the lowres stem).
    """
    if not isinstance(state, Mapping):
        state = torch_load(state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if "layer4.0.conv1.weight" not in state or "layer3.0.conv1.weight" not in state:
        raise WeightsError("not a torchvision ResNet-18 state dict (no layer3/layer4 keys)")
    trunk_state = {k: v for k, v in state.items() if _TRUNK_KEY.match(k)}
    layer4_state = {k.removeprefix("layer4."): v for k, v in state.items() if k.startswith("layer4.")}
    skipped: list[str] = []
    trunks = [m for m in model.modules() if isinstance(m, Trunk)]  # PCNN's six, or a baseline's
    for module, sub in [*((t, trunk_state) for t in trunks), (model.layer4, layer4_state)]:
        own = module.state_dict()
        usable = {}
        for k, v in sub.items():
            if k not in own:
                raise WeightsError(f"unexpected ResNet key {k!r}")
            if own[k].shape != v.shape:
                skipped.append(k)
                continue
            usable[k] = v
        missing = set(own) - set(usable) - set(skipped)
        if missing:
            raise WeightsError(f"ResNet state dict lacks {sorted(missing)[:5]}")
        module.load_state_dict(usable, strict=False)
    skipped = sorted(set(skipped))
    if skipped:
        warnings.warn(f"ResNet weights with other shapes were not loaded: {skipped}", stacklevel=2)
    return skipped


# --- official PCNN checkpoints ----------------------------------------------------------------------------------

#: Official branch names → our modules (features1 = global trunk; features2/3/4/6/7 = x2, x3, x4, x6, x7 crops).
OFFICIAL_TRUNKS = {"features1": "global_trunk", "features2": "local_trunks.left_eye",
                   "features3": "local_trunks.right_eye", "features4": "local_trunks.left_cheek",
                   "features6": "local_trunks.right_cheek", "features7": "local_trunks.mouth"}
OFFICIAL_RESNETS = {"features1": "resnet", "features2": "resnet1", "features3": "resnet2", "features4": "resnet3",
                    "features6": "resnet5", "features7": "resnet6"}
OFFICIAL_HEADS = {"fc": "global_head", "fc2": "local_heads.left_eye", "fc3": "local_heads.right_eye",
                  "fc4": "local_heads.left_cheek", "fc6": "local_heads.right_cheek", "fc7": "local_heads.mouth"}
_OFFICIAL_CHILD = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3"}
_OFFICIAL_PREFIX = re.compile(r"^(resnet[1-6]?|features[1234678]|fc_loc|fc[2-7]?)\.")


def is_official_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    """True when a state dict has the official PCNN key layout."""
    return "fc_loc.0.weight" in state and ("features1.0.weight" in state or "resnet1.conv1.weight" in state)


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], crop_fractions: tuple[float, float, float] = (0.5, 0.65, 0.5)
) -> tuple[PCNNConfig, dict[str, torch.Tensor]]:
    """Translate an official PCNN state dict into (config, our state dict). Unknown keys are an error."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    unknown = [k for k in state if not _OFFICIAL_PREFIX.match(k)]
    if unknown:
        raise WeightsError(f"unknown keys for an official PCNN checkpoint: {unknown[:5]}")
    if "fc.weight" not in state:
        raise WeightsError("official PCNN checkpoint lacks fc.weight")
    num_classes = state["fc.weight"].shape[0]
    try:
        classes = official_pcnn_classes(num_classes)
    except ValueError as e:
        raise WeightsError(str(e)) from None
    ours: dict[str, torch.Tensor] = {}
    for official, target in OFFICIAL_TRUNKS.items():
        for child, name in _OFFICIAL_CHILD.items():
            for key, value in _subtree(state, f"{official}.{child}.", f"{OFFICIAL_RESNETS[official]}.{name}.").items():
                ours[f"{target}.{name}.{key}"] = value
    for key, value in _subtree(state, "features8.0.", "resnet.layer4.").items():
        ours[f"layer4.{key}"] = value
    for key, value in _subtree(state, "fc_loc.", None).items():
        ours[f"mdim.localization.{key}"] = value
    for official, target in OFFICIAL_HEADS.items():
        for key, value in _subtree(state, f"{official}.", None).items():
            ours[f"{target}.{key}"] = value
    hidden, flat = state["fc_loc.0.weight"].shape
    channels = state["fc.weight"].shape[1]
    grid = round((flat / channels) ** 0.5)
    config = PCNNConfig(num_classes=num_classes, width=channels / 512, stem="imagenet", crop_fractions=crop_fractions,
                        theta_init="official", stn_grid=grid, stn_hidden=hidden, input_size=224, classes=classes)
    return config, ours


def _subtree(state: Mapping[str, torch.Tensor], prefix: str, fallback: str | None) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` (prefix stripped); under ``fallback`` when the checkpoint lacks ``prefix``."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub and fallback is not None:
        sub = {k[len(fallback):]: v for k, v in state.items() if k.startswith(fallback)}
    if not sub:
        raise WeightsError(f"official PCNN checkpoint lacks keys under {prefix!r}")
    return sub


def _build(config: PCNNConfig, state: Mapping[str, torch.Tensor], source: str) -> PCNN:
    try:
        model = build_model(config)  # PCNN or an ablation baseline (config.arch)
    except ValueError as e:
        raise WeightsError(f"{source}: {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"{source}: state dict does not match the PCNN config "
                           f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise WeightsError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects "
                               f"{tuple(own[key].shape)} (wrong class count or width?)")
        # float weights cast to integers load and predict garbage; an integer counter (num_batches_tracked) stored
        # as a float, as official checkpoints and fp16 files do, is harmless and cast back
        if own[key].is_floating_point() and not value.is_floating_point() or value.is_complex():
            raise WeightsError(f"{source}: {key} holds {str(value.dtype).removeprefix('torch.')} values, the model "
                               "expects floating-point ones (a damaged or wrongly converted model)")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{source}: {key} holds NaN or infinite values (a diverged or damaged model)")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model.eval()


def resolve_model_path(spec: str | Path) -> Path:
    """The weights file behind ``spec``: a bundled model's name (``default``, ``fer2013``), a run directory
    (its ``model.safetensors``), a ``model.json`` sidecar, or a file path."""
    name = str(spec)
    if name in BUNDLED_MODELS:
        path = BUNDLED_MODELS[name]
        if not path.exists():
            raise WeightsError(f"the bundled model {name!r} is missing from this installation ({path})")
        return path
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.exists():
        raise WeightsError(f"no such model file: {path} (bundled models: {', '.join(BUNDLED_MODELS)})")
    return path


def load_model(path: str | Path = "default", device: str | torch.device = "cpu", **official_options) -> PCNN:
    """Load a ready PCNN in eval mode from a bundled model's name (``"default"``, ``"fer2013"``), a run directory,
    one of our ``.safetensors`` files, or an official PCNN checkpoint (``.pth``/``.pt``/``.tar``, weights_only)."""
    path = resolve_model_path(path)
    if path.suffix == ".safetensors":
        state, config = _read_safetensors(path)
        return _build(config, state, str(path)).to(device)
    state = torch_load(path)
    if is_official_checkpoint(state):
        try:
            config, ours = convert_official_state_dict(state, **official_options)
        except UsageError as e:  # e.g. crop fractions out of range
            raise WeightsError(f"{path}: {e}") from None
        return _build(config, ours, str(path)).to(device)
    is_pcnn = any(k.startswith("global_trunk") for k in state)
    if "layer4.0.conv1.weight" in state and "fc.weight" in state and not is_pcnn:
        raise WeightsError(f"{path} is a ResNet-18 backbone, not a PCNN: use it to initialise training "
                           "(pcnn train --init-resnet PATH) or pcnn_fer.weights.load_resnet_trunks")
    raise WeightsError(f"{path}: neither a pcnn-fer model nor an official PCNN checkpoint")
