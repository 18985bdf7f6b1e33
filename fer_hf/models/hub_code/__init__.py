"""The code that travels with saved models: the CNN, the pretrained backbones (ViT, ResNet, timm) under the
batch-normalised FER head, and the ensemble of them.

Each configuration/modeling pair imports only transformers, torch, timm and (relatively) its siblings, so a saved or
pushed model carries its own code: locally it loads through the Auto classes once fer_hf is imported (registered
here, the one place); from a folder or the Hub without fer_hf it loads with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_fer_cnn import DEFAULT_PRESET, PRESETS, FerCnnConfig
from .configuration_fer_ensemble import FerEnsembleConfig
from .configuration_fer_resnet import FerResNetConfig
from .configuration_fer_timm import FerTimmConfig
from .configuration_fer_vit import FerViTConfig
from .fer_head import DEFAULT_HEAD_SIZES, BatchNormHead, check_head_sizes
from .modeling_fer_cnn import FerCnnForImageClassification
from .modeling_fer_ensemble import FerEnsembleForImageClassification
from .modeling_fer_resnet import FerResNetForImageClassification
from .modeling_fer_timm import FerTimmForImageClassification
from .modeling_fer_vit import FerViTForImageClassification

MODEL_CLASSES = {
    FerCnnConfig: FerCnnForImageClassification,
    FerViTConfig: FerViTForImageClassification,
    FerResNetConfig: FerResNetForImageClassification,
    FerTimmConfig: FerTimmForImageClassification,
    FerEnsembleConfig: FerEnsembleForImageClassification,
}
# The model types whose code ships inside this package: safe to load with trust_remote_code.
OWN_MODEL_TYPES = frozenset(config.model_type for config in MODEL_CLASSES)

for _config, _model in MODEL_CLASSES.items():
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModelForImageClassification.register(_config, _model, exist_ok=True)
    _config.register_for_auto_class()
    _model.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "DEFAULT_HEAD_SIZES",
    "DEFAULT_PRESET",
    "MODEL_CLASSES",
    "OWN_MODEL_TYPES",
    "PRESETS",
    "BatchNormHead",
    "FerCnnConfig",
    "FerCnnForImageClassification",
    "FerEnsembleConfig",
    "FerEnsembleForImageClassification",
    "FerResNetConfig",
    "FerResNetForImageClassification",
    "FerTimmConfig",
    "FerTimmForImageClassification",
    "FerViTConfig",
    "FerViTForImageClassification",
    "check_head_sizes",
]
