"""The batch-normalised classification head put on top of the pretrained backbones (ViT, ResNet).

Self-contained (torch only): it travels to the Hub next to the modeling files and is imported relatively by them,
so a pushed model loads with `trust_remote_code=True` without fer_hf installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_HEAD_SIZES = (512, 256, 128, 64)


def check_head_sizes(hidden_sizes: Sequence[int]) -> list[int]:
    """The hidden sizes as a list of positive ints; raises a ValueError naming the bad entries otherwise."""
    if isinstance(hidden_sizes, int | str):
        raise ValueError(
            f"head hidden sizes must be a list of positive ints, e.g. [512, 256, 128, 64]; got {hidden_sizes!r}"
        )
    sizes = list(hidden_sizes)
    bad = [h for h in sizes if isinstance(h, bool) or not isinstance(h, int) or h <= 0]
    if bad:
        raise ValueError(
            f"head hidden sizes must be positive ints (e.g. [512, 256, 128, 64]); got {sizes}, bad: {bad}"
        )
    return sizes


def check_head_dropout(dropout: float) -> float:
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"head dropout must be in [0, 1), got {dropout}")
    return float(dropout)


class BatchNormHead(nn.Module):
    """(B, in_features) -> (B, num_labels).

    One block per hidden size: Linear -> BatchNorm1d -> ReLU -> Dropout(p); then the output Linear. BatchNorm keeps
    the activations of a freshly initialised head well scaled while the backbone features are still frozen.
    """

    def __init__(
        self,
        in_features: int,
        num_labels: int,
        hidden_sizes: Sequence[int] = DEFAULT_HEAD_SIZES,
        dropout: float = 0.5,
    ):
        super().__init__()
        if in_features <= 0 or num_labels <= 0:
            raise ValueError(f"in_features and num_labels must be positive, got {in_features} and {num_labels}")
        p = check_head_dropout(dropout)
        layers: list[nn.Module] = []
        for size in check_head_sizes(hidden_sizes):
            layers += [nn.Linear(in_features, size), nn.BatchNorm1d(size), nn.ReLU(inplace=True), nn.Dropout(p)]
            in_features = size
        self.hidden = nn.Sequential(*layers)  # empty when hidden_sizes == []: a plain linear classifier
        self.output = nn.Linear(in_features, num_labels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(features))


def match_channels(pixel_values: torch.Tensor, num_channels: int) -> torch.Tensor:
    """(B, C, H, W) with C = 1 or num_channels -> (B, num_channels, H, W): a gray face is repeated as RGB."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be (B, C, H, W), got shape {tuple(pixel_values.shape)}")
    channels = pixel_values.shape[1]
    if channels == num_channels:
        return pixel_values
    if channels == 1:
        return pixel_values.expand(-1, num_channels, -1, -1)
    raise ValueError(f"expected pixel_values with 1 or {num_channels} channels, got {channels}")
