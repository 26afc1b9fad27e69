"""Export a PCNN to one self-contained ONNX file and check it against PyTorch.

* Exporter: ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export`` based exporter). The legacy TorchScript
  exporter cannot export PCNN with a dynamic batch (``adaptive_avg_pool2d`` of the STN needs static sizes there);
  the dynamo exporter handles ``affine_grid`` + ``grid_sample`` (ONNX ``GridSample``, opset ≥ 16; we require 18).
* The inference-optimised form (:func:`pcnn_fer.models.fuse.optimize_for_inference`: BatchNorm folded, eye/cheek
  trunk pairs as grouped convolutions) is exported when it exports cleanly and matches PyTorch; otherwise the
  plain PCNN is exported.
* Weights are embedded (no ``.onnx.data`` side file). The model's ``metadata_props`` hold the classes, input size,
  mean/std, crop fractions, regions and the full :class:`~pcnn_fer.models.pcnn.PCNNConfig` as JSON, so an
  ``.onnx`` file is usable on its own (:func:`read_metadata`, :class:`pcnn_fer.backends.onnx_backend.OnnxClassifier`).
* One input ``input`` (float32 N×3×S×S, normalised with the model's mean/std), five outputs ``global_logits``
  (N, C), ``local_logits`` (N, C) and ``region_logits`` (N, 5, C) – the same as ``PCNN.forward(x, True)`` –,
  ``occlusion`` (N, 5: the regions' occlusion probabilities, NaN for a model without occlusion heads) and
  ``probabilities`` (N, C: the softmax of the global logits after the model's calibration, ``config.calibration``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..defaults import DEFAULT_OPSET, DEFAULT_TOLERANCE, MIN_OPSET
from ..errors import PCNNError, UsageError
from ..fileio import publish

INPUT_NAME = "input"
OUTPUT_NAMES: tuple[str, ...] = ("global_logits", "local_logits", "region_logits", "occlusion", "probabilities")
#: metadata_props key holding the full PCNN config as JSON.
CONFIG_KEY = "pcnn_config"


class ExportError(PCNNError, RuntimeError):
    """The model could not be exported, or the exported model does not match PyTorch."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote: the file, which graph was exported and the PyTorch parity check."""

    path: Path
    graph: str  # "optimized" (BN folded, paired trunks) or "plain"
    opset: int
    dynamic_batch: bool
    input_size: int
    max_abs_diff: float
    diffs: dict[str, float] = field(default_factory=dict)  # per output, over all checked batch sizes
    batch_sizes: tuple[int, ...] = ()
    seconds: float = 0.0
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines about the export and its parity check."""
        per_output = ", ".join(f"{k} {v:.2e}" for k, v in self.diffs.items())
        lines = [f"exported {self.path} ({self.size_bytes / 2**20:.1f} MiB, opset {self.opset}, {self.graph} graph, "
                 f"input {'N' if self.dynamic_batch else 1}x3x{self.input_size}x{self.input_size}, "
                 f"{self.seconds:.1f} s)",
                 f"parity vs PyTorch (onnxruntime, batch {', '.join(map(str, self.batch_sizes))}): max |diff| of "
                 f"logits {self.max_abs_diff:.2e} ({per_output})"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


class LogitsModule(torch.nn.Module):
    """Wraps a PCNN (or its inference form) so that ``forward(input)`` returns :data:`OUTPUT_NAMES`: the three
    logit tensors, the (N, 5) region occlusion probabilities (NaN without occlusion heads) and the class
    probabilities after the model's calibration."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: A002
        """The outputs of :data:`OUTPUT_NAMES` for a normalised NCHW batch."""
        return model_outputs(self.inner, input)


