"""The Gradio app (spaces_app/app.py), used the way people use it: a server started as `python spaces_app/app.py`,
driven through gradio_client and through a real headless Chromium (Debian's `chromium`, via Playwright).

The server gets a tiny random CNN through FER_HF_MODELS (plus a model folder that does not exist, which must be
reported and skipped), and a comparison folder made by the real `fer_hf.evaluate` + `fer_hf.compare` commands on
the bundled FER2013 sample. One server serves the whole module: start-up (torch + transformers + gradio) is the
slow part.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from fer_hf.inference.writers import csv_columns
from fer_hf.labels import FER_LABELS
from fer_hf.models import loading

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "spaces_app" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 240  # torch + transformers + gradio imports on 2 busy cores
ASTRONAUT_FACE = (150, 40, 320, 230)  # (x0, y0, x1, y1): where the face is in skimage's astronaut photo

sys.path.insert(0, str(REPO / "spaces_app"))
import backend  # noqa: E402  (the app's own logic, for the checks that need no server)

# ---------------------------------------------------------------- fixtures: model, comparison, server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-block FerCnn saved like a trained one (weights + image processor)."""
    import torch

    from fer_hf.models.cnn_family import cnn_image_processor
    from fer_hf.models.hub_code import FerCnnConfig, FerCnnForImageClassification

    torch.manual_seed(0)
    config = FerCnnConfig(
        preset=None, blocks=[{"out_channels": 8, "pool": "max"}, {"out_channels": 16, "pool": "max"}], hidden_sizes=[]
    )
    out = tmp_path_factory.mktemp("models") / "tiny_cnn"
    FerCnnForImageClassification(config).save_pretrained(out)
    cnn_image_processor(48).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, tiny_model) -> Path:
    """A real comparison folder: the tiny model evaluated on the bundled validation faces, then tabulated."""
    from fer_hf import compare, evaluate

    root = tmp_path_factory.mktemp("comparison")
    args = [str(tiny_model), "--data", "bundled", "--split", "validation", "--device", "cpu"]
    assert evaluate.main([*args, "--output", str(root / "eval_tiny")]) == 0
    assert compare.main([str(root / "eval_tiny"), "--output", str(root / "table")]) == 0
    return root / "table"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model, comparison):
    """`python spaces_app/app.py` on a free port; yields its URL, stops it afterwards."""
    port, logs = free_port(), tmp_path_factory.mktemp("server")
    env = {
        **os.environ,
        "FER_HF_MODELS": f"{tiny_model},{logs / 'no_such_model'}",
        "FER_HF_COMPARISON": str(comparison),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    log_path = logs / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(APP)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_server(proc, url, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for_server(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode} during start-up:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer on {url} within {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Real photos from scikit-image (one with a face, one without), a text file posing as a PNG, a huge PNG."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.coins()).save(folder / "coins.png")
    (folder / "notes.png").write_text("this is text, not an image")
    Image.new("1", (15000, 13000)).save(folder / "bomb.png")  # 195 megapixels in 24 kB: a decompression bomb
    return {path.stem: path for path in folder.iterdir()}


def predict(client, path: Path | None, tiny_model: Path, method: str = "none"):
    """The page's own event (component updates, positional), callable but left out of the API docs."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)) if path else None, str(tiny_model), method, api_name="/photo_page")


def label_value(update) -> dict:
    """A gr.Label output as the client sees it: an update dict carrying the value, or the value itself."""
    return update.get("value", update) if isinstance(update, dict) and "__type__" in update else update


# ---------------------------------------------------------------- gradio_client


def test_face_photo_gives_annotated_image_boxes_and_seven_probabilities(client, tiny_model, photos):
    annotated, face1, *_, details, status = predict(client, photos["astronaut"], tiny_model)
    drawn = np.asarray(Image.open(annotated).convert("RGB"))
    original = data.astronaut()
    assert drawn.shape == original.shape
    assert (np.abs(drawn.astype(int) - original).sum(-1) > 60).mean() > 0.001  # boxes and text were drawn on it
    confidences = {c["label"]: c["confidence"] for c in label_value(face1)["confidences"]}
    assert set(confidences) == set(FER_LABELS)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-3)
    assert label_value(face1)["label"] == max(confidences, key=confidences.get)
    assert len(details) == 1 and "Found 1 face" in status
    x, y, w, h = details[0]["box_xywh"]
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert x0 <= x + w / 2 <= x1 and y0 <= y + h / 2 <= y1, f"box {details[0]['box_xywh']} is not on her face"


def test_no_face_photo_returns_a_message_and_hides_the_last_photos_panels(client, tiny_model, photos):
    predict(client, photos["astronaut"], tiny_model)  # a face first: panel 1 says "Face 1: <emotion>"
    annotated, *panels, _, details, status = predict(client, photos["coins"], tiny_model)
    assert "No face found" in status
    assert details == [] and not label_value(panels[0])
    assert [(p["visible"], p["label"]) for p in panels] == [(False, f"Face {i}") for i in range(1, 7)]


def test_api_has_named_endpoints_only_and_photo_returns_a_dict(client, tiny_model, photos):
    from gradio_client import handle_file

    info = client.view_api(return_format="dict", print_info=False)
    assert sorted(info["named_endpoints"]) == ["/photo", "/video"] and not info["unnamed_endpoints"]
    out = client.predict(handle_file(str(photos["astronaut"])), str(tiny_model), "none", api_name="/photo")
    assert set(out) == {"faces", "annotated", "overlays", "message", "warning"}
    assert out["warning"] is False and "Found 1 face" in out["message"] and out["overlays"] == []
    (face,) = out["faces"]
    assert set(face["probabilities"]) == set(FER_LABELS) and face["label"] in FER_LABELS
    assert np.asarray(Image.open(out["annotated"])).shape == data.astronaut().shape  # downloaded by the client
    missing = client.predict(handle_file(str(photos["coins"])), api_name="/photo")  # the default model
    assert missing["warning"] is True and missing["faces"] == [] and "No face found" in missing["message"]
    unknown = client.predict(handle_file(str(photos["astronaut"])), "no/such-model", api_name="/photo")
    assert unknown["warning"] is True and "Unknown model 'no/such-model'" in unknown["message"]


def test_bad_input_gives_messages_and_the_server_keeps_serving(client, tiny_model, photos):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="cannot be used: not a readable image"):
        predict(client, photos["notes"], tiny_model)
    with pytest.raises(AppError, match="cannot be used: too large"):
        predict(client, photos["bomb"], tiny_model)
    assert "Upload a photo" in predict(client, None, tiny_model)[-1]
    with pytest.raises(ValueError, match="not in the list of choices"):  # the model selector only offers loaded ones
        client.predict(None, "no/such-model", "none", api_name="/photo_page")
    assert "Found 1 face" in predict(client, photos["astronaut"], tiny_model)[-1]


def test_explanation_overlays(client, tiny_model):
    face = REPO / "spaces_app" / "examples" / "fer_happy.png"
    *_, gallery, details, status = predict(client, face, tiny_model, "gradcam")
    (item,) = label_value(gallery)
    assert Image.open(item["image"]).size == (240, 240)
    assert "Grad-CAM" in item["caption"] and details[0]["label"] in item["caption"]
    *_, gallery, _, status = predict(client, face, tiny_model, "attention")  # a CNN has no attention to roll out
    assert "does not apply" in status and not label_value(gallery)


def test_many_requests_at_once_are_queued_and_all_answered(client, tiny_model, photos):
    from gradio_client import handle_file

    jobs = [
        client.submit(handle_file(str(photos[name])), str(tiny_model), "none", api_name="/photo")
        for name in ("astronaut", "coins", "astronaut", "coins", "astronaut")
    ]
    statuses = [job.result(timeout=120)["message"] for job in jobs]
    assert [("Found 1 face" in s, "No face" in s) for s in statuses] == [(True, False), (False, True)] * 2 + [
        (True, False)
    ]


def test_video_timeline_and_distribution(client, tiny_model, tmp_path):
    from gradio_client import handle_file

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    face, flat = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), np.full((512, 512, 3), 128, np.uint8)
    for i in range(30):  # 2 s with the astronaut, then 1 s of grey
        writer.write(face if i < 20 else flat)
    writer.release()
    out = client.predict(handle_file(str(clip)), str(tiny_model), 5, api_name="/video")
    faces_per_frame = [row["faces"] for row in out["frames"]]
    assert len(faces_per_frame) == 15 and faces_per_frame[:10] == [1] * 10 and faces_per_frame[10:] == [0] * 5
    assert len(out["timeline"]) == 10 and {row["face"] for row in out["timeline"]} == {"Face 1"}
    assert set(out["distribution"]) == set(FER_LABELS) and sum(out["distribution"].values()) == pytest.approx(1.0)
    assert "10 with a face" in out["message"] and "1 face(s) followed" in out["message"]
    assert [(t["face"], t["frames"]) for t in out["tracks"]] == [(1, 10)]  # face 1, seen in 10 frames
    assert [item["caption"] for item in out["plots"]] == ["All faces over time", "Face 1"]
    assert [Path(item["image"]).name for item in out["plots"]] == ["clip_timeline.png", "clip_face1.png"]
    timeline, *_, status = client.predict(handle_file(str(clip)), str(tiny_model), 5, api_name="/video_page")
    assert timeline["data"] and "10 with a face" in status  # the page's event: the same analysis


def test_video_timeline_has_one_series_per_track(tiny_model, tmp_path):
    """Six people: the main plot's rows carry each face's track (its colour), not only the largest face's."""
    from fer_hf.bench.video import group_photo

    catalogue = backend.ModelCatalogue([backend.ModelEntry(str(tiny_model), predictor=backend.Predictor(tiny_model))])
    photo = cv2.cvtColor(cv2.resize(group_photo(), (640, 444), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    clip = tmp_path / "group.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (640, 444))
    for shift in range(0, 20, 4):
        writer.write(np.roll(photo, shift, axis=1))
    writer.release()
    out = backend.predict_clip(catalogue, str(clip), str(tiny_model), 5)
    per_face = {}
    for row in out.timeline:
        per_face.setdefault(row["face"], []).append(row["time_s"])
    assert sorted(per_face) == [f"Face {i}" for i in range(1, 7)] and all(len(t) == 5 for t in per_face.values())
    assert {row["emotion"] for row in out.timeline} <= set(FER_LABELS)


def test_an_avi_upload_gets_a_browser_playable_preview(tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (700, 500))
    for i in range(10):
        writer.write(np.full((500, 700, 3), 20 * i, np.uint8))
    writer.release()
    assert not backend.is_playable(str(clip))
    preview = backend.playable_preview(str(clip))
    capture = cv2.VideoCapture(preview)
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    size = (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    assert preview.endswith(".webm") and fourcc == "vp80" and size == (640, 456)  # at most 640 a side, even
    assert backend.is_playable(preview) and backend.playable_preview(preview) is None


# ---------------------------------------------------------------- the page in a real browser


def test_page_in_headless_chromium(server, tmp_path, photos):
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.is_file(), "the browser test needs Debian's chromium: apt-get install -y chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(server, wait_until="domcontentloaded", timeout=60_000)
            expect(page.get_by_role("button", name="Detect and classify")).to_be_visible(timeout=60_000)
            expect(page.locator("#model-problems")).to_contain_text("no_such_model could not be loaded")

            page.locator("input[type=file]").first.set_input_files(str(photos["astronaut"]))  # an upload
            page.get_by_label("Grad-CAM").check()
            page.get_by_role("button", name="Detect and classify").click()
            expect(page.locator("#photo-status")).to_contain_text("Found 1 face", timeout=60_000)
            expect(page.get_by_text("Face 1: Grad-CAM for")).to_be_visible(timeout=30_000)
            page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)

            page.get_by_text("FER2013 face (happy)").click()  # an example: runs on click
            expect(page.locator("#photo-status")).to_contain_text("already-cropped face", timeout=60_000)
            label = page.get_by_test_id("label").first  # the probability panel of face 1
            expect(label).to_contain_text("Face 1", timeout=30_000)
            expect(label).to_contain_text(re_any(FER_LABELS))

            page.get_by_role("tab", name="Video").click()  # an mp4v upload: shown as a playable WebM copy
            page.locator("#video-clip input[type=file]").set_input_files(str(mp4v_clip(tmp_path / "clip.mp4")))
            expect(page.locator("#video-status")).to_contain_text("shown as a WebM", timeout=60_000)
            shown = page.locator("#video-clip video")
            page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=shown.element_handle(),
                                   timeout=30_000)  # fmt: skip
            # The player now holds the WebM copy (the toast from the first try at the raw upload stays a while).
            assert shown.get_attribute("src").endswith("_preview.webm")

            page.get_by_role("tab", name="Compare").click()
            bundled = page.locator("#bundled-table")
            for name in loading.BUNDLED_MODELS:
                expect(bundled).to_contain_text(name, timeout=30_000)
            table = page.locator("#comparison-table table")
            expect(table).to_be_visible(timeout=30_000)
            expect(table).to_contain_text("macro-F1")
            expect(table).to_contain_text("eval_tiny")
            page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        finally:
            browser.close()
    keep = os.environ.get("FER_HF_SCREENSHOTS")  # optional: where to keep the screenshots for a look
    for name in ("predict.png", "compare.png"):
        assert Image.open(tmp_path / name).size[0] >= 1280
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp_path / name, Path(keep) / name)


def mp4v_clip(path: Path) -> Path:
    """An MPEG-4 part 2 (mp4v) clip, what OpenCV writes by default: browsers do not play it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(10):
        writer.write(np.full((240, 320, 3), 25 * i, np.uint8))
    writer.release()
    return path


def test_page_config_video_plots_and_gallery(server):
    """The Video tab's main plot has one colour per track; its timeline gallery shows whole images."""
    import json

    with urllib.request.urlopen(server + "config", timeout=30) as response:
        config = json.load(response)
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["props"].get("elem_id")}
    assert props["video-timeline"]["color"] == "face" and "face" in props["video-timeline"]["tooltip"]
    assert props["video-plots"]["object_fit"] == "contain"
    assert props["live-shown"]["show_label"] is False  # no badge over the top of the annotated frame


def test_bundled_scores_cover_every_bundled_model_and_ferplus_contempt():
    scores = backend.bundled_scores()
    assert [row["model"] for row in scores.table] == list(loading.BUNDLED_MODELS) and not scores.missing
    classes = {name: [b["class"] for b in scores.bars if b["model"] == name] for name in loading.BUNDLED_MODELS}
    assert classes["ferplus"] == [*FER_LABELS, "contempt"] and classes["ensemble"] == list(FER_LABELS)


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An uncompressed YUV4MPEG2 clip (4:2:0), the format Chromium plays as a fake webcam."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y, then U, then V planes
    return path


def test_live_tab_streams_a_webcam_in_headless_chromium(server, tmp_path):
    """Chromium's fake camera plays a clip of the real astronaut photo; the Live tab streams it to the server and
    shows her face numbered, labelled and timed."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM.is_file(), "the browser test needs Debian's chromium: apt-get install -y chromium"
    photo = cv2.resize(data.astronaut()[64:448], (320, 240), interpolation=cv2.INTER_AREA)  # 4:3, face in view
    clip = write_y4m(tmp_path / "camera.y4m", [np.roll(photo, shift, axis=1) for shift in range(0, 20, 2)])
    camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={clip}"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + camera, headless=True)
        try:
            page = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000}).new_page()
            page.goto(server, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Live").click()
            page.get_by_text("Click to Access Webcam").click()
            page.locator("button:visible", has_text="Record").click(timeout=30_000)  # the Predict tab has one too
            speed = page.locator("#live-speed")
            expect(speed).to_contain_text("1 face(s)", timeout=90_000)
            expect(speed).to_contain_text("frames/s end to end", timeout=30_000)
            expect(page.locator("#live-table")).to_contain_text(re_any(FER_LABELS), timeout=30_000)
            expect(speed).to_contain_text(re.compile(r"[1-9][0-9,]* rows kept"), timeout=30_000)
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)
            assert page.locator("#live-shown [data-testid=block-label]").filter(visible=True).count() == 0
            rows = saved_rows(page, tmp_path / "rows.csv")
            assert list(rows[0]) == csv_columns(FER_LABELS)  # predict --webcam --csv's columns
            faced = [row for row in rows if row["status"] == "ok"]
            assert faced and {row["track_id"] for row in faced} == {"1"} and rows[0]["kind"] == "stream"
            assert {row["label"] for row in faced} <= set(FER_LABELS)
            assert [int(row["frame"]) for row in rows] == sorted(int(row["frame"]) for row in rows)
            page.locator("button:visible", has_text="Stop").first.click()  # no more frames: the rows stay
            page.wait_for_timeout(1000)  # a frame already sent is still answered
            page.locator("#live-clear").click()
            expect(page.locator("#live-rows")).to_contain_text("0 rows kept", timeout=30_000)
            assert saved_rows(page, tmp_path / "cleared.csv") == []
        finally:
            browser.close()
    assert Image.open(tmp_path / "live.png").size[0] >= 1280
    if os.environ.get("FER_HF_SCREENSHOTS"):
        shutil.copy(tmp_path / "live.png", Path(os.environ["FER_HF_SCREENSHOTS"]) / "live.png")


def saved_rows(page, path: Path) -> list[dict]:
    """Save the Live tab's rows and download the CSV the way a person does: the link in the file component."""
    import csv

    page.locator("#live-save").click()
    link = page.locator("#live-csv a").first
    link.wait_for(timeout=30_000)
    with page.expect_download(timeout=30_000) as download:
        link.click()
    download.value.save_as(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == csv_columns(FER_LABELS)
    return rows


def test_live_rows_are_kept_capped_and_cleared(tiny_model, tmp_path):
    catalogue = backend.ModelCatalogue([backend.ModelEntry(str(tiny_model), predictor=backend.Predictor(tiny_model))])
    photo = cv2.resize(data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    rows, session = backend.LiveRows(limit=5), None
    for frame in (photo, np.full_like(photo, 90), photo):  # a face, none, a face
        session = backend.live_frame(catalogue, frame, str(tiny_model), 0.6, session, rows=rows).session
    assert [(r["frame"], r["status"], r["track_id"]) for r in rows.rows] == [
        (0, "ok", 1),
        (1, "no_face", ""),
        (2, "ok", 1),
    ]
    # A new smoothing strength is a new session (frames from 0 there): the rows go on counting.
    out = backend.live_frame(catalogue, photo, str(tiny_model), 0.3, session, rows=rows)
    assert out.session is not session and [r["frame"] for r in rows.rows][-1] == 3 and "4 rows kept" in out.speed
    backend.live_frame(catalogue, photo, str(tiny_model), 0.3, out.session, rows=rows)
    out = backend.live_frame(catalogue, photo, str(tiny_model), 0.3, out.session, rows=rows)  # the 6th row
    assert len(rows.rows) == 5 and rows.capped and "the most one session keeps" in out.speed
    times = [r["time_s"] for r in rows.rows]
    assert times == sorted(times) and times[0] == 0
    import csv

    with open(rows.write_csv(str(tmp_path))) as handle:
        assert len(list(csv.DictReader(handle))) == 5
    rows.clear()
    assert rows.rows == [] and not rows.capped
    with open(rows.write_csv(str(tmp_path))) as handle:
        assert handle.read().strip() == ",".join(csv_columns(FER_LABELS))


def test_live_frames_keep_their_track_numbers(tiny_model):
    from fer_hf.bench.video import group_photo

    catalogue = backend.ModelCatalogue([backend.ModelEntry(str(tiny_model), predictor=backend.Predictor(tiny_model))])
    photo = cv2.resize(group_photo(), (640, 443), interpolation=cv2.INTER_AREA)
    session, seen = None, []
    for shift in range(0, 30, 6):  # the camera pans: the same six people, a few pixels further each frame
        out = backend.live_frame(catalogue, np.roll(photo, shift, axis=1), str(tiny_model), 0.6, session)
        session = out.session
        seen.append(sorted(row["face"] for row in out.current))
        assert out.annotated.shape == photo.shape and set(row["emotion"] for row in out.current) <= set(FER_LABELS)
    assert seen == [[1, 2, 3, 4, 5, 6]] * 5
    assert "6 face(s)" in out.speed and "frames/s end to end" in out.speed and session.frames == 5
    fresh = backend.live_frame(catalogue, photo, str(tiny_model), 0.3, session)  # new smoothing: a new session
    assert fresh.session is not session and fresh.session.frames == 1
    with pytest.raises(backend.UserInputError, match="webcam sent no picture"):
        backend.live_frame(catalogue, None, str(tiny_model), 0.6, None)


def re_any(words) -> object:
    import re

    return re.compile("|".join(map(re.escape, words)))


# ---------------------------------------------------------------- the app's pieces without a server


def test_backend_file_names_match_the_commands_that_write_them():
    from fer_hf.compare import OUTPUT_STEM
    from fer_hf.evaluation.evaluator import CONFUSION_FILE

    assert backend.COMPARISON_STEM == OUTPUT_STEM and backend.CONFUSION_FILE == CONFUSION_FILE


def test_comparison_view_reads_table_charts_and_confusion_matrices(comparison, tmp_path):
    view = backend.load_comparison(comparison)
    assert "macro-F1" in view.table and view.note == ""
    assert [Path(p).name for p, _ in view.charts] == ["comparison.png"]
    assert [Path(p).name for p, _ in view.confusions] == ["confusion_eval_tiny.png"]  # copied by fer_hf.compare
    assert Path(view.confusions[0][0]).parent == comparison
    # A folder without its own copies (older fer_hf.compare) still finds the matrices beside each row's source.
    older = tmp_path / "older"
    shutil.copytree(comparison, older, ignore=shutil.ignore_patterns("confusion_*"))
    assert [Path(p).name for p, _ in backend.load_comparison(older).confusions] == ["confusion_matrix.png"]
    missing = backend.load_comparison(tmp_path / "nothing_here")
    assert missing.table == "" and "No comparison to show yet" in missing.note


def test_the_default_compare_tab_reads_the_one_copy_bundled_with_the_default_model():
    """The comparison folders live once, with the bundled models whose cards show them; the app reads the default
    model's (every compared row and its confusion matrix), and spaces_app/ keeps no copy of its own."""
    from fer_hf.models.loading import BUNDLED_MODELS

    folder = backend.comparison_folder({})
    assert folder == BUNDLED_MODELS["default"].path / "comparison"
    view = backend.load_comparison(folder)
    assert view.note == "" and "fer-resnet5-default" in view.table
    assert len(view.confusions) == view.table.count("| validation (3589) |") == 7
    app_dir = Path(backend.__file__).parent
    assert not [p for p in app_dir.rglob("comparison*") if p.is_dir()]


def bundle_as(monkeypatch, name: str, path: Path) -> None:
    """Point the bundled model `name` at `path` (a tiny model, or a missing folder) for one test."""
    bundled = loading.BUNDLED_MODELS[name]
    monkeypatch.setitem(loading.BUNDLED_MODELS, name, dataclasses.replace(bundled, path=path))


def test_catalogue_offers_every_installed_bundled_model(tiny_model, tmp_path, monkeypatch):
    bundle_as(monkeypatch, "lite0", tmp_path / "not_bundled")
    bundle_as(monkeypatch, "ensemble", tmp_path / "not_bundled")
    bundle_as(monkeypatch, "ferplus", tmp_path / "not_bundled")
    assert [entry.ref for entry in backend.ModelCatalogue.from_env({}).entries] == ["default"]
    bundle_as(monkeypatch, "lite0", tiny_model)
    catalogue = backend.ModelCatalogue.from_env({backend.MODELS_ENV: str(tiny_model)})
    assert [entry.ref for entry in catalogue.entries] == ["default", "lite0", str(tiny_model)]
    assert ("lite0 (bundled EfficientNet-Lite0 from ImageNet)", "lite0") in catalogue.choices()
    assert catalogue.get("lite0").loaded.source == str(tiny_model)
    bundle_as(monkeypatch, "default", tmp_path / "no_default")  # a default missing from the install is reported
    assert "default" in backend.ModelCatalogue.from_env({}).problems()


def test_catalogue_reports_a_broken_model_and_keeps_the_good_one(tiny_model, tmp_path, monkeypatch):
    bundle_as(monkeypatch, "lite0", tmp_path / "not_bundled")
    bundle_as(monkeypatch, "ensemble", tmp_path / "not_bundled")
    bundle_as(monkeypatch, "ferplus", tmp_path / "not_bundled")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    catalogue = backend.ModelCatalogue.from_env({backend.MODELS_ENV: f"{tiny_model}, {broken}, {tiny_model}"})
    refs = [entry.ref for entry in catalogue.entries]
    assert refs == ["default", str(tiny_model), str(broken)]  # default first, repeats dropped
    assert [entry.ref for entry in catalogue.available][-1] == str(tiny_model)
    assert "broken** could not be loaded" in catalogue.problems()
    assert catalogue.get(str(tiny_model)).label_names == list(FER_LABELS)
    with pytest.raises(backend.UserInputError, match="Unknown model"):
        catalogue.get(str(broken))
