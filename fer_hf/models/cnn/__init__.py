"""The custom FER CNN: configuration and modeling files are self-contained for trust_remote_code on the Hub."""

from transformers import AutoConfig, AutoModelForImageClassification

from .configuration_fer_cnn import DEFAULT_PRESET, PRESETS, FerCnnConfig
from .modeling_fer_cnn import FerCnnForImageClassification

# Local folders load through the Auto classes once fer_hf is imported; pushed repos carry the code itself.
AutoConfig.register("fer_cnn", FerCnnConfig, exist_ok=True)
AutoModelForImageClassification.register(FerCnnConfig, FerCnnForImageClassification, exist_ok=True)
FerCnnConfig.register_for_auto_class()
FerCnnForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["DEFAULT_PRESET", "PRESETS", "FerCnnConfig", "FerCnnForImageClassification"]
