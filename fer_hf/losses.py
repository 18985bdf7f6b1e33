"""Losses for imbalanced FER2013: (class-weighted) cross-entropy with label smoothing, and focal loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """FL = -alpha_t (1 - p_t)^gamma log p_t (Lin et al.), averaged over the batch.

    alpha: per-class weights (K,) or None; gamma = 0 with alpha None is plain cross-entropy.
    """

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss gamma must be >= 0, got {gamma}")
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None]).squeeze(1)  # (B,) log p_t
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * self.alpha[labels]
        return loss.mean()


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with optional class weights and label smoothing (weights as in torch: per target class)."""

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.weight, label_smoothing=self.label_smoothing)


def build_loss(name: str, *, class_weights: Sequence[float] | None, gamma: float, label_smoothing: float) -> nn.Module:
    """name: ce | weighted_ce | focal. `class_weights` are used by weighted_ce (required) and focal (optional)."""
    if name == "ce":
        return WeightedCrossEntropy(None, label_smoothing)
    if name == "weighted_ce":
        if class_weights is None:
            raise ValueError("weighted_ce needs class weights (loss.alpha: inverse_frequency or a list)")
        return WeightedCrossEntropy(class_weights, label_smoothing)
    if name == "focal":
        return FocalLoss(gamma, class_weights)
    raise ValueError(f"unknown loss {name!r}; choose ce, weighted_ce or focal")
