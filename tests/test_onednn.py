"""oneDNN fused, pre-packed convolutions of the inference form (pcnn_fer.models.onednn): same outputs as conv2d →
add → ReLU, and the plain path wherever the fused one does not apply."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pcnn_fer.models import onednn
from pcnn_fer.models.fuse import optimize_for_inference
from pcnn_fer.models.onednn import FusedBasicBlock, FusedConv2d, onednn_fusion_available
from pcnn_fer.models.pcnn import create_model

needs_onednn = pytest.mark.skipif(not onednn_fusion_available(),
                                  reason="this PyTorch has no oneDNN fused convolution (the plain path is tested)")


def reference(conv: nn.Conv2d, x: torch.Tensor, residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """conv2d (+ residual) (+ ReLU) with aten's ops."""
    out = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    out = out if residual is None else out + residual
    return F.relu(out) if relu else out


@needs_onednn
@pytest.mark.parametrize("cin,cout,k,stride,groups", [(3, 16, 7, 2, 1), (16, 16, 3, 1, 1), (16, 32, 1, 2, 1),
                                                       (32, 32, 3, 2, 2)])
@pytest.mark.parametrize("relu,with_residual", [(True, False), (False, False), (True, True)])
def test_fused_conv_equals_conv_add_relu(cin: int, cout: int, k: int, stride: int, groups: int, relu: bool,
                                         with_residual: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups).to(memory_format=torch.channels_last)
    fused = FusedConv2d(conv, relu=relu).requires_grad_(False)
    x = torch.randn(2, cin, 19, 17).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = reference(conv, x, None, False)
        residual = torch.randn_like(expected) if with_residual else None
        expected = reference(conv, x, residual, relu)
        got = fused(x, residual)
    assert fused._packed is not None  # the packed oneDNN path ran
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-5


@needs_onednn
def test_packed_weights_follow_input_shape_and_weight_changes() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, 1, 1).requires_grad_(False)
    fused = FusedConv2d(conv, relu=True)
    with torch.inference_mode():
        for shape in ((1, 8, 14, 14), (4, 8, 14, 14), (1, 8, 5, 9), (1, 8, 5, 9)):  # NCHW input too
            x = torch.randn(shape)
            assert (fused(x) - reference(conv, x, None, True)).abs().max() < 1e-5
        packed = fused._packed
        assert packed is not None and packed[0][2] == (8, 5, 9)
        conv.weight.mul_(-2.0)  # in-place update (e.g. load_state_dict): the packed copy must not be reused
        x = torch.randn(1, 8, 5, 9)
        assert (fused(x) - reference(conv, x, None, True)).abs().max() < 1e-5
        assert fused._packed is not packed


def test_plain_path_under_autograd_autocast_and_flop_counting() -> None:
    torch.manual_seed(0)
    block_model = create_model("tiny").eval()
    fast = optimize_for_inference(block_model)
    assert any(isinstance(m, FusedBasicBlock) for m in fast.modules())
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(2, 3, 48, 48, requires_grad=True)
    out = fast(x)[0]  # gradients wanted for the input (e.g. a saliency map): aten's differentiable convs
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x.detach())[0].dtype == torch.bfloat16  # autocast runs conv2d in bf16 as for the plain model
    flops = []
    for model in (block_model, fast):
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(x.detach())
        flops.append(counter.get_total_flops())
    assert flops[0] == flops[1] > 0  # the FLOP counter sees every convolution


def test_without_onednn_the_plain_ops_give_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    fast = optimize_for_inference(create_model("compact").eval())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fused = fast(x, return_regions=True)
        monkeypatch.setattr(onednn, "onednn_fusion_available", lambda: False)
        plain_copy = copy.deepcopy(fast)
        plain = plain_copy(x, return_regions=True)
    assert all(m._packed is None for m in plain_copy.modules() if isinstance(m, FusedConv2d))
    assert max((a - b).abs().max().item() for a, b in zip(fused, plain)) < 1e-5


@needs_onednn
def test_fused_paper_model_at_224_matches_the_plain_pcnn_and_survives_copies() -> None:
    torch.manual_seed(0)
    model = create_model("paper", num_classes=7, input_size=224).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    fast = optimize_for_inference(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        expected = model(x, return_regions=True)
        got = fast(x.contiguous(memory_format=torch.channels_last), return_regions=True)
        assert max((a - b).abs().max().item() for a, b in zip(expected, got)) < 1e-4
        for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):  # packed weights are not carried
            assert all(m._packed is None for m in clone.modules() if isinstance(m, FusedConv2d))
            assert max((a - b).abs().max().item() for a, b in zip(got, clone(x, return_regions=True))) < 1e-6


def test_benchmarks_report_the_cpu_and_instruction_set_caps(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pcnn_fer.cli import main
    from pcnn_fer.engine.precision import ISA_CAP_VARIABLES, cpu_capabilities

    for name in ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert "isa_caps" not in cpu_capabilities()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert cpu_capabilities()["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert main(["bench", "--model", "tiny", "--rounds", "1", "--batch-size", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("cpu: ") and "instruction set capped by {'ONEDNN_MAX_CPU_ISA': 'AVX2'}" in last
    assert last.endswith("yes" if onednn_fusion_available() else "no")
