"""The predictor behind `python -m fer_hf.predict`, `fer_hf.analyze`, the app and sharded runs: find faces, crop them
FER-like, classify them in batches (ONNX or torch, `fer_hf.inference.backend`), and the inputs it takes (photos,
folders, videos, animated images), with the check that no output replaces an input."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fer_hf.data.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, is_animated
from fer_hf.evaluation.tta import TTA_MODES, tta_logits
from fer_hf.inference.backend import inference_model
from fer_hf.inference.faces import (
    DetectorConfig,
    Face,
    FaceDetector,
    ImageLoadError,
    load_image,
)
from fer_hf.inference.predictions import (  # noqa: F401  (re-exported: the app and the tests import them from predict)
    FacePrediction,
    FrameResult,
    ImageResult,
    Result,
    VideoFaces,
    VideoResult,
    _chunks,
    frame_chunks,
    label_distribution,
    track_summaries,
)
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.inference.video_io import (  # noqa: F401  (VideoFrames, VideoLoadError: re-exported, the app imports them here)
    StreamFrames,
    VideoFrames,
    VideoLoadError,
    check_fps,
    sample_fps,
)
from fer_hf.inference.writers import (  # noqa: F401  (re-exported: the names predict always had)
    LANDMARK_COLUMNS,
    CsvRows,
    Thumbnails,
    VideoAnnotator,
    fresh_path,
    result_rows,
    save_annotated,
    write_csv,
    write_json,
)
from fer_hf.models.loading import DEFAULT_MODEL, LoadedModel, load_classifier, resolve_model_path
from fer_hf.outputs import OutputOverlapError, check_apart


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
        backend: str | None = None,
    ):
        """backend: 'auto' (None: $FER_HF_BACKEND, else auto), 'onnx' or 'torch' (`fer_hf.loading.inference_model`).
        `loaded.model` stays the torch model whichever runs the faces: explanations need it."""
        if tta not in TTA_MODES:
            raise ValueError(f"unknown TTA mode {tta!r}; choose one of {TTA_MODES}")
        self.detector = FaceDetector(detector)  # first: a missing detector file is reported before a model loads
        if isinstance(model, LoadedModel):
            self.loaded = model
        else:
            self.loaded = load_classifier(model, trust_remote_code=trust_remote_code, device=device)
        self.tta, self.batch_size = tta, batch_size
        self.label_names = self.loaded.label_names
        device = str(next(self.loaded.model.parameters(), torch.zeros(0)).device)  # where the model was put
        self.backend, self.model = inference_model(self.loaded, backend, device)
        # The export's own numpy preprocessing is used where it gives the processor's numbers (see classify).
        runtime = getattr(self.model, "runtime", None)
        self._runtime = (
            runtime if runtime is not None and _rescales_and_normalises(self.loaded.image_processor) else None
        )

    def pixel_values(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """Gray (S, S) uint8 crops -> (N, C, H, W) through the model's own image processor. The gray face is
        repeated as RGB: every processor accepts RGB (some reject 1 channel), and the CNN averages it back."""
        images = [Image.fromarray(np.repeat(c[..., None], 3, axis=-1)) for c in crops]
        return self.loaded.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Gray crops -> (N, K) probabilities (TTA-averaged when tta != 'none')."""
        if not crops:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        runtime = self._runtime
        if runtime is not None and self.tta in ("none", "hflip") and _at_size(crops, int(runtime.spec["size"])):
            # The export's own numpy preprocessing: the same numbers as the image processor's rescale + normalise
            # for crops already at the model's size, without PIL images and torch tensors (0.7 ms a photo).
            return runtime.classify(crops, hflip=self.tta == "hflip")
        chunks = []
        for start in range(0, len(crops), self.batch_size):
            pixels = self.pixel_values(crops[start : start + self.batch_size])
            chunks.append(tta_logits(self.model, pixels, self.tta, self.batch_size).softmax(-1).numpy())
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

    def predict_arrays(self, images: Sequence[np.ndarray], *, crop_mode: str = "auto") -> list[list[FacePrediction]]:
        """RGB uint8 (H, W, 3) arrays -> their faces, classified in one batch per `batch_size` images. Arrays larger
        than the detector's work size are searched downscaled, as files are; boxes are in the array's pixels."""
        results: list[list[FacePrediction]] = []
        limit = self.detector.config.work_max_side
        for start in range(0, len(images), self.batch_size):
            found, scales = [], []
            for rgb in images[start : start + self.batch_size]:
                scale = min(1.0, limit / max(rgb.shape[:2]))
                small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
                found.append(self.detector.faces(small, crop_mode))
                scales.append(scale)
            results += self.predict_faces(found, scales)
        return results

    def predict_video(
        self,
        path: str | Path,
        *,
        fps: float = 2.0,
        crop_mode: str = "detect",
        plot_dir: str | Path | None = None,
        tracking: TrackingConfig | None = None,
        annotate: str | Path | None = None,
        thumbnails: str | Path | None = None,
    ) -> VideoResult:
        """Sample `fps` frames per second of presentation time (0: every frame), find and track the faces, classify
        them in batches, smooth each track's probabilities, and summarise per track (+ timeline plots with
        `plot_dir`, the annotated video with `annotate` (a .mp4/.avi file), one crop per track into `thumbnails`).
        A video that stops decoding early keeps every frame read up to there, with a warning."""
        check_fps(fps)
        result = VideoResult(path=str(path), sample_fps=fps)
        try:
            frames = VideoFrames(path, fps)
        except VideoLoadError as err:
            result.error = str(err)
            return result
        result.native_fps = frames.native_fps
        sinks = video_sinks(annotate, thumbnails, fps or frames.native_fps, Path(path).stem)
        progress = tqdm(frames, total=frames.expected, desc=Path(path).name, unit="frame", leave=False)
        self._follow(result, progress, crop_mode, tracking, sinks, self.batch_size)
        result.time_source = frames.time_source
        if not result.frames:
            result.error = "not a readable video: no frame could be decoded"
            return result
        result.warning = frames.stopped_early()
        self._summarise(result, plot_dir)
        return result

    def predict_stream(
        self,
        frames: StreamFrames,
        *,
        crop_mode: str = "detect",
        tracking: TrackingConfig | None = None,
        sinks: Sequence = (),
        plot_dir: str | Path | None = None,
    ) -> VideoResult:
        """A camera or stream (`fer_hf.video_io.StreamFrames`), one frame at a time (no batching delay), until it
        ends, its `seconds` are read or Ctrl-C: an interrupt ends the loop, the sinks (CsvRows, VideoAnnotator,
        Thumbnails) are closed, and the result says it was interrupted in its warning."""
        result = VideoResult(path=str(frames.path), sample_fps=frames.fps, kind="stream", native_fps=frames.native_fps)
        try:
            self._follow(result, frames, crop_mode, tracking, sinks, 1)
        except KeyboardInterrupt:
            result.warning = f"stopped by Ctrl-C after {len(result.frames)} sampled frames; the files are complete"
        result.time_source = frames.time_source
        self._summarise(result, plot_dir)
        return result

    def _follow(self, result: VideoResult, frames, crop_mode, tracking, sinks: Sequence, batch: int) -> None:
        """Frames -> result.frames through VideoFaces; each frame goes to every sink; the sinks are closed (files
        renamed into place) whatever ends the loop."""
        follow = VideoFaces(self, crop_mode, tracking or TrackingConfig())
        try:
            for chunk in frame_chunks(frames, batch):
                for frame, (_, _, rgb) in zip(follow.frames(chunk), chunk, strict=True):
                    result.frames.append(frame)
                    for sink in sinks:
                        sink.frame(result, frame, rgb)
        finally:
            for sink in sinks:
                sink.close()
                if isinstance(sink, VideoAnnotator) and sink.frames:
                    result.annotated = str(sink.path)
                elif isinstance(sink, Thumbnails):
                    result.thumbnails = [str(p) for p in sink.written]

    def _summarise(self, result: VideoResult, plot_dir) -> None:
        result.distribution = label_distribution(result.frames, self.label_names)
        result.tracks = track_summaries(result.frames, self.label_names)
        if plot_dir is not None and result.frames:
            from fer_hf.inference.video_plots import plot_overview, plot_track

            names, stem = self.label_names, safe_stem(result.path)
            # Fresh names: a file already there (an earlier run's, a video of the same name's) is never replaced.
            result.plot = str(plot_overview(result, names, fresh_path(plot_dir, f"{stem}_timeline")))
            result.track_plots = [
                str(plot_track(result, t["track_id"], names, fresh_path(plot_dir, f"{stem}_face{t['track_id']}")))
                for t in result.tracks
            ]


