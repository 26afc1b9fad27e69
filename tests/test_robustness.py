"""``pcnn robustness``: region occlusions cover exactly the pixels of the model's own region crops, strength 0 is the
clean accuracy, the same seed gives the same corruptions and results, the batched run (every corruption of a block
of faces in turn, on the BN-folded model) gives the one-corruption-at-a-time results, the seeded face subset and the
95 % intervals, the estimate printed first, and bad arguments fail with one line; plus an end-to-end run on a
synthetic image folder with a tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcnn_fer import create_model, save_model
from pcnn_fer.cli import main
from pcnn_fer.data.loader import seed_for
from pcnn_fer.engine.evaluate import metrics_of_logits
from pcnn_fer.models.pcnn import REGIONS, FaceRegions
from pcnn_fer.robustness import run as run_module
from pcnn_fer.robustness.corruptions import CORRUPTIONS, GREY, MAX_STRENGTH, expand_names
from pcnn_fer.robustness.run import corrupted_logits, inference_model, run_benchmark
from pcnn_fer.robustness.stats import mean_interval, subset_rows, wilson_interval

CLASSES = ("happiness", "sadness", "surprise")
#: The real ``pcnn`` console script (its module when the script is not on PATH).
PCNN = [shutil.which("pcnn")] if shutil.which("pcnn") else [sys.executable, "-m", "pcnn_fer.cli"]


def faces(n: int = 6, channels: int = 1, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Random uint8 faces that never hold the grey fill value (so every filled pixel shows as changed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (n, channels, size, size), generator=g, dtype=torch.uint8)
    return x + (x >= GREY).to(torch.uint8)


@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny PCNN over three classes, in eval mode."""
    torch.manual_seed(0)
    return create_model("tiny", num_classes=3, classes=CLASSES).eval()


@pytest.mark.parametrize("size, crop_fractions", [(48, (0.5, 0.65, 0.5)), (53, (0.4, 0.65, 0.55))])
@pytest.mark.parametrize("region", REGIONS)
def test_region_occlusion_covers_that_region_and_nothing_else(region, size, crop_fractions):
    model = create_model("tiny", crop_fractions=crop_fractions).eval()
    x = faces(channels=3, size=size)
    y = CORRUPTIONS[f"{region}:grey"](x, MAX_STRENGTH, crop_fractions=model.config.crop_fractions)
    # through the model's own FaceRegions: that branch's crop is all grey, every other crop is untouched
    for name, before, after in zip(REGIONS, model.regions(x.float()), model.regions(y.float())):
        if name == region:
            assert (after == GREY).all()
        else:
            assert torch.equal(before, after), name
    # lower strengths cover a centred part of the box: fewer pixels, never outside it
    top, bottom, left, right = FaceRegions(crop_fractions).boxes(size, size)[region]
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    for strength, fraction in ((1, 1 / 3), (2, 2 / 3)):
        for fill in ("grey", "noise"):
            changed = (CORRUPTIONS[f"{region}:{fill}"](x, strength, torch.Generator().manual_seed(0),
                                                       crop_fractions) != x).any(1)
            assert not (changed & ~inside).any(), (fill, strength)
            share = changed.float().mean(0)[inside].mean().item()
            assert fraction * 0.6 < share <= fraction * 1.25, (fill, strength, share)


def test_every_corruption_keeps_shape_dtype_and_changes_the_image():
    for channels in (1, 3):
        x = faces(n=4, channels=channels)
        for name, corruption in CORRUPTIONS.items():
            assert corruption(x, 0) is x
            for strength in range(1, MAX_STRENGTH + 1):
                y = corruption(x, strength, torch.Generator().manual_seed(1))
                assert y.dtype == torch.uint8 and y.shape == x.shape, name
                assert (y != x).any(), (name, strength)
    with pytest.raises(ValueError, match="strength"):
        CORRUPTIONS["blur"](faces(), MAX_STRENGTH + 1)
    with pytest.raises(ValueError, match="uint8"):
        CORRUPTIONS["blur"](faces().float(), 1)


