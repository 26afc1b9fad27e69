"""dlib's face-recognition ResNet read into torch (pcnn_fer.dlib_weights) and PCNN on its trunks (--init dlib)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_folding_keeps_outputs

from pcnn_fer.dlib_weights import (
    DlibFormatError,
    find_dlib_model,
    load_dlib_resnet,
    load_dlib_trunks,
    parse_dlib_network,
)
from pcnn_fer.errors import UsageError
from pcnn_fer.models.dlib_resnet import DlibResNet, add_prev
from pcnn_fer.models.pcnn import create_model
from pcnn_fer.pretrained_trunks import calibrate_batchnorm

ASTRONAUT = Path(__file__).resolve().parents[1] / "src" / "pcnn_fer" / "assets" / "astronaut.png"


def _face_chips() -> list[np.ndarray]:
    """dlib's own 150×150 chips of the faces in the bundled sample photo (5-point landmarks, padding 0.25)."""
    dlib = pytest.importorskip("dlib")
    from PIL import Image

    models = find_dlib_model().parent
    image = np.array(Image.open(ASTRONAUT).convert("RGB"))
    faces = dlib.get_frontal_face_detector()(image, 1)
    assert len(faces) >= 1
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    return [dlib.get_face_chip(image, predictor(image, face), 150, 0.25) for face in faces]


def test_descriptor_matches_dlib_on_a_real_face_chip(dlib_file):
    dlib = pytest.importorskip("dlib")
    recognizer = dlib.face_recognition_model_v1(str(dlib_file))
    net = load_dlib_resnet(dlib_file)
    for chip in _face_chips():
        for image in (chip, np.ascontiguousarray(chip[:, ::-1])):  # each chip and its mirror image
            expected = np.array(recognizer.compute_face_descriptor(image))
            with torch.no_grad():
                ours = net(torch.from_numpy(image).permute(2, 0, 1)[None].float())[0].double().numpy()
            cosine = ours @ expected / np.linalg.norm(ours) / np.linalg.norm(expected)
            assert cosine >= 0.99999 and np.abs(ours - expected).max() <= 1e-5, (cosine, np.abs(ours - expected).max())


def test_the_file_is_read_layer_by_layer(dlib_file):
    network = parse_dlib_network(dlib_file)
    kinds = [layer.kind for layer in network.layers]
    assert len(kinds) == 108 and kinds.count("con") == 29 and kinds.count("add_prev") == 14
    assert network.chip_size == (150, 150) and network.distance_threshold == pytest.approx(0.6)
    assert sum(p.numel() for p in DlibResNet().parameters()) == 5_614_592


def test_broken_files_get_one_line_naming_the_file_and_place(dlib_file, tmp_path):
    data = dlib_file.read_bytes()
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlibFormatError, match=r"truncated\.dat: byte \d+: "):
        parse_dlib_network(truncated)
    other = tmp_path / "shape.dat"
    other.write_bytes((dlib_file.parent / "shape_predictor_5_face_landmarks.dat").read_bytes()[:4096])
    with pytest.raises(DlibFormatError, match=r"shape\.dat: byte \d+"):
        parse_dlib_network(other)
    first_con = data.index(b"con_4")
    # the first convolution's stride (after its 4736 parameters and the filter count, rows and columns) set to 3
    stride_at = first_con + 5 + 2 + 3 + 6 + 4736 * 4 + 6
    assert data[stride_at:stride_at + 2] == b"\x01\x02"
    bad = tmp_path / "stride.dat"
    bad.write_bytes(data[:stride_at] + b"\x01\x03" + data[stride_at + 2:])
    from pcnn_fer.dlib_weights import dlib_state_dict

    with pytest.raises(DlibFormatError, match=r"stride\.dat: layer 1 .*con with \{'stride_y': 3\}"):
        dlib_state_dict(parse_dlib_network(bad))
    with pytest.raises(DlibFormatError, match="cannot read"):
        parse_dlib_network(tmp_path / "missing.dat")