def _at_size(crops: Sequence[np.ndarray], size: int) -> bool:
    return all(crop.shape == (size, size) for crop in crops)


def _rescales_and_normalises(processor) -> bool:
    """A processor that, on an image already at its size, only rescales by 1/255 and normalises (the package's
    models' ViTImageProcessor): what the export's numpy preprocessing does. Not a timm wrapper, a centre crop or
    another rescale, which the export's {size, mean, std} does not describe."""
    return (
        getattr(processor, "data_config", None) is None
        and bool(getattr(processor, "do_rescale", False))
        and abs(float(getattr(processor, "rescale_factor", 0) or 0) - 1 / 255) < 1e-9
        and bool(getattr(processor, "do_normalize", False))
        and not getattr(processor, "do_center_crop", False)
    )


def safe_stem(source: str) -> str:
    """A file name's stem; for a camera index or URL, something safe in a file name."""
    stem = Path(source).stem if Path(source).is_file() else f"stream_{source}"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:60]


def video_sinks(annotate, thumbnails, fps: float, stem: str) -> list:
    """The per-frame writers a video asks for: the annotated video (a file, or DIR/STEM_annotated.mp4 when
    `annotate` is a folder) and the per-track thumbnails."""
    sinks: list = []
    if annotate is not None:
        target = Path(annotate)
        if target.suffix.lower() not in VIDEO_SUFFIXES:
            target = fresh_path(target, f"{stem}_annotated", ".mp4")
        sinks.append(VideoAnnotator(target, fps))
    if thumbnails is not None:
        sinks.append(Thumbnails(thumbnails, stem))
    return sinks


VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi")


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
    if suffix in ANIMATED_SUFFIXES and is_animated(path):
        return "video"  # every frame read with its time, like a short clip (OpenCV decodes GIFs as videos)
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


ANIMATED_SUFFIXES = {".gif", ".webp", ".png"}  # formats with animated variants (APNG, animated WebP)


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
            results.append(predictor.predict_video(path, crop_mode=video_mode(crop_mode), **video))
        else:
            reason = "no such file or folder" if kind == "missing" else "folder holds no image or video files"
            results.append(ImageResult(path=path, error=reason))
    return results


def video_mode(crop_mode: str) -> str:
    return "detect" if crop_mode == "auto" else crop_mode  # a small video frame is still a scene, not a face


def _retry_as_video(predictor: Predictor, result: ImageResult, crop_mode: str, options: dict) -> Result:
    """A file of unknown extension that PIL cannot read may still be a video; otherwise keep a clear error."""
    if not result.error or _kind(Path(result.path)) == "image":
        return result
    video = predictor.predict_video(result.path, crop_mode=video_mode(crop_mode), **options)
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


def is_video_file(path: str | None) -> bool:
    return path is not None and Path(path).suffix.lower() in VIDEO_SUFFIXES


OUTPUT_FLAGS = {
    "csv": "--csv", "json": "--json", "annotate": "--annotate", "plot_dir": "--plot-dir", "thumbnails": "--thumbnails"
}  # fmt: skip


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, an output that is, contains or lies inside an input (an image, video or
    folder to predict on, the --model folder, the --yunet-model file): `--csv clip.avi` would replace the video, and
    `--annotate photos/` would mix the copies with the photos (and a later run would predict on them). --csv and
    --json must differ too: the second would replace the first."""
    model = args.model
    with contextlib.suppress(ValueError):  # a bad --model is reported when it is loaded
        model = resolve_model_path(args.model)
    inputs = [*args.inputs, args.webcam, model, args.yunet_model]
    for key, flag in OUTPUT_FLAGS.items():
        output = getattr(args, key)
        if output is not None:
            folder = key in ("plot_dir", "thumbnails") or (key == "annotate" and not is_video_file(output))
            fix = "choose a folder outside it" if folder else "write it outside the inputs"
            check_apart(output, *inputs, flag=flag, fix=fix)
    if args.csv and args.json and Path(args.csv).expanduser().resolve() == Path(args.json).expanduser().resolve():
        raise OutputOverlapError(
            f"--csv and --json are both {args.csv}: the JSON would replace the CSV; give two files"
        )
    if is_video_file(args.annotate) and not args.webcam:
        entries = expand_inputs(args.inputs)
        if len(entries) != 1 or entries[0][1] != "video":
            raise OutputOverlapError(
                f"--annotate {args.annotate} is one annotated video, but the inputs are {len(entries)} file(s) that "
                "are not all one video; give exactly one video, or a folder for --annotate"
            )
