"""Find faces in photos and crop them the way FER2013 faces look: square, a little margin, grayscale, 48x48.

The detector is OpenCV's Haar cascade shipped inside opencv-python-headless (`cv2.data.haarcascades`): it installs
from PyPI and runs offline. `alt2` is the primary cascade (the `default` cascade fires on textures such as coins);
when it finds nothing, the profile cascade is tried on the image and on its mirror. Detection runs on a copy
downscaled to `detect_max_side` pixels (Haar cost grows with pixels x scales); boxes are mapped back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CASCADES = {
    "alt2": "haarcascade_frontalface_alt2.xml",
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "profile": "haarcascade_profileface.xml",
}
CROP_MODES = ("auto", "detect", "cropped")


class ImageLoadError(ValueError):
    """A file that cannot be used as an image (not an image, corrupt, too large)."""


@dataclass
class DetectorConfig:
    cascade: str = field(default="alt2", metadata={"help": f"primary Haar cascade, one of {sorted(CASCADES)}"})
    fallbacks: tuple[str, ...] = field(
        default=("profile",), metadata={"help": "cascades tried in turn when the primary one finds no face"}
    )
    detect_max_side: int = field(
        default=320, metadata={"help": "longest side of the copy the detector sees (Haar cost grows with its pixels)"}
    )
    scale_factor: float = field(default=1.2, metadata={"help": "Haar pyramid step: smaller finds more, slower"})
    min_neighbors: int = field(default=5, metadata={"help": "overlapping hits needed to accept a face"})
    min_face_fraction: float = field(
        default=0.08, metadata={"help": "smallest face side as a fraction of the longest image side (speed)"}
    )
    margin: float = field(default=0.15, metadata={"help": "extra context around the box on each side (FER-like)"})
    face_size: int = field(default=48, metadata={"help": "side of the grayscale face crop (FER2013: 48)"})
    cropped_max_side: int = field(
        default=128, metadata={"help": "crop mode 'auto': images this small are taken as already-cropped faces"}
    )
    work_max_side: int = field(
        default=4096, metadata={"help": "bigger images are downscaled on load (a face needs only 48 pixels)"}
    )
    max_pixels: int = field(
        default=400_000_000, metadata={"help": "images with more pixels are refused before decoding (memory)"}
    )

    def __post_init__(self) -> None:
        for name in (self.cascade, *self.fallbacks):
            if name not in CASCADES:
                raise ValueError(f"unknown Haar cascade {name!r}; choose from {sorted(CASCADES)}")


@dataclass
class Face:
    """A face box (x, y = top-left) and its FER-like crop."""

    box: tuple[int, int, int, int]  # (x, y, w, h) in the searched array; the whole array for cropped faces
    crop: np.ndarray  # (face_size, face_size) uint8 grayscale
    source: str  # cascade that found it, or "cropped"


def load_image(path: str | Path, config: DetectorConfig | None = None) -> tuple[np.ndarray, float]:
    """Decode an image file -> (RGB uint8 array (H, W, 3), scale from original pixels to the returned array).

    Huge images are refused before decoding when over `max_pixels`, and downscaled to `work_max_side` otherwise
    (JPEG decodes directly at a reduced size via `draft`)."""
    config = config or DetectorConfig()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our own max_pixels check applies
            try:
                return _decode(Image.open(path), config)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three for broken files
        raise ImageLoadError(f"{path}: not a readable image ({err})") from err


def _decode(image: Image.Image, config: DetectorConfig) -> tuple[np.ndarray, float]:
    width, height = image.size
    if width * height > config.max_pixels:
        raise ImageLoadError(
            f"{image.filename}: {width}x{height} = {width * height / 1e6:.0f} megapixels is more than the limit "
            f"of {config.max_pixels / 1e6:.0f}; downscale it first"
        )
    scale = min(1.0, config.work_max_side / max(width, height))
    if scale < 1.0:
        image.draft("RGB", (round(width * scale), round(height * scale)))  # JPEG: decode at 1/2, 1/4, 1/8
        image = image.convert("RGB")
        image.thumbnail((config.work_max_side, config.work_max_side), Image.Resampling.BILINEAR)
    array = np.asarray(image.convert("RGB"))
    return array, array.shape[1] / width


class FaceDetector:
    """detect(rgb) -> boxes; faces(rgb, mode) -> FER-like crops. Cascades are loaded once."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._cascades = {name: _cascade(name) for name in (self.config.cascade, *self.config.fallbacks)}

    def detect(self, rgb: np.ndarray) -> tuple[list[tuple[int, int, int, int]], str]:
        """(H, W, 3) uint8 -> ([(x, y, w, h)] largest first, in this array's pixels; cascade name)."""
        gray = _gray(rgb)
        scale = min(1.0, self.config.detect_max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        small = cv2.equalizeHist(small)  # Haar features are contrast-sensitive: normalise lighting
        min_side = max(20, round(self.config.min_face_fraction * max(small.shape)))
        for name in (self.config.cascade, *self.config.fallbacks):
            boxes = self._run(name, small, min_side)
            if boxes:
                boxes = [tuple(int(round(v / scale)) for v in box) for box in boxes]
                return sorted(boxes, key=lambda b: -b[2] * b[3]), name
        return [], ""

    def _run(self, name: str, gray: np.ndarray, min_side: int) -> list[tuple[int, int, int, int]]:
        cascade, cfg = self._cascades[name], self.config
        found = cascade.detectMultiScale(gray, cfg.scale_factor, cfg.min_neighbors, minSize=(min_side, min_side))
        boxes = [tuple(b) for b in np.asarray(found).reshape(-1, 4)]
        if not boxes and name == "profile":  # the profile cascade only knows faces turned one way: try the mirror
            width = gray.shape[1]
            found = cascade.detectMultiScale(
                gray[:, ::-1].copy(), cfg.scale_factor, cfg.min_neighbors, minSize=(min_side, min_side)
            )
            boxes = [(width - x - w, y, w, h) for x, y, w, h in np.asarray(found).reshape(-1, 4)]
        return boxes

    def faces(self, rgb: np.ndarray, mode: str = "auto") -> list[Face]:
        """Crops of every face in `rgb`, largest first. mode: auto (small images are taken as cropped faces,
        others are searched), detect (always search), cropped (the whole image is one face)."""
        if mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
        height, width = rgb.shape[:2]
        if mode == "cropped" or (mode == "auto" and max(height, width) <= self.config.cropped_max_side):
            return [
                Face(
                    (0, 0, width, height),
                    square_crop(rgb, (0, 0, width, height), 0.0, self.config.face_size),
                    "cropped",
                )
            ]
        boxes, source = self.detect(rgb)
        return [Face(box, square_crop(rgb, box, self.config.margin, self.config.face_size), source) for box in boxes]


def square_crop(rgb: np.ndarray, box: tuple[int, int, int, int], margin: float, size: int) -> np.ndarray:
    """Square grayscale crop centred on `box`, each side widened by `margin` x its side; edges are replicated
    where the square leaves the image. -> (size, size) uint8."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = max(1, int(round(side)))
    gray = _gray(rgb)
    pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = gray[top + pad : top + pad + side, left + pad : left + pad + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / CASCADES[name]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"could not load the Haar cascade {path}; reinstall opencv-python-headless<5")
    return cascade
