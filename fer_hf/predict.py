"""Predict facial expressions on photos, folders and videos: find faces, crop them FER-like, classify in batches.

    python -m fer_hf.predict photo.jpg                     # the bundled default model
    python -m fer_hf.predict --model lite0 photo.jpg       # the bundled EfficientNet-Lite0, also offline
    python -m fer_hf.predict --model runs/cnn folder/ clip.mp4 --csv out.csv --annotate out/ --tta hflip
    python -m fer_hf.predict photo.jpg --detector haar      # OpenCV's Haar cascades instead of YuNet
    python -m fer_hf.predict clip.mp4 --annotate clip_annotated.mp4 --thumbnails faces/ --csv clip.csv
    python -m fer_hf.predict --webcam 0 --seconds 30 --csv live.csv   # a camera, a device path or an RTSP/HTTP URL

Faces are found by YuNet (or Haar), turned so the eyes are level and cropped with FER2013's framing
(`fer_hf.faces`). Every face gets a number (1 = largest, the order of the JSON, the CSV and the annotated
image), a box, the detector's score and 5 landmarks (YuNet), a label and the probabilities of all classes. Preprocessing goes through the loaded
model's own image processor, so any family (CNN, ResNet, ViT, timm) works. A bad file is reported and skipped:
a batch never aborts because of one input.

Video times are each frame's presentation time (`fer_hf.video_io`); a frame without a face has its own row (status
no_face, faces 0). Files are written through a staging file renamed when complete (`fer_hf.writers`); with --webcam
the CSV's rows are flushed to that staging file frame by frame, and Ctrl-C or --seconds ends the run with every file
complete. For photos and arrays in Python, `fer_hf.analyze` returns the same results as a table.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.data.images import is_animated
from fer_hf.devices import DEVICE_HELP, DeviceError, resolve_device
from fer_hf.evaluation.tta import TTA_MODES, tta_logits
from fer_hf.faces import (
    DetectorConfig,
    DetectorError,
    Face,
    FaceDetector,
    ImageLoadError,
    add_detector_args,
    detector_config,
    load_image,
)
from fer_hf.loading import (
    BACKEND_HELP,
    BACKENDS,
    DEFAULT_MODEL,
    MODEL_HELP,
    BackendError,
    LoadedModel,
    inference_model,
    load_classifier,
    resolve_model_path,
)
from fer_hf.outputs import OutputOverlapError, check_apart
from fer_hf.predictions import (  # noqa: F401  (re-exported: the app and the tests import them from predict)
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
from fer_hf.tracking import TrackingConfig
from fer_hf.video_io import (  # noqa: F401  (VideoFrames, VideoLoadError: re-exported, the app imports them here)
    StreamFrames,
    VideoFrames,
    VideoLoadError,
    check_fps,
    sample_fps,
)
from fer_hf.writers import (  # noqa: F401  (re-exported: the names predict always had)
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

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


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
            from fer_hf.video_plots import plot_overview, plot_track

            names, stem = self.label_names, _stem(result.path)
            # Fresh names: a file already there (an earlier run's, a video of the same name's) is never replaced.
            result.plot = str(plot_overview(result, names, fresh_path(plot_dir, f"{stem}_timeline")))
            result.track_plots = [
                str(plot_track(result, t["track_id"], names, fresh_path(plot_dir, f"{stem}_face{t['track_id']}")))
                for t in result.tracks
            ]


def _stem(source: str) -> str:
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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.predict",
        description="Find faces in images, folders or videos and predict their facial expressions.",
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image files, folders (searched recursively), videos"
    )
    parser.add_argument(
        "--webcam",
        metavar="SOURCE",
        help="a live source instead of INPUTs: a camera index (0), a device path, an RTSP/HTTP URL (or a video file "
        "read as a stream); stop with --seconds or Ctrl-C (the files are complete either way)",
    )
    parser.add_argument("--seconds", type=positive_seconds, help="--webcam: stop after this many seconds of frames")
    parser.add_argument(
        "--open-timeout",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="--webcam: a source that gives no frame within S seconds is refused (default 10)",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument("--json", metavar="OUT", help="write all results as JSON")
    parser.add_argument("--csv", metavar="OUT", help="write one row per face (per frame and face for videos)")
    parser.add_argument(
        "--annotate",
        metavar="DIR|OUT.mp4",
        help="write copies of the images with boxes and labels into DIR (videos: DIR/NAME_annotated.mp4); "
        "OUT.mp4 (or .avi/.mov/.m4v) for one video or --webcam: the annotated video, boxes numbered by track id",
    )
    parser.add_argument("--thumbnails", metavar="DIR", help="videos and --webcam: one face crop per track, as PNG")
    parser.add_argument(
        "--plot-dir",
        metavar="DIR",
        help="write a timeline PNG per video and one per face in it here (default: no plots)",
    )
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation")
    crop = parser.add_mutually_exclusive_group()
    crop.add_argument("--cropped", action="store_true", help="inputs are already-cropped faces: no detection")
    crop.add_argument("--detect", action="store_true", help="always detect, even in small images")
    parser.add_argument(
        "--fps", type=sample_fps, default=2.0, help="video frames sampled per second of video time (0: every frame)"
    )
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
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--backend", choices=BACKENDS, help=f"{BACKEND_HELP} (default: $FER_HF_BACKEND, else auto)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom code from a Hub model")
    add_detector_args(parser)
    from fer_hf import sharding  # --data, --resume, --shard-size: `accelerate launch -m fer_hf.predict`

    sharding.add_shard_args(parser)
    args = parser.parse_args(argv)
    if args.webcam:
        if args.inputs or args.data:
            parser.error("give INPUTs (images, folders, videos), --data SOURCE or --webcam SOURCE: one of them")
    else:
        args = sharding.check_shard_args(parser, args)  # INPUTs or --data, one of them
    if args.seconds is not None and not args.webcam:
        parser.error("--seconds says how long to read --webcam SOURCE; a video file is read to its end")
    return args


def positive_seconds(text: str) -> float:
    """argparse type of --seconds and --open-timeout: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


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
        device = resolve_device(args.device)
    except DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stream = None
    if args.webcam:  # before the model loads: a camera that is not there is refused at once
        try:
            stream = StreamFrames(args.webcam, args.fps, seconds=args.seconds, timeout=args.open_timeout)
        except VideoLoadError as err:
            print(f"error: --webcam {args.webcam}: {err}", file=sys.stderr)
            return 2
    try:
        predictor = Predictor(
            args.model,
            tta=args.tta,
            detector=detector,
            batch_size=args.batch_size,
            device=device,
            trust_remote_code=args.trust_remote_code,
            backend=args.backend,
        )
    except DetectorError as err:
        print(f"error: face detector: {err}", file=sys.stderr)
        return 2
    except BackendError as err:  # the model loaded; the backend asked for cannot run it
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # ModelLoadError is a ValueError; transformers raises OSError/ValueError
        print(f"error: could not load --model {args.model}: {err}", file=sys.stderr)
        return 2
    crop_mode = "cropped" if args.cropped or args.detector == "none" else "detect" if args.detect else "auto"
    if stream is not None:
        return stream_main(args, predictor, stream, tracking, _video_mode(crop_mode))
    annotate_file = _is_video_file(args.annotate)
    results = predict_inputs(
        predictor,
        args.inputs,
        crop_mode=crop_mode,
        annotate_dir=None if annotate_file else args.annotate,
        fps=args.fps,
        plot_dir=args.plot_dir,  # only where asked: no PNGs in the current folder unless it is named
        tracking=tracking,
        annotate=args.annotate,
        thumbnails=args.thumbnails,
    )
    for result in results:
        print(result.summary() + (f" -> {result.plot}" if getattr(result, "plot", None) else ""))
    if args.csv:
        write_csv(results, predictor.label_names, args.csv)
    if args.json:
        write_json(results, args.json)
    return 1 if any(r.status == "error" for r in results) else 0


