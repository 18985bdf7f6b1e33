"""Trainer callbacks: gradual unfreezing (DDP-safe) and friends.

Why gradual unfreezing is not `requires_grad = False`:

- the Trainer's default optimizer only holds the parameters that were trainable when it was built, so layers
  "unfrozen" later by flipping `requires_grad` never train;
- DDP registers its gradient hooks when it wraps the model: flipping `requires_grad` afterwards makes ranks
  silently diverge.

So every parameter stays trainable and sits in the optimizer from the start, and "frozen" means its gradient is
dropped after backward (`grad = None`): AdamW skips a parameter without a gradient entirely - no step, no weight
decay, no momentum state - so a frozen parameter is bit-identical to its initial value until its group unfreezes,
on every rank alike (the all-reduce already happened, every rank drops the same gradients). Frozen BatchNorm
layers are held in eval mode through a forward pre-hook, because the Trainer calls `model.train()` before every
step; their running statistics therefore stay put too.

On a single process (nothing to desynchronise) frozen groups also get `requires_grad = False` once the optimizer
exists (at each epoch start), so that backward stops at the lowest training group: a frozen backbone costs no
backward pass. The optimizer still holds every parameter, so groups unfrozen later train as scheduled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import ExportableState

from fer_hf.configs import RecipeError
from fer_hf.data.transforms import BatchTransform, apply_transform

LayerGroups = Sequence[tuple[str, Sequence[str]]]  # (group, parameter-name prefixes), head first
REST_GROUP = "rest"  # parameters that no group's prefixes cover (e.g. embeddings); frozen with the backbone
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def group_of(name: str, layer_groups: LayerGroups) -> str:
    """The layer group that owns parameter/module `name`: the longest matching prefix wins."""
    best, best_len = REST_GROUP, -1
    for group, prefixes in layer_groups:
        for prefix in prefixes:
            if name.startswith(prefix) and len(prefix) > best_len:
                best, best_len = group, len(prefix)
    return best


def group_names(layer_groups: LayerGroups) -> list[str]:
    return [group for group, _ in layer_groups] + [REST_GROUP]


def unfreeze_epochs(unfreeze, layer_groups: LayerGroups) -> dict[str, float]:
    """{group: first epoch (counted from 0) in which it trains}; math.inf = never. The head (group 0) always trains.

    `schedule: {2: [g]}` means g trains from the start of epoch 2, i.e. after two full epochs frozen.
    `every: N` unfreezes the k-th group below the head at epoch k * N.
    """
    names = group_names(layer_groups)
    head = names[0]
    frozen_start = bool(unfreeze.start_frozen or unfreeze.schedule or unfreeze.every)
    epochs = {name: (math.inf if frozen_start else 0.0) for name in names}
    epochs[head] = 0.0
    if unfreeze.every:
        for k, name in enumerate(names[1:], start=1):
            epochs[name] = float(k * unfreeze.every)
    for epoch, groups in (unfreeze.schedule or {}).items():
        for name in [groups] if isinstance(groups, str) else groups:
            if name not in epochs:
                raise RecipeError(
                    f"unfreeze.schedule[{epoch}]: unknown layer group {name!r}; this model's groups are {names}"
                )
            if int(epoch) < 0:
                raise RecipeError(f"unfreeze.schedule: epoch {epoch} must be >= 0")
            epochs[name] = min(epochs[name], float(epoch))
    return epochs


def _hold_in_eval(module: nn.Module, args) -> None:
    # Forward pre-hook: runs after the Trainer's model.train(), right before the layer computes.
    module.train(False)


class GradualUnfreezeCallback(TrainerCallback):
    """Unfreeze layer groups at epoch boundaries (a schedule or one group every N epochs), DDP-safe.

    Args:
        layer_groups: (group, parameter-name prefixes) from the head down, as `BuiltModel.layer_groups`.
        unfreeze: the recipe's UnfreezeArgs (schedule / every / start_frozen).
    Unknown group names raise at construction, before any training.
    """

    def __init__(self, layer_groups: LayerGroups, unfreeze):
        if not layer_groups:
            raise RecipeError("gradual unfreezing needs the model family's layer groups; this model has none")
        self.layer_groups = [(g, list(p)) for g, p in layer_groups]
        self.epochs = unfreeze_epochs(unfreeze, self.layer_groups)
        self.frozen: set[str] = set()
        self._params: dict[str, list[nn.Parameter]] = {}
        self._bn: dict[str, list[nn.Module]] = {}
        self._bn_hooks: dict[str, list] = {}
        self._model: nn.Module | None = None
        self._trainable: set[int] = set()  # ids of the parameters that had requires_grad (LoRA freezes the rest)

    def frozen_groups(self, epoch: float) -> set[str]:
        """Groups that do not train during (0-based) `epoch`; a resumed run lands mid-epoch, hence the floor."""
        current = math.floor(epoch + 1e-6)
        return {name for name, start in self.epochs.items() if start > current}

    def attach(self, model: nn.Module) -> None:
        """Index the (unwrapped) model's parameters and BatchNorm layers by group; idempotent."""
        if self._model is model:
            return
        self._model, self._params, self._bn = model, {}, {}
        self._trainable = {id(p) for p in model.parameters() if p.requires_grad}
        for name, param in model.named_parameters():
            self._params.setdefault(group_of(name, self.layer_groups), []).append(param)
        for name, module in model.named_modules():
            if isinstance(module, BATCH_NORMS):
                self._bn.setdefault(group_of(name + ".", self.layer_groups), []).append(module)

    def apply(self, model: nn.Module, epoch: float, skip_backward: bool = False) -> None:
        """Freeze / unfreeze groups for `epoch`: (re)hook frozen BatchNorm layers; with `skip_backward` (single
        process, optimizer built) also switch requires_grad off for frozen groups and back on for the others."""
        self.attach(model)
        frozen = self.frozen_groups(epoch)
        for name in self.frozen - frozen:  # unfreezing: BN back to following model.train()
            for handle in self._bn_hooks.pop(name, []):
                handle.remove()
        for name in frozen - self.frozen:
            self._bn_hooks[name] = [m.register_forward_pre_hook(_hold_in_eval) for m in self._bn.get(name, [])]
        self.frozen = frozen
        if skip_backward:
            self.set_requires_grad(lambda group: group not in frozen)

    def set_requires_grad(self, trains) -> None:
        for group, params in self._params.items():
            for param in params:
                if id(param) in self._trainable:
                    param.requires_grad_(trains(group))

    def frozen_parameters(self) -> Iterable[nn.Parameter]:
        for name in self.frozen:
            yield from self._params.get(name, [])

    def drop_frozen_grads(self) -> None:
        """grad = None for frozen parameters: the optimizer then skips them (no step, decay or momentum)."""
        for param in self.frozen_parameters():
            param.grad = None

    def trained_parameters(self, epochs_run: float) -> int:
        """How many parameters trained at some point of a run of `epochs_run` epochs: a linear probe's head only.
        (requires_grad says little: it stays on under DDP, where frozen groups only lose their gradients.)"""
        return sum(
            p.numel()
            for g, params in self._params.items()
            if self.epochs[g] < epochs_run
            for p in params
            if id(p) in self._trainable
        )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.apply(model, state.epoch or 0.0)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        # The optimizer exists by now (it is built after on_train_begin); under DDP requires_grad must not change.
        self.apply(model, state.epoch or 0.0, skip_backward=args.world_size == 1)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Also right for a plain Trainer; FerTrainer drops them earlier so gradient clipping ignores them too.
        self.drop_frozen_grads()

    def on_train_end(self, args, state, control, **kwargs):
        for handles in self._bn_hooks.values():
            for handle in handles:
                handle.remove()
        self._bn_hooks, self.frozen = {}, set()
        self.set_requires_grad(lambda group: True)  # the saved / returned model is trainable as it came


