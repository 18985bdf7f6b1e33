"""LoRA (peft) as an alternative to gradual unfreezing for the ViT: low-rank adapters on the attention query and
value projections, the whole batch-normalised head trained and saved in full (`modules_to_save`).

    model = apply_lora(model, {"r": 16, "alpha": 16, "dropout": 0.1})   # only adapters + head trainable
    model.save_pretrained(folder)                                       # adapter_config.json + adapter weights
    PeftModel.from_pretrained(base_model, folder)                       # reload on the same backbone
    merge_lora(model).save_pretrained(folder)                           # or: one plain model for the Auto classes
"""

from __future__ import annotations

from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

LORA_DEFAULTS = {"r": 16, "alpha": 16, "dropout": 0.1}
# peft has no default targets for ViT: the attention query and value projections (as in the LoRA paper).
# transformers 5.x names them q_proj / v_proj (4.x: query / value); the names present in the model are used.
VIT_TARGET_NAMES = (["q_proj", "v_proj"], ["query", "value"])
HEAD_MODULES = ["classifier"]


def attention_targets(model: nn.Module) -> list[str]:
    """The query/value Linear names that this transformers version uses in `model`."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for targets in VIT_TARGET_NAMES:
        if set(targets) <= names:
            return targets
    raise ValueError(f"LoRA: no attention query/value Linear layers ({VIT_TARGET_NAMES}) in {type(model).__name__}")


def lora_config(options: dict[str, Any] | None, target_modules: list[str]) -> LoraConfig:
    """`model.lora` of a recipe ({r, alpha, dropout}; missing keys take LORA_DEFAULTS) -> a peft LoraConfig."""
    options = dict(options or {})
    unknown = set(options) - set(LORA_DEFAULTS)
    if unknown:
        raise ValueError(f"model.lora: unknown keys {sorted(unknown)}; allowed {sorted(LORA_DEFAULTS)}")
    opts = {**LORA_DEFAULTS, **options}
    if not isinstance(opts["r"], int) or opts["r"] <= 0:
        raise ValueError(f"model.lora.r must be a positive int (the adapter rank), got {opts['r']!r}")
    if not 0.0 <= float(opts["dropout"]) < 1.0:
        raise ValueError(f"model.lora.dropout must be in [0, 1), got {opts['dropout']!r}")
    return LoraConfig(
        r=opts["r"],
        lora_alpha=opts["alpha"],
        lora_dropout=float(opts["dropout"]),
        target_modules=target_modules,
        modules_to_save=HEAD_MODULES,
        bias="none",
    )


def apply_lora(model: PreTrainedModel, options: dict[str, Any] | None) -> PeftModel:
    """Wrap `model` with LoRA adapters; everything but the adapters and the head is frozen."""
    return get_peft_model(model, lora_config(options, attention_targets(model)))


def merge_lora(model: PeftModel) -> PreTrainedModel:
    """Fold the adapters into the backbone weights: a plain model that saves and reloads with the Auto classes."""
    return model.merge_and_unload()
