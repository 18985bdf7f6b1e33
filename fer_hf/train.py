"""Train a FER model from a recipe with the transformers Trainer (Accelerate does precision and processes).

python -m fer_hf.train recipes/smoke.yaml
accelerate launch -m fer_hf.train recipes/vit_unfreeze.yaml --training.num_train_epochs 12
"""

# ruff: noqa: E402  (TQDM_DISABLE must be set before tqdm is imported)
from __future__ import annotations

import os

# Progress bars only on the main process: tqdm reads TQDM_DISABLE once, when it is first imported (below).
if int(os.environ.get("LOCAL_RANK", "0")) > 0:
    os.environ.setdefault("TQDM_DISABLE", "1")

import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from transformers import TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from fer_hf import ferplus
from fer_hf.callbacks import (
    GradualUnfreezeCallback,
    TrainingClockCallback,
    WeightAveragingCallback,
    build_callbacks,
    find_callback,
)
from fer_hf.configs import Recipe, RecipeError, parse_recipe
from fer_hf.data import class_counts, class_weights, has_votes, load_fer_dataset, raters_of, votes_of
from fer_hf.distill import teacher_accuracy, teacher_logprobs
from fer_hf.hub.card import write_model_card
from fer_hf.labels import FERPLUS_LABELS, canonical_id
from fer_hf.launch_check import check_launch
from fer_hf.loading import BUNDLED_MODELS, resolve_model_path
from fer_hf.models import build_model, load_trained_weights
from fer_hf.models.lora import merge_lora
from fer_hf.report import describe_hardware, per_class_table, plot_confusion_matrix, plot_curves
from fer_hf.results import METRICS_FILE, RunRecord, TrainerEval, read_run_record, write_record
from fer_hf.runlock import LOCK_FILE, run_lock
from fer_hf.trainer import FerTrainer, build_trainer, evaluate_splits
from fer_hf.transforms import FerTensorDataset, keep_freed_batch_memory


def prepare_output_dir(recipe: Recipe) -> str | None:
    """Refuse to mix runs in one folder; return the checkpoint to resume from (or None)."""
    out = Path(recipe.training["output_dir"])
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if recipe.run.resume:
        if last is None:
            raise RecipeError(f"run.resume: no checkpoint-* folder in {out} to resume from")
        return last
    if out.exists() and not out.is_dir():
        raise RecipeError(f"training.output_dir {out} is a file; choose a folder")
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and not recipe.run.overwrite:
        raise RecipeError(
            f"{out} already holds a run; pass --run.resume true to continue it, --run.overwrite true to replace it, "
            "or choose another --training.output_dir"
        )
    return None


def oversample(ds: FerTensorDataset, class_id: int, factor: int, seed: int) -> FerTensorDataset:
    """report-e: add (factor - 1) copies of one class, each horizontally flipped or rotated within +-10 degrees."""
    import torchvision.transforms.v2.functional as TF

    idx = torch.nonzero(ds.labels == class_id).squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    copies = []
    for k in range(factor - 1):
        images = ds.images[idx].unsqueeze(1)  # (n, 1, 48, 48) uint8
        if k % 2 == 0:
            images = TF.horizontal_flip(images)
        angles = (torch.rand(len(idx), generator=generator) * 20 - 10).tolist()
        images = torch.stack([TF.rotate(im, a) for im, a in zip(images, angles, strict=True)])
        copies.append(images.squeeze(1))
    extra = torch.cat(copies) if copies else ds.images[:0]
    targets = None if ds.targets is None else torch.cat([ds.targets, *[ds.targets[idx]] * (factor - 1)])
    return FerTensorDataset(
        torch.cat([ds.images, extra]),
        torch.cat([ds.labels, ds.labels.new_full((len(extra),), class_id)]),
        targets=targets,
    )


