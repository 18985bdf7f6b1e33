"""The reusable trainer: `FerTrainer` (the recipe's loss, a class-balanced sampler, layer-wise learning rates,
gradual unfreezing's gradients, the batch transform on the model's device) and `build_trainer`, which puts it
together from a recipe and a built model. No Hub code: `fer_hf.train` adds the run folder, the model card and the
push around it, and the benchmarks use this module alone.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
from transformers import Trainer, TrainerCallback

from fer_hf.configs import Recipe, RecipeError
from fer_hf.data.transforms import BatchMixer, BatchTransform, FerCollator, apply_transform
from fer_hf.evaluation.metrics import compute_fer_metrics, trainer_compute_metrics
from fer_hf.evaluation.results import TrainerEval
from fer_hf.models import BuiltModel
from fer_hf.training.callbacks import (
    BATCH_NORMS,
    GradualUnfreezeCallback,
    LayerGroups,
    find_callback,
    group_names,
    group_of,
    layerwise_lrs,
)
from fer_hf.training.distill import DistillationLoss
from fer_hf.training.losses import build_loss


class EpochWeightedSampler(torch.utils.data.WeightedRandomSampler):
    """WeightedRandomSampler whose draws depend only on (seed, epoch): the same on every rank (accelerate then
    shards the batches) and the same after `resume_from_checkpoint` (the Trainer calls `set_epoch`)."""

    def __init__(self, weights: torch.Tensor, seed: int):
        super().__init__(weights, num_samples=len(weights), replacement=True)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class FerTrainer(Trainer):
    """Trainer with the recipe's loss (focal / weighted CE / smoothing), an optional class-balanced sampler,
    layer-wise learning rates, the gradient side of gradual unfreezing, and the batch transform run where the model
    runs: batches arrive as uint8 faces (B, 48, 48) and become the model's input (B, C, S, S) on its device, augmented
    by `train_transform` in training steps and only resized + normalised by `eval_transform` in evaluation."""

    def __init__(
        self,
        *args,
        loss_fn: torch.nn.Module,
        train_transform: BatchTransform | None = None,
        eval_transform: BatchTransform | None = None,
        sample_weights: torch.Tensor | None = None,
        layer_groups: LayerGroups = (),
        layerwise_decay: float = 1.0,
        mixer: BatchMixer | None = None,
        ferplus_mode: str = "majority",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.ferplus_mode = ferplus_mode
        self.loss_fn, self.sample_weights = loss_fn, sample_weights
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.layer_groups, self.layerwise_decay = list(layer_groups), layerwise_decay
        self.mixer = mixer if mixer is not None and mixer.enabled else None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # Frozen groups lose their gradients right after backward (DDP's all-reduce is done by then), so that
        # gradient clipping, the logged grad norm and the optimizer only see the groups that train.
        unfreeze = find_callback(self.callback_handler.callbacks, GradualUnfreezeCallback)
        if unfreeze is not None:
            unfreeze.drop_frozen_grads()
        return loss

    def create_optimizer(self, model=None):
        if self.optimizer is not None or not self.layer_groups or self.layerwise_decay == 1.0:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs) or not isinstance(optimizer_cls, type):
            raise RecipeError(f"unfreeze.layerwise_decay needs a standard optimizer, not optim={self.args.optim}")
        decay_names = self.get_decay_parameter_names(opt_model)
        groups = layerwise_param_groups(self.model, opt_model, self.layer_groups, self.layerwise_decay, decay_names)
        for group in groups:
            group["weight_decay"] = self.args.weight_decay if group.pop("decays") else 0.0
            group["lr"] = self.args.learning_rate * group.pop("lr_scale")
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _prepare_inputs(self, inputs):
        # The Trainer has moved the batch to the model's device; training steps (model.train()) augment, evaluation
        # and prediction steps (model.eval()) do not. Draws come from torch's global CPU RNG, seeded by the Trainer
        # and restored on resume, as they did when the collator ran in the main process.
        inputs = super()._prepare_inputs(inputs)
        if "pixels" not in inputs:  # already model input (a collator with a transform)
            return inputs
        transform = self.train_transform if self.model.training else self.eval_transform
        if transform is None:
            raise ValueError("FerTrainer got uint8 'pixels' without a train_transform/eval_transform to apply")
        return apply_transform(transform, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher = inputs.pop("teacher", None)  # (B, K) log-probabilities when distilling (training batches only)
        targets = inputs.pop("targets", None)  # (B, K) FER+ vote targets (training batches of a vote mode only)
        if targets is not None and model.training and self.ferplus_mode == "probability":
            targets = draw_labels(targets)
        mix = self.mixer(inputs["pixel_values"]) if (model.training and self.mixer is not None) else None
        if mix is not None:
            inputs = {**inputs, "pixel_values": mix.pixels}
        outputs = model(**inputs)
        loss_fn = self.loss_fn.to(outputs.logits.device)

        def loss_of(order: torch.Tensor | slice) -> torch.Tensor:
            soft = {} if teacher is None else {"teacher": teacher[order]}
            if targets is not None:
                soft["targets"] = targets[order]
            return loss_fn(outputs.logits, labels[order], **soft)

        loss = loss_of(slice(None))
        if mix is not None:  # mixup/CutMix: each label (and teacher row) counts by its share of the blended face
            loss = mix.lam * loss + (1.0 - mix.lam) * loss_of(mix.perm)
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, train_dataset=None):
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        # Draw len(dataset) samples per epoch with probability ~ 1 / class count (report-b's sampler).
        return EpochWeightedSampler(self.sample_weights, seed=self.args.seed)


def draw_labels(distributions: torch.Tensor) -> torch.Tensor:
    """FER+'s probability mode: one-hot (B, K) of a label drawn from each face's vote distribution (B, K), anew each
    time the face is seen. Drawn on the CPU from torch's global RNG (seeded by the Trainer, restored on resume), so
    a run draws the same labels on any device and every rank draws its own batch's."""
    drawn = torch.multinomial(distributions.detach().float().cpu(), 1).squeeze(1)  # (B,)
    return torch.nn.functional.one_hot(drawn, distributions.shape[-1]).to(distributions)


