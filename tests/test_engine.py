"""Training engine: recipes, batches, schedule, checkpoints, and end-to-end ``pcnn train`` / ``--resume`` / ``cv`` on
a synthetic image folder and on real CK+48 (``../shared/data/ckplus48`` or ``$PCNN_FER_SHARED``; skipped if absent).

Everything uses the ``tiny`` recipe (a few optimiser steps) on one CPU thread, so the file runs in well under a minute.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcnn_fer import load_model, save_model
from pcnn_fer.data.loader import TensorData, epoch_batches
from pcnn_fer.engine.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from pcnn_fer.engine.loop import confusion_matrix, metrics_from_confusion
from pcnn_fer.engine.optim import lr_factor
from pcnn_fer.engine.recipe_table import format_recipes, recipe_cost
from pcnn_fer.engine.recipes import RECIPES, get_recipe


@pytest.fixture
def ckplus(real_dataset) -> Path:
    """The real CK+48 root (``../shared/data/ckplus48``); skips the test without it."""
    root = real_dataset("ckplus48")
    if not (root / "CK+48").is_dir():
        pytest.skip(f"CK+48 not found under {root}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory, make_image_folder) -> Path:
    """A 3-class synthetic image folder with train/val/test splits."""
    return make_image_folder(tmp_path_factory.mktemp("folder"))




# --- units ---------------------------------------------------------------------------------------------------------


def test_recipes_are_typed_and_match_the_spec():
    paper = get_recipe("paper")
    assert (paper.model, paper.input_size, paper.optimizer, paper.lr, paper.momentum, paper.weight_decay) == (
        "paper", 224, "sgd", 0.01, 0.9, 1e-4)
    assert (paper.schedule, paper.step_epochs, paper.gamma, paper.epochs, paper.batch_size, paper.augment) == (
        "step", 15, 0.5, 100, 128, "paper")
    fc = get_recipe("ferplus-compact")
    assert (fc.model, fc.input_size, fc.nesterov, fc.lr, fc.weight_decay, fc.schedule, fc.warmup_epochs,
            fc.epochs, fc.batch_size, fc.augment, fc.label_rule, fc.val_label_rule) == (
        "compact", 48, True, 0.01, 5e-3, "cosine", 2, 60, 128, "strong", "probability", "majority")
    assert get_recipe("tiny").model == "tiny" and get_recipe("ferplus-cpu").model == "small"
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")
    assert paper.with_overrides(epochs=3, lr=0.1).epochs == 3
    with pytest.raises(ValueError):
        paper.with_overrides(epochs=0)


def test_recipe_cost_and_listing():
    params, gflops = recipe_cost(get_recipe("tiny"))
    assert params > 100_000 and 0.01 < gflops < 1
    table = format_recipes()
    for name in RECIPES:
        assert name in table


@pytest.mark.slow
def test_recorded_recipe_costs_are_the_counted_ones():
    """--list-recipes reads the costs from assets/recipe_costs.json (no torch, issue 33); every built-in recipe is
    there and equal to a fresh count (on failure: pcnn_fer.engine.recipe_table.write_recipe_costs())."""
    from pcnn_fer.engine.recipe_table import _recorded, cost_key, recorded_cost

    recorded = _recorded()
    for recipe in RECIPES.values():
        assert cost_key(recipe) in recorded, f"{recipe.name}: not in recipe_costs.json"
        params, gflops = recipe_cost(recipe)
        assert recorded_cost(recipe) == (params, pytest.approx(gflops, rel=1e-5)), recipe.name
    assert set(recorded) == {cost_key(r) for r in RECIPES.values()}  # nothing stale left


def test_list_presets_cli(run_cli):
    code, out, _ = run_cli(["train", "--list-presets"])
    assert code == 0 and "ferplus-compact" in out and "GFLOPs" in out


def test_epoch_batches_deterministic_and_sharded():
    a = epoch_batches(103, 16, epoch=3, seed=1)
    b = epoch_batches(103, 16, epoch=3, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), torch.cat(epoch_batches(103, 16, epoch=4, seed=1)))
    assert [len(x) for x in a] == [16] * 6  # partial last batch dropped
    shards = [epoch_batches(103, 16, epoch=0, seed=0, rank=r, world_size=2, drop_last=False) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    seen = torch.cat([torch.cat(s) for s in shards])
    assert set(seen.tolist()) == set(range(103))  # padded by wrapping, every sample drawn
    assert len(epoch_batches(5, 16, epoch=0)) == 1  # a lone partial batch is kept
    w = torch.tensor([1.0] * 90 + [9.0] * 10)
    drawn = torch.cat(epoch_batches(100, 10, epoch=0, sample_weights=w))
    assert (drawn >= 90).float().mean() > 0.3  # balanced sampling oversamples the rare class


def test_lr_schedules():
    paper = get_recipe("paper")
    assert lr_factor(0, paper, 10) == 1.0
    assert lr_factor(15 * 10, paper, 10) == 0.5 and lr_factor(30 * 10 + 3, paper, 10) == 0.25
    fc = get_recipe("ferplus-compact")
    assert lr_factor(0, fc, 100) == pytest.approx(1 / 200)  # linear warm-up over 2 epochs
    assert lr_factor(199, fc, 100) == pytest.approx(1.0)
    assert lr_factor(60 * 100, fc, 100) == pytest.approx(0.0, abs=1e-9)
    mid = lr_factor(200 + (6000 - 200) // 2, fc, 100)
    assert mid == pytest.approx(0.5, abs=0.01)


def test_metrics_from_confusion():
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 1]), 4)
    assert cm.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    m = metrics_from_confusion(cm, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["per_class_accuracy"] == {"a": 100.0, "b": 50.0, "c": 50.0, "d": None}
    assert m["mean_class_accuracy"] == pytest.approx(200 / 3)


def test_tensor_data_targets():
    data = TensorData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 2, 1, 2]), None, ("a", "b", "c"))
    t = data.targets(torch.tensor([1, 2]))
    assert t.tolist() == [[0, 0, 1], [0, 1, 0]]
    assert data.subset([3, 0]).labels.tolist() == [2, 0]


def test_checkpoint_roundtrip_and_rng(tmp_path):
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(), __import__("random").random())
    path = save_checkpoint(tmp_path / "last.pt", {"epoch": 1, "rng": state, "x": torch.arange(3)})
    loaded = load_checkpoint(tmp_path)  # a run directory works too
    assert loaded["epoch"] == 1 and torch.equal(loaded["x"], torch.arange(3))
    restore_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)


# --- end to end on a synthetic folder --------------------------------------------------------------------------------


def test_train_folder_end_to_end(folder, tmp_path, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--out", run,
                              "--no-progress", "--epochs", "3"])
    assert code == 0, err
    for name in ("last.pt", "model.safetensors", "model.json", "history.csv", "history.json", "curves.png",
                 "results.json"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert set(history[0]) >= {"epoch", "lr", "train_loss", "train_acc", "val_acc", "val_mean_class_acc", "time",
                               "img_per_s"}
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:8] == ["epoch", "lr", "train_loss", "train_acc", "val_acc", "val_mean_class_acc", "time",
                          "img_per_s"]
    results = json.loads((run / "results.json").read_text())
    assert results["selected_on"] == "val" and results["test_selection"] is False and results["finished"]
    model = load_model(run)
    assert model.classes == ("happiness", "surprise", "sadness") or set(model.classes) == {
        "happiness", "sadness", "surprise"}
    info = json.loads((run / "model.json").read_text())
    assert info["validation"]["accuracy"] == max(r["val_acc"] for r in history)
    assert info["training"]["recipe"]["name"] == "tiny"
    # a second train into the same directory is refused (resume instead)
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--out", run,
                            "--no-progress"])
    assert code == 1 and "--resume" in err and len(err.strip().splitlines()) == 1


def test_select_on_test_is_refused_unless_allowed(folder, tmp_path, run_cli):
    args = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--no-progress", "--epochs", "1",
            "--select-on", "test"]
    code, _, err = run_cli([*args, "--out", tmp_path / "a"])
    assert code == 1 and "test split" in err and "--allow-test-selection" in err
    code, _, err = run_cli([*args, "--out", tmp_path / "b", "--allow-test-selection"])
    assert code == 0, err
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["test_selection"] is True and results["selected_on"] == "test"
    assert json.loads((tmp_path / "b" / "model.json").read_text())["training"]["test_selection"] is True


@pytest.mark.parametrize("args, message", [
    (["--dataset", "folder", "--root", "/nonexistent/dir", "--recipe", "tiny"], "does not exist"),
    (["--dataset", "folder", "--root", "{folder}", "--recipe", "nope"], "unknown recipe"),
    (["--dataset", "nope", "--root", "{folder}", "--recipe", "tiny"], "unknown dataset"),
    (["--dataset", "folder", "--root", "{folder}", "--recipe", "tiny", "--amp", "fp16", "--device", "cpu"],
     "needs a CUDA device"),
    (["--dataset", "folder", "--root", "{folder}", "--recipe", "tiny", "--init-resnet", "/nonexistent.pth"],
     "no such weights file"),
    (["--dataset", "folder", "--root", "{folder}", "--recipe", "tiny", "--mode", "majority"],
     "dataset 'folder' has no --mode"),
    (["--dataset", "folder", "--root", "{folder}", "--recipe", "tiny", "--label-rule", "majority"],
     "dataset 'folder' has no --label-rule"),
    (["--dataset", "ferplus", "--root", "{folder}", "--recipe", "tiny", "--image-variant", "aligned"],
     "dataset 'ferplus' has no --image-variant; its option is --label-rule"),
    (["--recipe", "tiny"], "missing --dataset, --root, --out"),
])
def test_train_bad_input(folder, tmp_path, run_cli, args, message):
    args = [a.replace("{folder}", str(folder)) for a in args]
    if "--recipe" in args and "missing" not in message:
        args += ["--out", str(tmp_path / "run")]
    code, _, err = run_cli(["train", *args, "--no-progress"])
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_empty_split(tmp_path, run_cli, make_image_folder):
    root = make_image_folder(tmp_path / "data", per_class=4, splits=("train",))
    for c in ("happy", "sad", "surprise"):
        (root / "val" / c).mkdir(parents=True)
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", root, "--recipe", "tiny", "--out",
                            tmp_path / "run", "--no-progress"])
    assert code == 1 and "empty" in err and len(err.strip().splitlines()) == 1, err


def test_resume_missing_or_corrupt(tmp_path, run_cli):
    code, _, err = run_cli(["train", "--resume", tmp_path])
    assert code == 1 and "no training checkpoint" in err
    (tmp_path / "last.pt").write_bytes(b"\x00" * 100)
    code, _, err = run_cli(["train", "--resume", tmp_path])
    assert code == 1 and "unreadable training checkpoint" in err and len(err.strip().splitlines()) == 1


# --- end to end on real CK+48 ----------------------------------------------------------------------------------------


def _states_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, dict):
            if not _states_equal(x, y):
                return False
        elif x != y and not (isinstance(x, float) and math.isnan(x) and math.isnan(y)):
            return False
    return True


@pytest.mark.slow
def test_ckplus_train_crash_resume_evaluate(tmp_path, run_cli, ckplus):
    common = ["--dataset", "ckplus", "--root", ckplus, "--recipe", "tiny", "--no-progress"]
    # A: two epochs in one go
    code, out, err = run_cli(["train", *common, "--out", tmp_path / "A"])
    assert code == 0, err
    assert "by subject" in out  # CK+ has no validation split: carved by subject
    # B: "crash" after epoch 1 (a leftover temp file from a torn write must not matter), then resume
    code, _, err = run_cli(["train", *common, "--out", tmp_path / "B", "--stop-after", "1"])
    assert code == 0, err
    assert load_checkpoint(tmp_path / "B")["epoch"] == 1
    (tmp_path / "B" / ".last.pt.torn.tmp").write_bytes(b"partial")
    code, out, err = run_cli(["train", "--resume", tmp_path / "B", "--no-progress"])
    assert code == 0, err
    assert "resuming" in out
    a, b = load_checkpoint(tmp_path / "A"), load_checkpoint(tmp_path / "B")
    assert a["epoch"] == b["epoch"] == 2
    assert _states_equal(a["model"], b["model"]), "resumed weights differ"
    assert _states_equal(a["optimizer"]["state"], b["optimizer"]["state"])
    assert a["scheduler"] == b["scheduler"] and a["best_epoch"] == b["best_epoch"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    sa = load_model(tmp_path / "A").state_dict()
    sb = load_model(tmp_path / "B").state_dict()
    assert _states_equal(sa, sb)
    # resuming a finished run is a no-op
    code, out, _ = run_cli(["train", "--resume", tmp_path / "B", "--no-progress"])
    assert code == 0 and "nothing to do" in out

    # evaluate the selected model on all of CK+ (the run dir works as --checkpoint)
    code, out, err = run_cli(["evaluate", "--checkpoint", tmp_path / "A", "--dataset", "ckplus", "--root", ckplus,
                              "--out", tmp_path / "eval"])
    assert code == 0, err
    assert "accuracy" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert list(metrics) == ["dataset", "split", "subset", "num_samples", "classes", "accuracy",
                             "mean_class_accuracy", "per_class_accuracy", "confusion_matrix", "calibration",
                             "risk_coverage", "checkpoint", "face_alignment"]
    assert set(metrics["calibration"]) >= {"ece", "nll", "brier"}
    assert metrics["face_alignment"] is None  # CK+48 images are face crops: not aligned by default
    assert metrics["dataset"] == "ckplus" and metrics["split"] == "all" and metrics["subset"] is None
    assert metrics["num_samples"] == 981
    assert metrics["classes"] == ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == 981
    assert cm.sum(1).tolist() == [135, 54, 177, 75, 207, 84, 249]  # rows = true class (CK+48 class counts)
    assert metrics["accuracy"] == pytest.approx(100 * np.trace(cm) / cm.sum())
    per_class = [metrics["per_class_accuracy"][c] for c in metrics["classes"]]
    assert per_class == pytest.approx((100 * np.diag(cm) / cm.sum(1)).tolist())
    assert metrics["mean_class_accuracy"] == pytest.approx(np.mean(per_class))
    assert metrics["checkpoint"] == str(tmp_path / "A")
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000


@pytest.mark.slow
def test_ckplus_cv_two_folds(tmp_path, run_cli, ckplus):
    code, out, err = run_cli(["cv", "--dataset", "ckplus", "--root", ckplus, "--folds", "10", "--only-folds", "0",
                              "3", "--recipe", "tiny", "--epochs", "1", "--out", tmp_path, "--no-progress"])
    assert code == 0, err
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert cv["folds"] == 10 and cv["complete"] is False and [f["fold"] for f in cv["per_fold"]] == [0, 3]
    accs = [f["accuracy"] for f in cv["per_fold"]]
    assert cv["accuracy_mean"] == pytest.approx(np.mean(accs)) and cv["accuracy_std"] == pytest.approx(np.std(accs))
    subjects = [set(f["test_subjects"]) for f in cv["per_fold"]]
    assert not subjects[0] & subjects[1]
    fold0 = json.loads((tmp_path / "fold00" / "metrics.json").read_text())
    train_subjects = {p.name.split("_")[0] for p in (ckplus / "CK+48").rglob("*.png")} - set(fold0["test_subjects"])
    assert train_subjects and not set(fold0["test_subjects"]) & train_subjects
    # re-running reuses finished folds
    code, out, _ = run_cli(["cv", "--dataset", "ckplus", "--root", ckplus, "--folds", "10", "--only-folds", "0",
                            "--recipe", "tiny", "--epochs", "1", "--out", tmp_path, "--no-progress"])
    assert code == 0 and "reusing" in out


# --- GPU-oriented pieces that also run on the CPU ------------------------------------------------------------------


def test_normalisation_tensors_are_made_once_per_device():
    from pcnn_fer.data.transforms import AUGMENT_PRESETS, BatchAugment, to_float

    images = torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8)
    augment = BatchAugment(48, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), AUGMENT_PRESETS["none"])
    out = augment(images)
    assert torch.allclose(out, to_float(images, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), atol=1e-4)  # identity warp
    cached = augment.normalize._tensors[images.device]
    augment(images)
    assert augment.normalize._tensors[images.device] is cached


def test_region_erasing_blanks_exactly_one_whole_region():
    """``region_erasing_p=1``: every sample loses exactly one of the model's five region boxes (the value 0 after
    normalisation) and keeps every other pixel; the boxes are the model's own (FaceRegions' cut points)."""
    from dataclasses import replace

    from pcnn_fer.data.transforms import AUGMENT_PRESETS, BatchAugment, to_float
    from pcnn_fer.models.pcnn import create_model, region_boxes

    model = create_model("tiny", num_classes=3)
    boxes = region_boxes(model.config, 48)
    config = replace(AUGMENT_PRESETS["none"], region_erasing_p=1.0)
    augment = BatchAugment(48, model.config.mean, model.config.std, config, boxes)
    images = torch.randint(1, 256, (64, 3, 48, 48), dtype=torch.uint8)
    clean = to_float(images, model.config.mean, model.config.std)
    out = augment(images, torch.Generator().manual_seed(0))
    erased = ((out - clean).abs() > 1e-3).any(1)  # (B, H, W): pixels the augmentation changed (identity warp ±1e-4)
    hit = []
    for b in range(len(images)):
        match = [i for i, (t, bt, lf, rt) in enumerate(boxes)
                 if erased[b, t:bt, lf:rt].all() and erased[b].sum() == (bt - t) * (rt - lf)]
        assert len(match) == 1, f"sample {b}: changed pixels are not exactly one region box"
        hit.append(match[0])
    assert (out[erased.unsqueeze(1).expand_as(out)] == 0).all()
    assert set(hit) == set(range(5))  # all five regions are drawn
    none = BatchAugment(48, model.config.mean, model.config.std, replace(config, region_erasing_p=0.0), boxes)
    assert torch.allclose(none(images, torch.Generator().manual_seed(0)), clean, atol=1e-4)
    with pytest.raises(ValueError, match="region boxes"):
        BatchAugment(48, model.config.mean, model.config.std, config)


def test_time_budget_lowers_epochs(folder, tmp_path, run_cli):
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--epochs", "50",
                              "--time-budget", "0.001", "--out", tmp_path, "--no-progress"])
    assert code == 0, err
    assert "time budget" in out and "training 1 epochs instead of 50" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["finished"] and results["epochs"] == 1 and results["recipe"]["epochs"] == 1
    assert load_checkpoint(tmp_path)["recipe"]["epochs"] == 1  # a resume keeps the shortened schedule


def test_balanced_sampling_and_resnet_init(folder, tmp_path, run_cli):
    from pcnn_fer.models.resnet import Trunk, make_stage, stage_channels

    trunk = Trunk(0.125, "lowres")
    _, _, c3, c4 = stage_channels(0.125)
    state = {**trunk.state_dict(), **{f"layer4.{k}": v for k, v in make_stage(c3, c4, 2).state_dict().items()},
             "fc.weight": torch.zeros(10, c4), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "resnet_tiny.pth")
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--epochs", "1",
                              "--balanced", "--init-resnet", tmp_path / "resnet_tiny.pth", "--out", tmp_path / "run",
                              "--no-progress"])
    assert code == 0, err
    assert "initialised the trunks" in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["options"]["balanced"] is True


def test_autocast_and_grad_scaler_branches_on_cpu():
    """The bf16 / fp16 (GradScaler) branches of the loop, exercised with CPU autocast (the CLI refuses fp16 on a
    CPU; the GradScaler path is for CUDA)."""
    from pcnn_fer.data.transforms import AUGMENT_PRESETS, BatchAugment
    from pcnn_fer.engine.loop import evaluate_data, train_epoch
    from pcnn_fer.loss import TwoPhaseLoss
    from pcnn_fer.models.pcnn import create_model

    torch.manual_seed(0)
    model = create_model("tiny", num_classes=3, classes=("happiness", "sadness", "surprise"))
    model = model.to(memory_format=torch.channels_last)
    data = TensorData(torch.randint(0, 256, (16, 1, 48, 48), dtype=torch.uint8), torch.randint(0, 3, (16,)), None,
                      model.classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    augment = BatchAugment(48, model.config.mean, model.config.std, AUGMENT_PRESETS["strong"])
    for amp, scaler in (("bf16", None), ("fp16", torch.amp.GradScaler("cpu"))):
        stats = train_epoch(model, data, epoch_batches(16, 8, 0), TwoPhaseLoss(), opt, None, augment,
                            torch.Generator().manual_seed(0), amp=amp, scaler=scaler, channels_last=True,
                            progress=False)
        assert stats["samples"] == 16 and math.isfinite(stats["loss"])
        metrics = evaluate_data(model, data, 48, model.config.mean, model.config.std, amp=amp, channels_last=True)
        assert metrics["num_samples"] == 16


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted_run(folder, tmp_path, run_cli, pcnn_popen):
    """A real crash: SIGKILL the training process as soon as its first checkpoint exists (epoch 1 of 6), resume,
    compare with an uninterrupted run."""
    common = ["train", "--dataset", "folder", "--root", str(folder), "--recipe", "tiny", "--epochs", "6",
              "--no-progress"]
    code, _, err = run_cli([*common, "--out", tmp_path / "A"])
    assert code == 0, err
    proc = pcnn_popen([*common, "--out", tmp_path / "B"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (tmp_path / "B" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]  # killed, not finished
    killed_at = load_checkpoint(tmp_path / "B")["epoch"]
    assert 1 <= killed_at < 6, killed_at  # the kill came in the middle of the run
    code, out, err = run_cli(["train", "--resume", tmp_path / "B", "--no-progress"])
    assert code == 0, err
    assert f"resuming {tmp_path / 'B'} after epoch {killed_at}" in out
    a, b = load_checkpoint(tmp_path / "A"), load_checkpoint(tmp_path / "B")
    assert b["epoch"] == 6
    assert _states_equal(a["model"], b["model"]) and _states_equal(a["optimizer"]["state"], b["optimizer"]["state"])
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]


def test_labels_without_images_is_one_clear_line(tmp_path, run_cli, real_dataset):
    rafdb = real_dataset("rafdb")
    if not (rafdb / "EmoLabel").is_dir():
        pytest.skip("RAF-DB labels not found")
    code, _, err = run_cli(["train", "--dataset", "rafdb", "--root", rafdb, "--recipe", "tiny",
                            "--out", tmp_path, "--no-progress"])
    assert code == 1 and "none of the" in err and "images exist" in err and len(err.strip().splitlines()) == 1


# --- weight averaging (EMA) ------------------------------------------------------------------------------------------


def test_weight_average_follows_the_ema_formula_and_round_trips():
    from pcnn_fer import create_model
    from pcnn_fer.engine.ema import WeightAverage

    model = create_model("tiny", num_classes=3)
    ema = WeightAverage(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.num_batches_tracked.fill_(7)
    ema.update(model)  # t = 1: decay min(0.5, 2/11) = 2/11
    name, param = next(iter(model.named_parameters()))
    expected = start[name] * (2 / 11) + param.detach() * (9 / 11)
    assert torch.allclose(ema.module.state_dict()[name], expected, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())
    ints = [k for k, v in model.state_dict().items() if not v.dtype.is_floating_point]
    assert ints and all(torch.equal(ema.module.state_dict()[k], model.state_dict()[k]) for k in ints)
    for _ in range(50):
        ema.update(model)  # converges to the (constant) current weights
    assert torch.allclose(ema.module.state_dict()[name], param.detach(), atol=1e-6)
    other = WeightAverage(create_model("tiny", num_classes=3), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 51 and _states_equal(other.module.state_dict(), ema.module.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)
    with pytest.raises(ValueError, match="EMA decay"):
        get_recipe("tiny").with_overrides(ema_decay=-0.1)


@pytest.mark.slow
def test_ema_run_ships_the_average_and_resumes_exactly(folder, tmp_path, run_cli):
    """With --ema-decay the selected model file holds the averaged weights, and a resumed run equals a straight one."""
    from safetensors.torch import load_file

    common = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--ema-decay", "0.9",
              "--no-progress"]
    code, _, err = run_cli([*common, "--epochs", "1", "--out", tmp_path / "one"])
    assert code == 0, err
    state = load_checkpoint(tmp_path / "one")
    assert state["recipe"]["ema_decay"] == 0.9 and state["ema"]["updates"] == 2  # 36 faces, batch 16: 2 full steps
    shipped = load_file(str(tmp_path / "one" / "model.safetensors"))
    ema_weights, raw_weights = state["ema"]["model"], state["model"]
    key = next(k for k, v in raw_weights.items() if v.dtype.is_floating_point and v.ndim > 1)
    assert torch.equal(shipped[key].float(), ema_weights[key].float())
    assert not torch.equal(ema_weights[key], raw_weights[key])

    code, _, err = run_cli([*common, "--epochs", "3", "--out", tmp_path / "A"])
    assert code == 0, err
    code, _, err = run_cli([*common, "--epochs", "3", "--stop-after", "1", "--out", tmp_path / "B"])
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", tmp_path / "B", "--no-progress"])
    assert code == 0, err
    a, b = load_checkpoint(tmp_path / "A"), load_checkpoint(tmp_path / "B")
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    assert _states_equal(a["ema"]["model"], b["ema"]["model"])


# --- fine-tuning (--init), precision (--amp), protocols ---------------------------------------------------------


def _head_rows(model, key: str = "global_head.weight") -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {c: state[key][i] for i, c in enumerate(model.classes)}


@pytest.mark.parametrize("target", [
    ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"),  # CK+: contempt, no neutral
    ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"),  # FER2013: neutral, no contempt
])
def test_init_maps_head_rows_by_class_name(checkpoint, target):
    from pcnn_fer.engine.finetune import init_from_pretrained
    from pcnn_fer.models.pcnn import create_model
    from pcnn_fer.weights import load_model

    source = load_model(checkpoint)  # 8 FERPlus classes
    torch.manual_seed(1)
    model = create_model("tiny", num_classes=len(target), classes=target)
    report = init_from_pretrained(model, checkpoint)
    assert report.class_map == {c: c for c in target}
    assert report.dropped_classes == [c for c in source.classes if c not in target]
    for key in ("global_head.weight", "global_head.bias", "local_heads.mouth.weight", "local_heads.left_eye.bias"):
        src, new = _head_rows(source, key), _head_rows(model, key)
        for c in target:
            assert torch.equal(new[c], src[c]), (key, c)
    body = "global_trunk.layer1.0.conv1.weight"
    assert torch.equal(model.state_dict()[body], source.state_dict()[body])
    assert len(report.sha256) == 64 and report.copied_tensors > 100


def test_init_from_the_bundled_model_leaves_its_occlusion_heads_behind():
    """The bundled model carries occlusion heads trained on its frozen features; a fine-tune starts without them
    (they would read a trunk that training changes) instead of refusing the architecture."""
    from dataclasses import replace

    from pcnn_fer.engine.finetune import init_from_pretrained
    from pcnn_fer.models.pcnn import PCNN

    source = load_model("default")
    assert any(k.startswith("occlusion_heads.") for k in source.state_dict())
    model = PCNN(replace(source.config, occlusion_hidden=0))
    report = init_from_pretrained(model, "default")
    assert not hasattr(model, "occlusion_heads") and report.copied_tensors > 100
    body = "global_trunk.layer1.0.conv1.weight"
    assert torch.equal(model.state_dict()[body], source.state_dict()[body].to(model.state_dict()[body].dtype))


def test_init_new_classes_start_fresh_and_other_architectures_are_refused(tmp_path):
    from pcnn_fer.engine.finetune import init_from_pretrained
    from pcnn_fer.models.pcnn import create_model
    from pcnn_fer.weights import WeightsError

    torch.manual_seed(0)
    fer = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
    source_path = save_model(create_model("tiny", num_classes=7, classes=fer), tmp_path / "fer.safetensors")
    ck = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
    torch.manual_seed(1)
    model = create_model("tiny", num_classes=7, classes=ck)
    fresh = _head_rows(model)["contempt"].clone()
    report = init_from_pretrained(model, source_path)
    assert report.class_map["contempt"] is None and report.dropped_classes == ["neutral"]
    assert torch.equal(_head_rows(model)["contempt"], fresh)  # not any source row
    with pytest.raises(WeightsError, match=r"same architecture.*first mismatching tensors: global_trunk\.conv1"):
        init_from_pretrained(create_model("small", num_classes=7, classes=ck), source_path)


def test_train_init_records_provenance_and_uses_a_lower_trunk_lr(folder, tmp_path, run_cli, checkpoint):
    code, out, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--epochs", "1",
                              "--init", checkpoint, "--init-lr-scale", "0.25", "--out", tmp_path / "ft",
                              "--no-progress"])
    assert code == 0, err
    assert "happiness <- happiness" in out and "dropped from the source" in out
    init = json.loads((tmp_path / "ft" / "model.json").read_text())["training"]["init"]
    assert init["source"] == str(checkpoint) and init["class_map"]["sadness"] == "sadness"
    assert init["sha256"] == hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    state = load_checkpoint(tmp_path / "ft")
    lrs = sorted({g["initial_lr"] for g in state["optimizer"]["param_groups"]})
    assert lrs == pytest.approx([0.25 * 0.01, 0.01])
    code, _, err = run_cli(["train", "--dataset", "folder", "--root", folder, "--recipe", "ferplus-cpu",
                            "--init", checkpoint, "--out", tmp_path / "bad", "--no-progress"])
    assert code == 1 and "same architecture" in err and len(err.strip().splitlines()) == 1


def test_init_widen_grows_a_narrower_source_and_keeps_its_predictions(folder, tmp_path, run_cli, checkpoint):
    from pcnn_fer.engine.finetune import init_from_pretrained
    from pcnn_fer.models.pcnn import create_model
    from pcnn_fer.weights import WeightsError, load_model

    source = load_model(checkpoint).eval()  # tiny, 8 FERPlus classes
    model = create_model("tiny", num_classes=8, width=0.25)
    with pytest.raises(WeightsError, match=r"--init-widen grows a narrower source"):
        init_from_pretrained(model, checkpoint)
    report = init_from_pretrained(model, checkpoint, widen=True, seed=0)
    assert report.widened_from == 0.125 and "widened from width 0.125" in report.describe()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], source(x)[0], atol=2e-5, rtol=1e-4)
    with pytest.raises(WeightsError, match=r"--init-widen: can only widen"):
        init_from_pretrained(create_model("tiny", num_classes=8, width=0.0625), checkpoint, widen=True)
    with pytest.raises(WeightsError, match=r"changes only the width.*also differ in stn_grid 2 vs 3"):
        init_from_pretrained(create_model("small", num_classes=8), checkpoint, widen=True)

    torch.manual_seed(0)
    narrow = save_model(create_model("small", num_classes=8, width=0.125), tmp_path / "narrow.safetensors")
    common = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--epochs", "1", "--no-progress"]
    code, out, err = run_cli([*common, "--model", "small", "--init", narrow, "--init-widen",
                              "--out", tmp_path / "wide"])
    assert code == 0, err
    info = json.loads((tmp_path / "wide" / "model.json").read_text())
    assert info["training"]["init"]["widened_from"] == 0.125 and info["config"]["width"] == 0.25
    code, _, err = run_cli([*common, "--init-widen", "--out", tmp_path / "bad"])
    assert code == 1 and "--init-widen needs --init" in err and len(err.strip().splitlines()) == 1


def test_amp_auto_follows_the_cpu_probe(monkeypatch):
    from pcnn_fer.engine import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_amp("auto", cpu)[0] == "none"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_amp("auto", cpu)[0] == "bf16"
    assert precision.resolve_amp("none", cpu)[0] == "none"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.resolve_amp("fp16", cpu)


@pytest.mark.slow
def test_amp_bf16_on_cpu_trains_records_and_resumes_exactly(folder, tmp_path, run_cli):
    common = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--amp", "bf16", "--no-progress"]
    code, out, err = run_cli([*common, "--epochs", "2", "--out", tmp_path / "A"])
    assert code == 0, err
    assert "precision: bf16 autocast" in out
    assert json.loads((tmp_path / "A" / "model.json").read_text())["training"]["amp"]["used"] == "bf16"
    code, _, err = run_cli([*common, "--epochs", "2", "--stop-after", "1", "--out", tmp_path / "B"])
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", tmp_path / "B", "--no-progress"])
    assert code == 0, err
    a, b = load_checkpoint(tmp_path / "A"), load_checkpoint(tmp_path / "B")
    assert _states_equal(a["model"], b["model"])


def test_random_protocol_is_stratified_and_subject_dependent():
    from pcnn_fer.data.datasets import Split
    from pcnn_fer.data.protocols import PROTOCOLS, cross_validation

    labels = [i % 3 for i in range(60)]
    split = Split(dataset="synthetic", name="all", paths=[Path(f"{i}.png") for i in range(60)],
                  labels=np.asarray(labels), stems=[str(i) for i in range(60)],
                  classes=("happiness", "sadness", "surprise"), subjects=[f"S{i % 4}" for i in range(60)])
    folds = cross_validation(split, "random", k=5, seed=0)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(60))  # a partition
    for f in folds:
        assert np.bincount(np.asarray(labels)[f.test], minlength=3).tolist() == [4, 4, 4]  # stratified
    shared = set(np.asarray(split.subjects)[folds[0].train]) & set(np.asarray(split.subjects)[folds[0].test])
    assert shared  # subject-dependent: the same people on both sides
    assert [f.test.tolist() for f in cross_validation(split, "random", k=5, seed=0)] == [f.test.tolist()
                                                                                         for f in folds]
    assert "subject-dependent" in PROTOCOLS["random"]


def test_cv_random_protocol_says_subject_dependent(folder, tmp_path, run_cli):
    code, out, err = run_cli(["cv", "--dataset", "folder", "--root", folder, "--protocol", "random", "--folds", "3",
                              "--only-folds", "0", "--recipe", "tiny", "--epochs", "1", "--out", tmp_path / "cv",
                              "--no-progress", "--threads", "1"])
    assert code == 0, err
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert summary["threads"] == 1 and summary["options"]["threads"] == 1
    assert summary["subject_independent"] is False and "subject-dependent" in summary["protocol_description"]
    assert "subject-dependent" in out.strip().splitlines()[-1]
    code, _, err = run_cli(["cv", "--dataset", "folder", "--root", folder, "--folds", "3", "--recipe", "tiny",
                            "--out", tmp_path / "cv2", "--no-progress"])
    assert code == 1 and "--protocol random" in err


@pytest.mark.slow
def test_cv_tta_re_evaluates_finished_folds_without_retraining(folder, tmp_path, run_cli):
    common = ["cv", "--dataset", "folder", "--root", folder, "--protocol", "random", "--folds", "3", "--only-folds",
              "0", "--recipe", "tiny", "--epochs", "1", "--out", tmp_path / "cv", "--no-progress", "--threads", "1"]
    code, _, err = run_cli(common)
    assert code == 0, err
    last = (tmp_path / "cv" / "fold00" / "last.pt").read_bytes()
    plain = json.loads((tmp_path / "cv" / "fold00" / "metrics.json").read_text())
    assert plain["tta"] == "none"
    code, out, err = run_cli([*common, "--tta", "flip"])
    assert code == 0, err
    assert "evaluating again with test-time augmentation flip and 1 member(s)" in out and "epoch 1/1" not in out
    assert (tmp_path / "cv" / "fold00" / "last.pt").read_bytes() == last  # evaluated again, not retrained
    flipped = json.loads((tmp_path / "cv" / "fold00" / "metrics.json").read_text())
    assert flipped["tta"] == "flip" and flipped["num_samples"] == plain["num_samples"]
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["tta"] == "flip"
    code, out, _ = run_cli([*common, "--tta", "flip"])
    assert code == 0 and "reusing" in out
    code, out, err = run_cli([*common, "--tta", "flip", "--members", "2"])  # trains only the missing member
    assert code == 0, err
    assert "member 2/2 (training seed 1)" in out and "member 1/2" not in out
    assert (tmp_path / "cv" / "fold00" / "last.pt").read_bytes() == last
    assert (tmp_path / "cv" / "fold00" / "member1" / "model.safetensors").is_file()
    ensemble = json.loads((tmp_path / "cv" / "fold00" / "metrics.json").read_text())
    assert ensemble["members"] == 2 and json.loads((tmp_path / "cv" / "cv.json").read_text())["members"] == 2
    with open(tmp_path / "cv" / "fold00" / "predictions.csv", newline="") as f:  # the ensemble's, face by face
        rows = list(csv.DictReader(f))
    assert len(rows) == ensemble["num_samples"] and all(Path(r["path"]).is_file() for r in rows)
    assert sum(r["correct"] == "0" for r in rows) == ensemble["misclassified"]
    assert ensemble["misclassified"] == round(ensemble["num_samples"] * (1 - ensemble["accuracy"] / 100))


@pytest.mark.slow
def test_cv_takes_members_tta_and_selection_from_the_recipe(folder, tmp_path, run_cli):
    from pcnn_fer.engine.recipes import get_recipe

    for name, members in (("ckplus", 2), ("jaffe", 3)):  # a few hundred faces: last epoch, ensemble, mirror
        recipe = get_recipe(name)
        assert (recipe.cv_members, recipe.cv_tta, recipe.cv_val) == (members, "flip", False)
    assert (get_recipe("tiny").cv_members, get_recipe("tiny").cv_tta, get_recipe("tiny").cv_val) == (1, "none", True)
    recipe_file = tmp_path / "cv-recipe.json"
    recipe_file.write_text(json.dumps({"base": "tiny", "epochs": 1, "cv_members": 2, "cv_tta": "flip",
                                       "cv_val": False}))
    common = ["cv", "--dataset", "folder", "--root", folder, "--protocol", "random", "--folds", "3", "--only-folds",
              "0", "--recipe", recipe_file, "--out", tmp_path / "cv", "--no-progress", "--threads", "1"]
    code, out, err = run_cli(common)
    assert code == 0, err
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert (summary["members"], summary["tta"], summary["selection"]) == (2, "flip", "last epoch")
    assert "val 0," in out and (tmp_path / "cv" / "fold00" / "member1" / "model.safetensors").is_file()
    code, out, err = run_cli([*common, "--members", "1", "--tta", "none"])  # flags override the recipe
    assert code == 0, err
    summary = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert (summary["members"], summary["tta"]) == (1, "none") and "evaluating again" in out


def test_ensemble_metrics_average_the_members_probabilities():
    from pcnn_fer.engine.cv import ensemble_metrics
    from pcnn_fer.engine.loop import evaluate_data, predict_logits
    from pcnn_fer.models import create_model

    classes = ("happiness", "sadness", "surprise")
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(create_model("tiny", num_classes=3, classes=classes).eval())
    data = TensorData(torch.randint(0, 256, (24, 1, 48, 48), dtype=torch.uint8), torch.randint(0, 3, (24,)), None,
                      classes)
    cfg = models[0].config
    single = evaluate_data(models[0], data, cfg.input_size, cfg.mean, cfg.std, tta="flip")
    assert ensemble_metrics(models[:1], data, tta="flip") == single
    probs = [predict_logits(m, data.images, cfg.input_size, cfg.mean, cfg.std).softmax(1) for m in models]
    pred = ((probs[0] + probs[1]) / 2).argmax(1)
    both = ensemble_metrics(models, data)
    assert both["accuracy"] == pytest.approx(100 * (pred == data.labels).float().mean().item())
    assert torch.tensor(both["confusion_matrix"]).sum(0).tolist() == torch.bincount(pred, minlength=3).tolist()


def test_resumed_fine_tuning_keeps_its_provenance(make_image_folder, tmp_path, run_cli, checkpoint):
    folder = make_image_folder(tmp_path / "faces", per_class=6, splits=("train", "val"))
    common = ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--init", checkpoint,
              "--no-progress", "--out", tmp_path / "ft"]
    code, _, err = run_cli([*common, "--epochs", "3", "--stop-after", "1"])
    assert code == 0, err
    code, _, err = run_cli(["train", "--resume", tmp_path / "ft", "--no-progress"])
    assert code == 0, err
    state = load_checkpoint(tmp_path / "ft")
    assert state["epoch"] == 3 and state["info"]["init"]["source"] == str(checkpoint)
    init = json.loads((tmp_path / "ft" / "model.json").read_text())["training"]["init"]
    assert init is not None and init["source"] == str(checkpoint)
