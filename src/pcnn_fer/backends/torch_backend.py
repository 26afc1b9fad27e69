"""PyTorch classifier backend (``--backend torch``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..devices import torch_device
from ..models.calibration import calibrate_logits, note_calibration
from ..models.pcnn import PCNN, PCNNConfig
from ..weights import load_model


class TorchClassifier:
    """PyTorch backend with the :class:`~pcnn_fer.backends.dispatch.ClassifierBackend` contract: a PCNN (or a
    checkpoint loaded with :func:`pcnn_fer.weights.load_model`), by default rewritten for inference with
    :func:`pcnn_fer.models.fuse.optimize_for_inference` (identical outputs). Class probabilities are the softmax of
    the global (fused) logits after the model's calibration (``config.calibration``, none: temperature 1); region
    probabilities the softmax of each of the five region heads."""

    name = "torch"

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", optimize: bool = True) -> None:
        self.device = torch_device(device)
        model = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_model(checkpoint, device=self.device)
        self.config: PCNNConfig = model.config
        note_calibration(self.config, checkpoint)
        if optimize and isinstance(model, PCNN) and self.config.input_size % 2 == 0:
            from ..models.fuse import optimize_for_inference

            model = optimize_for_inference(model)  # BN folded, eye/cheek trunks paired: same outputs, faster
        self.model = model.to(self.device).eval()

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray | None]:
        """``probs`` (N, C) after the model's calibration, ``region_probs`` (N, 5, C) and ``occlusion`` (N, 5, or
        None for a model without occlusion heads) of a normalised float32 NCHW batch."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            global_logits, _, region_logits, occlusion = self.model(x, return_regions=True, return_occlusion=True)
            probs = torch.softmax(calibrate_logits(global_logits.float(), self.config.calibration), 1).cpu().numpy()
            region_probs = torch.softmax(region_logits.float(), 2).cpu().numpy()
        return {"probs": probs, "region_probs": region_probs,
                "occlusion": occlusion.float().cpu().numpy() if self.config.occlusion_hidden else None}

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and region probabilities of a normalised float32 NCHW batch."""
        out = self.outputs(batch)
        return out["probs"], out["region_probs"]


__all__ = ["TorchClassifier"]
