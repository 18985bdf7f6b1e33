"""Shared steps of the pretrained families (vit, resnet): check the checkpoint, load it under the FER head, pick the
image processor that is saved next to the model, and fill in a BuiltModel.

Weights always come through `from_pretrained(name_or_path, ...)`: a Hub id for users with network, a local folder
(e.g. a tiny random model saved by the tests) otherwise; both take the same code path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from transformers import AutoConfig, AutoImageProcessor, BaseImageProcessor, PreTrainedConfig, PreTrainedModel
from transformers.image_utils import SizeDict

from fer_hf.models.heads import check_head_dropout, check_head_sizes
from fer_hf.models.registry import BuiltModel

logger = logging.getLogger(__name__)

LayerGroups = list[tuple[str, list[str]]]


def trusts_code(model_args) -> bool:
    """model.trust_remote_code, False when unset: every load below passes it explicitly, so that transformers never
    asks `[y/N]` on stdin (where `echo y |` would answer it) before running a repo's own code."""
    return getattr(model_args, "trust_remote_code", False) is True


def load_backbone_config(
    name_or_path: str, family: str, config_type: type, example: str, trust_remote_code: bool = False
) -> PreTrainedConfig:
    """The checkpoint's config; raises when it cannot be read or is not a `config_type` image model. A checkpoint
    whose config needs its own code is refused unless `trust_remote_code`."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except ValueError as err:
        if not trust_remote_code and "trust_remote_code" in str(err):
            raise ValueError(
                f"model family {family!r}: {name_or_path!r} needs its own Python code to load (its config.json's "
                "auto_map), and fer_hf.train runs no repository's code unless told: read that code, then pass "
                f"--trust-remote-code (model.trust_remote_code: true), or use a checkpoint like {example!r}"
            ) from None
        raise ValueError(
            f"model family {family!r}: cannot read a model config from {name_or_path!r} ({err}). "
            f"Expected a Hub id like {example!r} or a folder written by save_pretrained."
        ) from err
    except (OSError, KeyError) as err:
        raise ValueError(
            f"model family {family!r}: cannot read a model config from {name_or_path!r} ({err}). "
            f"Expected a Hub id like {example!r} or a folder written by save_pretrained."
        ) from err
    if not isinstance(config, config_type):
        raise ValueError(
            f"model family {family!r}: {name_or_path!r} is a {config.model_type!r} checkpoint "
            f"(architectures {config.architectures}), not a {config_type.__name__[:-6]} image classifier; "
            f"use a checkpoint like {example!r} or pick the matching model family."
        )
    return config


def load_with_head(
    model_cls: type[PreTrainedModel], name_or_path: str, model_args, id2label: dict, label2id: dict
) -> PreTrainedModel:
    """Backbone weights from the checkpoint, a fresh batch-normalised head for the FER labels.

    `ignore_mismatched_sizes=True` lets a checkpoint of our own with another label count or head shape load too.
    """
    sizes = check_head_sizes(model_args.head_hidden_sizes)  # fail before loading hundreds of MB
    dropout = check_head_dropout(model_args.head_dropout)
    return model_cls.from_pretrained(
        name_or_path,
        trust_remote_code=trusts_code(model_args),
        num_labels=len(id2label),
        id2label=id2label,
        label2id=label2id,
        ignore_mismatched_sizes=True,
        head_hidden_sizes=sizes,
        head_dropout=dropout,
    )


def _size_get(size, key: str) -> int | None:
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)  # dict or SizeDict


def processor_side(processor: BaseImageProcessor) -> int:
    """The square side the processor resizes to ({"height": S, "width": S} or {"shortest_edge": S})."""
    size = processor.size
    side = _size_get(size, "shortest_edge") or _size_get(size, "height")
    if not side:
        raise ValueError(f"cannot read the input side from the image processor's size {size!r}")
    return int(side)


def like_training(processor: BaseImageProcessor, side: int) -> BaseImageProcessor:
    """Make inference preprocessing match the training collator: the whole image resized to side x side, no crop,
    and a 1-channel face (FER2013's own format) repeated as RGB as the collator does (a 3-value mean fails on it).

    ConvNext-style processors resize to side / crop_pct and crop the centre: with crop_pct = 1 that is a plain
    resize of a square face; processors with a fixed (height, width) resize to it directly.
    """
    if _size_get(processor.size, "shortest_edge"):
        processor.size = SizeDict(shortest_edge=side)
        if hasattr(processor, "crop_pct"):
            processor.crop_pct = 1.0
    else:
        processor.size = SizeDict(height=side, width=side)
    if getattr(processor, "do_center_crop", False):
        processor.crop_size = SizeDict(height=side, width=side)
    processor.do_convert_rgb = True
    return processor


def backbone_processor(
    name_or_path: str,
    image_size: int | None,
    default_side: int,
    make_default: Callable[[int], BaseImageProcessor],
    trust_remote_code: bool = False,
) -> BaseImageProcessor:
    """The checkpoint's own image processor when it has one, else `make_default(side)`; resized like training."""
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # a folder with only config + weights
        logger.info("no image processor in %s (%s): using the family default", name_or_path, err)
        processor = make_default(image_size or default_side)
    return like_training(processor, image_size or processor_side(processor))


def prefixed(groups: LayerGroups, prefix: str) -> LayerGroups:
    """Layer groups of a wrapped model (e.g. peft's `base_model.model.`)."""
    return [(name, [prefix + p for p in prefixes]) for name, prefixes in groups]


def three(values: float | Sequence[float]) -> list[float]:
    return [float(v) for v in values] if isinstance(values, Sequence) else [float(values)] * 3


def built_model(model: PreTrainedModel, processor: BaseImageProcessor, groups: LayerGroups) -> BuiltModel:
    """Pretrained backbones see RGB: the collator repeats the gray face over 3 channels at the processor's side."""
    return BuiltModel(
        model=model,
        image_processor=processor,
        image_size=processor_side(processor),
        channels=3,
        mean=three(processor.image_mean),
        std=three(processor.image_std),
        layer_groups=groups,
    )
