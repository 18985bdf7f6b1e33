"""Video outputs and live sources (#37 items 2-4): frame times from presentation timestamps (a variable-frame-rate
clip built with PyAV), no_face rows with a faces count, the annotated video and per-track thumbnails, --fps refused
when it makes no sense, --webcam through the same reader on a video file (--seconds, Ctrl-C), sources that cannot
be opened or never answer, and --device for a device that is not there."""

from __future__ import annotations

import csv
import fractions
import json
import socket
import threading
import time

import cv2
import numpy as np
import pytest
import torch

from fer_hf import predict as predict_mod
from fer_hf.bench.video import group_photo, make_clip
from fer_hf.cli import run
from fer_hf.devices import DeviceError, resolve_device
from fer_hf.inference.predictor import Predictor
from fer_hf.inference.video_io import StreamFrames, VideoFrames, VideoLoadError
from fer_hf.predict import main

BLANK = (12, 13, 14)
VFR_TIMES = [0.0, 0.1, 0.2, 0.7, 0.8, 1.5, 1.6, 1.7, 2.6]  # a stall of 0.5 s, one of 0.7 s, one of 0.9 s


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(group_photo(), tmp_path_factory.mktemp("clip") / "six.avi", seconds=2, fps=10, blank=BLANK)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from helpers import save_tiny_cnn

    return str(save_tiny_cnn(tmp_path_factory.mktemp("tiny_cnn")))


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def frames_of(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


# ------------------------------------------------------------------------------------------------ times


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    av = pytest.importorskip("av", reason="PyAV builds the variable-frame-rate clip (pip install av)")
    path = tmp_path_factory.mktemp("vfr") / "vfr.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)  # the container says 10 fps; the frames say otherwise
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.time_base = fractions.Fraction(1, 1000)
        for t in VFR_TIMES:
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), int(t * 90), np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(t * 1000), stream.time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_times_are_presentation_times_not_index_over_fps(vfr_clip):
    frames = VideoFrames(vfr_clip, 0)
    assert frames.native_fps == 10  # index / fps would say 0.0, 0.1, ..., 0.8
    times = [t for _, t, _ in frames]
    assert times == pytest.approx(VFR_TIMES, abs=1e-3) and frames.time_source == "pts"
    # Sampling at 2 per second keeps one frame per half-second slot of video time, not every 5th frame.
    assert [t for _, t, _ in VideoFrames(vfr_clip, 2)] == pytest.approx([0.0, 0.7, 1.5, 2.6], abs=1e-3)


def test_the_csv_of_a_variable_rate_clip_has_its_true_times(vfr_clip, model, tmp_path):
    out = tmp_path / "vfr.csv"
    assert main([str(vfr_clip), "--model", model, "--fps", "0", "--csv", str(out)]) == 0
    rows = read_csv(out)
    assert [float(r["time_s"]) for r in rows] == pytest.approx(VFR_TIMES, abs=1e-3)
    assert {r["status"] for r in rows} == {"no_face"} and {r["faces"] for r in rows} == {"0"}


# ------------------------------------------------------------------------------------------------ outputs


def test_annotated_video_thumbnails_and_no_face_rows(clip, model, tmp_path):
    out, thumbs, table = tmp_path / "six_annotated.mp4", tmp_path / "thumbs", tmp_path / "six.csv"
    argv = [str(clip), "--model", model, "--fps", "0", "--annotate", str(out), "--thumbnails", str(thumbs)]
    assert main([*argv, "--csv", str(table)]) == 0
    rows = read_csv(table)
    by_frame = {}
    for row in rows:
        by_frame.setdefault(int(row["frame"]), []).append(row)
    assert sorted(by_frame) == list(range(23))
    for index, frame_rows in by_frame.items():
        blank = index in BLANK
        assert [r["status"] for r in frame_rows] == (["no_face"] if blank else ["ok"] * 6)
        assert {r["faces"] for r in frame_rows} == {"0" if blank else "6"}
    written = frames_of(out)
    assert len(written) == 23 and written[0].shape == (480, 640, 3)
    assert not list(tmp_path.glob(".*partial*"))  # the staging file was renamed
    source = frames_of(clip)

    def green(frame):  # the boxes and label backgrounds: (0, 220, 0) RGB
        b, g, r = (frame[..., i].astype(int) for i in range(3))
        return int(((g > 170) & (r < 90) & (b < 90)).sum())

    assert green(written[0]) > 20 * green(source[0]) + 2000  # six boxes drawn
    assert abs(green(written[BLANK[0]]) - green(source[BLANK[0]])) < 500  # nothing drawn on a grey frame
    pngs = sorted(p.name for p in thumbs.iterdir())
    assert pngs == [f"six_track{i}.png" for i in range(1, 7)]
    crop = cv2.imread(str(thumbs / "six_track1.png"))
    assert 30 < crop.shape[0] < 300 and 30 < crop.shape[1] < 300  # a face, not the frame