def test_add_prev_zero_pads_channels_rows_and_columns():
    a, b = torch.ones(1, 2, 3, 3), torch.full((1, 4, 4, 4), 2.0)
    out = add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(3).all() and out[0, 2:].eq(2).all() and out[0, :, 3].eq(2).all()


def test_pcnn_on_dlib_trunks_computes_dlibs_function_and_keeps_it_after_calibration(dlib_file):
    torch.manual_seed(0)
    model = create_model("dlib", num_classes=7).eval()
    same = load_dlib_resnet(dlib_file, geometry="same")
    file, lines, copied = load_dlib_trunks(model, dlib_file)
    assert file == dlib_file and copied == 6 * 126 + 48
    assert lines[0].startswith("global_trunk <- dlib stem") and any(line.startswith("layer4 <- dlib level1")
                                                                    for line in lines)
    x = torch.randn(6, 3, 112, 112)
    with torch.no_grad():
        reference = same.trunk(x)
        torch.testing.assert_close(model.global_trunk(x), reference, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.local_trunks["mouth"](x[..., 80:, :]), same.trunk(x[..., 80:, :]),
                                   atol=1e-4, rtol=1e-4)
        calibrate_batchnorm(model, x)
        torch.testing.assert_close(model.global_trunk(x), reference, atol=1e-3, rtol=1e-3)
        model.train()  # batch statistics of the calibration batch: the same function again
        torch.testing.assert_close(model.global_trunk(x), reference, atol=1e-3, rtol=1e-3)
    with pytest.raises(UsageError, match="needs a model on the dlib backbone"):
        load_dlib_trunks(create_model("tiny"), dlib_file)


def test_dlib_presets_and_baselines_run_at_48_and_112_pixels():
    for name in ("dlib", "dlib-resnet", "dlib-global", "dlib-nomdim"):
        model = create_model(name, num_classes=8).eval()
        for size in (48, 112):
            with torch.no_grad():
                logits, local, regions = model(torch.randn(2, 3, size, size), return_regions=True)
            assert logits.shape == local.shape == (2, 8) and regions.shape == (2, 5, 8)
    with pytest.raises(UsageError, match="width must be 1.0"):
        create_model("dlib", width=0.5)


@pytest.mark.slow
def test_train_init_dlib_records_the_layer_map(dlib_file, make_image_folder, tmp_path, run_cli):
    root = make_image_folder(tmp_path / "faces", per_class=4)
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "ferplus-dlib",
                              "--init", "dlib", "--epochs", "1", "--input-size", "48", "--batch-size", "8",
                              "--out", tmp_path / "run", "--no-progress"])
    assert code == 0, err
    assert "initialised from dlib's face-recognition ResNet" in out and "batch-norm statistics measured" in out
    info = json.loads((tmp_path / "run" / "model.json").read_text())
    init = info["training"]["init"]
    assert info["config"]["backbone"] == "dlib" and init["source"] == str(dlib_file)
    assert any(line.startswith("layer4 <- dlib level1") for line in init["layer_map"])
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--init", "dlib",
                            "--out", tmp_path / "bad", "--no-progress"])
    assert code == 1 and "needs a model on the dlib backbone" in err and len(err.strip().splitlines()) == 1


def test_inference_rewrite_of_a_dlib_pcnn_folds_its_norms_and_keeps_its_outputs():
    """``pcnn evaluate``, export and the torch backend run the BN-folded form; a dlib PCNN's shortcuts zero-pad their
    channels, so its eye and cheek trunks are not paired (pairing would mix the two halves)."""
    from pcnn_fer.models.dlib_resnet import Affine, DlibStem
    from pcnn_fer.models.fuse import _fold_norm

    torch.manual_seed(0)
    assert_folding_keeps_outputs(create_model("dlib", num_classes=8).eval(), size=112, tol=1e-5)
    stem = DlibStem("dlib", norm="affine").eval()
    stem.norm.weight.data.uniform_(0.5, 2.0)
    stem.norm.bias.data.uniform_(-1.0, 1.0)
    assert isinstance(stem.norm, Affine)
    image = torch.randn(1, 3, 40, 40)
    torch.testing.assert_close(_fold_norm(stem.conv, stem.norm)(image), stem.norm(stem.conv(image)))


