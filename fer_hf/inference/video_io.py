"""Frames in, with the time each was shown: video files, cameras and network streams through one reader.

`VideoFrames(path, fps)` reads a file; `StreamFrames(source, fps, seconds=...)` any OpenCV source (a camera index, a
device path, an RTSP/HTTP URL, or a file read like a stream). Both yield (frame index, time in s, RGB (H, W, 3)),
sampled at `fps` per second of *presentation time* (0: every frame).

Times come from each frame's presentation timestamp (OpenCV's CAP_PROP_POS_MSEC after `grab()`), not from
index / container fps: in a variable-frame-rate file (phones, screen recordings) the two drift apart by seconds. Where
a backend gives no usable timestamp (0 or going backwards after the first frame) the reader falls back to index / fps
for a file and to the wall clock for a live source, and says so in `time_source`.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

Frame = tuple[int, float, np.ndarray]  # (index among all decoded frames, presentation time in s, RGB uint8)
DEFAULT_OPEN_TIMEOUT_S = 10.0


class VideoLoadError(ValueError):
    """A file that cannot be decoded as a video, or a camera/stream that cannot be opened or gives no frame."""


def check_fps(fps: float) -> float:
    """A sampling rate: a finite number >= 0 (0 = every frame). Anything else is refused with a sentence."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps < 0:
        raise ValueError(
            f"fps {fps!r} makes no sense: expected frames sampled per second, a finite number > 0, or 0 for every frame"
        )
    return float(fps)


def sample_fps(text: str) -> float:
    """argparse type of --fps: refuses non-numbers, nan/inf and negative rates with a sentence (exit 2)."""
    try:
        return check_fps(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected frames sampled per second, a number > 0, or 0 for every frame; got {text!r}"
        ) from None


class _Sampler:
    """Keeps the frames at least 1/fps apart in presentation time (every frame when fps == 0)."""

    def __init__(self, fps: float):
        self.fps, self.next_time = fps, 0.0

    def keep(self, time_s: float) -> bool:
        if self.fps <= 0:
            return True
        if time_s + 1e-6 < self.next_time:
            return False
        # The next slot of the 1/fps grid after this frame: after a gap (variable frame rate) the frames that follow
        # are not all kept to catch up.
        self.next_time = (math.floor((time_s + 1e-6) * self.fps) + 1) / self.fps
        return True


class _Clock:
    """Presentation time per grabbed frame: POS_MSEC while it is usable, else the fallback (index/fps or wall)."""

    def __init__(self, native_fps: float, live: bool):
        self.native_fps, self.live = native_fps, live
        self.first_pos: float | None = None
        self.last: float = -1.0
        self.start = time.monotonic()
        self.time_source = "pts"

    def __call__(self, capture: cv2.VideoCapture, index: int) -> float:
        pos = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if self.time_source == "pts" and math.isfinite(pos) and pos >= 0 and (index == 0 or pos > self.last):
            if self.first_pos is None:
                self.first_pos = pos if self.live else 0.0  # a camera's clock starts anywhere; a file's at 0
            self.last = pos
            return pos - self.first_pos
        self.time_source = "wall clock" if self.live else "index/fps"  # and stays so: no mixing of clocks
        return time.monotonic() - self.start if self.live else index / self.native_fps


def _native_fps(capture: cv2.VideoCapture) -> float:
    value = capture.get(cv2.CAP_PROP_FPS)
    # Some containers carry no frame rate: assume 25 so fallback timestamps stay meaningful.
    return float(value) if value and np.isfinite(value) and 0 < value < 1000 else 25.0


def _frames(capture: cv2.VideoCapture, fps: float, clock: _Clock, state: dict) -> Iterator[Frame]:
    sampler, index = _Sampler(fps), 0
    try:
        while capture.grab():  # grab() skips the colour conversion of frames that are not kept
            time_s = clock(capture, index)
            if state.get("seconds") is not None and time_s >= state["seconds"]:
                break
            if sampler.keep(time_s):
                ok, frame = capture.retrieve()
                if ok:
                    yield index, time_s, _rgb(frame)
            index += 1
    finally:
        state["frames_read"] = index
        capture.release()


def _rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB)


