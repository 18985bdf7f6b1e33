"""Per-batch preprocessing: FER2013 stays 48x48 uint8; augmentation and upscaling happen on whole batches.

transformers' image-classification example decodes, resizes and augments every image on its own with PIL
(per sample, at 224x224). Here a split is decoded once into a uint8 tensor (N, 48, 48), the collator only stacks
uint8 faces (B, 48, 48) (64 faces: 147 KB), and `BatchTransform` does the work on the batch where the model runs
(`FerTrainer._prepare_inputs`: on the GPU when training on one, never a 38.5 MB float batch crossing the bus):
1. photometric jitter (brightness, contrast, sharpness) at 48x48, where it is ~20x cheaper than at 224;
2. one `grid_sample` applies flip, rotation, translation, zoom *and* the upscale to the model's input size
   in a single bilinear resampling (evaluation: a plain bilinear upscale);
3. random erasing, then normalisation with the model's image-processor mean/std, which also turns the gray
   plane into C channels, written once into the (B, C, S, S) output (one plane, expanded, when the C channels
   share one mean/std: a ViT's 0.5 or EfficientNet-Lite's; the first convolution reads it as it is).
`python -m fer_hf.bench data` measures this against the per-sample pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # the recipe type, for annotations only: the data side runs without the recipe module
    from fer_hf.configs import Augment

# The cores this process may run on (a container's CPU set, not the host's count), at most 4.


# Images resampled per step inside a batch: the (chunk, 1, S, S) intermediates (~10 MB at 224) are reused from
# the heap instead of page-faulting fresh 10-40 MB allocations, which took most of the time on a busy 2-core VM.
CHUNK = 16


class BatchTransform:
    """uint8 (B, H, W) faces -> normalised float (B, C, S, S) model input, augmented when `train=True`.

    Args:
        size: output side S (the model's input size: 224 for ViT/ResNet, 48 for the CNN).
        channels: 1 (grayscale) or 3 (the gray face repeated as RGB, for ImageNet backbones).
        mean, std: the image processor's normalisation, one value or one per channel.
        augment: training augmentation; ignored unless `train=True`.
        train: augment (True) or only resize + normalise (False, evaluation).
        generator: torch RNG for reproducible augmentation; None uses the global one (the Trainer seeds it and
            restores it on resume). Random parameters are always drawn on the CPU and copied to the batch's
            device, so a run draws the same augmentations whichever device it trains on.
    """

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
        self.mean, self.std = _per_channel(mean, channels, "mean"), _per_channel(std, channels, "std")
        if (self.std <= 0).any():
            raise ValueError(f"std must be > 0, got {std}")
        # (x - mean) / std as shift + scale * x, one output plane at a time: torch.add(shift, x, alpha=scale) with a
        # 0-dim shift and a float scale runs TensorIterator's vectorised loop, ~2x faster than one broadcast
        # addcmul over (C, 1, 1) tensors (two broadcast operands take the scalar loop), with the same values.
        # Channels with one mean/std hold the same plane: it is written once and expanded (a view) to C channels.
        scale, shift = 1.0 / self.std, -self.mean / self.std
        shared = bool((self.mean == self.mean[0]).all() and (self.std == self.std[0]).all())
        self._planes = 1 if shared else channels
        self._shift, self._scale = shift[: self._planes].flatten(), scale[: self._planes].flatten().tolist()  # (P,)
        self.augment = augment if (train and augment is not None) else None
        self.generator = generator
        # Pixel centres of the output in grid_sample's [-1, 1] coordinates (align_corners=False): (S,)
        self._centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1

    @classmethod
    def for_model(cls, model_input, augment: Augment | None = None) -> BatchTransform:
        """The transform of a model's input, given as anything with `image_size`, `channels`, `mean` and `std` (a
        `BuiltModel`): augmented when `augment` is given (training), else resized and normalised only."""
        spec = dict(size=model_input.image_size, channels=model_input.channels, mean=model_input.mean)
        return cls(**spec, std=model_input.std, augment=augment, train=augment is not None)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W) on any device -> float32 (B, C, S, S) on the same device."""
        device = pixels.device
        x = pixels.unsqueeze(1).float().div_(255.0)  # (B, 1, H, W) in [0, 1]
        b, s = x.shape[0], self.size
        theta, rectangles = None, []
        self.last_flip = torch.zeros(b, dtype=torch.bool)  # which faces were mirrored (distillation reads it)
        if self.augment is not None:
            x = self._photometric(x)  # cheap at 48x48, before the upscale
            theta = self._random_theta(b).to(device)  # (B, 2, 3): flip/rotate/shift/zoom, applied with the upscale
            rectangles = self._random_rectangles(b) if self.augment.random_erasing > 0 else []
        shift = self._shift.to(device)  # (P,): each plane's 0-dim shift on the batch's device
        out = torch.empty((b, self._planes, s, s), dtype=torch.float32, device=device)
        # On a CPU, chunks of CHUNK faces keep the (chunk, 1, S, S) intermediates in cache; a GPU takes them all.
        chunk = CHUNK if device.type == "cpu" else max(b, 1)
        for start in range(0, b, chunk):
            part = slice(start, start + chunk)
            y = self._resample(x[part], None if theta is None else theta[part])  # (chunk, 1, S, S) in [0, 1]
            for i, top, left, height, width in rectangles:
                if start <= i < start + chunk:  # noise drawn for the rectangle only
                    y[i - start, :, top : top + height, left : left + width] = torch.rand(
                        (1, height, width), generator=self.generator
                    ).to(device)
            for c, scale in enumerate(self._scale):  # normalise (+ gray -> C channels)
                torch.add(shift[c], y, alpha=scale, out=out[part, c : c + 1])
        return out.expand(b, self.channels, s, s)  # (B, C, S, S); a view when the channels share one plane

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) * (hi - lo) + lo

    def _per_face(self, n: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
        """n uniform factors drawn on the CPU, as (n, 1, 1, 1) on `like`'s device."""
        return self._uniform(n, lo, hi).view(n, 1, 1, 1).to(like.device)

    def _photometric(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, sharpness on (B, 1, 48, 48) in [0, 1]; clamped after each, as torchvision."""
        a, b = self.augment, x.shape[0]
        if a.brightness > 0:
            x = (x * self._per_face(b, 1 - a.brightness, 1 + a.brightness, x)).clamp_(0.0, 1.0)
        if a.contrast > 0:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            factor = self._per_face(b, 1 - a.contrast, 1 + a.contrast, x)
            x = (mean + factor * (x - mean)).clamp_(0.0, 1.0)
        if a.sharpness != (1.0, 1.0):
            x = self._sharpen(x, self._per_face(b, *a.sharpness, x)).clamp_(0.0, 1.0)
        return x

    @staticmethod
    def _sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """torchvision's adjust_sharpness on a batch: blend with a 3x3 smoothed copy (borders kept)."""
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], device=x.device) / 13.0
        blurred = x.clone()
        blurred[..., 1:-1, 1:-1] = F.conv2d(x, kernel.view(1, 1, 3, 3))
        return blurred + factor * (x - blurred)

    def _random_theta(self, b: int) -> torch.Tensor:
        """Per-image affine maps (B, 2, 3) from output to input coordinates, in grid_sample's [-1, 1] units."""
        a = self.augment
        angle = self._uniform(b, -a.rotation, a.rotation) * (math.pi / 180.0)
        zoom = self._uniform(b, *a.scale)  # > 1 samples a smaller input area: zoom in
        flip = torch.where(torch.rand(b, generator=self.generator) < a.hflip, -1.0, 1.0)
        self.last_flip = flip < 0
        shift = self._uniform(2 * b, -a.translate, a.translate).view(b, 2) * 2.0  # grid coords span 2
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # Flipping negates the x column: output x is mirrored, then rotated/zoomed/shifted.
        return torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )

    def _resample(self, x: torch.Tensor, theta: torch.Tensor | None) -> torch.Tensor:
        """(b, 1, H, W) -> (b, 1, S, S): plain bilinear upscale, or flip/affine + upscale in one grid_sample."""
        if theta is None:
            if x.shape[-2:] == (self.size, self.size):
                return x.clone()  # erasing writes in place; never into the caller's batch
            return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.grid_sample(x, self._affine_grid(theta), mode="bilinear", padding_mode="border", align_corners=False)

    def _affine_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """F.affine_grid(theta, (b, 1, S, S), align_corners=False), built ~3x faster.

        grid[n, i, j] = theta[n, :, 0] * x_j + theta[n, :, 1] * y_i + theta[n, :, 2] is a column term plus a row
        term: one broadcast add writes both coordinate planes (b, 2, S, S) with S-long vectorised rows; the
        permuted view (b, S, S, 2) is what grid_sample reads. affine_grid instead multiplies a (b, S*S, 3) copy.
        (Writing the (b, S, S, 2) layout directly was measured 7x slower: its innermost dimension is 2 long.)
        """
        c = self._centres.to(theta.device)[None, None, :]  # (1, 1, S)
        cols = theta[:, :, 0, None] * c + theta[:, :, 2, None]  # (b, 2, S): x_j term + shift
        rows = theta[:, :, 1, None] * c  # (b, 2, S): y_i term
        planes = cols[:, :, None, :] + rows[:, :, :, None]  # (b, 2, S, S)
        return planes.permute(0, 2, 3, 1)

    def _random_rectangles(self, b: int) -> list[tuple[int, int, int, int, int]]:
        """Random erasing: (image, top, left, height, width) of one rectangle of 2-33% of the area per chosen
        image, aspect ratio 0.3-3.3 (torchvision's RandomErasing defaults)."""
        s = self.size
        chosen = torch.rand(b, generator=self.generator) < self.augment.random_erasing
        area = self._uniform(b, 0.02, 0.33) * s * s
        ratio = torch.exp(self._uniform(b, math.log(0.3), math.log(3.3)))
        height = (area * ratio).sqrt().clamp(1, s).long()
        width = (area / ratio).sqrt().clamp(1, s).long()
        top = (torch.rand(b, generator=self.generator) * (s - height + 1)).long()
        left = (torch.rand(b, generator=self.generator) * (s - width + 1)).long()
        return [
            (i, top[i].item(), left[i].item(), height[i].item(), width[i].item())
            for i in torch.nonzero(chosen).flatten().tolist()
        ]


