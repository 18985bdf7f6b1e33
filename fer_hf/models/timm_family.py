"""The `timm` family: any timm backbone through transformers' TimmWrapper, under the batch-normalised FER head.

`model.name_or_path` is one of
  - a folder written by `python -m fer_hf.importers.weights efficientnet-lite0 DIR` (offline ImageNet weights), by
    `save_pretrained`, or in timm's own Hub layout, or a Hub id such as `timm/tf_efficientnet_lite0.in1k`:
    the backbone's weights are loaded (all of them, or an error) and a fresh head is put on top;
  - a bare timm architecture name (no "/", not a folder) such as `tf_efficientnet_lite0`: the same architecture
    with timm's own random initialisation, the from-scratch baseline of a transfer-learning comparison.

The saved model is a `fer_timm` FerTimmForImageClassification (hub_code/modeling_fer_timm.py, self-contained): it
reloads with its head through the Auto classes and `pipeline`, with trust_remote_code where fer_hf is not installed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
from PIL import Image
from torch import nn
from transformers import PreTrainedConfig, TimmWrapperConfig, TimmWrapperModel, ViTImageProcessor
from transformers.utils import logging as hf_logging

from fer_hf.models.heads import check_head_dropout, check_head_sizes
from fer_hf.models.hub_code.configuration_fer_timm import FerTimmConfig
from fer_hf.models.hub_code.modeling_fer_timm import FerTimmForImageClassification
from fer_hf.models.registry import BuiltModel, register_family

EXAMPLES = "a folder from `python -m fer_hf.importers.weights efficientnet-lite0 DIR`, a Hub id like 'timm/tf_efficientnet_lite0.in1k'"
LayerGroups = list[tuple[str, list[str]]]


@dataclass
class Backbone:
    architecture: str
    pretrained_cfg: dict  # timm's data config of the weights: input_size, mean, std, interpolation, crop_pct
    model_args: dict | None  # extra timm.create_model kwargs of the checkpoint
    state_dict: dict  # timm_model weights (num_classes=0: no classifier)
    source: dict  # provenance, saved in config.backbone_source


# ------------------------------------------------------------------------------------------------- the backbone
def load_backbone(name_or_path: str | None) -> Backbone:
    if not name_or_path:
        raise ValueError(f"model family 'timm' needs model.name_or_path: {EXAMPLES}, or a timm architecture name")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return pretrained_backbone(str(path))
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ValueError(
            f"model.name_or_path {name_or_path!r}: no such folder. Pretrained EfficientNet-Lite0 weights are made "
            f"offline with `python -m fer_hf.importers.weights efficientnet-lite0 {name_or_path}`"
        )
    if "/" in name_or_path:  # owner/name: a Hub id, through the same from_pretrained call as a folder
        return pretrained_backbone(name_or_path)
    if timm.is_model(name_or_path):
        return scratch_backbone(name_or_path)
    close = difflib.get_close_matches(name_or_path, timm.list_models(), n=3)
    raise ValueError(
        f"model.name_or_path {name_or_path!r} is not a folder, a Hub id (owner/name) or a timm architecture"
        + (f"; did you mean {close}?" if close else "")
    )


def timm_config_dict(ref: str) -> dict:
    """The checkpoint's config.json as a dict; raises unless it describes a timm model."""
    try:
        raw, _ = PreTrainedConfig.get_config_dict(ref)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"model family 'timm': cannot read config.json of {ref!r} ({err}); expected {EXAMPLES}"
        ) from None
    if "architecture" not in raw or "pretrained_cfg" not in raw:
        raise ValueError(
            f"model family 'timm': {ref!r} is not a timm checkpoint (its config.json has no 'architecture' / "
            f"'pretrained_cfg'; model_type {raw.get('model_type')!r}); expected {EXAMPLES}"
        )
    return raw


