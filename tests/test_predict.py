"""``Recognizer`` and ``pcnn predict`` end to end: samples, bad inputs, videos, JSON/CSV/JSONL outputs, annotations,
output safety, exit codes, and a folder job killed and resumed."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ASTRONAUT_FACE, SAMPLES, needs_samples
from PIL import Image

from pcnn_fer.cli.predict import add_parser
from pcnn_fer.errors import UsageError
from pcnn_fer.faces import Recognizer
from pcnn_fer.faces.draw import class_color
from pcnn_fer.faces.recognizer import Prediction
from pcnn_fer.models.pcnn import REGIONS, preset_config
from pcnn_fer.weights import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]


def on_face(box) -> bool:
    """The box's centre lies on the astronaut's face and the box is about face-sized."""
    x1, y1, x2, y2 = box
    fx1, fy1, fx2, fy2 = ASTRONAUT_FACE
    return fx1 < (x1 + x2) / 2 < fx2 and fy1 < (y1 + y2) / 2 < fy2 and 60 < x2 - x1 < 130 and 60 < y2 - y1 < 130


@pytest.fixture(scope="module")
def session_cache(tmp_path_factory):
    """The test session's private cache folder (as conftest sets it per test), for module-scoped fixtures."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PCNN_FER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="module")
def recognizer(checkpoint, session_cache) -> Recognizer:
    """One recognizer shared by the tests (model and detector loaded once; the default backend)."""
    return Recognizer(checkpoint, keep_crops=True)


def run_cli(*argv: str) -> int:
    """Parse and run ``pcnn predict`` through this module's parser (as the pcnn dispatcher does)."""
    parser = argparse.ArgumentParser(prog="pcnn")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["predict", *argv])
    return args.func(args)


def pcnn_command(*argv: str) -> list[str]:
    """The real ``pcnn`` command line (the console script's entry point, run from this tree's sources)."""
    return [sys.executable, "-m", "pcnn_fer.cli", *argv]


