"""Bad input, round 3 (#38), table-driven like test_bad_input.py: batch sizes below 1, malformed recipe YAML,
an ensemble member given twice, predict's outputs over its inputs, and training never running a foreign repo's
code. Every case must fail before any model is trained or any file written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_hf import ensemble, evaluate
from fer_hf.cli import run
from fer_hf.configs import RecipeError
from fer_hf.recipe_parser import load_recipe

REPO = Path(__file__).resolve().parents[1]

BATCH_CASES = [  # (command, argv); argparse must refuse each with a sentence, before any model or data is read
    (evaluate.main, ["default", "--data", "bundled", "--batch-size", "0"]),
    (evaluate.main, ["default", "--data", "bundled", "--batch-size", "-4"]),
    (evaluate.main, ["default", "--data", "bundled", "--batch-size", "many"]),
    (ensemble.main, ["default", "lite0", "--output", "OUT", "--batch-size", "0"]),
    (ensemble.main, ["default", "lite0", "--output", "OUT", "--batch-size", "-1"]),
]


@pytest.mark.parametrize(("command", "argv"), BATCH_CASES)
def test_a_batch_size_below_one_is_refused_by_argparse(command, argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        command(argv)
    err = capsys.readouterr().err
    value = argv[argv.index("--batch-size") + 1]
    assert stop.value.code == 2 and f"argument --batch-size: expected a positive integer, got '{value}'" in err, err
    assert not list(tmp_path.iterdir())  # nothing written (no OUT, no runs/eval)


YAML_CASES = {  # name -> (recipe text, fragments of the RecipeError besides the file name)
    "unclosed list": (
        "data:\n  source: bundled\n  classes: [happy, sad\ntraining:\n  num_train_epochs: 1\n",
        ["not valid YAML at line 4", "expected ',' or ']'", "from line 3"],
    ),
    "bad indentation": ("model:\n  family: cnn\n   preset: x\n", ["not valid YAML at line 3", "mapping values"]),
    "a tab": ("training:\n  learning_rate: 1e-3\n\tseed: 3\n", ["not valid YAML at line 3, column 1", "'\\t'"]),
    "unclosed quote": ('data: {source: "bundled\n', ["not valid YAML at line 2", "quoted scalar, from line 1"]),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_malformed_recipe_yaml_names_the_file_and_the_line(case, tmp_path):
    text, fragments = YAML_CASES[case]
    recipe = tmp_path / "broken.yaml"
    recipe.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe)
    message = str(caught.value)
    assert message.startswith(f"{recipe}: ") and "<unicode string>" not in message and "\n" not in message
    assert all(fragment in message for fragment in fragments), (fragments, message)


OVERRIDE_CASES = [  # (overrides of recipes/smoke.yaml, fragments)
    (["--data.classes", "[happy, sad"], ["--data.classes '[happy, sad'", "line 1, column 12", "']'"]),
    (["--data.source={a: b"], ["--data.source '{a: b'", "line 1", "'}'"]),
    (["--training.run_name", "a: b: c"], ["--training.run_name 'a: b: c'", "mapping values are not allowed"]),
]


@pytest.mark.parametrize(("overrides", "fragments"), OVERRIDE_CASES)
def test_a_malformed_override_value_names_its_flag(overrides, fragments):
    with pytest.raises(RecipeError) as caught:
        load_recipe(REPO / "recipes/smoke.yaml", overrides)
    message = str(caught.value)
    assert "<unicode string>" not in message and all(f in message for f in fragments), (fragments, message)


def test_a_recipe_that_is_not_text_is_one_sentence(tmp_path):
    recipe = tmp_path / "photo.yaml"
    shutil.copy(REPO / "spaces_app/examples/fer_happy.png", recipe)
    with pytest.raises(RecipeError, match=r"photo.yaml: not a text file"):
        load_recipe(recipe)


def test_a_model_given_twice_is_not_an_ensemble(tmp_path, capsys):
    from fer_hf.models.loading import DEFAULT_MODEL_DIR

    link = tmp_path / "link_to_default"
    link.symlink_to(DEFAULT_MODEL_DIR)
    out = tmp_path / "ens"
    for models, fragment in [
        (["default", "default"], "MODEL 'default' is given twice"),
        (["default", "lite0", str(DEFAULT_MODEL_DIR)], f"'default' and '{DEFAULT_MODEL_DIR}' are one model"),
        (["default", str(link)], f"'default' and '{link}' are one model"),  # another path to the same folder
    ]:
        assert run(ensemble.main, [*models, "--output", str(out)]) == 2, models
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
        assert not out.exists()


# ---------------------------------------------------------------- predict never writes over its inputs
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def predict_inputs(tmp_path, monkeypatch):
    """A photo, a folder of photos, a 1 s video of a real face and a tiny model, in the current folder."""
    import cv2
    from helpers import save_tiny_cnn
    from PIL import Image
    from skimage import data as skdata

    monkeypatch.chdir(tmp_path)
    face = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    Image.fromarray(face).save("photo.jpg")
    Path("photos").mkdir()
    Image.fromarray(face).save("photos/p.jpg")
    writer = cv2.VideoWriter("clip.avi", cv2.VideoWriter_fourcc(*"MJPG"), 4, (256, 256))
    for _ in range(4):
        writer.write(cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    writer.release()
    save_tiny_cnn(tmp_path / "model")
    return tmp_path


OVERLAP_CASES = [  # (predict's arguments, the flag and the input the one error line must name)
    (["clip.avi", "--csv", "clip.avi"], "--csv clip.avi overlaps the input clip.avi"),
    (["photo.jpg", "--json", "photo.jpg"], "--json photo.jpg overlaps the input photo.jpg"),
    (["photos", "--csv", "photos/out.csv"], "--csv photos/out.csv overlaps the input photos"),  # inside a folder
    (["photos", "--annotate", "photos"], "--annotate photos overlaps the input photos"),
    (["photos", "--annotate", "photos/annotated"], "--annotate photos/annotated overlaps the input photos"),
    (["photos/p.jpg", "--annotate", "."], "--annotate . overlaps the input photos/p.jpg"),  # contains the photo
    (["clip.avi", "--plot-dir", "."], "--plot-dir . overlaps the input clip.avi"),
    (["clip.avi", "--plot-dir", "clip.avi"], "--plot-dir clip.avi overlaps the input clip.avi"),
    (["photo.jpg", "--annotate", "model"], "--annotate model overlaps the input model"),  # the --model folder
    (["photo.jpg", "--csv", "out.csv", "--json", "./out.csv"], "--csv and --json are both out.csv"),
]


@pytest.mark.parametrize(("argv", "message"), OVERLAP_CASES)
def test_predict_refuses_outputs_over_its_inputs_and_leaves_them_as_they_were(predict_inputs, argv, message, capsys):
    from fer_hf import predict

    before = _tree(predict_inputs)
    assert run(predict.main, [*argv, "--model", "model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert _tree(predict_inputs) == before  # nothing replaced, nothing added


def test_predict_writes_only_what_it_was_asked_for(predict_inputs, capsys):
    from fer_hf import predict

    before = _tree(predict_inputs)
    assert predict.main(["clip.avi", "photo.jpg", "--model", "model"]) == 0
    assert "clip.avi: 2 frames sampled, 2 with a face" in capsys.readouterr().out
    assert _tree(predict_inputs) == before  # no timeline PNGs in the current folder without --plot-dir

    plots = predict_inputs / "plots"
    plots.mkdir()
    (plots / "clip_timeline.png").write_bytes(before["photo.jpg"])  # a file of the user's, named like a timeline
    assert predict.main(["clip.avi", "--model", "model", "--plot-dir", "plots"]) == 0
    assert (plots / "clip_timeline.png").read_bytes() == before["photo.jpg"]  # kept
    assert sorted(p.name for p in plots.iterdir()) == ["clip_face1.png", "clip_timeline.png", "clip_timeline_2.png"]
    assert "-> plots/clip_timeline_2.png" in capsys.readouterr().out


# ---------------------------------------------------------------- train never runs a foreign repo's code
def _evil_backbone(folder: Path, marker: Path) -> Path:
    """A local 'checkpoint' whose config.json sends AutoConfig to its own configuration_evil.py, which writes
    `marker` when it is imported: what a foreign Hub repo's code could do."""
    import json

    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    (folder / "configuration_evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n\n"
        "from transformers import PreTrainedConfig\n\n\n"
        "class EvilConfig(PreTrainedConfig):\n    model_type = 'evil'\n"
    )
    return folder


