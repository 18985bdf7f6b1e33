"""fer_hf.calibrate: one temperature fitted on a validation split and stored in config.json, applied by every
consumer (the torch model, its ONNX export through the runtime, the ensemble), the weights untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_hf.calibrate import TEMPERATURE_KEY, fit_temperature, main, scores, write_temperature
from fer_hf.evaluation.metrics import calibration_metrics, softmax
from fer_hf.models.loading import load_classifier


def test_the_fitted_temperature_undoes_an_overconfident_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 7)) * 2
    labels = np.array([rng.choice(7, p=p) for p in softmax(true_logits)])  # labels drawn from the model itself
    fitted = fit_temperature(true_logits * 3.0, labels)  # the same model, three times too confident
    assert fitted == pytest.approx(3.0, rel=0.1)
    before = scores(true_logits * 3.0, labels, None, 1.0)
    after = scores(true_logits * 3.0, labels, None, fitted)
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]


def test_ece_is_zero_for_a_model_as_confident_as_it_is_right():
    probs = np.array([[0.75, 0.25]] * 8)
    labels = np.array([0, 0, 0, 1] * 2)  # right on 75% of the faces at confidence 0.75
    assert calibration_metrics(probs, labels)["ece"] == pytest.approx(0.0)
    assert calibration_metrics(probs, 1 - labels)["ece"] == pytest.approx(0.5)


def test_fitting_to_votes_uses_the_vote_distribution():
    logits = np.log(np.array([[0.9, 0.1]] * 10))
    raters = np.array([[0.6, 0.4]] * 10)  # the raters are less sure than the model
    assert fit_temperature(logits, np.zeros(10, dtype=int), raters) > 1.5
    assert fit_temperature(logits, np.zeros(10, dtype=int)) < 1.0  # the labels alone say: sharpen


def test_calibrate_writes_only_the_config_and_every_consumer_applies_it(tmp_path, bundled_dd):
    from helpers import save_tiny_cnn

    from fer_hf.export import main as export

    folder = save_tiny_cnn(tmp_path / "m")
    weights = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    x = torch.rand(5, 1, 48, 48) * 2 - 1
    with torch.no_grad():
        raw = load_classifier(folder).model(pixel_values=x).logits
    assert main([str(folder), "--data", "bundled"]) == 0
    temperature = json.loads((folder / "config.json").read_text())[TEMPERATURE_KEY]
    assert temperature > 0 and temperature != 1.0
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == weights
    loaded = load_classifier(folder)
    with torch.no_grad():
        scaled = loaded.model(pixel_values=x).logits
    torch.testing.assert_close(scaled, raw / temperature)
    assert export([str(folder), "--output", str(tmp_path / "onnx"), "--check-data", "bundled"]) == 0
    from fer_hf.exports.runtime import OnnxClassifier

    onnx = OnnxClassifier(tmp_path / "onnx").logits(x.numpy())
    np.testing.assert_allclose(onnx, scaled.numpy(), atol=1e-4)  # the export divides by the same temperature


def test_a_calibrated_member_keeps_its_temperature_in_the_ensemble(tmp_path):
    from helpers import save_tiny_cnn

    from fer_hf.ensemble import main as ensemble

    a, b = save_tiny_cnn(tmp_path / "a", seed=1), save_tiny_cnn(tmp_path / "b", seed=2)
    write_temperature(Path(a), 4.0)
    out = tmp_path / "ens"
    assert ensemble([str(a), str(b), "--output", str(out), "--data", "bundled"]) == 0
    x = torch.rand(3, 1, 48, 48)
    members = [load_classifier(m).model for m in (a, b)]
    with torch.no_grad():
        mean = sum(m(pixel_values=x * 2 - 1).logits.softmax(-1) for m in members) / 2
        got = load_classifier(out).model(pixel_values=x).logits.softmax(-1)
    torch.testing.assert_close(got, mean, atol=1e-5, rtol=1e-4)


def test_calibrate_refuses_what_it_cannot_write(tmp_path):
    from fer_hf.models.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="owner/name|local folder|no such folder"):
        main(["someone/model", "--data", "bundled"])