def load_data(recipe: Recipe, dd: DatasetDict | None = None) -> tuple[DatasetDict, list[str]]:
    """The recipe's DatasetDict (or the given one) and class names; every class must have training images."""
    data = recipe.data
    if dd is None:
        dd = load_fer_dataset(
            data.source,
            classes=data.classes,
            validation_fraction=data.validation_fraction,
            ferplus_mode=data.ferplus_mode,
            votes=data.votes,
        )
    if data.ferplus_mode != "majority" and not has_votes(dd["train"]):
        raise RecipeError(
            f"data.ferplus_mode {data.ferplus_mode!r}: {data.source} has no FER+ votes; give a FER+ source (its layout "
            "folder, a Kaggle CSV with fer2013new.csv, or a copy saved with a votes column) or keep majority"
        )
    names = dd["train"].features["label"].names
    empty = [name for name, count in zip(names, class_counts(dd["train"]), strict=True) if count == 0]
    if empty:
        have = [n for n in names if n not in empty]
        raise RecipeError(
            f"data.classes: {data.source} has no training images of {empty}; choose classes it has "
            f"(e.g. --data.classes '{have}') or another data.source"
        )
    check_validation(dd, names)
    return dd, names


def check_validation(dd: DatasetDict, names: list[str]) -> None:
    """An empty validation split stops the run before training (the Trainer would fail after epoch 1 with an
    unrelated error); classes missing from it are named, since their recall cannot be measured."""
    if "validation" not in dd:
        return
    sizes = ", ".join(f"{split} {len(ds)}" for split, ds in dd.items())
    if len(dd["validation"]) == 0:
        raise RecipeError(
            f"the validation split is empty ({sizes} faces); use a source with more faces per class or a larger "
            "--data.validation_fraction"
        )
    missing = [n for n, count in zip(names, class_counts(dd["validation"]), strict=True) if count == 0]
    if missing:
        print(f"warning: no validation faces of {missing} ({sizes} faces): their recall will read 0", file=sys.stderr)


def prepare_datasets(recipe: Recipe, dd) -> dict[str, FerTensorDataset]:
    """Decode each split once to uint8 tensors; apply the recipe's row limit and oversampling to train."""
    train = dd["train"]
    if recipe.data.max_train_samples and recipe.data.max_train_samples < len(train):
        seed = recipe.training["seed"]
        n = recipe.data.max_train_samples
        train = train.train_test_split(train_size=n, stratify_by_column="label", seed=seed)["train"]
    out = {"train": FerTensorDataset.from_split(train, desc="decode train")}
    names = train.features["label"].names
    if has_votes(train) and recipe.data.ferplus_mode != "majority":  # majority's one-hot targets are the labels
        faces = out["train"]
        out["train"] = FerTensorDataset(
            faces.images, faces.labels, targets=vote_targets(train, recipe.data.ferplus_mode)
        )
    if recipe.distill.teacher:  # soft targets of every training face and its mirror, cached by content
        faces = out["train"]
        teacher = teacher_logprobs(recipe.distill.teacher, faces, names, recipe.distill.cache_dir)
        out["train"] = FerTensorDataset(faces.images, faces.labels, teacher, targets=faces.targets)
        print(f"distill: the teacher agrees with {teacher_accuracy(teacher, faces.labels):.1%} of the training labels")
    for cls_name, factor in recipe.data.oversample.items():
        if cls_name not in names:
            raise RecipeError(f"data.oversample: class {cls_name!r} is not in this run's classes {names}")
        canonical_id(cls_name)  # raises on a misspelt class
        out["train"] = oversample(out["train"], names.index(cls_name), factor, recipe.training["seed"])
    for split in ("validation", "test"):
        if split in dd:
            out[split] = FerTensorDataset.from_split(dd[split], desc=f"decode {split}")
    return out


def vote_targets(ds, mode: str) -> torch.Tensor:
    """(N, K) training targets of a FER+ split under `mode`, over the split's own classes (a `classes:` subset keeps
    its columns of the 8, renormalised): what `FerTrainer.compute_loss` hands the loss."""
    dist, _ = ferplus.vote_distributions(votes_of(ds), mode)  # every row was kept by `mode` when loaded
    columns = [FERPLUS_LABELS.index(n) for n in ds.features["label"].names]
    dist = dist[:, columns]
    dist = dist / np.maximum(dist.sum(axis=1, keepdims=True), 1e-12)
    return torch.from_numpy(ferplus.training_targets(dist, mode))


def save_model(trainer: FerTrainer, out: Path) -> None:
    """Weights + config + image processor. A LoRA run also keeps its adapter in out/adapter, and saves the merged
    model at the top so that evaluate, predict, publish and the app load it like any other classifier."""
    from peft import PeftModel

    if not isinstance(trainer.model, PeftModel):
        trainer.save_model(str(out))
        return
    trainer.model.save_pretrained(str(out / "adapter"))
    merge_lora(trainer.model).save_pretrained(str(out))
    trainer.processing_class.save_pretrained(str(out))


