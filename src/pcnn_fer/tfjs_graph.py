"""Reader of TensorFlow.js graph models: ``model.json`` (topology + weights manifest) and its binary weight shards.

The JSON's ``modelTopology.node`` list is the TensorFlow GraphDef in JSON form (``name``, ``op``, ``input``,
``attr``); ``weightsManifest`` is a list of groups, each naming its shard files (``paths``, concatenated in order)
and its weights (``name``, ``shape``, ``dtype`` and an optional ``quantization``: ``float16``, or ``uint8`` /
``uint16`` with ``scale`` and ``min``), stored one after another from byte 0. Every count, shape, byte offset and
path is checked before it is used: the JSON's size, the number of nodes, groups, shards and weights, each weight's
element count (:data:`MAX_ELEMENTS`) and the shards' total size are bounded; shard paths must be plain file names
beside the JSON; every weight must lie inside its group's bytes and the bytes must be used exactly; float weights
must be finite. A broken, truncated or foreign file is one line naming the file and the weight or node
(:class:`TfjsFormatError`).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import PCNNError

#: Bounds on what a graph model may declare (FaceRes: 71 KB of JSON, 283 nodes, 128 weights, 7 MB of shards).
MAX_JSON_BYTES = 64 << 20
MAX_NODES = 100_000
MAX_GROUPS = 4096
MAX_SHARDS = 4096
MAX_WEIGHTS = 100_000
MAX_ELEMENTS = 1 << 26  # per weight
MAX_SHARD_BYTES = 1 << 30  # all shards together
MAX_DIMS = 8
#: Manifest dtype → numpy dtype of the stored values (before dequantisation).
_DTYPES = {"float32": np.float32, "int32": np.int32}
_QUANTIZED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


class TfjsFormatError(PCNNError, ValueError):
    """A file that is not a TensorFlow.js graph model this reader can take."""


@dataclass(frozen=True)
class GraphNode:
    """One node of the graph: its name, op, inputs (``:0`` suffixes and control inputs removed) and raw ``attr``."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: dict = field(repr=False)

    def where(self, source: str) -> str:
        """``source: node NAME (OP)`` for error messages."""
        return f"{source}: node {self.name} ({self.op})"


@dataclass(frozen=True)
class TfjsGraph:
    """A read graph model: the JSON's path, its nodes in file order, the decoded weights and the signature."""

    source: str
    nodes: list[GraphNode]
    weights: dict[str, np.ndarray]
    signature: dict


def _fail(message: str) -> TfjsFormatError:
    return TfjsFormatError(message)


def _read_json(path: Path) -> dict:
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise _fail(f"{source}: {size} bytes, more than a graph model's JSON may have ({MAX_JSON_BYTES})")
        text = path.read_bytes()
    except FileNotFoundError:
        raise _fail(f"{source}: no such file") from None
    except IsADirectoryError:
        raise _fail(f"{source}: a folder, not a model.json file") from None
    except OSError as e:
        raise _fail(f"{source}: cannot read ({e.strerror or e})") from None
    try:
        model = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(f"{source}: not JSON (line {e.lineno}: {e.msg}; truncated or damaged?)") from None
    except (UnicodeDecodeError, RecursionError):
        raise _fail(f"{source}: not a JSON text") from None
    if not isinstance(model, dict):
        raise _fail(f"{source}: not a TensorFlow.js model (the JSON is not an object)")
    if model.get("format") != "graph-model":
        raise _fail(f"{source}: format {model.get('format')!r}, only TensorFlow.js graph models are read")
    return model


