"""Face pipeline parts: robust image decoding, detectors, the FER2013 alignment template and alignment."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ASTRONAUT_FACE, SAMPLES, needs_samples
from PIL import Image

from pcnn_fer.errors import UsageError
from pcnn_fer.faces.align import (
    BOX_TEMPLATES,
    LANDMARK_TEMPLATES,
    TEMPLATE_5PT,
    TEMPLATE_MOUTH,
    TEMPLATE_YUNET,
    align_face,
    apply_affine,
    convert_box,
    similarity_transform,
)
from pcnn_fer.faces.detect import (
    AutoDetector,
    Detection,
    DlibAutoDetector,
    DlibHOGDetector,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    create_detector,
    dlib_available,
)
from pcnn_fer.faces.detect import (
    box_iou as iou,
)
from pcnn_fer.faces.imageio import ImageLoadError, load_image
from pcnn_fer.faces.yunet import YuNetDetector
from pcnn_fer.models.pcnn import FaceRegions, preset_config

ROOT = Path(__file__).resolve().parents[1]


def on_face(box, face=ASTRONAUT_FACE, min_iou: float = 0.5) -> bool:
    """The box overlaps the known face region and its centre lies inside it."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return iou(box, face) >= min_iou and face[0] < cx < face[2] and face[1] < cy < face[3]


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """The astronaut sample as RGB uint8."""
    if not (SAMPLES / "astronaut.png").is_file():
        pytest.skip(f"sample photos not found in {SAMPLES}")
    return np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    """The default detector (YuNet + 5 landmarks)."""
    return create_detector("auto")


@pytest.fixture(scope="module")
def dlib_auto() -> FaceDetector:
    """The dlib chain (HOG + 5 landmarks, the CNN when HOG finds nothing), the default before YuNet."""
    if not dlib_available():
        pytest.skip("dlib and face-recognition-models are not installed")
    return create_detector("dlib-auto")


# --- imageio ----------------------------------------------------------------------------------------------------

def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height (1-bit gray) followed by a tiny (incomplete) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(9000, 8000), (20000, 20000)])
def test_huge_image_is_refused_before_decoding(tmp_path, size):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_with_size(*size))
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (300, 200)).save(path)
    assert load_image(path, max_pixels=60_000).shape == (200, 300, 3)
    with pytest.raises(ImageLoadError, match="exceeds the limit"):
        load_image(path, max_pixels=59_999)


def test_bad_files_give_reasons(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 30, 200)).save(buf, "PNG", compress_level=0)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases = {text: "not an image", empty: "empty", truncated: "truncated", tmp_path / "missing.png": "no such file",
             tmp_path: "directory"}
    for path, words in cases.items():
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        assert words in info.value.reason, (path, info.value.reason)


