"""Losses for imbalanced FER2013: (class-weighted) cross-entropy with label smoothing, and focal loss; each also takes
soft targets (B, K) (FER+'s vote distributions), and `MultiTargetLoss` is FER+'s multi-label loss.

Every loss is called as loss(logits (B, K), labels (B,), targets=None | (B, K)); with targets, the labels (the
targets' top class) only pick the per-face class weight where a loss needs one."""

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

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1)  # (B, K)
        if targets is None:
            targets = F.one_hot(labels, logits.shape[-1]).float()
        per_class = -((1.0 - log_p.exp()) ** self.gamma) * log_p * targets  # (B, K): sum_k t_k FL_k
        if self.alpha is not None:
            per_class = per_class * self.alpha
        return per_class.sum(-1).mean()


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with optional class weights and label smoothing (weights as in torch: per target class)."""

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            return F.cross_entropy(logits.float(), labels, weight=self.weight, label_smoothing=self.label_smoothing)
        # Soft targets (B, K), normalised as torch normalises hard labels (by the summed weight of the targets), so
        # one-hot targets give exactly the hard loss; torch's own probability-target mode does not normalise.
        k = logits.shape[-1]
        weight = self.weight if self.weight is not None else logits.new_ones(k, dtype=torch.float32)
        t = targets.float()
        smoothed = (1.0 - self.label_smoothing) * t + self.label_smoothing / k
        per_face = -(smoothed * weight * F.log_softmax(logits.float(), dim=-1)).sum(-1)  # (B,)
        return per_face.sum() / (t * weight).sum()


class MultiTargetLoss(nn.Module):
    """FER+'s multi_target loss (FERPlus `src/train.py`): -log max_k(t_k p_k), where t marks every emotion that
    has at least 30% of the votes (`fer_hf.data.ferplus.training_targets`): the model is right when its most likely
    class is any of them. Class weights weigh each face by its top class; smoothing mixes t with uniform."""

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", torch.tensor(weight, dtype=torch.float32) if weight is not None else None)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        k = logits.shape[-1]
        t = F.one_hot(labels, k).float() if targets is None else targets.float()
        t = (1.0 - self.label_smoothing) * t + self.label_smoothing / k
        loss = -(F.log_softmax(logits.float(), dim=-1) + t.log()).max(dim=-1).values  # -log max_k t_k p_k, (B,)
        if self.weight is not None:
            loss = loss * self.weight[labels]
        return loss.mean()


def build_loss(
    name: str,
    *,
    class_weights: Sequence[float] | None,
    gamma: float,
    label_smoothing: float,
    multi_target: bool = False,
) -> nn.Module:
    """name: ce | weighted_ce | focal. `class_weights` are used by weighted_ce (required) and focal (optional).
    `multi_target`: FER+'s multi_target mode, whose loss replaces cross-entropy (ce / weighted_ce)."""
    if multi_target:
        if name == "focal":
            raise ValueError("FER+'s multi_target mode has its own loss; use loss.name ce or weighted_ce with it")
        if name == "weighted_ce" and class_weights is None:
            raise ValueError("weighted_ce needs class weights (loss.alpha: inverse_frequency or a list)")
        return MultiTargetLoss(class_weights if name == "weighted_ce" else None, label_smoothing)
    if name == "ce":
        return WeightedCrossEntropy(None, label_smoothing)
    if name == "weighted_ce":
        if class_weights is None:
            raise ValueError("weighted_ce needs class weights (loss.alpha: inverse_frequency or a list)")
        return WeightedCrossEntropy(class_weights, label_smoothing)
    if name == "focal":
        return FocalLoss(gamma, class_weights)
    raise ValueError(f"unknown loss {name!r}; choose ce, weighted_ce or focal")
