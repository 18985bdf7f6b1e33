"""The `vit` family: a pretrained ViT (default google/vit-base-patch16-224) under the batch-normalised head,
optionally with LoRA adapters instead of gradual unfreezing."""

from __future__ import annotations

from PIL import Image
from transformers import ViTConfig, ViTImageProcessor

from fer_hf.models.hub_code import FerViTForImageClassification
from fer_hf.models.pretrained import (
    LayerGroups,
    backbone_processor,
    built_model,
    load_backbone_config,
    load_with_head,
    prefixed,
    trusts_code,
)
from fer_hf.models.registry import BuiltModel, register_family

DEFAULT_VIT = "google/vit-base-patch16-224"
VIT_MEAN_STD = 0.5  # google/vit-* checkpoints were trained on images scaled to [-1, 1]


def vit_default_processor(side: int) -> ViTImageProcessor:
    return ViTImageProcessor(
        do_convert_rgb=True,  # a 1-channel face repeated as RGB, as the collator does
        size={"height": side, "width": side},
        resample=Image.Resampling.BILINEAR,
        image_mean=[VIT_MEAN_STD] * 3,
        image_std=[VIT_MEAN_STD] * 3,
    )


def vit_layer_groups(num_layers: int) -> LayerGroups:
    """Top-down: head (+ the final layernorm that feeds it), encoder layers N-1 .. 0, patch/position embeddings."""
    layers = [(f"encoder.layer.{i}", [f"vit.layers.{i}."]) for i in reversed(range(num_layers))]
    return [("head", ["classifier.", "vit.layernorm."]), *layers, ("embeddings", ["vit.embeddings."])]


def _side(config: ViTConfig) -> int:
    size = config.image_size
    return int(size[0] if isinstance(size, list | tuple) else size)


@register_family("vit")
def build_vit(model_args, names, id2label, label2id, image_size) -> BuiltModel:
    path = model_args.name_or_path or DEFAULT_VIT
    trust = trusts_code(model_args)
    config = load_backbone_config(path, "vit", ViTConfig, example=DEFAULT_VIT, trust_remote_code=trust)
    processor = backbone_processor(path, image_size, _side(config), vit_default_processor, trust_remote_code=trust)
    model = load_with_head(FerViTForImageClassification, path, model_args, id2label, label2id)
    groups = vit_layer_groups(model.config.num_hidden_layers)
    if model_args.lora:
        from fer_hf.models.lora import apply_lora  # peft is imported only by recipes that use LoRA

        model = apply_lora(model, model_args.lora)
        groups = prefixed(groups, "base_model.model.")  # peft wraps the model: PeftModel.base_model.model
    return built_model(model, processor, groups)
