"""Decoding a split's images once into a uint8 tensor (N, 48, 48) of gray faces, on a small thread pool, and the
dataset of decoded faces that training and evaluation index. The batch transform (`fer_hf.data.transforms`) starts
from these tensors."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from datasets import Dataset, Image
from PIL import Image as PILImage
from tqdm.auto import tqdm

from fer_hf.data.images import as_displayed
from fer_hf.data.sources import IMAGE_SIZE, FerDataError, labels_of


def decode_images(ds: Dataset, *, size: int = IMAGE_SIZE, desc: str = "decode") -> torch.Tensor:
    """Decode a split's images once into a grayscale uint8 tensor (N, size, size).

    Blocks of rows decode on a small thread pool (OpenCV and PIL release the GIL while decoding): 3,000 FER2013
    faces took 0.10-0.20 s instead of 0.15-0.32 s on two cores, in alternating runs.
    This is where an undecodable image of a parquet/Hub source surfaces (ImageFolder and CSV sources are
    checked when loaded): the error names the split's origin and the row, before any training starts.
    """
    out = np.empty((len(ds), size, size), dtype=np.uint8)
    images = ds.select_columns(["image"]).cast_column("image", Image(decode=False))
    progress = tqdm(total=len(ds), desc=desc, leave=False, mininterval=2)
    blocks = images.iter(batch_size=DECODE_BLOCK)  # raw {"bytes", "path"} dicts; every block but the last is full
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        # map yields in row order (the first bad row is the one reported) and cancels the blocks not yet started
        decoded = pool.map(
            lambda block, start: _decode_block(ds, block["image"], out, start, size),
            blocks,
            range(0, len(ds), DECODE_BLOCK),
        )
        for n in decoded:
            progress.update(n)
    progress.close()
    return torch.from_numpy(out)


DECODE_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


DECODE_BLOCK = 512  # rows a thread decodes per task


def _decode_block(ds: Dataset, images: list[dict], out: np.ndarray, start: int, size: int) -> int:
    """Decode rows start.. of `ds` into out[start..]; returns how many."""
    for row, image in enumerate(images, start):
        try:
            out[row] = _decode_gray(image, size)
        except Exception as err:
            origin = ds.info.description or "dataset"
            raise FerDataError(
                f"{origin}: row {_source_row(ds, row)}: cannot decode image as a {size}x{size} face ({err})"
            ) from None
    return len(images)


def _source_row(ds: Dataset, row: int) -> str:
    """Row `row` of a split as a row of its source: a select()/split keeps an indices mapping to the file rows."""
    indices = getattr(ds, "_indices", None)  # datasets' (private) mapping; None when rows are in file order
    if indices is None:
        return str(row)
    return f"{indices.column(0)[row].as_py()} (row {row} of this selection)"


def _decode_gray(image: dict, size: int) -> np.ndarray:
    """One encoded image -> uint8 (size, size) gray; PIL's `convert("L")` + bilinear resize semantics."""
    data = image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes()
    if _is_gray8_png(data, size):
        # FER2013's own format: OpenCV decodes it ~2x faster than PIL, with identical (lossless) pixels.
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is not None and decoded.shape == (size, size):
            return decoded
    with PILImage.open(io.BytesIO(data)) as im:
        im = as_displayed(im).convert("L")  # EXIF orientation applied, 16-bit scaled (not clipped) to 8 bits
        if im.size != (size, size):
            im = im.resize((size, size), PILImage.BILINEAR)
        return np.asarray(im)


def _is_gray8_png(data: bytes, size: int) -> bool:
    """PNG signature + IHDR says size x size, bit depth 8, colour type 0 (grayscale)."""
    return (
        data[:8] == b"\x89PNG\r\n\x1a\n"
        and int.from_bytes(data[16:20], "big") == size
        and int.from_bytes(data[20:24], "big") == size
        and data[24:26] == b"\x08\x00"
    )


class FerTensorDataset(torch.utils.data.Dataset):
    """A decoded split: item i is {"pixels": uint8 (H, W), "labels": int}; the collator does the rest.

    `teacher`: optional (N, 2, K) log-probabilities of a distillation teacher on each face and its mirror.
    `targets`: optional (N, K) float training targets (FER+'s vote modes: `fer_hf.ferplus.training_targets`).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        teacher: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ):
        if images.ndim != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if teacher is not None and (teacher.ndim != 3 or teacher.shape[:2] != (len(images), 2)):
            raise ValueError(f"teacher must be (N={len(images)}, 2, K), got {tuple(teacher.shape)}")
        if targets is not None and (targets.ndim != 2 or len(targets) != len(images)):
            raise ValueError(f"targets must be (N={len(images)}, K), got {tuple(targets.shape)}")
        self.images, self.labels, self.teacher = images, labels.long(), teacher
        self.targets = None if targets is None else targets.float()

    @classmethod
    def from_split(cls, ds: Dataset, desc: str = "decode") -> FerTensorDataset:
        labels = torch.from_numpy(labels_of(ds))
        return cls(decode_images(ds, desc=desc), labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"pixels": self.images[i], "labels": self.labels[i]}
        if self.teacher is not None:
            item["teacher"] = self.teacher[i]  # (2, K)
        if self.targets is not None:
            item["targets"] = self.targets[i]  # (K,)
        return item
