"""Mixed precision: which autocast dtype a run uses (``--amp none|bf16|fp16|auto``) and why.

``auto`` asks torch what the hardware has: bf16 on CPUs with native bf16 units (AVX512-BF16 or AMX), plain fp32 on
CPUs without them (bf16 would be emulated and slower), bf16 on CUDA devices that support it, else fp16.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["AMP_CHOICES", "ISA_CAP_VARIABLES", "cpu_capabilities", "cpu_model", "cpu_has_native_bf16", "resolve_amp"]

AMP_CHOICES = ("auto", "none", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """True when torch reports native bf16 arithmetic on this CPU (AVX512-BF16 or AMX tiles)."""
    import torch

    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what every benchmark prints beside its table), or the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: Environment variables that cap the instruction set of torch's, oneDNN's and MKL's kernels (set to AVX2 on an
#: AVX-512 machine they emulate an AVX2-only CPU); reported by :func:`cpu_capabilities` when set.
ISA_CAP_VARIABLES: tuple[str, ...] = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def cpu_capabilities() -> dict[str, object]:
    """What torch sees of this CPU (printed with benchmarks and stored with runs): the kernel capability torch
    dispatches to, the hardware's instruction sets, and any instruction-set caps set in the environment."""
    import os

    import torch

    cpu = torch.cpu
    probe = {name: bool(getattr(cpu, f"_is_{name}_supported", lambda: False)())
             for name in ("avx2", "avx512", "avx512_bf16", "amx_tile", "vnni")}
    caps = {name: os.environ[name] for name in ISA_CAP_VARIABLES if os.environ.get(name)}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), **probe,
            "native_bf16": cpu_has_native_bf16(), **({"isa_caps": caps} if caps else {})}


def resolve_amp(requested: str, device: torch.device) -> tuple[str, str]:
    """(``none``/``bf16``/``fp16``, reason) for ``requested`` on ``device``; explicit choices are checked."""
    if requested not in AMP_CHOICES:
        raise UsageError(f"--amp must be one of {', '.join(AMP_CHOICES)}, got {requested!r}")
    import torch

    if device.type == "cuda":
        if requested == "auto":
            if torch.cuda.is_bf16_supported():
                return "bf16", "CUDA device with bf16 support"
            return "fp16", "CUDA device without bf16: fp16 with a gradient scaler"
        return requested, "as asked"
    if requested == "fp16":
        raise UsageError(f"--amp fp16 needs a CUDA device (this run is on {device}); use --amp bf16 or auto")
    if requested == "auto":
        if device.type == "cpu" and cpu_has_native_bf16():
            return "bf16", "CPU with native bf16 (AVX512-BF16/AMX)"
        return "none", f"{device.type} without native bf16: fp32"
    return requested, "as asked"
