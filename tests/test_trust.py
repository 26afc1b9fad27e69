"""What a user can trust per face: ``uncertain`` below ``--min-confidence`` (probabilities kept), face quality
(size, sharpness, brightness, head pose, issues) and the occlusion / quality columns of predict's JSON and CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pcnn_fer.faces.align import TEMPLATE_5PT
from pcnn_fer.faces.outputs import OCCLUSION_COLUMNS, QUALITY_COLUMNS, csv_header
from pcnn_fer.faces.quality import QUALITY_THRESHOLDS, face_quality, head_pose
from pcnn_fer.faces.recognizer import Recognizer
from pcnn_fer.models.pcnn import REGIONS, PCNNConfig

CLASSES = ("happiness", "sadness", "surprise")


class FixedBackend:
    """A backend object (no ``outputs``): the same probabilities for every face."""

    def __init__(self, probs):
        self.config = PCNNConfig(num_classes=3, classes=CLASSES, input_size=48, mean=(0.5,) * 3, std=(0.5,) * 3)
        self.probs = np.asarray(probs, np.float32)

    def __call__(self, batch):
        n = len(batch)
        return np.tile(self.probs, (n, 1)), np.tile(self.probs, (n, 5, 1))


def _face(min_confidence):
    rec = Recognizer(backend=FixedBackend([0.2, 0.5, 0.3]), detector="none", min_confidence=min_confidence)
    crop = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    return rec.predict(crop)


def test_min_confidence_answers_uncertain_and_keeps_the_probabilities():
    assert _face(None)[0].label == "sadness"
    assert _face(0.4)[0].label == "sadness"
    result = _face(0.6)
    face = result[0]
    assert face.label == "uncertain" and face.top_label == "sadness" and face.score == pytest.approx(0.5)
    record = face.to_dict()
    assert record["probabilities"] == {"happiness": 0.2, "sadness": 0.5, "surprise": 0.3}
    assert "occlusion" not in record  # a backend without occlusion heads: no scores, not zeros
    assert result.relabel(0.45)[0].label == "sadness" and result.relabel(0.55)[0].label == "uncertain"
    assert result.plot().shape[0] >= 240  # an uncertain face draws (grey box, bars of its best class)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Recognizer(backend=FixedBackend([0.2, 0.5, 0.3]), detector="none", min_confidence=1.5)


def test_quality_flags_small_blurred_dark_and_turned_faces():
    sharp = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    frontal = TEMPLATE_5PT * 200
    good = face_quality(sharp, np.array([0, 0, 200, 200]), frontal)
    assert good["issues"] == [] and abs(good["yaw"]) < 1 and abs(good["pitch"]) < 1
    assert set(good) == {"size_px", "sharpness", "brightness", "clipped", "yaw", "pitch", "issues"}
    flat = np.full((48, 48, 3), 20, np.uint8)
    bad = face_quality(flat, np.array([0, 0, 20, 20]), None)
    assert {"small", "blurred", "dark"} <= set(bad["issues"]) and bad["yaw"] is None
    assert bad["size_px"] == 20 < QUALITY_THRESHOLDS["min_size_px"]
    turned = frontal.copy()
    turned[4, 0] += 0.6 * 0.358 * 200 * 0.8  # the nose base moved towards the image right: turned ~53 degrees
    yaw, pitch = head_pose(turned)
    assert yaw > QUALITY_THRESHOLDS["max_yaw"] and abs(pitch) < 1
    assert "turned" in face_quality(sharp, np.array([0, 0, 200, 200]), turned)["issues"]
    down = frontal.copy()
    down[4, 1] += 0.3 * 0.358 * 200  # the nose base lower than frontal: head down
    assert head_pose(down)[1] > 20


def test_csv_has_the_occlusion_and_quality_columns(tmp_path, run_cli):
    assert OCCLUSION_COLUMNS == tuple(f"occluded_{r}" for r in REGIONS)
    header = csv_header(CLASSES)
    assert header[-len(OCCLUSION_COLUMNS) - len(QUALITY_COLUMNS) - 1:] == [*OCCLUSION_COLUMNS, *QUALITY_COLUMNS,
                                                                            "error"]
    from PIL import Image

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 48), dtype=np.uint8)).save(tmp_path / "f.png")
    code, _, err = run_cli(["predict", tmp_path / "f.png", "--no-detect", "--backend", "torch", "--out",
                            tmp_path / "out", "--save-csv", "--save-json", "--min-confidence", "1", "--quiet"])
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert rows[0]["label"] == "uncertain" and rows[0]["size_px"] == "48.0"
    assert all(0.0 <= float(rows[0][c]) <= 1.0 for c in OCCLUSION_COLUMNS)  # the bundled model's occlusion heads
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())[0]
    assert record["faces"][0]["quality"]["yaw"] is None  # --no-detect: no landmarks, no pose
    assert set(record["faces"][0]["occlusion"]) == set(REGIONS)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "high"])
def test_min_confidence_must_be_a_probability(value, run_cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["predict", "x.png", "--min-confidence", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"pcnn predict: error: argument --min-confidence: expected a probability between 0 and 1, "
                          f"got {value}")
