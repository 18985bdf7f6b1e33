"""--backend auto|onnx|torch (issue #37, devices and speed): auto runs the model's ONNX export, made once and cached,
with torch's numbers on real photos; the cache is reused and never taken half-written; an impossible backend is one
sentence; inference threads are fitted to the usable cores."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from fer_hf import devices, predict
from fer_hf.cli import run
from fer_hf.exports import runtime
from fer_hf.inference import backend, exporting
from fer_hf.inference.analysis import Analyzer
from fer_hf.inference.fingerprint import model_fingerprint
from fer_hf.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory):
    """One export of the bundled default model for the whole session (exporting takes seconds), in a private cache."""
    folder = tmp_path_factory.mktemp("fer_hf_cache")
    old = os.environ.get(backend.CACHE_ENV)
    os.environ[backend.CACHE_ENV] = str(folder)
    yield folder / "onnx"
    if old is None:
        os.environ.pop(backend.CACHE_ENV, None)
    else:
        os.environ[backend.CACHE_ENV] = old


@pytest.fixture(scope="session")
def auto_default(cache_root):
    predictor = Predictor("default", backend="auto")
    return predictor


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Real photos: skimage's astronaut (one face) and insightface's t1.jpg (six faces)."""
    import importlib.util

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.astronaut()).save(folder / "astronaut.jpg", quality=92)
    group = Path(importlib.util.find_spec("insightface").origin).parent / "data/images/t1.jpg"
    return [folder / "astronaut.jpg", group]


def test_auto_runs_the_cached_export_with_torchs_numbers(auto_default, cache_root, photos):
    assert auto_default.backend == "onnx" and type(auto_default.model).__name__ == "OnnxImageClassifier"
    folder = auto_default.model.runtime.folder
    assert folder.parent == cache_root and runtime.is_export(folder)
    block = json.loads((folder / "config.json").read_text())[runtime.EXPORT_KEY]
    assert block["fingerprint"] == model_fingerprint(auto_default.loaded)
    assert block["parity"]["max_logit_diff"] < 1e-3
    assert not list(cache_root.glob(".*.partial"))  # the staging folder went into place whole
    # The torch model stays beside the export: explanations and training use it.
    assert isinstance(auto_default.loaded.model, torch.nn.Module) and not hasattr(auto_default.loaded.model, "runtime")
    torch_side = Predictor("default", backend="torch")
    assert torch_side.backend == "torch" and torch_side.model is torch_side.loaded.model
    onnx_results, torch_results = auto_default.predict_images(photos), torch_side.predict_images(photos)
    assert [len(r.faces) for r in onnx_results] == [1, 6]
    for a, b in zip(onnx_results, torch_results, strict=True):
        assert [f.box for f in a.faces] == [f.box for f in b.faces]
        assert [f.label for f in a.faces] == [f.label for f in b.faces]
        np.testing.assert_allclose(
            [list(f.probabilities.values()) for f in a.faces],
            [list(f.probabilities.values()) for f in b.faces],
            atol=1e-4,
        )


def test_the_cache_is_reused_not_exported_again(auto_default, monkeypatch, photos):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model's export")

    monkeypatch.setattr(exporting, "write_export", no_export)
    again = Analyzer("default", backend="auto")
    assert again.predictor.backend == "onnx"
    assert again.predictor.model.runtime.folder == auto_default.model.runtime.folder
    assert again(str(photos[0])).faces[0].label == auto_default.predict_images(photos[:1])[0].faces[0].label


def _fake_writer(source: Path, also=None):
    """exporting.write_export stand-in: copies a finished export (no seconds of exporting); `also(folder)` runs first."""

    def write(loaded, folder, args):
        if also is not None:
            also(folder)
        for item in source.iterdir():
            shutil.copy2(item, folder / item.name)
        parity = exporting.Parity(**json.loads((source / "config.json").read_text())[runtime.EXPORT_KEY]["parity"])
        return parity, True, "copied"

    return write