def test_same_seed_same_corruption_other_seed_other_corruption():
    x = faces(n=8, channels=3)
    random = ("patch:noise", "hand", "rotate", "shift", "scale", "mouth:noise")
    for name in random:
        a = CORRUPTIONS[name](x, 2, torch.Generator().manual_seed(5))
        b = CORRUPTIONS[name](x, 2, torch.Generator().manual_seed(5))
        c = CORRUPTIONS[name](x, 2, torch.Generator().manual_seed(6))
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name


def test_strength_zero_is_clean_and_results_repeat(tiny):
    x = faces(n=40, channels=1)
    labels = torch.arange(40) % 3
    mapping = {0: 0, 1: 1, 2: 2}
    names = ["mouth:noise", "hand", "rotate", "jpeg"]
    first = run_benchmark(tiny, x, labels, mapping, CLASSES, names, [0, 2], seed=3, batch_size=16, progress=False)
    for name in names:
        zero = first["corruptions"][name]["results"][0]
        assert zero["strength"] == 0
        assert zero["accuracy"] == first["clean"]["accuracy"]
        assert zero["mean_class_accuracy"] == first["clean"]["mean_class_accuracy"]
    again = run_benchmark(tiny, x, labels, mapping, CLASSES, names, [0, 2], seed=3, batch_size=7, progress=False)
    assert again == first  # same seed, other batch size: the same numbers
    # the corrupted images do not depend on the batch size either (fixed chunks, one generator each)
    big = faces(n=300, channels=1)
    assert torch.equal(corrupted_logits(tiny, big, "hand", 3, seed=1, batch_size=300).argmax(1),
                       corrupted_logits(tiny, big, "hand", 3, seed=1, batch_size=64).argmax(1))
    summary = first["summary"]
    assert set(summary) == {"occlusion", "pose", "quality", "all", "regions"}
    assert summary["pose"]["accuracy"] == first["corruptions"]["rotate"]["results"][1]["accuracy"]
    assert summary["regions"]["mouth"] == first["corruptions"]["mouth:noise"]["results"][1]["accuracy"]
    assert summary["regions"]["left_eye"] is None


