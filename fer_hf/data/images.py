"""Decoded images as a person sees them: the EXIF orientation applied, 16-bit grayscale scaled to 8 bits.

Every reader of user images goes through `as_displayed`: photos (`fer_hf.inference.faces.load_image`: predict, explain, the
app, the runtime) and dataset faces (`fer_hf.data.transforms`). PIL alone ignores the orientation tag (a phone photo
stored sideways stays sideways) and clips 16-bit values when converting to 8 bits (a 16-bit face turns white).

An animated image (GIF, APNG, animated WebP, multi-page TIFF) is refused by `as_displayed` with a sentence: PIL hands
over its first frame only, so a face in a later frame would be reported as "no face found". `animation_frames`
reads every frame with its time, for a caller that treats the file as a short video (OpenCV's VideoCapture reads
GIFs frame by frame too, with the same times, so `predict_video` can take a GIF as it is).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

HIGH_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# The files fer_hf reads as images (ImageFolder copies, predict's inputs) and as videos, by suffix, lower case.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


class AnimatedImageError(ValueError):
    """An image with several frames where one still photo is expected."""


def frame_count(image: Image.Image) -> int:
    return int(getattr(image, "n_frames", 1) or 1)


def is_animated(path: str | Path) -> bool:
    """True for a file PIL opens with more than one frame (False for anything it cannot open)."""
    try:
        with Image.open(path) as image:
            return frame_count(image) > 1
    except (OSError, ValueError, SyntaxError):
        return False


def as_displayed(image: Image.Image) -> Image.Image:
    """The image upright (EXIF orientation applied) and in an 8-bit mode: `image` itself when it already is (no
    copy), else a new image. An animated image is refused: its first frame alone is not the picture."""
    frames = frame_count(image)
    if frames > 1:
        name = getattr(image, "filename", "") or "the image"
        raise AnimatedImageError(
            f"{name}: an animated {image.format or 'image'} of {frames} frames; a photo is read from one frame, so "
            "faces in the others would be missed: pass it as a video (the Video tab, or convert it, e.g. "
            f"`ffmpeg -i {Path(name).name} clip.mp4`) or save the frame you mean as a still image"
        )
    image = to_8bit(image)
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:  # already upright: no copy (exif_transpose makes one)
        return image
    return ImageOps.exif_transpose(image)


def animation_frames(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """Every frame of an animated (or still) image as (index, time in seconds, RGB uint8 (H, W, 3)); the time is
    the sum of the frames' durations before it (GIF/APNG/WebP store one per frame, in milliseconds)."""
    with Image.open(path) as image:
        start = 0.0
        for index in range(frame_count(image)):
            image.seek(index)
            frame = ImageOps.exif_transpose(to_8bit(image.copy())).convert("RGB")
            yield index, start / 1000.0, np.asarray(frame)
            start += float(image.info.get("duration", 0) or 0)


def to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (and 32-bit integer) grayscale scaled to 8 bits (65535 -> 255), not clipped: PIL's own convert("L")
    clips such images to white. Other modes pass through."""
    if image.mode not in HIGH_BIT_GRAY:
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:  # 16-bit data (PNG 16-bit may open as "I")
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
