"""What predict writes: CSV rows, JSON records, annotated images and videos, per-track thumbnails.

Every file goes through a staging file beside it (`.NAME.partial.EXT`) renamed into place when it is complete, so a
half-written result never looks finished. For a live source (--webcam) the CSV rows are also flushed to the staging
file frame by frame: after a hard kill the `.partial` file holds every row up to there; after Ctrl-C, --seconds or
the end of the stream the files are finished and renamed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from fer_hf.inference.annotate import draw_faces
from fer_hf.inference.faces import LANDMARK_NAMES

LANDMARK_COLUMNS = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
# What OpenCV's writer gets per annotated-video suffix: mp4v (MPEG-4 part 2) is what opencv-python-headless's
# bundled FFmpeg writes everywhere (no H.264 encoder ships with it); MJPG for AVI.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


def staging_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def commit(staged: Path, path: str | Path) -> Path:
    os.replace(staged, path)
    return Path(path)


def fresh_path(folder: str | Path, stem: str, suffix: str = ".png") -> Path:
    """folder/stem.png, or stem_2.png, stem_3.png, ... when it is taken: the files predict writes into a folder never
    replace a file (the folder is created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out, n = folder / f"{stem}{suffix}", 1
    while out.exists():
        n += 1
        out = folder / f"{stem}_{n}{suffix}"
    return out


# ---------------------------------------------------------------- rows


def csv_columns(label_names: Sequence[str]) -> list[str]:
    return [
        "path", "kind", "frame", "time_s", "status", "faces", "error", "face", "track_id", "x", "y", "w", "h",
        "detector_score", *LANDMARK_COLUMNS, "label", "score", *(f"p_{n}" for n in label_names),
        "smoothed_label", *(f"smoothed_p_{n}" for n in label_names),
    ]  # fmt: skip


def result_rows(results: Sequence, label_names: Sequence[str]) -> list[dict]:
    """Flat CSV rows: one per face (images) or per sampled frame and face (videos); one row for a file or frame
    without a face (status no_face, faces 0) or with an error, so nothing disappears silently."""
    rows = []
    for result in results:
        base = {"path": result.path, "kind": result.kind, "frame": "", "time_s": "", "status": result.status}
        if result.kind == "image":
            rows += face_rows(
                {**base, "faces": len(result.faces), "error": result.error or ""}, result.faces, label_names
            )
        elif result.error or not result.frames:
            rows += face_rows({**base, "faces": "", "error": result.error or ""}, [], label_names)
        else:
            for frame in result.frames:
                rows += frame_rows(result, frame, label_names)
    return rows


def frame_rows(result, frame, label_names: Sequence[str]) -> list[dict]:
    base = {"path": result.path, "kind": result.kind, "frame": frame.index, "time_s": frame.time_s}
    base.update(status=frame.status, faces=len(frame.faces), error="")
    return face_rows(base, frame.faces, label_names)


def face_rows(base: dict, faces: Sequence, label_names: Sequence[str]) -> list[dict]:
    """One row per face, numbered from 1 like the annotated image; one row of empty face fields when none."""
    columns = csv_columns(label_names)[len(base) :]
    if not faces:
        return [{**base, **dict.fromkeys(columns, "")}]
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


def write_csv(results: Sequence, label_names: Sequence[str], path: str | Path) -> None:
    rows = result_rows(results, label_names)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(path)
    with open(staged, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns(label_names))
        writer.writeheader()
        writer.writerows(rows)
    commit(staged, path)


def json_record(result) -> dict:
    record = {**asdict(result), "status": result.status}
    for frame, data in zip(getattr(result, "frames", []), record.get("frames", []), strict=True):
        data.update(status=frame.status, faces_count=len(frame.faces))
    return record


def write_json(results: Sequence, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    staged = staging_path(path)
    staged.write_text(json.dumps([json_record(r) for r in results], indent=2))
    commit(staged, path)


class CsvRows:
    """A CSV written row by row for a live source: each frame's rows are flushed to the staging file; `close()`
    renames it into place."""

    def __init__(self, path: str | Path, label_names: Sequence[str]):
        self.path, self.label_names = Path(path), list(label_names)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staged = staging_path(self.path)
        self.handle = open(self.staged, "w", newline="")  # noqa: SIM115  (open for the whole stream; close() ends it)
        self.writer = csv.DictWriter(self.handle, fieldnames=csv_columns(label_names))
        self.writer.writeheader()

    def frame(self, result, frame, rgb: np.ndarray) -> None:
        self.writer.writerows(frame_rows(result, frame, self.label_names))
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()
        commit(self.staged, self.path)


# ---------------------------------------------------------------- images, videos, thumbnails


def save_annotated(rgb: np.ndarray, faces: Sequence, preds: Sequence, folder, stem: str) -> Path:
    """The image with numbered boxes, labels and landmarks (`draw_faces`), as PNG; never overwrites an earlier
    file with the same stem."""
    canvas = draw_faces(rgb, [f.box for f in faces], preds, [f.landmarks for f in faces])
    out = fresh_path(folder, f"{stem}_annotated")
    cv2.imwrite(str(out), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    return out


def annotated_frame(rgb: np.ndarray, frame) -> np.ndarray:
    """A video frame with each face's box numbered by its track id and its smoothed label (the one that does not
    flicker); landmarks drawn."""
    faces = frame.faces
    points = [None if f.landmarks is None else np.asarray(f.landmarks) for f in faces]
    numbers = [f.track_id if f.track_id is not None else i for i, f in enumerate(faces, 1)]
    smoothed = all(f.smoothed_label for f in faces)
    return draw_faces(rgb, [f.box for f in faces], faces, points, numbers=numbers, smoothed=smoothed)


class VideoAnnotator:
    """--annotate OUT.mp4: every sampled frame, annotated, at the sampling rate (the native rate with --fps 0), into
    a staging file renamed at `close()`. The output is constant-rate: a variable-rate input's frames are spaced
    evenly (its CSV/JSON times are the true ones)."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise ValueError(f"--annotate {path}: an annotated video must end in one of {sorted(VIDEO_CODECS)}")
        self.codec, self.fps, self.writer = codec, fps, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staged = staging_path(self.path)
        self.frames = 0

    def frame(self, result, frame, rgb: np.ndarray) -> None:
        if self.writer is None:  # the size is known with the first frame
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(
                str(self.staged), cv2.VideoWriter_fourcc(*self.codec), self.fps, (width, height)
            )
            if not self.writer.isOpened():
                raise OSError(f"--annotate {self.path}: OpenCV cannot write {self.codec} video here")
        self.writer.write(cv2.cvtColor(annotated_frame(rgb, frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            commit(self.staged, self.path)


class Thumbnails:
    """--thumbnails DIR: one colour crop per track (its most confident detection, or its largest face without
    scores), written as STEM_trackN.png when the video ends."""

    def __init__(self, folder: str | Path, stem: str):
        self.folder, self.stem = Path(folder), stem
        self.best: dict[int, tuple[float, np.ndarray]] = {}
        self.written: list[Path] = []

    def frame(self, result, frame, rgb: np.ndarray) -> None:
        for face in frame.faces:
            if face.track_id is None or face.source == "tracked":
                continue  # boxes carried between detections are guesses: not a track's picture
            x, y, w, h = face.box
            quality = face.detector_score if face.detector_score is not None else w * h / 1e9
            if face.track_id not in self.best or quality > self.best[face.track_id][0]:
                self.best[face.track_id] = (quality, padded_crop(rgb, face.box))

    def close(self) -> None:
        for track_id, (_, crop) in sorted(self.best.items()):
            out = fresh_path(self.folder, f"{self.stem}_track{track_id}")
            staged = staging_path(out)
            cv2.imwrite(str(staged), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            self.written.append(commit(staged, out))


def padded_crop(rgb: np.ndarray, box: Sequence[int], margin: float = 0.25) -> np.ndarray:
    """The box grown by `margin` of its size on each side, clipped to the image (a copy)."""
    x, y, w, h = box
    dx, dy = int(w * margin), int(h * margin)
    top, left = max(0, y - dy), max(0, x - dx)
    return rgb[top : min(rgb.shape[0], y + h + dy), left : min(rgb.shape[1], x + w + dx)].copy()
