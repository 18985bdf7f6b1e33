"""What the Gradio app does, without Gradio: the model catalogue and the photo / video / comparison handlers.

app.py only lays out components and turns these results into component values, so every rule about bad input
(no face, not an image, a model that failed to load, a missing comparison) lives here, in plain Python.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import collections
import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fer_hf.data.images import as_displayed
from fer_hf.inference.annotate import draw_faces
from fer_hf.inference.explanations import ExplainError, attention_rollout, gradcam_map, overlay, saliency_map
from fer_hf.inference.faces import load_image
from fer_hf.inference.predictions import ImageResult, VideoFaces
from fer_hf.inference.predictor import Predictor
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.inference.video_io import VideoFrames, VideoLoadError
from fer_hf.inference.writers import commit, csv_columns, frame_rows, staging_path
from fer_hf.models.loading import BUNDLED_MODELS, DEFAULT_MODEL, is_installed

APP_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = APP_DIR / "examples"
MODELS_ENV = "FER_HF_MODELS"  # comma-separated Hub ids or local model / run folders, offered after the bundled ones
COMPARISON_ENV = "FER_HF_COMPARISON"  # a `python -m fer_hf.compare --output DIR` folder
# The like-for-like table travels with the bundled default model (its card shows it): one copy, in the package.
DEFAULT_COMPARISON_DIR = BUNDLED_MODELS[DEFAULT_MODEL].path / "comparison"
# File names written by fer_hf.compare (OUTPUT_STEM) and fer_hf.evaluate (CONFUSION_FILE); copied, not imported,
# because those modules pull datasets and scikit-learn into the app's start-up. tests/test_app.py checks they agree.
COMPARISON_STEM = "comparison"
CONFUSION_FILE = "confusion_matrix.png"

MAX_FACES_SHOWN = 6  # one probability panel per face; more faces are still boxed and listed in the JSON
MAX_VIDEO_SAMPLES = 240  # frames classified per clip at most (2 CPU cores: about 10 s of work)
EXPLAIN_METHODS = ("none", "saliency", "gradcam", "attention")
METHOD_TITLES = {"none": "None", "saliency": "Saliency", "gradcam": "Grad-CAM", "attention": "Attention rollout"}


class UserInputError(ValueError):
    """Something the person using the app can fix (no image, no face, wrong file): shown as a message."""


# ---------------------------------------------------------------- models


@dataclass
class ModelEntry:
    ref: str  # what FER_HF_MODELS named, or a bundled model's name ("default", "lite0")
    predictor: Predictor | None = None
    error: str | None = None  # why it could not be loaded

    @property
    def title(self) -> str:
        """Dropdown text: short, says what the model is."""
        if self.ref in BUNDLED_MODELS:
            return f"{self.ref} (bundled {BUNDLED_MODELS[self.ref].title})"
        return Path(self.ref).name if Path(self.ref).is_dir() else self.ref

    def describe(self) -> str:
        """One Markdown line for the About tab: family, size, classes."""
        if self.predictor is None:
            return f"- **{self.title}**: not available ({self.error})"
        model = self.predictor.loaded.model
        params = sum(p.numel() for p in model.parameters())
        kind = getattr(model.config, "model_type", type(model).__name__)
        if hasattr(model, "runtime"):  # a fer_hf.export folder: onnxruntime, no torch parameters to count
            return f"- **{self.title}** (`{self.ref}`): {kind} exported to ONNX, run by onnxruntime"
        labels = ", ".join(self.predictor.label_names)
        runs = "onnxruntime (its ONNX export)" if self.predictor.backend == "onnx" else "torch"
        return (
            f"- **{self.title}** (`{self.ref}`): {kind}, {params / 1e6:.2f}M parameters, run by {runs}; "
            f"classes: {labels}"
        )


@dataclass
class ModelCatalogue:
    """Every model the app offers, each loaded once at start-up; failures are kept and reported, not raised."""

    entries: list[ModelEntry] = field(default_factory=list)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelCatalogue:
        env = os.environ if env is None else env
        # The default first (reported when missing), then the other bundled models this install has.
        bundled = [name for name, model in BUNDLED_MODELS.items() if name == DEFAULT_MODEL or is_installed(model)]
        refs = bundled + [ref.strip() for ref in env.get(MODELS_ENV, "").split(",") if ref.strip()]
        return cls([load_entry(ref) for ref in dict.fromkeys(refs)])  # dict: drop repeats, keep order

    @property
    def available(self) -> list[ModelEntry]:
        return [entry for entry in self.entries if entry.predictor is not None]

    def choices(self) -> list[tuple[str, str]]:
        return [(entry.title, entry.ref) for entry in self.available]

    def get(self, ref: str | None) -> Predictor:
        if not self.available:
            raise UserInputError("No model could be loaded, so nothing can be predicted. " + self.problems())
        for entry in self.available:
            if ref in (entry.ref, entry.title):
                return entry.predictor
        if ref in (None, ""):
            return self.available[0].predictor
        names = ", ".join(entry.ref for entry in self.available)
        raise UserInputError(f"Unknown model {ref!r}; choose one of: {names}")

    def problems(self) -> str:
        """Markdown naming each model that failed to load, and why; empty when all loaded."""
        failed = [entry for entry in self.entries if entry.error]
        return "\n".join(f"- **{entry.title}** could not be loaded: {entry.error}" for entry in failed)


def load_entry(ref: str, backend: str | None = None) -> ModelEntry:
    """backend: auto, onnx or torch; None: $FER_HF_BACKEND, else auto (onnxruntime, the torch model kept beside it
    for the explanations)."""
    if ref in BUNDLED_MODELS and not is_installed(BUNDLED_MODELS[ref]):
        return ModelEntry(ref, error=f"not bundled in this install ({BUNDLED_MODELS[ref].path} is missing)")
    try:
        return ModelEntry(ref, predictor=Predictor(ref, backend=backend))
    except Exception as err:  # noqa: BLE001  (any failure, from a typo to a broken checkpoint, must not stop the app)
        return ModelEntry(ref, error=f"{type(err).__name__}: {err}")


# ---------------------------------------------------------------- photos


@dataclass
class FacePanel:
    title: str  # "Face 1 — happy (largest)"
    probabilities: dict[str, float]


@dataclass
class PhotoOutput:
    annotated: np.ndarray | None = None  # (H, W, 3) uint8 with boxes and labels
    faces: list[FacePanel] = field(default_factory=list)  # at most MAX_FACES_SHOWN
    overlays: list[tuple[np.ndarray, str]] = field(default_factory=list)  # explanation images + captions
    details: list[dict] = field(default_factory=list)  # every face: box, label, score, probabilities
    message: str = ""
    warning: bool = False  # the message is a problem (no face, ...), not just a summary


def predict_photo(
    catalogue: ModelCatalogue, image_path: str | None, model_ref: str | None, method: str
) -> PhotoOutput:
    """A photo (or an already-cropped face) -> boxes, per-face probabilities and optional explanations."""
    if not image_path:
        raise UserInputError("Upload a photo, take one with the webcam, or click an example first.")
    if method not in EXPLAIN_METHODS:
        raise UserInputError(f"Unknown explanation {method!r}; choose one of {', '.join(EXPLAIN_METHODS)}")
    predictor = catalogue.get(model_ref)
    with tempfile.TemporaryDirectory(prefix="fer_app_") as tmp:
        (result,) = predictor.predict_images([image_path], crop_mode="auto", annotate_dir=tmp)
        if result.error:
            raise UserInputError(f"This file cannot be used as an image: {result.error}")
        annotated = np.asarray(Image.open(result.annotated).convert("RGB")) if result.annotated else None
    output = PhotoOutput(annotated=annotated, details=face_details(result))
    if not result.faces:
        output.message, output.warning = no_face_message(result), True
        return output
    output.faces = [
        FacePanel(
            f"Face {i + 1}: {face.label}{' (largest)' if i == 0 and len(result.faces) > 1 else ''}",
            dict(face.probabilities),
        )
        for i, face in enumerate(result.faces[:MAX_FACES_SHOWN])
    ]
    if method != "none":
        output.overlays = explain_faces(predictor, image_path, result, method)
    output.message = photo_summary(result)
    return output


def face_details(result: ImageResult) -> list[dict]:
    return [
        {"face": i + 1, "box_xywh": list(face.box), "label": face.label, "score": round(face.score, 4),
         "probabilities": {k: round(v, 4) for k, v in face.probabilities.items()}, "found_by": face.source,
         "detector_score": face.detector_score, "landmarks": face.landmarks}
        for i, face in enumerate(result.faces)
    ]  # fmt: skip


def no_face_message(result: ImageResult) -> str:
    width, height = result.size or (0, 0)
    return (
        f"No face found in this {width}x{height} image. The detector (YuNet) needs a face of at least about 20 "
        "pixels that is not turned far away; try a closer or better-lit photo."
    )


def photo_summary(result: ImageResult) -> str:
    faces = result.faces
    shown = "" if len(faces) <= MAX_FACES_SHOWN else f" (probabilities shown for the {MAX_FACES_SHOWN} largest)"
    found = "an already-cropped face" if faces[0].source == "cropped" else f"{len(faces)} face(s){shown}"
    labels = ", ".join(f"{i} {face.label} {face.score:.0%}" for i, face in enumerate(faces, 1))
    return f"Found {found}: {labels}."


def explain_faces(predictor: Predictor, image_path: str, result: ImageResult, method: str) -> list[tuple]:
    """Heat-map overlays (RGB (240, 240, 3)) on the shown faces, each for the class the model predicted."""
    heat_maps = {
        "saliency": saliency_map,
        "gradcam": gradcam_map,
        "attention": lambda m, x, _: attention_rollout(m, x),
    }
    model = predictor.loaded.model
    if hasattr(model, "runtime"):  # onnxruntime gives no gradients or activations
        raise UserInputError("Explanations need the torch model; this one is an ONNX export. Choose another model.")
    rgb, _ = load_image(image_path, predictor.detector.config)
    faces = predictor.detector.faces(rgb, "auto")  # same array, same detector: the same faces, largest first
    overlays = []
    for i, (face, pred) in enumerate(zip(faces[:MAX_FACES_SHOWN], result.faces, strict=False)):
        pixels = predictor.pixel_values([face.crop])  # (1, C, H, W)
        try:
            heat = heat_maps[method](model, pixels, model.config.label2id[pred.label])  # (H, W) in [0, 1]
        except ExplainError as err:
            raise UserInputError(f"{METHOD_TITLES[method]} does not apply to this model: {err}") from err
        caption = f"Face {i + 1}: {METHOD_TITLES[method]} for {pred.label}"
        overlays.append((overlay(face.crop, heat, size=240), caption))
    return overlays


# ---------------------------------------------------------------- videos


@dataclass
class VideoOutput:
    timeline: list[dict] = field(default_factory=list)  # rows (time_s, face, emotion, probability): every track
    distribution: dict[str, float] = field(default_factory=dict)  # share of face frames per predicted emotion
    frames: list[dict] = field(default_factory=list)  # one row per sampled frame
    tracks: list[dict] = field(default_factory=list)  # one row per face followed through the clip
    plots: list[tuple[str, str]] = field(default_factory=list)  # (PNG path, caption): overview, then one per face
    message: str = ""
    warning: bool = False


class RecentFolders:
    """Temporary folders of the last `keep` clips: Gradio serves (copies into its cache) the PNGs of a clip after its
    handler returns, so a folder cannot go at once; the oldest goes when a newer one is made, and the rest when the
    app exits. Without this, every analysed clip left a fer_app_video_* folder behind forever."""

    def __init__(self, prefix: str, keep: int):
        self.prefix, self.keep = prefix, keep
        self.folders: collections.deque[str] = collections.deque()
        self.lock = threading.Lock()  # handlers of concurrent requests share it
        atexit.register(self.clear)

    def new(self) -> str:
        folder = tempfile.mkdtemp(prefix=self.prefix)
        with self.lock:
            self.folders.append(folder)
            old = [self.folders.popleft() for _ in range(max(0, len(self.folders) - self.keep))]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def remove(self, folder: str) -> None:
        with self.lock:
            if folder in self.folders:
                self.folders.remove(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def clear(self) -> None:
        with self.lock:
            folders, self.folders = list(self.folders), collections.deque()
        for path in folders:
            shutil.rmtree(path, ignore_errors=True)


VIDEO_FOLDERS_KEPT = 4  # clips whose timeline PNGs stay on disk (several tabs may be showing theirs)
VIDEO_FOLDERS = RecentFolders("fer_app_video_", VIDEO_FOLDERS_KEPT)


def predict_clip(catalogue: ModelCatalogue, video_path: str | None, model_ref: str | None, fps: float) -> VideoOutput:
    """A video -> per-frame emotions of the largest face, a timeline and the distribution over the clip."""
    if not video_path:
        raise UserInputError("Upload a video clip first.")
    predictor = catalogue.get(model_ref)
    fps = sample_rate(video_path, fps)
    plots = VIDEO_FOLDERS.new()  # Gradio copies the PNGs into its cache after this returns: kept for a while
    try:
        result = predictor.predict_video(video_path, fps=fps, crop_mode="detect", plot_dir=plots)
    except BaseException:
        VIDEO_FOLDERS.remove(plots)
        raise
    if result.error:
        VIDEO_FOLDERS.remove(plots)
        raise UserInputError(f"This file cannot be used as a video ({result.error}).")
    output = VideoOutput(frames=[frame_row(frame) for frame in result.frames], tracks=track_rows(result.tracks))
    output.plots = [(result.plot, "All faces over time")] if result.plot else []
    output.plots += [
        (path, f"Face {t['track_id']}") for path, t in zip(result.track_plots, result.tracks, strict=True)
    ]
    with_face = [frame for frame in result.frames if frame.faces]
    if not with_face:
        output.message, output.warning = f"No face found in any of the {len(result.frames)} sampled frames.", True
        return output
    output.timeline = timeline_rows(with_face)
    output.distribution = dict(result.distribution)
    top = max(output.distribution, key=output.distribution.get)
    output.message = (
        f"{len(result.frames)} frames sampled at {fps:.2g} fps, {len(with_face)} with a face, "
        f"{len(result.tracks)} face(s) followed; most frequent emotion: {top} ({output.distribution[top]:.0%} of "
        "the largest face's frames)."
    )
    if result.warning:
        output.message += f" Note: {result.warning}."
        output.warning = True
    return output


def timeline_rows(frames: list) -> list[dict]:
    """One row per face per frame: its track ("Face 2": one colour per person in the plot), its predicted emotion
    and that emotion's probability. The largest face is not followed: it changes hands when people move."""
    return [
        {"time_s": frame.time_s, "face": f"Face {face.track_id}", "emotion": face.label,
         "probability": round(face.score, 4)}
        for frame in frames
        for face in sorted(frame.faces, key=lambda f: f.track_id or 0)
    ]  # fmt: skip


