"""Predict facial expressions on photos, folders and videos: find faces, crop them FER-like, classify in batches.

    python -m fer_hf.predict photo.jpg                     # the bundled default model
    python -m fer_hf.predict --model lite0 photo.jpg       # the bundled EfficientNet-Lite0, also offline
    python -m fer_hf.predict --model runs/cnn folder/ clip.mp4 --csv out.csv --annotate out/ --tta hflip
    python -m fer_hf.predict photo.jpg --detector haar      # OpenCV's Haar cascades instead of YuNet

Faces are found by YuNet (or Haar), turned so the eyes are level and cropped with FER2013's framing
(`fer_hf.faces`). Every face gets a number (1 = largest, the order of the JSON, the CSV and the annotated
image), a box, the detector's score and 5 landmarks (YuNet), a label and the probabilities of all classes. Preprocessing goes through the loaded
model's own image processor, so any family (CNN, ResNet, ViT, timm) works. A bad file is reported and skipped:
a batch never aborts because of one input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fer_hf.annotate import draw_faces
from fer_hf.cli import positive_int
from fer_hf.faces import (
    LANDMARK_NAMES,
    NO_CROP,
    DetectorConfig,
    DetectorError,
    Face,
    FaceDetector,
    ImageLoadError,
    add_detector_args,
    detector_config,
    load_image,
)
from fer_hf.loading import DEFAULT_MODEL, MODEL_HELP, LoadedModel, load_classifier, resolve_model_path
from fer_hf.outputs import OutputOverlapError, check_apart
from fer_hf.tracking import FaceTracker, Smoother, TrackingConfig
from fer_hf.tta import TTA_MODES, tta_logits

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


class VideoLoadError(ValueError):
    """A file that cannot be decoded as a video."""


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
        return "error" if self.error else ("ok" if self.faces else "no face")

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
    kind: str = "video"

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        return "ok" if any(f.faces for f in self.frames) else "no face"

    def summary(self) -> str:
        if self.error:
            return f"{self.path}: ERROR {self.error}"
        with_face = sum(bool(f.faces) for f in self.frames)
        top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.distribution.items(), key=lambda kv: -kv[1]) if v)
        tracks = "; ".join(f"face {t['track_id']}: {t['dominant']} ({t['frames']} frames)" for t in self.tracks)
        text = f"{self.path}: {len(self.frames)} frames sampled, {with_face} with a face; {top or 'no face found'}"
        return text + (f"; {tracks}" if tracks else "") + (f" (warning: {self.warning})" if self.warning else "")


Result = ImageResult | VideoResult


class Predictor:
    """A loaded classifier + face detector. predict_images / predict_video / classify share one batched path."""

    def __init__(
        self,
        model: str | Path | LoadedModel = DEFAULT_MODEL,
        *,
        tta: str = "none",
        detector: DetectorConfig | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        trust_remote_code: bool = False,
    ):
        if tta not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {tta!r}; choose one of {TTA_MODES}")
        self.detector = FaceDetector(detector)  # first: a missing detector file is reported before a model loads
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = load_classifier(model, trust_remote_code=trust_remote_code, device=device)
        self.tta, self.batch_size = tta, batch_size
        self.label_names = self.loaded.label_names

    def pixel_values(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Gray (S, S) uint8 crops -> (N, C, H, W) through the model's own image processor. The gray face is
        repeated as RGB: every processor accepts RGB (some reject 1 channel), and the CNN averages it back."""
        images = [Image.fromarray(np.repeat(c[..., None], 3, axis=-1)) for c in crops]
        return self.loaded.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Gray crops -> (N, K) probabilities (TTA-averaged when tta != 'none')."""
        if not crops:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        chunks = []
        for start in range(0, len(crops), self.batch_size):
            pixels = self.pixel_values(crops[start : start + self.batch_size])
            chunks.append(tta_logits(self.loaded.model, pixels, self.tta, self.batch_size).softmax(-1).numpy())
        return np.concatenate(chunks)

    def predict_faces(
        self, faces_per_image: Sequence[list[Face]], scales: Sequence[float]
    ) -> list[list[FacePrediction]]:
        """Classify the faces of several images in one batch; boxes go back to original pixels (/ scale)."""
        crops = [face.crop for faces in faces_per_image for face in faces]
        probs = iter(self.classify(crops))
        return [
            [self._prediction(face, next(probs), scale) for face in faces]
            for faces, scale in zip(faces_per_image, scales, strict=True)
        ]

    def _prediction(self, face: Face, probs: np.ndarray, scale: float) -> FacePrediction:
        best = int(probs.argmax())
        return FacePrediction(
            box=tuple(int(round(v / scale)) for v in face.box),
            label=self.label_names[best],
            score=float(probs[best]),
            probabilities={name: float(p) for name, p in zip(self.label_names, probs, strict=True)},
            source=face.source,
            detector_score=None if face.score is None else round(face.score, 4),
            landmarks=None if face.landmarks is None else (face.landmarks.astype(float) / scale).round(1).tolist(),
        )

    def predict_images(
        self, paths: Sequence[str | Path], *, crop_mode: str = "auto", annotate_dir: str | Path | None = None
    ) -> list[ImageResult]:
        """One ImageResult per path, in order. Images are read, searched and classified `batch_size` at a time."""
        results = []
        bar = tqdm(total=len(paths), desc="images", unit="img", disable=len(paths) < 2, leave=False)
        for start in range(0, len(paths), self.batch_size):
            results += self._image_chunk(paths[start : start + self.batch_size], crop_mode, annotate_dir)
            bar.update(min(self.batch_size, len(paths) - start))
        bar.close()
        return results

    def _image_chunk(self, paths, crop_mode, annotate_dir) -> list[ImageResult]:
        results, loaded = [], []
        for path in paths:
            result = ImageResult(path=str(path))
            try:
                rgb, scale = load_image(path, self.detector.config)
                result.size = (round(rgb.shape[1] / scale), round(rgb.shape[0] / scale))
                loaded.append((result, rgb, scale, self.detector.faces(rgb, crop_mode)))
            except ImageLoadError as err:
                result.error = str(err).removeprefix(f"{path}: ")
            results.append(result)
        predictions = self.predict_faces([item[3] for item in loaded], [item[2] for item in loaded])
        for (result, rgb, _scale, faces), preds in zip(loaded, predictions, strict=True):
            result.faces = preds
            if annotate_dir is not None:
                result.annotated = str(save_annotated(rgb, faces, preds, annotate_dir, Path(result.path).stem))
        return results

    def predict_video(
        self,
        path: str | Path,
        *,
        fps: float = 2.0,
        crop_mode: str = "detect",
        plot_dir: str | Path | None = None,
        tracking: TrackingConfig | None = None,
    ) -> VideoResult:
        """Sample `fps` frames per second, find and track the faces, classify them in batches, smooth each track's
        probabilities, and summarise per track (+ timeline plots). A video that stops decoding early keeps every
        frame read up to there, with a warning."""
        tracking = tracking or TrackingConfig()
        result = VideoResult(path=str(path), sample_fps=fps)
        try:
            frames = VideoFrames(path, fps)
        except VideoLoadError as err:
            result.error = str(err)
            return result
        result.native_fps = frames.native_fps
        follow = VideoFaces(self, crop_mode, tracking)
        for chunk in _chunks(
            tqdm(frames, total=frames.expected, desc=Path(path).name, unit="frame", leave=False), self.batch_size
        ):
            result.frames += follow.frames(chunk)
        if not result.frames:
            result.error = "not a readable video: no frame could be decoded"
            return result
        result.warning = frames.stopped_early()
        result.distribution = label_distribution(result.frames, self.label_names)
        result.tracks = track_summaries(result.frames, self.label_names)
        if plot_dir is not None:
            from fer_hf.video_plots import plot_overview, plot_track

            names, stem = self.label_names, Path(path).stem
            # Fresh names: a file already there (an earlier run's, a video of the same name's) is never replaced.
            result.plot = str(plot_overview(result, names, fresh_path(plot_dir, f"{stem}_timeline")))
            result.track_plots = [
                str(plot_track(result, t["track_id"], names, fresh_path(plot_dir, f"{stem}_face{t['track_id']}")))
                for t in result.tracks
            ]
        return result


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


class VideoFrames:
    """Iterate (frame index, time in s, RGB (H, W, 3)) over frames sampled at `fps` (all frames when fps <= 0)."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), fps
        if not self.path.is_file():
            raise VideoLoadError("no such file")
        capture = cv2.VideoCapture(str(self.path))
        opened = capture.isOpened()
        fps_prop, count = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
        capture.release()
        if not opened:
            raise VideoLoadError("not a readable video (OpenCV could not open it)")
        # Some containers carry no frame rate: assume 25 so timestamps stay meaningful.
        self.native_fps = float(fps_prop) if fps_prop and np.isfinite(fps_prop) and fps_prop > 0 else 25.0
        step = self.native_fps / fps if fps > 0 else 1.0
        self.expected = max(1, int(count / max(step, 1.0))) if count and count > 0 else None
        self.frame_count = int(count) if count and count > 0 else None  # what the container announces
        self.frames_read = 0

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        capture = cv2.VideoCapture(str(self.path))
        index, next_time = 0, 0.0
        try:
            while capture.grab():  # grab() skips decoding colour for frames we do not keep
                time_s = index / self.native_fps
                if self.fps <= 0 or time_s + 1e-6 >= next_time:
                    ok, frame = capture.retrieve()
                    if ok:
                        yield index, time_s, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    next_time += 1.0 / self.fps if self.fps > 0 else 0.0
                index += 1
        finally:
            self.frames_read = index
            capture.release()

    def stopped_early(self) -> str | None:
        """A sentence when decoding ended well before the announced frame count (a cut or corrupt file)."""
        if self.frame_count and self.frames_read < 0.95 * self.frame_count - 1:
            return (
                f"decoding stopped at frame {self.frames_read} of the {self.frame_count} announced; "
                "the results up to there are kept"
            )
        return None