def pcnn_env() -> dict[str, str]:
    """The environment for ``pcnn`` subprocesses: this tree's sources first, one thread, unbuffered output."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pcnn(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real ``pcnn`` command; its exit code, stdout and stderr."""
    return subprocess.run(pcnn_command(*argv), cwd=cwd, env=pcnn_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    """Generated inputs for every bad-input case (and a few good variants of the sample photo)."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "text.jpg").write_text("hello, I am not a JPEG\n")
    if (SAMPLES / "astronaut.png").is_file():
        data = (SAMPLES / "astronaut.png").read_bytes()
        (d / "truncated.png").write_bytes(data[: len(data) // 3])
        img = Image.open(SAMPLES / "astronaut.png").convert("RGB")
        Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257).save(d / "gray16.png")
        img.convert("CMYK").save(d / "cmyk.jpg", quality=95)
        img.quantize(64).save(d / "palette.png")
        img.convert("RGBA").save(d / "rgba.png")
        exif = Image.Exif()
        exif[0x0112] = 6
        img.transpose(Image.Transpose.ROTATE_90).save(d / "exif_rotated.jpg", exif=exif, quality=95)
    Image.new("L", (400, 300), 128).save(d / "huge.png")  # "huge" under --max-pixels 100000
    return {p.stem: p for p in d.iterdir()}


def make_video(path: Path, fourcc: str, frames: int = 6) -> Path:
    """A short video of the astronaut photo (shifted a little each frame), written with cv2.VideoWriter."""
    import cv2

    rgb = np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (512, 512))
    assert writer.isOpened(), f"cannot write {fourcc} video"
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(rgb, 4 * i, axis=1)[..., ::-1]))
    writer.release()
    return path


# --- Python API ---------------------------------------------------------------------------------------------------

@needs_samples
def test_recognizer_on_samples(recognizer):
    result = recognizer.predict(SAMPLES / "astronaut.png")
    assert isinstance(result, Prediction) and isinstance(result, list) and result.skipped is None
    assert len(result) == 1
    face = result[0]
    assert on_face(face.box) and face.landmarks.shape == (5, 2)
    assert face.label in recognizer.classes and face.score == max(face.probabilities.values())
    assert abs(sum(face.probabilities.values()) - 1) < 1e-4 and set(face.regions) == set(REGIONS)
    for probs in face.regions.values():
        assert set(probs) == set(recognizer.classes) and abs(sum(probs.values()) - 1) < 1e-4
    assert face.crop.shape == (48, 48, 3)
    cat = recognizer.predict(str(SAMPLES / "chelsea.png"))
    assert len(cat) == 0 and cat.skipped is None and cat.summary().startswith("no face found")
    # PIL images and arrays work as well, with the same result
    same = recognizer.predict(Image.open(SAMPLES / "astronaut.png"))
    np.testing.assert_allclose(same[0].box, face.box)
    np.testing.assert_allclose(recognizer.predict(np.asarray(Image.open(SAMPLES / "astronaut.png")))[0].score,
                               face.score, rtol=1e-5)


@needs_samples
def test_plot_and_save_put_the_box_on_the_face(recognizer, tmp_path):
    result = recognizer.predict(SAMPLES / "astronaut.png")
    path = result.save(tmp_path / "annotated.png")
    annotated = np.asarray(Image.open(path).convert("RGB")).astype(int)
    original = np.asarray(Image.open(SAMPLES / "astronaut.png").convert("RGB")).astype(int)
    assert annotated.shape == original.shape
    x1, y1, x2, y2 = (int(round(v)) for v in result[0].box)
    assert on_face((x1, y1, x2, y2))
    color = np.array(class_color(result[0].label))
    for edge in (annotated[y1 + 5:y2 - 5, x1], annotated[y1 + 5:y2 - 5, x2]):  # the box's vertical sides
        assert (np.abs(edge - color).max(1) < 40).mean() > 0.9
    changed = np.abs(annotated - original).max(2) > 30
    rows, cols = np.nonzero(changed)  # everything drawn hugs this one face: box, label above, bars beside it
    assert rows.min() >= y1 - 40 and rows.max() <= y2 + 5 and cols.min() >= x1 - 3 and cols.max() <= x2 + 160
    assert changed[y1:y1 + 60, x2 + 5:x2 + 60].mean() > 0.3  # the per-region bars right of the box
    assert changed[y2 + 3:y2 + 40, x1:x2].mean() < 0.01  # nothing under the face (the bars used to be there)
    assert not np.array_equal(result.plot(regions=False), result.plot())


def test_no_detect_and_small_inputs(checkpoint):
    rec = Recognizer(checkpoint, detector="none")
    crop = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    result = rec.predict(crop)
    assert len(result) == 1 and result[0].box.tolist() == [0, 0, 48, 48] and result[0].landmarks is None
    assert result.plot().shape[0] >= 240  # small inputs are upscaled for legible annotations


def test_torch_backend_matches_the_plain_model(checkpoint):
    import torch

    from pcnn_fer.backends.torch_backend import TorchClassifier
    from pcnn_fer.models.calibration import calibrate_logits
    from pcnn_fer.weights import load_model

    model = load_model(checkpoint)
    batch = np.random.default_rng(1).normal(size=(3, 3, 48, 48)).astype(np.float32)
    probs, regions = TorchClassifier(model)(batch)
    with torch.inference_mode():
        g, _, r = model(torch.from_numpy(batch), return_regions=True)
    calibrated = calibrate_logits(g, model.config.calibration)  # the bundled model's temperature
    np.testing.assert_allclose(probs, torch.softmax(calibrated, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(regions, torch.softmax(r, 2).numpy(), atol=1e-5)
    assert probs.shape == (3, 8) and regions.shape == (3, 5, 8)


def test_gray_preprocessing_matches_training(recognizer):
    assert recognizer.gray  # 48×48 FER-style model
    crop = np.zeros((48, 48, 3), np.uint8)
    crop[..., 0] = 255
    batch = recognizer.preprocess([crop])
    cfg = recognizer.config
    expected = (0.299 - cfg.mean[0]) / cfg.std[0]
    assert batch.shape == (1, 3, 48, 48) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 0, 0], expected, rtol=1e-5)


class _Constant:
    """A stand-in backend object (config + ``__call__(normalised NCHW batch)``) answering 1/8 for every class and
    recording the batch shapes it saw."""

    config = preset_config("tiny", num_classes=8)

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, batch):
        self.calls.append(batch.shape)
        n, c = len(batch), self.config.num_classes
        return np.full((n, c), 1 / c), np.full((n, len(REGIONS), c), 1 / c)


def test_backends_are_swappable(checkpoint):
    backend = _Constant()
    rec = Recognizer(backend=backend, detector="none", batch_size=2)
    result = rec.predict(np.zeros((60, 50, 3), np.uint8))
    assert backend.calls == [(1, 3, 48, 48)] and result[0].score == pytest.approx(1 / 8)
    assert len(rec.classify([np.zeros((48, 48, 3), np.uint8)] * 5)[0]) == 5 and backend.calls[-1] == (1, 3, 48, 48)
    with pytest.raises(UsageError, match="unknown backend 'nope'; choose auto, torch, onnx"):
        Recognizer(checkpoint, backend="nope")


@pytest.mark.parametrize("array", [np.zeros(10), np.zeros(()), np.zeros((4, 4, 5)), np.zeros((2, 2, 2, 3)),
                                   np.array([["a", "b"], ["c", "d"]]), np.zeros((0, 5, 3))])
def test_arrays_that_are_no_image_give_a_skipped_result(array):
    result = Recognizer(backend=_Constant(), detector="none").predict(array)
    assert result.skipped and len(result) == 0 and "array" in result.skipped


def test_images_too_small_for_a_face_are_skipped_and_the_run_goes_on(checkpoint, tmp_path, capsys):
    """Issue 33 item 7: a 1×1, 100000×1 or 1×100000 image stopped the whole run in dlib's CNN fallback ("Filter
    windows must be small enough"); now each is a reasoned skip and the other inputs and the outputs are written."""
    pytest.importorskip("dlib")
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (h, w) in {"a.png": (1, 1), "b.png": (1, 100_000), "c.png": (100_000, 1)}.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / name)
    Image.open(ROOT / "src" / "pcnn_fer" / "assets" / "astronaut.png").save(folder / "d.png")
    out = tmp_path / "out"
    assert run_cli(str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--save-json", "--save-csv") == 0
    stdout = capsys.readouterr().out
    assert "b.png: skipped (100000×1 pixels, too small to hold a face: face detection needs 16 px" in stdout
    records = json.loads((out / "predictions.json").read_text())
    assert [bool(r["skipped"]) for r in records] == [True, True, True, False] and len(records[3]["faces"]) == 1
    assert (out / "d.png").is_file() and not (out / "a.png").exists() and (out / "predictions.csv").is_file()
    from pcnn_fer.faces.detect import DlibCNNDetector

    assert DlibCNNDetector(upsample=0).detect(np.zeros((1, 100_000, 3), np.uint8)) == []


def test_annotating_a_thin_strip_keeps_the_canvas_bounded():
    from pcnn_fer.faces.draw import MAX_UPSCALED_PIXELS, draw_faces

    canvas = draw_faces(np.zeros((16, 100_000, 3), np.uint8), [])
    assert canvas.shape[0] * canvas.shape[1] <= MAX_UPSCALED_PIXELS * 1.01 and canvas.shape[1] % 100_000 == 0
    assert draw_faces(np.zeros((48, 48, 3), np.uint8), []).shape == (240, 240, 3)  # small images still grow


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="the bundled default model is not built yet")
@needs_samples
def test_default_model_on_the_astronaut():
    result = Recognizer().predict(SAMPLES / "astronaut.png")
    assert len(result) == 1 and on_face(result[0].box)
    assert result[0].label == "happiness"  # she smiles broadly


