"""#38 round 3, items 6 and 7: nothing left behind (the app's clip folders, bundle's and publish's staging on every
path out, Ctrl-C included), and the Live tab's backend: idle streams closed, a stream over the limit told when to
come back, and frames of any shape and dtype converted or refused with a sentence. Backend functions only: no
browser, no server."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import save_tiny_cnn
from skimage import data as skdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "spaces_app"))
import backend  # noqa: E402  (the app's own logic)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_cnn(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def catalogue(tiny):
    return backend.ModelCatalogue([backend.ModelEntry(str(tiny), predictor=backend.Predictor(tiny))])


@pytest.fixture
def own_tmp(tmp_path, monkeypatch) -> Path:
    """tempfile's folder for this test alone, so what is left behind can be counted."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


# ---------------------------------------------------------------- the Video tab's plot folders
def _clip(path: Path, frames: int = 4) -> Path:
    face = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 4, (256, 256))
    for _ in range(frames):
        writer.write(cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_the_video_tab_keeps_the_plot_folders_of_the_last_clips_only(catalogue, tiny, own_tmp, monkeypatch):
    monkeypatch.setattr(backend, "VIDEO_FOLDERS", backend.RecentFolders("fer_app_video_", keep=2))
    clip = _clip(own_tmp.parent / "clip.avi")
    served = []
    for _ in range(4):
        out = backend.predict_clip(catalogue, str(clip), str(tiny), 2)
        served.append(Path(out.plots[0][0]))
        assert served[-1].is_file()  # the clip just analysed: its PNGs are there to be served
    assert [p.exists() for p in served] == [False, False, True, True]
    assert len(list(own_tmp.glob("fer_app_video_*"))) == 2

    broken = own_tmp.parent / "broken.avi"
    broken.write_text("not a video")
    with pytest.raises(backend.UserInputError, match="cannot be used as a video"):
        backend.predict_clip(catalogue, str(broken), str(tiny), 2)
    assert len(list(own_tmp.glob("fer_app_video_*"))) == 2  # a refused clip leaves no folder
    backend.VIDEO_FOLDERS.clear()  # what runs when the app exits
    assert not list(own_tmp.glob("fer_app_video_*"))


# ---------------------------------------------------------------- bundle's staging folder
@pytest.mark.parametrize("failure", [FileNotFoundError("no such data"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_bundle_leaves_no_staging_folder(failure, tmp_path, monkeypatch):
    from fer_hf.hub import bundle as hub_bundle
    from fer_hf.models.loading import DEFAULT_MODEL_DIR

    def load_split(*args, **kwargs):  # fails after the weights were copied into the staging folder
        assert (tmp_path / ".out.partial" / "model.safetensors").is_file()
        raise failure

    monkeypatch.setattr(hub_bundle, "load_split", load_split)
    with pytest.raises(type(failure)):
        hub_bundle.bundle(DEFAULT_MODEL_DIR, "recipes/cnn_swa.yaml", "bundled", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no .out.partial, no out


# ---------------------------------------------------------------- publish's staged folder
def _run_folder(tmp_path: Path) -> Path:
    import shutil

    from fer_hf.models.loading import DEFAULT_MODEL_DIR

    run = tmp_path / "run"
    shutil.copytree(DEFAULT_MODEL_DIR, run, ignore=shutil.ignore_patterns("evaluation*", "comparison"))
    return run


@pytest.mark.parametrize("failure", [ValueError("the card does not parse"), KeyboardInterrupt()])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_refused_or_interrupted_publish_leaves_no_staged_folder(
    failure, dry_run, tmp_path, own_tmp, monkeypatch, capsys
):
    from fer_hf.hub import publish

    def refuse(stage_dir, *args, **kwargs):  # after the model was staged: the validation refuses it
        assert (stage_dir / "config.json").is_file()
        raise failure

    monkeypatch.setattr(publish, "validate_stage", refuse)
    run = _run_folder(tmp_path)
    out = tmp_path / "staged"
    call = lambda: publish.publish_run(run, "user/fer", dry_run=str(out) if dry_run else None)  # noqa: E731
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            call()
    else:
        with pytest.raises(publish.PublishError) as refused:
            call()
        err = str(refused.value)
        assert "the card does not parse" in err and "incomplete staged folder" in err and "was removed" in err, err
    assert not out.exists() and not list(own_tmp.iterdir())  # neither the --dry-run folder nor a temporary one


def test_publish_leaves_a_users_non_empty_folder_as_it_was(tmp_path, capsys):
    from fer_hf.hub import publish

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(publish.PublishError, match="is not empty; pass --overwrite"):
        publish.publish_run(_run_folder(tmp_path), "user/fer", dry_run=str(out))
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- the Live tab
class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_streams_close_idle_ones_and_refuse_one_over_the_limit_with_a_sentence():
    clock = Clock()
    streams = backend.LiveStreams(limit=2, idle_s=10, clock=clock)
    assert streams.admit("a") is False and streams.admit("b") is False  # two streams open
    clock.now += 4
    assert streams.admit("a") is True  # a goes on
    with pytest.raises(backend.UserInputError) as caught:
        streams.admit("c")
    assert str(caught.value).startswith("2 live streams are open") and "try again in 6 s" in str(caught.value)
    clock.now += 7  # b sent nothing for 11 s: closed, its place is c's
    assert streams.admit("c") is False and len(streams) == 2
    streams.release("c")  # the Record button stopped
    assert len(streams) == 1 and streams.admit("d") is False


def test_a_live_stream_idle_too_long_starts_afresh_and_one_over_the_limit_is_told(catalogue, tiny, monkeypatch):
    clock = Clock()
    streams = backend.LiveStreams(limit=1, idle_s=10, clock=clock)
    photo = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    first = backend.live_frame(catalogue, photo, str(tiny), 0.6, None, streams)
    first = backend.live_frame(catalogue, photo, str(tiny), 0.6, first.session, streams)
    assert first.session.frames == 2 and "no frame came" not in first.speed
    with pytest.raises(backend.UserInputError, match=r"^1 live streams are open.*try again in 10 s"):
        backend.live_frame(catalogue, photo, str(tiny), 0.6, None, streams)  # another browser
    clock.now += 11
    again = backend.live_frame(catalogue, photo, str(tiny), 0.6, first.session, streams)
    assert again.session.frames == 1 and again.session.token == first.session.token  # afresh, in its place
    assert "no frame came for over 10 s, so the stream was closed; it starts afresh" in again.speed


def _rgba(photo):
    return np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])


def _data_url(photo) -> str:
    import base64

    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()


PHOTO = cv2.resize(skdata.astronaut(), (128, 128), interpolation=cv2.INTER_AREA)
GRAY = cv2.cvtColor(PHOTO, cv2.COLOR_RGB2GRAY)
FRAME_CASES = {  # name -> (frame, the (H, W, 3) uint8 it must become, or a fragment of the refusal)
    "RGB uint8": (PHOTO, PHOTO),
    "gray 2-D": (GRAY, np.dstack([GRAY] * 3)),
    "gray (H, W, 1)": (GRAY[..., None], np.dstack([GRAY] * 3)),
    "16-bit gray": (GRAY.astype(np.uint16) * 257, np.dstack([GRAY] * 3)),
    "16-bit RGB": (PHOTO.astype(np.uint16) * 257, PHOTO),
    "RGBA": (_rgba(PHOTO), PHOTO),
    "float fractions": (PHOTO / 255.0, PHOTO),
    "a data URL": (_data_url(PHOTO), PHOTO),
    "None": (None, "The webcam sent no picture"),
    "a string": ("hello", "is text that is not a base64-encoded picture"),
    "bad base64": ("data:image/png;base64,@@@not-base64@@@", "is text that is not a base64-encoded picture"),
    "base64 of text": ("aGVsbG8gd29ybGQ=", "is text that is not a base64-encoded picture"),
    "a number": (42, "The webcam frame is a int, not a picture"),
    "a list": ([[1, 2], [3, 4]], "The webcam frame is a list, not a picture"),
    "strings in an array": (np.array([["a"]]), "is an array of <U1, not a picture"),
    "two channels": (PHOTO[..., :2], "has shape (128, 128, 2)"),
    "1-D": (PHOTO.ravel(), "has shape (49152,)"),
    "empty": (np.zeros((0, 0, 3), np.uint8), "has shape (0, 0, 3)"),
    "NaN": (np.full((16, 16, 3), np.nan), "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(FRAME_CASES))
def test_live_frames_of_any_shape_and_dtype_are_converted_or_refused(case):
    frame, expected = FRAME_CASES[case]
    if isinstance(expected, str):
        with pytest.raises(backend.UserInputError) as caught:
            backend.live_rgb(frame)
        assert expected in str(caught.value), caught.value
        return
    rgb = backend.live_rgb(frame)
    assert rgb.dtype == np.uint8 and rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected).max() <= 1  # 16-bit and float round to the same 8-bit values


def test_a_refused_frame_reaches_the_page_as_a_sentence(catalogue, tiny):
    import app

    annotated, table, speed, session, rows = app.on_live(catalogue, "hello", str(tiny), 0.6, None, None)
    assert annotated is None and "is text that is not a base64-encoded picture" in speed and session is None
    assert rows.rows == []  # nothing kept for a refused frame


def test_the_live_tab_says_its_limits():
    import app

    demo = app.build_demo(backend.ModelCatalogue([]), backend.ComparisonView(folder=REPO))
    texts = [b.value or "" for b in demo.blocks.values() if type(b).__name__ == "Markdown"]
    assert any(f"no frame for {backend.LIVE_IDLE_S} s is closed" in t for t in texts)
    assert any(f"{backend.LIVE_MAX_STREAMS} streams run at once" in t for t in texts)