@dataclass
class Mix:
    """One mixed batch: pixels = a blend of each face i with face perm[i]; the loss weighs label i by lam."""

    pixels: torch.Tensor  # (B, C, S, S)
    perm: torch.Tensor  # (B,) partner of each face
    lam: float  # share of face i in the blend (CutMix: the exact area kept)


class BatchMixer:
    """mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a model-ready training batch.

    It runs in the loss (`FerTrainer.compute_loss`), not in the collator, so the labels stay class ids (the loss is
    lam * L(y) + (1 - lam) * L(y[perm]), for any recipe loss) and the SWA BatchNorm recompute sees unmixed faces.
    Draws come from torch's global RNG, which the Trainer seeds and restores on resume.
    """

    def __init__(self, augment: Augment):
        self.augment = augment

    @property
    def enabled(self) -> bool:
        return (self.augment.mixup_alpha > 0 or self.augment.cutmix_alpha > 0) and self.augment.mix_prob > 0

    def __call__(self, pixels: torch.Tensor) -> Mix | None:
        """(B, C, S, S) -> a Mix, or None for a batch left as it is (mix_prob, or mixing off)."""
        a = self.augment
        if not self.enabled or torch.rand(()).item() >= a.mix_prob:
            return None
        cutmix = a.cutmix_alpha > 0 and (a.mixup_alpha == 0 or torch.rand(()).item() < 0.5)
        alpha = a.cutmix_alpha if cutmix else a.mixup_alpha
        lam = torch.distributions.Beta(alpha, alpha).sample().item()
        perm = torch.randperm(pixels.shape[0]).to(pixels.device)
        if not cutmix:
            return Mix(pixels * lam + pixels[perm] * (1.0 - lam), perm, lam)
        rows, cols = self._box(pixels.shape[-2], pixels.shape[-1], lam)
        mixed = pixels.clone()
        mixed[..., rows, cols] = pixels[..., rows, cols][perm]  # only the box is gathered from the partners
        kept = 1.0 - (rows.stop - rows.start) * (cols.stop - cols.start) / (pixels.shape[-2] * pixels.shape[-1])
        return Mix(mixed, perm, kept)

    @staticmethod
    def _box(h: int, w: int, lam: float) -> tuple[slice, slice]:
        """CutMix's box (rows, cols): sides sqrt(1 - lam) of the image's, centred uniformly, clipped at the borders."""
        cut = math.sqrt(1.0 - lam)
        cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
        half_h, half_w = round(h * cut / 2), round(w * cut / 2)
        return slice(max(cy - half_h, 0), min(cy + half_h, h)), slice(max(cx - half_w, 0), min(cx + half_w, w))


