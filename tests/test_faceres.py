"""FaceRes's TensorFlow.js graph read into torch (pcnn_fer.tfjs_graph, pcnn_fer.faceres_weights).

The reader's checks run on synthetic graph models written here (a FaceRes-shaped graph from a random FaceResNet, in
the converter's node pattern, fp16 shards; and small damaged manifests). Parity with the original graph runs tfjs's
pure-JavaScript CPU backend on real faces; it needs the user's FaceRes files (``PCNN_FACERES_DIR``), ``node`` and
``@tensorflow/tfjs`` on ``NODE_PATH``, and skips without them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import real_face_pixels

from pcnn_fer.engine.finetune import is_faceres_spec
from pcnn_fer.errors import UsageError
from pcnn_fer.faceres_weights import (
    FACERES_DIR_ENV,
    faceres_state_dict,
    find_faceres,
    load_faceres_net,
    load_faceres_trunks,
)
from pcnn_fer.models.faceres_net import FACERES_BGR_MEAN, FaceResNet, SamePad, layer_specs
from pcnn_fer.models.pcnn import create_model
from pcnn_fer.tfjs_graph import MAX_ELEMENTS, TfjsFormatError, read_graph_model

REFERENCE_JS = Path(__file__).with_name("tfjs_graph_reference.js")
OUTPUTS = ("conv_pw_13_relu/clip_by_value", "global_pooling/Mean", "feats/Relu", "gender_pred/Sigmoid",
           "age_pred/Softmax")


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(values: list[int]) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


class _GraphWriter:
    """Builds a tfjs graph-model JSON and its fp16 shard, node by node, as tfjs's converter lays FaceRes out."""

    def __init__(self) -> None:
        self.nodes: list[dict] = [{"name": "input_1", "op": "Placeholder", "attr": {}}]
        self.weights: list[tuple[str, np.ndarray]] = []

    def const(self, name: str, value: np.ndarray) -> str:
        self.nodes.insert(0, {"name": name, "op": "Const", "attr": {}})
        self.weights.append((name, np.asarray(value, np.float32)))
        return name

    def op(self, name: str, op: str, inputs: list[str], **attr) -> str:
        self.nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})
        return name

    def save(self, folder: Path, stem: str = "faceres") -> Path:
        data = b"".join(v.astype("<f2").tobytes() for _, v in self.weights)
        (folder / f"{stem}.bin").write_bytes(data)
        manifest = [{"paths": [f"{stem}.bin"], "weights": [
            {"name": n, "shape": list(v.shape), "dtype": "float32", "quantization": {"dtype": "float16"}}
            for n, v in self.weights]}]
        path = folder / f"{stem}.json"
        path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": self.nodes},
                                    "weightsManifest": manifest}))
        return path


def _write_faceres_like(folder: Path, net: FaceResNet) -> Path:
    """``net``'s weights as a FaceRes tfjs graph (pointwise kernels with the scale merged, a Mul after depthwise)."""
    g, previous = _GraphWriter(), "input_1"
    for name, kind, _, _, stride in layer_specs():
        conv = net.layer(name).conv
        weight, bias = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        conv_attr = {"strides": _ints([1, stride, stride, 1]), "padding": _s("SAME"), "data_format": _s("NHWC")}
        if kind == "dw":
            kernel = g.const(f"{name}/depthwise_kernel", weight.transpose(2, 3, 0, 1))
            out = g.op(f"{name}/depthwise", "DepthwiseConv2dNative", [previous, kernel], **conv_attr)
            out = g.op(f"{name}_bn/mul_1", "Mul", [out, g.const(f"{name}_bn/mul", np.ones(len(bias)))])
        else:
            kernel = g.const(f"{name}/merged_input", weight.transpose(2, 3, 1, 0))
            out = g.op(f"{name}_bn/mul_1", "Conv2D", [previous, kernel], **conv_attr)
        out = g.op(f"{name}_bn/add_1", "Add", [out, g.const(f"{name}_bn/sub", bias)])
        out = g.op(f"{name}_relu/Relu", "Relu", [out])
        out = g.op(f"{name}_relu/Minimum", "Minimum", [out, g.const(f"{name}_relu/Cast", np.array(6.0))])
        previous = g.op(f"{name}_relu/clip", "Maximum", [out, g.const(f"{name}_relu/Const_1", np.array(0.0))])
    mean = g.op("global_pooling/Mean", "Mean", [previous, g.const("global_pooling/axes", np.array([1, 2]))])
    for module, reads, fused in (("feats", mean, ["BiasAdd", "Relu"]), ("gender_pred", "feats/Relu", ["BiasAdd"]),
                                 ("age_pred", "feats/Relu", ["BiasAdd"])):
        dense = getattr(net, module)
        g.op("feats/Relu" if module == "feats" else f"{module}/BiasAdd", "_FusedMatMul",
             [reads, g.const(f"{module}/kernel", dense.weight.detach().numpy().T),
              g.const(f"{module}/bias", dense.bias.detach().numpy())],
             fused_ops={"list": {"s": [base64.b64encode(f.encode()).decode() for f in fused]}})
    g.op("gender_pred/Sigmoid", "Sigmoid", ["gender_pred/BiasAdd"])
    g.op("age_pred/Softmax", "Softmax", ["age_pred/BiasAdd"])
    return g.save(folder)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, FaceResNet]:
    """A FaceRes-shaped graph model written from a random FaceResNet whose weights are fp16 values."""
    torch.manual_seed(0)
    net = FaceResNet()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_((p * 0.5).half().float())
    return _write_faceres_like(tmp_path_factory.mktemp("faceres"), net), net


