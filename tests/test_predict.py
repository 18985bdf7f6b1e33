"""fer_hf.inference.faces + fer_hf.predict on real photos shipped with scikit-image, a real FER2013 face from the bundled
sample, a video written from those photos, and bad inputs. Models are tiny and random (saved to tmp)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from fer_hf.cli import run
from fer_hf.inference.faces import DetectorConfig, FaceDetector, load_image
from fer_hf.inference.predictor import Predictor, predict_images, predict_video
from fer_hf.labels import FER_LABELS
from fer_hf.models.loading import load_classifier
from fer_hf.predict import main

# The astronaut's face in skimage.data.astronaut() (512x512), read off the image: hairline to chin, ear to ear.
ASTRONAUT_FACE = (175, 60, 100, 110)  # (x, y, w, h)


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def _labels() -> dict:
    return {"id2label": dict(enumerate(FER_LABELS)), "label2id": {n: i for i, n in enumerate(FER_LABELS)}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real photos and bad inputs on disk."""
    root = tmp_path_factory.mktemp("predict_inputs")
    Image.fromarray(skdata.astronaut()).save(root / "astronaut.png")
    Image.fromarray(skdata.coins()).save(root / "coins.png")
    (root / "notes.txt").write_text("not a picture\n")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    from fer_hf.models.cnn_family import cnn_image_processor
    from fer_hf.models.hub_code import FerCnnConfig, FerCnnForImageClassification

    folder = tmp_path_factory.mktemp("tiny_cnn")
    blocks = [{"out_channels": 8, "pool": "max"}, {"out_channels": 16, "pool": "max"}]
    torch.manual_seed(0)
    FerCnnForImageClassification(FerCnnConfig(preset=None, blocks=blocks, global_pool="avg")).save_pretrained(folder)
    cnn_image_processor(48).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def predictor(cnn_dir):
    return Predictor(cnn_dir, batch_size=8)


