"""A timm backbone whose classifier is the batch-normalised FER head. Self-contained apart from relative imports,
so a pushed model loads with `AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True)`.

Backbone weights are named like `TimmWrapperForImageClassification`'s (`timm_model.*`, built with num_classes=0 so
timm's own classifier is an Identity); the head is `classifier.*`, as in the ViT and ResNet families.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.timm_wrapper.modeling_timm_wrapper import TimmWrapperPreTrainedModel

from .configuration_fer_timm import FerTimmConfig
from .fer_head import BatchNormHead, match_channels


class FerTimmForImageClassification(TimmWrapperPreTrainedModel):
    """pixel_values (B, 3 or 1, H, W) -> logits (B, num_labels): timm's pooled features (B, num_features) -> head."""

    config_class = FerTimmConfig
    # The loss is a batch mean: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: FerTimmConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        # num_classes=0: timm returns pooled features (B, num_features); the FER head is ours.
        model_args = {k: v for k, v in (config.model_args or {}).items() if k != "num_classes"}
        self.timm_model = timm.create_model(config.architecture, pretrained=False, num_classes=0, **model_args)
        self.classifier = BatchNormHead(
            self.timm_model.num_features, config.num_labels, config.head_hidden_sizes, config.head_dropout
        )
        self.post_init()

    def load_state_dict(self, state_dict, *args, **kwargs):
        # TimmWrapperPreTrainedModel prefixes every key with "timm_model." (for raw timm checkpoints), which would
        # misplace the head; this model's checkpoints always carry their full names.
        return nn.Module.load_state_dict(self, state_dict, *args, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        in_chans = (self.config.model_args or {}).get("in_chans", 3)
        pixel_values = match_channels(pixel_values.to(self.device, self.dtype), in_chans)
        features = self.timm_model(pixel_values)  # pooled (B, num_features); timm's classifier is an Identity
        logits = self.classifier(features)
        logits = logits / getattr(
            self.config, "logit_temperature", 1.0
        )  # a calibrated model's softmax temperature (`python -m fer_hf.calibrate`; 1.0 = none), in every consumer
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutput(loss=loss, logits=logits)
