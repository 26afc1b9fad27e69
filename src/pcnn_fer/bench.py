"""``pcnn bench`` (parser: :mod:`pcnn_fer.cli.bench`): parameters, FLOPs, batch-1 latency and batch-N throughput
of PCNN next to a plain torchvision ResNet-18 measured in the same run (models are timed in interleaved rounds, so
machine noise hits both alike)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from .devices import torch_device
from .engine.precision import cpu_capabilities, cpu_model
from .errors import UsageError
from .models.fuse import optimize_for_inference
from .models.onednn import onednn_fusion_available
from .models.pcnn import MODEL_PRESETS, PCNN, count_parameters, create_model


@dataclass
class BenchResult:
    """Figures of one model in one run."""

    model: str
    input_size: int
    params: int
    gflops: float
    latency_ms_b1: float
    throughput_img_s: float
    batch_size: int
    relative_latency_b1: float = 1.0  # latency / baseline latency (same run)
    relative_time_bn: float = 1.0  # batch-N time / baseline batch-N time (same run)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter; a multiply-add counts as 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(example)
    return counter.get_total_flops()


def median_times(runners: dict[str, Callable[[], object]], rounds: int, repeats: int,
                 progress: str | None = None) -> dict[str, float]:
    """Median seconds per call of each runner, interleaving the runners round by round; with ``progress``, a
    progress bar of that name over the warm-up and the rounds on stderr."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    bar = tqdm(total=rounds + 1, desc=progress, unit="round", leave=False, disable=progress is None, file=sys.stderr)
    with torch.inference_mode(), bar:
        for run in runners.values():  # warm-up (oneDNN primitive creation, allocator)
            run()
            run()
        bar.update(1)
        for _ in range(rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    run()
                times[name].append((time.perf_counter() - start) / repeats)
            bar.update(1)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``torch.compile`` with inductor weight freezing (on CPU this fuses conv + ReLU/add into oneDNN kernels)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model)


def build_models(preset: str, input_size: int, num_classes: int, device: torch.device,
                 channels_last: bool, compile: bool = False) -> dict[str, nn.Module]:
    """The models of a benchmark run: the ResNet-18 baseline, the plain PCNN, its optimised inference form and,
    with ``compile``, the optimised form under ``torch.compile``."""
    pcnn = create_model(preset, num_classes=num_classes, input_size=input_size).eval()
    models: dict[str, nn.Module] = {"resnet18": torchvision.models.resnet18(num_classes=num_classes).eval()}
    if channels_last:
        models["resnet18-channels-last"] = torchvision.models.resnet18(num_classes=num_classes).eval()
    models[f"pcnn-{preset}"] = pcnn
    optimizable = isinstance(pcnn, PCNN) and input_size % 2 == 0  # not the ablation baselines
    if optimizable:
        models[f"pcnn-{preset}-optimized"] = optimize_for_inference(pcnn, channels_last=channels_last)
    for name, m in models.items():
        m.to(device)
        if name == "resnet18-channels-last":
            m.to(memory_format=torch.channels_last)
    if compile and optimizable:
        models[f"pcnn-{preset}-compiled"] = compile_for_inference(models[f"pcnn-{preset}-optimized"])
    return models


class OrtModule(nn.Module):
    """The onnxruntime backend behind a ``torch.nn.Module`` face (tensors in, logits out), so that
    ``pcnn bench --backend onnx`` times it with the same harness and inputs as the PyTorch models."""

    def __init__(self, backend: Any) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, x: torch.Tensor, return_regions: bool = True) -> tuple[torch.Tensor, ...]:
        """The exported model's logits for ``x`` (made contiguous NCHW float32 first)."""
        out = self.backend.logits(x.detach().cpu().float().contiguous().numpy())
        tensors = tuple(torch.from_numpy(o) for o in out)
        return tensors if return_regions else tensors[:2]


def onnx_bench_models(preset: str, input_size: int | None, num_classes: int = 7, device: str = "cpu",
                      channels_last: bool = True, threads: int | None = None, spinning: bool | None = None,
                      compile: bool = False) -> dict[str, nn.Module]:
    """The models of ``pcnn bench --backend onnx``: :func:`build_models` plus ``pcnn-<preset>-onnx``, the same PCNN
    exported to ONNX and run by the ``onnx`` backend of :func:`pcnn_fer.backends.dispatch.create_backend` with as many
    intra-op threads as torch uses."""
    import shutil
    import tempfile

    from .backends.dispatch import create_backend

    if device != "cpu":
        raise UsageError("pcnn bench --backend onnx times onnxruntime on the cpu only")
    size = input_size or MODEL_PRESETS[preset]["input_size"]
    models = build_models(preset, size, num_classes, torch_device(device), channels_last, compile)
    folder = Path(tempfile.mkdtemp(prefix="pcnn-bench-onnx-"))  # random weights: not worth keeping in the cache
    try:
        backend = create_backend("onnx", models[f"pcnn-{preset}"], device, threads=threads or torch.get_num_threads(),
                                 spinning=spinning, cache=folder)
        models[f"pcnn-{preset}-onnx"] = OrtModule(backend)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the session holds the model in memory
    return models