@pytest.mark.parametrize("recipe", ["vit_unfreeze.yaml", "resnet_unfreeze.yaml"])
def test_train_refuses_a_backbone_with_its_own_code_even_when_stdin_says_yes(recipe, tmp_path):
    import os
    import subprocess
    import sys

    marker = tmp_path / "foreign_code_ran"
    evil = _evil_backbone(tmp_path / "evil", marker)
    out = tmp_path / "run"
    argv = [REPO / "recipes" / recipe, "--model.name_or_path", evil, "--data.source", "bundled"]
    argv += ["--training.output_dir", out, "--training.bf16", "false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "fer_hf.train", *map(str, argv)],
        input="y\ny\n",  # transformers' [y/N] prompt would take this as consent
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")},
        timeout=300,
    )
    assert not marker.exists()  # its code never ran
    assert "[y/N]" not in done.stdout + done.stderr  # and nobody was asked
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr[-2000:]
    assert "needs its own Python code" in errors[0] and "--trust-remote-code" in errors[0], errors
    assert not (out / "model.safetensors").exists()


def test_trust_remote_code_is_a_recipe_key_and_the_flat_flag_of_the_other_commands(monkeypatch):
    from fer_hf.models import pretrained
    from fer_hf.models.vit import build_vit

    smoke = REPO / "recipes/smoke.yaml"
    assert load_recipe(smoke).model.trust_remote_code is False
    for overrides, value in [
        (["--trust-remote-code"], True),
        (["--trust-remote-code", "--training.seed", "3"], True),  # a switch: takes no value from the next flag
        (["--trust_remote_code", "false"], False),
        (["--model.trust_remote_code", "yes"], True),
    ]:
        assert load_recipe(smoke, overrides).model.trust_remote_code is value, overrides
    with pytest.raises(RecipeError, match="already given by --model.trust_remote_code"):
        load_recipe(smoke, ["--model.trust_remote_code", "false", "--trust-remote-code"])

    seen = []

    def fake(name_or_path, **kwargs):
        seen.append(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(pretrained.AutoConfig, "from_pretrained", fake)
    for overrides, value in [([], False), (["--trust-remote-code"], True)]:
        args = load_recipe(REPO / "recipes/vit_unfreeze.yaml", [*overrides, "--use_cpu"]).model  # a bf16 recipe
        with pytest.raises(ValueError, match="cannot read a model config"):
            build_vit(args, ("a", "b"), {0: "a", 1: "b"}, {"a": 0, "b": 1}, None)
        assert seen.pop() == {"trust_remote_code": value}  # always said, never left to a prompt


def _error_lines(err: str) -> list[str]:
    """stderr without the progress bars transformers and the exporter print there; a traceback fails the test."""
    assert "Traceback" not in err, err[-2000:]
    noise = ("Loading weights", "[torch.onnx]", "exported in ")
    return [line for line in err.strip().splitlines() if line.strip() and not line.startswith(noise)]


# ---------------------------------------------------------------- bad or foreign ONNX exports (#38 round 3, item 1)
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    """A tiny random CNN exported by `python -m fer_hf.export` (opset 18, parity checked on the bundled faces)."""
    from helpers import save_tiny_cnn

    from fer_hf import export

    root = tmp_path_factory.mktemp("onnx")
    save_tiny_cnn(root / "model")
    assert export.main([str(root / "model"), "--output", str(root / "export")]) == 0
    return root / "export"


def _foreign_onnx(path: Path, shape: list, outputs: int = 7) -> None:
    """A valid ONNX graph that is not an export of this package: input x of `shape` -> Flatten -> a (batch, outputs)
    MatMul; made with onnx.helper, as any other tool's model."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod([d for d in shape[1:]]))
    weight = numpy_helper.from_array(np.ones((features, outputs), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def _edit_spec(folder: Path, edit) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    edit(config["fer_hf_onnx"])
    (folder / "config.json").write_text(json.dumps(config))


def _truncate(folder: Path) -> None:
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])


ONNX_CASES = {  # name -> (how the copy of a good export is spoilt, fragments of the one error line)
    "truncated model.onnx": (_truncate, ["model.onnx: onnxruntime cannot load it", "export the model again"]),
    "a foreign model (1, 10) -> 7": (
        lambda f: _foreign_onnx(f / "model.onnx", ["N", 10]),
        ["model.onnx: takes x tensor(float) of shape (N, 10)", "expected one float input (batch, 1, 48, 48)"],
    ),
    "a foreign image model of another size": (
        lambda f: _foreign_onnx(f / "model.onnx", ["N", 3, 64, 64]),
        ["model.onnx: takes x tensor(float) of shape (N, 3, 64, 64)", "(size 48, channels 1)"],
    ),
    "config says another input size": (
        lambda f: _edit_spec(f, lambda spec: spec.update(size=64)),
        ["of shape (batch, 1, 48, 48)", "expected one float input (batch, 1, 64, 64)"],
    ),
    "config.json without mean": (
        lambda f: _edit_spec(f, lambda spec: spec.pop("mean")),
        ["config.json: fer_hf_onnx has no ['mean']", "a list of 1 or `channels` numbers"],
    ),
    "mean of the wrong type": (
        lambda f: _edit_spec(f, lambda spec: spec.update(mean="0.5")),
        ["config.json: fer_hf_onnx.mean is '0.5'", "a list of 1 or `channels` numbers"],
    ),
    "labels shorter than the outputs": (
        lambda f: _edit_spec(f, lambda spec: spec.update(labels=spec["labels"][:5])),
        ["gives logits of shape (batch, 7)", "names 5 labels", "expected (batch, 5)"],
    ),
    "config.json without the export block": (
        lambda f: _edit_spec(f, lambda spec: spec.clear()) or _drop_block(f),
        ["config.json: has no 'fer_hf_onnx' block", "an ONNX model from elsewhere is not supported"],
    ),
}


def _drop_block(folder: Path) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    config.pop("fer_hf_onnx")
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("case", sorted(ONNX_CASES))
def test_a_bad_or_foreign_export_is_one_sentence_in_the_runtime_and_predict(case, tiny_export, tmp_path, capsys):
    from fer_hf import predict, runtime

    spoil, fragments = ONNX_CASES[case]
    folder = tmp_path / "export"
    shutil.copytree(tiny_export, folder)
    spoil(folder)
    photo = REPO / "spaces_app/examples/fer_happy.png"
    for command, argv in [
        (runtime.main, [str(folder), str(photo)]),
        (predict.main, [str(photo), "--model", str(folder)]),
    ]:
        assert run(command, argv) == 2, (case, command.__module__)
        lines = _error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (command.__module__, lines)
        assert str(folder) in lines[0] and all(f in lines[0] for f in fragments), (
            command.__module__,
            fragments,
            lines,
        )


def test_an_onnx_file_alone_is_named_as_such(tmp_path, capsys):
    from fer_hf import predict, runtime

    (tmp_path / "onnx_only").mkdir()
    _foreign_onnx(tmp_path / "onnx_only/model.onnx", ["N", 1, 48, 48])
    photo = str(REPO / "spaces_app/examples/fer_happy.png")
    assert run(runtime.main, [str(tmp_path / "onnx_only"), photo]) == 2
    assert "onnx_only: no config.json; expected a fer_hf.export folder" in capsys.readouterr().err
    assert run(predict.main, [photo, "--model", str(tmp_path / "onnx_only")]) == 2
    assert "a model.onnx alone is not enough" in capsys.readouterr().err


def test_the_good_export_still_runs(tiny_export, capsys):
    from fer_hf import runtime

    assert run(runtime.main, [str(tiny_export), str(REPO / "spaces_app/examples/fer_happy.png")]) == 0
    assert "1 face(s): 1: " in capsys.readouterr().out


def test_explain_an_export_says_it_needs_the_torch_model(tiny_export, tmp_path, capsys):
    from fer_hf import explain

    argv = [
        "--model",
        str(tiny_export),
        str(REPO / "spaces_app/examples/fer_happy.png"),
        "--output",
        str(tmp_path / "x"),
    ]
    assert run(explain.main, argv) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "an ONNX export run by onnxruntime" in err[0], err
    assert "explanations need the torch model it was exported from" in err[0] and "model'" in err[0]
    assert not (tmp_path / "x").exists()


EXPLAIN_CASES = [  # (argv besides --output, fragment of the one error line): the whole run fails -> exit 2
    (["--model", "default", "missing.png"], "missing.png: not a readable image"),
    (["--model", "default", "coins.png"], "coins.png: no face found; pass --cropped"),
    (["--model", "default", "fer_happy.png", "--method", "attention"], "attention: "),  # the only method: skipped
    (["--model", "default", "fer_happy.png", "--target", "joy"], "--target 'joy' is not a class of this model"),
    (["--model", "nowhere/at/all", "fer_happy.png"], "could not load --model nowhere/at/all"),
]


@pytest.mark.parametrize(("argv", "fragment"), EXPLAIN_CASES)
def test_explain_ends_a_run_that_explains_nothing_with_one_error_line(argv, fragment, tmp_path, monkeypatch, capsys):
    from PIL import Image
    from skimage import data as skdata

    from fer_hf import explain

    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "spaces_app/examples/fer_happy.png", "fer_happy.png")
    Image.fromarray(skdata.coins()).save("coins.png")
    assert run(explain.main, [*argv, "--output", "out"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not Path("out").exists()


# ---------------------------------------------------------------- export: opsets and exports of exports (item 2)
@pytest.mark.parametrize("opset", ["5", "16", "99", "eighteen"])
def test_export_refuses_an_opset_it_cannot_write(opset, tmp_path, capsys):
    from fer_hf import export

    with pytest.raises(SystemExit) as stop:
        export.main(["default", "--output", str(tmp_path / "out"), "--opset", opset])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument --opset: {opset!r}: torch's exporter writes opsets 17 to" in err, err
    assert not (tmp_path / "out").exists()


def test_export_records_the_opset_it_wrote_and_refuses_a_silent_fallback(tiny_export, tmp_path, monkeypatch):
    import json

    import onnx

    from fer_hf import export

    spec = json.loads((tiny_export / "config.json").read_text())["fer_hf_onnx"]
    declared = [e.version for e in onnx.load(str(tiny_export / "model.onnx")).opset_import if e.domain == ""]
    assert spec["opset"] == 18 and declared == [18]
    assert "opset 18" in (tiny_export / "README.md").read_text()

    from fer_hf.inference import exporting

    monkeypatch.setattr(
        exporting, "written_opset", lambda path: 18
    )  # what torch does for an opset it cannot convert to
    with pytest.raises(exporting.ExportError, match=r"--opset 17: torch's exporter wrote opset 18 instead"):
        export.export(exporting.ExportOptions(str(tiny_export.parent / "model"), str(tmp_path / "o"), opset=17))
    assert not (tmp_path / "o").exists()


def test_exporting_an_export_is_one_sentence(tiny_export, tmp_path, capsys):
    from fer_hf import export

    assert run(export.main, [str(tiny_export), "--output", str(tmp_path / "again")]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "already an ONNX model" in err[0] and "\x1b[" not in err[0], err
    assert "export the torch model it came from" in err[0] and not (tmp_path / "again").exists()


# ---------------------------------------------------------------- benchmarks (item 3)
BENCH_CASES = [  # argv of python -m fer_hf.bench; argparse refuses each with a sentence, before anything is measured
    (["train", "--steps", "0"], "argument --steps: expected an integer of at least 1, got '0'"),
    (["train", "--repeats", "-1"], "argument --repeats: expected an integer of at least 1, got '-1'"),
    (["train", "--warmup", "x"], "argument --warmup: expected an integer of at least 0, got 'x'"),
    (["video", "--seconds", "0"], "argument --seconds: expected a number of at least 0.1 s (one frame at 10 fps)"),
    (["video", "--seconds", "nan"], "argument --seconds: expected a number of at least 0.1"),
    (["video", "--detect-every", "0"], "argument --detect-every: expected an integer of at least 1, got '0'"),
    (["predict", "--repeats", "0"], "argument --repeats: expected an integer of at least 1, got '0'"),
    (["nosuch"], "invalid choice: 'nosuch'"),
]


@pytest.mark.parametrize(("argv", "fragment"), BENCH_CASES)
def test_bench_refuses_arguments_that_would_measure_nothing(argv, fragment):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "fer_hf.bench", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr, done.stderr[-1500:]
    assert not done.stdout.strip()  # no headline: nothing was measured


def test_bench_goes_through_cli_run(capsys):
    """A benchmark's bad input beyond argparse (a model that does not load) is one error line, not a traceback."""
    from fer_hf.bench.__main__ import main

    assert run(main, ["video", "--model", "nowhere/at/all", "--seconds", "0.5", "--repeats", "1"]) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error: ") and "nowhere/at/all" in err[0], err


# ---------------------------------------------------------------- metrics.json values of the wrong type (item 4)
RECORD_CASES = {  # name -> (edit of a real run record's JSON, fragment of the RecordError)
    "accuracy as a word": (
        lambda d: d["validation"].update(accuracy="high"),
        "[validation]: key 'accuracy' is \"high\" (str), expected a number",
    ),
    "a per-class f1 as a word": (
        lambda d: d["validation"]["per_class"]["happy"].update(f1="good"),
        "key 'per_class'['happy']['f1'] is \"good\" (str), expected a number",
    ),
    "parameters as a string": (
        lambda d: d.update(parameters="12k"),
        "key 'parameters' is \"12k\" (str), expected an integer",
    ),
    "train_seconds as a list": (
        lambda d: d.update(train_seconds=[1, 2]),
        "key 'train_seconds' is [1, 2] (list), expected a number or null",
    ),
    "a boolean accuracy": (
        lambda d: d["validation"].update(accuracy=True),
        "key 'accuracy' is true (bool), expected a number",
    ),
    "a confusion cell as text": (
        lambda d: d["validation"]["confusion_matrix"][0].__setitem__(0, "3"),
        "key 'confusion_matrix'[0][0] is \"3\" (str), expected an integer",
    ),
    "labels not a list": (
        lambda d: d.update(labels="happy,sad"),
        "key 'labels' is \"happy,sad\" (str), expected a list",
    ),
}


@pytest.mark.parametrize("case", sorted(RECORD_CASES))
def test_a_metrics_value_of_the_wrong_type_names_the_file_and_key(case, tmp_path, capsys):
    import json

    from fer_hf import compare
    from fer_hf.evaluation.results import RecordError, read_record
    from fer_hf.models.loading import DEFAULT_MODEL_DIR

    edit, fragment = RECORD_CASES[case]
    doc = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())
    read_record(DEFAULT_MODEL_DIR / "metrics.json")  # the real record reads
    edit(doc)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(RecordError) as caught:
        read_record(run_dir)
    assert str(caught.value).startswith(str(run_dir / "metrics.json")) and fragment in str(caught.value), caught.value
    assert run(compare.main, [str(run_dir), "--output", str(tmp_path / "cmp")]) == 2  # a reader: one sentence
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1 and fragment in err[0] and "Unknown format code" not in err[0], err


