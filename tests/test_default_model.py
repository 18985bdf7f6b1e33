"""The CNN bundled with the package loads offline and reads real faces far better than chance."""

from __future__ import annotations

import json

import numpy as np
import torch
from transformers import pipeline

from fer_hf.labels import FER_LABELS
from fer_hf.loading import DEFAULT_MODEL_DIR, load_default_model
from fer_hf.transforms import BatchTransform, FerTensorDataset


def test_default_model_loads_offline_with_the_fer_labels():
    loaded = load_default_model()
    assert loaded.model.config.model_type == "fer_cnn"
    assert loaded.label_names == list(FER_LABELS)
    assert (DEFAULT_MODEL_DIR / "model.safetensors").is_file()
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 25 * 2**20


def test_default_model_reads_bundled_real_faces(bundled_dd):
    """70 real FER2013 faces (10 per class): chance is 1/7; the shipped model must be far above it."""
    loaded = load_default_model()
    faces = FerTensorDataset.from_split(bundled_dd["validation"])
    pixels = BatchTransform(48, 1, 0.5, 0.5)(faces.images)
    with torch.no_grad():
        preds = loaded.model(pixel_values=pixels).logits.argmax(-1)
    accuracy = (preds == faces.labels).float().mean().item()
    assert accuracy > 0.4, f"default model accuracy {accuracy:.2f} on the bundled faces"
    assert len(set(preds.tolist())) >= 5  # it does not collapse onto one or two classes


def test_default_model_in_a_pipeline_matches_the_card(bundled_dd):
    classifier = pipeline("image-classification", model=str(DEFAULT_MODEL_DIR), top_k=len(FER_LABELS))
    scores = classifier(bundled_dd["validation"][0]["image"])
    assert sorted(s["label"] for s in scores) == sorted(FER_LABELS)
    assert np.isclose(sum(s["score"] for s in scores), 1.0, atol=1e-4)
    metrics = json.loads((DEFAULT_MODEL_DIR / "evaluation" / "metrics.json").read_text())
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert f"{metrics['accuracy']:.4f}" in card
    assert f"{metrics['macro_f1']:.4f}" in card