def benchmark(preset: str = "paper", input_size: int | None = None, batch_size: int = 32, device: str = "cpu",
              num_classes: int = 7, rounds: int = 7, channels_last: bool = True, compile: bool = False,
              models: dict[str, nn.Module] | None = None, progress: bool = False) -> list[BenchResult]:
    """Measure every model (default: :func:`build_models`) and return results relative to ``resnet18`` (progress
    bars on stderr with ``progress``)."""
    if preset not in MODEL_PRESETS:
        raise UsageError(f"unknown preset {preset!r}; available: {', '.join(MODEL_PRESETS)}")
    size = input_size or MODEL_PRESETS[preset]["input_size"]
    if size < 32:
        raise UsageError(f"input size must be at least 32, got {size}")
    if batch_size < 1 or rounds < 1:
        raise UsageError(f"--batch-size and --rounds must be at least 1, got {batch_size} and {rounds}")
    dev = torch_device(device)
    models = models or build_models(preset, size, num_classes, dev, channels_last, compile)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x1 = torch.randn(1, 3, size, size, device=dev)
    xn = torch.randn(batch_size, 3, size, size, device=dev)

    def runner(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        # The plain models get the plain NCHW tensor; channels_last models get their input converted (timed).
        wants_cl = channels_last and (name_of[id(model)] != "resnet18" and not isinstance(model, PCNN))

        def run() -> object:
            out = model(x.contiguous(memory_format=fmt) if wants_cl else x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    name_of = {id(m): n for n, m in models.items()}
    lat = median_times({n: runner(m, x1) for n, m in models.items()}, rounds, repeats=3,
                       progress=f"bench: {len(models)} models, batch 1" if progress else None)
    thr = median_times({n: runner(m, xn) for n, m in models.items()}, max(3, rounds // 2), repeats=1,
                       progress=f"bench: {len(models)} models, batch {batch_size}" if progress else None)
    pcnn_params = count_parameters(create_model(preset, num_classes=num_classes))
    results = []
    for name, model in models.items():
        # The optimised PCNN holds the same weights re-laid out; report the parameters of the PCNN it came from.
        params = pcnn_params if name.startswith("pcnn") else count_parameters(model)
        flops_model = models[f"pcnn-{preset}"] if name.endswith("compiled") else model
        results.append(BenchResult(
            model=name, input_size=size, params=params, gflops=count_flops(flops_model, x1) / 1e9,
            latency_ms_b1=lat[name] * 1e3, throughput_img_s=batch_size / thr[name], batch_size=batch_size,
            relative_latency_b1=lat[name] / lat["resnet18"], relative_time_bn=thr[name] / thr["resnet18"]))
    return results


def format_table(results: list[BenchResult]) -> str:
    """Plain-text table of benchmark results."""
    header = f"{'model':<28}{'size':>6}{'params(M)':>11}{'GFLOPs':>9}{'b1 ms':>9}{'x r18':>7}" \
             f"{'img/s':>9}{'x r18':>7}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.model:<28}{r.input_size:>6}{r.params / 1e6:>11.2f}{r.gflops:>9.2f}{r.latency_ms_b1:>9.1f}"
                     f"{r.relative_latency_b1:>7.2f}{r.throughput_img_s:>9.1f}{r.relative_time_bn:>7.2f}")
    lines.append(f"('x r18' = time relative to torchvision ResNet-18 measured in the same run; "
                 f"throughput at batch {results[0].batch_size})")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    """CLI handler of ``pcnn bench``."""
    for flag, value in (("--batch-size", args.batch_size), ("--rounds", args.rounds)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = None
    if args.backend == "onnx":  # adds pcnn-<preset>-onnx (onnxruntime) to the same run
        models = onnx_bench_models(args.model, args.input_size, device=args.device,
                                   channels_last=not args.no_channels_last, compile=args.compile)
    results = benchmark(args.model, args.input_size, args.batch_size, args.device, rounds=args.rounds,
                        channels_last=not args.no_channels_last, compile=args.compile, models=models, progress=True)
    for r in results:  # FlopCounterMode cannot see inside onnxruntime: report the PCNN's FLOPs for its ONNX form
        if r.model.endswith("-onnx"):
            r.gflops = next((p.gflops for p in results if p.model == f"pcnn-{args.model}"), r.gflops)
    cpu = {"model": cpu_model(), **cpu_capabilities(), "onednn_fused_convs": onednn_fusion_available()}
    if args.json:
        print(json.dumps({"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "cpu": cpu, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print(format_table(results))
        print(f"cpu: {cpu['model']}, {cpu['capability']} kernels, {cpu['threads']} threads"
              + (f", instruction set capped by {cpu['isa_caps']}" if "isa_caps" in cpu else "")
              + f"; oneDNN fused convolutions in the optimised model: {'yes' if cpu['onednn_fused_convs'] else 'no'}")
    return 0
