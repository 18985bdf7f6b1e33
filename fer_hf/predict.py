"""Predict facial expressions on photos, folders and videos: find faces, crop them FER-like, classify in batches.

    python -m fer_hf.predict photo.jpg                     # the bundled default model
    python -m fer_hf.predict --model lite0 photo.jpg       # the bundled EfficientNet-Lite0, also offline
    python -m fer_hf.predict --model runs/cnn folder/ clip.mp4 --csv out.csv --annotate out/ --tta hflip
    python -m fer_hf.predict photo.jpg --detector haar      # OpenCV's Haar cascades instead of YuNet
    python -m fer_hf.predict clip.mp4 --annotate clip_annotated.mp4 --thumbnails faces/ --csv clip.csv
    python -m fer_hf.predict --webcam 0 --seconds 30 --csv live.csv   # a camera, a device path or an RTSP/HTTP URL

Faces are found by YuNet (or Haar), turned so the eyes are level and cropped with FER2013's framing
(`fer_hf.inference.faces`). Every face gets a number (1 = largest, the order of the JSON, the CSV and the annotated
image), a box, the detector's score and 5 landmarks (YuNet), a label and the probabilities of all classes. Faces are
preprocessed as the loaded model's own image processor does, so any family (CNN, ResNet, ViT, timm) works. A bad file is reported and skipped:
a batch never aborts because of one input.

Video times are each frame's presentation time (`fer_hf.inference.video_io`); a frame without a face has its own row (status
no_face, faces 0). Files are written through a staging file renamed when complete (`fer_hf.inference.writers`); with --webcam
the CSV's rows are flushed to that staging file frame by frame, and Ctrl-C or --seconds ends the run with every file
complete. For photos and arrays in Python, `fer_hf.analyze` returns the same results as a table.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from fer_hf.cli import positive_int
from fer_hf.devices import DEVICE_HELP, resolve_device
from fer_hf.evaluation.tta import TTA_MODES
from fer_hf.inference.backend import BACKEND_HELP, BACKENDS, BackendError
from fer_hf.inference.faces import (
    DetectorError,
    add_detector_args,
    detector_config,
)
from fer_hf.inference.predictor import (
    Predictor,
    check_outputs,
    is_video_file,
    predict_inputs,
    safe_stem,
    video_mode,
    video_sinks,
)
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.inference.video_io import (
    StreamFrames,
    VideoLoadError,
    sample_fps,
)
from fer_hf.inference.writers import (
    CsvRows,
    write_csv,
    write_json,
)
from fer_hf.models.loading import DEFAULT_MODEL, MODEL_HELP

# ---------------------------------------------------------------- the command line


class PredictError(ValueError):
    """Options or a model predict cannot use; cli.run prints it as one line (exit 2)."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # Long, and kept in one piece: it is the flat list of the command's flags, each one call with its help.
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
    from fer_hf.inference import sharding  # --data, --resume, --shard-size: `accelerate launch -m fer_hf.predict`

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
    from fer_hf.inference import sharding

    if sharding.takes_over(args):  # several processes, --data, --resume or a parquet table
        return sharding.main(args)
    check_outputs(args)  # an output that is, holds or lies in an input: refused before anything loads
    try:
        detector = detector_config(args)
        tracking = TrackingConfig(args.detect_every, args.max_lost, args.smoothing)
    except ValueError as err:
        raise PredictError(f"face detector or tracking options: {err}") from None
    device = resolve_device(args.device)  # `--device cuda` without a GPU: one sentence (DeviceError)
    stream = None
    if args.webcam:  # before the model loads: a camera that is not there is refused at once
        try:
            stream = StreamFrames(args.webcam, args.fps, seconds=args.seconds, timeout=args.open_timeout)
        except VideoLoadError as err:
            raise PredictError(f"--webcam {args.webcam}: {err}") from None
    predictor = load_predictor(args, detector, device)
    crop_mode = "cropped" if args.cropped or args.detector == "none" else "detect" if args.detect else "auto"
    if stream is not None:
        return stream_main(args, predictor, stream, tracking, video_mode(crop_mode))
    annotate_file = is_video_file(args.annotate)
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


def load_predictor(args: argparse.Namespace, detector, device: str) -> Predictor:
    """The command's Predictor; what keeps it from loading is one sentence naming the part (detector, model)."""
    try:
        return Predictor(
            args.model,
            tta=args.tta,
            detector=detector,
            batch_size=args.batch_size,
            device=device,
            trust_remote_code=args.trust_remote_code,
            backend=args.backend,
        )
    except DetectorError as err:
        raise PredictError(f"face detector: {err}") from None
    except BackendError:  # the model loaded; the backend asked for cannot run it: its own sentence
        raise
    except (OSError, ValueError) as err:  # ModelLoadError is a ValueError; transformers raises OSError/ValueError
        raise PredictError(f"could not load --model {args.model}: {err}") from None


def stream_main(
    args: argparse.Namespace, predictor: Predictor, frames: StreamFrames, tracking: TrackingConfig, crop_mode: str
) -> int:
    """--webcam SOURCE: frames until the source ends, --seconds or Ctrl-C. The CSV's rows are flushed to its staging
    file frame by frame; the CSV, the annotated video and the JSON are renamed into place at the end, whatever ended
    the run (main has opened the source: one that cannot be opened, or gives no frame within --open-timeout, is
    one sentence, exit 2)."""
    sinks = video_sinks(args.annotate, args.thumbnails, args.fps or frames.native_fps, safe_stem(args.webcam))
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


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
