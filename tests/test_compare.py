"""fer_hf.compare on real outputs: a 1-epoch smoke training run and evaluations of tiny models, bundled real faces."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import save_tiny_cnn
from PIL import Image

from fer_hf import compare
from fer_hf import evaluate as fer_eval
from fer_hf.cli import run
from fer_hf.train import main as train_main

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """A training run, its evaluation, and evaluations of a random CNN (plain, hflip, 2-class) on bundled faces."""
    root = tmp_path_factory.mktemp("results")
    run = root / "smoke_run"
    train_main(
        [
            str(SMOKE),
            "--training.output_dir",
            str(run),
            "--training.num_train_epochs",
            "1",
            "--data.max_train_samples",
            "70",
        ]
    )
    tiny = save_tiny_cnn(root / "tiny_cnn")
    binary = save_tiny_cnn(root / "binary_cnn", names=("happy", "sad"))
    jobs = {
        "eval_run": (run, []),
        "eval_tiny": (tiny, []),
        "eval_tiny_hflip": (tiny, ["--tta", "hflip"]),
        "eval_binary": (binary, ["--classes", "happy_sad"]),
    }
    for name, (model, extra) in jobs.items():
        assert fer_eval.main([str(model), "--data", "bundled", "--output", str(root / name), *extra]) == 0
    return {"run": run, **{name: root / name for name in jobs}}


def test_table_from_a_run_and_evaluations(results, tmp_path):
    out = tmp_path / "cmp"
    inputs = [results["run"], results["eval_run"], results["eval_tiny"] / "metrics.json"]
    assert compare.main([*map(str, inputs), "--output", str(out)]) == 0
    tables = [f"comparison.{ext}" for ext in ("csv", "json", "md", "png")]
    confusions = [f"confusion_{name}.png" for name in ("eval_run", "eval_tiny", "smoke_run")]
    assert sorted(p.name for p in out.iterdir()) == tables + confusions + ["curves.png"]  # curves: the run's
    # Each row's own confusion matrix travels with the table (the app and model cards show the folder alone).
    assert (out / "confusion_eval_tiny.png").read_bytes() == (
        results["eval_tiny"] / "confusion_matrix.png"
    ).read_bytes()
    run_png = results["run"] / "confusion_matrix_validation.png"
    assert (out / "confusion_smoke_run.png").read_bytes() == run_png.read_bytes()

    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["smoke_run", "eval_run", "eval_tiny"]
    assert [r["kind"] for r in rows] == ["run", "evaluate", "evaluate"]
    run_metrics = json.loads((results["run"] / "metrics.json").read_text())
    # The same model on the same faces through training's evaluation and through fer_hf.evaluate.
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == run_metrics["validation"]["accuracy"]
    assert rows[0]["per_class_f1"] == rows[1]["per_class_f1"]
    assert rows[0]["train_seconds"] == rows[1]["train_seconds"] == run_metrics["train_seconds"]
    tiny = json.loads((results["eval_tiny"] / "metrics.json").read_text())
    assert rows[2]["parameters"] == tiny["parameters"] != rows[0]["parameters"]
    assert rows[2]["macro_f1"] == tiny["macro_f1"]

    with (out / "comparison.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [float(r["accuracy"]) for r in table] == [r["accuracy"] for r in rows]
    assert float(table[2]["f1_happy"]) == tiny["per_class"]["happy"]["f1"]
    markdown = (out / "comparison.md").read_text()
    assert markdown.count("| validation (70) | none |") == 3 and f"{tiny['accuracy']:.4f}" in markdown
    assert float(table[2]["recall_happy"]) == tiny["per_class"]["happy"]["recall"]
    assert rows[0]["epochs"] == run_metrics["epochs"] == 1 and rows[1]["epochs"] is None


def test_per_class_recall_table_and_learning_curves(results, tmp_path):
    out = tmp_path / "cmp"
    assert (
        compare.main([str(results["run"]), str(results["eval_tiny"]), "--output", str(out), "--per-class", "recall"])
        == 0
    )
    header, _, run_row, tiny_row = (out / "comparison.md").read_text().splitlines()
    names = json.loads((results["run"] / "metrics.json").read_text())["labels"]
    assert "| recall angry |" in header and "F1 angry" not in header
    recall = json.loads((results["eval_tiny"] / "metrics.json").read_text())["per_class"]
    cells = tiny_row.split(" | ")
    first = header.split(" | ").index("recall angry")
    assert cells[first : first + len(names)] == [f"{recall[c]['recall']:.3f}" for c in names]
    assert run_row.split(" | ")[header.split(" | ").index("epochs")] == "1"
    # The run's learning curves come from the trainer_state.json that fer_hf.train leaves in the run folder.
    state = json.loads((results["run"] / "trainer_state.json").read_text())
    assert any("eval_accuracy" in row for row in state["log_history"])
    with Image.open(out / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > 1000


def test_refuses_different_tta_labels_or_splits(results, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert run(compare.main, [str(results["eval_tiny"]), str(results["eval_tiny_hflip"]), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different TTA mode: eval_tiny: none; eval_tiny_hflip: hflip" in err and "--allow-mismatch" in err
    assert not out.exists()

    assert run(compare.main, [str(results["eval_tiny"]), str(results["eval_binary"]), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different label set" in err and "different split" in err  # 20 happy/sad faces, not 70

    assert run(compare.main, [str(results["run"]), "--split", "test", "--output", str(out)]) == 2
    assert "no 'test' metrics; it has ['validation']" in capsys.readouterr().err
    assert not out.exists()


def test_allow_mismatch_says_so_in_the_table(results, tmp_path):
    out = tmp_path / "cmp"
    rows = compare.compare([results["eval_tiny"], results["eval_tiny_hflip"]], out, allow_mismatch=True)
    assert [r.tta for r in rows] == ["none", "hflip"]
    assert "> not like for like: different TTA mode" in (out / "comparison.md").read_text()
    assert json.loads((out / "comparison.json").read_text())["mismatches"]


def test_never_replaces_a_folder_that_is_not_a_comparison(results, capsys):
    notes = (results["run"] / "recipe.yaml").read_text()
    assert run(compare.main, [str(results["eval_tiny"]), "--output", str(results["run"])]) == 2
    assert "not an earlier comparison" in capsys.readouterr().err
    assert (results["run"] / "recipe.yaml").read_text() == notes


def test_an_earlier_comparison_carries_its_rows_and_a_new_measurement_replaces_one(results, tmp_path, capsys):
    first = tmp_path / "first"
    assert compare.main([str(results["run"]), str(results["eval_tiny"]), "--output", str(first)]) == 0
    # A published table read back elsewhere: its rows are carried as measured, with their confusion matrices.
    published = tmp_path / "published"
    shutil.copytree(first, published)
    out = tmp_path / "with_eval_run"
    assert compare.main([str(published), str(results["eval_run"]), "--output", str(out)]) == 0
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    old = json.loads((first / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["smoke_run", "eval_tiny", "eval_run"]
    assert [r["carried_from"] for r in rows] == [str(published), str(published), None]
    assert [r["accuracy"] for r in rows[:2]] == [r["accuracy"] for r in old] and rows[0]["source"] == old[0]["source"]
    assert (out / "confusion_eval_tiny.png").read_bytes() == (published / "confusion_eval_tiny.png").read_bytes()
    assert not (out / "curves.png").exists()  # a carried run's log history is not re-read from its old folder

    # A stale number in the published table is replaced, in its place, by a new evaluation of the same name.
    doc = json.loads((published / "comparison.json").read_text())
    doc["rows"][1]["accuracy"] = 0.0
    (published / "comparison.json").write_text(json.dumps(doc))
    capsys.readouterr()
    assert compare.main([str(published), str(results["eval_tiny"]), "--output", str(published)]) == 0  # in place
    assert f"eval_tiny: replaces the row carried over from {published}" in capsys.readouterr().out
    rows = json.loads((published / "comparison.json").read_text())["rows"]
    tiny = json.loads((results["eval_tiny"] / "metrics.json").read_text())
    assert [r["name"] for r in rows] == ["smoke_run", "eval_tiny"] and rows[1]["accuracy"] == tiny["accuracy"] > 0
    assert rows[1]["carried_from"] is None and (published / "confusion_eval_tiny.png").is_file()

    # Carried rows are checked like any other: a hflip evaluation does not join a table of single-view rows.
    assert run(compare.main, [str(published), str(results["eval_tiny_hflip"]), "--output", str(tmp_path / "x")]) == 2
    assert "different TTA mode" in capsys.readouterr().err
    del doc["rows"][0]["accuracy"]
    (published / "comparison.json").write_text(json.dumps(doc))
    assert run(compare.main, [str(published), "--output", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert f"{published / 'comparison.json'}: row 0 ('smoke_run') is not a comparison row" in err and "accuracy" in err
