"""fer_hf.hub.bundle: a finished run's best checkpoint becomes a self-describing model folder (weights, evaluations, card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import tiny_args

from fer_hf import evaluate as fer_evaluate
from fer_hf.compare import compare
from fer_hf.evaluation.results import EvalRecord, TrainerEval, read_record, to_json
from fer_hf.hub.bundle import best_checkpoint, bundle
from fer_hf.hub.bundle import main as bundle_main
from fer_hf.models.loading import load_classifier
from fer_hf.train import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("bundle") / "run"
    best = ("--training.metric_for_best_model", "accuracy", "--training.load_best_model_at_end", "true")
    assert main(tiny_args(run, "--training.num_train_epochs", "2", *best)) == 0
    return run


def test_bundle_ships_the_best_checkpoint_with_matching_card(finished_run, tmp_path):
    out = bundle(finished_run, str(finished_run / "recipe.yaml"), "bundled", tmp_path / "default_model")
    last_state = sorted(finished_run.glob("checkpoint-*/trainer_state.json"))[-1]
    best = finished_run / Path(json.loads(last_state.read_text())["best_model_checkpoint"]).name
    assert (out / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()

    metrics = json.loads((out / "metrics.json").read_text())
    single = json.loads((out / "evaluation" / "metrics.json").read_text())
    flipped = json.loads((out / "evaluation_hflip" / "metrics.json").read_text())
    assert metrics["checkpoint"].startswith(best.name)
    assert metrics["validation"]["accuracy"] == single["accuracy"] and single["tta"] == "none"
    assert metrics["validation_tta_hflip"]["accuracy"] == flipped["accuracy"] and flipped["tta"] == "hflip"
    run_metrics = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["hardware"] == run_metrics["hardware"]
    assert metrics["train_seconds"] == run_metrics["train_seconds"]

    card = (out / "README.md").read_text()
    assert f"{single['accuracy']:.4f}" in card and f"{flipped['accuracy']:.4f}" in card
    assert metrics["hardware"] in card and "best epoch of the finished run" in card
    assert not list(tmp_path.glob(".*partial"))  # the staging folder was moved into place
    assert load_classifier(out).label_names == run_metrics["labels"]
    # Every record these commands wrote reads back (fer_hf.evaluation.results) to exactly the JSON on disk.
    for file in (finished_run / "metrics.json", out / "metrics.json", out / "evaluation" / "metrics.json"):
        assert to_json(read_record(file)) == json.loads(file.read_text()), file
    assert isinstance(read_record(finished_run).splits["validation"], TrainerEval)
    assert isinstance(read_record(out).splits["validation"], EvalRecord)


def test_bundle_refuses_a_folder_without_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        best_checkpoint(tmp_path)


def test_bundle_under_another_name_says_how_to_load_it(finished_run, tmp_path, capsys):
    compare([finished_run], tmp_path / "cmp")
    out = tmp_path / "lite0_model"
    argv = [str(finished_run), "--name", "lite0", "--recipe", str(finished_run / "recipe.yaml"), "--data", "bundled"]
    assert bundle_main([*argv, "--out", str(out), "--comparison", str(tmp_path / "cmp" / "comparison.md")]) == 0
    card = (out / "README.md").read_text()
    assert "`--model lite0`" in card and "evaluate lite0 --data" in card and "default model" not in card
    # the comparison travels with the model: its table in the card, its charts in comparison/, linked from the card
    assert (tmp_path / "cmp" / "comparison.md").read_text().strip() in card
    assert (out / "comparison" / "curves.png").read_bytes() == (tmp_path / "cmp" / "curves.png").read_bytes()
    assert "](comparison/curves.png)" in card and "](comparison/comparison.png)" in card
    assert "fer_hf/assets/lite0_model" in json.loads((out / "evaluation" / "metrics.json").read_text())["model"]
    assert "PublicTest single view: accuracy" in capsys.readouterr().out


def test_bundle_of_a_second_stage_ships_its_averaged_weights_and_both_stages_time(finished_run, tmp_path):
    stage2 = tmp_path / "stage2"
    swa = ("--run.swa_from_epoch", "1", "--training.load_best_model_at_end", "false")
    assert (
        main(tiny_args(stage2, "--training.num_train_epochs", "2", "--model.init_from", str(finished_run), *swa)) == 0
    )
    out = bundle(stage2, str(stage2 / "recipe.yaml"), "bundled", tmp_path / "default_model")
    assert (out / "model.safetensors").read_bytes() == (stage2 / "model.safetensors").read_bytes()  # not a checkpoint
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == "the final weights, averaged over epochs [1, 2] (of 2)"
    first, second = (json.loads((d / "metrics.json").read_text())["train_seconds"] for d in (finished_run, stage2))
    card = (out / "README.md").read_text()
    assert f"{first + second:,.0f} s for both stages" in card and "finished run's model" in card
    assert f"{(first + second) / 60:.0f} minutes of training over two stages" in card
    args = fer_evaluate.parse_args([str(out), "--data", "bundled", "--output", str(tmp_path / "eval")])
    report, _ = fer_evaluate.evaluate_model(args)
    assert report.train_seconds == pytest.approx(first + second)  # compare's train-time column: both stages


def test_half_precision_bundle_is_measured_against_float32_and_refused_when_it_moves(
    finished_run, tmp_path, monkeypatch
):
    import fer_hf.hub.bundle

    recipe = str(finished_run / "recipe.yaml")
    full = bundle(finished_run, recipe, "bundled", tmp_path / "full")
    monkeypatch.setattr(fer_hf.hub.bundle, "HALF_TOLERANCE", 1.0)
    half = bundle(finished_run, recipe, "bundled", tmp_path / "half", half=True)
    stored, original = load_file(half / "model.safetensors"), load_file(full / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert all(torch.equal(stored[k].float(), v.half().float()) for k, v in original.items() if v.is_floating_point())
    metrics = json.loads((half / "metrics.json").read_text())
    assert metrics["weights_dtype"] == "float16"
    # the float32 figures bundle measured are the full-precision bundle's own
    assert (
        metrics["float32_validation"]["accuracy"]
        == json.loads((full / "metrics.json").read_text())["validation"]["accuracy"]
    )
    assert "stored in float16" in (half / "README.md").read_text() and "--half" in (half / "README.md").read_text()
    assert {p.dtype for p in load_classifier(half).model.parameters()} == {torch.float32}  # cast back on load
    monkeypatch.setattr(fer_hf.hub.bundle, "HALF_TOLERANCE", -1.0)  # any move (even none) is too much: refused
    with pytest.raises(ValueError, match="bundle without --half"):
        bundle(finished_run, recipe, "bundled", tmp_path / "refused", half=True)
    assert not (tmp_path / "refused").exists() and not list(tmp_path.glob(".refused*"))


def test_a_bundled_folder_is_stored_in_float16_in_place_with_its_record_carried_over(finished_run, tmp_path):
    """The bundled models' run folders are not kept: `bundle BUNDLED_DIR --half` re-bundles a bundled folder."""
    out = bundle(finished_run, str(finished_run / "recipe.yaml"), "bundled", tmp_path / "default_model")
    before = read_record(out)
    recipe, curves = (out / "recipe.yaml").read_text(), (out / "training_curves.png").read_bytes()
    weights = load_file(out / "model.safetensors")

    assert bundle(out, "recipes/cnn_swa.yaml", "bundled", out, half=True) == out  # in place
    after = read_record(out)
    assert {t.dtype for t in load_file(out / "model.safetensors").values() if t.is_floating_point()} == {torch.float16}
    assert (
        after.weights_dtype == "float16" and after.float32_validation.accuracy == before.splits["validation"].accuracy
    )
    carried = ("checkpoint", "train_seconds", "epochs", "hardware", "trainable_parameters", "labels", "parameters")
    assert all(getattr(after, key) == getattr(before, key) for key in carried)
    assert (out / "recipe.yaml").read_text() == recipe  # not re-resolved against the bundled folder
    assert (out / "training_curves.png").read_bytes() == curves
    half = load_file(out / "model.safetensors")
    assert all(torch.equal(half[k].float(), v.half().float()) for k, v in weights.items() if v.is_floating_point())
    assert not list(tmp_path.glob(".*partial"))
    with pytest.raises(ValueError, match="stored in float16 already"):  # float32 figures cannot be measured again
        bundle(out, "recipes/cnn_swa.yaml", "bundled", tmp_path / "again", half=True)
    again = read_record(bundle(out, "recipes/cnn_swa.yaml", "bundled", tmp_path / "again"))  # as it is: still float16
    assert (again.weights_dtype, again.float32_validation) == ("float16", after.float32_validation)