# Codecs Chromium, Firefox and Safari play inside .mp4/.webm/.mov; OpenCV's mp4v (MPEG-4 part 2) and MJPG are not.
PLAYABLE_CODECS = {"avc1", "h264", "vp80", "vp90", "av01"}
PREVIEW_CODEC = (
    "VP80"  # the browser-playable codec opencv-python-headless writes here (no H.264 encoder ships with it)
)
PREVIEW_MAX_SIDE = 640
PREVIEW_MAX_S = 120  # longer clips are previewed up to here (the analysis still reads the whole clip)


def is_playable(video_path: str) -> bool:
    """Whether a browser plays the file as it is: an mp4/webm/mov container holding H.264, VP8/9 or AV1."""
    import cv2

    capture = cv2.VideoCapture(video_path)
    try:
        code = int(capture.get(cv2.CAP_PROP_FOURCC))
    finally:
        capture.release()
    fourcc = code.to_bytes(4, "little").decode("latin-1").lower()
    suffix = Path(video_path).suffix.lower()
    return suffix == ".webm" or (suffix in {".mp4", ".m4v", ".mov"} and fourcc in PLAYABLE_CODECS)


def playable_preview(video_path: str | None) -> str | None:
    """A copy of an upload the browser cannot play (AVI, mp4v, MJPG, ...) as VP8 WebM, at most PREVIEW_MAX_SIDE
    pixels a side and PREVIEW_MAX_S long; None when the upload plays as it is or cannot be read."""
    import cv2

    if not video_path or is_playable(video_path):
        return None
    capture = cv2.VideoCapture(video_path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps <= 240 else 25.0
    folder = VIDEO_FOLDERS.new()
    out, writer = Path(folder) / f"{Path(video_path).stem}_preview.webm", None
    try:
        for _ in range(int(fps * PREVIEW_MAX_S)):
            ok, frame = capture.read()
            if not ok:
                break
            scale = min(1.0, PREVIEW_MAX_SIDE / max(frame.shape[:2]))
            size = (round(frame.shape[1] * scale) // 2 * 2, round(frame.shape[0] * scale) // 2 * 2)  # even sides
            if writer is None:
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*PREVIEW_CODEC), fps, size)
                if not writer.isOpened():
                    return None
            writer.write(
                cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame[: size[1], : size[0]]
            )
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    return str(out) if writer is not None and out.is_file() else None