# --- bad inputs -----------------------------------------------------------------------------------------------------

@needs_samples
def test_bad_inputs_are_reported_not_raised(recognizer, bad_inputs):
    text = recognizer.predict(bad_inputs["text"])
    assert text.skipped and "not an image" in text.skipped and len(text) == 0
    cut = recognizer.predict(bad_inputs["truncated"])
    assert cut.skipped and "truncated" in cut.skipped
    for name in ("gray16", "cmyk", "palette", "rgba", "exif_rotated"):
        result = recognizer.predict(bad_inputs[name])
        assert result.skipped is None and len(result) == 1 and on_face(result[0].box), name
    small = Recognizer(backend=recognizer.backend, detector=recognizer.detector, max_pixels=100_000)
    huge = small.predict(bad_inputs["huge"])
    assert huge.skipped and "too large" in huge.skipped and "--max-pixels" in huge.skipped


# --- the predict command ----------------------------------------------------------------------------------------

@needs_samples
def test_predict_command_json_csv_and_annotations(checkpoint, bad_inputs, tmp_path, capsys):
    out = tmp_path / "out"
    folder = tmp_path / "folder" / "sub"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes((SAMPLES / "astronaut.png").read_bytes())
    (folder / "readme.txt").write_text("ignored: not an image suffix")
    sources = [str(SAMPLES / "astronaut.png"), str(SAMPLES / "chelsea.png"), str(bad_inputs["text"]),
               str(bad_inputs["truncated"]), str(tmp_path / "folder"), str(tmp_path / "nothing" / "*.png"),
               str(tmp_path / "absent.jpg")]
    code = run_cli(*sources, "--checkpoint", str(checkpoint), "--out", str(out), "--save-json", "--save-csv",
                   "--quiet")
    assert code == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [r["source"] for r in records] == [sources[0], sources[1], sources[2], sources[3],
                                              str(folder / "a.png"), sources[5], sources[6]]
    for r in records:
        assert set(r) == {"source", "frame", "skipped", "faces"} and r["frame"] is None
    astro, cat, text, cut, nested, glob_miss, absent = records
    assert astro["skipped"] is None and len(astro["faces"]) == 1
    face = astro["faces"][0]
    assert {"box", "landmarks", "label", "score", "probabilities", "regions"} <= set(face)
    assert len(face["box"]) == 4 and on_face(face["box"])
    assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
    assert set(face["probabilities"]) == set(preset_config("tiny", num_classes=8).classes)
    assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    assert set(face["regions"]) == set(REGIONS) and all(set(v) == set(face["probabilities"])
                                                        for v in face["regions"].values())
    assert cat == {"source": sources[1], "frame": None, "skipped": None, "faces": []}
    assert "not an image" in text["skipped"] and "truncated" in cut["skipped"]
    assert nested["skipped"] is None and len(nested["faces"]) == 1
    assert "no file matches" in glob_miss["skipped"] and "no such file" in absent["skipped"]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # a row per face, and one per skipped input holding its reason in "error" (none for the photo without a face)
    assert [(r["source"], r["face"], r["error"]) for r in rows] == [
        (sources[0], "0", ""), (sources[2], "", text["skipped"]), (sources[3], "", cut["skipped"]),
        (str(folder / "a.png"), "0", ""), (sources[5], "", glob_miss["skipped"]), (sources[6], "", absent["skipped"])]
    assert rows[0]["label"] == face["label"] and rows[1]["label"] == rows[1]["p_happiness"] == ""
    assert float(rows[0]["x1"]) == face["box"][0] and "mouth_happiness" in rows[0]
    # annotated images: one per decoded input, folder structure kept below the folder argument
    assert (out / "astronaut.png").is_file() and (out / "chelsea.png").is_file() and (out / "sub" / "a.png").is_file()
    annotated = np.asarray(Image.open(out / "astronaut.png").convert("RGB")).astype(int)
    x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
    color = np.array(class_color(face["label"]))
    assert (np.abs(annotated[y1 + 5:y2 - 5, x1] - color).max(1) < 40).mean() > 0.9
    # --quiet: the closing summary alone (issue 33: it was hidden too)
    assert capsys.readouterr().out == f"7 image(s): 2 face(s), 1 without a face, 4 skipped; outputs in {out}\n"


