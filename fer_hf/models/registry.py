"""The family registry: what a family builder returns (`BuiltModel`) and `register_family`. The families import
this module, and fer_hf.models imports them: one direction, no import loop. Models import no data code: the batch
transform of a built model is `fer_hf.data.transforms.BatchTransform.for_model(built, augment)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn
from transformers import BaseImageProcessor


@dataclass
class BuiltModel:
    model: nn.Module
    image_processor: BaseImageProcessor
    image_size: int  # model input side; the collator upscales 48x48 faces to it
    channels: int  # 1 (gray) or 3 (gray repeated as RGB)
    mean: list[float]
    std: list[float]
    layer_groups: list[tuple[str, list[str]]] = field(default_factory=list)  # (group, parameter-name prefixes)


Builder = Callable[..., BuiltModel]
MODEL_FAMILIES: dict[str, Builder] = {}


def register_family(name: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        if name in MODEL_FAMILIES:
            raise ValueError(f"model family {name!r} registered twice")
        MODEL_FAMILIES[name] = fn
        return fn

    return wrap
