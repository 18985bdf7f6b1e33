"""The family registry: what a family builder returns (`BuiltModel`) and `register_family`. The families import
this module, and fer_hf.models imports them: one direction, no import loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from transformers import BaseImageProcessor

from fer_hf.data.transforms import Augment, BatchTransform


@dataclass
class BuiltModel:
    model: nn.Module
    image_processor: BaseImageProcessor
    image_size: int  # model input side; the collator upscales 48x48 faces to it
    channels: int  # 1 (gray) or 3 (gray repeated as RGB)
    mean: list[float]
    std: list[float]
    layer_groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (group, parameter-name prefixes)

    def batch_transform(self, augment: Augment | None = None) -> BatchTransform:
        """uint8 faces (B, 48, 48) -> this model's input (B, C, S, S): augmented when `augment` is given (training),
        else resized and normalised only (evaluation)."""
        spec = dict(size=self.image_size, channels=self.channels, mean=self.mean, std=self.std)
        return BatchTransform(**spec, augment=augment, train=augment is not None)


Builder = Callable[..., BuiltModel]
MODEL_FAMILIES: dict[str, Builder] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        if name in MODEL_FAMILIES:
            raise ValueError(f"model family {name!r} registered twice")
        MODEL_FAMILIES[name] = fn
        return fn

    return wrap