def track_rows(tracks: list[dict]) -> list[dict]:
    return [
        {"face": t["track_id"], "from_s": t["first_s"], "to_s": t["last_s"], "frames": t["frames"],
         "dominant": t["dominant"], "share": round(t["shares"][t["dominant"]], 3)}
        for t in tracks
    ]  # fmt: skip


# ---------------------------------------------------------------- live webcam

LIVE_SMOOTHING = 0.6  # default strength of the per-face moving average in the Live tab
LIVE_IDLE_S = 10  # a stream that sends no frame for this long is closed: its place goes to someone else
LIVE_MAX_STREAMS = 2  # open streams at once (2 CPU cores: one each); one more is told when to come back
LIVE_MAX_SIDE = 4096  # a webcam frame beyond this side is refused (no camera sends one; a forged request might)


class LiveStreams:
    """The open Live-tab streams, by session token, with the time each last sent a frame. A stream idle for
    `idle_s` is closed (its place freed); a new stream over `limit` is refused with a sentence saying when a place
    frees up, instead of waiting silently in Gradio's queue."""

    def __init__(self, limit: int = LIVE_MAX_STREAMS, idle_s: float = LIVE_IDLE_S, clock=time.monotonic):
        self.limit, self.idle_s, self.clock = limit, idle_s, clock
        self.last_frame: dict[str, float] = {}
        self.lock = threading.Lock()

    def admit(self, token: str) -> bool:
        """Record a frame of stream `token`: True when it was open, False when it opens now; raises UserInputError
        when `limit` others are open."""
        with self.lock:
            now = self.clock()
            self.close_idle(now)
            if token in self.last_frame or len(self.last_frame) < self.limit:
                was_open = token in self.last_frame
                self.last_frame[token] = now
                return was_open
            wait = min(self.idle_s - (now - last) for last in self.last_frame.values())
        raise UserInputError(
            f"{len(self.last_frame)} live streams are open (the most this server runs at once); try again in "
            f"{max(1, round(wait))} s or later, when one stops or stays idle for {self.idle_s:g} s."
        )

    def close_idle(self, now: float) -> None:
        for token, last in list(self.last_frame.items()):
            if now - last > self.idle_s:
                del self.last_frame[token]

    def release(self, token: str | None) -> None:
        with self.lock:
            self.last_frame.pop(token, None)

    def __len__(self) -> int:
        with self.lock:
            self.close_idle(self.clock())
            return len(self.last_frame)


