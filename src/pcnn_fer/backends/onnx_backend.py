"""onnxruntime classifier backend (``--backend onnx``, and what ``--backend auto`` picks when onnxruntime is
installed).

:class:`OnnxClassifier` accepts an exported ``.onnx`` file (its config is read from the model's metadata) or
anything :func:`pcnn_fer.weights.load_model` accepts (``"default"``, a ``.safetensors`` file, a run folder, a PCNN
module). Those are exported once, with a dynamic batch, into ``onnx/`` under the project's cache folder
(:func:`pcnn_fer.data.cache.cache_dir`: ``$PCNN_FER_CACHE`` or ``~/.cache/pcnn_fer``), in a file named after the
checkpoint file's sha256, the input size and the opset (:func:`export_cache_key`); later runs load that file
without exporting again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..fileio import sha256_of
from ..models.calibration import calibrate_logits, note_calibration
from .onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAMES,
    export_onnx,
    ort_providers,
    ort_session,
    read_metadata,
)

if TYPE_CHECKING:
    from ..models.pcnn import PCNNConfig

#: Bump when the exported graph, its metadata or the cache key change, so that stale cache entries are not reused.
CACHE_FORMAT = 3


def _model_digest(model: Any) -> str:
    """Content hash of a PCNN module's config and weights."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def export_cache_key(checkpoint: Any, input_size: int | None = None, opset: int = DEFAULT_OPSET) -> str:
    """Cache file name of a checkpoint's export: its sha256 (of the weights file, or of a module's weights), the
    input size (``native``: the model's own) and the opset."""
    from ..weights import resolve_model_path

    if hasattr(checkpoint, "state_dict"):
        digest = _model_digest(checkpoint)
    else:
        path = resolve_model_path(checkpoint)  # the loader's own error for a missing checkpoint
        digest = sha256_of(path, path.with_suffix(".json"))  # the weights and the config beside them
    return f"pcnn-{digest[:24]}-{input_size or 'native'}-opset{opset}-v{CACHE_FORMAT}.onnx"


def cached_export(checkpoint: Any = "default", cache: str | Path | None = None, opset: int = DEFAULT_OPSET,
                  input_size: int | None = None) -> Path:
    """The ONNX file (dynamic batch) of a checkpoint, exported on first use into the cache and reused afterwards."""
    from ..data.cache import cache_dir

    folder = Path(cache) if cache is not None else cache_dir() / "onnx"
    path = folder / export_cache_key(checkpoint, input_size, opset)
    if not path.is_file():
        import logging

        logging.getLogger("pcnn_fer.backends").warning("exporting the model to ONNX once (cached as %s)", path)
        folder.mkdir(parents=True, exist_ok=True)
        # atomic and parity-checked: concurrent exporters are harmless, a failed check writes nothing
        export_onnx(checkpoint, path, dynamic_batch=True, opset=opset, input_size=input_size)
    return path


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class OnnxClassifier:
    """onnxruntime backend with the :class:`~pcnn_fer.backends.dispatch.ClassifierBackend` contract.

    ``checkpoint``: an exported ``.onnx`` file, or a checkpoint / PCNN module (exported to the cache on first use);
    ``device``: ``cpu`` or ``cuda[:N]`` (needs onnxruntime-gpu); ``threads``: intra-op threads (None: onnxruntime's
    choice); ``spinning``: let idle workers spin (faster when the cores are free, much slower on busy ones).
    ``session.run`` is thread-safe, so one classifier may serve concurrent requests.
    """

    name = "onnx"
    thread_safe = True

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", threads: int | None = None,
                 spinning: bool | None = None, cache: str | Path | None = None) -> None:
        ort_providers(device)  # an unusable device fails here, before any export
        if isinstance(checkpoint, (str, Path)) and str(checkpoint).endswith(".onnx"):
            path = Path(checkpoint)
        else:
            path = cached_export(checkpoint, cache)
        self.path = path
        meta = read_metadata(path)
        self.metadata = meta
        self.config: PCNNConfig = meta["config"]
        note_calibration(self.config, checkpoint)
        self.session = ort_session(path, threads=threads, device=device, spinning=spinning)
        self.output_names = [o.name for o in self.session.get_outputs()]  # older exports: the three logits only
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None

    def _run(self, batch: np.ndarray, names: list[str]) -> list[np.ndarray]:
        """The outputs ``names`` for a normalised float32 NCHW batch (one face at a time for a batch-1 export)."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            if self.fixed_batch != 1:
                raise UsageError(f"{self.path} takes batches of exactly {self.fixed_batch}, got {x.shape[0]}")
            parts = [self.session.run(names, {INPUT_NAME: x[i:i + 1]}) for i in range(x.shape[0])]
            if not parts:
                c, r = self.config.num_classes, 5
                empty = {"global_logits": (0, c), "local_logits": (0, c), "region_logits": (0, r, c),
                         "occlusion": (0, r), "probabilities": (0, c)}
                return [np.zeros(empty[n], np.float32) for n in names]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]
        return list(self.session.run(names, {INPUT_NAME: x}))

    def logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(global_logits, local_logits, region_logits)`` of a normalised float32 NCHW batch."""
        g, loc, r = self._run(batch, list(OUTPUT_NAMES[:3]))
        return g, loc, r

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray | None]:
        """``probs`` (N, C) after the model's calibration, ``region_probs`` (N, 5, C) and ``occlusion`` (N, 5, or
        None for a model without occlusion heads) of a normalised float32 NCHW batch."""
        has_occlusion = "occlusion" in self.output_names and self.config.occlusion_hidden > 0
        names = [*OUTPUT_NAMES[:3], *(["occlusion"] if has_occlusion else [])]
        global_logits, _, region_logits, *rest = self._run(batch, names)
        return {"probs": _softmax(calibrate_logits(global_logits, self.config.calibration), 1),
                "region_probs": _softmax(region_logits, 2), "occlusion": rest[0] if rest else None}

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, C), after the model's calibration, and region probabilities (N, 5, C) of a
        normalised float32 NCHW batch."""
        out = self.outputs(batch)
        return out["probs"], out["region_probs"]


__all__ = ["OnnxClassifier", "cached_export", "export_cache_key", "CACHE_FORMAT"]
