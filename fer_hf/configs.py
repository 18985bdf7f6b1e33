"""Recipes: YAML files that map one-to-one onto the dataclasses below (plus `training:` = TrainingArguments).

    python -m fer_hf.train recipes/cnn.yaml --training.num_train_epochs 3 --data.source bundled
    python -m fer_hf.train recipes/cnn.yaml --output_dir runs/cnn2 --learning_rate 0.02   # flat Trainer flags

Every field has help text (`python -m fer_hf.train --help-recipe` lists them). Unknown keys and bad values raise
`RecipeError` with the fix; the resolved recipe is written next to the run's outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from fer_hf.ferplus import MODES as FERPLUS_MODES
from fer_hf.transforms import Augment

# A Hub repository id, owner/name: what the card's `datasets:` and `base_model:` metadata may hold.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class RecipeError(ValueError):
    """A recipe that cannot run; the message says which key and how to fix it."""


@dataclass
class DataArgs:
    source: str = field(
        default="../shared/fer2013",
        metadata={"help": "FER2013 source: parquet folder/file, Kaggle CSV, ImageFolder root, 'bundled' or Hub id"},
    )
    classes: str | list[str] | None = field(
        default=None, metadata={"help": "class subset: a name from fer_hf.labels.CLASS_SUBSETS or class names"}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "share of train held out (stratified) when the source has no validation"}
    )
    image_size: int | None = field(
        default=None, metadata={"help": "model input side; None = the model's own (224 ViT/ResNet, 48 CNN)"}
    )
    augment: Augment = field(default_factory=Augment, metadata={"help": "training augmentation (per batch)"})
    sampler: str | None = field(
        default=None, metadata={"help": "None (shuffle) or 'weighted' (sample classes by 1 / class count)"}
    )
    oversample: dict[str, int] = field(
        default_factory=dict,
        metadata={"help": "report-e: {class: factor} adds (factor-1) flipped/rotated copies of that class"},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "use only the first N training rows (stratified shuffle first); for smoke"}
    )
    ferplus_mode: str = field(
        default="majority",
        metadata={
            "help": "FER+ sources (with votes): what training learns from, as FERPlus's src/ferplus.py defines it: "
            "majority (one-hot of a >50% majority) | probability (a label drawn from the vote distribution each "
            "time a face is seen) | crossentropy (the distribution as a soft target) | multi_target (every "
            "emotion with >= 30% of the votes); validation and test always use the majority protocol"
        },
    )
    votes: str | None = field(
        default=None, metadata={"help": "FER+'s fer2013new.csv for a Kaggle CSV source (default: the one beside it)"}
    )
    hub_dataset_id: str | None = field(
        default=None,
        metadata={
            "help": "the Hub dataset (owner/name) a local source is a copy of, written as `datasets:` in the model "
            "card; None: only a source that is itself a Hub id is named there (a local folder has no id to link)"
        },
    )


@dataclass
class ModelArgs:
    family: str = field(default="cnn", metadata={"help": "model family: cnn | vit | resnet | timm"})
    name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of the backbone (vit/resnet/timm); None for cnn"}
    )
    preset: str | None = field(default="fer-resnet", metadata={"help": "cnn preset (fer_hf.models.hub_code PRESETS)"})
    cnn_overrides: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "FerCnnConfig keyword overrides, e.g. {classifier_dropout: 0.5}"}
    )
    head_hidden_sizes: list[int] = field(
        default_factory=lambda: [512, 256, 128, 64],
        metadata={"help": "batch-normalised head of vit/resnet/timm: Linear->BatchNorm1d->ReLU->Dropout each"},
    )
    head_dropout: float = field(default=0.5, metadata={"help": "dropout after each hidden layer of the head"})
    lora: dict[str, Any] | None = field(
        default=None, metadata={"help": "peft LoRA instead of unfreezing, e.g. {r: 16, alpha: 16, dropout: 0.1}"}
    )
    channels_last: bool = field(default=True, metadata={"help": "channels_last memory format (faster convs on CPU)"})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "let name_or_path's own Python code (its config.json auto_map) run when the backbone is loaded; "
            "false: such a repo or folder is refused, never asked about on stdin (flat flag: --trust-remote-code)"
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "a trained run folder (model.safetensors) or bundled model name ('default') of the same "
            "architecture to start from, e.g. for a second stage with another loss or sampler; another label set "
            "(FER2013's 7 -> FER+'s 8) keeps the output rows of the classes both share"
        },
    )


@dataclass
class LossArgs:
    name: str = field(default="ce", metadata={"help": "ce | weighted_ce | focal"})
    label_smoothing: float = field(default=0.0, metadata={"help": "label smoothing of (weighted) cross-entropy"})
    gamma: float = field(default=2.0, metadata={"help": "focal loss focusing parameter"})
    alpha: list[float] | str | None = field(
        default=None, metadata={"help": "focal/weighted class weights: a list, 'inverse_frequency' or None"}
    )


@dataclass
class UnfreezeArgs:
    schedule: dict[int, list[str]] | None = field(
        default=None, metadata={"help": "{epoch: [layer group, ...]}: groups unfrozen at the start of that epoch"}
    )
    every: int | None = field(default=None, metadata={"help": "instead of schedule: one more group every N epochs"})
    start_frozen: bool = field(default=False, metadata={"help": "freeze the backbone (all but the head) at start"})
    layerwise_decay: float = field(
        default=1.0, metadata={"help": "lr of group k below the head = lr * decay**k (1.0 = same lr everywhere)"}
    )


@dataclass
class RunArgs:
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop after N evaluations without improving metric_for_best_model"}
    )
    resume: bool = field(default=False, metadata={"help": "resume from the last checkpoint in output_dir"})
    overwrite: bool = field(default=False, metadata={"help": "allow writing into an output_dir of another run"})
    evaluate_test: bool = field(default=True, metadata={"help": "also evaluate the test split when there is one"})
    swa_from_epoch: int | None = field(
        default=None,
        metadata={
            "help": "stochastic weight averaging: average the weights at the end of every epoch from this one "
            "(1-based) on, then recompute BatchNorm statistics; needs load_best_model_at_end false"
        },
    )


@dataclass
class DistillArgs:
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "knowledge distillation from this model (a bundled name such as 'ensemble', a run/model folder "
            "or a Hub id); its probabilities on the training faces and their mirrors are computed once and cached"
        },
    )
    temperature: float = field(default=3.0, metadata={"help": "softens teacher and student logits in the KL term"})
    alpha: float = field(
        default=0.7, metadata={"help": "loss = (1 - alpha) * the recipe's loss + alpha * T^2 * KL(teacher || student)"}
    )
    cache_dir: str = field(
        default="runs/teacher_cache", metadata={"help": "where the teacher's probabilities are cached (by content)"}
    )


SECTIONS: dict[str, type] = {"data": DataArgs, "model": ModelArgs, "loss": LossArgs, "unfreeze": UnfreezeArgs}
SECTIONS["run"] = RunArgs
SECTIONS["distill"] = DistillArgs


@dataclass
class Recipe:
    data: DataArgs
    model: ModelArgs
    loss: LossArgs
    unfreeze: UnfreezeArgs
    run: RunArgs
    distill: DistillArgs
    training: dict[str, Any]  # every TrainingArguments input (training_inputs): what runs, and what is saved
    path: str | None = None

    def training_args(self) -> TrainingArguments:
        try:
            return TrainingArguments(**self.training)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"training: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        out["training"] = dict(self.training)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))


def _plain(value: Any) -> Any:
    """Tuples -> lists so that the YAML stays plain (safe_load-able)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read `eval_strategy: no` as False."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

