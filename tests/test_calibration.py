"""Confidence calibration: the stored map, its fit (temperature / vector scaling), the reliability figures, every
backend applying it, ``pcnn calibrate`` and ``pcnn evaluate``'s calibration output, and bad calibration data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from pcnn_fer import create_model, load_model, save_model
from pcnn_fer.backends.dispatch import create_backend
from pcnn_fer.engine.calibration_fit import (
    CalibrationError,
    calibration_metrics,
    choose_calibration,
    cross_fitted_probs,
    fit_calibration,
    reliability_bins,
    risk_coverage,
)
from pcnn_fer.errors import UsageError
from pcnn_fer.models.calibration import Calibration, calibrate_logits
from pcnn_fer.models.pcnn import PCNNConfig


def _overconfident(n: int = 4000, k: int = 4, temperature: float = 2.0, seed: int = 0):
    """Logits whose labels are drawn from softmax(logits / temperature): the fitted temperature must be near it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 4
    labels = torch.multinomial((logits / temperature).softmax(1), 1, generator=g).flatten()
    return logits, labels


def test_temperature_fit_recovers_the_temperature_and_lowers_the_ece():
    logits, labels = _overconfident()
    calibration = fit_calibration(logits, labels, "temperature", fitted_on="synthetic")
    assert calibration.temperature == pytest.approx(2.0, rel=0.08)
    before = calibration_metrics(logits.softmax(1), labels)
    after = calibration_metrics(calibrate_logits(logits, calibration).softmax(1), labels)
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    assert after["accuracy"] == before["accuracy"]  # a temperature never changes the argmax
    assert "temperature 2." in calibration.describe() and "synthetic (4000 faces)" in calibration.describe()


def test_vector_scaling_fits_per_class_bias_and_auto_picks_by_held_out_ece():
    logits, labels = _overconfident(k=3)
    shifted = logits + torch.tensor([2.0, 0.0, -2.0])  # a class-dependent offset only vector scaling can undo
    vector = fit_calibration(shifted, labels, "vector")
    assert vector.method == "vector" and vector.temperature is None
    v = calibration_metrics(calibrate_logits(shifted, vector).softmax(1), labels)
    t = calibration_metrics(calibrate_logits(shifted, fit_calibration(shifted, labels)).softmax(1), labels)
    assert v["nll"] < t["nll"] and v["accuracy"] > t["accuracy"]
    best, scores = choose_calibration(shifted, labels, folds=4)
    assert best == "vector" and scores["vector"]["ece"] < scores["temperature"]["ece"]
    crossed = cross_fitted_probs(shifted, labels, "vector", folds=2)
    assert crossed.shape == shifted.shape and torch.allclose(crossed.sum(1), torch.ones(len(crossed)), atol=1e-5)


def test_ece_nll_brier_and_risk_coverage_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = torch.tensor([0, 1, 0, 1])
    m = calibration_metrics(probs, labels)
    # bins: 0.9 (2 faces, 50 % right: gap 0.4), 0.6 (1 face right: gap 0.4), 0.7 (1 face right: gap 0.3)
    assert m["ece"] == pytest.approx(100 * (2 * 0.4 + 0.4 + 0.3) / 4)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.7])))
    assert m["brier"] == pytest.approx(np.mean([2 * 0.01, 2 * 0.81, 2 * 0.16, 2 * 0.09]))
    assert m["accuracy"] == 75.0
    assert sum(b["count"] for b in reliability_bins(probs.max(1).values, torch.tensor([1.0, 0, 1, 1]))) == 4
    rc = risk_coverage(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, True, False, True]))
    assert rc["at"]["50"] == 100.0 and rc["at"]["100"] == 75.0 and rc["curve"][-1] == [100.0, 75.0]


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "is empty"),
    (torch.randn(6, 3), torch.zeros(6, dtype=torch.long), "one class only"),
    (torch.tensor([[float("nan"), 0.0]] * 4), torch.tensor([0, 1, 0, 1]), "NaN or infinite logits for 4 of 4"),
])
def test_bad_calibration_data_is_one_clear_error(logits, labels, message):
    with pytest.raises(CalibrationError, match=message):
        fit_calibration(logits, labels)


def test_calibration_travels_in_the_config_and_is_validated():
    cal = Calibration.temperature_scaling(1.5, 3, "folder/val", 30)
    config = PCNNConfig(num_classes=3, calibration=cal)
    again = PCNNConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.calibration == cal and again.calibration.temperature == pytest.approx(1.5)
    with pytest.raises(UsageError, match="calibration has 3 classes, the model 4"):
        PCNNConfig(num_classes=4, calibration=cal)
    with pytest.raises(UsageError, match="scales must be positive"):
        Calibration("temperature", (0.0, 1.0), (0.0, 0.0))
    with pytest.raises(UsageError, match="unknown calibration keys"):
        Calibration.from_dict({"method": "temperature", "scale": [1.0], "bias": [0.0], "colour": 1})


