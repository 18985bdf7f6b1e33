"""fer_hf.evaluate on tiny random CNNs saved to tmp and 200 real FER2013 validation faces (one parquet file)."""

from __future__ import annotations

import dataclasses
import io
import json
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import save_tiny_cnn
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from transformers import ViTImageProcessor

from fer_hf import evaluate as fer_eval
from fer_hf.cli import run
from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.evaluator import run_inference
from fer_hf.evaluation.inputs import eval_transform_for
from fer_hf.evaluation.metrics import METRIC_PATH, compute_fer_metrics
from fer_hf.labels import FER_LABELS
from fer_hf.models.inputs import input_spec
from fer_hf.models.loading import load_classifier

N_FACES = 200


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_cnn(tmp_path_factory.mktemp("tiny_cnn"))


@pytest.fixture(scope="module")
def faces_parquet(shared_fer, tmp_path_factory):
    """200 real validation faces in random order (the shared file is sorted by label), one parquet file."""
    table = pq.read_table(shared_fer / "validation.parquet")
    rows = np.random.default_rng(0).choice(table.num_rows, N_FACES, replace=False)
    path = tmp_path_factory.mktemp("data") / "faces.parquet"
    pq.write_table(table.take(rows), path)
    return path


def direct_logits(model_dir, parquet) -> tuple[np.ndarray, np.ndarray]:
    """Logits computed without fer_hf's data/transform code: PIL decode, [-1, 1] scaling, one forward pass."""
    table = pq.read_table(parquet).to_pydict()
    faces = np.stack([np.asarray(Image.open(io.BytesIO(im["bytes"])).convert("L")) for im in table["image"]])
    x = torch.from_numpy(faces).float().div(255).sub(0.5).div(0.5).unsqueeze(1)  # (N, 1, 48, 48)
    model = load_classifier(model_dir).model
    with torch.no_grad():
        return model(pixel_values=x).logits.numpy(), np.asarray(table["label"])


def run_cli(*argv) -> int:
    """The command as `python -m fer_hf.evaluate` runs it: cli.run turns a user error into one line and exit 2."""
    return run(fer_eval.main, [str(a) for a in argv])