def pretrained_backbone(ref: str) -> Backbone:
    """Every backbone tensor of the checkpoint, or an error: a partial load would quietly train half-random weights."""
    raw = timm_config_dict(ref)
    config = TimmWrapperConfig.from_dict({k: v for k, v in raw.items() if k != "model_type"})
    # timm's save_for_hf records num_classes in model_args too, which would clash with the wrapper's num_classes=0.
    config.model_args = {k: v for k, v in (config.model_args or {}).items() if k != "num_classes"} or None
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # timm's own classifier is "unexpected" here by design; missing keys raise below
    try:
        # The config is given (TimmWrapperConfig, no auto_map is read): no repository code can run; said explicitly.
        model, info = TimmWrapperModel.from_pretrained(
            ref, config=config, output_loading_info=True, trust_remote_code=False
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    bad = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if bad:
        raise ValueError(f"{ref}: the checkpoint does not cover the {config.architecture} backbone: {sorted(bad)[:5]}")
    source = {"name_or_path": ref, "weights": raw.get("weights_provenance") or raw.get("backbone_source")}
    return Backbone(
        config.architecture, dict(config.pretrained_cfg), config.model_args, model.timm_model.state_dict(), source
    )


def scratch_backbone(architecture: str) -> Backbone:
    """timm's own initialisation (transformers' _init_weights would re-draw convs with its initializer_range)."""
    fresh = timm.create_model(architecture, pretrained=False, num_classes=0)
    source = {"name_or_path": architecture, "weights": "random initialisation (timm)"}
    return Backbone(architecture, dict(fresh.pretrained_cfg), None, fresh.state_dict(), source)


def fine_tune_cfg(pretrained_cfg: dict, side: int) -> dict:
    """pretrained_cfg for FER faces: the collator upsamples the whole 48x48 face to side x side (bilinear), so the
    saved processor must do the same at inference: bilinear resize, crop_pct 1 (no crop of a square face)."""
    drop = {"num_classes", "test_input_size", "test_crop_pct", "url", "hf_hub_id", "file"}
    cfg = {k: v for k, v in pretrained_cfg.items() if k not in drop}
    channels = int(cfg.get("input_size", (3,))[0])
    cfg.update(input_size=[channels, side, side], crop_pct=1.0, crop_mode="center", interpolation="bilinear")
    return cfg


def timm_image_processor(pretrained_cfg: dict) -> ViTImageProcessor:
    """The saved processor (preprocessor_config.json): what the collator does at evaluation (bilinear resize of the
    whole face to the side, the weights' mean/std), plus gray -> RGB. TimmWrapperImageProcessor would read the same
    settings from config.json but cannot take a 1-channel face, FER2013's own format."""
    side = int(pretrained_cfg["input_size"][-1])
    return ViTImageProcessor(
        do_convert_rgb=True,
        size={"height": side, "width": side},
        resample=Image.Resampling.BILINEAR,  # fine_tune_cfg's interpolation
        image_mean=[float(v) for v in pretrained_cfg["mean"]],
        image_std=[float(v) for v in pretrained_cfg["std"]],
    )


# transformers >= 5.25 builds a timm-style checkpoint's image processor (a config.json with pretrained_cfg) from its
# config.json alone, no longer from preprocessor_config.json: these settings go into both files, so that every
# version (and pipeline()) gets the same 96 px, gray-taking processor.
PROCESSOR_KEYS = ("do_convert_rgb", "do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize",
                  "image_mean", "image_std")  # fmt: skip


def processor_settings(processor: ViTImageProcessor) -> dict:
    """The keys of the saved processor that config.json carries too (PROCESSOR_KEYS), JSON-ready."""
    settings = processor.to_dict()
    return {key: settings[key] for key in PROCESSOR_KEYS if key in settings}


# ------------------------------------------------------------------------------------------------ layer groups
def _matcher_ordinals(matcher) -> Callable[[str], tuple[tuple, str]]:
    """timm's group_matcher (dict of regexes, or a callable) -> name -> (ordinal tuple, matcher key), as timm's
    group_with_matcher orders them, but entries it would merge into the previous group (ordinal 99999, e.g.
    EfficientNet's conv_head + bn2) stay a group of their own."""
    if callable(matcher):

        def from_callable(name: str) -> tuple:
            found = matcher(name)
            return tuple(float(o) for o in (found if isinstance(found, list | tuple) else [found])), ""

        return from_callable
    compiled = []
    for ordinal, (group, spec) in enumerate(matcher.items()):
        specs = [] if spec is None else spec if isinstance(spec, list | tuple) else [(spec, None)]
        compiled += [(re.compile(rx), ordinal, group, suffix) for rx, suffix in specs]

    def ordinals(name: str) -> tuple:
        for rx, ordinal, group, suffix in compiled:
            found = rx.match(name)
            if found:
                numbers = [float(g) for g in found.groups() if g is not None]
                return (float(ordinal), *numbers, *(suffix or ())), group
        return (float("inf"),), "neck"

    return ordinals


def _distinct_prefix(name: str, group_of: dict[str, tuple], key: tuple) -> str:
    """The shortest dotted prefix of `name` whose parameters all belong to the group `key`."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i]) + "."
        if all(k == key for n, k in group_of.items() if n.startswith(prefix)):
            return prefix
    return name


def timm_layer_groups(model: FerTimmForImageClassification) -> LayerGroups:
    """Top-down (head first) groups with real parameter prefixes, from timm's own group matcher; for EfficientNet:
    head, conv_head (+bn2), blocks.6 ... blocks.0, stem (conv_stem, bn1). Every parameter in exactly one group."""
    backbone = model.timm_model
    ordinals = _matcher_ordinals(backbone.group_matcher(coarse=True))
    group_of, label_of = {}, {}
    for name, _ in backbone.named_parameters():
        key, label = ordinals(name)
        group_of[name], label_of[key] = key, label
    groups: LayerGroups = [("head", ["classifier."])]
    for key in sorted(set(group_of.values()), reverse=True):
        prefixes = list(dict.fromkeys(_distinct_prefix(n, group_of, key) for n, k in group_of.items() if k == key))
        title = "stem" if label_of[key] == "stem" else prefixes[0].rstrip(".")
        groups.append((title, ["timm_model." + p for p in prefixes]))
    check_layer_groups(model, groups)
    return groups


def check_layer_groups(model: nn.Module, groups: LayerGroups) -> None:
    names = [g for g, _ in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"layer group names are not unique: {names}")
    for name, _ in model.named_parameters():
        owners = [g for g, prefixes in groups if any(name.startswith(p) for p in prefixes)]
        if len(owners) != 1:
            raise ValueError(f"parameter {name!r} is in {len(owners)} layer groups {owners}; expected exactly one")


# ------------------------------------------------------------------------------------------------------ family
@register_family("timm")
def build_timm(model_args, names, id2label, label2id, image_size) -> BuiltModel:
    if model_args.lora:
        raise ValueError("model.lora is wired for the vit family only; use unfreeze settings for timm")
    sizes, dropout = check_head_sizes(model_args.head_hidden_sizes), check_head_dropout(model_args.head_dropout)
    backbone = load_backbone(model_args.name_or_path)
    side = int(image_size or backbone.pretrained_cfg["input_size"][-1])
    pretrained_cfg = fine_tune_cfg(backbone.pretrained_cfg, side)
    config = FerTimmConfig(
        architecture=backbone.architecture,
        pretrained_cfg=pretrained_cfg,
        model_args=backbone.model_args,
        num_labels=len(names),
        id2label=id2label,
        label2id=label2id,
        head_hidden_sizes=sizes,
        head_dropout=dropout,
        backbone_source=backbone.source,
    )
    processor = timm_image_processor(pretrained_cfg)
    config.update(processor_settings(processor))
    model = FerTimmForImageClassification(config)
    model.timm_model.load_state_dict(backbone.state_dict, strict=True)
    return BuiltModel(
        model=model,
        image_processor=processor,
        image_size=side,
        channels=3,  # gray faces repeated as RGB
        mean=[float(v) for v in pretrained_cfg["mean"]],
        std=[float(v) for v in pretrained_cfg["std"]],
        layer_groups=timm_layer_groups(model),
    )
