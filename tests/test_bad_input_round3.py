"""Bad input, round 3 (#38), table-driven like test_bad_input.py: batch sizes below 1, malformed recipe YAML,
an ensemble member given twice, predict's outputs over its inputs, and training never running a foreign repo's
code. Every case must fail before any model is trained or any file written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_hf import ensemble, evaluate
from fer_hf.cli import run
from fer_hf.configs import RecipeError, load_recipe

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
    from fer_hf.loading import DEFAULT_MODEL_DIR

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
    assert predict.main([*argv, "--model", "model"]) == 2
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
        args = load_recipe(REPO / "recipes/vit_unfreeze.yaml", overrides).model
        with pytest.raises(ValueError, match="cannot read a model config"):
            build_vit(args, ("a", "b"), {0: "a", 1: "b"}, {"a": 0, "b": 1}, None)
        assert seen.pop() == {"trust_remote_code": value}  # always said, never left to a prompt