LIVE_STREAMS = LiveStreams()
LIVE_MAX_ROWS = 100_000  # rows a browser session keeps (about 60 MB of dicts); later frames are not recorded


@dataclass
class LiveRows:
    """The rows of one browser session's Live tab, in the columns of `python -m fer_hf.predict --webcam --csv`
    (one per face per processed frame, one with empty face fields for a frame without a face). They outlive a
    stream (Stop, a new model or smoothing strength): only the Clear button empties them. Frames are numbered and
    timed from the first recorded one, so they keep counting up across streams."""

    label_names: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    frames: int = 0
    started: float | None = None  # perf_counter of the first recorded frame
    capped: bool = False  # LIVE_MAX_ROWS was reached: later frames were not recorded
    other_labels: bool = False  # the last frame came from a model with other classes: not recorded
    limit: int = LIVE_MAX_ROWS

    def add(self, frame, label_names: list[str], now: float) -> None:
        if not self.rows:
            self.label_names = list(label_names)
        if list(label_names) != self.label_names:  # another label set (FER+'s 8 classes) cannot share the columns
            self.other_labels = True
            return
        self.other_labels = False
        self.started = now if self.started is None else self.started
        timed = dataclasses.replace(frame, index=self.frames, time_s=round(now - self.started, 3))
        rows = frame_rows(LIVE_SOURCE, timed, self.label_names)
        if len(self.rows) + len(rows) > self.limit:
            self.capped = True
            return
        self.rows += rows
        self.frames += 1

    def clear(self) -> None:
        """Empty in place: a frame already on its way adds to the emptied rows, not to a copy the clear missed."""
        self.rows, self.frames, self.started, self.capped, self.other_labels = [], 0, None, False, False

    def note(self) -> str:
        if self.capped:
            return f"{len(self.rows):,} rows kept: the most one session keeps; save them as CSV and clear to go on"
        if self.other_labels:
            return f"{len(self.rows):,} rows kept; this model has other classes: clear the rows to record its frames"
        return f"{len(self.rows):,} rows kept"

    def write_csv(self, folder: str) -> str:
        """The rows as CSV in `folder` (staged, then renamed); the header alone when there are none."""
        path = Path(folder) / "live_rows.csv"
        staged = staging_path(path)
        with open(staged, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=csv_columns(self.label_names))
            writer.writeheader()
            writer.writerows(self.rows)
        return str(commit(staged, path))


