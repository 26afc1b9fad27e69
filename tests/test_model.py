"""PCNN architecture, loss, weight import and inference optimisation."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torchvision
from official_reference import OfficialLayoutPCNN

from pcnn_fer import TwoPhaseLoss, create_model, load_model, save_model
from pcnn_fer.bench import benchmark
from pcnn_fer.cli import main
from pcnn_fer.models import REGIONS, count_parameters
from pcnn_fer.models.fuse import optimize_for_inference
from pcnn_fer.weights import WeightsError, convert_official_state_dict, load_resnet_trunks, torch_load


def randomize_bn(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics so parity checks mean something."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)


@pytest.mark.parametrize("preset", ["paper", "compact", "tiny"])
@pytest.mark.parametrize("size", [48, 64, 96, 112, 224])
def test_shapes_and_finite_outputs(preset: str, size: int) -> None:
    if preset == "paper" and size > 112:
        pytest.skip("224 is covered by the official parity test")
    model = create_model(preset, num_classes=8).eval()
    with torch.no_grad():
        g, local, regions = model(torch.randn(2, 3, size, size), return_regions=True)
    assert g.shape == local.shape == (2, 8)
    assert regions.shape == (2, 5, 8)
    assert torch.allclose(regions.sum(1), local, atol=1e-5)
    assert torch.isfinite(g).all() and torch.isfinite(local).all()


def test_rejects_too_small_input() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        create_model("tiny")(torch.randn(1, 3, 20, 20))


def test_only_used_modules_are_registered() -> None:
    model = create_model("paper")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert 25.8e6 < count_parameters(model) < 26.0e6  # official: 25.9 M used, 82.6 M registered


def test_gradients_reach_every_trunk_stn_and_head() -> None:
    model = create_model("tiny", num_classes=7).train()
    x, y = torch.randn(4, 3, 48, 48), torch.randint(0, 7, (4,))
    TwoPhaseLoss()(*model(x), y).backward()
    modules = {"global_trunk": model.global_trunk, "layer4": model.layer4, "global_head": model.global_head,
               "stn_out": model.mdim.localization[2]}
    modules.update({f"trunk_{n}": model.local_trunks[n] for n in REGIONS})
    modules.update({f"head_{n}": model.local_heads[n] for n in REGIONS})
    for name, module in modules.items():
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # With the official (non-identity) init the first STN layer gets gradient at once too.
    model = create_model("tiny", theta_init="official").train()
    TwoPhaseLoss()(*model(x), y).backward()
    assert model.mdim.localization[0].weight.grad.abs().sum() > 0


def test_identity_theta_makes_registration_a_no_op() -> None:
    model = create_model("tiny").eval()
    global_map = torch.randn(2, model.global_trunk.out_channels, 12, 12)
    maps = [torch.randn(2, model.global_trunk.out_channels, h, w) for h, w in [(6, 6), (6, 6), (2, 6), (2, 6),
                                                                                 (4, 12)]]
    stitched = model.mdim.stitch(maps, (12, 12))
    fused = model.mdim(global_map, maps, model.layer4)
    assert torch.allclose(fused - global_map, stitched, atol=1e-5)
    theta = model.mdim.theta(stitched, model.layer4)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3))


def test_crop_fractions_are_configurable() -> None:
    model = create_model("tiny", crop_fractions=(0.4, 0.65, 0.5))
    boxes = model.regions.boxes(224, 224)
    assert boxes["left_eye"] == (0, 89, 0, 112) and boxes["mouth"] == (145, 224, 0, 224)
    with pytest.raises(ValueError, match="crop fractions"):
        create_model("tiny", crop_fractions=(0.7, 0.6, 0.5))


def test_loss_hard_and_soft_labels() -> None:
    g, local = torch.randn(5, 8), torch.randn(5, 8)
    y = torch.tensor([0, 1, 2, 3, 7])
    loss = TwoPhaseLoss()
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(loss(g, local, y), 12 * ce(g, y) + 8 * ce(local, y))
    onehot = torch.nn.functional.one_hot(y, 8).float()
    assert torch.allclose(loss(g, local, onehot), loss(g, local, y), atol=1e-5)
    soft = torch.softmax(torch.randn(5, 8), 1)
    expected = -(soft * torch.log_softmax(g, 1)).sum(1).mean() * 12 - (soft * torch.log_softmax(local, 1)).sum(
        1).mean() * 8
    assert torch.allclose(loss(g, local, soft), expected, atol=1e-5)
    smooth = TwoPhaseLoss(label_smoothing=0.1)
    assert torch.allclose(smooth(g, local, y), smooth(g, local, onehot), atol=1e-5)
    weights = torch.linspace(0.5, 2, 8)
    weighted = TwoPhaseLoss(class_weights=weights)
    assert torch.allclose(weighted(g, local, y), weighted(g, local, onehot), atol=1e-5)
    with pytest.raises(ValueError, match="labels must lie"):
        loss(g, local, torch.tensor([0, 1, 2, 3, 9]))
    with pytest.raises(ValueError, match="soft targets"):
        loss(g, local, torch.rand(5, 7))


def test_save_and_load_roundtrip(tmp_path) -> None:
    model = create_model("tiny", num_classes=8).eval()
    randomize_bn(model)
    path = save_model(model, tmp_path / "run" / "model.safetensors", extra={"note": "x"})
    assert json.loads((tmp_path / "run" / "model.json").read_text())["config"]["width"] == 0.125
    assert path.stat().st_mode & 0o044 == 0o044  # readable by others, like any saved file (umask 022)
    loaded = load_model(tmp_path / "run")
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], loaded(x)[0], atol=1e-6)
    half = load_model(save_model(model, tmp_path / "half.safetensors", half=True))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], half(x)[0], atol=5e-2)
    # fp16 halves the float tensors: the file is about half the size (BatchNorm counters and the header stay)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * path.stat().st_size


def test_torchvision_resnet_initialises_all_trunks(tmp_path) -> None:
    resnet = torchvision.models.resnet18(num_classes=1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, tmp_path / "r.pth")
    model = create_model("paper")
    assert load_resnet_trunks(model, tmp_path / "r.pth") == []
    for trunk in [model.global_trunk, *model.local_trunks.values()]:
        assert torch.equal(trunk.layer3[1].conv2.weight, resnet.layer3[1].conv2.weight)
    assert torch.equal(model.layer4[0].conv1.weight, resnet.layer4[0].conv1.weight)
    lowres = create_model("paper", stem="lowres")
    with pytest.warns(UserWarning, match="conv1.weight"):
        assert load_resnet_trunks(lowres, resnet.state_dict()) == ["conv1.weight"]
    with pytest.raises(WeightsError, match="ResNet-18 backbone"):
        load_model(tmp_path / "r.pth")


def test_official_checkpoint_import_matches_official_forward(tmp_path) -> None:
    torch.manual_seed(0)
    official = OfficialLayoutPCNN(num_classes=8)
    randomize_bn(official)
    official.eval()
    torch.save({"state_dict": official.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "pcnn.pth")
    state = torch_load(tmp_path / "pcnn.pth")
    model = load_model(tmp_path / "pcnn.pth")
    assert model.config.classes[-1] == "contempt" and model.config.classes[2] == "sadness"
    assert model.config.input_size == 224 and model.config.mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, ours = official(x), model(x)
    assert (expected[0] - ours[0]).abs().max() < 1e-4
    assert (expected[1] - ours[1]).abs().max() < 1e-4
    bad = dict(state)
    bad["something.else"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="unknown keys"):
        convert_official_state_dict(bad)
    bad = {k: v for k, v in state.items()}
    bad["fc.weight"], bad["fc.bias"] = torch.zeros(5, 512), torch.zeros(5)
    with pytest.raises(WeightsError, match="7 or 8 classes"):
        convert_official_state_dict(bad)


def test_pickled_code_is_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(WeightsError, match="weights_only"):
        load_model(tmp_path / "evil.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a model")
    with pytest.raises(WeightsError):
        load_model(tmp_path / "garbage.safetensors")


def test_wrong_class_count_is_a_clear_error(tmp_path) -> None:
    model = create_model("tiny", num_classes=8)
    save_model(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "m.safetensors")
    state["global_head.weight"] = torch.zeros(7, state["global_head.weight"].shape[1])
    save_file(state, tmp_path / "m.safetensors", metadata={"pcnn_config": json.dumps(model.config.to_dict())})
    with pytest.raises(WeightsError, match="wrong class count"):
        load_model(tmp_path / "m.safetensors")


@pytest.mark.parametrize("preset,size", [("tiny", 48), ("compact", 64), ("paper", 112)])
def test_optimized_inference_matches(preset: str, size: int) -> None:
    model = create_model(preset).eval()
    randomize_bn(model)
    fast = optimize_for_inference(model)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        for a, b in zip(model(x, return_regions=True), fast(x, return_regions=True)):
            assert (a - b).abs().max() < 1e-4
    with pytest.raises(ValueError, match="even input width"):
        fast(torch.randn(1, 3, 48, 49))


@pytest.mark.slow
def test_channels_last_and_compile() -> None:
    model = create_model("tiny").eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)[0]
        cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))[0]
        assert torch.allclose(ref, cl, atol=1e-4)
        compiled = torch.compile(model)
        assert torch.allclose(ref, compiled(x)[0], atol=1e-4)


def test_bench_defaults_to_the_bundled_models_architecture() -> None:
    """Issue 33: ``pcnn bench`` timed the 25.9 M-parameter paper model at 224 px by default (6 min 23 s)."""
    from pcnn_fer.cli import build_parser
    from pcnn_fer.cli.bench import BUNDLED_PRESET
    from pcnn_fer.models.pcnn import MODEL_PRESETS
    from pcnn_fer.weights import load_model

    args = build_parser().parse_args(["bench"])
    assert args.model == BUNDLED_PRESET and build_parser().parse_args(["bench", "--model", "paper"]).model == "paper"
    bundled, preset = load_model("default").config, MODEL_PRESETS[BUNDLED_PRESET]
    assert (bundled.width, bundled.stem, bundled.input_size) == (preset["width"], preset["stem"], preset["input_size"])


def test_bench_json(capsys) -> None:
    results = benchmark("tiny", batch_size=2, rounds=1)
    names = [r.model for r in results]
    assert names[0] == "resnet18" and "pcnn-tiny-optimized" in names
    capsys.readouterr()
    assert main(["bench", "--model", "tiny", "--batch-size", "2", "--rounds", "1", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout holds the JSON alone; the progress goes to stderr
    assert "bench: 4 models, batch 1" in captured.err and "bench: 4 models, batch 2" in captured.err
    row = data["results"][-1]
    for key in ["model", "input_size", "params", "gflops", "latency_ms_b1", "throughput_img_s", "batch_size",
                "relative_latency_b1", "relative_time_bn"]:
        assert key in row
    assert row["params"] == count_parameters(create_model("tiny")) and row["gflops"] > 0
    assert (row["model"], row["input_size"], row["batch_size"]) == ("pcnn-tiny-optimized", 48, 2)


# --- widening (Net2WiderNet) ---------------------------------------------------------------------------------------


def _randomise_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that widening is tested on more than identities."""
    generator = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("preset, width", [("tiny", 0.25), ("tiny", 0.5), ("tiny-resnet", 0.375)])