def model_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(global_logits, local_logits, region_logits, occlusion, probabilities)`` of a PCNN (or its inference
    form): what the exported graph computes."""
    from ..models.calibration import calibrate_logits

    global_logits, local_logits, region_logits, occlusion = model(x, return_regions=True, return_occlusion=True)
    probabilities = torch.softmax(calibrate_logits(global_logits.float(), model.config.calibration), 1)
    return global_logits, local_logits, region_logits, occlusion, probabilities


def onnx_metadata(config: Any, graph: str, dynamic_batch: bool, opset: int) -> dict[str, str]:
    """The ``metadata_props`` written into an exported model (all values are strings; lists/dicts as JSON)."""
    from .. import __version__
    from ..models.pcnn import REGIONS

    return {
        CONFIG_KEY: json.dumps(config.to_dict()),
        "classes": json.dumps(list(config.classes)),
        "input_size": str(int(config.input_size)),
        "mean": json.dumps(list(config.mean)),
        "std": json.dumps(list(config.std)),
        "crop_fractions": json.dumps(list(config.crop_fractions)),
        "regions": json.dumps(list(REGIONS)),
        "input_name": INPUT_NAME,
        "output_names": json.dumps(list(OUTPUT_NAMES)),
        "graph": graph,
        "dynamic_batch": json.dumps(bool(dynamic_batch)),
        "opset": str(int(opset)),
        "producer": f"pcnn-fer {__version__}",
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The pcnn-fer metadata of an exported model, decoded: ``config`` (a PCNNConfig), ``classes`` (tuple),
    ``input_size``, ``mean``, ``std``, ``crop_fractions``, ``regions``, ``graph``, ``dynamic_batch``, ``opset`` and
    the raw string ``props``. Reads only the model header when onnxruntime is available (fast for big models)."""
    from ..models.pcnn import PCNNConfig

    props = _metadata_props(Path(path))
    if CONFIG_KEY not in props:
        raise ExportError(f"{path}: no {CONFIG_KEY!r} in the ONNX metadata (not exported by pcnn export?)")
    try:
        config = PCNNConfig.from_dict(json.loads(props[CONFIG_KEY]))
    except ValueError as e:  # malformed JSON or a bad config (UsageError)
        raise ExportError(f"{path}: bad {CONFIG_KEY!r} in the ONNX metadata: {e}") from None
    return {
        "config": config,
        "classes": tuple(json.loads(props.get("classes", "[]"))) or config.classes,
        "input_size": int(props.get("input_size", config.input_size)),
        "mean": tuple(json.loads(props["mean"])) if "mean" in props else config.mean,
        "std": tuple(json.loads(props["std"])) if "std" in props else config.std,
        "crop_fractions": tuple(json.loads(props["crop_fractions"])) if "crop_fractions" in props
        else config.crop_fractions,
        "regions": tuple(json.loads(props.get("regions", "[]"))),
        "graph": props.get("graph", ""),
        "dynamic_batch": json.loads(props.get("dynamic_batch", "false")),
        "opset": int(props.get("opset", 0)),
        "props": props,
    }


def _metadata_props(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ExportError(f"no such ONNX file: {path}")
    from .onnx_props import OnnxFormatError, read_metadata_props  # no onnx import: a second of start-up

    try:
        return read_metadata_props(path)
    except (OnnxFormatError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None


def _export_graph(module: Any, example: Any, path: Path, opset: int, dynamic_batch: bool) -> str:
    """Run the dynamo exporter into ``path`` (weights embedded); returns its captured console output."""
    kwargs: dict[str, Any] = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = {"input": {0: torch.export.Dim("batch", min=1, max=65536)}}
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), None, input_names=[INPUT_NAME],
                                    output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=True,
                                    external_data=False, optimize=True, **kwargs)
        program.save(str(path), external_data=False)
    return log.getvalue()


