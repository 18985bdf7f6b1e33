"""Per-batch preprocessing: FER2013 stays 48x48 uint8; augmentation and upscaling happen on whole batches.

transformers' image-classification example decodes, resizes and augments every image on its own with PIL
(per sample, at 224x224). Here a split is decoded once into a uint8 tensor (N, 48, 48) and the collator
does the work on the batch: one `affine_grid` + `grid_sample` applies flip, rotation, translation, scaling
*and* the upscale to the model's input size in a single resampling, then jitter and normalisation run as
batched tensor ops. The model's image-processor mean/std and input size decide the output.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, Image
from PIL import Image as PILImage
from tqdm.auto import tqdm

from fer_hf.data import IMAGE_SIZE, FerDataError


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

    def __post_init__(self) -> None:
        self.scale, self.sharpness = tuple(self.scale), tuple(self.sharpness)
        for name in ("hflip", "random_erasing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("rotation", "translate", "brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("scale", "sharpness"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"augment.{name} must be a range (min, max) with 0 <= min <= max, got {(lo, hi)}")


def decode_images(ds: Dataset, *, size: int = IMAGE_SIZE, desc: str = "decode") -> torch.Tensor:
    """Decode a split's images once into a grayscale uint8 tensor (N, size, size)."""
    raw = ds.cast_column("image", Image(decode=False))
    out = np.empty((len(ds), size, size), dtype=np.uint8)
    origin = ds.info.description or "dataset"
    for i, item in enumerate(tqdm(raw.select_columns(["image"]), desc=desc, leave=False, mininterval=2)):
        image = item["image"]
        try:
            data = image["bytes"] if image["bytes"] is not None else open(image["path"], "rb").read()
            with PILImage.open(io.BytesIO(data)) as im:
                im = im.convert("L")
                if im.size != (size, size):
                    im = im.resize((size, size), PILImage.BILINEAR)
                out[i] = np.asarray(im)
        except Exception as err:
            raise FerDataError(f"{origin}: row {i}: cannot decode image ({err})") from None
    return torch.from_numpy(out)


class FerTensorDataset(torch.utils.data.Dataset):
    """A decoded split: item i is {"pixels": uint8 (H, W), "labels": int}; the collator does the rest."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.ndim != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()

    @classmethod
    def from_split(cls, ds: Dataset, desc: str = "decode") -> FerTensorDataset:
        labels = torch.tensor(ds.select_columns(["label"]).with_format("numpy")["label"], dtype=torch.long)
        return cls(decode_images(ds, desc=desc), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.images[i], "labels": self.labels[i]}


class BatchTransform:
    """uint8 (B, H, W) faces -> normalised float (B, C, S, S) model input, augmented when `train=True`."""

    def __init__(
        self,
        size: int,
        channels: int,
        mean: float | list[float],
        std: float | list[float],
        augment: Augment | None = None,
        train: bool = False,
        generator: torch.Generator | None = None,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (gray repeated as RGB), got {channels}")
        self.size, self.channels = size, channels
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1)[:, None, None].expand(channels, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1)[:, None, None].expand(channels, 1, 1)
        self.augment = augment if (train and augment is not None) else None
        self.generator = generator

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.unsqueeze(1).float().div_(255.0)  # (B, 1, H, W) in [0, 1]
        if self.augment is None:
            if x.shape[-1] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        else:
            x = self._photometric(x)  # cheap at 48x48, before the upscale
            x = self._geometric(x)  # (B, 1, S, S): flip/rotate/shift/zoom + resize in one resampling
            if self.augment.random_erasing > 0:
                x = self._erase(x)
        x = x.expand(-1, self.channels, -1, -1)  # (B, C, S, S), a view: gray shared by the channels
        return (x - self.mean) / self.std

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (hi - lo) + lo

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.augment, x.shape[0]
        if a.brightness > 0:
            x = x * self._uniform(b, 1 - a.brightness, 1 + a.brightness).view(b, 1, 1, 1)
        if a.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            factor = self._uniform(b, 1 - a.contrast, 1 + a.contrast).view(b, 1, 1, 1)
            x = mean + factor * (x - mean)
        if a.sharpness != (1.0, 1.0):
            x = self._sharpen(x, self._uniform(b, *a.sharpness).view(b, 1, 1, 1))
        return x.clamp_(0.0, 1.0)

    @staticmethod
    def _sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """torchvision's adjust_sharpness on a batch: blend with a 3x3 smoothed copy (borders kept)."""
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
        blurred = x.clone()
        blurred[..., 1:-1, 1:-1] = F.conv2d(x, kernel.view(1, 1, 3, 3))
        return blurred + factor * (x - blurred)

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.augment, x.shape[0]
        angle = self._uniform(b, -a.rotation, a.rotation) * (math.pi / 180.0)
        zoom = self._uniform(b, *a.scale)
        flip = torch.where(torch.rand(b, generator=self.generator) < a.hflip, -1.0, 1.0)
        shift = self._uniform(2 * b, -a.translate, a.translate).view(b, 2) * 2.0  # grid coords span 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # theta maps output coords to input coords: (B, 2, 3); flipping negates the x column.
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, [b, 1, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing: one rectangle of 2-33% of the area per chosen image, filled with noise."""
        b, _, h, w = x.shape
        chosen = torch.rand(b, generator=self.generator) < self.augment.random_erasing
        area = self._uniform(b, 0.02, 0.33) * h * w
        ratio = torch.exp(self._uniform(b, math.log(0.3), math.log(3.3)))
        eh = (area * ratio).sqrt().clamp(1, h).long()
        ew = (area / ratio).sqrt().clamp(1, w).long()
        top = (torch.rand(b, generator=self.generator) * (h - eh + 1)).long()
        left = (torch.rand(b, generator=self.generator) * (w - ew + 1)).long()
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        in_rows = (rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))  # (B, H, 1)
        in_cols = (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1))  # (B, 1, W)
        mask = in_rows & in_cols & chosen.view(b, 1, 1)  # (B, H, W)
        noise = torch.rand(x.shape, generator=self.generator)
        return torch.where(mask.unsqueeze(1), noise, x)


class FerCollator:
    """Collator for the Trainer: a list of {"pixels", "labels"} items -> {"pixel_values", "labels"}."""

    def __init__(self, transform: BatchTransform):
        self.transform = transform

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([item["pixels"] for item in items])  # (B, 48, 48) uint8
        labels = torch.stack([torch.as_tensor(item["labels"]) for item in items])
        return {"pixel_values": self.transform(pixels), "labels": labels}