def test_a_half_written_cache_folder_is_not_used(auto_default, tmp_path, monkeypatch):
    source = auto_default.model.runtime.folder
    fingerprint = model_fingerprint(auto_default.loaded)
    root = tmp_path / "onnx"
    final = root / fingerprint[:32]
    final.mkdir(parents=True)
    (final / "model.onnx").write_bytes((source / "model.onnx").read_bytes()[:1000])  # cut short, no config.json
    staged = root / f".{fingerprint[:32]}.abc.partial"  # another process's staging folder, even a complete one
    shutil.copytree(source, staged)
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path))
    assert backend.find_export(auto_default.loaded, fingerprint) is None
    calls = []
    monkeypatch.setattr(exporting, "write_export", _fake_writer(source, also=calls.append))
    made = backend.export_for(auto_default.loaded)
    assert made == final and runtime.is_export(final) and len(calls) == 1 and calls[0] != final
    assert (final / "model.onnx").read_bytes() == (source / "model.onnx").read_bytes()  # the cut file was set aside
    assert backend.find_export(auto_default.loaded, fingerprint) == final


def test_a_concurrent_export_that_finished_first_is_used(auto_default, tmp_path, monkeypatch):
    source = auto_default.model.runtime.folder
    fingerprint = model_fingerprint(auto_default.loaded)
    final = tmp_path / "onnx" / fingerprint[:32]

    def other_process_wins(_staging):
        shutil.copytree(source, final)

    monkeypatch.setattr(exporting, "write_export", _fake_writer(source, also=other_process_wins))
    assert exporting.cached_export(auto_default.loaded, fingerprint, tmp_path / "onnx") == final
    assert runtime.is_export(final) and not list((tmp_path / "onnx").glob(".*.partial"))  # ours was discarded


