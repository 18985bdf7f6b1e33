"""Model families behind one registry: `build_model(model_args, label_names)` -> BuiltModel.

Each family returns the model, a matching image processor (saved next to the model so that
`pipeline("image-classification")` works on raw faces and photos), the collator's input spec, and its
layer groups from the top of the network down (head first) for gradual unfreezing and layer-wise lr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn
from transformers import BaseImageProcessor

from fer_hf.labels import id2label, label2id


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


def build_model(model_args, label_names: Sequence[str], image_size: int | None = None) -> BuiltModel:
    """Build the recipe's model family for `label_names`; raises on unknown families."""
    if model_args.family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {model_args.family!r}; choose one of {sorted(MODEL_FAMILIES)}")
    names = tuple(label_names)
    return MODEL_FAMILIES[model_args.family](model_args, names, id2label(names), label2id(names), image_size)


from fer_hf.models import cnn_family, resnet, timm_family, vit  # noqa: E402,F401  (registers the families)
