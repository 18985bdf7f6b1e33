"""The `resnet` family: a pretrained ResNet (default microsoft/resnet-50) under the batch-normalised head."""

from __future__ import annotations

from PIL import Image
from transformers import ConvNextImageProcessor, ResNetConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from fer_hf.models.hub_code import FerResNetForImageClassification
from fer_hf.models.pretrained import (
    LayerGroups,
    backbone_processor,
    built_model,
    load_backbone_config,
    load_with_head,
    trusts_code,
)
from fer_hf.models.registry import BuiltModel, register_family

DEFAULT_RESNET = "microsoft/resnet-50"
RESNET_SIDE = 224  # the ImageNet resolution the microsoft/resnet-* checkpoints were trained at


def resnet_default_processor(side: int) -> ConvNextImageProcessor:
    """What microsoft/resnet-* ship (ConvNext-style, ImageNet mean/std, bicubic), without the centre crop."""
    return ConvNextImageProcessor(
        do_convert_rgb=True,  # a 1-channel face repeated as RGB, as the collator does
        size={"shortest_edge": side},
        crop_pct=1.0,
        resample=Image.Resampling.BICUBIC,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


def resnet_layer_groups(num_stages: int) -> LayerGroups:
    """Top-down: head, stage N .. stage 1 (resnet.encoder.stages.N-1 .. 0), stem (resnet.embedder)."""
    stages = [(f"stage{i + 1}", [f"resnet.encoder.stages.{i}."]) for i in reversed(range(num_stages))]
    return [("head", ["classifier."]), *stages, ("stem", ["resnet.embedder."])]


@register_family("resnet")
def build_resnet(model_args, names, id2label, label2id, image_size) -> BuiltModel:
    if model_args.lora:
        raise ValueError("model.lora is wired for the vit family only; use unfreeze settings for resnet")
    path = model_args.name_or_path or DEFAULT_RESNET
    trust = trusts_code(model_args)
    load_backbone_config(path, "resnet", ResNetConfig, example=DEFAULT_RESNET, trust_remote_code=trust)
    processor = backbone_processor(path, image_size, RESNET_SIDE, resnet_default_processor, trust_remote_code=trust)
    model = load_with_head(FerResNetForImageClassification, path, model_args, id2label, label2id)
    return built_model(model, processor, resnet_layer_groups(len(model.config.depths)))
