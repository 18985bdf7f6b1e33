"""Model families behind one registry: `build_model(model_args, label_names)` -> BuiltModel.

Each family returns the model, a matching image processor (saved next to the model so that
`pipeline("image-classification")` works on raw faces and photos), the collator's input spec, and its
layer groups from the top of the network down (head first) for gradual unfreezing and layer-wise lr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from fer_hf.labels import id2label, label2id
from fer_hf.models import cnn_family, resnet, timm_family, vit  # noqa: F401  (each registers its family)
from fer_hf.models.registry import MODEL_FAMILIES, BuiltModel, register_family  # noqa: F401  (the public names)


def build_model(model_args, label_names: Sequence[str], image_size: int | None = None) -> BuiltModel:
    """Build the recipe's model family for `label_names`; raises on unknown families."""
    if model_args.family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {model_args.family!r}; choose one of {sorted(MODEL_FAMILIES)}")
    names = tuple(label_names)
    return MODEL_FAMILIES[model_args.family](model_args, names, id2label(names), label2id(names), image_size)


def load_trained_weights(model: nn.Module, folder: str | Path, label_names: Sequence[str]) -> None:
    """Start `model` from a trained run's weights (model.init_from): same classes in the same order, same
    architecture. Every tensor must match by name and shape; nothing is loaded partially."""
    path = Path(folder).expanduser()
    weights = path / "model.safetensors"
    if not path.is_dir():
        raise ValueError(
            f"model.init_from {str(folder)!r}: no such folder. This recipe starts from another run's result: train "
            "that run first (the recipe's header names it) or point --model.init_from at its output_dir"
        )
    if not weights.is_file():
        found = (
            "pytorch_model.bin (not loaded: only safetensors are)" if (path / "pytorch_model.bin").is_file() else ""
        )
        raise ValueError(
            f"model.init_from {str(folder)!r}: no model.safetensors there {found}".rstrip()
            + "; give the output_dir of a finished fer_hf.train run"
        )
    config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    saved = [config.get("id2label", {}).get(str(i)) for i in range(len(config.get("id2label", {})))]
    if saved and saved != list(label_names):
        raise ValueError(
            f"model.init_from {str(folder)!r}: trained on classes {saved}, this run has {list(label_names)}"
        )
    state = load_file(str(weights))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what} {items[:3]}"
        for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
        if items
    ]
    if problems:
        raise ValueError(
            f"model.init_from {weights}: does not fit this recipe's model ({'; '.join(problems)}); "
            "use the model section the run was trained with"
        )
    model.load_state_dict(state)
