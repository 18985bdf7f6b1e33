"""Annotated images: numbered face boxes with 'label probability' and landmarks, text kept inside the image.

Used by `fer_hf.predict` (--annotate), the app's photo and Live tabs; the numbers are the faces' order in the JSON,
the CSV and the app's panels (or their track ids in a video).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def draw_faces(
    rgb: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    preds: Sequence,  # fer_hf.inference.predictions.FacePrediction: label, score (+ smoothed_label, smoothed)
    landmarks: Sequence[np.ndarray | None] | None = None,
    numbers: Sequence[int] | None = None,
    smoothed: bool = False,
) -> np.ndarray:
    """A copy of `rgb` (H, W, 3) with each box, its number (1, 2, ... unless `numbers`, e.g. track ids), 'label
    prob' (the smoothed label with `smoothed`) and the landmarks drawn. The text scales with the box and always
    stays inside the image."""
    canvas = np.ascontiguousarray(rgb).copy()
    numbers = numbers or range(1, len(preds) + 1)
    landmarks = landmarks or [None] * len(preds)
    for box, pred, points, number in zip(boxes, preds, landmarks, numbers, strict=True):
        x, y, w, h = box
        line = max(1, round(w / 60))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOUR, line)
        for px, py in [] if points is None else points:
            cv2.circle(canvas, (int(round(px)), int(round(py))), max(1, round(w / 40)), (255, 80, 80), -1)
        label, score = (
            (pred.smoothed_label, pred.smoothed[pred.smoothed_label]) if smoothed else (pred.label, pred.score)
        )
        _label(canvas, f"{number} {label} {score:.2f}", x, y, y + h, scale=min(3.0, max(0.35, w / 170)))
    return canvas


BOX_COLOUR = (0, 220, 0)


def _label(canvas: np.ndarray, text: str, x: int, top: int, bottom: int, scale: float) -> None:
    """`text` in black on a filled box placed by `label_rect`."""
    x0, y0, w, h, scale = label_rect(text, x, top, bottom, scale, canvas.shape[1], canvas.shape[0])
    thickness = max(1, round(scale * 2))
    cv2.rectangle(canvas, (x0, y0), (x0 + w, y0 + h), BOX_COLOUR, -1)
    baseline = cv2.getTextSize(text, LABEL_FONT, scale, thickness)[1]
    cv2.putText(canvas, text, (x0 + 2, y0 + h - baseline - 2), LABEL_FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)


LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX


def label_rect(text: str, x: int, top: int, bottom: int, scale: float, width: int, height: int) -> tuple:
    """Where a label goes: (x0, y0, w, h, font scale) of its box, above the face box (`top`) when there is room,
    else below it (`bottom`), else inside it; shifted left to end inside the image; the font scale shrunk until the
    text fits the image's width."""
    while True:
        thickness = max(1, round(scale * 2))
        (tw, th), base = cv2.getTextSize(text, LABEL_FONT, scale, thickness)
        if tw + 4 <= width or scale <= 0.3:
            break
        scale *= 0.8
    w, h = tw + 4, th + base + 4
    y0 = top - h if top - h >= 0 else bottom if bottom + h <= height else max(0, top)
    x0 = min(max(0, x), max(0, width - w))
    return x0, y0, w, h, scale