def with_random_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` (in place, eval mode) with random BatchNorm statistics and affines, so that folding them into the
    convolutions is not the identity it is at initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def spy_logits(monkeypatch) -> list[torch.Tensor]:
    """The logits :func:`run_benchmark` scores, in the order it scores them (clean, then each corruption's
    strengths ≥ 1 in order), recorded around the real :func:`metrics_of_logits`."""
    seen: list[torch.Tensor] = []

    def recording(logits, *args):
        seen.append(logits.clone())
        return metrics_of_logits(logits, *args)

    monkeypatch.setattr(run_module, "metrics_of_logits", recording)
    return seen


#: Corruptions with random choices (positions, signs, noise) and deterministic ones, for the batched-path tests.
MIXED = ["mouth:noise", "hand", "rotate", "left_eye:grey"]


@pytest.mark.slow
def test_batched_run_equals_one_corruption_at_a_time(tiny, monkeypatch):
    """Block by block, every corruption of a block in turn (270 faces: a block of 256, then a short one) gives the
    logits of the plain one-corruption-at-a-time path, face for face, for the same seed."""
    x, labels, mapping = faces(n=270, channels=1, seed=4), torch.arange(270) % 3, {0: 0, 1: 1, 2: 2}
    seen = spy_logits(monkeypatch)
    result = run_benchmark(tiny, x, labels, mapping, CLASSES, MIXED, [0, 1, 3], seed=2, batch_size=64,
                           progress=False, optimize=False)
    keys = [(None, 0)] + [(name, s) for name in MIXED for s in (1, 3)]
    assert len(seen) == len(keys)
    for (name, strength), batched in zip(keys, seen):
        reference = corrupted_logits(tiny, x, name, strength, seed=2, batch_size=270)
        assert torch.allclose(batched, reference, atol=1e-5, rtol=0), (name, strength)
        m = metrics_of_logits(reference, labels, mapping, CLASSES, 3)
        row = (result["clean"] if name is None else
               next(r for r in result["corruptions"][name]["results"] if r["strength"] == strength))
        assert row["accuracy"] == m["accuracy"] and row["mean_class_accuracy"] == m["mean_class_accuracy"]
        correct = round(m["accuracy"] * 270 / 100)
        assert row["accuracy_ci95"] == wilson_interval(correct, 270)
    # another seed draws other corruptions: the comparison above can tell seeds apart
    assert not torch.allclose(corrupted_logits(tiny, x, "hand", 3, seed=3), seen[keys.index(("hand", 3))])


@pytest.mark.parametrize("preset, size", [("tiny", 48), ("tiny", 53), ("tiny-resnet", 48)])
def test_inference_model_gives_the_same_predictions(preset, size, monkeypatch):
    """The BN-folded (PCNN: pair-stacked) channels_last model run_benchmark uses by default predicts what the model
    as loaded predicts, for a PCNN, one of odd input size (no pairing) and a baseline; BatchNorm statistics random
    so that the fold changes the weights."""
    torch.manual_seed(0)
    model = with_random_batchnorm(create_model(preset, num_classes=3, classes=CLASSES, input_size=size))
    fast = inference_model(model)
    assert fast is not model and type(fast).__name__ == ("InferencePCNN" if preset == "tiny" and size == 48
                                                          else type(model).__name__)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # all folded
    x, labels, mapping = faces(n=100, channels=1, size=size, seed=5), torch.arange(100) % 3, {0: 0, 1: 1, 2: 2}
    seen = spy_logits(monkeypatch)
    names = ["mouth:noise", "rotate", "blur"]
    fast_result = run_benchmark(model, x, labels, mapping, CLASSES, names, [2], seed=1, batch_size=32,
                                progress=False)
    plain_result = run_benchmark(model, x, labels, mapping, CLASSES, names, [2], seed=1, batch_size=32,
                                 progress=False, optimize=False)
    fast_logits, plain_logits = seen[: len(seen) // 2], seen[len(seen) // 2:]
    for a, b in zip(fast_logits, plain_logits):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, float(b.abs().max()))
        assert torch.equal(a.argmax(1), b.argmax(1))
    for key in ("clean", "corruptions", "summary"):
        assert fast_result[key] == plain_result[key], key
    assert "folded" in fast_result["inference"] and "as loaded" in plain_result["inference"]
    assert ("paired" in fast_result["inference"]) == (preset == "tiny" and size == 48)


def test_estimate_comes_after_the_first_clean_block_only(tiny):
    """``on_estimate`` is called once, after the first block's clean pass and before any corrupted pass, with the
    time of the whole run (faces × passes at the measured rate)."""
    forwards: list[int] = []
    handle = tiny.register_forward_hook(lambda *_: forwards.append(1))
    calls: list[tuple[int, float, float]] = []
    try:
        run_benchmark(tiny, faces(n=300), torch.arange(300) % 3, {0: 0, 1: 1, 2: 2}, CLASSES, ["blur", "shift"],
                      [1, 2], batch_size=64, progress=False, optimize=False,
                      on_estimate=lambda seconds, rate: calls.append((len(forwards), seconds, rate)))
    finally:
        handle.remove()
    assert len(calls) == 1
    done, seconds, rate = calls[0]
    assert done == 256 // 64  # one block (one chunk of 256 faces) clean, nothing corrupted yet
    assert len(forwards) == 5 * (4 + 1)  # 1 + 2 × 2 passes over blocks of 256 and 44 faces
    assert rate > 0 and seconds == pytest.approx(300 * 5 / rate)


def test_subset_rows_is_seeded_sorted_and_none_for_the_full_split():
    rows = subset_rows(1000, 300, seed=7)
    assert rows.dtype == torch.long and rows.numel() == 300 and rows.unique().numel() == 300
    assert torch.equal(rows, rows.sort().values) and 0 <= int(rows.min()) and int(rows.max()) < 1000
    assert torch.equal(rows, subset_rows(1000, 300, seed=7))  # the same faces for every model and every run
    assert not torch.equal(rows, subset_rows(1000, 300, seed=8))
    assert torch.equal(subset_rows(1000, 100, seed=7), subset_rows(1000, 100, seed=7))
    # the rule of the first --max-samples (so older subset results repeat)
    g = torch.Generator().manual_seed(seed_for(7, 104729, 1000))
    assert torch.equal(rows, torch.randperm(1000, generator=g)[:300].sort().values)
    for max_samples in (0, 1000, 5000):
        assert subset_rows(1000, max_samples, seed=7) is None


def test_wilson_interval_known_values():
    # hand computation with z = 1.96: centre (p + z²/2n) / (1 + z²/n), half z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 27.75], abs=0.01)
    assert wilson_interval(10, 10) == pytest.approx([72.25, 100.0], abs=0.01)
    assert wilson_interval(50, 100) == pytest.approx([40.38, 59.62], abs=0.01)
    assert wilson_interval(850, 1000) == pytest.approx([82.65, 87.08], abs=0.01)
    assert wilson_interval(0, 0) is None


def test_mean_interval_keeps_the_correlation_of_runs_on_the_same_faces():
    one = torch.tensor([[1] * 50 + [0] * 50])
    # one run: the normal approximation p ± z·s/√n with the sample standard deviation
    half = 1.959963984540054 * (0.25 * 100 / 99) ** 0.5 / 10
    assert mean_interval(one) == pytest.approx([100 * (0.5 - half), 100 * (0.5 + half)])
    assert mean_interval(torch.cat([one, one])) == pytest.approx(mean_interval(one))  # identical runs: no gain
    assert mean_interval(torch.cat([one, 1 - one])) == pytest.approx([50.0, 50.0])  # every face right once of two
    assert mean_interval(torch.ones(3, 20)) == pytest.approx([100.0, 100.0])
    assert mean_interval(torch.zeros(0, 20)) is None and mean_interval(torch.zeros(3, 0)) is None


def test_expand_names():
    assert expand_names(None) == list(CORRUPTIONS)
    assert expand_names(["mouth", "pose"]) == ["mouth:grey", "mouth:noise", "rotate", "shift", "scale"]
    assert expand_names(["jpeg", "quality"]) == ["blur", "lowres", "jpeg"]
    with pytest.raises(ValueError, match="unknown corruption 'fog'"):
        expand_names(["fog"])


# --- command line ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-class synthetic test folder (24 grayscale 48×48 faces) and a tiny model file for its classes."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for ci, c in enumerate(("happy", "sad", "surprise")):
        (root / "test" / c).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 80, (48, 48)) + 80 * ci
            Image.fromarray(img.astype(np.uint8), "L").save(root / "test" / c / f"{c}_{i}.png")
    torch.manual_seed(1)
    path = save_model(create_model("tiny", num_classes=3, classes=CLASSES),
                      tmp_path_factory.mktemp("model") / "tiny.safetensors")
    return root, path


def test_cli_end_to_end_matches_evaluate(folder_and_model, tmp_path, capsys):
    root, model = folder_and_model
    common = ["--checkpoint", model, "--dataset", "folder", "--root", root, "--split", "test"]
    # the same torch model as robustness runs, so that equal accuracies are exact
    assert main([str(a) for a in ["evaluate", *common, "--backend", "torch", "--out", tmp_path / "ev"]]) == 0
    args = ["robustness", *common, "--out", tmp_path / "rob", "--corruptions", "left_eye:grey", "sunglasses",
            "shift", "lowres", "--strengths", "0", "3", "--no-progress", "--seed", "4"]
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert report["clean"]["accuracy"] == metrics["accuracy"]
    assert report["clean"]["mean_class_accuracy"] == metrics["mean_class_accuracy"]
    assert list(report["corruptions"]) == ["left_eye:grey", "sunglasses", "shift", "lowres"]
    for entry in report["corruptions"].values():
        assert [r["strength"] for r in entry["results"]] == [0, 3]
        assert entry["results"][0]["accuracy"] == metrics["accuracy"]
    assert report["num_samples"] == 24 and report["seed"] == 4 and report["arch"] == "pcnn"
    assert (tmp_path / "rob" / "robustness.png").stat().st_size > 10_000
    assert "clean" in out and "robustness.json" in out


def test_cli_prints_the_estimate_first_and_intervals(folder_and_model, tmp_path, capsys):
    """The estimated time is printed before the result table; a seeded subset (--max-samples) is the same faces on
    every run and every accuracy is reported with its 95 % interval; --max-samples 0 is the full split."""
    root, model = folder_and_model
    common = ["--checkpoint", model, "--dataset", "folder", "--root", root, "--split", "test", "--no-progress",
              "--corruptions", "mouth:grey", "rotate", "--strengths", "0", "2"]
    reports = []
    for run in ("a", "b"):
        args = ["robustness", *common, "--out", tmp_path / run, "--max-samples", 10, "--seed", 3]
        assert main([str(a) for a in args]) == 0
        out = capsys.readouterr().out
        assert "estimated time: " in out and "accuracy with 95% confidence interval on 10 faces" in out
        assert out.index("estimated time: ") < out.index("accuracy with 95% confidence interval")
        assert "10 faces x 3 passes" in out and "--max-samples 0 runs the full split" in out
        reports.append(json.loads((tmp_path / run / "robustness.json").read_text()))
    report = reports[0]
    assert report["num_samples"] == 10 and report["split_samples"] == 24 and report["max_samples"] == 10
    assert "subset of 10 of 24 faces (seed 3)" in report["sampling"]
    low, high = report["clean"]["accuracy_ci95"]
    assert 0 <= low <= report["clean"]["accuracy"] <= high <= 100 and high - low > 10  # 10 faces: a wide interval
    for entry in report["corruptions"].values():
        for row in entry["results"]:
            assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
    assert report["summary"]["all"]["accuracy_ci95"] is not None and report["estimated_seconds"] > 0
    assert {k: reports[1][k] for k in ("clean", "corruptions", "summary")} == \
        {k: report[k] for k in ("clean", "corruptions", "summary")}
    assert main([str(a) for a in ["robustness", *common, "--out", tmp_path / "full", "--max-samples", 0]]) == 0
    out = capsys.readouterr().out
    full = json.loads((tmp_path / "full" / "robustness.json").read_text())
    assert full["num_samples"] == 24 and full["sampling"] == "the full split (24 faces)" and full["max_samples"] == 0
    assert "faces: the full split (24 faces)" in out and "--max-samples 0 runs" not in out


@pytest.mark.parametrize("extra, message", [
    (["--max-samples", "-1"], "--max-samples must be 0 (the full split) or positive, got -1"),
    (["--batch-size", "0"], "--batch-size must be positive, got 0"),
    (["--corruptions", "fog"], "unknown corruption 'fog'"),
    (["--strengths", "-1"], "--strengths: -1 is out of range"),
    (["--checkpoint", "/nonexistent/model.safetensors"], "no such checkpoint: /nonexistent/model.safetensors"),
])
def test_bad_arguments_fail_with_one_line(folder_and_model, tmp_path, extra, message):
    root, model = folder_and_model
    args = ["--checkpoint", str(model), "--dataset", "folder", "--root", str(root), "--out", str(tmp_path / "r"),
            *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([*PCNN, "robustness", *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "r").exists()