def test_a_shipped_export_of_other_weights_is_not_taken(auto_default, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    shutil.copytree(auto_default.model.runtime.folder, shipped / "default")
    monkeypatch.setattr(backend, "SHIPPED_DIR", shipped)
    fingerprint = model_fingerprint(auto_default.loaded)
    assert backend.find_export(auto_default.loaded, fingerprint) == shipped / "default"  # same weights: shipped first
    config = json.loads((shipped / "default/config.json").read_text())
    config[runtime.EXPORT_KEY]["fingerprint"] = "0" * 64  # e.g. the bundled model retrained after `make dist`
    (shipped / "default/config.json").write_text(json.dumps(config))
    assert backend.find_export(auto_default.loaded, fingerprint) == auto_default.model.runtime.folder


def test_backend_onnx_that_cannot_run_is_one_sentence_and_auto_falls_back_once(
    photos, monkeypatch, capsys, caplog, tmp_path
):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # an install without onnxruntime: import fails
    assert run(predict.main, ["--backend", "onnx", str(photos[0])]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: --backend onnx: ") and "onnxruntime is not installed" in err[0]
    backend._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fer_hf.inference.backend"):
        first, second = Predictor("default", backend="auto"), Predictor("default", backend="auto")
    assert first.backend == second.backend == "torch"
    assert len([r for r in caplog.records if "runs through torch, not onnxruntime" in r.message]) == 1


def test_a_model_the_exporter_refuses_falls_back_and_is_not_retried(monkeypatch, tmp_path, caplog):
    from helpers import save_tiny_cnn

    tiny = save_tiny_cnn(tmp_path / "tiny")
    monkeypatch.setenv(backend.CACHE_ENV, str(tmp_path / "cache"))
    tries = []

    def refuse(loaded, path, opset):
        tries.append(path)
        raise exporting.ExportError(
            f"{loaded.source}: cannot be exported to ONNX (UnsupportedOp: made up for the test)"
        )

    monkeypatch.setattr(exporting, "export_onnx", refuse)
    backend._warned.clear()
    with caplog.at_level(logging.WARNING, logger="fer_hf.inference.backend"):
        assert Predictor(str(tiny), backend="auto").backend == "torch"
        assert Predictor(str(tiny), backend="auto").backend == "torch"
    assert len(tries) == 1  # the refusal is remembered beside the cache
    with pytest.raises(backend.BackendError, match=r"^--backend onnx: .*UnsupportedOp: made up for the test"):
        Predictor(str(tiny), backend="onnx")
    assert not list((tmp_path / "cache/onnx").glob("*/model.onnx"))  # nothing half-made looks like an export


def test_backend_torch_still_works_and_refuses_an_export_folder(auto_default, photos, tmp_path, capsys):
    out = tmp_path / "torch.json"
    assert predict.main(["--backend", "torch", str(photos[0]), "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["faces"][0]["label"] == auto_default.predict_images(photos[:1])[0].faces[0].label
    capsys.readouterr()
    export_folder = str(auto_default.model.runtime.folder)
    assert run(predict.main, ["--model", export_folder, "--backend", "torch", str(photos[0])]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "is an ONNX export, run only by onnxruntime" in err[0]
    with pytest.raises(backend.BackendError, match="not a backend; expected one of auto, onnx, torch"):
        Predictor("default", backend="tensorrt")


def _error_lines(stderr: str) -> list[str]:
    """The error lines of stderr, without the progress bars transformers draws while loading weights."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]


def test_threads_fit_the_usable_cores(monkeypatch):
    monkeypatch.delenv(devices.THREADS_ENV, raising=False)
    assert devices.usable_cores() == len(os.sched_getaffinity(0))
    assert [devices.inference_threads(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    monkeypatch.setenv(devices.THREADS_ENV, "3")
    assert devices.inference_threads(2) == 3
    monkeypatch.setenv(devices.THREADS_ENV, "many")
    with pytest.raises(
        devices.DeviceError, match=r"^FER_HF_THREADS='many' is not a thread count; expected a positive"
    ):
        devices.inference_threads()
    monkeypatch.delenv(devices.THREADS_ENV)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(devices.usable_cores())
        assert devices.fit_torch_threads() == torch.get_num_threads() == devices.inference_threads()
        torch.set_num_threads(1)
        assert devices.fit_torch_threads() == 1  # lowered, never raised
    finally:
        torch.set_num_threads(before)


def test_onnxruntime_threads_and_providers(auto_default, monkeypatch):
    import onnxruntime as ort

    monkeypatch.delenv(devices.THREADS_ENV, raising=False)
    session = auto_default.model.runtime.session
    assert session.get_session_options().intra_op_num_threads == devices.onnxruntime_threads()
    assert auto_default.model.runtime.provider == "CPUExecutionProvider"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert runtime.session_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert runtime.session_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert runtime.session_providers("cuda") == ["CPUExecutionProvider"]


def test_the_bench_competitor_is_stopped():
    from fer_hf.bench.predict import BusyProcess

    with BusyProcess(seconds=60) as busy:
        assert busy.proc.poll() is None
    assert busy.proc.returncode is not None


def test_the_fingerprint_names_the_weights_not_the_folder_they_were_loaded_from(tmp_path):
    """A shipped export is made where `make dist` runs and used where the wheel is installed: the same weights in
    another folder have the same fingerprint, other weights another one."""
    import shutil

    from fer_hf.models.loading import BUNDLED_MODELS, load_classifier

    copy = tmp_path / "elsewhere"
    shutil.copytree(BUNDLED_MODELS["default"].path, copy)
    here, there = load_classifier("default"), load_classifier(str(copy))
    assert model_fingerprint(here) == model_fingerprint(there)
    assert model_fingerprint(here) != model_fingerprint(load_classifier("lite0"))


def test_crops_at_the_model_size_skip_the_image_processor_only_when_it_changes_nothing(auto_default):
    """An ONNX predictor classifies 48x48 crops with the export's numpy preprocessing: the same probabilities as the
    image processor's path (TTA none and hflip). A processor doing more than rescale + normalise keeps its path."""
    import copy

    from fer_hf.bench.predict import real_faces
    from fer_hf.evaluation.tta import tta_logits
    from fer_hf.inference import predictor as predictor_module

    faces = real_faces(32)
    assert auto_default._runtime is auto_default.model.runtime
    for tta in ("none", "hflip"):
        auto_default.tta = tta
        try:
            fast = auto_default.classify(faces)
        finally:
            auto_default.tta = "none"
        slow = tta_logits(auto_default.model, auto_default.pixel_values(faces), tta).softmax(-1).numpy()
        np.testing.assert_allclose(fast, slow, atol=1e-5)
    processor = auto_default.loaded.image_processor
    assert predictor_module._rescales_and_normalises(processor)
    for change in ({"do_center_crop": True}, {"do_rescale": False}, {"rescale_factor": 1 / 127.5}):
        other = copy.deepcopy(processor)
        for key, value in change.items():
            setattr(other, key, value)
        assert not predictor_module._rescales_and_normalises(other), change
