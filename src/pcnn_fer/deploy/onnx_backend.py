"""onnxruntime classifier backend (``Recognizer(backend="onnx")``, ``pcnn predict/serve --backend onnx``) and the
ONNX entry of ``pcnn bench --backend onnx``.

:class:`OnnxClassifier` accepts an exported ``.onnx`` file (its config is read from the model's metadata) or
anything :func:`pcnn_fer.weights.load_model` accepts (``"default"``, a ``.safetensors`` file, a run folder, a PCNN
module). Those are exported once, with a dynamic batch, into a cache keyed by the weights' content
(``$PCNN_FER_CACHE`` or ``$XDG_CACHE_HOME/pcnn_fer`` or ``~/.cache/pcnn_fer``, sub-folder ``onnx``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.pcnn import PCNNConfig
from .onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, export_onnx, ort_session, read_metadata

#: Bump when the exported graph or its metadata change, so that stale cache entries are not reused.
CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where checkpoints exported on the fly are kept: ``$PCNN_FER_CACHE/onnx``, else ``$XDG_CACHE_HOME/pcnn_fer/onnx``,
    else ``~/.cache/pcnn_fer/onnx``."""
    if os.environ.get("PCNN_FER_CACHE"):
        return Path(os.environ["PCNN_FER_CACHE"]) / "onnx"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pcnn_fer" / "onnx"


def _model_digest(model: torch.nn.Module) -> str:
    """Content hash of a PCNN's config and weights."""
    import json

    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:20]


def cached_export(checkpoint: Any = "default", cache: str | Path | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX file (dynamic batch) of a checkpoint, exported on first use into the cache and reused afterwards."""
    from ..weights import load_model

    model = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_model(checkpoint)
    if not isinstance(getattr(model, "config", None), PCNNConfig):  # a PCNN or an ablation baseline
        raise TypeError(f"the onnx backend exports PCNN models, got {type(model).__name__}")
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"pcnn-{_model_digest(model)}-opset{opset}-v{CACHE_FORMAT}.onnx"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path, dynamic_batch=True, opset=opset)  # atomic: concurrent exporters are harmless
    return path


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class OnnxClassifier:
    """onnxruntime backend with the :class:`~pcnn_fer.faces.recognizer.ClassifierBackend` contract.

    ``checkpoint``: an exported ``.onnx`` file, or a checkpoint / PCNN module (exported to the cache on first use);
    ``device``: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu); ``threads``: intra-op threads (None: onnxruntime's
    choice); ``spinning``: let idle workers spin (faster when the cores are free, much slower on busy ones).
    ``session.run`` is thread-safe, so one classifier may serve concurrent requests.
    """

    name = "onnx"
    thread_safe = True

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", threads: int | None = None,
                 spinning: bool | None = None, cache: str | Path | None = None) -> None:
        if isinstance(checkpoint, (str, Path)) and str(checkpoint).endswith(".onnx"):
            path = Path(checkpoint)
        else:
            path = cached_export(checkpoint, cache)
        self.path = path
        meta = read_metadata(path)
        self.metadata = meta
        self.config: PCNNConfig = meta["config"]
        self.session = ort_session(path, threads=threads, device=device, spinning=spinning)
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None

    def logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(global_logits, local_logits, region_logits)`` of a normalised float32 NCHW batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise ValueError(f"{self.path} takes batches of exactly {self.fixed_batch}, got {x.shape[0]}")
            parts = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[i:i + 1]}) for i in range(x.shape[0])]
            if not parts:
                c, r = self.config.num_classes, 5
                return np.zeros((0, c), np.float32), np.zeros((0, c), np.float32), np.zeros((0, r, c), np.float32)
            return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]
        g, loc, r = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return g, loc, r

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, C) and region probabilities (N, 5, C) of a normalised float32 NCHW batch."""
        global_logits, _, region_logits = self.logits(batch)
        return _softmax(global_logits, 1), _softmax(region_logits, 2)


class OrtModule(torch.nn.Module):
    """An onnxruntime session behind a ``torch.nn.Module`` face (tensors in, tensors out), so that ``pcnn bench``
    times it with the same harness and inputs as the PyTorch models."""

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(path, threads=threads, spinning=spinning)

    def forward(self, x: torch.Tensor, return_regions: bool = True) -> tuple[torch.Tensor, ...]:
        """The exported model's logits for ``x`` (made contiguous NCHW float32 first)."""
        arr = x.detach().cpu().float().contiguous().numpy()
        out = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: arr})
        tensors = tuple(torch.from_numpy(o) for o in out)
        return tensors if return_regions else tensors[:2]


def bench_models(preset: str, input_size: int | None, num_classes: int = 7, device: str = "cpu",
                 channels_last: bool = True, threads: int | None = None, spinning: bool | None = None,
                 compile: bool = False) -> dict[str, torch.nn.Module]:
    """The models of ``pcnn bench --backend onnx``: :func:`pcnn_fer.bench.build_models` (``compile`` passed on when
    set) plus ``pcnn-<preset>-onnx``, the same PCNN exported to ONNX and run by onnxruntime with as many intra-op
    threads as torch uses."""
    import shutil
    import tempfile

    from ..bench import build_models
    from ..models.pcnn import MODEL_PRESETS, PCNN

    if device != "cpu":
        raise ValueError("pcnn bench --backend onnx times onnxruntime on the cpu only")
    size = input_size or MODEL_PRESETS[preset]["input_size"]
    extra = {"compile": True} if compile else {}
    models = build_models(preset, size, num_classes, torch.device(device), channels_last, **extra)
    pcnn = models[f"pcnn-{preset}"]
    assert isinstance(pcnn, PCNN)
    folder = Path(tempfile.mkdtemp(prefix="pcnn-bench-onnx-"))
    try:
        path = export_onnx(pcnn, folder / f"pcnn-{preset}-{size}.onnx", dynamic_batch=True).path
        models[f"pcnn-{preset}-onnx"] = OrtModule(path, threads=threads or torch.get_num_threads(), spinning=spinning)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the session holds the model in memory
    return models


__all__ = ["OnnxClassifier", "OrtModule", "cached_export", "cache_dir", "bench_models", "CACHE_FORMAT"]