def test_synthetic_faceres_reads_back_exactly(synthetic):
    path, net = synthetic
    state = faceres_state_dict(path)
    assert state.keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value), key
    assert find_faceres(path.parent) == path


def _copy(path: Path, folder: Path) -> Path:
    folder.mkdir()
    for file in path.parent.iterdir():
        shutil.copy(file, folder / file.name)
    return folder / path.name


def _edit(path: Path, change) -> None:
    model = json.loads(path.read_text())
    change(model)
    path.write_text(json.dumps(model))


def _node(model: dict, name: str) -> dict:
    return next(n for n in model["modelTopology"]["node"] if n["name"] == name)


def _one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message and all(p in message for p in parts), message


def test_truncated_shard_names_the_file_and_weight(synthetic, tmp_path):
    path = _copy(synthetic[0], tmp_path / "t")
    shard = path.with_suffix(".bin")
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(TfjsFormatError) as e:
        faceres_state_dict(path)
    _one_line(e, "faceres.bin", "weight age_pred/kernel", "truncated")


def test_extra_bytes_missing_shard_and_foreign_paths(synthetic, tmp_path):
    path = _copy(synthetic[0], tmp_path / "x")
    shard = path.with_suffix(".bin")
    shard.write_bytes(shard.read_bytes() + b"\0" * 8)
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "faceres.bin", "8 bytes after the last weight")
    shard.unlink()
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "faceres.bin", "not found")
    for bad in ("../faceres.bin", "/etc/passwd", ""):
        _edit(path, lambda m, bad=bad: m["weightsManifest"][0].update(paths=[bad]))
        with pytest.raises(TfjsFormatError) as e:
            read_graph_model(path)
        _one_line(e, "is not a file name beside the JSON")


@pytest.mark.parametrize("shape, says", [([1 << 20, 1 << 20], "elements, more than"), ([-3], "impossible shape"),
                                         ([1] * 9, "impossible shape"), (["12"], "impossible shape")])
def test_absurd_counts_are_refused_before_reading(synthetic, tmp_path, shape, says):
    path = _copy(synthetic[0], tmp_path / "a")
    _edit(path, lambda m: m["weightsManifest"][0]["weights"][0].update(shape=shape))
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "faceres.json", "weight conv1/merged_input", says)
    assert MAX_ELEMENTS < (1 << 40)