# ---------------------------------------------------------------- animated images (item 5)
@pytest.fixture
def animated_gif(tmp_path):
    """A 3-frame GIF of a real face whose first frame is blank grey: read from frame 1 alone, no face is found."""
    import cv2
    from PIL import Image
    from skimage import data as skdata

    face = Image.fromarray(cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA))
    blank = Image.new("RGB", face.size, (128, 128, 128))
    path = tmp_path / "wave.gif"
    mirrored = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # another frame: PIL merges identical ones
    blank.save(path, save_all=True, append_images=[face, mirrored], duration=[200, 300, 400], loop=0)
    return path


def test_an_animated_gif_is_refused_as_one_photo_and_predict_reads_it_as_a_clip(animated_gif, tmp_path):
    import json

    from fer_hf import predict
    from fer_hf.inference.faces import ImageLoadError, load_image

    with pytest.raises(ImageLoadError) as caught:
        load_image(animated_gif)
    message = str(caught.value)
    assert message.startswith(f"{animated_gif}: an animated GIF of 3 frames") and "pass it as a video" in message
    assert "not a readable image" not in message  # it is readable: it is just not one photo
    out = tmp_path / "gif.json"
    assert predict.main([str(animated_gif), "--fps", "0", "--json", str(out)]) == 0  # every frame, as a video
    video = json.loads(out.read_text())[0]
    faces = [len(frame["faces"]) for frame in video["frames"]]
    assert faces == [0, 1, 1], video  # the face of frames 2 and 3 is found, not lost behind the blank first frame