def test_every_backend_applies_the_stored_calibration(tmp_path, caplog):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval()
    plain = tmp_path / "plain.safetensors"
    save_model(model, plain)
    cal = Calibration("vector", (0.5, 2.0, 1.0), (0.3, -0.2, 0.0), "synthetic", 10)
    model.config = PCNNConfig.from_dict({**model.config.to_dict(), "calibration": cal.to_dict()})
    path = tmp_path / "calibrated.safetensors"
    save_model(model, path)
    assert load_model(path).config.calibration == cal
    assert json.loads(path.with_suffix(".json").read_text())["config"]["calibration"]["scale"] == [0.5, 2.0, 1.0]
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        raw = model(x)[0]
    expected = (raw * torch.tensor([0.5, 2.0, 1.0]) + torch.tensor([0.3, -0.2, 0.0])).softmax(1).numpy()
    probs, regions = create_backend("torch", path)(x.numpy())
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert regions.shape == (4, 5, 3)
    pytest.importorskip("onnxruntime")
    probs_onnx, _ = create_backend("onnx", path, cache=tmp_path / "onnx")(x.numpy())
    np.testing.assert_allclose(probs_onnx, expected, atol=1e-4)
    with caplog.at_level(logging.WARNING, logger="pcnn_fer.calibration"):
        create_backend("torch", plain)
        create_backend("torch", plain)
    said = [r.getMessage() for r in caplog.records if "carries no calibration" in r.getMessage()]
    assert len(said) == 1 and "temperature 1" in said[0]  # an uncalibrated model loads, said once


def test_pcnn_calibrate_writes_a_calibrated_model_and_evaluate_reports_it(tmp_path, run_cli, make_image_folder):
    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval()
    with torch.no_grad():
        model.global_head.weight.mul_(20)  # far from calibrated: big logits
    source = tmp_path / "tiny.safetensors"
    save_model(model, source, extra={"validation": {"accuracy": 1.0}})
    root = make_image_folder(tmp_path / "data", ("happy", "sad", "surprise"), per_class=12, splits=("val", "test"))
    out = tmp_path / "cal.safetensors"
    code, stdout, err = run_cli(["calibrate", "--checkpoint", source, "--dataset", "folder", "--root", root,
                                 "--split", "val", "--folds", "3", "--out", out])
    assert code == 0, err
    assert "kept " in stdout and "two_fold: ECE" in stdout and "held-out temperature" in stdout
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["validation"] == {"accuracy": 1.0}  # the source's fields are kept
    report = info["calibration_report"]
    assert report["method"] in ("temperature", "vector") and report["fitted"]["calibration"]["num_samples"] == 36
    assert report["fitted"]["in_sample"]["nll"] <= report["raw"]["nll"] + 1e-6
    assert load_model(out).config.calibration.fitted_on == "folder/val"
    code, _, err = run_cli(["calibrate", "--checkpoint", source, "--dataset", "folder", "--root", root,
                            "--split", "val", "--out", out])
    assert code == 1 and "never overwrites" in err and err.count("\n") == 1
    code, stdout, err = run_cli(["evaluate", "--checkpoint", out, "--dataset", "folder", "--root", root,
                                 "--split", "test", "--backend", "torch", "--out", tmp_path / "ev"])
    assert code == 0, err
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(m["calibration"]) >= {"ece", "nll", "brier", "mean_confidence", "bins", "reliability",
                                     "model_calibration"}
    assert m["calibration"]["bins"] == 15 and m["calibration"]["model_calibration"]["fitted_on"] == "folder/val"
    assert set(m["risk_coverage"]["at"]) == {"100", "95", "90", "80", "70", "60", "50"}
    assert m["risk_coverage"]["curve"][-1][0] == 100.0
    assert "confidence: ECE" in stdout
    for name in ("reliability.png", "risk_coverage.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 1000


def test_pcnn_calibrate_refuses_a_one_class_split(tmp_path, run_cli, make_image_folder):
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise")).eval()
    source = tmp_path / "tiny.safetensors"
    save_model(model, source)
    root = make_image_folder(tmp_path / "data", ("happy",), per_class=6, splits=("val",))
    code, _, err = run_cli(["calibrate", "--checkpoint", source, "--dataset", "folder", "--root", root,
                            "--split", "val", "--method", "temperature", "--out", tmp_path / "c.safetensors"])
    assert code == 1 and "one class only" in err and err.count("\n") == 1
    assert not (tmp_path / "c.safetensors").exists()