def test_face_crop_is_square_gray_and_fer_sized():
    (face,) = FaceDetector().faces(skdata.astronaut(), "detect")
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    # The crop shows the face, not the background: compare with the same region cut straight from the photo.
    x, y, w, h = face.box
    direct = cv2.resize(cv2.cvtColor(skdata.astronaut()[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY), (40, 40))
    assert abs(float(face.crop[4:44, 4:44].mean()) - float(direct.mean())) < 25


def test_predict_image_gives_box_and_probabilities(predictor, files, tmp_path):
    (result,) = predictor.predict_images([files / "astronaut.png"], annotate_dir=tmp_path)
    assert result.status == "ok" and result.size == (512, 512)
    (face,) = result.faces
    assert iou(face.box, ASTRONAUT_FACE) > 0.5
    assert list(face.probabilities) == list(FER_LABELS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert Image.open(result.annotated).size == (512, 512)


def test_probabilities_match_the_model_on_the_processed_crop(predictor, files):
    """The pipeline = processor(crop) -> model -> softmax, nothing else in between."""
    rgb, _ = load_image(files / "astronaut.png")
    (face,) = predictor.detector.faces(rgb)
    with torch.no_grad():
        expected = predictor.loaded.model(pixel_values=predictor.pixel_values([face.crop])).logits.softmax(-1)[0]
    (result,) = predictor.predict_images([files / "astronaut.png"])
    np.testing.assert_allclose(list(result.faces[0].probabilities.values()), expected.numpy(), atol=1e-5)


def test_hflip_tta_averages_the_face_and_its_mirror(cnn_dir, files):
    plain = Predictor(cnn_dir)
    rgb, _ = load_image(files / "astronaut.png")
    crop = plain.detector.faces(rgb)[0].crop
    mirrored = (plain.classify([crop]) + plain.classify([crop[:, ::-1].copy()])) / 2
    tta = Predictor(cnn_dir, tta="hflip").classify([crop])
    np.testing.assert_allclose(tta, mirrored, atol=1e-5)
    assert tta.sum() == pytest.approx(1.0, abs=1e-5)


def test_fer_face_from_the_bundled_sample_is_used_as_is(predictor, bundled_dd, tmp_path):
    face = bundled_dd["validation"][0]["image"]  # a real 48x48 FER2013 face
    face.save(tmp_path / "fer_face.png")
    for mode in ("cropped", "auto"):  # explicitly, and automatically because the image is small
        (result,) = predictor.predict_images([tmp_path / "fer_face.png"], crop_mode=mode)
        (pred,) = result.faces
        assert pred.box == (0, 0, 48, 48) and pred.source == "cropped"
    rgb, _ = load_image(tmp_path / "fer_face.png")
    np.testing.assert_array_equal(predictor.detector.faces(rgb, "cropped")[0].crop, np.asarray(face))
    assert rgb.shape == (48, 48, 3)


def test_enormous_image_is_downscaled_and_boxes_map_back(predictor, tmp_path):
    big = cv2.resize(skdata.astronaut(), (6144, 6144), interpolation=cv2.INTER_LINEAR)  # 37.7 megapixels
    Image.fromarray(big).save(tmp_path / "huge.jpg", quality=80)
    (result,) = predictor.predict_images([tmp_path / "huge.jpg"])
    assert result.size == (6144, 6144)
    (face,) = result.faces
    assert iou(face.box, tuple(v * 12 for v in ASTRONAUT_FACE)) > 0.5, face.box


def test_enormous_image_over_the_limit_is_refused_and_the_batch_goes_on(predictor, files, tmp_path):
    big = np.zeros((5000, 5000, 3), np.uint8)
    Image.fromarray(big).save(tmp_path / "huge.png", compress_level=1)
    strict = Predictor(predictor.loaded, detector=DetectorConfig(max_pixels=20_000_000))
    refused, fine = strict.predict_images([tmp_path / "huge.png", files / "astronaut.png"])
    assert refused.status == "error" and "25 megapixels" in refused.error and "limit" in refused.error
    assert fine.status == "ok" and len(fine.faces) == 1


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (256, 256))
    assert writer.isOpened(), "OpenCV cannot write MJPG video here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_gives_per_frame_rows_distribution_and_plot(predictor, tmp_path):
    face = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    coins = cv2.cvtColor(cv2.resize(skdata.coins(), (256, 256)), cv2.COLOR_GRAY2RGB)
    write_video(tmp_path / "clip.avi", [face] * 20 + [coins] * 10)  # 2 s with a face, then 1 s without, at 10 fps
    result = predict_video(tmp_path / "clip.avi", predictor, fps=5, plot_dir=tmp_path / "plots")
    assert result.error is None and result.native_fps == pytest.approx(10)
    assert [f.index for f in result.frames] == list(range(0, 30, 2))  # 5 of every 10 frames
    assert [f.time_s for f in result.frames] == pytest.approx([i / 5 for i in range(15)])
    assert [bool(f.faces) for f in result.frames] == [True] * 10 + [False] * 5
    labels = [f.faces[0].label for f in result.frames if f.faces]
    assert result.distribution == {n: labels.count(n) / 10 for n in FER_LABELS}
    assert sum(result.distribution.values()) == pytest.approx(1.0)
    assert Image.open(result.plot).size[0] > 600


def test_cli_on_a_mixed_batch_with_bad_files(cnn_dir, files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    face = cv2.resize(skdata.astronaut(), (256, 256))
    write_video(tmp_path / "clip.avi", [face] * 10)
    inputs = [files / n for n in ("notes.txt", "coins.png", "astronaut.png", "broken.mp4")]
    argv = ["--model", str(cnn_dir), *map(str, inputs), str(tmp_path / "clip.avi"), str(tmp_path / "missing.jpg")]
    code = main([*argv, "--csv", str(tmp_path / "out.csv"), "--json", str(tmp_path / "out.json")])
    assert code == 1  # some inputs were unusable, but every input has a result
    rows = list(csv.DictReader((tmp_path / "out.csv").read_text().splitlines()))
    by_path = {}
    for row in rows:
        by_path.setdefault(row["path"].rsplit("/", 1)[-1], []).append(row)
    assert (
        by_path["notes.txt"][0]["status"] == "error" and "not an image or a video" in by_path["notes.txt"][0]["error"]
    )
    assert by_path["coins.png"][0]["status"] == "no_face" and by_path["coins.png"][0]["label"] == ""
    assert by_path["astronaut.png"][0]["label"] in FER_LABELS
    assert by_path["broken.mp4"][0]["status"] == "error" and "video" in by_path["broken.mp4"][0]["error"]
    assert by_path["missing.jpg"][0]["error"] == "no such file or folder"
    assert [r["frame"] for r in by_path["clip.avi"]] == [str(i) for i in range(0, 10, 5)]  # default 2 fps
    records = json.loads((tmp_path / "out.json").read_text())
    assert [r["status"] for r in records] == ["error", "no_face", "ok", "error", "ok", "error"]
    # Without --plot-dir no timeline is drawn: nothing but what was asked for, here (the current folder) or anywhere.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "out.csv", "out.json"]


def test_cli_folder_input_and_annotations(cnn_dir, files, tmp_path, capsys):
    assert main(["--model", str(cnn_dir), str(files), "--annotate", str(tmp_path / "ann")]) == 1  # broken.mp4
    out = capsys.readouterr().out
    assert "astronaut.png: 1 face(s)" in out and "coins.png: no face found" in out
    assert "notes.txt" not in out  # folders are searched for image and video extensions only
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["astronaut_annotated.png", "coins_annotated.png"]


def test_model_folder_that_is_not_an_image_classifier(tmp_path, files, capsys):
    from transformers import BertConfig

    BertConfig(architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path / "bert")
    assert run(main, ["--model", str(tmp_path / "bert"), str(files / "astronaut.png")]) == 2
    assert "not an image classifier" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(main, ["--model", str(tmp_path / "empty"), str(files / "astronaut.png")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_other_families_work_through_their_own_processor(tmp_path, files):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        **_labels(),
    )
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    loaded = load_classifier(tmp_path / "vit")
    (result,) = predict_images([files / "astronaut.png"], loaded)
    assert Predictor(loaded).pixel_values([np.zeros((48, 48), np.uint8)]).shape == (1, 3, 32, 32)
    assert sum(result.faces[0].probabilities.values()) == pytest.approx(1.0, abs=1e-5)