def _finalize(path: Path, metadata: dict[str, str], doc: str) -> None:
    """Add metadata and a doc string, check the model and write it back as one file."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, metadata)
    model.doc_string = doc
    model.producer_name = "pcnn-fer"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def ort_session(path: str | Path, threads: int | None = None, device: str = "cpu", spinning: bool | None = None,
                optimization: str = "all") -> Any:
    """An onnxruntime session for an exported model: ORT_ENABLE_ALL graph optimisations, ``threads`` intra-op
    threads (None: onnxruntime's choice), sequential execution, spinning workers on or off (None: ORT default)."""
    import onnxruntime as ort

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    if optimization not in levels:
        raise UsageError(f"optimization must be one of {', '.join(levels)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=ort_providers(device))


def ort_providers(device: str) -> list[Any]:
    """onnxruntime's execution providers for ``device`` (``cpu`` or ``cuda[:N]``); a one-line
    :class:`~pcnn_fer.errors.UsageError` for any other device or a CUDA device this onnxruntime cannot use."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise UsageError(f"the onnx backend runs on cpu or cuda[:N], not {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UsageError("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu) - use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


def check_parity(path: str | Path, model: Any, batch_sizes: tuple[int, ...] = (1, 3), input_size: int | None = None,
                 seed: int = 0) -> dict[str, float]:
    """Max absolute difference between onnxruntime (on ``path``) and the PyTorch ``model`` for each output, over
    random normalised inputs of the given batch sizes."""
    session = ort_session(path, threads=1)
    size = int(input_size or model.config.input_size)
    generator = torch.Generator().manual_seed(seed)
    diffs = dict.fromkeys(OUTPUT_NAMES, 0.0)
    model = model.eval()
    for n in batch_sizes:
        x = torch.randn(n, 3, size, size, generator=generator)
        with torch.inference_mode():
            expected = [t.float().numpy() for t in model_outputs(model, x)]
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        for name, a, b in zip(OUTPUT_NAMES, got, expected):
            if a.shape != b.shape:
                raise ExportError(f"{name}: onnxruntime gives shape {a.shape}, PyTorch {b.shape}")
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                raise ExportError(f"{name}: onnxruntime and PyTorch disagree on which values are NaN")
            diffs[name] = max(diffs[name], float(np.nan_to_num(np.abs(a - b)).max()))
    return diffs


def check_output_path(out: Path) -> None:
    """Refuse, before any work, an ``out`` that cannot become an ONNX file: another suffix, a folder, a path under a
    file, or a folder where no file can be created (the nearest existing folder is probed with a temporary file)."""
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give the file to write, e.g. {out / 'pcnn.onnx'}")
    if out.suffix != ".onnx":
        raise UsageError(f"ONNX files end in .onnx, got {out}")
    folder = out.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {out}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".probe")
    except OSError as e:
        raise UsageError(f"cannot write {out}: no file can be created in {folder} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def export_onnx(checkpoint: Any = "default", out: str | Path = "pcnn.onnx", *, dynamic_batch: bool = False,
                input_size: int | None = None, opset: int = DEFAULT_OPSET, optimize: bool = True,
                tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Export ``checkpoint`` (``"default"``, a weights path or a PCNN module) to ONNX at ``out``.

    ``dynamic_batch``: the batch dimension is symbolic (``batch``), otherwise fixed at 1. ``input_size``: export for
    S×S inputs (default: the model's own; stored in the metadata). ``optimize``: try the inference-optimised graph
    first. The exported file is checked against the PyTorch model with onnxruntime; when the largest difference of
    any logits exceeds ``tolerance`` an :class:`ExportError` is raised and nothing is written at ``out``.
    """
    from ..models.pcnn import MIN_INPUT_SIZE, PCNN, PCNNConfig
    from ..weights import load_model

    out = Path(out)
    check_output_path(out)
    if opset < MIN_OPSET:
        raise UsageError(f"opset must be at least {MIN_OPSET} (GridSample / affine_grid of the STN), got {opset}")
    started = time.perf_counter()
    model = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_model(checkpoint)
    if not isinstance(getattr(model, "config", None), PCNNConfig):  # a PCNN or an ablation baseline
        raise TypeError(f"export_onnx needs a PCNN, got {type(model).__name__}")
    model = model.float().cpu().eval()
    size = int(input_size or model.config.input_size)
    if size < MIN_INPUT_SIZE:
        raise UsageError(f"input size must be at least {MIN_INPUT_SIZE}, got {size}")
    config = replace(model.config, input_size=size)
    example = torch.randn(2 if dynamic_batch else 1, 3, size, size, generator=torch.Generator().manual_seed(1))
    batch_sizes = (1, 3) if dynamic_batch else (1,)

    candidates: list[tuple[str, Any]] = []
    notes: list[str] = []
    if optimize and isinstance(model, PCNN) and size % 2 == 0:
        from ..models.fuse import optimize_for_inference

        candidates.append(("optimized", optimize_for_inference(model, channels_last=False)))
    elif optimize and isinstance(model, PCNN):
        notes.append(f"odd input size {size}: exported the plain PCNN (the optimised form needs equal halves)")
    candidates.append(("plain", model))

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".onnx")
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        for i, (graph, module) in enumerate(candidates):
            last = i == len(candidates) - 1
            try:
                _export_graph(LogitsModule(module).eval(), example, tmp, opset, dynamic_batch)
                diffs = check_parity(tmp, model, batch_sizes, size)
            except Exception as e:  # noqa: BLE001 - any exporter failure: fall back to the plain graph
                if last:
                    raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
                notes.append(f"the {graph} graph did not export ({type(e).__name__}); exported the plain PCNN")
                continue
            worst = max(diffs.values())
            if worst > tolerance and not last:
                notes.append(f"the {graph} graph differs by {worst:.2e} > {tolerance:g}; exported the plain PCNN")
                continue
            if worst > tolerance:
                raise ExportError(f"parity check failed: max |diff| of logits {worst:.2e} > tolerance {tolerance:g} "
                                  f"({', '.join(f'{k} {v:.2e}' for k, v in diffs.items())}); nothing written")
            doc = (f"PCNN facial expression recognition ({config.num_classes} classes: {', '.join(config.classes)}); "
                   f"input '{INPUT_NAME}' float32 Nx3x{size}x{size} normalised with mean {list(config.mean)} and "
                   f"std {list(config.std)}; outputs {', '.join(OUTPUT_NAMES)}")
            try:
                _finalize(tmp, onnx_metadata(config, graph, dynamic_batch, opset), doc)
                publish(tmp, out)
            except OSError as e:
                raise ExportError(f"cannot write {out}: {e.strerror or e}") from None
            return ExportResult(path=out, graph=graph, opset=opset, dynamic_batch=dynamic_batch, input_size=size,
                                max_abs_diff=worst, diffs=diffs, batch_sizes=batch_sizes,
                                seconds=time.perf_counter() - started, size_bytes=out.stat().st_size, notes=notes)
        raise ExportError("ONNX export failed")  # unreachable: the last candidate returns or raises
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["export_onnx", "check_parity", "read_metadata", "onnx_metadata", "ort_providers", "ort_session",
           "ExportResult", "ExportError", "INPUT_NAME", "OUTPUT_NAMES", "MIN_OPSET", "DEFAULT_OPSET"]