def _per_channel(value: float | list[float], channels: int, name: str) -> torch.Tensor:
    """A mean/std given as one value or one per channel -> float tensor (C, 1, 1)."""
    t = torch.tensor(value, dtype=torch.float32).reshape(-1)
    if t.numel() == 1:
        t = t.expand(channels)
    elif t.numel() != channels:
        raise ValueError(f"{name} has {t.numel()} values; expected 1 or {channels} (one per channel)")
    return t.reshape(channels, 1, 1).clone()


class FerCollator:
    """Collator for the Trainer: a list of {"pixels", "labels"[, "teacher"]} items -> one batch.

    Without a transform (what fer_hf.train uses) the batch keeps uint8 faces {"pixels" (B, 48, 48), "labels"
    [, "teacher" (B, 2, K)]} and `FerTrainer` transforms them on the model's device. With one, the collator does it
    on the CPU: {"pixel_values" (B, C, S, S), "labels"[, "teacher" (B, K)]} (`python -m fer_hf.bench train
    --transform collator` measures that placement).
    """

    def __init__(self, transform: BatchTransform | None = None):
        self.transform = transform

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {
            "pixels": torch.stack([item["pixels"] for item in items]),  # (B, 48, 48) uint8
            "labels": torch.stack([torch.as_tensor(item["labels"]) for item in items]),
        }
        for key in ("teacher", "targets"):  # teacher (B, 2, K): face, mirror; targets (B, K): FER+ vote targets
            if key in items[0]:
                batch[key] = torch.stack([item[key] for item in items])
        return batch if self.transform is None else apply_transform(self.transform, batch)


