"""The models bundled with the package load offline and read real faces far better than chance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import pipeline

from fer_hf.inference.predictor import Predictor
from fer_hf.labels import FER_LABELS, FERPLUS_LABELS
from fer_hf.models.loading import BUNDLED_MODELS, DEFAULT_MODEL, is_installed, load_classifier, load_default_model

MODEL_TYPES = {"default": "fer_cnn", "lite0": "fer_timm", "ensemble": "fer_ensemble", "ferplus": "fer_cnn"}
HUB_CODE = Path(__file__).resolve().parents[1] / "fer_hf" / "models" / "hub_code"
NAMES = sorted(BUNDLED_MODELS)


def test_every_bundled_model_is_installed_and_described():
    assert set(BUNDLED_MODELS) == set(MODEL_TYPES)
    for name, bundled in BUNDLED_MODELS.items():
        assert is_installed(bundled), f"{name}: {bundled.path} is empty; run fer_hf.hub.bundle"
        assert bundled.made_by or (bundled.path.parents[2] / bundled.recipe).is_file(), bundled.recipe


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_code_is_the_package_code(name):
    """The code files a bundled model carries (what trust_remote_code runs) are the package's own, unchanged."""
    files = sorted(BUNDLED_MODELS[name].path.glob("*.py"))
    assert files
    for file in files:
        assert file.read_text() == (HUB_CODE / file.name).read_text(), f"{file} differs from the package's copy"


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_loads_offline_as_safetensors_under_30_mb(name):
    loaded = load_classifier(name)
    assert loaded.model.config.model_type == MODEL_TYPES[name]
    assert loaded.label_names == list(FERPLUS_LABELS if name == "ferplus" else FER_LABELS)
    weights = BUNDLED_MODELS[name].path / "model.safetensors"
    assert 0 < weights.stat().st_size < 30 * 2**20
    assert not list(BUNDLED_MODELS[name].path.glob("*.bin"))  # no pickled weights shipped


def test_the_package_assets_stay_under_60_mb():
    """Every bundled model, its evaluations and the sample faces together: the budget the ensemble has to fit."""
    assets = BUNDLED_MODELS[DEFAULT_MODEL].path.parent
    assert sum(p.stat().st_size for p in assets.rglob("*") if p.is_file()) < 60 * 2**20


def test_load_default_model_is_the_default_bundle():
    assert load_default_model().source == str(BUNDLED_MODELS[DEFAULT_MODEL].path)


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_reads_bundled_real_faces(name, bundled_dd):
    """70 real FER2013 faces (10 per class), through the model's own image processor: chance is 1/7."""
    loaded = load_classifier(name)
    faces = bundled_dd["validation"]
    images = [np.asarray(im.convert("RGB")) for im in faces["image"]]  # 48x48 uint8 RGB, as a user passes them
    pixels = loaded.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        preds = loaded.model(pixel_values=pixels).logits.argmax(-1)
    accuracy = (preds == torch.tensor(faces["label"])).float().mean().item()
    assert accuracy > 0.4, f"{name}: accuracy {accuracy:.2f} on the bundled faces"
    assert len(set(preds.tolist())) >= 5  # it does not collapse onto one or two classes


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_in_a_pipeline_and_the_predictor_matches_its_card(name, bundled_dd):
    path = BUNDLED_MODELS[name].path
    labels = load_classifier(name).label_names  # FER2013's 7, or FER+'s 8 (contempt)
    assert labels in (list(FER_LABELS), list(FERPLUS_LABELS))
    classifier = pipeline("image-classification", model=str(path), top_k=len(labels))
    face = bundled_dd["validation"][0]["image"]
    scores = classifier(face)
    assert sorted(s["label"] for s in scores) == sorted(labels)
    assert np.isclose(sum(s["score"] for s in scores), 1.0, atol=1e-4)
    probs = Predictor(name).classify([np.asarray(face.convert("L"))])[0]  # a gray 48x48 crop, as detected
    predictor = {label: float(p) for label, p in zip(labels, probs, strict=True)}
    assert np.allclose([predictor[s["label"]] for s in scores], [s["score"] for s in scores], atol=1e-4)
    metrics = json.loads((path / "evaluation" / "metrics.json").read_text())
    card = (path / "README.md").read_text()
    assert f"{metrics['accuracy']:.4f}" in card
    assert f"{metrics['macro_f1']:.4f}" in card


def test_nothing_shipped_names_a_folder_of_the_machine_it_was_made_on():
    """Bundled models, comparisons, recipes and docs carry repo-relative or runs/... paths, so that a bundled
    recipe.yaml re-runs anywhere and no card shows where it was made."""
    import re

    repo = Path(__file__).resolve().parents[1]
    absolute = re.compile(r"/(work|tmp|root|home|Users)/[A-Za-z]")
    shipped = [*(repo / "fer_hf" / "assets").rglob("*"), *(repo / "recipes").rglob("*"), *(repo / "docs").rglob("*"),
               *(repo / "spaces_app").rglob("*"), repo / "README.md"]  # fmt: skip
    texts = [p for p in shipped if p.is_file() and p.suffix in {".json", ".yaml", ".md", ".csv", ".txt", ".py"}]
    assert len(texts) > 20
    found = [f"{p.relative_to(repo)}: {m.group(0)}" for p in texts for m in [absolute.search(p.read_text())] if m]
    assert found == []
    # Nor does git track a link to such a folder (a `runs` link to the machine's run folder was once committed).
    import subprocess

    if (repo / ".git").exists():
        listing = subprocess.run(["git", "ls-files", "-s"], cwd=repo, capture_output=True, text=True, check=True)
        links = [line.split("\t")[-1] for line in listing.stdout.splitlines() if line.startswith("120000")]
        assert links == []


@pytest.mark.parametrize("name", ["default", "lite0", "ferplus"])
def test_recipes_saved_before_the_typed_training_section_read_back(name):
    """The bundled models' recipe.yaml files were written by the dict-based `training:` section: they resolve into
    FerTrainingArguments with the values they saved (bf16 ones read as the CPU would run them)."""
    import yaml

    from fer_hf.recipe_parser import load_recipe

    path = Path(BUNDLED_MODELS[name].path) / "recipe.yaml"
    saved = yaml.safe_load(path.read_text())["training"]
    recipe = load_recipe(path, ["--use_cpu"])
    for key in ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "seed", "weight_decay"):
        assert getattr(recipe.training, key) == saved[key], key
    assert recipe.training_inputs["output_dir"] == saved["output_dir"] and recipe.data.source
