"""Recipes: YAML files that map one-to-one onto the dataclasses below, each field with help text, and `training:`
onto `FerTrainingArguments` (transformers' TrainingArguments with fer_hf's defaults), resolved once. Reading them from
YAML and the command line is `fer_hf.recipe_parser`; a run saves its resolved recipe as recipe.yaml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from fer_hf.launch_check import check_launch
from fer_hf.recipe_values import (
    RecipeError,
    plain,
)


@dataclass
class Augment:
    """Training-time augmentation, applied per batch (each image draws its own random parameters)."""

    hflip: float = field(default=0.5, metadata={"help": "probability of a horizontal flip"})
    rotation: float = field(default=0.0, metadata={"help": "max rotation in degrees (uniform in +-rotation)"})
    translate: float = field(default=0.0, metadata={"help": "max shift as a fraction of the image side"})
    scale: tuple[float, float] = field(default=(1.0, 1.0), metadata={"help": "zoom range (min, max); >1 zooms in"})
    brightness: float = field(default=0.0, metadata={"help": "brightness factor uniform in [1-b, 1+b]"})
    contrast: float = field(default=0.0, metadata={"help": "contrast factor uniform in [1-c, 1+c]"})
    sharpness: tuple[float, float] = field(
        default=(1.0, 1.0), metadata={"help": "sharpness factor range as torchvision's adjust_sharpness (1 = off)"}
    )
    random_erasing: float = field(default=0.0, metadata={"help": "probability of erasing one random rectangle"})
    mixup_alpha: float = field(
        default=0.0, metadata={"help": "mixup: blend each face with another, weight ~ Beta(a, a); 0 = off"}
    )
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "CutMix: paste a box of another face, kept area ~ Beta(a, a); 0 = off"}
    )
    mix_prob: float = field(
        default=1.0, metadata={"help": "share of training batches mixed when mixup/CutMix is on (both on: 50/50)"}
    )

    def __post_init__(self) -> None:
        self.scale, self.sharpness = tuple(self.scale), tuple(self.sharpness)
        for name in ("hflip", "random_erasing", "mix_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("rotation", "translate", "brightness", "contrast", "mixup_alpha", "cutmix_alpha"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "sharpness"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"augment.{name} must be a range (min, max) with 0 <= min <= max, got {(lo, hi)}")


@dataclass
class DataArgs:
    source: str | None = field(
        default=None,
        metadata={
            "help": "your copy of FER2013 or FER+ (required): parquet folder/file, Kaggle CSV, ImageFolder root, "
            "FER+ layout folder, a Hub dataset id, or 'bundled' (the package's small real sample)"
        },
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
class FerTrainingArguments(TrainingArguments):
    """transformers' `TrainingArguments` with fer_hf's defaults: a recipe's `training:` section. Every Trainer flag
    works in it, nested (`--training.weight_decay 0.05`) or flat as in the Hugging Face examples (`--weight_decay
    0.05 --warmup_steps 100 --report_to tensorboard --push_to_hub`)."""

    output_dir: str | None = field(
        default="runs/default",
        metadata={"help": "the run folder: checkpoints, then the model, recipe.yaml, metrics.json, plots and card"},
    )
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={
            "help": "a resumed run carries on its training clock and early-stopping patience (fer_hf's default)"
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "stays false: fer_hf's collator reads the decoded faces by name, not the forward signature"},
    )


@dataclass
class Recipe:
    data: DataArgs
    model: ModelArgs
    loss: LossArgs
    unfreeze: UnfreezeArgs
    run: RunArgs
    distill: DistillArgs
    training: FerTrainingArguments  # resolved once, when the recipe is read; what the Trainer gets
    training_inputs: dict[str, Any]  # every FerTrainingArguments input that made `training`: saved as recipe.yaml's
    path: str | None = None

    def with_training(self, **changes: Any) -> Recipe:
        """This recipe with some training inputs changed and resolved again (fer_hf.cv: each fold's output_dir)."""
        inputs = {**self.training_inputs, **changes}
        return dataclasses.replace(self, training=resolve_training(inputs, self.path), training_inputs=inputs)

    def to_dict(self) -> dict[str, Any]:
        out = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        out["training"] = dict(self.training_inputs)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(plain(self.to_dict()), sort_keys=False))


TRAINING_FIELDS = {f.name for f in dataclasses.fields(FerTrainingArguments) if f.init}
# The flags the other commands take, as switches (no value, or true/false after them): aliases of recipe keys.
FLAT_SWITCHES = {"trust_remote_code": "model.trust_remote_code"}
SECRET_KEYS = {"hub_token", "token"}
FIXED_TRAINING = {"remove_unused_columns": False}  # the collator reads the faces column ("pixels") by name


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def training_inputs(training: dict[str, Any]) -> dict[str, Any]:
    """Every FerTrainingArguments input a run uses: this transformers version's defaults, fer_hf's, then the
    recipe's keys. It is what a run folder's recipe.yaml saves, so re-running that file reproduces the run even where
    library defaults change. Derived settings (greater_is_better, ...) keep their unset default, so that
    TrainingArguments derives them again from an overridden key. Tokens are never part of it."""
    defaults = {
        f.name: field_default(f)
        for f in dataclasses.fields(FerTrainingArguments)
        if f.init and f.name not in SECRET_KEYS
    }
    return {**defaults, **training, **FIXED_TRAINING}


def resolve_training(inputs: dict[str, Any], path: str | None = None) -> FerTrainingArguments:
    """The inputs as FerTrainingArguments, or a RecipeError naming what transformers refused. TrainingArguments
    sets up the process's device when it is made (under `accelerate launch`: joins the process group), so a launch
    whose machines or ranks do not add up is refused first, with the field named, instead of waiting for peers."""
    check_launch()
    try:
        return FerTrainingArguments(**inputs)
    except (TypeError, ValueError) as err:
        hint = ""
        if "use_cpu" in str(err) or "GPU" in str(err):  # bf16/tf32 recipes are written for GPUs
            hint = " (a GPU recipe: add --use_cpu true to run it on this machine's CPU)"
        raise RecipeError(f"{path or 'recipe'}: training: {' '.join(str(err).split())}{hint}") from None