def _chunks(items, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
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


def save_annotated(rgb: np.ndarray, faces: Sequence[Face], preds: Sequence[FacePrediction], folder, stem: str) -> Path:
    """The image with numbered boxes, labels and landmarks (`draw_faces`), as PNG; never overwrites an earlier
    file with the same stem."""
    canvas = draw_faces(rgb, [f.box for f in faces], preds, [f.landmarks for f in faces])
    out = fresh_path(folder, f"{stem}_annotated")
    cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return out


def fresh_path(folder: str | Path, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem_2.png, stem_3.png, ... when it is taken: the PNGs predict writes never replace a
    file (the folder is created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out, n = folder / f"{stem}{suffix}", 1
    while out.exists():
        n += 1
        out = folder / f"{stem}_{n}{suffix}"
    return out


# ---------------------------------------------------------------- inputs, outputs and the command line


def expand_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, str]]:
    """Paths -> [(path, kind)], kind: image | video | missing | empty. Folders are searched recursively for
    known image/video extensions; a named file of unknown extension is tried as an image, then as a video."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and _kind(p) and not p.name.startswith("."))
            found += [(str(p), _kind(p)) for p in files] or [(str(item), "empty")]
        elif item.is_file():
            found.append((str(item), _kind(item) or "image"))
        else:
            found.append((str(item), "missing"))
    return found


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


def predict_inputs(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    *,
    crop_mode: str = "auto",
    annotate_dir=None,
    **video,
) -> list[Result]:
    """Images, folders and videos -> one result per file, in input order. `video`: predict_video's options (fps,
    plot_dir, tracking)."""
    entries = expand_inputs(inputs)
    images = [path for path, kind in entries if kind == "image"]
    by_path = dict(
        zip(images, predictor.predict_images(images, crop_mode=crop_mode, annotate_dir=annotate_dir), strict=True)
    )
    results: list[Result] = []
    for path, kind in entries:
        if kind == "image":
            results.append(_retry_as_video(predictor, by_path[path], crop_mode, video))
        elif kind == "video":
            results.append(predictor.predict_video(path, crop_mode=_video_mode(crop_mode), **video))
        else:
            reason = "no such file or folder" if kind == "missing" else "folder holds no image or video files"
            results.append(ImageResult(path=path, error=reason))
    return results


def _video_mode(crop_mode: str) -> str:
    return "detect" if crop_mode == "auto" else crop_mode  # a small video frame is still a scene, not a face


def _retry_as_video(predictor: Predictor, result: ImageResult, crop_mode: str, options: dict) -> Result:
    """A file of unknown extension that PIL cannot read may still be a video; otherwise keep a clear error."""
    if not result.error or _kind(Path(result.path)) == "image":
        return result
    video = predictor.predict_video(result.path, crop_mode=_video_mode(crop_mode), **options)
    if video.error is None:
        return video
    result.error = "not an image or a video (neither PIL nor OpenCV can read it)"
    return result


def predict_images(
    paths: Sequence[str | Path], model: str | Path | LoadedModel | Predictor = DEFAULT_MODEL, **kwargs
) -> list[ImageResult]:
    """Convenience: `Predictor(model).predict_images(paths, crop_mode=..., annotate_dir=...)`."""
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    return predictor.predict_images(paths, **kwargs)


def predict_video(
    path: str | Path, model: str | Path | LoadedModel | Predictor = DEFAULT_MODEL, **kwargs
) -> VideoResult:
    """Convenience: `Predictor(model).predict_video(path, fps=..., crop_mode=..., plot_dir=...)`."""
    predictor = model if isinstance(model, Predictor) else Predictor(model)
    return predictor.predict_video(path, **kwargs)


def result_rows(results: Sequence[Result], label_names: Sequence[str]) -> list[dict]:
    """Flat CSV rows: one per face (images) or per sampled frame and face (videos); one row for a file or frame
    without a face or with an error, so nothing disappears silently."""
    rows = []
    for result in results:
        base = {"path": result.path, "kind": result.kind, "frame": "", "time_s": "", "status": result.status}
        base["error"] = result.error or ""
        if isinstance(result, ImageResult):
            rows += _face_rows(base, result.faces, label_names)
        elif result.error or not result.frames:
            rows += _face_rows(base, [], label_names)
        else:
            for frame in result.frames:
                rows += _face_rows({**base, "frame": frame.index, "time_s": frame.time_s}, frame.faces, label_names)
    return rows


LANDMARK_COLUMNS = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]


def _face_rows(base: dict, faces: Sequence[FacePrediction], label_names: Sequence[str]) -> list[dict]:
    """One row per face, numbered from 1 like the annotated image; one row of empty face fields when none."""
    columns = ["face", "track_id", "x", "y", "w", "h", "detector_score", *LANDMARK_COLUMNS, "label", "score"]
    smoothed_columns = ["smoothed_label", *(f"smoothed_p_{n}" for n in label_names)]
    if not faces:
        return [{**base, **dict.fromkeys(columns, ""), **{f"p_{n}": "" for n in label_names},
                 **dict.fromkeys(smoothed_columns, "")}]  # fmt: skip
    return [
        {
            **base,
            "face": i,
            "track_id": "" if face.track_id is None else face.track_id,
            **dict(zip("xywh", face.box, strict=True)),
            "detector_score": "" if face.detector_score is None else face.detector_score,
            **dict(zip(LANDMARK_COLUMNS, sum(face.landmarks or [], []) or [""] * 10, strict=True)),
            "label": face.label,
            "score": round(face.score, 5),
            **{f"p_{n}": round(face.probabilities[n], 5) for n in label_names},
            "smoothed_label": face.smoothed_label or "",
            **{f"smoothed_p_{n}": face.smoothed[n] if face.smoothed else "" for n in label_names},
        }
        for i, face in enumerate(faces, 1)
    ]


def write_csv(results: Sequence[Result], label_names: Sequence[str], path: str | Path) -> None:
    rows = result_rows(results, label_names)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["path"])
        writer.writeheader()
        writer.writerows(rows)


def write_json(results: Sequence[Result], path: str | Path) -> None:
    records = [{**asdict(r), "status": r.status} for r in results]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(records, indent=2))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.predict",
        description="Find faces in images, folders or videos and predict their facial expressions.",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image files, folders (searched recursively), videos"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument("--json", metavar="OUT", help="write all results as JSON")
    parser.add_argument("--csv", metavar="OUT", help="write one row per face (per frame and face for videos)")
    parser.add_argument("--annotate", metavar="DIR", help="write copies of the images with boxes and labels")
    parser.add_argument(
        "--plot-dir",
        metavar="DIR",
        help="write a timeline PNG per video and one per face in it here (default: no plots)",
    )
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation")
    crop = parser.add_mutually_exclusive_group()
    crop.add_argument("--cropped", action="store_true", help="inputs are already-cropped faces: no detection")
    crop.add_argument("--detect", action="store_true", help="always detect, even in small images")
    parser.add_argument("--fps", type=float, default=2.0, help="video frames sampled per second (0: every frame)")
    video = parser.add_argument_group("videos: tracking and smoothing")
    defaults = TrackingConfig()
    video.add_argument(
        "--detect-every", type=int, default=defaults.detect_every, help="detect on every k-th sampled frame"
    )
    video.add_argument(
        "--max-lost", type=int, default=defaults.max_lost, help="sampled frames a face may vanish and keep its id"
    )
    video.add_argument(
        "--smoothing", type=float, default=defaults.smoothing, help="moving-average strength per face (0: off)"
    )
    parser.add_argument("--batch-size", type=positive_int, default=64, help="faces per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom code from a Hub model")
    add_detector_args(parser)
    from fer_hf import sharding  # --data, --resume, --shard-size: `accelerate launch -m fer_hf.predict`

    sharding.add_shard_args(parser)
    return sharding.check_shard_args(parser, parser.parse_args(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 when every input was read (faces or not), 1 when some input was unusable, 2 for a bad model."""
    args = parse_args(argv)
    from fer_hf import sharding

    if sharding.takes_over(args):  # several processes, --data, --resume or a parquet table
        return sharding.main(args)
    try:
        check_outputs(args)
    except OutputOverlapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        detector = detector_config(args)
        tracking = TrackingConfig(args.detect_every, args.max_lost, args.smoothing)
    except ValueError as err:
        print(f"error: face detector or tracking options: {err}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(
            args.model,
            tta=args.tta,
            detector=detector,
            batch_size=args.batch_size,
            device=args.device,
            trust_remote_code=args.trust_remote_code,
        )
    except DetectorError as err:
        print(f"error: face detector: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # ModelLoadError is a ValueError; transformers raises OSError/ValueError
        print(f"error: could not load --model {args.model}: {err}", file=sys.stderr)
        return 2
    crop_mode = "cropped" if args.cropped or args.detector == "none" else "detect" if args.detect else "auto"
    results = predict_inputs(
        predictor,
        args.inputs,
        crop_mode=crop_mode,
        annotate_dir=args.annotate,
        fps=args.fps,
        plot_dir=args.plot_dir,  # only where asked: no PNGs in the current folder unless it is named
        tracking=tracking,
    )
    for result in results:
        print(result.summary() + (f" -> {result.plot}" if getattr(result, "plot", None) else ""))
    if args.csv:
        write_csv(results, predictor.label_names, args.csv)
    if args.json:
        write_json(results, args.json)
    return 1 if any(r.status == "error" for r in results) else 0


OUTPUT_FLAGS = {"csv": "--csv", "json": "--json", "annotate": "--annotate", "plot_dir": "--plot-dir"}


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, an output that is, contains or lies inside an input (an image, video or
    folder to predict on, the --model folder, the --yunet-model file): `--csv clip.avi` would replace the video, and
    `--annotate photos/` would mix the copies with the photos (and a later run would predict on them). --csv and
    --json must differ too: the second would replace the first."""
    model = args.model
    with contextlib.suppress(ValueError):  # a bad --model is reported when it is loaded
        model = resolve_model_path(args.model)
    inputs = [*args.inputs, model, args.yunet_model]
    for key, flag in OUTPUT_FLAGS.items():
        output = getattr(args, key)
        if output is not None:
            folder = key in ("annotate", "plot_dir")
            fix = "choose a folder outside it" if folder else "write it outside the inputs"
            check_apart(output, *inputs, flag=flag, fix=fix)
    if args.csv and args.json and Path(args.csv).expanduser().resolve() == Path(args.json).expanduser().resolve():
        raise OutputOverlapError(
            f"--csv and --json are both {args.csv}: the JSON would replace the CSV; give two files"
        )


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
