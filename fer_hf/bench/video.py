"""Video speed with tracking: frames per second through `Predictor.predict_video` on a 640x480 clip of six faces.

    python -m fer_hf.bench video [--seconds 6] [--detect-every 3] [--threads 2]

The clip is made from a real photo (insightface's t1.jpg: six people around a table, shipped in its wheel; `make
install` adds it): padded to 4:3, slowly zoomed in and panned, written at 10 fps to 640x480 with OpenCV's MJPG
writer, with a few blank frames in the middle. Every frame is analysed twice with the bundled default model:
detecting faces on every frame, and detecting on every k-th frame with the tracker carrying the boxes in between.
Both runs are timed end to end (decode + detect/track + crop + classify + smooth); the agreement of their
smoothed labels per (frame, track) says whether the faster way gives the same results. The last line is
`video: N fps (detect every frame M fps, ratio R)`.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from fer_hf.bench import at_least, bench_parser
from fer_hf.inference.predictor import Predictor
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.models.loading import DEFAULT_MODEL, MODEL_HELP


def group_photo_path() -> Path:
    """insightface's t1.jpg (1280x886: six people around a table), found inside its installed wheel."""
    spec = importlib.util.find_spec("insightface")
    path = Path(spec.origin).parent / "data" / "images" / "t1.jpg" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise FileNotFoundError("the six-person test photo comes from the insightface wheel: `make install` adds it")
    return path


def group_photo() -> np.ndarray:
    """The six-person photo as RGB (H, W, 3)."""
    return cv2.cvtColor(cv2.imread(str(group_photo_path())), cv2.COLOR_BGR2RGB)


def make_clip(
    photo: np.ndarray, path: str | Path, *, seconds: float = 3.0, fps: int = 10, blank: Sequence[int] = ()
) -> Path:
    """Write a 640x480 MJPG clip panning and zooming slowly over `photo` (padded to 4:3 with grey); the frame
    numbers in `blank` are plain grey frames (no face) inserted into the sequence."""
    height, width = photo.shape[:2]
    side_w = max(width, height * 4 // 3) + 120
    side_h = side_w * 3 // 4
    canvas = np.full((side_h, side_w, 3), 128, np.uint8)
    top, left = (side_h - height) // 2, (side_w - width) // 2
    canvas[top : top + height, left : left + width] = photo
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write MJPG video here")
    frames = int(seconds * fps)
    for i in range(frames + len(blank)):
        if i in blank:
            writer.write(np.full((480, 640, 3), 128, np.uint8))
            continue
        t = i / max(1, frames + len(blank) - 1)  # 0 -> 1 over the clip
        zoom = 1.0 - 0.1 * t  # the window shrinks to 90%: faces grow
        w, h = int(side_w * zoom), int(side_h * zoom)
        cx = side_w / 2 + 40 * np.sin(2 * np.pi * t)  # a gentle pan to the right and back
        x0, y0 = int(round(cx - w / 2)), (side_h - h) // 2
        frame = cv2.resize(canvas[y0 : y0 + h, x0 : x0 + w], (640, 480), interpolation=cv2.INTER_AREA)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return Path(path)


def timed(predictor: Predictor, clip: Path, tracking: TrackingConfig, repeats: int):
    """Best-of-`repeats` frames per second over the whole clip (every frame sampled), and the last result."""
    best, result = 0.0, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = predictor.predict_video(clip, fps=0, tracking=tracking)
        best = max(best, len(result.frames) / (time.perf_counter() - start))
    return best, result


def labels_by_track(result) -> dict[tuple[int, int], str]:
    return {(f.index, face.track_id): face.smoothed_label for f in result.frames for face in f.faces}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("video", __doc__)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument(
        "--seconds", type=at_least(0.1, float, " s (one frame at 10 fps)"), default=6.0, help="clip length at 10 fps"
    )
    parser.add_argument(
        "--detect-every", type=at_least(1), default=3, help="k: detect on every k-th frame, track between"
    )
    parser.add_argument("--repeats", type=at_least(1), default=2, help="timed passes per way (best kept)")
    parser.add_argument("--threads", type=at_least(1), default=2, help="torch and OpenCV threads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    predictor = Predictor(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(group_photo(), Path(tmp) / "six_faces.avi", seconds=args.seconds, blank=(20, 21, 22))
        every, full = timed(predictor, clip, TrackingConfig(detect_every=1), args.repeats)
        sparse, tracked = timed(predictor, clip, TrackingConfig(detect_every=args.detect_every), args.repeats)
    reference, carried = labels_by_track(full), labels_by_track(tracked)
    same = sum(carried.get(key) == label for key, label in reference.items()) / max(1, len(reference))
    faces = sum(len(f.faces) for f in full.frames)
    print(
        f"clip: {len(full.frames)} frames 640x480, {faces} faces in {len(full.tracks)} tracks; detection every "
        f"{args.detect_every} frames keeps {len(tracked.tracks)} tracks and the same smoothed label on {same:.1%} "
        f"of the (frame, face) pairs; threads {torch.get_num_threads()}"
    )
    print(f"video: {sparse:.1f} fps (detect every frame {every:.1f} fps, ratio {sparse / every:.2f})")
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    raise SystemExit(run(main))