def test_modes_become_rgb_uint8(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 … 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    g16 = load_image(tmp_path / "g16.png")
    assert g16.dtype == np.uint8 and g16.shape == (64, 64, 3)
    assert (g16[0, 0, 0], g16[16, 0, 0], g16.max()) == (0, 64, 255)  # 16-bit values ÷ 257
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, ..., 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[7, 7]) == (255, 255, 255)
    Image.new("1", (5, 5), 1).save(tmp_path / "bw.png")
    assert load_image(tmp_path / "bw.png").min() == 255
    Image.new("CMYK", (6, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = load_image(tmp_path / "c.jpg")[3, 3]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    assert load_image(np.ones((4, 4), np.float32) * 0.5)[0, 0, 0] == 128
    assert load_image(Image.new("LA", (3, 3), (10, 255)))[0, 0].tolist() == [10, 10, 10]


@needs_samples
def test_real_variants_still_detect(tmp_path, astronaut, detector):
    """16-bit, CMYK, palette, RGBA and EXIF-rotated versions of the photo: decoded upright, face found."""
    img = Image.fromarray(astronaut)
    gray16 = (np.asarray(img.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    img.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    img.quantize(128).save(tmp_path / "palette.png")
    rgba = img.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(tmp_path / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": store the pixels turned counter-clockwise
    img.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert Image.open(tmp_path / "palette.png").mode == "P" and Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    for name in ("gray16.png", "cmyk.jpg", "palette.png", "rgba.png", "rotated.jpg"):
        rgb = load_image(tmp_path / name)
        assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8, name
        faces = detector.detect(rgb)
        assert len(faces) == 1 and on_face(faces[0].box), (name, [f.box for f in faces])
    sideways = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"))  # pixels as stored, no EXIF
    assert not any(on_face(f.box) for f in detector.detect(sideways))


# --- detection ----------------------------------------------------------------------------------------------------

@needs_samples
def test_default_detector_is_yunet_on_samples(astronaut, detector):
    """auto = YuNet: one face on the astronaut with eye centres, nose tip and mouth corners where they are in the
    photo (image-left first), the cameraman of camera.png found in one pass, nothing on the cat."""
    from pcnn_fer.faces.detect import detect_traced

    assert isinstance(detector, AutoDetector) and isinstance(detector.primary, YuNetDetector) and not detector.note
    faces = detector.detect(astronaut)
    assert len(faces) == 1 and on_face(faces[0].box, min_iou=0.6) and faces[0].detector == "yunet"
    (left_eye, right_eye, nose, left_mouth, right_mouth) = faces[0].landmarks
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < nose[0] < right_mouth[0]
    assert 95 < (left_eye[1] + right_eye[1]) / 2 < 112 < nose[1] < (left_mouth[1] + right_mouth[1]) / 2 < 150
    camera = np.asarray(Image.open(SAMPLES / "camera.png").convert("RGB"))
    found, tried = detect_traced(detector, camera)
    assert tried == ["yunet 2x"] and len(found) == 1  # 0.26 MP is run at about 1 MP
    x1, y1, x2, y2 = found[0].box
    assert 175 < (x1 + x2) / 2 < 270 and 105 < (y1 + y2) / 2 < 200  # the cameraman's face
    cat = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB"))
    assert detector.detect(cat) == []


@needs_samples
def test_dlib_detector_on_samples(astronaut, dlib_auto):
    faces = dlib_auto.detect(astronaut)
    assert len(faces) == 1 and on_face(faces[0].box, min_iou=0.6)
    marks = faces[0].landmarks
    assert marks is not None and marks.shape == (5, 2)
    assert marks[2, 0] < marks[3, 0] < marks[1, 0] < marks[0, 0]  # image-left eye corners, then image-right ones
    assert 95 < marks[:4, 1].mean() < 112 and 125 < marks[4, 1] < 145  # eyes, base of the nose (read off the photo)


@needs_samples
def test_haar_fallback_and_box_conversion(astronaut):
    haar = HaarDetector()
    faces = haar.detect(astronaut)
    assert len(faces) == 1 and on_face(faces[0].box)
    as_dlib = convert_box(faces[0].box, "haar", "dlib-hog")
    assert iou(as_dlib, [179, 83, 266, 170]) > 0.7  # what dlib's HOG detector reports on this face
    if faces[0].landmarks is not None:
        assert 95 < faces[0].landmarks[:4, 1].mean() < 112


needs_dlib = pytest.mark.skipif(not dlib_available(), reason="dlib and face-recognition-models are not installed")


def _same_faces(a: list[Detection], b: list[Detection]) -> bool:
    """Both lists hold the same faces: one-to-one, boxes overlapping by IoU >= 0.6."""
    return len(a) == len(b) and all(max((iou(x.box, y.box) for y in b), default=0) >= 0.6 for x in a)


@needs_samples
@needs_dlib
def test_fast_detection_finds_the_same_faces(astronaut):
    """The default HOG (luminance, working copy at most 2 MP, threshold 0.25) finds the same faces as the colour
    detector at dlib's threshold 0.2 (before) on the test photos: the sample, the 4×4 tiling (downscaled from
    4.2 MP) and a 12 MP canvas with the face pasted at 300 and 500 px; and the mission patch is no face."""
    import cv2

    before = DlibHOGDetector(gray=False, threshold=0.2)
    now = DlibHOGDetector()
    assert now.gray and now.threshold == 0.25
    canvas = cv2.resize(np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB")), (4000, 3000))
    head = astronaut[40:210, 137:307]
    canvas[500:800, 600:900] = cv2.resize(head, (300, 300))
    canvas[1800:2300, 2500:3000] = cv2.resize(head, (500, 500))
    tiled = np.tile(astronaut, (4, 4, 1))
    for name, rgb, count in (("sample", astronaut, 1), ("4x4", tiled, 16), ("canvas", canvas, 2)):
        faces = now.detect(rgb)
        assert len(faces) == count and _same_faces(faces, before.detect(rgb)), name


@needs_samples
@needs_dlib
@pytest.mark.parametrize("which", ["yunet", "dlib-auto"])
def test_tiled_jpeg_gives_sixteen_faces_not_the_patch(astronaut, detector, which):
    """Astronaut tiled 4×4 as a JPEG (quality 90): 16 faces; the mission patch (0.20 at dlib's colour HOG, the old
    threshold) is not reported. Every face carries its detection score."""
    if which == "dlib-auto" and not dlib_available():
        pytest.skip("dlib is not installed")
    det = detector if which == "yunet" else create_detector("dlib-auto")
    buf = io.BytesIO()
    Image.fromarray(np.tile(astronaut, (4, 4, 1))).save(buf, "JPEG", quality=90)
    rgb = load_image(buf.getvalue())
    faces = det.detect(rgb)
    assert len(faces) == 16
    for face in faces:
        x1, y1, x2, y2 = face.box
        cx, cy = ((x1 + x2) / 2) % 512, ((y1 + y2) / 2) % 512
        assert ASTRONAUT_FACE[0] < cx < ASTRONAUT_FACE[2] and ASTRONAUT_FACE[1] < cy < ASTRONAUT_FACE[3]
        assert face.score >= (0.25 if which == "dlib-auto" else 0.6)
        assert face.detector == ("dlib-hog" if which == "dlib-auto" else "yunet")


@needs_samples
@needs_dlib
def test_dlib_auto_detector_falls_back_to_the_cnn_and_says_so(dlib_auto):
    """camera.png: HOG finds nothing (twice: as is and upsampled), the CNN finds the cameraman; the cat has none."""
    from pcnn_fer.faces.detect import detect_traced

    detector = dlib_auto
    camera = np.asarray(Image.open(SAMPLES / "camera.png").convert("RGB"))
    faces, tried = detect_traced(detector, camera)
    assert tried == ["dlib-hog 1x", "dlib-hog 2x", "dlib-cnn"]
    assert len(faces) == 1 and faces[0].detector == "dlib-cnn" and faces[0].landmarks is not None
    x1, y1, x2, y2 = faces[0].box
    assert 175 < (x1 + x2) / 2 < 270 and 105 < (y1 + y2) / 2 < 200  # the cameraman's face
    assert detect_traced(detector, camera, thorough=False) == ([], ["dlib-hog 1x", "dlib-hog 2x"])  # video frames
    assert detect_traced(DlibHOGDetector(), camera)[0] == []


@needs_samples
def test_huge_images_are_downscaled_for_detection(astronaut, detector):
    import cv2

    big = cv2.resize(astronaut, (2560, 2560), interpolation=cv2.INTER_CUBIC)  # 6.5 MP > DETECT_MAX_PIXELS
    faces = detector.detect(big)
    assert len(faces) == 1 and on_face(faces[0].box / 5.0, min_iou=0.6)


def test_plugin_detector_protocol():
    class Fixed:
        def detect(self, rgb):
            return [Detection([1, 2, 30, 40], None, 0.5, "fixed")]

    assert isinstance(Fixed(), FaceDetector) and create_detector(Fixed()).detect(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(UsageError, match="unknown face detector"):
        create_detector("magic")
    whole = WholeImageDetector().detect(np.zeros((48, 40, 3), np.uint8))
    assert whole[0].box.tolist() == [0, 0, 40, 48] and whole[0].landmarks is None


# --- template and alignment -------------------------------------------------------------------------------------

def test_template_points_fall_in_their_pcnn_crops():
    h1, h2, w1 = preset_config("compact").crop_fractions
    right_eye, left_eye, nose = TEMPLATE_5PT[:2], TEMPLATE_5PT[2:4], TEMPLATE_5PT[4]
    assert np.all(left_eye[:, 0] < w1) and np.all(right_eye[:, 0] > w1)  # each eye in its own eye crop
    assert np.all(TEMPLATE_5PT[:4, 1] < h1) and np.all(TEMPLATE_5PT[:4, 1] > 0.25)
    assert h1 < nose[1] and abs(nose[0] - 0.5) < 0.03
    assert TEMPLATE_MOUTH[1] > h2 and abs(TEMPLATE_MOUTH[0] - 0.5) < 0.03  # the mouth lies in the mouth crop
    left, right, tip, mouth = TEMPLATE_YUNET[0], TEMPLATE_YUNET[1], TEMPLATE_YUNET[2], TEMPLATE_YUNET[3:]
    assert left[0] < w1 < right[0] and max(left[1], right[1]) < h1  # YuNet's eye centres in their eye crops
    assert h1 < tip[1] < h2 and np.all(mouth[:, 1] > h2) and abs(tip[0] - 0.5) < 0.03  # nose tip, mouth corners
    # YuNet's eye centres lie between dlib's corners of the same eye (the two templates describe one face)
    assert TEMPLATE_5PT[2, 0] < left[0] < TEMPLATE_5PT[3, 0] and TEMPLATE_5PT[1, 0] < right[0] < TEMPLATE_5PT[0, 0]
    for box in BOX_TEMPLATES.values():
        assert box[0] < left_eye[:, 0].min() and box[2] > right_eye[:, 0].max() and box[1] < TEMPLATE_5PT[:, 1].min()


def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(apply_affine(m, src), dst, atol=1e-9)
    mirrored = dst * np.array([-1, 1])
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0  # never a reflection


@needs_samples
def test_aligned_astronaut_lands_on_the_crops(astronaut, detector, tmp_path):
    """The aligned face puts the eyes in the eye crops and the mouth in the mouth crop (checked on the landmarks and
    by writing the picture with the crop boxes, as benchmarks/face_template.py --preview does)."""
    import cv2

    face = detector.detect(astronaut)[0]
    size = 48
    aligned = align_face(astronaut, face, size)
    assert aligned.image.shape == (size, size, 3) and aligned.image.dtype == np.uint8
    marks = apply_affine(aligned.matrix, face.landmarks) / size
    assert np.abs(marks - LANDMARK_TEMPLATES.get(face.detector, TEMPLATE_5PT)).max() < 0.06
    boxes = FaceRegions(preset_config("compact").crop_fractions).boxes(size, size)
    eyes = ["left_eye", "right_eye"] if face.detector == "yunet" else ["right_eye", "right_eye", "left_eye", "left_eye"]
    for (x, y), region in zip(marks[:len(eyes)] * size, eyes, strict=True):
        top, bottom, left, right = boxes[region]
        assert top <= y < bottom and left <= x < right, region
    # the mouth (read off the photo at about (224, 146)) maps into the mouth crop
    mouth = apply_affine(aligned.matrix, [[224, 146]])[0]
    top, bottom, left, right = boxes["mouth"]
    assert top <= mouth[1] < bottom and left <= mouth[0] < right
    view = cv2.resize(aligned.image, (384, 384), interpolation=cv2.INTER_NEAREST)
    for t, b, left, right in boxes.values():
        cv2.rectangle(view, (left * 8, t * 8), (right * 8 - 1, b * 8 - 1), (255, 215, 0), 2)
    Image.fromarray(view).save(tmp_path / "aligned_crops.png")
    assert (tmp_path / "aligned_crops.png").stat().st_size > 0


def test_box_only_alignment_uses_the_detector_box_template():
    rgb = np.zeros((200, 200, 3), np.uint8)
    det = Detection([50, 40, 150, 140], None, 1.0, "dlib-hog")
    m = align_face(rgb, det, 48).matrix
    np.testing.assert_allclose(apply_affine(m, [[100, 90]])[0] / 48,
                               (BOX_TEMPLATES["dlib-hog"][:2] + BOX_TEMPLATES["dlib-hog"][2:]) / 2, atol=1e-9)
    whole = align_face(rgb[:60, :40], Detection([0, 0, 40, 60], None, 1.0, "none"), 48).matrix
    np.testing.assert_allclose(apply_affine(whole, [[40, 60]])[0], [48, 48])


@needs_samples
def test_dlib_auto_falls_back_to_haar_without_dlib(monkeypatch, astronaut):
    import pcnn_fer.faces.detect as detect

    monkeypatch.setattr(detect, "dlib_available", lambda: False)
    auto = detect.create_detector("dlib-auto")
    assert isinstance(auto, DlibAutoDetector) and not auto.fallback
    fallback = auto.primary
    assert isinstance(fallback, HaarDetector) and not fallback.landmarks
    (face,) = auto.detect(astronaut)
    assert face.landmarks is None and on_face(face.box)
    aligned = align_face(astronaut, face, 48)  # box-only alignment through the Haar box template
    eyes = apply_affine(aligned.matrix, [[203, 102], [246, 104]]) / 48  # the eye centres, read off the photo
    np.testing.assert_allclose(eyes, [TEMPLATE_5PT[2:4].mean(0), TEMPLATE_5PT[:2].mean(0)], atol=0.08)


def test_auto_without_yunet_runtime_says_so_and_uses_dlib(monkeypatch, capsys):
    """No onnxruntime and no OpenCV: auto names the extra and runs the dlib chain; with no dlib either, one error
    line naming the extra."""
    import pcnn_fer.faces.detect as detect
    from pcnn_fer.faces.detection import DetectorUnavailable

    monkeypatch.setattr(detect, "yunet_available", lambda: False)
    if dlib_available():
        auto = detect.create_detector("auto")
        assert isinstance(auto.primary, DlibAutoDetector) and "pcnn-fer[faces]" in auto.note
        assert capsys.readouterr().err.strip() == detect.YUNET_MISSING
    monkeypatch.setattr(detect, "dlib_available", lambda: False)
    with pytest.raises(DetectorUnavailable, match=r"pip install 'pcnn-fer\[faces\]'"):
        detect.create_detector("auto")
