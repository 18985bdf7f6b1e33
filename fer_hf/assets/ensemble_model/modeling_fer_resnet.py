"""A ResNet whose classifier is the batch-normalised FER head. Self-contained apart from relative imports, so a
pushed model loads with `AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)`.

Weight names match `ResNetForImageClassification` for the backbone (`resnet.*`), so a stock checkpoint (e.g.
microsoft/resnet-50) loads into it with `from_pretrained`; only the head (`classifier.*`) is new.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import ResNetModel, ResNetPreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .configuration_fer_resnet import FerResNetConfig
from .fer_head import BatchNormHead, match_channels


class FerResNetForImageClassification(ResNetPreTrainedModel):
    """pixel_values (B, 3 or 1, H, W) -> logits (B, num_labels) from the globally pooled last stage."""

    config_class = FerResNetConfig
    # The loss is a batch mean: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: FerResNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet = ResNetModel(config)
        self.classifier = BatchNormHead(
            config.hidden_sizes[-1], config.num_labels, config.head_hidden_sizes, config.head_dropout
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutputWithNoAttention | tuple:
        pixel_values = match_channels(pixel_values, self.config.num_channels)
        outputs = self.resnet(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(outputs.pooler_output.flatten(1))  # (B, C_last, 1, 1) -> (B, num_labels)
        logits = logits / getattr(
            self.config, "logit_temperature", 1.0
        )  # a calibrated model's softmax temperature (`python -m fer_hf.calibrate`; 1.0 = none), in every consumer
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
