"""fer_hf.export and the light runtime: the bundled default model exported to ONNX predicts like torch on the real
PublicTest faces, `evaluate`/`predict` take the export folder, int8 is checked, the torch-free runtime runs with
torch and transformers blocked, and bad inputs get one line without losing anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from skimage import data as skdata

from fer_hf import evaluate
from fer_hf.cli import run
from fer_hf.export import main
from fer_hf.exports.runtime import OnnxClassifier
from fer_hf.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_fer):
    out = tmp_path_factory.mktemp("export") / "default"
    assert main(["default", "--output", str(out), "--check-data", str(shared_fer)]) == 0
    return out


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(path, quality=92)
    return path


def test_the_export_predicts_like_torch_on_publictest(exported, shared_fer, tmp_path):
    config = json.loads((exported / "config.json").read_text())
    block = config["fer_hf_onnx"]
    parity = block["parity"]
    assert parity["agreement"] >= 0.999 and parity["max_logit_diff"] < 1e-3 and parity["faces"] == 70
    assert (
        parity["onnx_accuracy"] == pytest.approx(parity["torch_accuracy"], abs=0.001)
        and parity["split"] == "validation"
    )
    assert (block["size"], block["channels"], block["int8"]) == (48, 1, False)
    assert "same prediction on" in (exported / "README.md").read_text()
    runtime = OnnxClassifier(exported)
    faces = [np.asarray(skdata.camera()[100:148, 200:248])] * 7
    assert runtime.classify(faces).shape == (7, 7) and runtime.classify(faces[:1]).shape == (1, 7)  # any batch size
    # fer_hf.evaluate through onnxruntime: the same PublicTest accuracy as the torch model.
    args = [str(exported), "--data", str(shared_fer), "--output", str(tmp_path / "eval")]
    assert evaluate.main(args) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(parity["torch_accuracy"], abs=1e-9)


def test_predict_takes_the_export_folder(exported, astronaut):
    torch_side, onnx_side = Predictor("default"), Predictor(exported)
    assert type(onnx_side.loaded.model).__name__ == "OnnxImageClassifier"  # no torch model was built
    (a,), (b,) = torch_side.predict_images([astronaut]), onnx_side.predict_images([astronaut])
    assert a.faces[0].box == b.faces[0].box and a.faces[0].label == b.faces[0].label
    np.testing.assert_allclose(
        list(a.faces[0].probabilities.values()), list(b.faces[0].probabilities.values()), atol=1e-4
    )


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "torchvision", "timm", "datasets"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from fer_hf import runtime
code = runtime.main(sys.argv[1:])
assert not any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules), "torch was imported"
sys.exit(code)
"""


def test_the_light_runtime_runs_without_torch_and_transformers(exported, astronaut):
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(exported), str(astronaut)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (expected,) = Predictor("default").predict_images([astronaut])
    face = expected.faces[0]
    assert f"1 face(s): 1: {face.label} {face.score:.2f} at {face.box}" in done.stdout


def test_int8_is_checked_and_written(tmp_path):
    out = tmp_path / "int8"
    assert main(["default", "--output", str(out), "--int8", "--check-data", "bundled"]) == 0
    block = json.loads((out / "config.json").read_text())["fer_hf_onnx"]
    assert block["int8"] is True and block["parity"]["agreement"] > 0.8
    # int8 weights: well under the float32 bytes of the same weights (the bundled file stores float16)
    weights = load_file(REPO / "fer_hf/assets/default_model/model.safetensors")
    float32_bytes = 4 * sum(t.numel() for t in weights.values())
    assert (out / "model.onnx").stat().st_size < 0.4 * float32_bytes
    assert "int8 (static" in (out / "README.md").read_text()


def test_bad_inputs_get_one_line_and_lose_nothing(tmp_path, capsys):
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("my files")
    assert run(main, ["default", "--output", str(kept)]) == 2
    assert "already exists" in capsys.readouterr().err and (kept / "notes.txt").read_text() == "my files"
    adapter = tmp_path / "lora_run"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert run(main, [str(adapter), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "LoRA adapter without its base model" in err and not (tmp_path / "x").exists()


def test_the_app_offers_the_export_folder(exported, astronaut):
    sys.path.insert(0, str(REPO / "spaces_app"))
    import backend

    catalogue = backend.ModelCatalogue([backend.load_entry(str(exported))])
    assert "exported to ONNX, run by onnxruntime" in catalogue.entries[0].describe()
    shown = backend.predict_photo(catalogue, str(astronaut), str(exported), "none")
    assert "Found 1 face" in shown.message and shown.faces[0].title.startswith("Face 1")
    with pytest.raises(backend.UserInputError, match="Explanations need the torch model"):
        backend.predict_photo(catalogue, str(astronaut), str(exported), "gradcam")


def test_runtime_preprocessing_is_evaluates_transform(bundled_dd):
    """The torch-free resize and normalisation equal fer_hf.evaluate's BatchTransform (upscaled 96 px RGB input)."""
    from fer_hf.data.decode import FerTensorDataset
    from fer_hf.data.transforms import BatchTransform

    faces = FerTensorDataset.from_split(bundled_dd["validation"]).images[:16]  # (16, 48, 48) uint8, real faces
    spec = {"size": 96, "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    runtime = object.__new__(OnnxClassifier)  # only the preprocessing is under test: no session needed
    runtime.spec = spec
    expected = BatchTransform(**spec, train=False)(faces).numpy()
    np.testing.assert_allclose(runtime.preprocess(list(faces.numpy())), expected, atol=1e-4)