def test_one_annotated_video_for_two_inputs_is_refused(clip, model, tmp_path, capsys):
    out = tmp_path / "both.mp4"
    assert run(main, [str(clip), str(clip), "--model", model, "--annotate", str(out)]) == 2
    assert "--annotate" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("fps", ["-1", "nan", "inf", "two", "-0.5"])
def test_senseless_fps_is_refused(fps, clip, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(clip), "--fps", fps])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--fps: expected frames sampled per second" in err and repr(fps) in err
    with pytest.raises(ValueError, match="makes no sense"):
        VideoFrames(clip, float(fps) if fps != "two" else -3)


# ------------------------------------------------------------------------------------------------ live sources


def test_webcam_reads_a_source_for_seconds_and_writes_complete_files(clip, model, tmp_path):
    table, record, video = tmp_path / "live.csv", tmp_path / "live.json", tmp_path / "live.mp4"
    argv = ["--webcam", str(clip), "--model", model, "--fps", "0", "--seconds", "1.05"]
    assert main([*argv, "--csv", str(table), "--json", str(record), "--annotate", str(video)]) == 0
    rows = read_csv(table)
    assert sorted({int(r["frame"]) for r in rows}) == list(range(11))  # 0.0 .. 1.0 s
    assert all(r["kind"] == "stream" for r in rows)
    doc = json.loads(record.read_text())
    assert len(doc[0]["frames"]) == 11 and doc[0]["frames"][0]["status"] == "ok"
    assert len(frames_of(video)) == 11 and not list(tmp_path.glob(".*partial*"))


def test_ctrl_c_ends_a_stream_with_every_file_complete(clip, model, tmp_path, monkeypatch, capsys):
    class Interrupted(StreamFrames):
        def __iter__(self):
            for n, frame in enumerate(super().__iter__()):
                if n == 5:
                    raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the loop
                yield frame

    monkeypatch.setattr(predict_mod, "StreamFrames", Interrupted)
    table, record, video = tmp_path / "c.csv", tmp_path / "c.json", tmp_path / "c.mp4"
    argv = ["--webcam", str(clip), "--model", model, "--fps", "0", "--csv", str(table), "--json", str(record)]
    assert main([*argv, "--annotate", str(video)]) == 0
    assert sorted({int(r["frame"]) for r in read_csv(table)}) == [0, 1, 2, 3, 4]
    doc = json.loads(record.read_text())[0]
    assert len(doc["frames"]) == 5 and "Ctrl-C" in doc["warning"]
    assert len(frames_of(video)) == 5 and not list(tmp_path.glob(".*partial*"))
    assert "Ctrl-C" in capsys.readouterr().out


def test_sources_that_cannot_be_opened_are_one_sentence_and_quick(model, capsys):
    for source, message in [
        ("99", "camera index 99 cannot be opened"),
        ("rtsp://127.0.0.1:1/cam", "cannot be opened"),
    ]:
        start = time.monotonic()
        assert run(main, ["--webcam", source, "--model", model]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --webcam {source}:") and message in err and "\n" not in err
        assert time.monotonic() - start < 3  # refused before the model loads


def test_a_url_that_never_sends_a_frame_times_out():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/live.mjpg"
    start = time.monotonic()
    with pytest.raises(VideoLoadError, match=r"gave no frame within 1\.5 s"):
        StreamFrames(url, 0, timeout=1.5)
    assert time.monotonic() - start < 4 and accepted  # it connected, waited, and gave up on time
    server.close()


# ------------------------------------------------------------------------------------------------ devices


def test_device_auto_and_a_missing_device(monkeypatch, clip, capsys):
    mps = torch.backends.mps.is_available()
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="not a device name"):
        resolve_device("banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="torch sees no CUDA GPU here"):
        resolve_device("cuda:0")
    assert run(main, [str(clip), "--device", "cuda"]) == 2  # refused before any model loads
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda: torch sees no CUDA GPU") and "\n" not in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_evaluate_resolves_its_device_before_loading(monkeypatch, capsys):
    from fer_hf.evaluate import parse_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert parse_args(["default", "--data", "bundled"]).device == "cpu"
    with pytest.raises(SystemExit):
        parse_args(["default", "--data", "bundled", "--device", "cuda"])
    assert "torch sees no CUDA GPU" in capsys.readouterr().err


def test_predictor_keeps_track_ids_through_the_stream_reader(clip, model):
    predictor = Predictor(model, batch_size=8)
    result = predictor.predict_stream(StreamFrames(str(clip), 0))
    ids = {f.track_id for frame in result.frames for f in frame.faces}
    assert ids == {1, 2, 3, 4, 5, 6} and len(result.frames) == 23 and result.time_source == "pts"
