"""Ablation baselines (models/baselines.py) and the plain-CE loss: each builds from a preset, keeps PCNN's interface,
trains with ``pcnn train --model/--loss``, saves with its config, loads with ``load_model``, evaluates, exports to
ONNX and runs through ``pcnn robustness`` like PCNN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcnn_fer import create_model, load_model, save_model
from pcnn_fer.bench import count_flops
from pcnn_fer.cli import main
from pcnn_fer.engine.recipes import get_recipe
from pcnn_fer.loss import GlobalCELoss, TwoPhaseLoss, make_loss
from pcnn_fer.models.baselines import GlobalOnlyPCNN, NoMDIMPCNN, ResNet18
from pcnn_fer.models.pcnn import MODEL_PRESETS, PCNN, count_parameters, preset_config
from pcnn_fer.models.resnet import Trunk
from pcnn_fer.weights import WeightsError, load_resnet_trunks

BASELINES = {"tiny-resnet": ResNet18, "tiny-resnet-wide": ResNet18, "tiny-global": GlobalOnlyPCNN,
             "tiny-nomdim": NoMDIMPCNN}


@pytest.mark.parametrize("preset, cls", BASELINES.items())
def test_baselines_keep_pcnn_interface_and_roundtrip(preset, cls, tmp_path):
    torch.manual_seed(0)
    model = create_model(preset, num_classes=4).eval()
    assert type(model) is cls and model.config.arch == MODEL_PRESETS[preset]["arch"]
    x = torch.randn(3, 3, 48, 48)
    logits, local = model(x)
    g, loc, regions = model(x, return_regions=True)
    assert logits.shape == local.shape == (3, 4) and regions.shape == (3, 5, 4)
    assert torch.equal(g, logits) and torch.equal(loc, local)
    if cls is NoMDIMPCNN:  # late fusion: prediction = global + summed region logits
        assert torch.allclose(local, regions.sum(1), atol=1e-5)
        assert torch.allclose(logits - local, model.global_head(model.layer4(model.global_trunk(x)).mean((2, 3))),
                              atol=1e-5)
    else:
        assert not regions.any()  # no region heads: zero logits
    if cls is ResNet18:
        assert torch.equal(logits, local)
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert type(loaded) is cls and loaded.config == model.config
    assert torch.equal(loaded(x)[0], logits)
    with pytest.raises(ValueError, match="build_model"):
        PCNN(model.config)


def test_presets_costs_and_unknown_arch(tmp_path):
    x = torch.zeros(1, 3, 48, 48)
    pcnn = create_model("small").eval()
    flops = {p: count_flops(create_model(p).eval(), x) for p in ("small", "small-resnet", "small-resnet-wide")}
    assert count_parameters(create_model("small-resnet")) < count_parameters(pcnn)
    assert flops["small-resnet"] < flops["small"] / 1.9
    assert abs(flops["small-resnet-wide"] / flops["small"] - 1) < 0.05  # same cost as the PCNN
    for arch in ("pcnn", "resnet", "global", "nomdim"):
        preset = "small" if arch == "pcnn" else f"small-{arch}"
        config = preset_config(preset)
        assert (config.width, config.stem, config.input_size, config.crop_fractions, config.mean) == (
            pcnn.config.width, "lowres", 48, pcnn.config.crop_fractions, pcnn.config.mean)
    # a weights file naming an architecture this version lacks is refused with its name
    path = save_model(create_model("tiny-resnet"), tmp_path / "r.safetensors")
    info = json.loads(path.with_suffix(".json").read_text())
    from safetensors.torch import load_file, save_file

    info["config"]["arch"] = "vit"
    save_file(load_file(str(path)), str(path), metadata={"pcnn_config": json.dumps(info["config"])})
    with pytest.raises(WeightsError, match=r"r\.safetensors: unknown architecture 'vit'"):
        load_model(path)


def test_resnet_state_dict_initialises_every_baseline_trunk():
    torch.manual_seed(0)
    resnet = create_model("tiny-resnet")
    torchvision_format = {k.removeprefix("trunk."): v for k, v in resnet.state_dict().items()}
    for preset in ("tiny-global", "tiny-nomdim", "tiny"):
        model = create_model(preset)
        assert load_resnet_trunks(model, torchvision_format) == []
        trunks = [m for m in model.modules() if isinstance(m, Trunk)]
        assert len(trunks) == (1 if preset == "tiny-global" else 6)
        assert all(torch.equal(t.conv1.weight, resnet.trunk.conv1.weight) for t in trunks)
        assert torch.equal(model.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)


def test_plain_ce_loss_ignores_the_local_logits():
    torch.manual_seed(0)
    g = torch.randn(5, 4, requires_grad=True)
    loc = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    loss = make_loss("ce", 12, 8)
    assert type(loss) is GlobalCELoss and type(make_loss("two-phase")) is TwoPhaseLoss
    value = loss(g, loc, y)
    value.backward()
    assert loc.grad is None or not loc.grad.any()
    assert torch.allclose(value, 20 * torch.nn.functional.cross_entropy(g, y))
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")
    with pytest.raises(ValueError, match="unknown loss"):
        get_recipe("tiny").with_overrides(loss="focal")


# --- end to end: train, load, evaluate, robustness, export ---------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A learnable 3-class synthetic image folder (train / val / test, 8 faces per class each)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for s in ("train", "val", "test"):
        for ci, c in enumerate(("happy", "sad", "surprise")):
            (root / s / c).mkdir(parents=True)
            for i in range(8):
                img = rng.integers(0, 80, (48, 48)) + 80 * ci
                Image.fromarray(img.astype(np.uint8), "L").save(root / s / c / f"{s}_{c}_{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("flags, arch", [
    (["--model", "tiny-resnet"], "resnet"),
    (["--model", "tiny-global"], "global"),
    (["--model", "tiny-nomdim"], "nomdim"),
    (["--loss", "ce"], "pcnn"),
])
def test_baseline_trains_evaluates_runs_robustness_and_exports(folder, tmp_path, capsys, flags, arch):
    run = tmp_path / "run"
    common = ["--dataset", "folder", "--root", folder]
    code = main([str(a) for a in ["train", *common, "--recipe", "tiny", "--epochs", "1", "--max-steps", "2",
                                  "--no-progress", "--out", run, *flags]])
    assert code == 0, capsys.readouterr().err
    results = json.loads((run / "results.json").read_text())
    assert results["recipe"]["model"] == (flags[1] if flags[0] == "--model" else "tiny")
    assert results["recipe"]["loss"] == ("ce" if "ce" in flags else "two-phase")
    model = load_model(run)
    assert model.config.arch == arch
    assert main([str(a) for a in ["evaluate", "--checkpoint", run / "last.pt", *common, "--split", "test",
                                  "--backend", "torch", "--out", tmp_path / "ev"]]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["num_samples"] == 24
    assert main([str(a) for a in ["robustness", "--checkpoint", run, *common, "--split", "test", "--out",
                                  tmp_path / "rob", "--corruptions", "mouth:grey", "--strengths", "3",
                                  "--no-progress"]]) == 0
    report = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert report["arch"] == arch and report["summary"]["occlusion"]["accuracy"] is not None
    if arch != "pcnn":  # PCNN's export is tested in test_export.py
        code = main([str(a) for a in ["export", "--checkpoint", run, "--out", tmp_path / "m.onnx"]])
        assert code == 0, capsys.readouterr().err
        assert "parity vs PyTorch" in capsys.readouterr().out


def test_unknown_model_flag_fails_with_one_line(folder, tmp_path, capsys):
    code = main([str(a) for a in ["train", "--dataset", "folder", "--root", folder, "--recipe", "tiny", "--model",
                                  "tiny-vit", "--out", tmp_path / "r"]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "unknown model preset 'tiny-vit'" in err[0]
