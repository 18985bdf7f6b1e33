"""Configuration of a ResNet with the batch-normalised FER head. Self-contained (transformers + relative imports
only) so that it travels to the Hub with `register_for_auto_class` and loads with `trust_remote_code=True`."""

from __future__ import annotations

from transformers import ResNetConfig

from .fer_head import DEFAULT_HEAD_SIZES, check_head_dropout, check_head_sizes


class FerResNetConfig(ResNetConfig):
    """A `ResNetConfig` plus the head. `hidden_sizes` stays the ResNet's stage widths; the head's sizes are
    `head_hidden_sizes` (Linear->BatchNorm1d->ReLU->Dropout each) and `head_dropout`."""

    model_type = "fer_resnet"

    head_hidden_sizes: list[int] | tuple[int, ...] = DEFAULT_HEAD_SIZES
    head_dropout: float | int = 0.5

    def __post_init__(self, **kwargs):
        kwargs.pop("model_type", None)  # a stock checkpoint's "vit"/"resnet": this class is the fer_ variant
        self.head_hidden_sizes = check_head_sizes(self.head_hidden_sizes)
        self.head_dropout = check_head_dropout(self.head_dropout)
        super().__post_init__(**kwargs)
