"""Pretrained backbones (ViT, ResNet) with the batch-normalised FER head, shipped as custom code.

Each configuration/modeling pair imports only transformers, torch and (relatively) `fer_head.py`, so a saved or
pushed model carries its own code: locally it loads through the Auto classes once fer_hf is imported; from a
folder or the Hub without fer_hf it loads with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_fer_resnet import FerResNetConfig
from .configuration_fer_vit import FerViTConfig
from .fer_head import DEFAULT_HEAD_SIZES, BatchNormHead, check_head_sizes
from .modeling_fer_resnet import FerResNetForImageClassification
from .modeling_fer_vit import FerViTForImageClassification

for _config, _model in (
    (FerViTConfig, FerViTForImageClassification),
    (FerResNetConfig, FerResNetForImageClassification),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "DEFAULT_HEAD_SIZES",
    "BatchNormHead",
    "FerResNetConfig",
    "FerResNetForImageClassification",
    "FerViTConfig",
    "FerViTForImageClassification",
    "check_head_sizes",
]