def _nodes(source: str, topology) -> list[GraphNode]:
    nodes = topology.get("node") if isinstance(topology, dict) else None
    if not isinstance(nodes, list) or not nodes:
        raise _fail(f"{source}: modelTopology has no node list")
    if len(nodes) > MAX_NODES:
        raise _fail(f"{source}: {len(nodes)} nodes, more than {MAX_NODES}")
    out, seen = [], set()
    for index, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not isinstance(node.get("op"), str):
            raise _fail(f"{source}: node {index + 1} has no name or op")
        inputs = node.get("input", [])
        attr = node.get("attr", {})
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs) or not isinstance(attr, dict):
            raise _fail(f"{source}: node {node['name']} ({node['op']}): malformed inputs or attributes")
        if node["name"] in seen:
            raise _fail(f"{source}: node {node['name']} appears twice")
        seen.add(node["name"])
        data_inputs = tuple(i.split(":")[0] for i in inputs if not i.startswith("^"))
        out.append(GraphNode(node["name"], node["op"], data_inputs, attr))
    return out


def _spec(where: str, weight) -> tuple[str, list[int], str, dict | None]:
    if not isinstance(weight, dict) or not isinstance(weight.get("name"), str):
        raise _fail(f"{where}: a weight without a name")
    name, shape, dtype = weight["name"], weight.get("shape"), weight.get("dtype")
    where = f"{where}: weight {name}"
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ELEMENTS for d in shape)):
        raise _fail(f"{where}: impossible shape {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise _fail(f"{where}: {math.prod(shape)} elements, more than {MAX_ELEMENTS}")
    if dtype not in _DTYPES:
        raise _fail(f"{where}: dtype {dtype!r} is not one this reader takes ({', '.join(_DTYPES)})")
    quantization = weight.get("quantization")
    if quantization is not None:
        if not isinstance(quantization, dict) or quantization.get("dtype") not in _QUANTIZED:
            raise _fail(f"{where}: quantization {quantization!r} is not float16, uint8 or uint16")
        if quantization["dtype"] != "float16":
            affine = (quantization.get("scale"), quantization.get("min"))
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in affine):
                raise _fail(f"{where}: {quantization['dtype']} quantization without a finite scale and min")
    return name, shape, dtype, quantization


def _decode(where: str, raw: bytes, shape: list[int], dtype: str, quantization: dict | None) -> np.ndarray:
    stored = np.dtype(_QUANTIZED[quantization["dtype"]] if quantization else _DTYPES[dtype]).newbyteorder("<")
    values = np.frombuffer(raw, dtype=stored).reshape(shape)
    if quantization and quantization["dtype"] != "float16":
        values = values.astype(np.float32) * np.float32(quantization["scale"]) + np.float32(quantization["min"])
    values = values.astype(_DTYPES[dtype])
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise _fail(f"{where}: NaN or infinite values")
    return values


def _shard_bytes(folder: Path, source: str, group_index: int, paths) -> tuple[bytes, list[tuple[int, str]]]:
    """The group's shards concatenated, with (start offset, file name) of each."""
    where = f"{source}: weight group {group_index + 1}"
    if not isinstance(paths, list) or not paths or len(paths) > MAX_SHARDS:
        raise _fail(f"{where}: {len(paths) if isinstance(paths, list) else 'no'} shard paths")
    files = []
    for name in paths:
        if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
                or "\0" in name):
            raise _fail(f"{where}: shard path {name!r} is not a file name beside the JSON")
        files.append(folder / name)
    total, starts = 0, []
    for file in files:
        try:
            size = file.stat().st_size
        except OSError:
            raise _fail(f"{file}: shard of {source} not found") from None
        starts.append((total, str(file)))
        total += size
        if total > MAX_SHARD_BYTES:
            raise _fail(f"{file}: the shards of {source} pass {MAX_SHARD_BYTES} bytes")
    try:
        data = b"".join(file.read_bytes() for file in files)
    except OSError as e:
        raise _fail(f"{source}: cannot read a shard ({e.strerror or e})") from None
    if len(data) != total:
        raise _fail(f"{source}: a shard changed size while it was read")
    return data, starts


def _shard_at(starts: list[tuple[int, str]], offset: int) -> str:
    return [name for start, name in starts if start <= offset][-1] if starts else "?"