def layerwise_param_groups(
    model: torch.nn.Module, opt_model: torch.nn.Module, layer_groups: LayerGroups, decay: float, decay_names
) -> list[dict]:
    """One optimizer param group per (layer group, weight decay or not), head first, with lr_scale = decay**k.

    Every trainable parameter is included from the start (gradual unfreezing drops gradients instead). The LR
    scheduler scales each group from its own initial lr, so the ratios between groups hold all run long.
    `opt_model` may be a wrapped `model`: parameters are matched by identity, names come from `model`.
    """
    scales = layerwise_lrs(layer_groups, 1.0, decay)
    owner = {id(p): group_of(n, layer_groups) for n, p in model.named_parameters()}
    decay_names = set(decay_names)
    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in opt_model.named_parameters():
        if param.requires_grad:  # LoRA freezes by requires_grad before any wrapping: that is DDP-safe
            key = (owner.get(id(param), group_names(layer_groups)[-1]), name in decay_names)
            buckets.setdefault(key, []).append(param)
    return [
        {"params": buckets[(group, decays)], "lr_scale": scales[group], "decays": decays, "layer_group": group}
        for group in group_names(layer_groups)
        for decays in (True, False)
        if buckets.get((group, decays))
    ]


def recipe_loss(recipe: Recipe, weights: Sequence[float]) -> torch.nn.Module:
    """The recipe's loss; `weights` are the inverse-frequency class weights of the training split."""
    alpha = recipe.loss.alpha
    loss_weights = weights if alpha == "inverse_frequency" else alpha
    if recipe.loss.name == "weighted_ce" and loss_weights is None:
        loss_weights = weights
    try:
        loss = build_loss(
            recipe.loss.name,
            class_weights=loss_weights,
            gamma=recipe.loss.gamma,
            label_smoothing=recipe.loss.label_smoothing,
            multi_target=recipe.data.ferplus_mode == "multi_target",
        )
    except ValueError as err:
        raise RecipeError(f"loss: {err}") from None
    if recipe.distill.teacher:
        return DistillationLoss(loss, recipe.distill.temperature, recipe.distill.alpha)
    return loss


def balanced_sample_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample weight 1 / (count of its class): a WeightedRandomSampler then draws classes uniformly."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    return (1.0 / counts)[labels]


def check_last_batch(n_train: int, args, model: torch.nn.Module) -> None:
    """A last training batch of one face fails in BatchNorm at the end of the first epoch (it needs more than one
    value per channel in training): refuse it before training starts."""
    per_step = args.per_device_train_batch_size * max(args.world_size, 1)
    has_norm = any(isinstance(m, BATCH_NORMS) for m in model.modules())
    if has_norm and not args.dataloader_drop_last and n_train % per_step == 1:
        raise RecipeError(
            f"training: {n_train:,} training faces in batches of {per_step} leave a last batch of 1 face, on which "
            "BatchNorm cannot train; set training.dataloader_drop_last true (a different face is left out each "
            "epoch) or another per_device_train_batch_size"
        )


def build_trainer(
    recipe: Recipe, built: BuiltModel, datasets: dict, names, weights, callbacks: Sequence[TrainerCallback] = ()
) -> FerTrainer:
    # training.push_to_hub is carried out by fer_hf.train after training, through fer_hf.hub.publish (the same repo
    # layout as its CLI); the Trainer's own push would upload checkpoints without the card. A copy: the recipe keeps
    # the user's setting for the command to read.
    args = copy.copy(recipe.training)  # FerTrainingArguments, resolved once when the recipe was read
    args.push_to_hub = False
    check_last_batch(len(datasets["train"]), args, built.model)
    sample_weights = None
    if recipe.data.sampler == "weighted":
        sample_weights = balanced_sample_weights(datasets["train"].labels, len(names))
    if recipe.model.channels_last:
        built.model = built.model.to(memory_format=torch.channels_last)
    return FerTrainer(
        model=built.model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=FerCollator(),  # uint8 faces; the transform runs on the model's device
        processing_class=built.image_processor,
        compute_metrics=trainer_compute_metrics(names),
        callbacks=list(callbacks),
        loss_fn=recipe_loss(recipe, weights),
        train_transform=BatchTransform.for_model(built, recipe.data.augment),
        eval_transform=BatchTransform.for_model(built),
        sample_weights=sample_weights,
        layer_groups=built.layer_groups,
        layerwise_decay=recipe.unfreeze.layerwise_decay,
        mixer=BatchMixer(recipe.data.augment),
        ferplus_mode=recipe.data.ferplus_mode,
    )


def evaluate_splits(
    trainer: FerTrainer, datasets: dict, names, include_test: bool, raters: dict | None = None
) -> dict[str, TrainerEval]:
    """Final metrics of the (best) model on validation and, when present, test: one metric module for all.
    `raters`: {split: (N, K) raters' distributions} of splits with FER+ votes, scored against too."""
    results = {}
    for split in ("validation", "test"):
        if split not in datasets or (split == "test" and not include_test):
            continue
        start = time.perf_counter()
        pred = trainer.predict(datasets[split], metric_key_prefix=split)
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        metrics = compute_fer_metrics(logits, pred.label_ids, names, (raters or {}).get(split))
        results[split] = TrainerEval(**metrics, split=split, seconds=round(time.perf_counter() - start, 2))
    return results