@needs_samples
def test_predict_command_prints_per_input_lines(checkpoint, capsys):
    assert run_cli(str(SAMPLES / "chelsea.png"), str(SAMPLES / "astronaut.png"), "--checkpoint", str(checkpoint)) == 0
    text = capsys.readouterr().out
    assert "chelsea.png: no face found" in text and "astronaut.png: 1 face:" in text


@needs_samples
@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_predict_command_on_videos(checkpoint, tmp_path, fourcc, suffix):
    video = make_video(tmp_path / f"clip{suffix}", fourcc)
    out = tmp_path / "out"
    assert run_cli(str(video), "--every", "2", "--checkpoint", str(checkpoint), "--out", str(out), "--save-json",
                   "--quiet") == 0
    records = json.loads((out / "predictions.json").read_text())
    assert [r["frame"] for r in records] == [0, 2, 4]
    for r in records:
        assert r["source"] == str(video) and r["skipped"] is None and len(r["faces"]) == 1
        x1, y1, x2, y2 = r["faces"][0]["box"]
        assert 150 < (x1 + x2) / 2 < 300 and ASTRONAUT_FACE[1] < (y1 + y2) / 2 < ASTRONAUT_FACE[3]
    written = list(out.glob("clip.*"))
    assert written, "no annotated video written"
    import cv2

    cap = cv2.VideoCapture(str(written[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()


@needs_samples
def test_video_frames_between_full_detections_give_the_same_predictions(checkpoint, tmp_path):
    """``--detect-every 10`` (the default: frames 1–5 searched around frame 0's face) and ``--detect-every 1`` (full
    detection on every frame) give the same labels, scores within 0.02 and landmarks within 8% of the face's side
    (YuNet runs a window at another scale and grid offset than the whole frame, which moves its points by up to
    about 6%); 0 is refused."""
    video = make_video(tmp_path / "clip.avi", "MJPG")
    records = {}
    for every in ("10", "1"):
        out = tmp_path / f"out{every}"
        assert run_cli(str(video), "--detect-every", every, "--checkpoint", str(checkpoint), "--out", str(out),
                       "--save-json", "--no-annotate", "--quiet") == 0
        records[every] = json.loads((out / "predictions.json").read_text())
    assert len(records["10"]) == len(records["1"]) > 1
    for tracked, full in zip(records["10"], records["1"], strict=True):
        assert len(tracked["faces"]) == len(full["faces"]) == 1
        a, b = tracked["faces"][0], full["faces"][0]
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 0.02
        side = b["box"][2] - b["box"][0]
        assert np.abs(np.array(a["landmarks"]) - np.array(b["landmarks"])).max() <= 0.08 * side
    proc = pcnn("predict", str(video), "--detect-every", "0", "--checkpoint", str(checkpoint))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "pcnn predict: error: --detect-every must be at least 1, got 0"


@needs_samples
def test_unreadable_video_frames_are_skipped(checkpoint, tmp_path):
    data = make_video(tmp_path / "full.avi", "MJPG", frames=6).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])  # the index still declares 6 frames
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[:2000])
    out = tmp_path / "out"
    assert run_cli(str(cut), str(broken), "--checkpoint", str(checkpoint), "--out", str(out), "--save-json",
                   "--no-annotate", "--quiet") == 0
    records = json.loads((out / "predictions.json").read_text())
    good = [r for r in records if r["source"] == str(cut) and r["skipped"] is None]
    bad = [r for r in records if r["source"] == str(cut) and r["skipped"]]
    assert len(good) >= 1 and all(len(r["faces"]) == 1 for r in good)
    assert bad and all(r["skipped"] == "unreadable frame" and r["frame"] is not None for r in bad)
    assert [r["frame"] for r in good + bad] == list(range(len(good) + len(bad)))
    (last,) = [r for r in records if r["source"] == str(broken)]
    assert last["frame"] is None and "cannot open video" in last["skipped"]
    assert not list(out.glob("*.png"))  # --no-annotate


