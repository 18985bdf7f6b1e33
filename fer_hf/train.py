"""Train a FER model from a recipe with the transformers Trainer (Accelerate does precision and processes).

    python -m fer_hf.train recipes/smoke.yaml
    accelerate launch -m fer_hf.train recipes/vit_unfreeze.yaml --training.num_train_epochs 12
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, set_seed
from transformers.trainer_utils import get_last_checkpoint

from fer_hf.callbacks import build_callbacks
from fer_hf.configs import Recipe, RecipeError, parse_recipe
from fer_hf.data import class_weights, load_fer_dataset
from fer_hf.labels import canonical_id
from fer_hf.losses import build_loss
from fer_hf.metrics import compute_fer_metrics, trainer_compute_metrics
from fer_hf.models import BuiltModel, build_model
from fer_hf.report import per_class_table, plot_confusion_matrix, plot_curves
from fer_hf.transforms import BatchTransform, FerCollator, FerTensorDataset


class FerTrainer(Trainer):
    """Trainer with the recipe's loss (focal / weighted CE / smoothing) and an optional class-balanced sampler."""

    def __init__(
        self,
        *args,
        loss_fn: torch.nn.Module,
        eval_collator: FerCollator,
        sample_weights: torch.Tensor | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.loss_fn, self.eval_collator, self.sample_weights = loss_fn, eval_collator, sample_weights

    def _with_eval_collator(self, make_loader, dataset):
        # Evaluation and prediction see un-augmented batches; training keeps the augmenting collator.
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return make_loader(dataset)
        finally:
            self.data_collator = train_collator

    def get_eval_dataloader(self, eval_dataset=None):
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset):
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = self.loss_fn.to(outputs.logits.device)(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        # Draw len(dataset) samples per epoch with probability ~ 1 / class count (report-b's sampler).
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self.sample_weights, len(self.sample_weights), generator=generator)


def prepare_output_dir(recipe: Recipe) -> str | None:
    """Refuse to mix runs in one folder; return the checkpoint to resume from (or None)."""
    out = Path(recipe.training["output_dir"])
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if recipe.run.resume:
        if last is None:
            raise RecipeError(f"run.resume: no checkpoint-* folder in {out} to resume from")
        return last
    if out.is_dir() and any(out.iterdir()) and not recipe.run.overwrite:
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
    return FerTensorDataset(torch.cat([ds.images, extra]), torch.cat([ds.labels, ds.labels.new_full((len(extra),), class_id)]))


def prepare_datasets(recipe: Recipe, dd) -> dict[str, FerTensorDataset]:
    """Decode each split once to uint8 tensors; apply the recipe's row limit and oversampling to train."""
    train = dd["train"]
    if recipe.data.max_train_samples:
        n = min(recipe.data.max_train_samples, len(train))
        train = train.train_test_split(train_size=n, stratify_by_column="label", seed=recipe.training.get("seed", 42))[
            "train"
        ]
    out = {"train": FerTensorDataset.from_split(train, desc="decode train")}
    names = train.features["label"].names
    for cls_name, factor in recipe.data.oversample.items():
        if cls_name not in names:
            raise RecipeError(f"data.oversample: class {cls_name!r} is not in this run's classes {names}")
        canonical_id(cls_name)  # raises on a misspelt class
        out["train"] = oversample(out["train"], names.index(cls_name), factor, recipe.training.get("seed", 42))
    for split in ("validation", "test"):
        if split in dd:
            out[split] = FerTensorDataset.from_split(dd[split], desc=f"decode {split}")
    return out


def build_trainer(recipe: Recipe, built: BuiltModel, datasets: dict, names, weights) -> FerTrainer:
    args = recipe.training_args()
    args.remove_unused_columns = False  # the collator needs "pixels"
    transform = dict(size=built.image_size, channels=built.channels, mean=built.mean, std=built.std)
    train_collator = FerCollator(BatchTransform(**transform, augment=recipe.data.augment, train=True))
    alpha = recipe.loss.alpha
    loss_weights = weights if alpha == "inverse_frequency" else alpha
    if recipe.loss.name == "weighted_ce" and loss_weights is None:
        loss_weights = weights
    loss_fn = build_loss(
        recipe.loss.name, class_weights=loss_weights, gamma=recipe.loss.gamma, label_smoothing=recipe.loss.label_smoothing
    )
    sample_weights = None
    if recipe.data.sampler == "weighted":
        counts = torch.bincount(datasets["train"].labels, minlength=len(names)).double()
        sample_weights = (1.0 / counts)[datasets["train"].labels]
    if recipe.model.channels_last:
        built.model = built.model.to(memory_format=torch.channels_last)
    trainer = FerTrainer(
        model=built.model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=train_collator,
        processing_class=built.image_processor,
        compute_metrics=trainer_compute_metrics(names),
        callbacks=build_callbacks(recipe, built),
        loss_fn=loss_fn,
        eval_collator=FerCollator(BatchTransform(**transform, train=False)),
        sample_weights=sample_weights,
    )
    return trainer


def evaluate_splits(trainer: FerTrainer, datasets: dict, names, include_test: bool) -> dict:
    """Final metrics of the (best) model on validation and, when present, test: one metric module for all."""
    results = {}
    for split in ("validation", "test"):
        if split not in datasets or (split == "test" and not include_test):
            continue
        start = time.perf_counter()
        pred = trainer.predict(datasets[split], metric_key_prefix=split)
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        results[split] = compute_fer_metrics(logits, pred.label_ids, names)
        results[split]["split"] = split
        results[split]["seconds"] = round(time.perf_counter() - start, 2)
    return results


def save_artifacts(trainer: FerTrainer, recipe: Recipe, metrics: dict, names, train_seconds: float) -> None:
    """Model + image processor (safetensors), resolved recipe, metrics.json, confusion matrix, curves, table."""
    out = Path(recipe.training["output_dir"])
    trainer.save_model(str(out))  # weights + config + image processor
    recipe.save(out / "recipe.yaml")
    model = trainer.model
    summary = {
        "model_family": recipe.model.family,
        "labels": list(names),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_seconds": round(train_seconds, 1),
        "epochs": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "device": str(trainer.args.device),
        "world_size": trainer.args.world_size,
        **metrics,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    for split, m in metrics.items():
        plot_confusion_matrix(m["confusion_matrix"], names, out / f"confusion_matrix_{split}.png", f"{split} ({m['num_samples']})")
        (out / f"per_class_{split}.md").write_text(per_class_table(m) + "\n")
    plot_curves({recipe.model.family: trainer.state.log_history}, out / "training_curves.png")


def print_summary(metrics: dict) -> None:
    for split, m in metrics.items():
        print(f"{split}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  top-2 {m['top2_accuracy']:.4f}")


def main(argv: list[str] | None = None) -> int:
    recipe = parse_recipe(argv)
    set_seed(recipe.training.get("seed", 42))
    resume_from = prepare_output_dir(recipe)
    dd = load_fer_dataset(recipe.data.source, classes=recipe.data.classes, validation_fraction=recipe.data.validation_fraction)
    names = dd["train"].features["label"].names
    built = build_model(recipe.model, names, image_size=recipe.data.image_size)
    datasets = prepare_datasets(recipe, dd)
    trainer = build_trainer(recipe, built, datasets, names, class_weights(dd["train"]))
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - start
    metrics = evaluate_splits(trainer, datasets, names, recipe.run.evaluate_test)
    if trainer.is_world_process_zero():
        save_artifacts(trainer, recipe, metrics, names, train_seconds)
        print_summary(metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