# PyYAML reads 1e-4 (no dot) as a string; recipes write learning rates that way.
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(?:\.[0-9]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_yaml(text: str, source: str = "recipe") -> Any:
    """YAML text -> value; malformed YAML raises RecipeError naming `source` (the recipe file, or the override flag
    with its value) and the line and column, not PyYAML's '"<unicode string>", line 3' with its own layout."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML {_yaml_problem(err)}") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """`at line L, column C: <what PyYAML expected> (<the construct it was reading>, from line K)` in one line."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        since = f", from line {context_mark.line + 1}" if context_mark is not None else ""
        problem += f" ({' '.join(context.split())}{since})"
    return f"{where}: {problem}"


TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
# The flags every Hugging Face example script takes: aliases of --training.<flag> (also with dashes).
FLAT_TRAINING_FLAGS = {
    "output_dir",
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "seed",
    "push_to_hub",
    "hub_model_id",
}
# The flags the other commands take, as switches (no value, or true/false after them): aliases of recipe keys.
FLAT_SWITCHES = {"trust_remote_code": "model.trust_remote_code"}
SECRET_KEYS = {"hub_token", "token"}
# fer_hf's own defaults, under the recipe's keys.
PACKAGE_TRAINING = {
    "output_dir": "runs/default",
    "restore_callback_states_from_checkpoint": True,  # a resumed run carries on its clock and early-stopping patience
}
FIXED_TRAINING = {"remove_unused_columns": False}  # the collator reads the faces column ("pixels") by name


def _field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def training_inputs(training: dict[str, Any]) -> dict[str, Any]:
    """Every TrainingArguments input a run uses: this transformers version's defaults, fer_hf's, then the recipe's
    keys. It is what a run folder's recipe.yaml saves, so re-running that file reproduces the run even where library
    defaults change. Derived settings (greater_is_better, ...) keep their unset default, so that TrainingArguments
    derives them again from an overridden key. Tokens are never part of it."""
    library = {
        f.name: _field_default(f)
        for f in dataclasses.fields(TrainingArguments)
        if f.init and f.name not in SECRET_KEYS
    }
    return {**library, **PACKAGE_TRAINING, **training, **FIXED_TRAINING}


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
        key = flag.replace("-", "_")
        key = f"training.{key}" if key in FLAT_TRAINING_FLAGS else FLAT_SWITCHES.get(key, flag)
        if key in given and given[key] != flag:  # the same flag twice: the last wins, as usual
            raise RecipeError(f"--{flag}: {key} is already given by --{given[key]}; give it once")
        given[key] = flag
        *parents, name = key.split(".")
        if not parents:
            raise RecipeError(
                f"--{key}: overrides are --section.key value, e.g. --training.learning_rate 1e-4 (these Trainer "
                f"flags also work without training.: {', '.join('--' + f for f in sorted(FLAT_TRAINING_FLAGS))})"
            )
        node = raw
        for part in parents:  # --data.augment.hflip 0 sets data: {augment: {hflip: 0}}, keeping its other keys
            node[part] = node.get(part) or {}
            if not isinstance(node[part], dict):
                raise RecipeError(f"--{key}: {part!r} is {node[part]!r} in the recipe, not a mapping of keys")
            node = node[part]
        node[name] = value
    return _build(raw, str(path) if path else None)


def _parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise RecipeError(f"unexpected argument {arg!r}; overrides look like --training.num_train_epochs 3")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        elif arg[2:].replace("-", "_") in FLAT_SWITCHES:  # --trust-remote-code [true|false]
            given = i + 1 < len(argv) and str(argv[i + 1]).strip().lower() in BOOL_WORDS
            key, value = arg[2:], argv[i + 1] if given else "true"
            i += 2 if given else 1
        elif i + 1 < len(argv):
            key, value = arg[2:], argv[i + 1]
            i += 2
        else:
            raise RecipeError(f"{arg}: missing its value")
        pairs.append((key, read_yaml(value, f"--{key} {value!r}")))
    return pairs


def _build(raw: dict[str, Any], path: str | None) -> Recipe:
    unknown = set(raw) - {*SECTIONS, "training"}
    if unknown:
        raise RecipeError(_unknown_message("section", unknown, [*SECTIONS, "training"], path))
    sections = {name: _section(cls, raw.get(name) or {}, name, path) for name, cls in SECTIONS.items()}
    training = dict(raw.get("training") or {})
    bad = set(training) - TRAINING_FIELDS
    if bad:
        raise RecipeError(_unknown_message("training key", bad, TRAINING_FIELDS, path))
    leaked = SECRET_KEYS & set(training)
    if leaked:
        raise RecipeError(
            f"training.{sorted(leaked)[0]}: never put tokens in recipes; use `hf auth login` or HF_TOKEN"
        )
    hints = _field_types(TrainingArguments)
    training = {key: _typed(value, hints.get(key), f"training.{key}", path) for key, value in training.items()}
    for key in POSITIVE_TRAINING_KEYS & set(training):
        if training[key] is not None and training[key] <= 0:
            raise RecipeError(f"{path or 'recipe'}: training.{key} must be positive, got {training[key]!r}")
    _check_optim_args(training.get("optim_args"), path)
    for key, value in FIXED_TRAINING.items():
        if key in training and training[key] != value:
            raise RecipeError(f"{path or 'recipe'}: training.{key} must stay {value} (fer_hf's collator needs it)")
    recipe = Recipe(**sections, training=training_inputs(training), path=path)
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
        raise RecipeError(_unknown_message(f"{name} key", unknown, names, path))
    hints = _field_types(cls)
    values = {key: _typed(value, hints.get(key), f"{name}.{key}", path) for key, value in values.items()}
    try:
        if cls is DataArgs and isinstance(values.get("augment"), dict):
            values["augment"] = _section(Augment, values["augment"], "data.augment", path)
        return cls(**values)
    except RecipeError:
        raise  # from the nested data.augment section: it already names its file and section
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{path or 'recipe'}: {name}: {err}") from None


BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
POSITIVE_TRAINING_KEYS = {
    "num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
}  # fmt: skip


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation; {} when the annotations cannot be resolved (then nothing is checked)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001  (a forward reference of another library: skip the type check)
        return {}


def _typed(value: Any, hint: Any, key: str, path: str | None) -> Any:
    """Check (and for booleans, read) `value` against a simple annotation: bool, int, float, or those | None.
    Booleans take true/false, yes/no, on/off, 1/0; ints take ints; floats take numbers. Sizes, epochs and batch
    sizes must be positive. Other annotations are left to the dataclass."""
    args = (
        typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    )
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), None) if len(args) == 2 and optional else hint
    if value is None and optional or base not in (bool, int, float):
        return value
    where = f"{path or 'recipe'}: {key}"
    if base is bool:
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if isinstance(value, bool) or word in BOOL_WORDS:
            return value if isinstance(value, bool) else BOOL_WORDS[word]
        raise RecipeError(f"{where}: expected true or false (yes/no, 1/0), got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or (base is int and not isinstance(value, int)):
        raise RecipeError(f"{where}: expected {'an integer' if base is int else 'a number'}, got {value!r}")
    name = key.rsplit(".", 1)[-1]
    if any(part in name for part in ("size", "epochs", "batch")) and value <= 0:
        raise RecipeError(f"{where}: must be positive, got {value!r}")
    return value  # an int is a valid float: kept as written (recipe.yaml shows what the user typed)


def _unknown_message(what: str, unknown: set[str], known, path: str | None) -> str:
    key = sorted(unknown)[0]
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else f" Known: {sorted(known)}"
    return f"{path or 'recipe'}: unknown {what} {key!r}.{hint}"


def _validate(recipe: Recipe) -> None:
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
        if recipe.training.get("load_best_model_at_end"):
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
    lines = []
    for name, cls in {**SECTIONS, "data.augment": Augment}.items():
        lines.append(f"{name}:")
        for f in dataclasses.fields(cls):
            lines.append(f"  {f.name:<24} {f.metadata.get('help', '')}")
    lines.append("training:\n  any transformers.TrainingArguments field (output_dir, learning_rate, bf16, ...)")
    return "\n".join(lines)


def parse_recipe(argv: list[str] | None = None) -> Recipe:
    """`RECIPE.yaml [--section.key value ...]` -> Recipe."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "--help-recipe"):
        print(__doc__ + "\n" + recipe_help())
        raise SystemExit(0)
    path = argv.pop(0) if argv and not argv[0].startswith("--") else None
    return load_recipe(path, argv)