def save_artifacts(
    trainer: FerTrainer, recipe: Recipe, metrics: dict[str, TrainerEval], names, clock: TrainingClockCallback
) -> None:
    """Model + image processor (safetensors), resolved recipe, metrics.json, confusion matrix, curves, table."""
    out = Path(recipe.training["output_dir"])
    model = trainer.model
    parameters = sum(p.numel() for p in model.parameters())
    unfreeze = find_callback(trainer.callback_handler.callbacks, GradualUnfreezeCallback)
    trainable = (
        unfreeze.trained_parameters(trainer.state.epoch)
        if unfreeze
        else sum(p.numel() for p in model.parameters() if p.requires_grad)
    )
    save_model(trainer, out)
    recipe.save(out / "recipe.yaml")
    record = RunRecord(
        model_family=recipe.model.family,
        labels=list(names),
        parameters=parameters,
        trainable_parameters=trainable,
        train_seconds=round(clock.seconds, 1),  # all sessions of a resumed run, evaluation every epoch included
        train_sessions=clock.sessions,
        epochs=trainer.state.epoch,
        best_checkpoint=trainer.state.best_model_checkpoint,
        device=str(trainer.args.device),
        hardware=describe_hardware(str(trainer.args.device)),
        world_size=trainer.args.world_size,
        **stage_summary(recipe, trainer),
        splits=metrics,
    )
    write_record(record, out / METRICS_FILE)
    for split, m in metrics.items():
        plot_confusion_matrix(
            m.confusion_matrix, names, out / f"confusion_matrix_{split}.png", f"{split} ({m.num_samples})"
        )
        (out / f"per_class_{split}.md").write_text(per_class_table(m.per_class) + "\n")
    trainer.save_state()  # trainer_state.json: the log history, for fer_hf.compare's curves
    plot_curves({recipe.model.family: trainer.state.log_history}, out / "training_curves.png")
    write_model_card(out)  # README.md: the model card (fer_hf.hub.card), regenerated by fer_hf.hub.publish on upload


def save_hf_results(trainer: FerTrainer, train_metrics: dict, metrics: dict[str, TrainerEval], samples: int) -> None:
    """train_results.json, eval_results.json (validation), test_results.json (with a test split) and all_results.json,
    as the transformers example scripts write them (trainer.save_metrics), for tools that read those files. The
    numbers are copies: metrics.json (the typed RunRecord) stays the source of truth."""
    train = {**train_metrics, "train_samples": samples}
    trainer.log_metrics("train", train)
    trainer.save_metrics("train", train)
    for split, prefix in (("validation", "eval"), ("test", "test")):
        if split in metrics:
            trainer.save_metrics(prefix, hf_eval_metrics(metrics[split], prefix))


def hf_eval_metrics(m: TrainerEval, prefix: str) -> dict[str, float | int]:
    """A split's scores under transformers' names: eval_accuracy, eval_samples, eval_runtime, ..."""
    values = {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "weighted_f1": m.weighted_f1,
              "top2_accuracy": m.top2_accuracy, "ece": m.ece, "nll": m.nll, "samples": m.num_samples,
              "runtime": m.seconds, "samples_per_second": m.images_per_second}  # fmt: skip
    return {f"{prefix}_{k}": v for k, v in values.items() if v is not None}


def init_folder(ref: str) -> str:
    """model.init_from: a bundled model's name ('default') or a run folder -> the folder to read."""
    return resolve_model_path(ref) if ref in BUNDLED_MODELS else ref  # a bundled one not installed: its sentence


def stage_summary(recipe: Recipe, trainer: FerTrainer) -> dict:
    """RunRecord fields: what a run started from (model.init_from: that run's epochs and time, so cards can add them
    up), which epochs its final weights average (run.swa_from_epoch), and the teacher it was distilled from."""
    out = {}
    if recipe.distill.teacher:
        out["distill"] = dataclasses.asdict(recipe.distill)
    if recipe.model.init_from:
        earlier = read_run_record(init_folder(recipe.model.init_from))
        out["init_from"] = {
            "path": recipe.model.init_from,
            "epochs": earlier.epochs if earlier else None,
            "train_seconds": earlier.train_seconds if earlier else None,
        }
    swa = find_callback(trainer.callback_handler.callbacks, WeightAveragingCallback)
    if swa is not None:
        out["weight_average"] = swa.summary()
    return out


