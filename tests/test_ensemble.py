"""The ensemble model (fer_hf.ensemble) and distillation (fer_hf.training.distill): real bundled members, real faces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import save_tiny_cnn

from fer_hf import ensemble as fer_ensemble
from fer_hf.configs import Augment, RecipeError
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.transforms import BatchTransform, FerCollator
from fer_hf.evaluation.inputs import eval_transform_for
from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.labels import FER_LABELS
from fer_hf.models.loading import load_classifier
from fer_hf.recipe_parser import load_recipe
from fer_hf.training.distill import DistillationLoss, teacher_logprobs
from fer_hf.training.losses import WeightedCrossEntropy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def faces(bundled_dd) -> FerTensorDataset:
    return FerTensorDataset.from_split(bundled_dd["validation"])  # 70 real faces, 10 per class


@pytest.fixture(scope="module")
def members():
    return [load_classifier("default"), load_classifier("lite0")]


@pytest.fixture(scope="module")
def saved_ensemble(tmp_path_factory, members) -> Path:
    folder = tmp_path_factory.mktemp("ensemble") / "ens"
    model = fer_ensemble.build_ensemble(members, ["default", "lite0"], [3.0, 1.0])
    model.save_pretrained(folder)
    fer_ensemble.ensemble_image_processor().save_pretrained(folder)
    return folder


def member_probs(loaded, images: torch.Tensor) -> torch.Tensor:
    """A member's probabilities through its own evaluation preprocessing (what fer_hf.evaluate does)."""
    with torch.no_grad():
        return loaded.model(pixel_values=eval_transform_for(loaded)(images)).logits.softmax(-1)


def test_ensemble_is_the_weighted_mean_of_its_members_own_predictions(members, faces):
    model = fer_ensemble.build_ensemble(members, ["default", "lite0"], [3.0, 1.0])
    assert model.config.member_weights == [0.75, 0.25]
    images = faces.images[:32]
    expected = 0.75 * member_probs(members[0], images) + 0.25 * member_probs(members[1], images)
    with torch.no_grad():
        got = model(pixel_values=images.unsqueeze(1).float() / 255).logits.exp()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # RGB input (a pipeline's photos) is averaged to gray: the same faces repeated as RGB give the same result
    with torch.no_grad():
        rgb = model(pixel_values=(images.unsqueeze(1).float() / 255).expand(-1, 3, -1, -1)).logits.exp()
    torch.testing.assert_close(rgb, got)


def test_members_must_agree_on_classes_and_be_fer_models(tmp_path, members):
    three = save_tiny_cnn(tmp_path / "three", names=("angry", "happy", "neutral"))
    with pytest.raises(fer_ensemble.EnsembleError, match="predicts"):
        fer_ensemble.build_ensemble([members[0], load_classifier(three)], ["default", "three"])
    with pytest.raises(fer_ensemble.EnsembleError, match="at least two"):
        fer_ensemble.build_ensemble(members[:1], ["default"])
    with pytest.raises(fer_ensemble.EnsembleError, match="2 values for 3"):
        fer_ensemble.build_ensemble([*members, members[0]], ["a", "b", "c"], [1.0, 2.0])


RELOAD = """
import json, sys, torch
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline
folder, faces = sys.argv[1], torch.load(sys.argv[2])
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(pixel_values=faces.unsqueeze(1).float() / 255).logits
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
scores = classify(Image.fromarray(faces[0].numpy()), top_k=7)
print(json.dumps({"logits": logits.tolist(), "pipeline": {r["label"]: r["score"] for r in scores},
                  "dtype": str(next(model.parameters()).dtype),
                  "fer_hf_imported": any(m.startswith("fer_hf") for m in sys.modules)}))
"""


