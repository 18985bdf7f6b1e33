"""Reading a recipe: a YAML file and `--section.key value` overrides (every TrainingArguments flag also flat, booleans
also bare) -> a validated `fer_hf.configs.Recipe`, and `--help` with every key and its default.

    python -m fer_hf.train recipes/cnn.yaml --training.num_train_epochs 3 --data.source bundled
    python -m fer_hf.train recipes/cnn.yaml --output_dir runs/cnn2 --learning_rate 0.02 --push_to_hub
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from fer_hf.configs import (
    FIXED_TRAINING,
    FLAT_SWITCHES,
    SECRET_KEYS,
    SECTIONS,
    TRAINING_FIELDS,
    Augment,
    DataArgs,
    FerTrainingArguments,
    Recipe,
    field_default,
    resolve_training,
    training_inputs,
)
from fer_hf.data.ferplus import MODES as FERPLUS_MODES
from fer_hf.recipe_values import RecipeError, field_types, read_yaml, typed_value, unknown_message
from fer_hf.repo_ids import HUB_ID


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or none: all defaults), apply `--section.key value` overrides and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise RecipeError(f"{path}: no such recipe file")
        try:
            text = Path(path).read_text()
        except UnicodeDecodeError as err:
            raise RecipeError(f"{path}: not a text file (byte {err.start} is not UTF-8); a recipe is YAML") from None
        raw = read_yaml(text, str(path)) or {}
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections {sorted([*SECTIONS, 'training'])}")
    given: dict[str, str] = {}  # recipe key -> the flag that set it
    for flag, value in _parse_overrides(overrides or []):
        key = _recipe_key(flag)
        if key in given and given[key] != flag:  # the same flag twice: the last wins, as usual
            raise RecipeError(f"--{flag}: {key} is already given by --{given[key]}; give it once")
        given[key] = flag
        *parents, name = key.split(".")
        node = raw
        for part in parents:  # --data.augment.hflip 0 sets data: {augment: {hflip: 0}}, keeping its other keys
            node[part] = node.get(part) or {}
            if not isinstance(node[part], dict):
                raise RecipeError(f"--{key}: {part!r} is {node[part]!r} in the recipe, not a mapping of keys")
            node = node[part]
        node[name] = value
    return _build(raw, str(path) if path else None)


def _recipe_key(flag: str) -> str:
    """A flag -> its recipe key: `--section.key` as it is, a flat Trainer flag (dashes or underscores) under
    training, a switch of the other commands under its section. Anything else is refused with a suggestion."""
    if "." in flag:
        return flag
    key = flag.replace("-", "_")
    if key in TRAINING_FIELDS:
        return f"training.{key}"
    if key in FLAT_SWITCHES:
        return FLAT_SWITCHES[key]
    close = difflib.get_close_matches(key, [*TRAINING_FIELDS, *FLAT_SWITCHES], n=1)
    hint = f"did you mean --{close[0]}? " if close else ""
    raise RecipeError(
        f"--{flag}: not a TrainingArguments flag; {hint}recipe keys are --section.key value, e.g. "
        "--data.source bundled or --training.learning_rate 1e-4 (--help lists them)"
    )


def _is_switch(flag: str) -> bool:
    """A boolean key, which may stand alone on the command line (`--push_to_hub`, `--run.resume`)."""
    try:
        *parents, name = _recipe_key(flag).split(".")
    except RecipeError:
        return False
    cls = {"training": FerTrainingArguments, **SECTIONS, "augment": Augment}.get(parents[-1] if parents else "")
    hint = field_types(cls).get(name) if cls else None
    return hint is bool or hint == bool | None


def _parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise RecipeError(f"unexpected argument {arg!r}; overrides look like --training.num_train_epochs 3")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif _is_switch(arg[2:]) and (nxt is None or str(nxt).startswith("--")):  # a bare boolean: true
            key, value = arg[2:], "true"
            i += 1
        elif nxt is not None:
            key, value = arg[2:], nxt
            i += 2
        else:
            raise RecipeError(f"{arg}: missing its value")
        pairs.append((key, read_yaml(value, f"--{key} {value!r}")))
    return pairs


def _build(raw: dict[str, Any], path: str | None) -> Recipe:
    unknown = set(raw) - {*SECTIONS, "training"}
    if unknown:
        raise RecipeError(unknown_message("section", unknown, [*SECTIONS, "training"], path))
    sections = {name: _section(cls, raw.get(name) or {}, name, path) for name, cls in SECTIONS.items()}
    training = dict(raw.get("training") or {})
    bad = set(training) - TRAINING_FIELDS
    if bad:
        raise RecipeError(unknown_message("training key", bad, TRAINING_FIELDS, path))
    leaked = SECRET_KEYS & set(training)
    if leaked:
        raise RecipeError(
            f"training.{sorted(leaked)[0]}: never put tokens in recipes; use `hf auth login` or HF_TOKEN"
        )
    hints = field_types(FerTrainingArguments)
    training = {key: typed_value(value, hints.get(key), f"training.{key}", path) for key, value in training.items()}
    for key in POSITIVE_TRAINING_KEYS & set(training):
        if training[key] is not None and training[key] <= 0:
            raise RecipeError(f"{path or 'recipe'}: training.{key} must be positive, got {training[key]!r}")
    _check_optim_args(training.get("optim_args"), path)
    for key, value in FIXED_TRAINING.items():
        if key in training and training[key] != value:
            raise RecipeError(f"{path or 'recipe'}: training.{key} must stay {value} (fer_hf's collator needs it)")
    inputs = training_inputs(training)
    recipe = Recipe(**sections, training=resolve_training(inputs, path), training_inputs=inputs, path=path)
    _validate(recipe)
    return recipe


def _check_optim_args(value: Any, path: str | None) -> None:
    """transformers splits optim_args on ',' then '=' only when it builds the optimizer, after the data is loaded,
    and a malformed string ends there in a bare unpacking error: check its shape up front."""
    if value is None:
        return
    malformed = not isinstance(value, str) or any(
        pair.count("=") != 1 or pair.startswith("=") for pair in value.replace(" ", "").split(",")
    )
    if malformed:
        raise RecipeError(
            f"{path or 'recipe'}: training.optim_args {value!r}: expected comma-separated key=value pairs, "
            "e.g. momentum=0.9,nesterov=True"
        )


def _section(cls: type, values: dict[str, Any], name: str, path: str | None) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{path or 'recipe'}: section {name!r} must be a mapping, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise RecipeError(unknown_message(f"{name} key", unknown, names, path))
    hints = field_types(cls)
    values = {key: typed_value(value, hints.get(key), f"{name}.{key}", path) for key, value in values.items()}
    try:
        if cls is DataArgs and isinstance(values.get("augment"), dict):
            values["augment"] = _section(Augment, values["augment"], "data.augment", path)
        return cls(**values)
    except RecipeError:
        raise  # from the nested data.augment section: it already names its file and section
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{path or 'recipe'}: {name}: {err}") from None


POSITIVE_TRAINING_KEYS = {
    "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
}  # fmt: skip


def _validate(recipe: Recipe) -> None:
    if not recipe.data.source:
        raise RecipeError(
            f"{recipe.path or 'recipe'}: data.source is not set: name your copy of FER2013 or FER+ (a parquet folder, "
            "Kaggle CSV, ImageFolder root, FER+ folder or Hub id), e.g. --data.source path/to/fer2013, or "
            "--data.source bundled for the package's small sample"
        )
    if recipe.loss.name not in ("ce", "weighted_ce", "focal"):
        raise RecipeError(f"loss.name {recipe.loss.name!r}: choose ce, weighted_ce or focal")
    if recipe.data.ferplus_mode not in FERPLUS_MODES:
        raise RecipeError(f"data.ferplus_mode {recipe.data.ferplus_mode!r}: choose one of {list(FERPLUS_MODES)}")
    hub_dataset_id = recipe.data.hub_dataset_id
    if hub_dataset_id is not None and not HUB_ID.fullmatch(str(hub_dataset_id)):
        raise RecipeError(
            f"data.hub_dataset_id {hub_dataset_id!r}: expected a Hub dataset id such as 'owner/name', or null"
        )
    if recipe.data.sampler not in (None, "weighted"):
        raise RecipeError(f"data.sampler {recipe.data.sampler!r}: choose null (shuffle) or 'weighted'")
    if recipe.unfreeze.schedule is not None and recipe.unfreeze.every is not None:
        raise RecipeError("unfreeze: give either schedule or every, not both")
    if not 0 < recipe.unfreeze.layerwise_decay <= 1:
        raise RecipeError(f"unfreeze.layerwise_decay must be in (0, 1], got {recipe.unfreeze.layerwise_decay}")
    if recipe.run.swa_from_epoch is not None:
        if not isinstance(recipe.run.swa_from_epoch, int) or recipe.run.swa_from_epoch < 1:
            raise RecipeError(f"run.swa_from_epoch must be an integer >= 1, got {recipe.run.swa_from_epoch!r}")
        if recipe.training.load_best_model_at_end:
            raise RecipeError(
                "run.swa_from_epoch: the averaged weights replace the model at the end of training, so "
                "training.load_best_model_at_end must be false (the best checkpoint would be overwritten)"
            )
    for cls_name, factor in recipe.data.oversample.items():
        if not isinstance(factor, int) or factor < 1:
            raise RecipeError(f"data.oversample.{cls_name}: factor must be an integer >= 1, got {factor!r}")
    distill = recipe.distill
    if distill.teacher is not None:
        if not distill.temperature > 0:
            raise RecipeError(f"distill.temperature must be > 0, got {distill.temperature!r}")
        if not 0 <= distill.alpha <= 1:
            raise RecipeError(f"distill.alpha must be in [0, 1], got {distill.alpha!r}")
        if recipe.data.oversample:
            raise RecipeError(
                "distill: data.oversample adds rotated copies the teacher has no probabilities for; use one or "
                "the other"
            )


def recipe_help() -> str:
    """Every recipe key with its default and help; then the Trainer's flags (HfArgumentParser's help, defaults
    shown), which work nested under training. or flat."""
    lines = []
    for name, cls in {**SECTIONS, "data.augment": Augment}.items():
        lines.append(f"{name}:")
        for f in dataclasses.fields(cls):
            default = field_default(f)
            lines.append(f"  --{name}.{f.name} (default: {default!r})\n      {f.metadata.get('help', '')}")
    trainer = HfArgumentParser(FerTrainingArguments, prog="training").format_help()
    flags = trainer[trainer.index("options:") :] if "options:" in trainer else trainer
    lines.append(f"\ntraining: every TrainingArguments flag, --training.KEY or flat --KEY\n{flags}")
    return "\n".join(lines)


def parse_recipe(argv: list[str] | None = None) -> Recipe:
    """`RECIPE.yaml [--section.key value ...]` -> Recipe."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "--help-recipe"):
        print("usage: python -m fer_hf.train [RECIPE.yaml] [--section.key value ...] [--trainer_flag value ...]\n")
        print(__doc__ + "\n" + recipe_help())
        raise SystemExit(0)
    path = argv.pop(0) if argv and not argv[0].startswith("--") else None
    return load_recipe(path, argv)
