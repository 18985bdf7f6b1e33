"""What `fer_hf.predict` returns, and how sampled video frames become it.

FacePrediction (one face), ImageResult (a photo), FrameResult / VideoResult (a video or a live stream), and VideoFaces:
frames -> track ids (fer_hf.inference.tracking), smoothed probabilities and per-frame results, one chunk at a time. Imported
from here by predict (which re-exports every name), the app and fer_hf.analyze.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fer_hf.inference.faces import NO_CROP, Face
from fer_hf.inference.tracking import FaceTracker, Smoother, TrackingConfig

if TYPE_CHECKING:
    from fer_hf.inference.predictor import Predictor


@dataclass
class FacePrediction:
    box: tuple[int, int, int, int]  # (x, y, w, h) in original image / frame pixels
    label: str
    score: float  # probability of `label`
    probabilities: dict[str, float]  # every class, in the model's label order; sums to 1
    source: str  # detector that found the face ("yunet", a Haar cascade name), or "cropped"
    detector_score: float | None = None  # YuNet's confidence; None for Haar and cropped faces
    landmarks: list[list[float]] | None = None  # 5 (x, y) in LANDMARK_NAMES order, original pixels; YuNet only
    track_id: int | None = None  # videos: the same number while it is the same face
    smoothed: dict[str, float] | None = None  # videos: the track's moving average of `probabilities`
    smoothed_label: str | None = None  # videos: the most probable class of `smoothed`


@dataclass
class ImageResult:
    path: str
    faces: list[FacePrediction] = field(default_factory=list)  # largest first
    error: str | None = None  # why the file could not be used
    size: tuple[int, int] | None = None  # (width, height) of the original image
    annotated: str | None = None  # path of the annotated copy, with --annotate
    kind: str = "image"

    @property
    def status(self) -> str:
        return "error" if self.error else ("ok" if self.faces else "no_face")

    def summary(self) -> str:
        if self.error:
            return f"{self.path}: ERROR {self.error}"
        if not self.faces:
            return f"{self.path}: no face found"
        faces = "; ".join(f"{i}: {f.label} {f.score:.2f} at {f.box}" for i, f in enumerate(self.faces, 1))
        return f"{self.path}: {len(self.faces)} face(s): {faces}"


@dataclass
class FrameResult:
    index: int  # frame number in the video
    time_s: float
    faces: list[FacePrediction] = field(default_factory=list)  # largest first

    @property
    def status(self) -> str:
        return "ok" if self.faces else "no_face"


@dataclass
class VideoResult:
    path: str
    frames: list[FrameResult] = field(default_factory=list)  # the sampled frames, in order
    error: str | None = None
    native_fps: float | None = None
    sample_fps: float | None = None
    distribution: dict[str, float] = field(default_factory=dict)  # share of face frames per predicted label
    tracks: list[dict] = field(default_factory=list)  # per track: first/last time, frames, dominant, shares
    plot: str | None = None  # overview PNG (every track over time)
    track_plots: list[str] = field(default_factory=list)  # one timeline PNG per track
    warning: str | None = None  # e.g. decoding stopped early: what was computed up to there is kept
    kind: str = "video"  # or "stream" (--webcam)
    time_source: str = "pts"  # where frame times come from: "pts", or "index/fps" / "wall clock" without them
    annotated: str | None = None  # --annotate OUT.mp4: the annotated video
    thumbnails: list[str] = field(default_factory=list)  # --thumbnails DIR: one crop per track

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "ok" if any(f.faces for f in self.frames) else "no_face"

    def summary(self) -> str:
        if self.error:
            return f"{self.path}: ERROR {self.error}"
        with_face = sum(bool(f.faces) for f in self.frames)
        top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.distribution.items(), key=lambda kv: -kv[1]) if v)
        tracks = "; ".join(f"face {t['track_id']}: {t['dominant']} ({t['frames']} frames)" for t in self.tracks)
        text = f"{self.path}: {len(self.frames)} frames sampled, {with_face} with a face; {top or 'no face found'}"
        return text + (f"; {tracks}" if tracks else "") + (f" (warning: {self.warning})" if self.warning else "")


Result = ImageResult | VideoResult


class VideoFaces:
    """Sampled frames -> FrameResults with track ids and smoothed probabilities, one chunk at a time (the tracker
    and smoother carry over from chunk to chunk). Detection runs on every `detect_every`-th frame; in between,
    each face seen last is cropped where the tracker expects it (constant velocity)."""

    def __init__(self, predictor: Predictor, crop_mode: str, tracking: TrackingConfig):
        self.predictor, self.crop_mode, self.config = predictor, crop_mode, tracking
        self.tracker = FaceTracker(max_lost=tracking.max_lost)
        self.smoother = Smoother(tracking.smoothing)
        self.count = 0  # sampled frames so far

    def frames(self, chunk: Sequence[tuple[int, float, np.ndarray]]) -> list[FrameResult]:
        found = [self._faces(rgb) for _, _, rgb in chunk]  # [(faces, track ids)] per frame, in order
        predictions = self.predictor.predict_faces([faces for faces, _ in found], [1.0] * len(chunk))
        results = []
        for (index, time_s, _), (_, ids), preds in zip(chunk, found, predictions, strict=True):
            for pred, track_id in zip(preds, ids, strict=True):
                probs = np.array([pred.probabilities[n] for n in self.predictor.label_names])
                smoothed = self.smoother(track_id, probs)
                pred.track_id, pred.smoothed_label = track_id, self.predictor.label_names[int(smoothed.argmax())]
                pred.smoothed = {
                    n: round(float(p), 5) for n, p in zip(self.predictor.label_names, smoothed, strict=True)
                }
            results.append(FrameResult(index, round(time_s, 3), preds))
        return results

    def _faces(self, rgb: np.ndarray) -> tuple[list[Face], list[int]]:
        detector = self.predictor.detector
        self.tracker.advance()
        carried = self.tracker.predict() if self.count % self.config.detect_every else []
        self.count += 1
        if self.crop_mode == "cropped" or detector.config.detector == "none":
            faces = detector.faces(rgb, "cropped")
            return faces, self.tracker.update([f.box for f in faces])
        if carried:  # a frame between detections: the faces found last, where they should be now
            faces = [detector.crop(rgb, Face(box, NO_CROP, "tracked", None, points)) for _, box, points in carried]
            return faces, [track_id for track_id, _, _ in carried]
        faces = [detector.crop(rgb, face) for face in detector.detect(rgb)]
        return faces, self.tracker.update([f.box for f in faces], [f.landmarks for f in faces])


def _chunks(items, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


FRAME_BYTES = 256 * 2**20  # the decoded frames one video batch may hold: 2 frames of 8K, 64 of 720p


def frame_chunks(frames, size: int, max_bytes: int = FRAME_BYTES) -> Iterator[list]:
    """Video frames (index, time, rgb (H, W, 3)) in batches of at most `size` frames and `max_bytes` of pixels (at
    least one frame): 64 frames of 8K video held at once took 6 GB."""
    chunk, held = [], 0
    for frame in frames:
        chunk.append(frame)
        held += frame[2].nbytes
        if len(chunk) == size or held >= max_bytes:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def track_summaries(frames: Sequence[FrameResult], label_names: Sequence[str]) -> list[dict]:
    """Per track, in order of first appearance: first/last time (s), sampled frames seen, the dominant (smoothed)
    emotion and the share of its frames per emotion."""
    seen: dict[int, list[tuple[float, str]]] = {}
    for frame in frames:
        for face in frame.faces:
            if face.track_id is not None:
                seen.setdefault(face.track_id, []).append((frame.time_s, face.smoothed_label or face.label))
    summaries = []
    for track_id, rows in seen.items():
        labels = [label for _, label in rows]
        shares = {name: round(labels.count(name) / len(labels), 4) for name in label_names}
        summaries.append(
            {"track_id": track_id, "first_s": rows[0][0], "last_s": rows[-1][0], "frames": len(rows),
             "dominant": max(shares, key=shares.get), "shares": shares}
        )  # fmt: skip
    return summaries


def label_distribution(frames: Sequence[FrameResult], label_names: Sequence[str]) -> dict[str, float]:
    """Share of the frames with a face whose largest face got each label (0 everywhere if no face)."""
    labels = [frame.faces[0].label for frame in frames if frame.faces]
    return {name: (labels.count(name) / len(labels) if labels else 0.0) for name in label_names}
