"""`python -m fer_hf.bench train`: images/second of one training step, Trainer path vs a plain PyTorch loop.

For each model family, on the same model weights, the same real FER2013 faces and the same batch transform:

- trainer: `FerTrainer.train(max_steps=...)` exactly as `fer_hf.train` runs it (Accelerate wrapping, autocast,
  callbacks, gradient clipping, LR scheduler, logging and data loading all included);
- plain: a hand-written loop doing the same math: DataLoader -> forward -> loss -> backward -> clip_grad_norm_
  -> optimizer step (the Trainer's optimizer: fused AdamW over its weight-decay and no-decay groups) -> scheduler step
  -> zero_grad.

A step's time runs from the end of the previous step to the end of this one, so batch loading counts on both
sides; the first `--warmup` steps are dropped and the median step is used. The batch transform (augmentation +
upscale + normalisation) runs where `fer_hf.train` runs it, inside the step on the model's device
(`--transform step`), or in the DataLoader's collator on the CPU (`--transform collator`, the placement before).
Each family's line also gives the share of the plain loop's step spent getting the batch ready on the device
(loading + transform). The two paths alternate for
`--repeats` rounds so that both see the same machine load (this CPU may be shared). Families:

- cnn: the package's fer-resnet5 preset at 48x48, grayscale (what recipes/cnn.yaml trains);
- vit: a ViT-base-sized random model (google/vit-base-patch16-224's shape) at 224x224;
- resnet: a ResNet-50-sized random model (microsoft/resnet-50's shape) at 224x224;
- timm: EfficientNet-Lite0 (random weights) with the package's BN head at 96x96, as the lite0 recipes train it.

The last line printed is `train step: trainer N img/s, plain M img/s, ratio R` (all families together:
total images over total median step time; R = trainer / plain, 1.0 = no overhead).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments, get_scheduler

from fer_hf.bench import at_least
from fer_hf.cli import positive_int
from fer_hf.configs import Augment
from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.transforms import BatchTransform, FerCollator, apply_transform
from fer_hf.training.losses import WeightedCrossEntropy

FAMILIES = ("cnn", "vit", "resnet", "timm")
LITE0_SIZE = 96  # the lite0 recipes' input side


@dataclass
class BenchModel:
    name: str  # what was measured, for the report line
    model: nn.Module
    size: int  # input side
    channels: int


def build_bench_model(family: str) -> BenchModel:
    """A random model of the family's real size (no download: config classes only)."""
    if family == "cnn":
        from fer_hf.models.hub_code import FerCnnConfig, FerCnnForImageClassification

        model = FerCnnForImageClassification(FerCnnConfig(preset="fer-resnet5", num_labels=7))
        return BenchModel("cnn fer-resnet5", model.to(memory_format=torch.channels_last), 48, 1)
    if family == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        model = ViTForImageClassification(ViTConfig(image_size=224, patch_size=16, num_labels=7))  # ViT-B/16 shape
        return BenchModel("vit-base/16 (random)", model, 224, 3)
    if family == "resnet":
        from transformers import ResNetConfig, ResNetForImageClassification

        model = ResNetForImageClassification(ResNetConfig(num_labels=7))  # bottleneck [3, 4, 6, 3] = ResNet-50
        return BenchModel("resnet-50 (random)", model.to(memory_format=torch.channels_last), 224, 3)
    if family == "timm":
        from fer_hf.configs import ModelArgs
        from fer_hf.labels import FER_LABELS
        from fer_hf.models import build_model

        built = build_model(ModelArgs(family="timm", name_or_path="tf_efficientnet_lite0"), FER_LABELS, LITE0_SIZE)
        model = built.model.to(memory_format=torch.channels_last)
        return BenchModel("efficientnet-lite0 + BN head (random)", model, built.image_size, built.channels)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (and at train start)."""

    def __init__(self):
        self.marks: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks = [time.perf_counter()]

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: a step ends when its kernels do
        self.marks.append(time.perf_counter())


def step_seconds(marks: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(marks[warmup:], marks[warmup + 1 :], strict=False)]


def training_args(args: argparse.Namespace, device: str, output_dir: str) -> TrainingArguments:
    targs = TrainingArguments(
        output_dir=output_dir,
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        logging_strategy="epoch",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=device == "cpu",
        bf16=args.precision == "bf16",
        dataloader_num_workers=args.workers,
        seed=0,
    )
    targs.remove_unused_columns = False  # the collator needs "pixels"
    return targs


def time_trainer(
    bm: BenchModel, data: FerTensorDataset, transform: BatchTransform, args: argparse.Namespace, device: str
) -> tuple[list[float], list[float]]:
    from fer_hf.training.trainer import FerTrainer

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        trainer = FerTrainer(
            model=bm.model,
            args=training_args(args, device, out),
            train_dataset=data,
            data_collator=FerCollator(transform if args.transform == "collator" else None),
            callbacks=[clock],
            loss_fn=WeightedCrossEntropy(),
            train_transform=transform,
        )
        trainer.train()
    return step_seconds(clock.marks, args.warmup), []


def trainer_like_optimizer(model: nn.Module, targs: TrainingArguments) -> torch.optim.Optimizer:
    """The optimizer the Trainer builds for these arguments: its class (fused AdamW by default in transformers 5)
    and its two parameter groups, weight decay and none (biases, norms), by the Trainer's own rule
    (`get_decay_parameter_names` reads nothing from the Trainer instance)."""
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(targs)
    decay = set(Trainer.get_decay_parameter_names(None, model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": targs.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    return optimizer_cls(groups, **optimizer_kwargs)


def time_plain(
    bm: BenchModel, data: FerTensorDataset, transform: BatchTransform, args: argparse.Namespace, device: str
) -> tuple[list[float], list[float]]:
    """Step seconds and, per step, the seconds until the batch was ready on the device (loading + transform)."""
    model = bm.model.to(device).train()
    loader = torch.utils.data.DataLoader(
        data,
        args.batch_size,
        shuffle=True,
        collate_fn=FerCollator(transform if args.transform == "collator" else None),
        generator=torch.Generator().manual_seed(0),
        num_workers=args.workers,
    )
    optimizer = trainer_like_optimizer(model, training_args(args, device, "unused"))
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=0, num_training_steps=args.warmup + args.steps)
    loss_fn = WeightedCrossEntropy().to(device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    marks, ready = [time.perf_counter()], []
    batches = iter(loader)
    for _ in range(args.warmup + args.steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device) for k, v in batch.items()}
        if "pixels" in batch:
            batch = apply_transform(transform, batch)
        pixels, labels = batch["pixel_values"], batch["labels"]
        if device == "cuda":
            torch.cuda.synchronize()
        ready.append(time.perf_counter() - marks[-1])
        with torch.autocast(device_type=device, dtype=dtype, enabled=args.precision == "bf16"):
            logits = model(pixel_values=pixels).logits
        loss = loss_fn(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
    return step_seconds(marks, args.warmup), ready[args.warmup :]


def bench_family(family: str, faces: torch.Tensor, labels: torch.Tensor, args, device: str) -> tuple[float, float]:
    """Median step seconds (trainer, plain) of one family; both start from the same weights every round."""
    base = build_bench_model(family)
    batch = args.batch_size
    data = FerTensorDataset(faces[: batch * (args.warmup + args.steps)], labels[: batch * (args.warmup + args.steps)])
    augment = Augment(hflip=0.5, rotation=10.0, translate=0.05)
    transform = BatchTransform(base.size, base.channels, 0.5, 0.5, augment=augment, train=True)
    times: dict[str, list[float]] = {"trainer": [], "plain": []}
    ready: list[float] = []
    for _ in range(args.repeats):
        for path, timer in (("trainer", time_trainer), ("plain", time_plain)):
            bm = BenchModel(base.name, copy.deepcopy(base.model), base.size, base.channels)
            steps, batch_ready = timer(bm, data, transform, args, device)
            times[path] += steps
            ready += batch_ready
    trainer_s, plain_s = statistics.median(times["trainer"]), statistics.median(times["plain"])
    fastest = min(times["plain"]) / min(times["trainer"])  # less sensitive to a shared, busy machine
    share = sum(ready) / sum(times["plain"])
    where = "in the step" if args.transform == "step" else f"in the collator, {args.workers} worker(s)"
    print(
        f"{family} [{base.name}, {base.size}px, batch {batch}, {args.precision}, {device}]: "
        f"trainer {batch / trainer_s:.1f} img/s, plain {batch / plain_s:.1f} img/s, "
        f"ratio {plain_s / trainer_s:.3f} (Trainer overhead {100 * (trainer_s / plain_s - 1):+.1f}% per step; "
        f"fastest-step ratio {fastest:.3f}); data transform {100 * share:.1f}% of the step ({where})",
        flush=True,
    )
    return trainer_s, plain_s


def real_faces(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n real FER2013 faces (uint8 (n, 48, 48)) from the bundled sample, repeated when n exceeds it."""
    data = FerTensorDataset.from_split(load_fer_dataset("bundled")["train"], desc="decode bundled sample")
    reps = -(-n // len(data))
    return data.images.repeat(reps, 1, 1)[:n], data.labels.repeat(reps)[:n]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated subset of {FAMILIES}")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="per step (default on CPU: 64 cnn, 32 timm, 8 vit/resnet; 64 on GPU)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 = autocast on both paths")
    parser.add_argument(
        "--steps", type=at_least(1), default=None, help="timed steps per round (default: 10 cnn, 3 others)"
    )
    parser.add_argument("--warmup", type=at_least(0), default=2, help="untimed steps at the start of every round")
    parser.add_argument("--repeats", type=at_least(1), default=2, help="rounds of trainer, plain (alternating)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--transform",
        choices=("step", "collator"),
        default="step",
        help="where the batch transform runs: in the step on the model's device (as fer_hf.train) or in the CPU "
        "collator",
    )
    parser.add_argument("--workers", type=at_least(0), default=0, help="DataLoader worker processes, both paths")
    args = parser.parse_args(argv)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = set(args.families) - set(FAMILIES)
    if unknown:
        parser.error(f"--families: unknown {sorted(unknown)}; choose from {FAMILIES}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch_default, steps_default = args.batch_size, args.steps
    totals = {"images": 0, "trainer": 0.0, "plain": 0.0}
    for family in args.families:
        big = family in ("vit", "resnet")  # 224 px
        small_batch = 8 if big else 32 if family == "timm" else 64  # on a CPU; GPUs get 64 everywhere
        args.batch_size = batch_default or (small_batch if device == "cpu" else 64)
        args.steps = steps_default or (3 if big and device == "cpu" else 10)
        faces, labels = real_faces(args.batch_size * (args.warmup + args.steps))
        trainer_s, plain_s = bench_family(family, faces, labels, args, device)
        totals["images"] += args.batch_size
        totals["trainer"] += trainer_s
        totals["plain"] += plain_s
    n = totals["images"]
    print(
        f"train step: trainer {n / totals['trainer']:.1f} img/s, plain {n / totals['plain']:.1f} img/s, "
        f"ratio {totals['plain'] / totals['trainer']:.3f}"
    )
    return 0