def test_animation_frames_reads_every_frame_with_its_time_as_opencv_does(animated_gif):
    import cv2

    from fer_hf.data.images import animation_frames, is_animated
    from fer_hf.inference.faces import FaceDetector

    assert is_animated(animated_gif) and not is_animated(REPO / "spaces_app/examples/fer_happy.png")
    frames = list(animation_frames(animated_gif))
    assert [(i, t) for i, t, _ in frames] == [(0, 0.0), (1, 0.2), (2, 0.5)]
    detector = FaceDetector()
    assert [len(detector.faces(rgb, "detect")) for _, _, rgb in frames] == [0, 1, 1]  # the face is in frames 1-2
    capture, times = cv2.VideoCapture(str(animated_gif)), []
    while capture.read()[0]:  # OpenCV reads a GIF as a video, with the same times: predict_video can take it
        times.append(round(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000, 3))
    assert len(times) == 3 and times[1:] == [0.2, 0.5]


def test_a_torch_model_with_a_stray_model_onnx_still_loads_as_torch(tmp_path):
    from helpers import save_tiny_cnn

    from fer_hf.models.loading import OnnxImageClassifier, load_classifier

    folder = save_tiny_cnn(tmp_path / "model")
    _foreign_onnx(folder / "model.onnx", ["N", 10])  # a Hub repo may ship an ONNX file beside its weights
    assert not isinstance(load_classifier(folder).model, OnnxImageClassifier)