def test_evaluate_writes_every_output_and_matches_sklearn(tiny_model, faces_parquet, tmp_path):
    out = tmp_path / "eval"
    assert run_cli(tiny_model, "--data", faces_parquet, "--output", out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "confident_mistakes.png", "confusion_matrix.png", "metrics.json", "per_class.md", "reliability.png"
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temporary folder left behind
    m = json.loads((out / "metrics.json").read_text())
    assert (m["split"], m["split_size"], m["tta"], m["model"]) == ("train", N_FACES, "none", str(tiny_model))
    assert m["labels"] == list(FER_LABELS) and m["images_per_second"] > 0 and m["wall_seconds"] > 0
    assert m["parameters"] == sum(p.numel() for p in load_classifier(tiny_model).model.parameters())

    logits, labels = direct_logits(tiny_model, faces_parquet)
    preds, ids = logits.argmax(1), list(range(7))
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, preds, labels=ids, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(f1_score(labels, preds, labels=ids, average="weighted", zero_division=0))
    assert m["top2_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=2, labels=ids))
    probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), -1).numpy()
    assert m["nll"] == pytest.approx(-np.log(probs[np.arange(len(labels)), labels]).mean(), rel=1e-4)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    bins = np.minimum((confidence * 15).astype(int), 14)
    ece = sum(abs(correct[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean() for b in set(bins))
    assert m["ece"] == pytest.approx(ece, rel=1e-6) and m["kl_raters"] is None  # FER2013: no votes
    assert m["confusion_matrix"] == confusion_matrix(labels, preds, labels=ids).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    for i, name in enumerate(FER_LABELS):
        row = m["per_class"][name]
        assert [row["precision"], row["recall"], row["f1"]] == pytest.approx([precision[i], recall[i], f1[i]])
        assert row["support"] == support[i]

    mistakes = m["top_mistakes"]
    assert len(mistakes) == min(16, int((preds != labels).sum()))
    assert all(FER_LABELS[labels[k["index"]]] == k["true"] != k["predicted"] for k in mistakes)
    confidences = [k["confidence"] for k in mistakes]
    assert confidences == sorted(confidences, reverse=True)


def test_hflip_tta_is_the_average_of_the_face_and_its_mirror(tiny_model, faces_parquet):
    loaded = load_classifier(tiny_model)
    _, ds = load_split(str(faces_parquet), None)
    faces = FerTensorDataset.from_split(ds.select(range(64)))
    plain, _ = run_inference(loaded, faces, "none", batch_size=128)
    flipped, _ = run_inference(loaded, faces, "hflip", batch_size=128)
    assert not np.allclose(plain, flipped)
    x = eval_transform_for(loaded)(faces.images)  # (N, 1, 48, 48)
    with torch.no_grad():
        probs = [loaded.model(pixel_values=v).logits.softmax(-1) for v in (x, x.flip(-1))]
    np.testing.assert_allclose(flipped, ((probs[0] + probs[1]) / 2).log().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(plain, loaded.model(pixel_values=x).logits.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_input_spec_follows_the_saved_processor_and_config(tiny_model):
    spec = input_spec(load_classifier(tiny_model).model.config, ViTImageProcessor())
    assert spec == {"size": 224, "channels": 1, "mean": [0.5], "std": [0.5]}
    imagenet = ViTImageProcessor(size={"height": 112, "width": 112}, image_mean=[0.485, 0.456, 0.406])
    spec = input_spec(SimpleNamespace(num_channels=3), imagenet)
    assert spec["size"] == 112 and spec["channels"] == 3 and spec["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_two_class_model_on_seven_class_data_is_scored_on_its_classes(tmp_path, faces_parquet, capsys):
    model = save_tiny_cnn(tmp_path / "binary", names=("happy", "sad"))
    labels = pq.read_table(faces_parquet).column("label").to_numpy()
    kept = int(np.isin(labels, [3, 4]).sum())
    for args, left_out in (((), len(labels) - kept), (("--classes", "happy,sad"), 0)):
        out = tmp_path / f"eval{len(args)}"
        assert run_cli(model, "--data", faces_parquet, "--output", out, *args) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["labels"] == ["happy", "sad"] and m["split_size"] == kept
        assert (m["left_out"] or {"faces": 0})["faces"] == left_out  # said in the report, never silent
    assert "left out: " in capsys.readouterr().out
    disjoint = save_tiny_cnn(tmp_path / "other", names=("happy", "contempt"))
    assert run_cli(disjoint, "--data", faces_parquet, "--output", tmp_path / "e3") == 2
    assert "fewer than two classes in common" in capsys.readouterr().err


def test_bad_inputs_fail_clearly_and_leave_nothing(tiny_model, faces_parquet, tmp_path, capsys):
    out = tmp_path / "eval"
    assert run_cli(tiny_model, "--data", faces_parquet, "--split", "test", "--output", out) == 2
    assert "no split 'test'; it has ['train']" in capsys.readouterr().err

    not_classifier = tmp_path / "encoder"
    not_classifier.mkdir()
    (not_classifier / "config.json").write_text(
        json.dumps({"model_type": "fer_cnn", "architectures": ["FerCnnModel"]})
    )
    assert run_cli(not_classifier, "--data", faces_parquet, "--output", out) == 2
    assert "is not an image classifier" in capsys.readouterr().err

    empty = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(faces_parquet).slice(0, 0), empty)
    assert run_cli(tiny_model, "--data", empty, "--output", out) == 2
    assert "empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.parquet", "encoder"]

    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert run_cli(tiny_model, "--data", faces_parquet, "--output", out) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("name", ["default", "lite0"])
def test_bundled_models_resolve_to_their_folders(name, tiny_model, monkeypatch, tmp_path, capsys):
    import fer_hf.models.loading

    def bundle_as(path):
        bundled = dataclasses.replace(fer_hf.models.loading.BUNDLED_MODELS[name], path=path)
        monkeypatch.setitem(fer_hf.models.loading.BUNDLED_MODELS, name, bundled)

    bundle_as(tmp_path / "missing")
    assert run_cli(name, "--data", "bundled", "--output", tmp_path / "a") == 2
    assert f"no bundled model {name!r}" in capsys.readouterr().err and not (tmp_path / "a").exists()
    bundle_as(tiny_model)
    assert run_cli(name, "--data", "bundled", "--output", tmp_path / "b", "--tta", "tencrop") == 0
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert (m["model"], m["split"], m["split_size"], m["tta"]) == (str(tiny_model), "validation", 70, "tencrop")


def test_evaluate_metric_module_loads_offline_and_equals_compute_fer_metrics():
    import evaluate

    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(64, 7)).astype(np.float32), rng.integers(0, 7, 64)
    metric = evaluate.load(METRIC_PATH)
    assert metric.compute(predictions=logits, references=labels) == compute_fer_metrics(logits, labels, FER_LABELS)
    names = ["happy", "sad"]
    result = metric.compute(predictions=logits[:, :2], references=labels % 2, label_names=names)
    assert result == compute_fer_metrics(logits[:, :2], labels % 2, names)