class VideoFrames:
    """Iterate (frame index, presentation time in s, RGB (H, W, 3)) over a video file's frames sampled at `fps`
    (all frames when fps == 0)."""

    def __init__(self, path: str | Path, fps: float):
        self.path, self.fps = Path(path), check_fps(fps)
        if not self.path.is_file():
            raise VideoLoadError("no such file")
        capture = cv2.VideoCapture(str(self.path))
        opened = capture.isOpened()
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.native_fps = _native_fps(capture)
        capture.release()
        if not opened:
            raise VideoLoadError("not a readable video (OpenCV could not open it)")
        step = self.native_fps / self.fps if self.fps > 0 else 1.0
        self.expected = max(1, int(count / max(step, 1.0))) if count and count > 0 else None
        self.frame_count = int(count) if count and count > 0 else None  # what the container announces
        self.frames_read = 0
        self.time_source = "pts"

    def __iter__(self) -> Iterator[Frame]:
        clock, state = _Clock(self.native_fps, live=False), {}
        try:
            yield from _frames(cv2.VideoCapture(str(self.path)), self.fps, clock, state)
        finally:
            self.frames_read, self.time_source = state.get("frames_read", 0), clock.time_source

    def stopped_early(self) -> str | None:
        """A sentence when decoding ended well before the announced frame count (a cut or corrupt file)."""
        if self.frame_count and self.frames_read < 0.95 * self.frame_count - 1:
            return (
                f"decoding stopped at frame {self.frames_read} of the {self.frame_count} announced; "
                "the results up to there are kept"
            )
        return None


def parse_source(source: str | int) -> str | int:
    """'0' -> camera index 0; anything else (a device path, a URL, a file) stays text."""
    if isinstance(source, int):
        return source
    text = str(source).strip()
    return int(text) if text.isdigit() else text


def describe_source(source: str | int) -> str:
    return f"camera index {source}" if isinstance(source, int) else f"source {source}"


class StreamFrames:
    """A camera, device, URL or file opened as a live source: frames until it ends, `seconds` of presentation time
    have passed, or the caller stops (Ctrl-C). Opening and the first frame must succeed within `timeout` seconds:
    a camera that is not there or a URL that never answers is a VideoLoadError sentence, not a hang."""

    def __init__(
        self,
        source: str | int,
        fps: float = 0.0,
        *,
        seconds: float | None = None,
        timeout: float = DEFAULT_OPEN_TIMEOUT_S,
    ):
        self.source, self.fps = parse_source(source), check_fps(fps)
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds {seconds!r}: expected a positive number of seconds to read")
        self.seconds, self.timeout = seconds, timeout
        self.capture, self.first = self._open()
        self.native_fps = _native_fps(self.capture)
        self.frames_read, self.time_source = 0, "pts"
        self.path = str(source)

    def _open(self) -> tuple[cv2.VideoCapture, bool]:
        """Open and grab the first frame in a helper thread, so that a stream that blocks cannot hang the caller."""
        found: dict = {}
        ms = int(self.timeout * 1000)

        def work() -> None:
            found["start"] = time.monotonic()
            try:
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
                capture = cv2.VideoCapture(self.source, cv2.CAP_ANY, params)
                found["capture"] = capture
                found["opened"] = capture.isOpened()
                found["grabbed"] = found["opened"] and capture.grab()
            except cv2.error as err:  # some backends raise instead of returning a closed capture
                found["error"] = str(err).strip().splitlines()[-1]
            found["seconds"] = time.monotonic() - found["start"]

        thread = threading.Thread(target=work, daemon=True)
        with _quiet_opencv():  # its WARN lines about a missing camera would bury the one sentence
            thread.start()
            thread.join(self.timeout + 1.0)
        what = describe_source(self.source)
        if thread.is_alive() or found.get("seconds", 0.0) >= 0.9 * self.timeout:  # FFmpeg's own timeout fired
            raise VideoLoadError(f"{what} gave no frame within {self.timeout:g} s; check that it is streaming")
        if "error" in found or not found.get("opened"):
            reason = f" ({found['error']})" if "error" in found else ""
            raise VideoLoadError(
                f"{what} cannot be opened by OpenCV{reason}; expected a camera index (0, 1, ...), a device path, "
                "an RTSP/HTTP URL or a video file"
            )
        if not found.get("grabbed"):
            found["capture"].release()
            raise VideoLoadError(f"{what} opened but gave no frame within {self.timeout:g} s")
        return found["capture"], True

    def __iter__(self) -> Iterator[Frame]:
        clock = _Clock(self.native_fps, live=not self._is_file())
        state = {"seconds": self.seconds}
        try:
            yield from _frames(_Regrab(self.capture), self.fps, clock, state)
        finally:
            self.frames_read, self.time_source = state.get("frames_read", 0), clock.time_source

    def _is_file(self) -> bool:
        return isinstance(self.source, str) and Path(self.source).is_file()


class _Regrab:
    """The capture, whose first grab() (done while opening) is handed out again instead of grabbing a second time."""

    def __init__(self, capture: cv2.VideoCapture):
        self.capture, self.pending = capture, True

    def grab(self) -> bool:
        if self.pending:
            self.pending = False
            return True
        return self.capture.grab()

    def __getattr__(self, name: str):
        return getattr(self.capture, name)


class _quiet_opencv:
    """OpenCV's log level at ERROR for a while (its backends warn on every source they cannot open)."""

    def __enter__(self):
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        self.logging = logging
        if logging is not None:
            self.level = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)
        return self

    def __exit__(self, *exc) -> None:
        if self.logging is not None:
            self.logging.setLogLevel(self.level)