class StopAfterEpochsCallback(TrainerCallback):
    """Stop training after N epochs (the checkpoint of epoch N is still saved); for cut-short runs and tests."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is not None and state.epoch >= self.epochs - 1e-6:
            control.should_training_stop = True


class TrainingClockCallback(TrainerCallback, ExportableState):
    """Training wall time summed over the sessions of a run: one resumed with `resume_from_checkpoint` reports the
    time of its earlier sessions too (up to the checkpoint it resumed from), not only its own.

    The running total travels in each checkpoint's trainer_state.json (`stateful_callbacks`); on resume the Trainer
    rebuilds this callback from the saved args (needs `restore_callback_states_from_checkpoint`, which fer_hf.train
    turns on). It rebuilds it inside `train()`, after `on_train_begin`, hence the clock also starts at construction.
    """

    def __init__(self, seconds_before: float = 0.0, earlier_sessions: int = 0):
        self.seconds_before = seconds_before  # trained time saved in the checkpoint resumed from
        self.earlier_sessions = earlier_sessions
        self._start = time.perf_counter()
        self._end: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start, self._end = time.perf_counter(), None

    def on_train_end(self, args, state, control, **kwargs):
        self._end = time.perf_counter()  # the final evaluation and saving after train() do not count

    @property
    def seconds(self) -> float:
        return self.seconds_before + (self._end or time.perf_counter()) - self._start

    @property
    def sessions(self) -> int:
        return self.earlier_sessions + 1

    def state(self) -> dict:
        return {
            "args": {"seconds_before": round(self.seconds, 3), "earlier_sessions": self.sessions},
            "attributes": {},
        }


class WeightAveragingCallback(TrainerCallback):
    """Stochastic weight averaging (Izmailov et al. 2018): the running mean of the weights at the end of every epoch
    from `from_epoch` on (1-based) replaces the model's weights when training ends; BatchNorm running statistics
    are then recomputed on the training loader, since those of the last weights do not fit the averaged ones.

    The average travels in every checkpoint (`weight_average.safetensors`), so a resumed run carries it on instead
    of restarting it. It replaces the weights in `on_train_end`, which the Trainer calls after loading the best
    checkpoint: recipes therefore cannot ask for both (fer_hf.configs refuses it).
    """

    FILE = "weight_average.safetensors"

    def __init__(self, from_epoch: int, transform: BatchTransform | None = None):
        self.from_epoch = from_epoch  # >= 1 (fer_hf.configs checks recipes)
        self.transform = transform  # the training augmentation, for the BatchNorm pass over uint8 batches
        self.average: dict[str, torch.Tensor] = {}  # parameter name -> fp32 running mean
        self.epochs: list[int] = []  # the epochs averaged so far

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.global_step:
            return
        # resumed: the checkpoint resumed from is the one of the current global step
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / self.FILE
        done = round(state.epoch or 0)
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                self.average = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
                self.epochs = json.loads(f.metadata()["epochs"])
        elif done >= self.from_epoch:
            raise RecipeError(
                f"run.swa_from_epoch {self.from_epoch}: resuming at epoch {done}, but {path} holds no weight average "
                "(the checkpoint was written without run.swa_from_epoch); resume with the recipe it was trained with"
            )

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch)
        if epoch < self.from_epoch or epoch in self.epochs:
            return
        n = len(self.epochs)
        with torch.no_grad():
            for name, p in model.named_parameters():
                current = p.detach().float().cpu()
                if name in self.average:
                    self.average[name].mul_(n / (n + 1)).add_(current, alpha=1 / (n + 1))
                else:
                    self.average[name] = current.clone()
        self.epochs.append(epoch)

    def on_save(self, args, state, control, **kwargs):
        if self.average and state.is_world_process_zero:
            from safetensors.torch import save_file

            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            tensors = {k: v.contiguous() for k, v in self.average.items()}
            save_file(tensors, str(folder / self.FILE), metadata={"epochs": json.dumps(self.epochs)})

    def on_train_end(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not self.average:
            return  # training stopped before from_epoch: the last weights stay
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.average[name].to(p.device, p.dtype))
        recompute_batch_norm(model, train_dataloader, bf16=args.bf16, transform=self.transform)

    def summary(self) -> dict:
        return {"method": "stochastic weight averaging, BatchNorm statistics recomputed", "epochs": self.epochs}


def recompute_batch_norm(
    model: nn.Module, loader, bf16: bool = False, transform: BatchTransform | None = None
) -> None:
    """Running mean/var of every BatchNorm that trains, as exact averages over one pass of `loader`: batches of
    "pixel_values", or of uint8 "pixels" that `transform` turns into the model's input on its device.

    BatchNorms held in eval (frozen groups of gradual unfreezing) do not see the pass: they keep their statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    if not norms or loader is None:
        return
    saved = {
        m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in norms
    }
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    was_training = model.training
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch in tqdm(loader, desc="BatchNorm statistics", leave=False):
            if "pixels" in batch:
                batch = apply_transform(transform, {"pixels": batch["pixels"].to(device)})
            model(pixel_values=batch["pixel_values"].to(device))
    for m, (mean, var, tracked, momentum) in saved.items():
        m.momentum = momentum
        if not m.num_batches_tracked:  # held in eval during the pass
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(tracked)
    model.train(was_training)


