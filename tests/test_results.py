"""The run folder's typed records (fer_hf.evaluation.results): the bundled models' real records read back whole, what every
writer writes reads back to the same JSON, and files that are not records are refused with their path and key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fer_hf.evaluation.results import (
    FORMAT_VERSION,
    CVRecord,
    EvalRecord,
    RecordError,
    RunRecord,
    Scores,
    TrainerEval,
    from_json,
    read_record,
    read_run_record,
    to_json,
    write_record,
)
from fer_hf.models.loading import BUNDLED_MODELS

BUNDLED = {name: Path(model.path) for name, model in BUNDLED_MODELS.items()}


def _without_format(doc: dict) -> dict:
    """A record's JSON without the fields the format added (kind/version) and without unset optional fields."""
    return {
        k: _without_format(v) if isinstance(v, dict) else v
        for k, v in doc.items()
        if k not in ("kind", "version") and v is not None
    }


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_records_read_back_whole(name):
    """The shipped metrics.json files predate the version field: they read as the same layout, and nothing is lost."""
    run_file = BUNDLED[name] / "metrics.json"
    run = read_record(run_file)
    assert isinstance(run, RunRecord) and run.evaluated_splits == ["validation"]
    single = run.splits["validation"]
    # FER2013's PublicTest (3,589 faces, 7 classes), or FER+'s FER2013Valid under the majority protocol (3,191, 8)
    expected = (3191, 8) if "contempt" in run.labels else (3589, 7)
    assert isinstance(single, EvalRecord) and (single.num_samples, len(single.per_class)) == expected
    assert isinstance(run.summaries["validation_tta_hflip"], Scores)
    assert run.summaries["validation_tta_hflip"].tta == "hflip"
    assert _without_format(to_json(run)) == _without_format(json.loads(run_file.read_text()))
    evaluation = read_record(BUNDLED[name] / "evaluation")
    assert isinstance(evaluation, EvalRecord) and evaluation.accuracy == single.accuracy


def test_total_train_seconds_adds_the_run_it_started_from():
    default = read_run_record(BUNDLED["default"])
    assert default.init_from["train_seconds"] > 0
    assert default.total_train_seconds() == pytest.approx(default.train_seconds + default.init_from["train_seconds"])
    assert read_run_record(BUNDLED["lite0"]).total_train_seconds() == read_run_record(BUNDLED["lite0"]).train_seconds


def _trainer_eval(**changes) -> TrainerEval:
    per_class = {"a": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}}
    values = dict(accuracy=0.5, macro_f1=0.4, weighted_f1=0.45, top2_accuracy=1.0, per_class=per_class)
    return TrainerEval(**values, confusion_matrix=[[1, 1], [0, 0]], num_samples=2, split="validation", seconds=0.5)


def test_a_record_round_trips_through_json_with_kind_and_version(tmp_path):
    run = RunRecord(
        model_family="cnn",
        labels=["a", "b"],
        parameters=10,
        trainable_parameters=4,
        train_seconds=1.5,
        splits={"validation": _trainer_eval()},
        summaries={"validation_tta_hflip": Scores(0.6, 0.5, "hflip")},
        float32_validation=Scores(0.55, 0.45),
    )
    path = write_record(run, tmp_path / "metrics.json")
    doc = json.loads(path.read_text())
    assert (doc["kind"], doc["version"], doc["validation"]["seconds"]) == ("run", FORMAT_VERSION, 0.5)
    assert read_record(tmp_path) == run and read_run_record(tmp_path) == run
    assert run.splits["validation"].images_per_second == 4.0
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temporary file was renamed, not left


def test_a_run_without_a_record_has_none(tmp_path):
    assert read_run_record(tmp_path) is None


def test_bad_records_are_refused_with_file_and_key(tmp_path):
    good = to_json(RunRecord(model_family="cnn", labels=["a"], parameters=1, splits={"validation": _trainer_eval()}))
    cases = {
        "unknown key": ({**good, "paramters": 3}, "'paramters'"),
        "unknown split field": ({**good, "validation": {**good["validation"], "sconds": 1}}, "[validation]"),
        "missing key": ({k: v for k, v in good.items() if k != "labels"}, "missing key(s) ['labels']"),
        "newer version": ({**good, "version": FORMAT_VERSION + 1}, "upgrade fer_hf"),
        "not a record": ({"rows": []}, "not a record of fer_hf"),
        "not a split": ({**good, "notes": "hello"}, "key 'notes'"),
    }
    for what, (doc, expected) in cases.items():
        file = tmp_path / f"{what.replace(' ', '_')}.json"
        file.write_text(json.dumps(doc))
        with pytest.raises(RecordError) as err:
            read_record(file)
        assert str(file) in str(err.value) and expected in str(err.value), what
    (tmp_path / "broken.json").write_text('{"kind": "run", ')
    with pytest.raises(RecordError, match="broken.json: cannot read it as JSON"):
        read_record(tmp_path / "broken.json")
    with pytest.raises(RecordError, match="no metrics.json or cv_metrics.json"):
        read_record(tmp_path / "nowhere")


def test_a_record_of_another_kind_is_refused_where_one_kind_is_expected():
    with pytest.raises(RecordError, match="holds a EvalRecord, expected a RunRecord"):
        read_record(BUNDLED["default"] / "evaluation", RunRecord)


def test_a_cv_record_round_trips():
    cv = CVRecord(
        recipe="recipes/smoke.yaml",
        model_family="cnn",
        data="bundled",
        split="train (2-fold CV)",
        split_size=4,
        folds=2,
        seed=0,
        labels=["a"],
        mean={"accuracy": 0.5},
        std={"accuracy": 0.1},
        confusion_matrix=[[2]],
        per_fold=[{"fold": 1}, {"fold": 2}],
    )
    assert from_json(json.loads(json.dumps(to_json(cv)))) == cv
    assert dataclasses.replace(cv, folds=3) != cv


def test_evaluation_costs_come_from_the_run_record_and_a_foreign_one_is_named(tmp_path):
    from fer_hf.evaluation.evaluator import _training_costs

    default = read_run_record(BUNDLED["default"])
    costs = _training_costs(str(BUNDLED["default"]))
    assert costs == {
        "trainable_parameters": default.trainable_parameters,
        "train_seconds": default.total_train_seconds(),
    }
    assert _training_costs("user/some-hub-model") == {"trainable_parameters": None, "train_seconds": None}
    (tmp_path / "metrics.json").write_text(json.dumps({"eval_loss": 0.3}))  # another tool's file
    with pytest.warns(UserWarning, match=r"metrics.json: not a record of fer_hf"):
        assert _training_costs(str(tmp_path)) == {"trainable_parameters": None, "train_seconds": None}