@needs_samples
def test_predict_stream_api(recognizer, tmp_path):
    video = make_video(tmp_path / "clip.avi", "MJPG", frames=4)
    results = list(recognizer.predict_stream([str(SAMPLES / "chelsea.png"), str(video), "absent.png"], every=3))
    assert [(r.source, r.frame, len(r), bool(r.skipped)) for r in results] == [
        (str(SAMPLES / "chelsea.png"), None, 0, False), (str(video), 0, 1, False), (str(video), 3, 1, False),
        ("absent.png", None, 0, True)]


@needs_samples
def test_predict_is_registered_in_the_pcnn_command(monkeypatch, checkpoint, capsys):
    import pcnn_fer.cli as cli

    assert ("pcnn_fer.cli.predict", "add_parser") in cli.COMMANDS
    monkeypatch.setattr(cli, "COMMANDS", [("pcnn_fer.cli.predict", "add_parser")])  # this verb alone
    assert cli.main(["predict", str(SAMPLES / "chelsea.png"), "--checkpoint", str(checkpoint)]) == 0
    assert "no face found" in capsys.readouterr().out
    if not DEFAULT_MODEL.exists():
        assert cli.main(["predict", str(SAMPLES / "chelsea.png")]) == 1
        assert "bundled model is missing" in capsys.readouterr().err


# --- output safety, exit codes, messages (the real pcnn command) ---------------------------------------------------

