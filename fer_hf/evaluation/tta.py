"""Test-time augmentation, implemented once: `evaluate`, `predict` and the app call `tta_logits`.

Modes: none (single view), hflip (average of the face and its mirror), tencrop (four corners + centre at 90%
of the side, each also mirrored, resized back to the input size). Results with TTA are always reported apart
from single-view results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TTA_MODES = ("none", "hflip", "tencrop")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, C, H, W) -> (N, K) logits in batches, on the model's device."""
    device = next(model.parameters()).device
    chunks = [model(pixel_values=chunk.to(device)).logits.float().cpu() for chunk in pixel_values.split(batch_size)]
    return torch.cat(chunks)


def tta_views(pixel_values: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """(B, C, S, S) -> list of views, each (B, C, S, S)."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {mode!r}; choose one of {TTA_MODES}")
    if mode == "none":
        return [pixel_values]
    if mode == "hflip":
        return [pixel_values, pixel_values.flip(-1)]
    size = pixel_values.shape[-1]
    crop = max(1, round(size * 0.9))
    offsets = [(0, 0), (0, size - crop), (size - crop, 0), (size - crop, size - crop), ((size - crop) // 2,) * 2]
    views = []
    for top, left in offsets:
        view = pixel_values[..., top : top + crop, left : left + crop]
        view = F.interpolate(view, size=(size, size), mode="bilinear", align_corners=False)
        views += [view, view.flip(-1)]
    return views


def tta_logits(model, pixel_values: torch.Tensor, mode: str = "none", batch_size: int = 256) -> torch.Tensor:
    """Average of the softmax over the views, returned as log-probabilities (N, K): argmax = TTA prediction."""
    if mode == "none":
        return predict_logits(model, pixel_values, batch_size)
    probs = torch.stack([predict_logits(model, v, batch_size).softmax(-1) for v in tta_views(pixel_values, mode)])
    return probs.mean(0).log()
