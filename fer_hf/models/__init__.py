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
from transformers import AutoConfig

from fer_hf.labels import id2label, label2id
from fer_hf.models import cnn_family, resnet, timm_family, vit  # noqa: F401  (each registers its family)
from fer_hf.models.registry import MODEL_FAMILIES, BuiltModel, register_family  # noqa: F401  (the public names)


def build_model(model_args, label_names: Sequence[str], image_size: int | None = None) -> BuiltModel:
    """Build the recipe's model family for `label_names`; raises on unknown families."""
    if model_args.family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {model_args.family!r}; choose one of {sorted(MODEL_FAMILIES)}")
    names = tuple(label_names)
    return MODEL_FAMILIES[model_args.family](model_args, names, id2label(names), label2id(names), image_size)


def load_trained_weights(model: nn.Module, folder: str | Path, label_names: Sequence[str]) -> list[str]:
    """Start `model` from a trained run's weights (model.init_from): same architecture, every tensor matched by
    name and shape. A run trained on another label set (FER2013's 7 -> FER+'s 8) starts too: the output layer's
    rows (the tensors sized by the class count) are copied by class *name*, and a class the run never saw keeps
    its fresh initialisation. Returns those new classes; nothing else is loaded partially."""
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
    saved = saved_label_names(path)
    state = load_file(str(weights))
    expected = model.state_dict()
    new_classes: list[str] = []
    if saved and saved != list(label_names):
        shared = [n for n in label_names if n in saved]
        if not shared:
            raise ValueError(
                f"model.init_from {str(folder)!r}: trained on classes {saved}, none of this run's {list(label_names)}"
            )
        state = _rows_by_name(state, expected, saved, list(label_names))
        new_classes = [n for n in label_names if n not in saved]
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
    return new_classes


def saved_label_names(path: Path) -> list[str]:
    """The class names a saved model predicts, in order, read through its config class (timm stores them as
    label_names); [] without a readable config.json."""
    if not (path / "config.json").is_file():
        return []
    try:
        config = AutoConfig.from_pretrained(str(path))  # the package's own types only: no remote code
    except (OSError, ValueError, KeyError):
        config = json.loads((path / "config.json").read_text())
        labels = config.get("id2label", {})
        return [labels.get(str(i)) for i in range(len(labels))]
    return [config.id2label[i] for i in range(config.num_labels)]


def _rows_by_name(state: dict, expected: dict, saved: list[str], names: list[str]) -> dict:
    """The output layer of a run with classes `saved`, re-indexed for `names`: every tensor whose first dimension is
    the class count (the last Linear's weight (K, D) and bias (K,)) gets the saved row of each class it shares, and
    this model's own initial row for a class the run did not have."""
    out = dict(state)
    for key, tensor in state.items():
        target = expected.get(key)
        if target is None or tensor.ndim == 0 or tensor.shape[0] != len(saved) or target.shape[0] != len(names):
            continue
        if tensor.shape[1:] != target.shape[1:]:
            continue
        rows = target.clone()
        for i, name in enumerate(names):
            if name in saved:
                rows[i] = tensor[saved.index(name)].to(rows.dtype)
        out[key] = rows
    return out