def _weights(path: Path, source: str, manifest) -> dict[str, np.ndarray]:
    if not isinstance(manifest, list) or not manifest or len(manifest) > MAX_GROUPS:
        raise _fail(f"{source}: weightsManifest is not a list of 1 … {MAX_GROUPS} weight groups")
    weights: dict[str, np.ndarray] = {}
    count = 0
    for group_index, group in enumerate(manifest):
        if not isinstance(group, dict) or not isinstance(group.get("weights"), list):
            raise _fail(f"{source}: weight group {group_index + 1} has no weights list")
        count += len(group["weights"])
        if count > MAX_WEIGHTS:
            raise _fail(f"{source}: more than {MAX_WEIGHTS} weights")
        data, starts = _shard_bytes(path.parent, source, group_index, group.get("paths"))
        offset = 0
        for weight in group["weights"]:
            name, shape, dtype, quantization = _spec(source, weight)
            itemsize = np.dtype(_QUANTIZED[quantization["dtype"]] if quantization else _DTYPES[dtype]).itemsize
            end = offset + math.prod(shape) * itemsize
            shard = _shard_at(starts, offset)
            if end > len(data):
                raise _fail(f"{shard}: weight {name} needs bytes {offset} … {end} of the shards, which hold "
                            f"{len(data)} (truncated?)")
            if name in weights:
                raise _fail(f"{source}: weight {name} is listed twice")
            weights[name] = _decode(f"{shard}: weight {name}", data[offset:end], shape, dtype, quantization)
            offset = end
        if offset != len(data):
            raise _fail(f"{_shard_at(starts, offset)}: {len(data) - offset} bytes after the last weight of "
                        f"{source} (not the shards it lists?)")
    return weights


def read_graph_model(path: str | Path) -> TfjsGraph:
    """The TensorFlow.js graph model whose ``model.json`` is at ``path`` (shards beside it), every bound checked."""
    path = Path(path)
    source = str(path)
    model = _read_json(path)
    nodes = _nodes(source, model.get("modelTopology"))
    weights = _weights(path, source, model.get("weightsManifest"))
    signature = model.get("signature") if isinstance(model.get("signature"), dict) else {}
    return TfjsGraph(source, nodes, weights, signature)


def attr_ints(where: str, node: GraphNode, key: str, default: list[int] | None = None) -> list[int]:
    """An ``attr`` list of ints (``{"list": {"i": ["1", "2", "2", "1"]}}``)."""
    value = node.attr.get(key)
    if value is None and default is not None:
        return default
    try:
        return [int(i) for i in value["list"].get("i", [])]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _fail(f"{where}: attribute {key} is not a list of integers") from None


def attr_string(where: str, node: GraphNode, key: str, default: str | None = None) -> str:
    """An ``attr`` string (base64 in the JSON: ``{"s": "U0FNRQ=="}`` is ``SAME``)."""
    value = node.attr.get(key)
    if value is None and default is not None:
        return default
    try:
        return base64.b64decode(value["s"], validate=True).decode("ascii")
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise _fail(f"{where}: attribute {key} is not a string") from None


def attr_strings(where: str, node: GraphNode, key: str) -> list[str]:
    """An ``attr`` list of strings (``fused_ops``: ``["BiasAdd", "Relu"]``)."""
    value = node.attr.get(key)
    if value is None:
        return []
    try:
        return [base64.b64decode(s, validate=True).decode("ascii") for s in value["list"].get("s", [])]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError):
        raise _fail(f"{where}: attribute {key} is not a list of strings") from None


def attr_bool(where: str, node: GraphNode, key: str) -> bool:
    """An ``attr`` boolean (false when absent)."""
    value = node.attr.get(key)
    if value is None:
        return False
    if not isinstance(value, dict) or not isinstance(value.get("b", False), bool):
        raise _fail(f"{where}: attribute {key} is not a boolean")
    return value.get("b", False)


__all__ = ["GraphNode", "MAX_ELEMENTS", "MAX_JSON_BYTES", "MAX_SHARD_BYTES", "TfjsFormatError", "TfjsGraph",
           "attr_bool", "attr_ints", "attr_string", "attr_strings", "read_graph_model"]