def layerwise_lrs(layer_groups: LayerGroups, lr: float, decay: float) -> dict[str, float]:
    """{group: lr * decay**k} for group k below the head (k = 0: head); the rest group is the deepest."""
    return {name: lr * decay**k for k, name in enumerate(group_names(layer_groups))}


def find_callback(callbacks: Iterable[TrainerCallback], cls: type) -> TrainerCallback | None:
    return next((cb for cb in callbacks if isinstance(cb, cls)), None)


def build_callbacks(recipe, built) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [TrainingClockCallback()]
    if recipe.run.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=recipe.run.early_stopping_patience))
    u = recipe.unfreeze
    if u.schedule or u.every or u.start_frozen:
        callbacks.append(GradualUnfreezeCallback(built.layer_groups, u))
    if recipe.run.swa_from_epoch:
        callbacks.append(
            WeightAveragingCallback(recipe.run.swa_from_epoch, BatchTransform.for_model(built, recipe.data.augment))
        )
    return callbacks


def parameter_digest(model: nn.Module, buffers: bool = True) -> str:
    """sha256 of every parameter (and buffer) by name, dtype and bytes: equal digests = bit-identical models.

    Under DDP compare parameters: BatchNorm buffers are only synchronised (from rank 0) at the start of each forward,
    so after the last step every rank holds its own batch's running statistics.
    """
    import hashlib

    tensors = dict(model.named_parameters())
    if buffers:
        tensors.update(model.named_buffers())
    h = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