# ---------------------------------------------------------------- data sources (#38: silently wrong)
def test_a_superscript_digit_emotion_is_named_not_a_raw_int_error(tmp_path):
    from fer_hf.data.dataset import load_fer_dataset
    from fer_hf.data.sources import FerDataError

    pixels = " ".join(["128"] * 2304)
    csv = tmp_path / "fer2013.csv"
    csv.write_text(f"emotion,pixels,Usage\n3,{pixels},Training\n\u00b2,{pixels},Training\n")
    with pytest.raises(FerDataError, match=r"row 2 \(line 3\): emotion '²'; expected an integer in 0..6"):
        load_fer_dataset(csv)


def test_one_face_per_class_cannot_give_a_validation_split_and_says_so(tmp_path, bundled_dd):
    from fer_hf.data.dataset import load_fer_dataset
    from fer_hf.data.sources import FerDataError

    train = bundled_dd["train"]
    names = train.features["label"].names
    for label, name in enumerate(names):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        train[train["label"].index(label)]["image"].save(folder / "face.png")
    with pytest.raises(FerDataError, match="no class has 2 or more faces, so no validation split can be carved"):
        load_fer_dataset(tmp_path)
    second = tmp_path / "train" / "happy" / "again.png"
    train[train["label"].index(names.index("happy")) + 1]["image"].save(second)
    with pytest.warns(UserWarning, match=r"'angry'.* have one training face each, kept in train"):
        dd = load_fer_dataset(tmp_path)
    assert len(dd["validation"]) == 1  # happy's second face, the only class that has two


def test_video_batches_hold_a_bounded_number_of_pixels():
    """64 sampled frames of 8K video were decoded and held at once (+1.2 GB for 12 frames): batches now stop at a
    pixel budget, never below one frame, and keep every frame in order."""
    import numpy as np

    from fer_hf.inference.predictions import frame_chunks

    frames = [(i, i / 10, np.zeros((40, 30, 3), dtype=np.uint8)) for i in range(7)]  # 3,600 bytes each
    chunks = list(frame_chunks(frames, 64, max_bytes=8_000))
    assert [len(c) for c in chunks] == [3, 3, 1] and [f[0] for c in chunks for f in c] == list(range(7))
    assert [len(c) for c in frame_chunks(frames, 2, max_bytes=10**9)] == [2, 2, 2, 1]  # the batch size still counts
    assert [len(c) for c in frame_chunks(frames[:2], 64, max_bytes=1)] == [1, 1]  # one huge frame: batches of one