def stream_main(
    args: argparse.Namespace, predictor: Predictor, frames: StreamFrames, tracking: TrackingConfig, crop_mode: str
) -> int:
    """--webcam SOURCE: frames until the source ends, --seconds or Ctrl-C. The CSV's rows are flushed to its staging
    file frame by frame; the CSV, the annotated video and the JSON are renamed into place at the end, whatever ended
    the run (main has opened the source: one that cannot be opened, or gives no frame within --open-timeout, is
    one sentence, exit 2)."""
    sinks = video_sinks(args.annotate, args.thumbnails, args.fps or frames.native_fps, _stem(args.webcam))
    if args.csv:
        sinks.insert(0, CsvRows(args.csv, predictor.label_names))
    print(
        f"reading {args.webcam}" + (f" for {args.seconds:g} s" if args.seconds else "; Ctrl-C stops"), file=sys.stderr
    )
    result = predictor.predict_stream(frames, crop_mode=crop_mode, tracking=tracking, sinks=sinks,
                                      plot_dir=args.plot_dir)  # fmt: skip
    print(result.summary())
    if args.json:
        write_json([result], args.json)
    return 0


def _is_video_file(path: str | None) -> bool:
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
            folder = key in ("plot_dir", "thumbnails") or (key == "annotate" and not _is_video_file(output))
            fix = "choose a folder outside it" if folder else "write it outside the inputs"
            check_apart(output, *inputs, flag=flag, fix=fix)
    if args.csv and args.json and Path(args.csv).expanduser().resolve() == Path(args.json).expanduser().resolve():
        raise OutputOverlapError(
            f"--csv and --json are both {args.csv}: the JSON would replace the CSV; give two files"
        )
    if _is_video_file(args.annotate) and not args.webcam:
        entries = expand_inputs(args.inputs)
        if len(entries) != 1 or entries[0][1] != "video":
            raise OutputOverlapError(
                f"--annotate {args.annotate} is one annotated video, but the inputs are {len(entries)} file(s) that "
                "are not all one video; give exactly one video, or a folder for --annotate"
            )


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
