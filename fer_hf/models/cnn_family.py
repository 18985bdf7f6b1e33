"""The `cnn` family: FerCnnForImageClassification from a preset, trained from scratch at 48x48."""

from __future__ import annotations

from PIL import Image
from transformers import ViTImageProcessor

from fer_hf.models.hub_code import FerCnnConfig, FerCnnForImageClassification
from fer_hf.models.registry import BuiltModel, register_family

CNN_MEAN, CNN_STD = 0.5, 0.5  # gray faces scaled to [-1, 1] (report-b)


def cnn_image_processor(size: int) -> ViTImageProcessor:
    """Resize to the CNN's side and scale to [-1, 1]; RGB input is averaged to gray inside the model."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        resample=Image.Resampling.BILINEAR,
        image_mean=CNN_MEAN,  # one value for every channel: a 1-channel face (FER2013's own format) and an RGB
        image_std=CNN_STD,  # photo both normalise (a list of three fails on 1 channel); RGB output is unchanged
    )


def cnn_layer_groups(model: FerCnnForImageClassification) -> list[tuple[str, list[str]]]:
    blocks = [(f"features.{i}", [f"features.{i}."]) for i in reversed(range(len(model.features)))]
    return [("head", ["classifier."]), *blocks]


@register_family("cnn")
def build_cnn(model_args, names, id2label, label2id, image_size) -> BuiltModel:
    config = FerCnnConfig(
        preset=model_args.preset,
        num_labels=len(names),
        id2label=id2label,
        label2id=label2id,
        **({"image_size": image_size} if image_size else {}),
        **model_args.cnn_overrides,
    )
    model = FerCnnForImageClassification(config)
    size = config.image_size
    return BuiltModel(
        model=model,
        image_processor=cnn_image_processor(size),
        image_size=size,
        channels=config.num_channels,
        mean=[CNN_MEAN],
        std=[CNN_STD],
        layer_groups=cnn_layer_groups(model),
    )
