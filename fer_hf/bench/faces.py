"""The front end measured on real faces with known labels: detect -> align -> crop -> classify, in real scenes.

    python -m fer_hf.bench faces [--split validation] [--count 600] [--detectors yunet haar] [--tilt 0]
    python -m fer_hf.bench faces --skip 600 --tune      # choose framing + threshold on other faces than reported

How the scenes are made: `--count` FER2013 faces of `--split` (a seeded random sample) are each resized (bicubic up,
area down) to a square of 96-220 pixels (`--face-sides`) and pasted, hard-edged, at a random position into a 640x480
scene cut from one of four real photos shipped with scikit-image (coffee, rocket, chelsea the cat, the Hubble deep
field; the cut is a random 4:3 window covering at least half of the photo). With `--tilt T` each pasted face is also
turned by a random angle in [-T, T] degrees (as heads tilt in real photos). Every scene goes through the same detector
and `fer_crop` as `fer_hf.predict`; a detection counts as the face when its centre lies in the pasted square. The
model (bundled `default` unless `--model`) classifies each found crop, and the original 48x48 face directly (single
view).

Figures per detector: F = faces found; K = accuracy on the faces found / direct accuracy on the same faces; R =
end-to-end accuracy, a missed face counting as wrong / direct accuracy on all faces; false detections (boxes off
the pasted face). The last line: `front end: found F% of faces, kept R of the direct accuracy overall, K on the
faces found` for the default detector settings. `--tune` searches margin x offset x align x score threshold on the
cached detections and prints the best settings: run it on faces other than those you report (`--skip 600` takes the
next 600 of the same shuffle; Training faces are a poor choice: the model has learnt them, so any change of framing
costs more there).
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from tqdm.auto import tqdm

from fer_hf.bench import bench_parser
from fer_hf.inference.faces import YUNET_ENGINES, DetectorConfig, Face, FaceDetector, fer_crop
from fer_hf.inference.predictor import Predictor
from fer_hf.models.loading import DEFAULT_MODEL, MODEL_HELP

BACKGROUNDS = ("coffee", "rocket", "chelsea", "hubble_deep_field")  # skimage photos without a human face
SCENE_SIZE = (640, 480)  # (width, height)


@dataclass
class Scene:
    rgb: np.ndarray  # (480, 640, 3) uint8
    square: tuple[int, int, int]  # (x, y, side) of the pasted face
    angle: float  # degrees the pasted face was turned


@dataclass
class FrontEnd:
    found: np.ndarray  # (N,) bool
    correct: np.ndarray  # (N,) bool: end to end, a missed face is wrong
    false_detections: int

    def figures(self, direct: np.ndarray) -> tuple[float, float, float]:
        """(F, K, R) against the direct per-face correctness `direct` (N,) bool."""
        found = self.found
        k = self.correct[found].mean() / max(direct[found].mean(), 1e-9) if found.any() else 0.0
        return found.mean(), float(k), float(self.correct.mean() / max(direct.mean(), 1e-9))


def read_faces(path: Path, count: int, seed: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces skip..skip+count of a seeded shuffle of a FER2013 parquet -> (faces (N, 48, 48) uint8, labels (N,))."""
    table = pq.read_table(path)
    rows = np.random.default_rng(seed).permutation(table.num_rows)[skip : skip + count]
    images, labels = table.column("image").to_pylist(), table.column("label").to_pylist()
    faces = np.stack([np.asarray(Image.open(io.BytesIO(images[i]["bytes"])).convert("L")) for i in rows])
    return faces, np.asarray([labels[i] for i in rows])


def backgrounds() -> list[np.ndarray]:
    from skimage import data

    return [getattr(data, name)()[..., :3] for name in BACKGROUNDS]