def test_saved_ensemble_reloads_in_a_fresh_process_without_fer_hf(tmp_path, saved_ensemble, members, faces):
    images = faces.images[:8]
    torch.save(images, tmp_path / "faces.pt")
    done = subprocess.run(
        [sys.executable, "-c", RELOAD, str(saved_ensemble), str(tmp_path / "faces.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: fer_hf is importable only if installed, and it must not be imported
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["fer_hf_imported"] and out["dtype"] == "torch.float32"
    expected = 0.75 * member_probs(members[0], images) + 0.25 * member_probs(members[1], images)
    torch.testing.assert_close(torch.tensor(out["logits"]).exp(), expected, atol=1e-5, rtol=1e-4)
    assert set(out["pipeline"]) == set(FER_LABELS) and abs(sum(out["pipeline"].values()) - 1) < 1e-4
    # the package loads it like any model, through its registered classes
    local = load_classifier(saved_ensemble)
    assert local.model.config.model_type == "fer_ensemble" and local.label_names == list(FER_LABELS)


def test_half_precision_storage_loads_as_float32_and_changes_little(tmp_path, members, faces):
    model = fer_ensemble.build_ensemble(members, ["default", "lite0"])
    fer_ensemble.save_ensemble(model, tmp_path / "half", half=True)
    full = fer_ensemble.save_ensemble(model, tmp_path / "full", half=False)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.55 * (
        full / "model.safetensors"
    ).stat().st_size
    reloaded = load_classifier(tmp_path / "half").model
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    x = faces.images.unsqueeze(1).float() / 255
    with torch.no_grad():
        diff = (reloaded(pixel_values=x).logits.exp() - model(pixel_values=x).logits.exp()).abs().max()
    assert diff < 5e-3  # rounded, but by little (the bundled members are stored in float16: not at all)


def test_member_table_rows(members, faces):
    model = fer_ensemble.build_ensemble(members, ["default", "lite0"])
    probs, _ = fer_ensemble.evaluate_members(model, faces)
    labels = faces.labels.numpy()
    assert probs["none"].shape == (2, len(faces), 7)
    pair = fer_ensemble.member_table(probs, labels, ["default", "lite0"], FER_LABELS, [1.0, 1.0])
    assert [r.model for r in pair] == ["default", "lite0", "ensemble"]
    alone = (probs["none"][0].argmax(-1) == labels).mean()
    assert pair[0].accuracy == round(float(alone), 4)
    three = {tta: np.concatenate([p, p[:1]]) for tta, p in probs.items()}  # default twice: a third member
    rows = fer_ensemble.member_table(three, labels, ["a", "b", "c"], FER_LABELS, [1.0, 1.0, 1.0])
    assert [r.model for r in rows][-3:] == ["ensemble without a", "ensemble without b", "ensemble without c"]
    assert (rows[-1].accuracy, rows[-1].macro_f1) == (pair[2].accuracy, pair[2].macro_f1)  # without c = a + b


@pytest.fixture(scope="module")
def evaluated_ensemble(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ens"
    assert fer_ensemble.main(["default", "lite0", "--output", str(out), "--data", "bundled", "--half"]) == 0
    return out


def test_cli_builds_evaluates_and_refuses_bad_input(evaluated_ensemble, tmp_path, capsys):
    out = evaluated_ensemble
    table = json.loads((out / "members.json").read_text())
    assert [r["model"] for r in table["rows"]] == ["default", "lite0", "ensemble"]
    single = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert single["tta"] == "none" and abs(single["accuracy"] - table["rows"][-1]["accuracy"]) < 1e-4
    # the reports name the folder the ensemble lives in, never the staging copy it was written in
    assert single["model"] == str(out) and json.loads((out / "metrics.json").read_text())["validation"][
        "model"
    ] == str(out)
    # the evaluation folders come from the member probabilities: fer_hf.evaluate's own pass agrees with them
    from fer_hf.data.dataset import load_split
    from fer_hf.evaluation.evaluator import run_inference

    faces = FerTensorDataset.from_split(load_split("bundled", "validation")[1])
    for tta, folder in (("none", "evaluation"), ("hflip", "evaluation_hflip")):
        logits, _ = run_inference(load_classifier(out), faces, tta)
        report = json.loads((out / folder / "metrics.json").read_text())
        ours = compute_fer_metrics(logits, faces.labels.numpy(), list(FER_LABELS))
        assert report["confusion_matrix"] == ours["confusion_matrix"]  # the same prediction for every face
    assert str(tmp_path) not in (out / "evaluation" / "metrics.json").read_text().replace(str(out), "")
    for argv, message in (
        (["default", "--output", str(tmp_path / "one")], "at least two"),
        (["default", "lite0", "--output", str(out)], "already exists"),
        (["default", str(out), "--output", str(out / "inner")], "overlaps"),
        (["default", "lite0", "--output", str(tmp_path / "w"), "--weights", "1", "2", "3"], "3 values for 2"),
        (["default", "lite0", "--output", str(tmp_path / "w"), "--weights", "1", "-1"], "positive"),
    ):
        assert exit_code(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "one").exists() and not (tmp_path / "w").exists()


def test_an_ensemble_publishes_like_any_model(evaluated_ensemble, tmp_path, caplog):
    import logging

    from fer_hf.hub.publish import main as publish

    stage = tmp_path / "stage"
    with caplog.at_level(logging.INFO, logger="fer_hf"):  # publish's lines go through fer_hf.logs
        assert publish([str(evaluated_ensemble), "--repo-id", "me/fer-ensemble", "--dry-run", str(stage)]) == 0
    assert "fresh process loads FerEnsembleForImageClassification (trust_remote_code=True)" in caplog.text
    card = (stage / "README.md").read_text()
    assert 'pipeline("image-classification", model="me/fer-ensemble", trust_remote_code=True)' in card
    assert "| ensemble |" in card and "the small FER2013 sample bundled with fer_hf" in card
    assert {"members.json", "metrics.json", "modeling_fer_ensemble.py", "modeling_fer_timm.py"} <= {
        p.name for p in stage.iterdir()
    }


def exit_code(argv: list[str]) -> int:
    from fer_hf.cli import run

    try:
        return run(fer_ensemble.main, argv)
    except SystemExit as exit:  # argparse's own usage errors
        return exit.code


# ---------------------------------------------------------------------------------------------- distillation
def test_distillation_loss_mixes_hard_and_soft_terms():
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7, requires_grad=True), torch.randint(0, 7, (16,))
    base = WeightedCrossEntropy(None, 0.1)
    teacher = torch.randn(16, 7).log_softmax(-1)
    assert torch.equal(DistillationLoss(base, 3.0, 0.0)(logits, labels, teacher), base(logits, labels))
    assert torch.equal(DistillationLoss(base, 3.0, 0.7)(logits, labels), base(logits, labels))  # evaluation
    same = DistillationLoss(base, 3.0, 1.0)(logits, labels, logits.detach().log_softmax(-1))
    assert same.abs() < 1e-5  # KL of a distribution with itself
    loss = DistillationLoss(base, 2.0, 1.0)(logits, labels, teacher)
    loss.backward()
    # the soft term pulls the student's tempered distribution toward the teacher's: a step against the gradient helps
    with torch.no_grad():
        stepped = DistillationLoss(base, 2.0, 1.0)(logits - 0.1 * logits.grad, labels, teacher)
    assert stepped < loss


@pytest.mark.parametrize("hflip", [0.0, 1.0, 0.5])
def test_collator_gives_each_face_the_teacher_view_of_its_drawn_mirror(faces, hflip):
    teacher = torch.randn(len(faces), 2, 7).log_softmax(-1)
    data = FerTensorDataset(faces.images, faces.labels, teacher)
    transform = BatchTransform(
        48, 1, 0.5, 0.5, Augment(hflip=hflip), train=True, generator=torch.Generator().manual_seed(1)
    )
    batch = FerCollator(transform)([data[i] for i in range(32)])
    flips = transform.last_flip
    assert flips.all() if hflip == 1 else (~flips).all() if hflip == 0 else 0 < flips.sum() < 32
    assert torch.equal(batch["teacher"], teacher[torch.arange(32), flips.long()])
    plain = BatchTransform(
        48, 1, 0.5, 0.5, Augment(hflip=hflip), train=True, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(batch["pixel_values"], plain(faces.images[:32]))  # recording flips changes no random stream


def test_teacher_probabilities_are_cached_by_content(tmp_path, faces, monkeypatch):
    few = FerTensorDataset(faces.images[:20], faces.labels[:20])
    first = teacher_logprobs("default", few, list(FER_LABELS), tmp_path)
    assert first.shape == (20, 2, 7) and len(list(tmp_path.glob("teacher-*.safetensors"))) == 1
    loaded = load_classifier("default")
    with torch.no_grad():  # index 1 is the mirror of the face, through the teacher's own preprocessing
        mirror = loaded.model(pixel_values=eval_transform_for(loaded)(few.images).flip(-1)).logits.log_softmax(-1)
    torch.testing.assert_close(first[:, 1], mirror)
    import fer_hf.training.distill

    monkeypatch.setattr(fer_hf.training.distill, "compute_teacher_logprobs", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(teacher_logprobs("default", few, list(FER_LABELS), tmp_path), first)
    other = FerTensorDataset(faces.images[20:40], faces.labels[20:40])
    with pytest.raises(pytest.fail.Exception, match="recomputed"):  # other faces: another cache entry
        teacher_logprobs("default", other, list(FER_LABELS), tmp_path)
    with pytest.raises(ValueError, match="predicts"):
        teacher_logprobs("default", few, ["angry", "happy"], tmp_path)


def test_distill_recipe_is_checked_before_any_data_loads(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "cnn_distill.yaml")
    assert recipe.distill.teacher == "ensemble" and recipe.model.init_from == "fer_hf/assets/default_model"
    for override, message in (
        (["--distill.alpha", "1.5"], "distill.alpha"),
        (["--distill.temperature", "0"], "distill.temperature"),
        (["--data.oversample", "{disgust: 2}"], "oversample"),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe(REPO / "recipes" / "cnn_distill.yaml", override)


def test_smoke_training_with_a_teacher(tmp_path):
    """Two epochs on the bundled sample against the default model's soft targets: the run records its teacher."""
    from fer_hf.training.run import train_from_recipe

    recipe = yaml.safe_load((REPO / "recipes" / "smoke.yaml").read_text())
    recipe["distill"] = {"teacher": "default", "cache_dir": str(tmp_path / "cache"), "alpha": 0.9}
    recipe["training"].update(output_dir=str(tmp_path / "run"), disable_tqdm=True, num_train_epochs=2)
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(recipe))
    trainer = train_from_recipe(load_recipe(path))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(np.isfinite(losses))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["distill"]["teacher"] == "default" and metrics["distill"]["alpha"] == 0.9
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["distill"]["teacher"] == "default"
    assert len(list((tmp_path / "cache").glob("teacher-*.safetensors"))) == 1