def apply_transform(transform: BatchTransform, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch of uint8 faces -> model input: "pixels" becomes "pixel_values" (on the faces' device), and a
    distillation teacher (B, 2, K) keeps the row of the view the augmentation drew, mirrored or not (B, K)."""
    batch = dict(batch)
    batch["pixel_values"] = transform(batch.pop("pixels"))
    teacher = batch.get("teacher")
    if teacher is not None and teacher.ndim == 3:
        drawn = transform.last_flip.long().to(teacher.device)
        batch["teacher"] = teacher[torch.arange(len(teacher), device=teacher.device), drawn]
    return batch


def keep_freed_batch_memory(limit_bytes: int = 1 << 30) -> bool:
    """Let glibc reuse freed batch buffers instead of returning them to the OS.

    A (64, 3, 224, 224) float batch is 38.5 MB: above glibc's largest mmap threshold (32 MB), so every batch is
    a fresh mmap whose first writes page-fault (measured: ~40% of the collator's time on a 2-core CPU). Raising
    the mmap and trim thresholds keeps freed batches in the heap for the next one. This is the allocator tuning
    PyTorch's CPU performance guide recommends (there via jemalloc/tcmalloc); a no-op where libc is not glibc.
    Returns whether it was applied.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter ids from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_threshold, limit_bytes)) and bool(
            libc.mallopt(m_trim_threshold, 2 * limit_bytes)
        )
    except (OSError, AttributeError):
        return False
