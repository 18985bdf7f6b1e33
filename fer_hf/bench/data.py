"""`python -m fer_hf.bench data`: this package's per-batch pipeline against the per-sample one.

Both pipelines turn the same real FER2013 faces into augmented, normalised (B, 3, 224, 224) float batches
with the same kinds of augmentation (horizontal flip, brightness/contrast jitter, rotation + shift + zoom):

- fer_hf: decode the split once to uint8 (N, 48, 48) (`FerTensorDataset`), then `BatchTransform` augments and
  upscales whole batches, on the CPU (here in the collator; a CPU training step runs the same code). The decode
  time is counted in, spread over the images timed.
- per-sample baseline: transformers' image-classification example (`run_image_classification.py`):
  `set_transform` decodes each item with PIL and runs torchvision transforms on it at 224x224, then a
  collate function stacks the tensors.

Batches of the two alternate in one loop, so both see the same machine load (this CPU may be shared).
The last line printed is `data pipeline: fer_hf N img/s, per-sample baseline M img/s, ratio R`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.configs import Augment
from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.transforms import BatchTransform, FerCollator, keep_freed_batch_memory

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # ResNet's image processor (microsoft/resnet-*)
IMAGENET_STD = [0.229, 0.224, 0.225]
STATS = {  # --stats: the normalisation both pipelines apply
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # three different planes (ResNet recipes)
    "vit": ([0.5] * 3, [0.5] * 3),  # google/vit-*: one plane for all three channels (recipes/vit_unfreeze.yaml)
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.bench data", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        default="bundled",
        help="your FER2013 copy, whose train split is timed (default: the bundled sample)",
    )
    parser.add_argument("--num-images", type=int, default=3000, help="real faces to time (first rows of train)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the images (fer_hf decodes only once)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch, both pipelines")
    parser.add_argument("--size", type=int, default=224, help="output side (ViT/ResNet input)")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling and augmentation")
    parser.add_argument(
        "--stats",
        choices=sorted(STATS),
        default="imagenet",
        help="normalisation mean/std: imagenet (ResNet: three planes) or vit (0.5: fer_hf writes one plane, expanded)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both (default: torch's)")
    parser.add_argument(
        "--quick", action="store_true", help="a few seconds: 128 images, batches of 32, one epoch (tests)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_images, args.batch_size, args.epochs = 128, 32, 1
    return args


def bench_augment() -> Augment:
    """The augmentation both pipelines apply (the values of recipes/*.yaml)."""
    return Augment(hflip=0.5, rotation=10.0, translate=0.05, scale=(0.9, 1.1), brightness=0.25, contrast=0.25)


def build_fer_hf(ds: Dataset, augment: Augment, args: argparse.Namespace) -> tuple[DataLoader, float]:
    """Decode once (timed) and batch through the augmenting collator; returns the loader and decode seconds."""
    start = time.perf_counter()
    data = FerTensorDataset.from_split(ds, desc="fer_hf decode")
    decode_s = time.perf_counter() - start
    transform = BatchTransform(args.size, 3, *STATS[args.stats], augment=augment, train=True)
    loader = DataLoader(
        data, args.batch_size, shuffle=True, collate_fn=FerCollator(transform), generator=_rng(args.seed)
    )
    return loader, decode_s


def build_per_sample(ds: Dataset, augment: Augment, args: argparse.Namespace) -> DataLoader:
    """transformers' image-classification example, with the same kinds of augmentation as `augment`."""
    from torchvision import transforms as T

    train_transforms = T.Compose(
        [
            T.Resize(args.size, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomHorizontalFlip(augment.hflip),
            T.ColorJitter(brightness=augment.brightness, contrast=augment.contrast),
            T.RandomAffine(
                degrees=augment.rotation,
                translate=(augment.translate, augment.translate),
                scale=augment.scale,
                interpolation=T.InterpolationMode.BILINEAR,  # the default, NEAREST, would be cheaper and blockier
            ),
            T.ToTensor(),
            T.Normalize(*STATS[args.stats]),
        ]
    )

    def preprocess_train(example_batch: dict) -> dict:
        example_batch["pixel_values"] = [train_transforms(image.convert("RGB")) for image in example_batch["image"]]
        return example_batch

    def collate_fn(examples: list[dict]) -> dict[str, torch.Tensor]:
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        labels = torch.tensor([example["label"] for example in examples])
        return {"pixel_values": pixel_values, "labels": labels}

    per_sample = ds.with_transform(preprocess_train)  # = set_transform on a copy
    return DataLoader(per_sample, args.batch_size, shuffle=True, collate_fn=collate_fn, generator=_rng(args.seed))


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def time_interleaved(loaders: dict[str, DataLoader], epochs: int, size: int) -> dict[str, list[float]]:
    """Alternate one batch of each loader; returns {name: [images, seconds]} (batches checked for shape)."""
    totals = {name: [0, 0.0] for name in loaders}
    progress = tqdm(total=epochs * sum(len(loader) for loader in loaders.values()), desc="batches", mininterval=2)
    for _ in range(epochs):
        iterators = {name: iter(loader) for name, loader in loaders.items()}
        while iterators:
            for name in list(iterators):
                start = time.perf_counter()
                batch = next(iterators[name], None)
                seconds = time.perf_counter() - start
                if batch is None:
                    del iterators[name]
                    continue
                _check_batch(name, batch, size)
                totals[name][0] += len(batch["labels"])
                totals[name][1] += seconds
                progress.update()
    progress.close()
    return totals


def _check_batch(name: str, batch: dict[str, torch.Tensor], size: int) -> None:
    pixels = batch["pixel_values"]
    if pixels.shape[1:] != (3, size, size) or pixels.dtype != torch.float32:
        raise RuntimeError(f"{name}: batch {tuple(pixels.shape)} {pixels.dtype}; expected (B, 3, {size}, {size}) fp32")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or threads)
    try:
        torch.manual_seed(args.seed)  # torchvision's random transforms draw from the global RNG
        keep_freed_batch_memory()  # as fer_hf.train does; applies to both pipelines in this process
        train = load_fer_dataset(args.source)["train"]
        ds = train.select(range(min(args.num_images, len(train))))
        augment = bench_augment()
        fer_loader, decode_s = build_fer_hf(ds, augment, args)
        loaders = {"fer_hf": fer_loader, "per-sample": build_per_sample(ds, augment, args)}
        totals = time_interleaved(loaders, args.epochs, args.size)
        report(args, len(ds), decode_s, totals)
    finally:
        torch.set_num_threads(threads)
    return 0


def report(args: argparse.Namespace, n_images: int, decode_s: float, totals: dict[str, list[float]]) -> None:
    (n_ours, s_ours), (n_base, s_base) = totals["fer_hf"], totals["per-sample"]
    ours, base = n_ours / (s_ours + decode_s), n_base / s_base  # our decode counted in, once
    print(f"source {args.source}: {n_images} real faces x {args.epochs} epoch(s), batches of {args.batch_size}")
    print(
        f"output (B, 3, {args.size}, {args.size}) float32, {args.stats} mean/std, torch threads "
        f"{torch.get_num_threads()}, freed batch memory reused"
    )
    print(f"fer_hf: decode {decode_s:.2f} s once + batches {s_ours:.2f} s for {n_ours} images")
    print(f"per-sample: batches {s_base:.2f} s for {n_base} images (decoded per item)")
    print(f"data pipeline: fer_hf {ours:.0f} img/s, per-sample baseline {base:.0f} img/s, ratio {ours / base:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