@dataclass(frozen=True)
class _LiveSource:
    path: str = "webcam"
    kind: str = "stream"  # as `predict --webcam` writes it


LIVE_SOURCE = _LiveSource()
LIVE_CSV_FOLDERS = RecentFolders("fer_app_live_", VIDEO_FOLDERS_KEPT)


def live_rgb(frame: object) -> np.ndarray:
    """Whatever a webcam stream delivered -> (H, W, 3) uint8 RGB, or a UserInputError saying why it is no picture.
    Gray (H, W) and (H, W, 1) frames are repeated to RGB, RGBA loses its alpha, 16-bit values are scaled (65535 ->
    255, as uploads are), floats in [0, 1] are taken as fractions; a data URL or base64 string is decoded like an
    upload; anything else (a number, text, an empty or huge array) is refused."""
    if frame is None:
        raise UserInputError("The webcam sent no picture: allow the camera in the browser, then press Record.")
    if isinstance(frame, str):
        frame = _decode_frame_text(frame)
    if isinstance(frame, Image.Image):
        frame = np.asarray(as_displayed(frame).convert("RGB"))
    if not isinstance(frame, np.ndarray) or frame.dtype.kind not in "buif":
        kind = f"an array of {frame.dtype}" if isinstance(frame, np.ndarray) else f"a {type(frame).__name__}"
        raise UserInputError(f"The webcam frame is {kind}, not a picture (an image of RGB pixels expected).")
    if frame.ndim == 3 and frame.shape[2] in (1, 3, 4):
        frame = frame[..., :3] if frame.shape[2] > 1 else frame[..., 0]
    if (
        frame.ndim not in (2, 3)
        or frame.shape[2:] not in ((), (3,))
        or min(frame.shape[:2]) < 8
        or max(frame.shape[:2]) > LIVE_MAX_SIDE
    ):
        raise UserInputError(
            f"The webcam frame has shape {frame.shape}: expected (height, width) gray or (height, width, 3 or 4) "
            f"colour pixels, each side from 8 to {LIVE_MAX_SIDE}."
        )
    frame = _to_uint8(frame)
    return np.ascontiguousarray(np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    values = frame.astype(np.float64)
    if not np.isfinite(values).all():
        raise UserInputError("The webcam frame holds NaN or infinite values: not a picture.")
    if frame.dtype.kind == "f" and values.max(initial=0) <= 1.0:
        values = values * 255.0  # fractions, as float images usually are
    elif values.max(initial=0) > 255:
        values = values / 257.0  # 16-bit data, as `fer_hf.data.images.to_8bit` scales uploads
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _decode_frame_text(text: str) -> Image.Image:
    """A data URL (data:image/png;base64,...) or bare base64 -> the decoded image, read like an upload."""
    payload = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        data = base64.b64decode(payload, validate=True)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (ValueError, OSError, SyntaxError, binascii.Error):
        raise UserInputError(
            "The webcam frame is text that is not a base64-encoded picture (PNG, JPEG or WebP expected)."
        ) from None


@dataclass
class LiveSession:
    """One browser's webcam stream: the tracker and smoother carry over from frame to frame."""

    model_ref: str | None
    faces: VideoFaces
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # its place in LIVE_STREAMS
    frames: int = 0
    started: float = field(default_factory=time.perf_counter)
    last: float | None = None  # arrival of the previous frame
    fps: float = 0.0  # frames per second end to end (moving average over arrivals)
    busy_ms: float = 0.0  # processing time per frame (moving average)


@dataclass
class LiveOutput:
    annotated: np.ndarray | None
    current: list[dict]  # one row per face now: face (track id), emotion, probability (smoothed)
    speed: str
    session: LiveSession | None


def live_frame(
    catalogue: ModelCatalogue,
    frame: np.ndarray | None,
    model_ref: str | None,
    smoothing: float,
    session: LiveSession | None,
    streams: LiveStreams = LIVE_STREAMS,
    rows: LiveRows | None = None,
) -> LiveOutput:
    """One webcam frame (H, W, 3) RGB -> boxes numbered by track with smoothed labels, the current emotions and
    the measured speed; its rows are added to `rows`. A new model or smoothing strength starts a new session (new
    track ids)."""
    rgb = live_rgb(frame)
    start = time.perf_counter()
    predictor = catalogue.get(model_ref)
    if session is None or session.model_ref != model_ref or session.faces.config.smoothing != smoothing:
        if session is not None:
            streams.release(session.token)  # the same browser's stream goes on with new settings: one place
        session = LiveSession(model_ref, VideoFaces(predictor, "detect", TrackingConfig(smoothing=smoothing)))
    reopened = not streams.admit(session.token) and session.frames > 0  # closed while idle, then a frame came
    if reopened:  # its tracks are stale: the stream starts afresh in the place it was given again
        tracking = TrackingConfig(smoothing=smoothing)
        session = LiveSession(model_ref, VideoFaces(predictor, "detect", tracking), token=session.token)
    (result,) = session.faces.frames([(session.frames, start - session.started, rgb)])
    if rows is not None:
        rows.add(result, predictor.label_names, start)
    faces = result.faces
    annotated = draw_faces(rgb, [f.box for f in faces], faces, numbers=[f.track_id for f in faces], smoothed=True)
    current = [
        {"face": f.track_id, "emotion": f.smoothed_label, "probability": round(f.smoothed[f.smoothed_label], 3)}
        for f in sorted(faces, key=lambda f: f.track_id)
    ]
    _measure(session, start)
    speed = live_speed(session, len(faces)) + (f" · {rows.note()}" if rows is not None else "")
    if reopened:
        speed += f" · no frame came for over {streams.idle_s:g} s, so the stream was closed; it starts afresh"
    return LiveOutput(annotated, current, speed, session)


def _measure(session: LiveSession, start: float) -> None:
    busy = 1000 * (time.perf_counter() - start)
    session.busy_ms = busy if session.frames == 0 else 0.8 * session.busy_ms + 0.2 * busy
    if session.last is not None:
        rate = 1 / max(start - session.last, 1e-6)
        session.fps = rate if session.fps == 0 else 0.8 * session.fps + 0.2 * rate
    session.last, session.frames = start, session.frames + 1


def live_speed(session: LiveSession, faces: int) -> str:
    rate = f"{session.fps:.1f} frames/s end to end" if session.fps else "measuring"
    return f"{faces} face(s) · {rate} · {session.busy_ms:.0f} ms of work per frame · {session.frames} frames"


def sample_rate(video_path: str, fps: float) -> float:
    """The requested rate, lowered so that at most MAX_VIDEO_SAMPLES frames are classified."""
    if not fps or fps <= 0:
        raise UserInputError("Frames per second must be positive.")
    try:
        expected = VideoFrames(video_path, fps).expected
    except VideoLoadError as err:
        raise UserInputError(f"This file cannot be used as a video ({err}).") from err
    return fps * MAX_VIDEO_SAMPLES / expected if expected and expected > MAX_VIDEO_SAMPLES else fps


def frame_row(frame) -> dict:
    face = frame.faces[0] if frame.faces else None
    return {
        "time_s": frame.time_s,
        "faces": len(frame.faces),
        "emotion": face.label if face else "",
        "score": round(face.score, 3) if face else None,
    }


# ---------------------------------------------------------------- comparison


@dataclass
class ComparisonView:
    folder: Path
    table: str = ""  # Markdown table from fer_hf.compare
    charts: list[tuple[str, str]] = field(default_factory=list)  # (PNG path, caption)
    confusions: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # why something is missing


@dataclass
class BundledScores:
    """Every bundled model's own evaluation (its evaluation/metrics.json, written by fer_hf.evaluate): one table row
    and one bar per class each. FER+ models are scored on FER+ labels (8 classes, contempt included) of another
    split, so their row is marked as not like for like."""

    table: list[dict] = field(default_factory=list)  # model, data, split (n), classes, accuracy, macro-F1
    bars: list[dict] = field(default_factory=list)  # model, class, F1
    missing: list[str] = field(default_factory=list)  # bundled models without an evaluation here


def bundled_scores(models: Mapping = BUNDLED_MODELS) -> BundledScores:
    scores = BundledScores()
    for name, model in models.items():
        try:
            record = json.loads((Path(model.path) / "evaluation" / "metrics.json").read_text())
            per_class = {label: record["per_class"][label]["f1"] for label in record["labels"]}
        except (OSError, ValueError, KeyError, TypeError):
            scores.missing.append(name)
            continue
        data = Path(str(record.get("data", ""))).name or "?"
        scores.table.append(
            {"model": name, "data": data, "split (n)": f"{record.get('split')} ({record.get('split_size')})",
             "classes": len(per_class), "accuracy": round(record["accuracy"], 4),
             "macro-F1": round(record["macro_f1"], 4)}
        )  # fmt: skip
        scores.bars += [{"model": name, "class": label, "F1": round(f1, 4)} for label, f1 in per_class.items()]
    return scores


def comparison_folder(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env[COMPARISON_ENV]).expanduser() if env.get(COMPARISON_ENV) else DEFAULT_COMPARISON_DIR


def load_comparison(folder: Path) -> ComparisonView:
    """Read a `fer_hf.compare` output folder: comparison.md, its bar charts, and the confusion matrices of the
    compared evaluations (PNGs copied into the folder, or confusion_matrix.png next to each row's metrics file)."""
    view = ComparisonView(folder)
    table = folder / f"{COMPARISON_STEM}.md"
    if not table.is_file():
        view.note = (
            f"No comparison to show yet: `{table}` does not exist. Produce one with "
            f"`python -m fer_hf.compare EVAL_DIR... --output {folder}`, or point {COMPARISON_ENV} at such a folder."
        )
        return view
    view.table = table.read_text()
    pngs = sorted(folder.rglob("*.png"))
    view.charts = [(str(p), _caption(p, folder)) for p in pngs if "confusion" not in p.name]
    view.confusions = [(str(p), _caption(p, folder)) for p in pngs if "confusion" in p.name]
    if not view.confusions:  # a folder from before fer_hf.compare copied them: look beside each row's source
        view.confusions = source_confusions(folder / f"{COMPARISON_STEM}.json")
    if not view.confusions:
        view.note = "No confusion matrices found: copy the evaluations' confusion_matrix.png files into the folder."
    return view


def source_confusions(comparison_json: Path) -> list[tuple[str, str]]:
    """confusion_matrix.png beside each compared metrics file, when that folder exists on this machine."""
    try:
        rows = json.loads(comparison_json.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    found = []
    for row in rows:
        png = Path(str(row.get("source", ""))).parent / CONFUSION_FILE
        if png.is_file():
            found.append((str(png), f"{row.get('name', png.parent.name)}: confusion matrix"))
    return found


def _caption(path: Path, folder: Path) -> str:
    return str(path.relative_to(folder).with_suffix("")).replace("_", " ")


def examples(folder: Path = EXAMPLES_DIR) -> list[str]:
    """Bundled example photos: real FER2013 faces (fer_<label>.png) and a real photo (astronaut.jpg)."""
    return [str(p) for p in sorted(folder.iterdir()) if p.suffix.lower() in {".png", ".jpg", ".jpeg"}]