def make_scene(
    face: np.ndarray,
    background: np.ndarray,
    rng: np.random.Generator,
    tilt: float,
    sides: tuple[int, int] = (96, 220),
) -> Scene:
    """Paste one (48, 48) face, resized to a side in `sides` (inclusive) and optionally turned, into a 640x480
    window of a real photo."""
    width, height = SCENE_SIZE
    bh, bw = background.shape[:2]
    window_w = int(bw * rng.uniform(0.7, 1.0))
    window_h = min(bh, int(window_w * height / width))
    x0, y0 = rng.integers(0, bw - window_w + 1), rng.integers(0, bh - window_h + 1)
    window = background[y0 : y0 + window_h, x0 : x0 + window_w]
    scene = cv2.resize(window, SCENE_SIZE, interpolation=cv2.INTER_AREA).copy()
    side = int(rng.integers(sides[0], sides[1] + 1))
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    patch = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA)
    angle = float(rng.uniform(-tilt, tilt)) if tilt else 0.0
    mask = np.full((side, side), 255, np.uint8)
    if angle:  # the turned square keeps its centre; its corners are clipped to the original square
        matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        patch = cv2.warpAffine(patch, matrix, (side, side), flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(mask, matrix, (side, side), flags=cv2.INTER_NEAREST)
    region = scene[y : y + side, x : x + side]
    region[mask > 0] = patch[mask > 0, None]
    return Scene(scene, (x, y, side), angle)


def match(faces: Sequence[Face], square: tuple[int, int, int]) -> Face | None:
    """The best-scoring (else largest) detection whose centre lies inside the pasted square."""
    x, y, side = square
    inside = [
        f for f in faces if x <= f.box[0] + f.box[2] / 2 <= x + side and y <= f.box[1] + f.box[3] / 2 <= y + side
    ]
    return max(inside, key=lambda f: (f.score or 0.0, f.box[2] * f.box[3])) if inside else None


def run_front_end(
    predictor: Predictor,
    detector: FaceDetector,
    detections: list[list[Face]],
    scenes: list[Scene],
    labels: np.ndarray,
    thresholds: Sequence[float] = (0.0,),
) -> list[FrontEnd]:
    """Crop the matched detection of each scene with `detector`'s framing, classify, compare with the label; one
    FrontEnd per score threshold (a scene whose best face inside the square scores below it counts as missed)."""
    matched = [match(faces, scene.square) for faces, scene in zip(detections, scenes, strict=True)]
    found = np.array([m is not None for m in matched])
    crops = [detector.crop(scene.rgb, replace(m)).crop for m, scene in zip(matched, scenes, strict=True) if m]
    hit = np.zeros(len(scenes), bool)
    if crops:
        hit[found] = predictor.classify(crops).argmax(1) == labels[found]
    results = []
    for threshold in thresholds:
        kept = found & np.array([m is not None and (m.score or 1.0) >= threshold for m in matched])
        false = sum(
            sum((f.score or 1.0) >= threshold for f in faces if f is not m)
            for faces, m in zip(detections, matched, strict=True)
        )
        results.append(FrontEnd(kept, hit & kept, false))
    return results


def exact_square_k(predictor: Predictor, scenes: list[Scene], labels: np.ndarray, direct: np.ndarray) -> float:
    """K when the crop is the pasted square itself: what the up- and downscaling alone cost (the ceiling of K)."""
    crops = [fer_crop(s.rgb, (s.square[0], s.square[1], s.square[2], s.square[2])) for s in scenes]
    return float((predictor.classify(crops).argmax(1) == labels).mean() / direct.mean())


def detect_all(detector: FaceDetector, scenes: list[Scene], name: str) -> tuple[list[list[Face]], float]:
    """Detections (no crops) for every scene and the median milliseconds per scene."""
    detections, times = [], []
    for scene in tqdm(scenes, desc=f"detect ({name})", unit="scene", leave=False, mininterval=2):
        start = time.perf_counter()
        detections.append(detector.detect(scene.rgb))
        times.append(time.perf_counter() - start)
    return detections, 1000 * float(np.median(times))


def tune(predictor, config, detections, scenes, labels, direct) -> DetectorConfig:
    """Grid search of framing x alignment (x score threshold for YuNet) on cached detections; prints the top 8 by
    R (ties: fewer false detections)."""
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.9) if config.detector == "yunet" else (config.score_threshold,)
    grid = list(itertools.product((-0.1, -0.05, 0.0, 0.05, 0.1), (-0.06, -0.03, 0.0, 0.03, 0.06), (True, False)))
    rows = []
    for margin, offset, align in tqdm(grid, desc="tune", leave=False):
        candidate = replace(config, margin=margin, offset=offset, align=align)
        results = run_front_end(predictor, FaceDetector(candidate), detections, scenes, labels, thresholds)
        for threshold, result in zip(thresholds, results, strict=True):
            rows.append(
                (result.figures(direct), result.false_detections, replace(candidate, score_threshold=threshold))
            )
    rows.sort(key=lambda row: (-round(row[0][2], 3), row[1]))
    for (f, k, r), false, cfg in rows[:8]:
        print(
            f"  tune {cfg.detector}: margin {cfg.margin:+.2f} offset {cfg.offset:+.2f} align {cfg.align!s:5} "
            f"threshold {cfg.score_threshold:.1f}: F {f:.1%} K {k:.3f} R {r:.3f}, {false} false detections"
        )
    return rows[0][2]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = bench_parser("faces", __doc__)
    parser.add_argument("--data", required=True, help="your FER2013 copy: a folder with {train,validation}.parquet")
    parser.add_argument("--split", default="validation", choices=("train", "validation"), help="faces to paste")
    parser.add_argument("--count", type=int, default=600, help="faces (one scene each)")
    parser.add_argument("--skip", type=int, default=0, help="start this far into the shuffled split (--tune: 600)")
    parser.add_argument("--seed", type=int, default=0, help="sample, placement and scene seed")
    parser.add_argument(
        "--face-sides", type=int, nargs=2, default=(96, 220), metavar=("MIN", "MAX"), help="pasted face sizes (px)"
    )
    parser.add_argument("--tilt", type=float, default=0.0, help="turn each pasted face by up to this many degrees")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    parser.add_argument(
        "--detectors", nargs="+", default=["yunet", "haar"], choices=("yunet", "haar"), help="first one: last line"
    )
    parser.add_argument(
        "--detect-max-side", type=int, default=DetectorConfig.detect_max_side, help="YuNet's search size (speed)"
    )
    parser.add_argument(
        "--yunet-engine",
        default="auto",
        choices=YUNET_ENGINES,
        help="what runs YuNet (auto: onnxruntime if installed)",
    )
    parser.add_argument("--tune", action="store_true", help="search the crop framing and score threshold")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    path = Path(args.data) / f"{args.split}.parquet"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; pass --data with the FER2013 parquet folder")
    faces, labels = read_faces(path, args.count, args.seed, args.skip)
    rng, photos = np.random.default_rng(args.seed), backgrounds()
    low, high = args.face_sides
    if not 8 <= low <= high <= min(SCENE_SIZE):
        raise SystemExit(f"error: --face-sides {low} {high}: expected 8 <= MIN <= MAX <= {min(SCENE_SIZE)}")
    scenes = [make_scene(face, photos[i % len(photos)], rng, args.tilt, (low, high)) for i, face in enumerate(faces)]
    predictor = Predictor(args.model, detector=DetectorConfig(detector="none"))
    direct = predictor.classify(list(faces)).argmax(1) == labels
    print(
        f"{len(scenes)} {args.split} faces pasted into 640x480 scenes ({low}-{high} px, tilt up to {args.tilt:g} degrees), "
        f"model {args.model}: direct accuracy on the 48x48 faces {direct.mean():.4f}; "
        f"cutting the pasted square exactly keeps K {exact_square_k(predictor, scenes, labels, direct):.3f}"
    )
    summary = None
    for name in args.detectors:
        threshold = 0.5 if args.tune else DetectorConfig.score_threshold
        config = DetectorConfig(
            detector=name,
            score_threshold=threshold,
            detect_max_side=args.detect_max_side,
            yunet_engine=args.yunet_engine,
        )
        detector = FaceDetector(config)
        detections, ms = detect_all(detector, scenes, name)
        if args.tune:
            config = tune(predictor, config, detections, scenes, labels, direct)
            detector = FaceDetector(config)
        (result,) = run_front_end(predictor, detector, detections, scenes, labels, [config.score_threshold])
        f, k, r = result.figures(direct)
        print(
            f"  {name:5s}: found {f:.1%}, K {k:.3f}, R {r:.3f}, {result.false_detections} false detections, "
            f"{ms:.1f} ms/scene{f' through {detector.yunet_engine}' if detector.yunet_engine else ''} (margin {config.margin:+.2f}, offset {config.offset:+.2f}, align {config.align}, "
            f"threshold {config.score_threshold:.2f})"
        )
        summary = summary or (f, k, r)
    f, k, r = summary
    print(
        f"front end: found {f:.1%} of faces, kept {r:.3f} of the direct accuracy overall, {k:.3f} on the faces found"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
