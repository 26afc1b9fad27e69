"""Reader of dlib's serialized face-recognition network (``dlib_face_recognition_resnet_model_v1.dat``) into torch.

The file is ``dlib::serialize`` of ``anet_type`` (dlib's ``examples/dnn_face_recognition_ex.cpp``), written with
dlib's portable encoding:

* an integer is a control byte (low nibble: byte count, bit 7: sign) followed by that many little-endian bytes;
* a string is its length (an integer) and its bytes; a bool is one ASCII byte, ``'0'`` or ``'1'``;
* a float is ``float_details``: two integers, mantissa and exponent (value = mantissa · 2^exponent);
* a tensor is version 2, its shape (num_samples, k, nr, nc) and the values as raw little-endian float32;
  an ``alias_tensor`` (a view into a layer's ``params``) is version 1 and its shape.

The network nests: the loss layer (version, ``loss_metric_2``, margin, distance threshold) comes first, then one
version integer per wrapper (``add_layer`` 2, the innermost 3, ``add_tag_layer``/``add_skip_layer`` 1), then the
input layer and then, innermost first and so in forward order, each layer's own record followed by its wrapper's
state (three bools and three empty tensors; the innermost one adds its sample expansion factor, 1). The layer
records read here are ``con_4``, ``affine_``, ``relu_``, ``max_pool_2``, ``avg_pool_2``, ``add_prev_`` and ``fc_2``.
Tags and skips carry no data: which tensors the ``add_prev`` layers add is fixed by the architecture, which
:mod:`pcnn_fer.models.dlib_resnet` builds and this reader checks the file against, layer by layer (kind, shape,
stride, padding).
"""

from __future__ import annotations

import bz2
import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import PCNNError, UsageError
from .models.dlib_resnet import DLIB_PIXEL_MEAN, LEVEL_NAMES, LEVELS, DlibResNet
from .pretrained_trunks import TRUNK_LAYER_MAP, copy_trunks

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class DlibFormatError(PCNNError, ValueError):
    """A file that is not dlib's face-recognition ResNet as this reader knows it."""


@dataclass
class DlibLayer:
    """One layer record of the file: its kind (``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``,
    ``add_prev``, ``fc``), integer fields, and tensors (``params`` split into named views)."""

    kind: str
    offset: int  # byte offset of the record in the file
    ints: dict[str, int] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


class _Stream:
    """A cursor over dlib's serialized bytes; every read names the byte offset when the file is off."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data, self.pos, self.source = data, 0, source

    def fail(self, message: str) -> DlibFormatError:
        return DlibFormatError(f"{self.source}: byte {self.pos}: {message}")

    def take(self, n: int) -> bytes:
        if n < 0:
            raise self.fail(f"a negative byte count ({n})")
        if self.pos + n > len(self.data):
            raise self.fail(f"the file ends early (needed {n} more bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def integer(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"not a dlib integer (control byte {control:#04x})")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def peek_integer(self) -> int:
        pos = self.pos
        value = self.integer()
        self.pos = pos
        return value

    def string(self) -> str:
        size = self.integer()
        if not 0 <= size <= 256:
            raise self.fail(f"implausible string length {size}")
        try:
            return self.take(size).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name that is not ASCII") from None

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        try:
            value = math.ldexp(mantissa, exponent)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise self.fail(f"a float out of range (mantissa {mantissa}, exponent {exponent})")
        return value

    def boolean(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"not a dlib bool ({byte!r})")
        return byte == b"1"

    def shape(self, version: int) -> tuple[int, int, int, int]:
        found = self.integer()
        if found != version:
            raise self.fail(f"tensor version {found}, expected {version}")
        n, k, nr, nc = (self.integer() for _ in range(4))
        if min(n, k, nr, nc) < 0:
            raise self.fail(f"a tensor with a negative size {(n, k, nr, nc)}")
        return n, k, nr, nc

    def tensor(self) -> np.ndarray:
        shape = self.shape(2)
        count = math.prod(shape)
        if 4 * count > len(self.data) - self.pos:
            raise self.fail(f"a tensor of shape {shape} ({count} floats) is larger than the rest of the file")
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape)


def _wrapper_state(s: _Stream) -> None:
    """Skip an ``add_layer``'s own state after its layer: three bools and three (empty) gradient/output tensors."""
    for _ in range(3):
        s.boolean()
    for _ in range(3):
        s.tensor()


