"""fer_hf.cv: 2 folds of the smoke recipe (1 epoch) on 140 real bundled faces; the folds, the summary and its
agreement with fer_hf.evaluate and fer_hf.compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer_hf import compare, cv
from fer_hf import evaluate as fer_eval
from fer_hf.configs import RecipeError
from fer_hf.data.sources import labels_of
from fer_hf.evaluation.results import CVRecord, read_record, to_json
from fer_hf.recipe_parser import load_recipe

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
OVERRIDES = ["--training.num_train_epochs", "1"]
POOL = 140  # 20 faces per class, 10 per class in each validation fold


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cv") / "smoke-cv2"
    assert cv.main([str(SMOKE), "--folds", "2", "--max-samples", str(POOL), "--output", str(out), *OVERRIDES]) == 0
    return out


def test_cv_summary_is_the_mean_and_std_of_its_folds(cv_run):
    summary = json.loads((cv_run / "cv_metrics.json").read_text())
    assert (summary["kind"], summary["folds"], summary["split_size"], summary["tta"]) == ("cv", 2, POOL, "none")
    folds = [json.loads((cv_run / f"fold_{i}" / "metrics.json").read_text())["validation"] for i in (1, 2)]
    assert [r["validation_size"] for r in summary["per_fold"]] == [POOL // 2, POOL // 2]
    for key in cv.SCALARS:
        values = [f[key] for f in folds]
        assert [r[key] for r in summary["per_fold"]] == values
        assert summary["mean"][key] == pytest.approx(np.mean(values), abs=1e-6)
        assert summary["std"][key] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
    pooled = np.asarray(summary["confusion_matrix"])
    assert pooled.sum(axis=1).tolist() == [POOL // 7] * 7  # every face validated exactly once
    assert "| mean ± std |" in (cv_run / "cv_table.md").read_text()
    assert "test" not in json.loads((cv_run / "fold_1" / "metrics.json").read_text())
    record = read_record(cv_run)  # fer_hf.evaluation.results reads back exactly what cv wrote
    assert isinstance(record, CVRecord) and to_json(record) == summary


def test_folds_are_stratified_partitions_and_evaluate_reproduces_a_fold(cv_run, tmp_path):
    recipe = load_recipe(SMOKE, OVERRIDES)
    pool = cv.cv_pool(recipe, POOL)
    folds = cv.make_folds(labels_of(pool), 2, 42, pool.features["label"].names)
    validation = np.concatenate([val for _, val in folds])
    assert sorted(validation.tolist()) == list(range(POOL))
    for train_idx, val_idx in folds:
        assert not set(train_idx) & set(val_idx)
        assert np.bincount(labels_of(pool)[val_idx], minlength=7).tolist() == [10] * 7

    # The fold-1 model evaluated by fer_hf.evaluate on its held-out faces gives the fold's own numbers.
    pool.select(folds[0][1]).to_parquet(tmp_path / "fold1.parquet")
    out = tmp_path / "eval"
    assert (
        fer_eval.main([str(cv_run / "fold_1"), "--data", str(tmp_path / "fold1.parquet"), "--output", str(out)]) == 0
    )
    evaluated = json.loads((out / "metrics.json").read_text())
    fold = json.loads((cv_run / "fold_1" / "metrics.json").read_text())["validation"]
    assert evaluated["confusion_matrix"] == fold["confusion_matrix"]


def test_compare_reads_a_cv_folder_with_its_spread(cv_run, tmp_path):
    (row,) = compare.compare([cv_run], tmp_path / "cmp")
    summary = json.loads((cv_run / "cv_metrics.json").read_text())
    assert (row.kind, row.accuracy, row.std["accuracy"]) == (
        "cv",
        summary["mean"]["accuracy"],
        summary["std"]["accuracy"],
    )
    assert f"{row.accuracy:.4f} ± {row.std['accuracy']:.4f}" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_too_few_faces_per_class_for_the_folds_is_refused():
    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(RecipeError, match="class 'c' has 1 training images"):
        cv.make_folds(labels, 2, 0, ["a", "b", "c"])
    with pytest.raises(RecipeError, match="at least 2"):
        cv.make_folds(labels, 1, 0, ["a", "b", "c"])
