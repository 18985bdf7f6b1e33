"""fer_hf.analyze / fer_hf.Analyzer on real photos: skimage's astronaut (1 face) and insightface's t1.jpg (6 faces),
as a path, a PIL image, RGB/BGR/gray/RGBA/uint16/float arrays and a list; a clip made from t1.jpg with track ids; a
FER+ model's 8 classes; and bad inputs refused with one sentence. Tiny random CNNs: the numbers compared are the
model's own outputs for the same face, so any difference comes from how the input was read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import fer_hf
from fer_hf.bench.video import group_photo, make_clip
from fer_hf.inference.analysis import Analyzer, InputError
from fer_hf.labels import FERPLUS_LABELS

BLANK = (12, 13, 14)


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    from helpers import save_tiny_cnn

    return Analyzer(str(save_tiny_cnn(tmp_path_factory.mktemp("tiny"))), device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


def same(a, b):
    """Two analyses give the same faces: boxes equal, probabilities equal to float precision."""
    fa, fb = a.faces, b.faces
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb, strict=True):
        assert x.box == y.box and x.label == y.label
        assert np.allclose(list(x.probabilities.values()), list(y.probabilities.values()), atol=1e-6)


def test_one_photo_in_every_form_gives_the_same_single_face(analyzer, astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    rgb = analyzer(astronaut)
    assert [len(i.faces) for i in rgb.items] == [1] and rgb.items[0].status == "ok"
    face = rgb.faces[0]
    assert abs(sum(face.probabilities.values()) - 1) < 1e-5 and face.label == max(
        face.probabilities, key=face.probabilities.get
    )
    same(rgb, analyzer(str(path)))
    same(rgb, analyzer(Image.fromarray(astronaut)))
    same(rgb, analyzer(np.ascontiguousarray(astronaut[..., ::-1]), channels="bgr"))
    same(rgb, analyzer(astronaut.astype(np.uint16) * 257))  # 16-bit: scaled, a clipped one would be white
    same(rgb, analyzer(astronaut.astype(np.float32) / 255))
    same(rgb, analyzer(np.dstack([astronaut, np.full(astronaut.shape[:2], 77, np.uint8)])))  # RGBA
    # Without channels="bgr" the swapped array is a different picture to the detector (not silently the same).
    swapped = analyzer(np.ascontiguousarray(astronaut[..., ::-1])).faces
    assert not swapped or swapped[0].box != face.box or swapped[0].probabilities != face.probabilities


def test_gray_arrays_and_16_bit_gray_find_the_face(analyzer, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    plain = analyzer(gray)
    assert len(plain.faces) == 1
    x, y, w, h = plain.faces[0].box
    assert 150 < x + w / 2 < 260 and 60 < y + h / 2 < 190  # the astronaut's face, top middle-left
    same(plain, analyzer(gray[..., None]))
    same(plain, analyzer(gray.astype(np.uint16) * 257))


def test_six_people_and_a_list_are_one_row_per_face_with_their_index(analyzer, astronaut):
    six = analyzer(str(group_photo_path()))
    assert len(six.faces) == 6 and [f.face for f in six.faces] == [1, 2, 3, 4, 5, 6]
    both = analyzer([astronaut, str(group_photo_path()), np.full((200, 300, 3), 128, np.uint8)])
    table = both.to_pandas()
    assert table["index"].tolist() == [0] + [1] * 6 + [2]
    assert table["status"].tolist() == ["ok"] * 7 + ["no_face"] and table["faces"].tolist() == [1] + [6] * 6 + [0]
    assert table.loc[table["index"] == 2, "label"].isna().all()
    assert [c for c in table.columns if c.startswith("p_")] == [f"p_{n}" for n in analyzer.labels]
    rows = json.loads(both.to_json())
    assert len(rows) == 8 and list(rows[0]) == list(table.columns) and rows[-1]["label"] is None


def group_photo_path():
    import importlib.util
    from pathlib import Path

    return Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg"


def test_a_video_gives_frames_times_and_track_ids(analyzer, tmp_path):
    clip = make_clip(group_photo(), tmp_path / "six.avi", seconds=2, fps=10, blank=BLANK)
    result = analyzer(str(clip), fps=0)
    assert result.kind == "video" and len(result) == 23
    assert [i.status for i in result.items] == ["no_face" if i in BLANK else "ok" for i in range(23)]
    assert [i.time_s for i in result.items] == pytest.approx([i / 10 for i in range(23)], abs=1e-3)
    ids = [sorted(f.track_id for f in item.faces) for item in result.items if item.faces]
    assert all(row == [1, 2, 3, 4, 5, 6] for row in ids)  # the same six people, the same six numbers
    table = result.to_pandas()
    assert len(table) == 20 * 6 + 3 and table["track_id"].dropna().astype(int).nunique() == 6


def test_a_ferplus_model_gives_its_eight_classes(tmp_path, astronaut):
    from helpers import save_tiny_cnn

    folder = save_tiny_cnn(tmp_path / "ferplus", names=FERPLUS_LABELS)
    result = fer_hf.analyze(astronaut, model=str(folder), device="cpu")
    assert result.labels == list(FERPLUS_LABELS) and len(result.faces[0].probabilities) == 8
    assert "p_contempt" in result.to_pandas().columns


@pytest.mark.parametrize(
    ("given", "options", "message"),
    [
        (np.zeros((3, 64, 64), np.uint8), {}, r"shape \(3, 64, 64\); expected \(H, W\).*channels first"),
        (np.zeros((64, 64, 2), np.uint8), {}, r"shape \(64, 64, 2\); expected"),
        (np.zeros((64, 64, 3), np.int32), {}, r"dtype int32; expected uint8, uint16 or float in \[0, 1\]"),
        (np.full((64, 64), 200.0), {}, r"float64 array with values in \[200, 200\]; expected floats in \[0, 1\]"),
        (np.zeros((0, 64, 3), np.uint8), {}, r"shape \(0, 64, 3\)"),
        ([], {}, "empty list; expected at least one image"),
        ([np.zeros((64, 64, 3), np.uint8), np.zeros(5)], {}, r"item 1 of the list is an array of shape \(5,\)"),
        ({"image": 1}, {}, "is a dict; expected a file path, a PIL image, a numpy array"),
        (np.zeros((64, 64, 3), np.uint8), {"channels": "rbg"}, "channels='rbg'; expected 'rgb' or 'bgr'"),
        ("/no/such/photo.jpg", {}, "/no/such/photo.jpg cannot be used"),
        (99, {}, "camera index 99 cannot be opened"),
    ],
)
def test_bad_input_is_one_sentence(analyzer, given, options, message):
    start = time.monotonic()
    with pytest.raises(InputError, match=message) as info:
        analyzer(given, **options)
    assert "\n" not in str(info.value) and time.monotonic() - start < 10


def test_top_level_names_stay_lazy_and_callable():
    code = (
        "import sys, fer_hf; assert 'torch' not in sys.modules; fer_hf.Analyzer; "
        "assert callable(fer_hf.analyze), fer_hf.analyze; print('ok')"
    )  # importing the module behind Analyzer must not replace the function analyze by a module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_loaders_point_to_analyze_for_photos():
    from fer_hf.models.loading import load_classifier, load_default_model

    for loader in (load_classifier, load_default_model):
        assert "face crop" in loader.__doc__ and "fer_hf.analyze" in loader.__doc__
