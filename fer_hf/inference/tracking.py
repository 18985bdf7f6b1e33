"""Faces followed over time: one track id per person while it is the same face, and smoothed probabilities.

`FaceTracker.update(faces)` matches this frame's detections to the tracks of earlier sampled frames by box overlap
and landmark distance (Hungarian assignment on a combined cost); a track lost for up to `max_lost` sampled frames
keeps its id when the face comes back. `FaceTracker.predict()` gives where each live track's face should be now
(constant velocity), which is how boxes are carried between frames when detection runs only every k-th frame.
`Smoother` keeps an exponential moving average of each track's probabilities (strength 0 = off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

Box = tuple[int, int, int, int]  # (x, y, w, h)


@dataclass
class TrackingConfig:
    detect_every: int = 1  # run the detector on every k-th sampled frame; boxes are carried in between
    max_lost: int = 5  # sampled frames a face may go unseen and keep its track id
    smoothing: float = 0.5  # strength of the moving average of each track's probabilities (0 = off)

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.max_lost < 0 or not 0 <= self.smoothing < 1:
            raise ValueError("need detect_every >= 1, max_lost >= 0 and 0 <= smoothing < 1")


@dataclass
class Track:
    track_id: int
    box: Box  # where the face was last detected
    landmarks: np.ndarray | None  # (5, 2) at that detection, or None (Haar)
    velocity: tuple[float, float] = (0.0, 0.0)  # box motion per sampled frame, from its last two detections
    since: int = 0  # sampled frames since it was last detected


def iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def moved_landmarks(track: Track, box: Box) -> np.ndarray | None:
    """The track's last landmarks (5, 2), moved with its box to `box`."""
    if track.landmarks is None:
        return None
    return track.landmarks + np.subtract(box[:2], track.box[:2]).astype(np.float32)


@dataclass
class FaceTracker:
    """Call `advance()` once per sampled frame, then `update(...)` on frames where the detector ran; `predict()`
    gives the boxes to carry on frames where it did not."""

    max_lost: int = 5  # sampled frames a face may go undetected and keep its id
    min_iou: float = 0.1  # below this overlap (and with landmarks too far) a detection is not the same face
    max_extrapolation: int = 3  # frames of motion extrapolated at most (a lost face is looked for near there)
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    since_detection: int = 0  # sampled frames since the last update()

    def advance(self) -> None:
        for track in self.tracks:
            track.since += 1
        self.since_detection += 1

    def update(self, boxes: Sequence[Box], landmarks: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """This frame's detections -> their track ids (same order). Unmatched detections start new tracks;
        tracks undetected for more than `max_lost` sampled frames are dropped."""
        landmarks = list(landmarks) if landmarks is not None else [None] * len(boxes)
        ids: list[int] = [0] * len(boxes)
        if self.tracks and boxes:
            cost = np.array([[self._cost(t, b, lm) for b, lm in zip(boxes, landmarks, strict=True)]
                             for t in self.tracks])  # fmt: skip
            for ti, di in zip(*linear_sum_assignment(cost), strict=True):
                if cost[ti, di] < 2.0:  # a gated pair (see _cost) is never matched
                    self._refresh(self.tracks[ti], boxes[di], landmarks[di])
                    ids[di] = self.tracks[ti].track_id
        self.tracks = [t for t in self.tracks if t.since <= self.max_lost]
        for di, box in enumerate(boxes):
            if not ids[di]:
                self.tracks.append(Track(self.next_id, tuple(box), landmarks[di]))
                ids[di] = self.next_id
                self.next_id += 1
        self.since_detection = 0
        return ids

    def predict(self) -> list[tuple[int, Box, np.ndarray | None]]:
        """(track id, box where its face should be now, landmarks moved with it) for the faces found by the last
        detection."""
        carried = []
        for track in self.tracks:
            if track.since == self.since_detection:
                box = self.expected(track)
                carried.append((track.track_id, box, moved_landmarks(track, box)))
        return carried

    def expected(self, track: Track) -> Box:
        steps = min(track.since, self.max_extrapolation)
        x, y, w, h = track.box
        return (int(round(x + track.velocity[0] * steps)), int(round(y + track.velocity[1] * steps)), w, h)

    def _cost(self, track: Track, box: Box, landmarks: np.ndarray | None) -> float:
        """1 - IoU with where the track's face should be, plus the landmarks' mean distance in face widths when
        both have them; 2 (never matched) when they barely overlap and the landmarks do not say it is the same."""
        expected = self.expected(track)
        overlap = iou(expected, box)
        distance = None
        if track.landmarks is not None and landmarks is not None:
            moved = moved_landmarks(track, expected)
            distance = float(np.linalg.norm(moved - landmarks, axis=1).mean() / max(box[2], 1))
        if overlap < self.min_iou and (distance is None or distance > 0.5):
            return 2.0
        return (1 - overlap) + (0.5 * min(distance, 1.0) if distance is not None else 0.0)

    @staticmethod
    def _refresh(track: Track, box: Box, landmarks: np.ndarray | None) -> None:
        steps = max(track.since, 1)
        track.velocity = ((box[0] - track.box[0]) / steps, (box[1] - track.box[1]) / steps)
        track.box, track.landmarks, track.since = tuple(box), landmarks, 0


@dataclass
class Smoother:
    """Exponential moving average of each track's probabilities: s = strength * s_prev + (1 - strength) * p."""

    strength: float = 0.5
    state: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.strength < 1:
            raise ValueError(f"smoothing strength must be in [0, 1) (0 = off), got {self.strength}")

    def __call__(self, track_id: int, probs: np.ndarray) -> np.ndarray:
        previous = self.state.get(track_id)
        smoothed = probs if previous is None else self.strength * previous + (1 - self.strength) * probs
        self.state[track_id] = smoothed
        return smoothed
