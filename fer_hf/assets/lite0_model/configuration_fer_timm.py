"""Configuration of a timm backbone (through transformers' TimmWrapper) with the batch-normalised FER head.
Self-contained (transformers + relative imports only) so that it travels to the Hub with `register_for_auto_class`
and loads with `trust_remote_code=True`."""

from __future__ import annotations

from transformers import TimmWrapperConfig

from .fer_head import DEFAULT_HEAD_SIZES, check_head_dropout, check_head_sizes


class FerTimmConfig(TimmWrapperConfig):
    """A `TimmWrapperConfig` (timm `architecture`, `pretrained_cfg`, `model_args`) plus the head:
    `head_hidden_sizes` (Linear->BatchNorm1d->ReLU->Dropout each) and `head_dropout`.

    `pretrained_cfg` holds the fine-tuning input size, mean/std and interpolation. AutoImageProcessor reads a timm
    checkpoint's config.json first; `image_processor_type` sends it on to the ViTImageProcessor saved beside it
    (preprocessor_config.json: the same resize and mean/std, and it also takes 1-channel faces, which
    TimmWrapperImageProcessor cannot). `backbone_source` records where the backbone weights came from.
    """

    model_type = "fer_timm"

    head_hidden_sizes: list[int] | tuple[int, ...] = DEFAULT_HEAD_SIZES
    head_dropout: float | int = 0.5
    image_processor_type: str = "ViTImageProcessor"
    backbone_source: dict | None = None

    def __post_init__(self, **kwargs):
        self.head_hidden_sizes = check_head_sizes(self.head_hidden_sizes)
        self.head_dropout = check_head_dropout(self.head_dropout)
        super().__post_init__(**kwargs)
