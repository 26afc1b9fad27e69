"""``pcnn robustness``: region occlusions cover exactly the pixels of the model's own region crops, strength 0 is the
clean accuracy, the same seed gives the same corruptions and results, and bad arguments fail with one line; plus an
end-to-end run on a synthetic image folder with a tiny model."""

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
from pcnn_fer.models.pcnn import REGIONS, FaceRegions
from pcnn_fer.robustness.corruptions import CORRUPTIONS, GREY, MAX_STRENGTH, expand_names
from pcnn_fer.robustness.run import corrupted_logits, run_benchmark

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


@pytest.mark.parametrize("extra, message", [
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