@pytest.mark.slow
@needs_samples
def test_outputs_never_overwrite_inputs(checkpoint, tmp_path):
    """``cd photos && pcnn predict me.png --out .``, ``pcnn predict photos --out photos`` and a video into its own
    folder are refused before any work, and the inputs stay as they were."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.png").write_bytes((SAMPLES / "astronaut.png").read_bytes())
    make_video(photos / "clip.mp4", "mp4v", frames=3)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    for argv, cwd in ((["me.png", "--out", "."], photos), ([str(photos), "--out", str(photos)], None),
                      (["clip.mp4", "--out", "."], photos)):
        proc = pcnn("predict", *argv, "--checkpoint", str(checkpoint), "--backend", "torch", cwd=cwd)
        assert proc.returncode == 1, proc.stderr
        assert "refusing to overwrite the input" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
        assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_output_names_avoid_inputs(tmp_path):
    from pcnn_fer.faces.outputs import annotated_paths, check_no_overwrite, check_out_folder
    from pcnn_fer.faces.sources import expand_sources

    for name in ("take.avi", "a.bmp", "predictions.json"):
        (tmp_path / name).write_bytes(b"x")
    sources = expand_sources([str(tmp_path / "take.avi"), str(tmp_path / "a.bmp"), str(tmp_path / "predictions.json")])
    paths = annotated_paths(sources, tmp_path)
    # beside the inputs under other names: the video's .avi fallback steps aside from the input
    assert paths == {0: [tmp_path / "take.mp4", tmp_path / "take_1.avi"], 1: [tmp_path / "a.png"],
                     2: [tmp_path / "predictions.png"]}
    check_no_overwrite(sources, [p for ps in paths.values() for p in ps])
    with pytest.raises(UsageError, match="refusing to overwrite the input .*predictions.json"):
        check_no_overwrite(sources, [tmp_path / "predictions.json"])
    with pytest.raises(UsageError, match="cannot create the folder"):
        check_out_folder(tmp_path / "a.bmp" / "sub")


def test_out_must_be_a_writable_folder_before_any_work(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    crop = tmp_path / "face.png"
    Image.new("L", (48, 48), 100).save(crop)
    cases = [(a_file, "exists and is not a folder")]
    if Path("/sys/kernel").is_dir():
        cases.append((Path("/sys/pcnn-fer-test"), "cannot create the folder"))
    for out, message in cases:
        proc = pcnn("predict", str(crop), "--no-detect", "--save-json", "--out", str(out), "--checkpoint",
                    str(tmp_path / "no-such-model.safetensors"))  # a model would fail to load: nothing got that far
        assert proc.returncode == 1 and message in proc.stderr and f"--out {out}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "model" not in proc.stderr
    assert a_file.read_text() == "not a folder"


def test_exit_code_says_when_no_input_could_be_read(checkpoint, tmp_path):
    proc = pcnn("predict", str(tmp_path / "missing.png"), str(tmp_path / "nothing" / "*.jpg"), "--no-detect",
                "--checkpoint", str(checkpoint), "--backend", "torch")
    assert proc.returncode == 1, proc.stderr
    assert "skipped (no such file or directory)" in proc.stdout and "Traceback" not in proc.stderr
    assert "no input could be read (2 skipped)" in proc.stderr


def test_unknown_device_is_one_line_before_any_work(checkpoint, tmp_path):
    """``--device foo``: one line, exit 1, and (onnx) no export of the model first."""
    crop = tmp_path / "face.png"
    Image.new("L", (48, 48), 100).save(crop)
    expected = {"auto": "pcnn predict: error: unknown device 'foo' (use cpu, cuda, cuda:N or mps)",
                "onnx": "pcnn predict: error: the onnx backend runs on cpu or cuda[:N], not 'foo'"}
    if importlib.util.find_spec("onnxruntime") is None:
        del expected["onnx"]
    for backend, line in expected.items():
        proc = pcnn("predict", str(crop), "--no-detect", "--checkpoint", str(checkpoint), "--device", "foo",
                    "--backend", backend)
        assert proc.returncode == 1 and proc.stderr.strip() == line, proc.stderr
        assert proc.stdout == ""


def test_backend_choices_and_training_checkpoint_hint(checkpoint, tmp_path):
    import torch

    from pcnn_fer.weights import load_model

    assert "{auto,torch,onnx}" in pcnn("predict", "--help").stdout
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(Path(checkpoint).read_bytes())
    torch.save({"model": load_model(checkpoint).state_dict(), "epoch": 3, "recipe": {"model": "tiny"}}, run / "last.pt")
    crop = tmp_path / "face.png"
    Image.new("L", (48, 48), 100).save(crop)
    proc = pcnn("predict", str(crop), "--no-detect", "--checkpoint", str(run / "last.pt"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"{run / 'last.pt'} is a training checkpoint: pass the run folder {run}" in proc.stderr, proc.stderr
    from pcnn_fer.backends.dispatch import create_backend

    with pytest.raises(UsageError, match="is a training checkpoint: pass the run folder"):
        create_backend("torch", run / "last.pt")
    assert create_backend("torch", run).config.num_classes == 8


# --- large folders: batched, streamed as JSONL, resumable -----------------------------------------------------------

def _face_folder(folder: Path, count: int) -> Path:
    """``count`` distinct 48×48 gray faces-to-be (random textures), named in order."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"f{i:04d}.png")
    return folder


