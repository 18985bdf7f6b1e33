"""A ViT whose classifier is the batch-normalised FER head. Self-contained apart from relative imports, so a pushed
model loads with `AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)`.

Weight names match `ViTForImageClassification` for the backbone (`vit.*`), so a stock ViT checkpoint (e.g.
google/vit-base-patch16-224) loads into it with `from_pretrained`; only the head (`classifier.*`) is new.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ViTModel, ViTPreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_fer_vit import FerViTConfig
from .fer_head import BatchNormHead, match_channels


def _pair(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, list | tuple) else (size, size)


class FerViTForImageClassification(ViTPreTrainedModel):
    """pixel_values (B, 3 or 1, H, W) -> logits (B, num_labels) from the [CLS] token through the BN head."""

    config_class = FerViTConfig
    # The loss is a batch mean: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: FerViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = BatchNormHead(
            config.hidden_size, config.num_labels, config.head_hidden_sizes, config.head_dropout
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        pixel_values = match_channels(pixel_values, self.config.num_channels)
        if interpolate_pos_encoding is None:  # e.g. fine-tuning at 112 px a ViT pretrained at 224 px
            interpolate_pos_encoding = tuple(pixel_values.shape[-2:]) != _pair(self.config.image_size)
        outputs = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(outputs.last_hidden_state[:, 0])  # [CLS] (B, hidden) -> (B, num_labels)
        logits = logits / getattr(
            self.config, "logit_temperature", 1.0
        )  # a calibrated model's softmax temperature (`python -m fer_hf.calibrate`; 1.0 = none), in every consumer
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