def test_wrong_shape_stride_and_op_name_the_node(synthetic, tmp_path):
    path = _copy(synthetic[0], tmp_path / "w")
    original = path.read_text()

    # the same byte count, another shape: only the architecture check can see it
    _edit(path, lambda m: m["weightsManifest"][0]["weights"][0].update(shape=[3, 3, 32, 3]))
    with pytest.raises(TfjsFormatError) as e:
        faceres_state_dict(path)
    _one_line(e, "node conv1_bn/mul_1 (Conv2D)", "kernel [3, 3, 32, 3]", "conv1")

    path.write_text(original)
    _edit(path, lambda m: _node(m, "conv_dw_2/depthwise")["attr"].update(strides=_ints([1, 1, 1, 1])))
    with pytest.raises(TfjsFormatError) as e:
        faceres_state_dict(path)
    _one_line(e, "node conv_dw_2/depthwise (DepthwiseConv2dNative)", "stride 1", "stride 2")

    path.write_text(original)
    _edit(path, lambda m: _node(m, "conv_pw_5_relu/Relu").update(op="Sigmoid"))
    with pytest.raises(TfjsFormatError) as e:
        faceres_state_dict(path)
    _one_line(e, "node conv_pw_5_relu/Relu (Sigmoid)", "not one of FaceRes's layers")

    path.write_text(original)
    _edit(path, lambda m: _node(m, "conv_pw_5_relu/Minimum").update(input=["conv_pw_5_relu/Relu", "elsewhere"]))
    with pytest.raises(TfjsFormatError) as e:
        faceres_state_dict(path)
    _one_line(e, "node conv_pw_5_relu/Minimum (Minimum)", "input elsewhere is not a weight")


def test_nan_weights_and_damaged_json(synthetic, tmp_path):
    path = _copy(synthetic[0], tmp_path / "n")
    shard = path.with_suffix(".bin")
    data = bytearray(shard.read_bytes())
    data[0:2] = np.array([np.nan], "<f2").tobytes()
    shard.write_bytes(bytes(data))
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "faceres.bin: weight conv1/merged_input", "NaN")
    path.write_text(path.read_text()[:5000])
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "faceres.json", "not JSON")
    path.write_text(json.dumps({"format": "layers-model"}))
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "only TensorFlow.js graph models")
    with pytest.raises(TfjsFormatError) as e:
        find_faceres(tmp_path / "nowhere")
    _one_line(e, "no such file")


def test_same_padding_matches_tensorflow_on_even_and_odd_sizes():
    pad = SamePad(3, 2)
    assert pad(torch.zeros(1, 1, 224, 224)).shape[-2:] == (225, 225)  # one pixel, bottom and right
    assert pad(torch.zeros(1, 1, 7, 7)).shape[-2:] == (9, 9)  # two pixels, one each side
    assert SamePad(1, 1)(torch.zeros(1, 1, 5, 5)).shape[-2:] == (5, 5)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(pad(x)[0, 0, :4, :4], x[0, 0]) and pad(x)[0, 0, 4].abs().sum() == 0


@pytest.fixture(scope="module")
def faceres_json() -> Path:
    """The user's faceres.json (``$PCNN_FACERES_DIR``); skips when it is not set."""
    if not os.environ.get(FACERES_DIR_ENV):
        pytest.skip(f"{FACERES_DIR_ENV} is not set (FaceRes's files are not bundled)")
    return find_faceres()


def _tfjs_available() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    probe = subprocess.run([node, "-e", "require('@tensorflow/tfjs')"], capture_output=True, timeout=60)
    if probe.returncode:
        pytest.skip("@tensorflow/tfjs is not on NODE_PATH (npm install @tensorflow/tfjs)")


@pytest.mark.slow
def test_matches_the_tfjs_graph_on_real_faces(faceres_json, tmp_path):
    _tfjs_available()
    pixels = real_face_pixels(224)
    graph_input = np.ascontiguousarray(pixels[..., ::-1] - np.float32(FACERES_BGR_MEAN), np.float32)
    graph_input.tofile(tmp_path / "input.f32")
    run = subprocess.run(["node", str(REFERENCE_JS), str(faceres_json), str(tmp_path / "input.f32"),
                          *map(str, graph_input.shape), str(tmp_path / "out"), *OUTPUTS],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = [np.fromfile(tmp_path / f"out.{k}.f32", np.float32).reshape(
        json.loads((tmp_path / f"out.{k}.json").read_text())) for k in range(len(OUTPUTS))]
    net = load_faceres_net(faceres_json)
    with torch.no_grad():
        conv_map = net.features(torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))))
        ours = [conv_map.permute(0, 2, 3, 1), *net.heads(conv_map)]
    # fp16 weights decoded to the same fp32 values on both sides: only fp32 summation order differs.
    for name, a, b, tol in zip(OUTPUTS, ours, expected, (1e-3, 1e-4, 1e-4, 1e-5, 1e-5)):
        assert a.shape == b.shape, name
        assert np.abs(a.numpy() - b).max() <= tol, (name, np.abs(a.numpy() - b).max())