@pytest.mark.slow
def test_folder_job_killed_and_resumed_gives_the_same_results(checkpoint, tmp_path):
    """A real kill -9 part way through (made certain: the job's stdout is a full pipe nobody reads, so it stops after
    a few dozen lines), then ``--resume``: the JSONL (and JSON) equal an uninterrupted run's, byte for byte."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("needs Linux pipes with a settable size")
    folder = _face_folder(tmp_path / "faces", 150)
    common = ["predict", str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--batch-size", "8",
              "--save-jsonl", "--save-json"]
    assert pcnn(*common, "--out", str(tmp_path / "whole"), "--quiet").returncode == 0
    whole = (tmp_path / "whole" / "predictions.jsonl").read_bytes()
    assert len(whole.splitlines()) == 150

    out = tmp_path / "killed"
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # about 60 per-image lines, then the job blocks
    proc = subprocess.Popen(pcnn_command(*common, "--out", str(out)), env=pcnn_env(), stdout=write_end,
                            stderr=subprocess.DEVNULL)
    os.close(write_end)
    jsonl = out / "predictions.jsonl"
    try:
        deadline = time.monotonic() + 240
        while not (jsonl.is_file() and jsonl.read_bytes().count(b"\n") >= 20):
            assert proc.poll() is None, "the job ended before it was killed"
            assert time.monotonic() < deadline, "the job wrote no results"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        os.close(read_end)
    partial = jsonl.read_bytes().count(b"\n")
    assert 20 <= partial < 150 and not (out / "predictions.json").exists()
    resumed = pcnn(*common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after" in resumed.stderr
    assert jsonl.read_bytes() == whole
    assert (out / "predictions.json").read_bytes() == (tmp_path / "whole" / "predictions.json").read_bytes()
    records = json.loads((out / "predictions.json").read_text())
    assert [r["source"] for r in records] == [str(folder / f"f{i:04d}.png") for i in range(150)]
    # resuming a finished job does nothing and keeps the file
    assert run_cli(*common[1:], "--out", str(out), "--resume", "--quiet") == 0 and jsonl.read_bytes() == whole


def test_resume_refuses_results_of_other_inputs(checkpoint, tmp_path):
    folder = _face_folder(tmp_path / "faces", 3)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text(json.dumps({"source": "elsewhere.png", "frame": None, "skipped": None,
                                                       "faces": []}) + "\n")
    with pytest.raises(UsageError, match="results of other inputs"):
        run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--out", str(out), "--resume")
    (out / "predictions.jsonl").write_text("[1, 2]\n")
    with pytest.raises(UsageError, match="predictions.jsonl:1: not a pcnn predict record"):
        run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--out", str(out), "--resume")


@pytest.mark.parametrize("record, why", [
    ({"source": "f0000.png"}, "no 'frame', 'skipped', 'faces'"),
    ({"source": "f0000.png", "frame": None, "skipped": None, "faces": {}}, "'faces' is not a list"),
    ({"source": "f0000.png", "frame": None, "skipped": None, "faces": [{"box": [1, 2, 3]}]},
     "face 0: 'box' is not 4 numbers"),
    ({"source": "f0000.png", "frame": "1", "skipped": None, "faces": []}, "'frame' is neither null"),
], ids=["bare", "faces-object", "short-box", "frame-text"])
def test_resume_refuses_records_that_are_not_whole(checkpoint, tmp_path, record, why):
    """Issue 33 items 6 and 10: a record without ``faces`` was kept as done, and --save-csv then raised KeyError."""
    folder = _face_folder(tmp_path / "faces", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(UsageError, match=rf"predictions\.jsonl:1: not a pcnn predict record \({why}"):
        run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--out", str(out), "--resume",
                "--save-csv")
    assert not (out / "predictions.csv").exists()


def test_resume_refuses_records_of_a_model_with_other_classes(checkpoint, tmp_path):
    folder = _face_folder(tmp_path / "faces", 2)
    out = tmp_path / "out"
    assert run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--out", str(out), "--save-jsonl",
                   "--quiet") == 0
    jsonl = out / "predictions.jsonl"
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[0])
    record["faces"][0]["probabilities"] = {"happy": 1.0}
    jsonl.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with pytest.raises(UsageError, match=r"predictions\.jsonl:1: face 0 has probabilities of \['happy'\]"):
        run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--out", str(out), "--resume",
                "--save-csv")


def test_undecodable_file_names_reach_every_output(checkpoint, tmp_path):
    """Issue 33 item 8: ``caf\\xe9.png`` (not UTF-8) with --save-csv raised UnicodeEncodeError and lost the CSV
    and JSON of the whole run."""
    folder = _face_folder(tmp_path / "faces", 2)
    odd = os.fsencode(folder) + b"/caf\xe9.png"
    os.rename(os.fsencode(folder / "f0001.png"), odd)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pcnn_fer.cli", "predict", str(folder), "--no-detect",
                           "--checkpoint", str(checkpoint), "--out", str(out), "--save-csv", "--save-json"],
                          capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"},
                          timeout=300)
    assert proc.returncode == 0 and b"Traceback" not in proc.stderr, proc.stderr[-2000:]
    rows = list(csv.reader((out / "predictions.csv").open(encoding="utf-8")))
    assert [Path(r[0]).name for r in rows[1:]] == ["caf\\udce9.png", "f0000.png"]
    records = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert [Path(r["source"]).name for r in records] == ["caf\udce9.png", "f0000.png"]
    assert all(r["faces"] for r in records)
    assert os.path.exists(os.fsencode(out) + b"/caf\xe9.png")  # the annotated copy keeps the file's own name


@pytest.mark.parametrize("terminal", [False, True], ids=["log-file", "terminal"])
def test_progress_bars_only_on_a_terminal_and_quiet_keeps_the_summary(checkpoint, tmp_path, capsys, monkeypatch,
                                                                       terminal):
    """Issue 33: with stderr not a terminal the bars mixed into the per-image lines; --quiet hid the summary too."""
    folder = _face_folder(tmp_path / "faces", 3)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint)) == 0
    captured = capsys.readouterr()
    assert captured.out.count("1 face:") == 3 and "3 image(s): 3 face(s)" in captured.out
    assert ("img/s" in captured.err) == terminal and ("\r" in captured.err) == terminal, captured.err
    assert run_cli(str(folder), "--no-detect", "--checkpoint", str(checkpoint), "--quiet") == 0
    captured = capsys.readouterr()
    assert captured.out == "3 image(s): 3 face(s), 0 without a face, 0 skipped\n" and "img/s" not in captured.err


def test_resume_points_fall_on_batch_boundaries():
    from pcnn_fer.faces.outputs import resume_point
    from pcnn_fer.faces.sources import Source
    from pcnn_fer.faces.stream import chunk_starts, chunks

    images = [Source("image", f"i{k}.png") for k in range(7)]
    video, after = Source("video", "v.mp4"), Source("image", "last.png")
    sources = [*images, video, after]
    assert chunk_starts(sources, 3) == [0, 3, 6, 7, 8, 9]
    from pcnn_fer.faces.sources import Frame

    frames = [Frame(s, None, None) for s in images] + [Frame(video, k, None) for k in range(4)] + [Frame(after, None,
                                                                                                         None)]
    assert [len(c) for c in chunks(frames, 3)] == [3, 3, 1, 3, 1, 1]
    names = [s.name for s in sources]
    assert resume_point(sources, names[:5], 3) == (3, 3)  # cut back to the batch that started at input 3
    assert resume_point(sources, names[:6], 3) == (6, 6)
    assert resume_point(sources, names[:7] + ["v.mp4"] * 2, 3) == (7, 7)  # the video it stopped in is done again
    assert resume_point(sources, names[:7] + ["v.mp4"] * 4 + ["last.png"], 3) == (12, 9)
    with pytest.raises(UsageError, match="results of other inputs"):
        resume_point(sources, ["other.png"], 3)
