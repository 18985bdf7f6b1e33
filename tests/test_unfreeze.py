"""Gradual unfreezing and layer-wise learning rates on a tiny CNN and real FER2013 faces (the bundled sample).

What naive versions get wrong, and what is checked here: layers unfrozen later must really train (the optimizer
holds them from the start); frozen layers must not move at all (no weight decay, no momentum) and frozen
BatchNorm layers must keep their running statistics, although the Trainer calls model.train() every step.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import TrainerCallback

from fer_hf.configs import RecipeError, UnfreezeArgs
from fer_hf.data.splits import class_weights
from fer_hf.models import build_model
from fer_hf.recipe_parser import load_recipe
from fer_hf.training.callbacks import GradualUnfreezeCallback, build_callbacks, group_of, unfreeze_epochs
from fer_hf.training.run import prepare_datasets
from fer_hf.training.trainer import build_trainer

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
# Three BN conv blocks (4, 8, 8 channels) + global average pool + a Linear head: ~1.3k parameters.
TINY_CNN = (
    "{blocks: [{out_channels: 4, norm: batch, pool: max}, {out_channels: 8, norm: batch, pool: max},"
    " {out_channels: 8, norm: batch, pool: max}], global_pool: avg, hidden_sizes: [], classifier_dropout: 0.0}"
)
TRAIN_ROWS, BATCH = 64, 16  # 4 optimizer steps per epoch


def tiny_recipe(tmp_path: Path, *overrides: str):
    return load_recipe(
        SMOKE,
        [
            *("--training.output_dir", str(tmp_path / "run")),
            *("--model.cnn_overrides", TINY_CNN),
            *("--data.max_train_samples", str(TRAIN_ROWS)),
            *("--training.per_device_train_batch_size", str(BATCH)),
            *("--training.eval_strategy", "'no'", "--training.save_strategy", "'no'"),
            *("--training.disable_tqdm", "true", "--training.weight_decay", "0.1"),
            *overrides,
        ],
    )


def make_trainer(recipe, dd, extra_callbacks=()):
    names = dd["train"].features["label"].names
    built = build_model(recipe.model, names)
    callbacks = [*build_callbacks(recipe, built), *extra_callbacks]
    datasets = prepare_datasets(recipe, dd)
    return build_trainer(recipe, built, datasets, names, class_weights(dd["train"]), callbacks), built


class Snapshots(TrainerCallback):
    """Copies of the whole state dict (parameters and BN buffers) at train start and after every epoch."""

    def __init__(self):
        self.states: list[dict[str, torch.Tensor]] = []

    def _take(self, model):
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self._take(model)


class GradFlags(TrainerCallback):
    """Which groups had requires_grad during the first step of every epoch: {group: [flag per epoch]}."""

    def __init__(self, layer_groups):
        self.layer_groups, self.flags, self._epoch = layer_groups, {}, -1

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if int(state.epoch) == self._epoch:
            return
        self._epoch = int(state.epoch)
        per_group: dict[str, bool] = {}
        for name, param in model.named_parameters():
            group = group_of(name, self.layer_groups)
            per_group[group] = per_group.get(group, False) or param.requires_grad
        for group, flag in per_group.items():
            self.flags.setdefault(group, []).append(flag)


def changed_per_epoch(snapshots: Snapshots, layer_groups) -> dict[str, list[bool]]:
    """{group: [did any of its tensors change during epoch e]}."""
    states, out = snapshots.states, {}
    for key in states[0]:
        group = group_of(key, layer_groups)
        flags = [not torch.equal(before[key], after[key]) for before, after in zip(states, states[1:], strict=False)]
        out[group] = [a or b for a, b in zip(out.get(group, [False] * len(flags)), flags, strict=True)]
    return out


def test_groups_train_exactly_from_their_scheduled_epoch(tmp_path, bundled_dd):
    recipe = tiny_recipe(
        tmp_path,
        *("--unfreeze.schedule", "{1: [features.2], 2: [features.1]}"),
        *("--training.num_train_epochs", "3", "--unfreeze.layerwise_decay", "0.7"),
    )
    snapshots = Snapshots()
    trainer, built = make_trainer(recipe, bundled_dd, [snapshots])
    flags = GradFlags(built.layer_groups)
    trainer.add_callback(flags)
    trainer.train()
    # Single process: frozen groups also drop out of backward (requires_grad off) until they unfreeze.
    assert flags.flags == {
        "head": [True, True, True],
        "features.2": [False, True, True],
        "features.1": [False, False, True],
        "features.0": [False, False, False],
    }

    assert [g for g, _ in built.layer_groups] == ["head", "features.2", "features.1", "features.0"]
    changed = changed_per_epoch(snapshots, built.layer_groups)
    assert changed["head"] == [True, True, True]
    assert changed["features.2"] == [False, True, True]  # unfrozen at the start of epoch 1 (0-based)
    assert changed["features.1"] == [False, False, True]
    assert changed["features.0"] == [False, False, False]  # never scheduled: weights and BN stats untouched
    initial, final = snapshots.states[0], snapshots.states[-1]
    for key in initial:  # bit-identical, BN running_mean / running_var / num_batches_tracked included
        if group_of(key, built.layer_groups) == "features.0":
            assert torch.equal(initial[key], final[key]), key
    assert_frozen_params_stayed_out_of_adamw(
        trainer, built.layer_groups, {"head": 0, "features.2": 1, "features.1": 2}
    )


def assert_frozen_params_stayed_out_of_adamw(trainer, layer_groups, start_epochs: dict[str, int]) -> None:
    """Every parameter sits in the optimizer from the start and has requires_grad after training, but AdamW
    counted steps only while its group trained: no weight decay or momentum while frozen."""
    model, epochs = trainer.model, int(trainer.state.epoch)
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters()}
    assert all(p.requires_grad for p in model.parameters())  # on a single process restored at the end of training
    steps_per_epoch = math.ceil(TRAIN_ROWS / BATCH)
    for name, param in model.named_parameters():
        start = start_epochs.get(group_of(name, layer_groups), epochs)
        state = trainer.optimizer.state.get(param, {})
        assert int(state.get("step", 0)) == (epochs - start) * steps_per_epoch, name


def test_layerwise_learning_rates_per_group(tmp_path, bundled_dd):
    recipe = tiny_recipe(tmp_path, "--unfreeze.layerwise_decay", "0.5", "--training.learning_rate", "0.01")
    trainer, built = make_trainer(recipe, bundled_dd)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    groups = trainer.optimizer.param_groups
    order = [g for g, _ in built.layer_groups]
    for group in groups:
        assert group["lr"] == pytest.approx(0.01 * 0.5 ** order.index(group["layer_group"]))
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay_names = set(trainer.get_decay_parameter_names(trainer.model))
    for group in groups:
        for p in group["params"]:
            assert group_of(names[id(p)], built.layer_groups) == group["layer_group"]
            assert group["weight_decay"] == (0.1 if names[id(p)] in decay_names else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(trainer.model.parameters()))
    for _ in range(4):  # the cosine schedule scales every group from its own initial lr: ratios hold
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    head_lr = next(g["lr"] for g in groups if g["layer_group"] == "head")
    assert 0 < head_lr < 0.01
    for group in groups:
        assert group["lr"] / head_lr == pytest.approx(0.5 ** order.index(group["layer_group"]))


def test_unknown_group_in_schedule_is_refused_before_training(tmp_path, bundled_dd):
    recipe = tiny_recipe(tmp_path, "--unfreeze.schedule", "{2: [features.9]}")
    built = build_model(recipe.model, bundled_dd["train"].features["label"].names)
    with pytest.raises(RecipeError, match=r"unknown layer group 'features\.9'.*'head', 'features\.2'"):
        build_callbacks(recipe, built)


def test_every_n_epochs_and_resume_mid_epoch():
    groups = [("head", ["classifier."]), ("b2", ["b2."]), ("b1", ["b1."])]
    epochs = unfreeze_epochs(UnfreezeArgs(every=3), groups)
    assert epochs == {"head": 0.0, "b2": 3.0, "b1": 6.0, "rest": 9.0}
    callback = GradualUnfreezeCallback(groups, UnfreezeArgs(schedule={2: ["b2"]}))
    assert callback.frozen_groups(0.0) == {"b2", "b1", "rest"}
    assert callback.frozen_groups(1.75) == {"b2", "b1", "rest"}  # resumed mid-epoch 1
    assert callback.frozen_groups(2.0) == {"b1", "rest"}
    head_only = GradualUnfreezeCallback(groups, UnfreezeArgs(start_frozen=True))
    assert head_only.frozen_groups(100.0) == {"b2", "b1", "rest"}


def test_trained_parameter_count_leaves_out_groups_that_never_unfroze():
    model = nn.ModuleDict({"classifier": nn.Linear(4, 3), "b2": nn.Linear(4, 4), "b1": nn.Linear(2, 4)})
    groups = [("head", ["classifier."]), ("b2", ["b2."]), ("b1", ["b1."])]
    scheduled = GradualUnfreezeCallback(groups, UnfreezeArgs(schedule={2: ["b2"], 5: ["b1"]}))
    probe = GradualUnfreezeCallback(groups, UnfreezeArgs(start_frozen=True))  # a linear probe: the head only
    for callback in (scheduled, probe):
        callback.attach(model)
    assert scheduled.trained_parameters(4.0) == 15 + 20  # b1 was due at epoch 5; a 4-epoch run never trained it
    assert scheduled.trained_parameters(6.0) == 15 + 20 + 12
    assert probe.trained_parameters(6.0) == 15