def test_pcnn_on_faceres_trunks_computes_faceres_function(synthetic):
    path, net = synthetic
    model = create_model("faceres", num_classes=7).eval()
    file, lines, copied = load_faceres_trunks(model, path)
    assert file == path and copied == 6 * 23 * 2 + 4 * 2
    assert lines[0].startswith("global_trunk <- FaceRes conv1") and any(
        line.startswith("layer4 <- FaceRes conv_dw_12") for line in lines)
    pixels = torch.rand(2, 3, 224, 224) * 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.config.mean, model.config.std))
    with torch.no_grad():
        reference = net.trunk(net.graph_input(pixels))  # FaceRes on BGR minus the means
        torch.testing.assert_close(model.global_trunk((pixels / 255 - mean) / std), reference, atol=1e-4, rtol=1e-4)
        assert reference.shape == (2, 512, 14, 14) and model.layer4(reference).shape == (2, 1024, 7, 7)
        torch.testing.assert_close(model.layer4(reference), net.head(reference))
    with pytest.raises(UsageError, match="needs a model on the FaceRes backbone"):
        load_faceres_trunks(create_model("tiny"), path)


def test_faceres_presets_and_baselines_run_and_keep_the_cheek_crops():
    for name in ("faceres", "faceres-resnet", "faceres-global", "faceres-nomdim"):
        model = create_model(name, num_classes=8).eval()
        with torch.no_grad():
            logits, local, regions = model(torch.randn(1, 3, 224, 224), return_regions=True)
        assert logits.shape == local.shape == (1, 8) and regions.shape == (1, 5, 8)
    model = create_model("faceres").eval()
    crops = model.regions(torch.zeros(1, 3, 224, 224))
    with torch.no_grad():
        assert model.local_trunks["left_cheek"](crops[2]).shape[-2:] == (3, 7)  # 33 rows at stride 16, SAME
    with pytest.raises(UsageError, match="width must be 1.0"):
        create_model("faceres", width=0.5)


@pytest.mark.slow
def test_train_init_faceres_records_the_layer_map(synthetic, make_image_folder, tmp_path, run_cli):
    path, _ = synthetic
    root = make_image_folder(tmp_path / "faces", per_class=2)
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--model", "faceres",
                              "--init", path, "--epochs", "1", "--input-size", "48", "--batch-size", "4",
                              "--max-steps", "1", "--out", tmp_path / "run", "--no-progress"])
    assert code == 0, err
    assert "initialised from HSE's FaceRes" in out
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    assert info["config"]["backbone"] == "faceres" and info["training"]["init"]["source"] == str(path)
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--init",
                            tmp_path / "missing" / "faceres.json", "--out", tmp_path / "bad", "--no-progress"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err


def test_a_trained_models_json_sidecar_is_not_taken_for_faceres(synthetic, tmp_path):
    path, _ = synthetic
    assert is_faceres_spec(path) and is_faceres_spec("faceres")
    sidecar = tmp_path / "model.json"
    sidecar.write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert not is_faceres_spec(sidecar) and not is_faceres_spec(tmp_path / "missing.json")


def test_affine_quantized_and_multi_shard_weights_decode_as_tfjs_does(tmp_path):
    q = np.array([0, 1, 255], np.uint8)
    (tmp_path / "a.bin").write_bytes(q.tobytes() + np.array([7], "<i4").tobytes()[:2])
    (tmp_path / "b.bin").write_bytes(np.array([7], "<i4").tobytes()[2:])  # a weight may span two shards
    manifest = [{"paths": ["a.bin", "b.bin"], "weights": [
        {"name": "q", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "i", "shape": [], "dtype": "int32"}]}]
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": [{"name": "x", "op": "Const"}]},
                                "weightsManifest": manifest}))
    graph = read_graph_model(path)
    np.testing.assert_array_equal(graph.weights["q"], np.array([-1.0, -0.5, 126.5], np.float32))
    assert graph.weights["i"].dtype == np.int32 and int(graph.weights["i"]) == 7
    manifest[0]["weights"][0]["quantization"] = {"dtype": "uint8", "scale": float("inf"), "min": 0}
    path.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": [{"name": "x", "op": "Const"}]},
                                "weightsManifest": manifest}).replace("Infinity", "1e999"))
    with pytest.raises(TfjsFormatError) as e:
        read_graph_model(path)
    _one_line(e, "weight q", "without a finite scale")