def test_widened_model_computes_the_same_function(preset, width):
    from pcnn_fer.models.widen import widen_model

    torch.manual_seed(0)
    model = create_model(preset, num_classes=7).eval()
    _randomise_batch_norm(model)
    wide = widen_model(model, width, seed=1).eval()
    assert wide.config.width == width and count_parameters(wide) > 3 * count_parameters(model)
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        for a, b in zip(model(x), wide(x)):
            torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_widened_copies_get_different_gradients():
    from pcnn_fer.models.widen import widen_model

    torch.manual_seed(0)
    model = create_model("tiny", num_classes=7)
    _randomise_batch_norm(model)  # a fresh model's zero-γ blocks pass no gradient into their convolutions
    wide = widen_model(model, 0.25, seed=0)
    global_logits, local_logits = wide(torch.randn(8, 3, 48, 48))
    (global_logits.logsumexp(1) + local_logits.logsumexp(1)).sum().backward()
    grad = wide.global_trunk.layer2[0].conv1.weight.grad  # 32 output channels: copies of 16
    half = grad.shape[0] // 2
    assert not torch.allclose(grad[:half], grad[half:], atol=1e-7)  # the random split broke the symmetry
    weight = wide.global_trunk.layer2[0].conv1.weight
    halves = weight[:, : weight.shape[1] // 2] + weight[:, weight.shape[1] // 2:]
    torch.testing.assert_close(halves[:half], halves[half:])  # a grown input's copies sum to the old weight


def test_widening_refuses_narrowing_and_non_integer_factors():
    from pcnn_fer.errors import UsageError
    from pcnn_fer.models.widen import widen_model

    model = create_model("small", num_classes=7)
    with pytest.raises(UsageError, match="can only widen"):
        widen_model(model, 0.125)
    with pytest.raises(UsageError, match="not an integer factor"):
        widen_model(model, 0.375)
