"""The PCNN two-phase loss: α·CE(global logits) + β·CE(summed local logits)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TwoPhaseLoss(nn.Module):
    """``alpha · CE(global, y) + beta · CE(local, y)`` (paper: α = 12, β = 8).

    ``target`` may be hard labels ``(B,)`` (int) or label distributions ``(B, C)`` (float, rows summing to 1, e.g.
    FERPlus probability labels). Optional label smoothing and per-class weights apply to both terms.
    """

    def __init__(
        self,
        alpha: float = 12.0,
        beta: float = 8.0,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"alpha and beta must be non-negative and not both zero, got {alpha}, {beta}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.alpha, self.beta, self.label_smoothing = float(alpha), float(beta), float(label_smoothing)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for hard or soft targets, with this loss's smoothing and class weights."""
        num_classes = logits.shape[1]
        if self.class_weights is not None and self.class_weights.numel() != num_classes:
            raise ValueError(f"{self.class_weights.numel()} class weights for {num_classes} classes")
        if target.dtype.is_floating_point:
            if target.shape != logits.shape:
                raise ValueError(f"soft targets must have shape {tuple(logits.shape)}, got {tuple(target.shape)}")
            soft = target.to(logits.dtype)
            if self.label_smoothing:
                soft = soft * (1 - self.label_smoothing) + self.label_smoothing / num_classes
            log_p = F.log_softmax(logits.float(), 1)
            if self.class_weights is None:
                return -(soft * log_p).sum(1).mean()
            w = self.class_weights.to(logits.device)
            # Weighted like F.cross_entropy: each sample weighted by its target's class weight.
            sample_w = (soft * w).sum(1)
            return -(soft * w * log_p).sum(1).sum() / sample_w.sum()
        if target.ndim != 1 or target.shape[0] != logits.shape[0]:
            raise ValueError(f"hard targets must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(target.min())}, "
                             f"{int(target.max())}]")
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=self.label_smoothing)

    def forward(self, global_logits: torch.Tensor, local_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Total loss for one batch."""
        return self.alpha * self.cross_entropy(global_logits, target) + self.beta * self.cross_entropy(
            local_logits, target
        )


class GlobalCELoss(TwoPhaseLoss):
    """Plain cross-entropy on the predicted (global) logits only: ``(alpha + beta) · CE(global, y)``.

    The ablation of the two-phase loss: the local logits get no gradient. The α + β factor keeps the gradient scale
    of the two-phase loss, so a recipe's learning rate means the same step size under either loss.
    """

    def forward(self, global_logits: torch.Tensor, local_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Total loss for one batch (``local_logits`` is ignored)."""
        return (self.alpha + self.beta) * self.cross_entropy(global_logits, target)


#: Training losses by recipe name (``Recipe.loss``, ``pcnn train --loss``).
LOSSES: dict[str, type[TwoPhaseLoss]] = {"two-phase": TwoPhaseLoss, "ce": GlobalCELoss}


def make_loss(kind: str, alpha: float = 12.0, beta: float = 8.0, label_smoothing: float = 0.0) -> TwoPhaseLoss:
    """The loss called ``kind`` (a key of :data:`LOSSES`) with the recipe's weights and label smoothing."""
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[kind](alpha, beta, label_smoothing=label_smoothing)
