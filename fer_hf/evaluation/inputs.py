"""A loaded model's evaluation input: uint8 faces (B, 48, 48) -> its normalised input (B, C, S, S), exactly as
training's evaluation preprocessed them (size, channels, mean and std read from the saved image processor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fer_hf.data.transforms import BatchTransform
from fer_hf.models.inputs import input_spec

if TYPE_CHECKING:
    from fer_hf.models.loading import LoadedModel


def eval_transform_for(loaded: LoadedModel) -> BatchTransform:
    """uint8 faces (B, 48, 48) -> the loaded model's normalised input (B, C, S, S), no augmentation."""
    return BatchTransform(**input_spec(loaded.model.config, loaded.image_processor), train=False)
