"""One call from a photo, an array, a list of them, a video or a camera to a table of faces and their expressions.

    import fer_hf
    result = fer_hf.analyze("group.jpg")                    # or a PIL image, an (H, W[, C]) array, a list, a video
    result.to_pandas()                                      # one row per face (per frame for videos)
    analyzer = fer_hf.Analyzer("ferplus", device="auto")    # load once, call many times
    analyzer(frame_bgr, channels="bgr")                     # an OpenCV frame

Faces are found, aligned and cropped the way `python -m fer_hf.predict` does it (`fer_hf.inference.predictor.Predictor`), so
the numbers are the command's. Arrays: gray (H, W) or (H, W, 1), RGB (H, W, 3) (BGR with channels="bgr"), RGBA
(H, W, 4), as uint8, uint16 (scaled to 8 bits, not clipped) or float in [0, 1]. Anything else is refused with one
sentence saying what was given and what is expected (`InputError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fer_hf.data.images import HIGH_BIT_GRAY, as_displayed, to_8bit
from fer_hf.inference.faces import LANDMARK_NAMES, DetectorConfig
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.models.loading import DEFAULT_MODEL, LoadedModel

CHANNELS = ("rgb", "bgr")
ARRAY_SHAPES = "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
ARRAY_DTYPES = "uint8, uint16 or float in [0, 1]"


class InputError(ValueError):
    """An input analyze cannot use: the message names what was given and what was expected."""


# ------------------------------------------------------------------------------------------------ results
@dataclass
class FaceResult:
    """One face: where it is and what the model says."""

    face: int  # 1 = the largest in its image/frame (the order of predict's annotated image)
    box: tuple[int, int, int, int]  # (x, y, w, h) in the input's pixels
    label: str  # the most probable class
    score: float  # its probability
    probabilities: dict[str, float]  # every class, the model's own label names and order; sums to 1
    landmarks: list[list[float]] | None = None  # 5 (x, y), fer_hf.inference.faces.LANDMARK_NAMES order (YuNet only)
    detector_score: float | None = None
    track_id: int | None = None  # videos: the same number while it is the same person
    smoothed_label: str | None = None  # videos: the label of the track's moving average


@dataclass
class ItemResult:
    """One image of the input, or one sampled frame of a video: status ok, no_face or error."""

    index: int  # position in the list (0 for a single image), or the frame's number in the video
    source: str  # the path, "array", "PIL image", or the video/camera
    status: str
    faces: list[FaceResult] = field(default_factory=list)
    time_s: float | None = None  # videos: the frame's presentation time
    error: str | None = None


@dataclass
class Analysis:
    """What analyze returns: every image or frame with its faces. `to_pandas()` / `to_json()`: one row per face,
    and one row (status no_face, faces 0) for an image or frame without one, so nothing disappears."""

    kind: str  # "images", "video" or "stream"
    labels: list[str]
    items: list[ItemResult]
    tracks: list[dict] = field(default_factory=list)  # videos: per track, first/last time, frames, dominant label
    warning: str | None = None

    @property
    def faces(self) -> list[FaceResult]:
        return [face for item in self.items for face in item.faces]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ItemResult:
        return self.items[i]

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for item in self.items:
            base = {"index": item.index, "source": item.source, "time_s": item.time_s, "status": item.status,
                    "faces": len(item.faces), "error": item.error}  # fmt: skip
            rows += [{**base, **_face_columns(face, self.labels)} for face in item.faces] or [
                {**base, **_face_columns(None, self.labels)}
            ]
        return rows

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=self.columns())

    def columns(self) -> list[str]:
        points = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
        return ["index", "source", "time_s", "status", "faces", "error", "face", "track_id", "x", "y", "w", "h",
                "detector_score", *points, "label", "score", *(f"p_{n}" for n in self.labels), "smoothed_label"]  # fmt: skip

    def to_json(self, path: str | Path | None = None, indent: int | None = 2) -> str:
        """The rows of `to_pandas` as a JSON list (null where a value is missing); written to `path` if given."""
        text = json.dumps(self.rows(), indent=indent)
        if path is not None:
            Path(path).write_text(text)
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def _face_columns(face: FaceResult | None, labels: Sequence[str]) -> dict[str, Any]:
    points = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
    if face is None:
        return dict.fromkeys(["face", "track_id", "x", "y", "w", "h", "detector_score", *points, "label", "score",
                              *(f"p_{n}" for n in labels), "smoothed_label"])  # fmt: skip
    flat = sum(face.landmarks, []) if face.landmarks else [None] * 10
    return {
        "face": face.face,
        "track_id": face.track_id,
        **dict(zip("xywh", face.box, strict=True)),
        "detector_score": face.detector_score,
        **dict(zip(points, flat, strict=True)),
        "label": face.label,
        "score": face.score,
        **{f"p_{n}": face.probabilities[n] for n in labels},
        "smoothed_label": face.smoothed_label,
    }


def _faces(predictions: Sequence) -> list[FaceResult]:
    return [
        FaceResult(
            i,
            tuple(p.box),
            p.label,
            p.score,
            dict(p.probabilities),
            p.landmarks,
            p.detector_score,
            p.track_id,
            p.smoothed_label,
        )  # fmt: skip
        for i, p in enumerate(predictions, 1)
    ]


# ------------------------------------------------------------------------------------------------ inputs
def to_rgb(image: Any, channels: str = "rgb", where: str = "the input") -> np.ndarray:
    """A PIL image or an array -> RGB uint8 (H, W, 3); InputError with one sentence for anything else."""
    if isinstance(image, Image.Image):
        if image.mode == "F":  # 32-bit float pixels: read as a float array, [0, 1] expected
            return to_rgb(np.asarray(image), "rgb", where)
        image = as_displayed(image) if image.mode not in HIGH_BIT_GRAY else to_8bit(image)
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputError(
            f"{where} is a {type(image).__name__}; expected a file path, a PIL image, a numpy array "
            f"{ARRAY_SHAPES}, a list of them, a video path or a camera index"
        )
    if channels not in CHANNELS:
        raise InputError(f"channels={channels!r}; expected 'rgb' or 'bgr' (the order of a 3- or 4-channel array)")
    array = _as_uint8(image, where)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4) or min(array.shape[:2]) < 1:
        hint = (
            " (channels first? use array.transpose(1, 2, 0))"
            if array.ndim == 3 and array.shape[0] in (1, 3, 4)
            else ""
        )
        raise InputError(f"{where} is an array of shape {image.shape}; expected {ARRAY_SHAPES}{hint}")
    rgb = array[..., :3]  # the alpha channel says nothing about the face
    return np.ascontiguousarray(rgb[..., ::-1] if channels == "bgr" else rgb)


def _as_uint8(array: np.ndarray, where: str) -> np.ndarray:
    if array.size == 0 or array.ndim not in (2, 3):
        raise InputError(f"{where} is an array of shape {array.shape}; expected {ARRAY_SHAPES} with pixels in it")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.rint(array / 257.0).astype(np.uint8)  # 65535 -> 255: scaled, not clipped
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(np.min(array)), float(np.max(array))
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 1:
            raise InputError(
                f"{where} is a {array.dtype} array with values in [{low:g}, {high:g}]; expected floats in [0, 1] "
                "(divide by 255 for 0-255 values)"
            )
        return np.rint(array * 255.0).astype(np.uint8)
    raise InputError(f"{where} is an array of dtype {array.dtype}; expected {ARRAY_DTYPES}")


# ------------------------------------------------------------------------------------------------ the analyzer
class Analyzer:
    """A loaded model + face detector, reused across calls: `Analyzer(model)(x)` is `analyze(x, model)`.

    model: 'default', 'lite0', 'ferplus' (8 classes), 'ensemble', a run/model folder, a Hub id or a LoadedModel.
    device: 'auto' (cuda, then mps, then cpu) or a torch device name (a missing one is a DeviceError sentence).
    backend: 'auto' (onnxruntime through the model's ONNX export, shipped or exported once and cached, else torch),
    'onnx' or 'torch'; None: $FER_HF_BACKEND, else auto.
    detector: 'yunet', 'haar', 'none' (every image is one face) or a fer_hf.inference.faces.DetectorConfig."""

    def __init__(
        self,
        model: str | Path | LoadedModel = DEFAULT_MODEL,
        *,
        device: str = "auto",
        detector: str | DetectorConfig = "yunet",
        tta: str = "none",
        batch_size: int = 32,
        tracking: TrackingConfig | None = None,
        trust_remote_code: bool = False,
        backend: str | None = None,
    ):
        from fer_hf.devices import resolve_device
        from fer_hf.inference.predictor import Predictor

        config = detector if isinstance(detector, DetectorConfig) else DetectorConfig(detector=detector)
        self.predictor = Predictor(model, tta=tta, detector=config, batch_size=batch_size,
                                   device=resolve_device(device), trust_remote_code=trust_remote_code,
                                   backend=backend)  # fmt: skip
        self.tracking = tracking or TrackingConfig()
        self.labels = list(self.predictor.label_names)

    def __call__(
        self,
        x: Any,
        *,
        channels: str = "rgb",
        crop_mode: str = "auto",
        fps: float = 2.0,
        seconds: float | None = None,
    ) -> Analysis:
        """x: a path (image or video), a PIL image, an array, a list of images, a camera index or a stream URL.
        fps: video frames sampled per second of video time (0: every frame); seconds: how long to read a camera."""
        if isinstance(x, bool):
            raise InputError(
                f"the input is {x!r}; expected an image, an array, a list, a video path or a camera index"
            )
        if isinstance(x, int):
            return self.stream(x, fps=fps, seconds=seconds)
        if isinstance(x, (str, Path)) and _is_video(x):
            return self.video(x, fps=fps)
        if isinstance(x, str) and "://" in x:
            return self.stream(x, fps=fps, seconds=seconds)
        if isinstance(x, (list, tuple)):
            if not x:
                raise InputError(
                    "the input is an empty list; expected at least one image (a path, a PIL image, an array)"
                )
            return self.images(list(x), channels=channels, crop_mode=crop_mode)
        return self.images([x], channels=channels, crop_mode=crop_mode, single=True)

    def images(self, items: list, *, channels: str = "rgb", crop_mode: str = "auto", single: bool = False) -> Analysis:
        """Images (paths, PIL images, arrays, mixed) -> one ItemResult each, in order. A list's unreadable file is
        an error item (a batch never aborts for one file); a single one raises InputError."""
        results: list[ItemResult | None] = [None] * len(items)
        paths, arrays = [], []
        for i, item in enumerate(items):
            where = "the input" if single else f"item {i} of the list"
            if isinstance(item, (str, Path)):
                if _is_video(item):
                    raise InputError(f"{where} is the video {item}; pass a video on its own, not in a list of images")
                paths.append((i, str(item)))
            else:
                arrays.append(
                    (i, to_rgb(item, channels, where), "PIL image" if isinstance(item, Image.Image) else "array")
                )
        for (i, path), result in zip(paths, self.predictor.predict_images([p for _, p in paths], crop_mode=crop_mode),
                                     strict=True):  # fmt: skip
            if result.error and single:
                raise InputError(f"the input {path} cannot be used: {result.error}; expected an image or video file")
            results[i] = ItemResult(i, path, result.status, _faces(result.faces), error=result.error)
        predictions = self.predictor.predict_arrays([rgb for _, rgb, _ in arrays], crop_mode=crop_mode)
        for (i, _, source), preds in zip(arrays, predictions, strict=True):
            results[i] = ItemResult(i, source, "ok" if preds else "no_face", _faces(preds))
        return Analysis("images", self.labels, results)

    def video(self, path: str | Path, *, fps: float = 2.0) -> Analysis:
        result = self.predictor.predict_video(path, fps=fps, tracking=self.tracking)
        if result.error:
            raise InputError(f"the input {path} cannot be used as a video: {result.error}")
        return self._frames(result, "video")

    def stream(self, source: str | int, *, fps: float = 2.0, seconds: float | None = None) -> Analysis:
        """A camera index, device path or URL: frames until `seconds` of them, the end of the stream or Ctrl-C."""
        from fer_hf.inference.video_io import StreamFrames, VideoLoadError

        try:
            frames = StreamFrames(source, fps, seconds=seconds)
        except VideoLoadError as err:
            raise InputError(str(err)) from None
        return self._frames(self.predictor.predict_stream(frames, tracking=self.tracking), "stream")

    def _frames(self, result, kind: str) -> Analysis:
        items = [ItemResult(f.index, result.path, f.status, _faces(f.faces), time_s=f.time_s) for f in result.frames]
        return Analysis(kind, self.labels, items, tracks=result.tracks, warning=result.warning)


def _is_video(path: str | Path) -> bool:
    from fer_hf.data.images import VIDEO_EXTENSIONS

    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def analyze(x: Any, model: str | Path | LoadedModel | Analyzer = DEFAULT_MODEL, **options) -> Analysis:
    """Faces and their expressions in `x` (see `Analyzer.__call__`). `options`: channels, crop_mode, fps, seconds,
    and Analyzer's device, backend, detector, tta, batch_size, tracking. Loads the model on each call: for many calls, build
    an `Analyzer` once."""
    call_keys = {"channels", "crop_mode", "fps", "seconds"}
    call = {k: v for k, v in options.items() if k in call_keys}
    analyzer = model if isinstance(model, Analyzer) else Analyzer(model, **{k: v for k, v in options.items()
                                                                            if k not in call_keys})  # fmt: skip
    return analyzer(x, **call)