def print_summary(metrics: dict[str, TrainerEval]) -> None:
    for split, m in metrics.items():
        raters = f"  KL(raters||model) {m.kl_raters:.4f}" if m.kl_raters is not None else ""
        print(
            f"{split}: accuracy {m.accuracy:.4f}  macro-F1 {m.macro_f1:.4f}  top-2 {m.top2_accuracy:.4f}  "
            f"ECE {m.ece:.4f}{raters}"
        )


def train_from_recipe(
    recipe: Recipe, extra_callbacks: Sequence[TrainerCallback] = (), dd: DatasetDict | None = None
) -> FerTrainer:
    """parse -> seed -> data -> model -> trainer -> train -> evaluate -> save artefacts (rank 0 only).

    `dd` replaces the recipe's data source with given train/validation splits (fer_hf.cv passes each fold).
    """
    check_launch()  # a distributed launch whose machines, ranks or address do not add up stops here, named
    set_seed(recipe.training["seed"])
    keep_freed_batch_memory()  # large batches reuse freed memory instead of page-faulting fresh mmaps
    resume_from = prepare_output_dir(recipe)
    with run_lock(recipe.training["output_dir"]):  # checked writable, and no second training writes into it
        return _train_locked(recipe, extra_callbacks, dd, resume_from)


def _train_locked(recipe: Recipe, extra_callbacks, dd: DatasetDict | None, resume_from: str | None) -> FerTrainer:
    """train_from_recipe's steps from the data on, while this process holds the output folder's lock."""
    dd, names = load_data(recipe, dd)
    built = build_model(recipe.model, names, image_size=recipe.data.image_size)
    if recipe.model.init_from:
        new = load_trained_weights(built.model, init_folder(recipe.model.init_from), names)
        if new:
            print(f"model.init_from {recipe.model.init_from}: output rows copied by class name; {new} start fresh")
    callbacks = [*build_callbacks(recipe, built), *extra_callbacks]  # validates the unfreeze schedule early
    datasets = prepare_datasets(recipe, dd)
    trainer = build_trainer(recipe, built, datasets, names, class_weights(dd["train"]), callbacks)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    clock = find_callback(trainer.callback_handler.callbacks, TrainingClockCallback)  # a resume replaces it
    raters = {split: raters_of(dd[split]) for split in ("validation", "test") if split in dd}
    metrics = evaluate_splits(trainer, datasets, names, recipe.run.evaluate_test, raters)
    if trainer.is_world_process_zero():
        save_artifacts(trainer, recipe, metrics, names, clock)
        save_hf_results(trainer, train_result.metrics, metrics, len(datasets["train"]))
        print_summary(metrics)
    return trainer


def next_steps(recipe: Recipe) -> str:
    """What the command prints last: where the run folder is and what to run with it next, so that a first run
    (the smoke recipe) leads somewhere instead of ending at a table of numbers."""
    run = shlex.quote(str(recipe.training["output_dir"]))
    source = shlex.quote(str(recipe.data.source))
    lines = [
        f"run folder: {run} (model, model card README.md, metrics.json, confusion matrix, training curves)",
        "next:",
        f"  python -m fer_hf.evaluate {run} --data {source}   # scores, confusion matrix and its most confident mistakes",
        f"  python -m fer_hf.predict --model {run} photo.jpg   # the faces in a photo of yours, with this model",
    ]
    if recipe.data.source == "bundled":  # a sample run: the real one is the next step
        lines.append(
            "  python -m fer_hf.train recipes/cnn.yaml --data.source FER2013_FOLDER   # the full FER2013 "
            "(recipes/README.md lists the others)"
        )
    else:
        lines.append(f"  python -m fer_hf.hub.publish {run} --repo-id USER/NAME   # share it on the Hugging Face Hub")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command: recipe -> trained run folder with its card (train_from_recipe) -> the Hub (training.push_to_hub)."""
    from fer_hf.hub.publish import push_trained_run  # the Hub client only where the command pushes

    recipe = parse_recipe(argv)
    trainer = train_from_recipe(recipe)
    if not trainer.is_world_process_zero():
        return 0
    code = push_trained_run(recipe)
    print(next_steps(recipe))
    return code


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))  # a RecipeError/RunLockError names the key or folder and the fix: one line, exit 2
