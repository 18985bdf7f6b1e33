"""Videos with faces followed over time, on a clip made from a real six-person photo (insightface's t1.jpg, panned and
zoomed, with blank frames in the middle): one track id per person through the clip, rows for the frames without a
face, smoothed probabilities, per-track summaries and plots, detection every k-th frame, and a cut-off file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from fer_hf.bench.video import group_photo, make_clip
from fer_hf.inference.predictor import Predictor
from fer_hf.inference.tracking import FaceTracker, Smoother, TrackingConfig
from fer_hf.predict import main

BLANK = (12, 13, 14)  # frame numbers of the grey frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(group_photo(), tmp_path_factory.mktemp("clip") / "six.avi", seconds=3, blank=BLANK)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from helpers import save_tiny_cnn

    return Predictor(save_tiny_cnn(tmp_path_factory.mktemp("tiny_cnn")), batch_size=16)


def test_each_face_keeps_one_track_id_through_the_clip(predictor, clip):
    result = predictor.predict_video(clip, fps=0, tracking=TrackingConfig(smoothing=0.6))
    assert [f.index for f in result.frames] == list(range(33)) and result.warning is None
    assert [len(f.faces) for f in result.frames] == [0 if i in BLANK else 6 for i in range(33)]
    ids = [sorted(face.track_id for face in f.faces) for f in result.frames if f.faces]
    assert all(frame_ids == [1, 2, 3, 4, 5, 6] for frame_ids in ids)  # blank frames did not end any track
    # The same person under the same id: each track's box moves by a few pixels from frame to frame.
    for track_id in range(1, 7):
        centres = np.array([[face.box[0] + face.box[2] / 2, face.box[1] + face.box[3] / 2]
                            for f in result.frames for face in f.faces if face.track_id == track_id])  # fmt: skip
        assert np.abs(np.diff(centres, axis=0)).max() < 25, track_id
    summaries = {t["track_id"]: t for t in result.tracks}
    assert sorted(summaries) == [1, 2, 3, 4, 5, 6]
    for summary in summaries.values():
        assert summary["frames"] == 30 and summary["first_s"] == 0.0 and summary["last_s"] == pytest.approx(3.2)
        assert sum(summary["shares"].values()) == pytest.approx(1.0, abs=1e-3)
        assert summary["dominant"] == max(summary["shares"], key=summary["shares"].get)


def test_smoothing_is_a_moving_average_per_track_and_zero_turns_it_off(predictor, clip):
    smooth = predictor.predict_video(clip, fps=0, tracking=TrackingConfig(smoothing=0.6))
    names = predictor.label_names
    raw = [np.array([face.probabilities[n] for n in names]) for f in smooth.frames for face in f.faces
           if face.track_id == 4]  # fmt: skip
    got = [
        np.array([face.smoothed[n] for n in names]) for f in smooth.frames for face in f.faces if face.track_id == 4
    ]
    expected = [raw[0]]
    for p in raw[1:]:
        expected.append(0.6 * expected[-1] + 0.4 * p)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    plain = predictor.predict_video(clip, fps=0, tracking=TrackingConfig(smoothing=0))
    assert all(face.smoothed_label == face.label for f in plain.frames for face in f.faces)
    with pytest.raises(ValueError, match=r"smoothing"):
        TrackingConfig(smoothing=1.0)


def test_detection_every_third_frame_carries_the_tracks(predictor, clip):
    result = predictor.predict_video(clip, fps=0, tracking=TrackingConfig(detect_every=3))
    assert sorted(t["track_id"] for t in result.tracks) == [1, 2, 3, 4, 5, 6]
    sources = [{face.source for face in f.faces} for f in result.frames if f.faces]
    assert {"yunet"} in sources and {"tracked"} in sources


def test_cli_writes_rows_summaries_and_plots(predictor, clip, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(clip), "--model", predictor.loaded.source, "--fps", "0", "--smoothing", "0.5"]
    assert main([*argv, "--csv", str(out / "v.csv"), "--json", str(out / "v.json"), "--plot-dir", str(out)]) == 0
    assert "face 1:" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "v.csv").open()))
    for column in ("time_s", "frame", "track_id", "x", "y", "w", "h", "detector_score", "label", "p_angry",
                   "p_neutral", "smoothed_label", "smoothed_p_happy"):  # fmt: skip
        assert column in rows[0], column
    assert len(rows) == 30 * 6 + len(BLANK)  # one row per (frame, face), one per frame without a face
    empty = [r for r in rows if r["track_id"] == ""]
    assert [int(r["frame"]) for r in empty] == list(BLANK) and all(r["label"] == "" for r in empty)
    assert {r["track_id"] for r in rows} - {""} == {str(i) for i in range(1, 7)}
    (record,) = json.loads((out / "v.json").read_text())
    assert len(record["tracks"]) == 6 and record["tracks"][0]["frames"] == 30
    assert sorted(p.name for p in out.glob("*.png")) == [f"six_face{i}.png" for i in range(1, 7)] + [
        "six_timeline.png"
    ]


def test_a_cut_off_video_keeps_what_was_decoded(predictor, clip, tmp_path):
    data = clip.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    result = predictor.predict_video(tmp_path / "cut.avi", fps=0)
    assert result.error is None and 5 < len(result.frames) < 33
    assert "decoding stopped at frame" in result.warning and "kept" in result.warning
    (tmp_path / "empty.avi").write_bytes(data[:200])
    assert "not a readable video" in predictor.predict_video(tmp_path / "empty.avi").error


def test_tracker_matches_by_overlap_and_forgets_after_max_lost():
    tracker = FaceTracker(max_lost=2)
    tracker.advance()
    assert tracker.update([(0, 0, 50, 50), (200, 0, 50, 50)]) == [1, 2]
    tracker.advance()
    assert tracker.update([(205, 2, 50, 50), (4, 1, 50, 50)]) == [2, 1]  # order of detections does not matter
    for _ in range(3):  # face 1 gone for 3 frames > max_lost
        tracker.advance()
        assert tracker.update([(210, 4, 50, 50)]) == [2]
    tracker.advance()
    assert tracker.update([(8, 2, 50, 50)]) == [3]  # came back too late: a new id
    smoother = Smoother(0.5)
    assert smoother(1, np.array([1.0, 0.0])).tolist() == [1.0, 0.0]
    assert smoother(1, np.array([0.0, 1.0])).tolist() == [0.5, 0.5]