def _dlib_int(value: int) -> bytes:
    """dlib's portable integer: a control byte (byte count, bit 7 the sign) and the little-endian magnitude."""
    magnitude = abs(value)
    body = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _dlib_header(margin: tuple[int, int] = (1, -1)) -> bytes:
    """The start of a face-recognition network file up to its first layer: loss layer, one add_layer, input layer."""
    text = (lambda t: _dlib_int(len(t)) + t.encode())  # noqa: E731
    real = (lambda m, e: _dlib_int(m) + _dlib_int(e))  # noqa: E731
    return (_dlib_int(1) + text("loss_metric_2") + real(*margin) + real(3, -2) + _dlib_int(3)
            + text("input_rgb_image_sized") + real(1, 7) * 3 + _dlib_int(150) * 2)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape, message", [((1, -8, 1, 1), "negative size"), ((-1, -1, 1, 4), "negative size"),
                                            ((1 << 30, 1 << 30, 1, 1), "larger than the rest of the file")])
def test_a_tensor_with_a_negative_or_huge_count_is_refused_not_a_hang(shape, message, tmp_path):
    """Issue 33 (hang): a 136-byte file whose tensor counts -8 elements moved the reader backwards forever."""
    body = _dlib_header() + _dlib_int(5) + b"con_4" + _dlib_int(2) + b"".join(map(_dlib_int, shape)) + b"\0" * 64
    crafted = tmp_path / "crafted.dat"
    crafted.write_bytes(body)
    with pytest.raises(DlibFormatError, match=rf"crafted\.dat: byte \d+: .*{message}"):
        parse_dlib_network(crafted)


@pytest.mark.timeout(300)
def test_train_init_with_the_crafted_file_is_one_line(make_image_folder, tmp_path, run_cli):
    """The hang reached from the command line: ``pcnn train --init FILE.dat``."""
    crafted = tmp_path / "crafted.dat"
    crafted.write_bytes(_dlib_header() + _dlib_int(5) + b"con_4" + _dlib_int(2)
                        + b"".join(map(_dlib_int, (1, -8, 1, 1))) + b"\0" * 64)
    root = make_image_folder(tmp_path / "faces", per_class=2)
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--model", "dlib",
                            "--input-size", "48", "--init", crafted, "--no-progress", "--out", tmp_path / "run"])
    assert code == 1 and "crafted.dat: byte " in err and "negative size" in err and "Traceback" not in err, err


def test_a_negative_byte_count_never_moves_the_reader_back():
    from pcnn_fer.dlib_weights import _Stream

    stream = _Stream(b"\x00" * 16, "x.dat")
    stream.pos = 8
    with pytest.raises(DlibFormatError, match="negative byte count"):
        stream.take(-4)
    assert stream.pos == 8


def test_a_header_float_out_of_range_is_one_line(tmp_path):
    """Issue 33 item 9: a margin of 1 · 2^5000 raised OverflowError from the float reader."""
    crafted = tmp_path / "overflow.dat"
    crafted.write_bytes(_dlib_header(margin=(1, 5000)) + b"\0" * 32)
    with pytest.raises(DlibFormatError, match=r"overflow\.dat: byte \d+: a float out of range"):
        parse_dlib_network(crafted)


def test_a_bz2_bomb_is_refused_without_decompressing_it_all(tmp_path):
    import bz2

    from pcnn_fer.dlib_weights import MAX_DLIB_FILE_BYTES

    bomb = tmp_path / "bomb.dat.bz2"
    bomb.write_bytes(bz2.compress(b"\0" * (MAX_DLIB_FILE_BYTES + (1 << 20)), 1))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(DlibFormatError, match=r"bomb\.dat\.bz2: decompresses to more than 64 MB"):
        parse_dlib_network(bomb)
    broken = tmp_path / "broken.dat.bz2"
    broken.write_bytes(bz2.compress(b"\0" * 1000)[:30])
    with pytest.raises(DlibFormatError, match=r"broken\.dat\.bz2: a broken bz2 file"):
        parse_dlib_network(broken)