def _split(s: _Stream, params: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read one alias-tensor shape per name and cut those views out of ``params`` in order."""
    flat, start, views = params.reshape(-1), 0, {}
    for name in names:
        shape = s.shape(1)
        size = math.prod(shape)
        if start + size > flat.size:
            raise s.fail(f"the view {name} of shape {shape} is larger than its {flat.size} parameters")
        views[name] = flat[start:start + size].reshape(shape)
        start += size
    if start != flat.size:
        raise s.fail(f"the views {names} cover {start} of {flat.size} parameters")
    return views


_POOL_FIELDS = ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")


def _layer(s: _Stream) -> DlibLayer:
    """One layer record (its name first) and its wrapper's state."""
    offset, name = s.pos, s.string()
    layer = DlibLayer(name.rstrip("_0123456789"), offset)
    if name == "con_4":
        params = s.tensor()
        layer.ints = {k: s.integer() for k in ("filters", *_POOL_FIELDS)}
        layer.tensors = _split(s, params, ("weight", "bias"))
        [s.real() for _ in range(4)]  # learning-rate and weight-decay multipliers
    elif name == "affine_":
        params = s.tensor()
        layer.tensors = _split(s, params, ("weight", "bias"))
        layer.ints = {"mode": s.integer()}
    elif name == "fc_2":
        layer.ints = {"outputs": s.integer(), "inputs": s.integer()}
        params = s.tensor()
        views = _split(s, params, ("weight", "bias"))
        layer.ints["bias_mode"] = s.integer()
        [s.real() for _ in range(4)]
        layer.tensors = {"weight": views["weight"]}
    elif name in ("max_pool_2", "avg_pool_2"):
        layer.ints = {k: s.integer() for k in _POOL_FIELDS}
    elif name not in ("relu_", "add_prev_"):
        raise s.fail(f"layer {name!r} is not part of dlib's face-recognition ResNet")
    _wrapper_state(s)
    return layer


@dataclass
class DlibNetwork:
    """The parsed file: the input layer's normalisation, the loss layer's settings and the layers in forward order."""

    source: str
    pixel_mean: tuple[float, float, float]
    chip_size: tuple[int, int]
    margin: float
    distance_threshold: float
    layers: list[DlibLayer]


#: dlib's face-recognition ResNet is 22.5 MB; a file (or a ``.bz2`` expanding to one) beyond this is refused unread.
MAX_DLIB_FILE_BYTES = 64 << 20


def _bunzip_bounded(data: bytes, path: Path) -> bytes:
    """``data`` bz2-decompressed, refusing output beyond :data:`MAX_DLIB_FILE_BYTES` (a bz2 bomb)."""
    decompressor = bz2.BZ2Decompressor()
    try:
        out = decompressor.decompress(data, max_length=MAX_DLIB_FILE_BYTES + 1)
    except (OSError, ValueError) as e:
        raise DlibFormatError(f"{path}: a broken bz2 file ({e})") from None
    if len(out) > MAX_DLIB_FILE_BYTES:
        raise DlibFormatError(f"{path}: decompresses to more than {MAX_DLIB_FILE_BYTES >> 20} MB: not dlib's "
                              "face-recognition ResNet (22 MB)")
    if not decompressor.eof:
        raise DlibFormatError(f"{path}: a broken bz2 file (it ends early)")
    return out


def parse_dlib_network(path: str | Path) -> DlibNetwork:
    """Parse a dlib face-recognition ResNet ``.dat`` file (or its ``.bz2`` download) into its layer records."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_DLIB_FILE_BYTES + 1)
    except OSError as e:
        raise DlibFormatError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:3] == b"BZh":
        data = _bunzip_bounded(data, path)
    if len(data) > MAX_DLIB_FILE_BYTES:
        raise DlibFormatError(f"{path}: larger than {MAX_DLIB_FILE_BYTES >> 20} MB: not dlib's face-recognition "
                              "ResNet (22 MB)")
    s = _Stream(data, str(path))
    s.integer()
    if (loss := s.string()) != "loss_metric_2":
        raise s.fail(f"loss layer {loss!r}, expected loss_metric_2 (dlib's face-recognition network)")
    margin, threshold = s.real(), s.real()
    wrappers = 0
    while s.peek_integer() in (1, 2, 3):  # one version per wrapper; the input layer's name length (21) ends them
        wrappers += s.integer() >= 2  # add_layer 2 (3 for the one holding the input layer), tag/skip 1
    if (name := s.string()) != "input_rgb_image_sized":
        raise s.fail(f"input layer {name!r}, expected input_rgb_image_sized")
    mean = (s.real(), s.real(), s.real())
    chip = (s.integer(), s.integer())
    layers = [_layer(s)]
    if (expansion := s.integer()) != 1:  # the innermost add_layer also stores its sample expansion factor
        raise s.fail(f"sample expansion factor {expansion}, expected 1")
    while s.pos < len(data):
        layers.append(_layer(s))
    if len(layers) != wrappers:
        raise DlibFormatError(f"{path}: {wrappers} layers announced, {len(layers)} read")
    return DlibNetwork(str(path), mean, chip, margin, threshold, layers)


def _expected_layers() -> Iterator[tuple[str, str | None, dict[str, int]]]:
    """(kind, DlibResNet module name or None, integer fields to check) of every layer, in forward order."""
    yield "con", "trunk.stem.conv", {"filters": 32, "nr": 7, "stride_y": 2, "pad_y": 0}
    yield "affine", "trunk.stem.norm", {}
    yield "relu", None, {}
    yield "max_pool", None, {"nr": 3, "stride_y": 2, "pad_y": 0}
    for index, (name, (channels, blocks, strided)) in enumerate(zip(LEVEL_NAMES, LEVELS)):
        parent = "trunk" if index < 3 else "head"
        for b in range(blocks):
            stride = 2 if strided and b == 0 else 1
            prefix = f"{parent}.{name}.{b}"
            yield "con", f"{prefix}.conv1", {"filters": channels, "nr": 3, "stride_y": stride,
                                             "pad_y": 1 if stride == 1 else 0}
            yield "affine", f"{prefix}.norm1", {}
            yield "relu", None, {}
            yield "con", f"{prefix}.conv2", {"filters": channels, "nr": 3, "stride_y": 1, "pad_y": 1}
            yield "affine", f"{prefix}.norm2", {}
            if stride == 2:
                yield "avg_pool", None, {"nr": 2, "stride_y": 2, "pad_y": 0}
            yield "add_prev", None, {}
            yield "relu", None, {}
    yield "avg_pool", None, {"nr": 0, "nc": 0}  # avg_pool_everything
    yield "fc", "fc", {"outputs": 128, "bias_mode": 1}


def dlib_state_dict(network: DlibNetwork) -> dict[str, torch.Tensor]:
    """The parsed layers as a :class:`~pcnn_fer.models.dlib_resnet.DlibResNet` state dict, after checking every
    layer's kind, shape, stride and padding against the architecture."""
    expected = list(_expected_layers())
    if len(expected) != len(network.layers):
        raise DlibFormatError(f"{network.source}: {len(network.layers)} layers, dlib's face-recognition ResNet has "
                              f"{len(expected)}")
    if any(abs(a - b) > 1e-3 for a, b in zip(network.pixel_mean, DLIB_PIXEL_MEAN)):
        raise DlibFormatError(f"{network.source}: input mean {network.pixel_mean}, expected {DLIB_PIXEL_MEAN}")
    state: dict[str, torch.Tensor] = {}
    for i, (layer, (kind, module, checks)) in enumerate(zip(network.layers, expected)):
        where = f"{network.source}: layer {i + 1} (byte {layer.offset})"
        if layer.kind != kind:
            raise DlibFormatError(f"{where}: a {layer.kind} layer where the architecture has {kind}")
        wrong = {k: layer.ints.get(k) for k, v in checks.items() if layer.ints.get(k) != v}
        if wrong:
            raise DlibFormatError(f"{where}: {kind} with {wrong}, expected {checks}")
        if module is None:
            continue
        for name, value in layer.tensors.items():
            tensor = torch.from_numpy(value.copy())
            if kind == "con" and name == "bias" or kind == "affine":
                tensor = tensor.reshape(-1)
            elif kind == "fc":
                tensor = tensor.reshape(value.shape[0], value.shape[1]).t().contiguous()  # dlib: x · W
            state[f"{module}.{name}"] = tensor
    return state


def find_dlib_model() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` inside the installed ``face_recognition_models``
    (found without importing it: the package imports ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "models" / DLIB_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise DlibFormatError(f"{DLIB_MODEL_FILE} not found: install face-recognition-models "
                          "(pip install 'pcnn-fer[faces]') or pass the file's path")


def load_dlib_resnet(path: str | Path | None = None, geometry: str = "dlib") -> DlibResNet:
    """dlib's face-recognition ResNet with its weights, from ``path`` or the installed ``face_recognition_models``."""
    network = parse_dlib_network(path or find_dlib_model())
    model = DlibResNet(geometry)  # type: ignore[arg-type]
    model.load_state_dict(dlib_state_dict(network))
    return model.eval()


#: Our module prefix → dlib's part copied into it (the map every face-pretrained start shares).
DLIB_LAYER_MAP = TRUNK_LAYER_MAP
_DLIB_PARTS = {"trunk": "stem (con 7×7/2, affine, max_pool) + level4 (3 × 32) + level3 (4 × 64) + level2 (3 × 128)",
               "head": "level1 (3 × 256) + level0 (1 × 256)"}


def load_dlib_trunks(model: nn.Module, path: str | Path | None = None,
                     calibration: torch.Tensor | None = None) -> tuple[Path, list[str], int]:
    """Copy dlib's face-recognition weights into every trunk and layer4 of a ``backbone="dlib"`` model; returns
    the file used, the layer mapping (one line per module; dlib's 128-d descriptor layer is not used) and the
    number of tensors copied.

    The model's batch norms take each ``affine`` as ``weight``/``bias`` with mean 0 and variance 1 - eps, so that in
    eval mode they compute dlib's function exactly; with ``calibration`` (a normalised image batch of the training
    faces) their statistics are then measured on it (``calibrate_batchnorm``), so that training-mode batch
    statistics start close to that function too.
    """
    config = getattr(model, "config", None)
    if getattr(config, "backbone", None) != "dlib":
        raise UsageError(f"--init dlib needs a model on the dlib backbone (e.g. --model dlib), got backbone "
                         f"{getattr(config, 'backbone', '?')!r}")
    file = Path(path) if path else find_dlib_model()
    source = dlib_state_dict(parse_dlib_network(file))
    lines, copied = copy_trunks(model, lambda key, like: _dlib_value(source, key, like), "dlib", _DLIB_PARTS,
                                "dlib fc_no_bias 256 -> 128 (the face descriptor)", calibration)
    return file, lines, copied


def _dlib_value(source: dict[str, torch.Tensor], key: str, like: torch.Tensor) -> torch.Tensor:
    """The tensor ``key`` of dlib's state dict; a batch norm's running statistics make it dlib's affine."""
    if key.endswith(".running_mean"):
        return torch.zeros_like(like)
    if key.endswith(".running_var"):
        return torch.full_like(like, 1.0 - BATCHNORM_EPS)
    return source[key].to(like.dtype)


BATCHNORM_EPS = nn.BatchNorm2d(1).eps


__all__ = ["DLIB_LAYER_MAP", "DLIB_MODEL_FILE", "DlibFormatError", "DlibLayer", "DlibNetwork", "dlib_state_dict",
           "find_dlib_model", "load_dlib_resnet", "load_dlib_trunks", "parse_dlib_network"]
