"""Bad input, table-driven: each case is a command as a careless user would type it, the exit code and message
fragment it must end with, and what on disk must still be there afterwards. Built from real files (the bundled
sample, the bundled model, recipes) turned bad."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_hf import evaluate, export, predict
from fer_hf.cli import run
from fer_hf.configs import RecipeError
from fer_hf.hub import publish
from fer_hf.recipe_parser import load_recipe

REPO = Path(__file__).resolve().parents[1]

RECIPE_CASES = [  # (overrides of recipes/smoke.yaml, message fragment); each must fail before any data is loaded
    (["--run.overwrite", "maybe"], "run.overwrite: expected true or false"),
    (["--run.resume", "nope"], "run.resume: expected true or false"),
    (["--training.num_train_epochs", "0"], "training.num_train_epochs: must be positive"),
    (["--training.num_train_epochs", "-1"], "training.num_train_epochs: must be positive"),
    (["--training.per_device_train_batch_size", "0"], "training.per_device_train_batch_size: must be positive"),
    (["--training.learning_rate", "abc"], "training.learning_rate: expected a number"),
    (["--data.image_size", "abc"], "data.image_size: expected an integer"),
    (["--training.bf16", "perhaps"], "training.bf16: expected true or false"),
    (["--training.remove_unused_columns", "true"], "training.remove_unused_columns must stay False"),
]


@pytest.mark.parametrize(("overrides", "message"), RECIPE_CASES)
def test_bad_recipe_values_are_refused_when_the_recipe_is_read(overrides, message):
    """load_recipe runs before any data is loaded (python -m fer_hf.train prints the message as one error line)."""
    with pytest.raises(RecipeError) as caught:
        load_recipe(REPO / "recipes/smoke.yaml", overrides)
    assert message in str(caught.value) and "smoke.yaml" in str(caught.value)


@pytest.mark.parametrize(
    ("word", "value"), [("no", False), ("yes", True), ("0", False), ("1", True), ("false", False)]
)
def test_recipe_booleans_read_the_usual_words(word, value):
    assert load_recipe(REPO / "recipes/smoke.yaml", ["--run.overwrite", word]).run.overwrite is value
    with pytest.raises(RecipeError):
        load_recipe(REPO / "recipes/smoke.yaml", ["--run.overwrite", "2"])


def copy_default(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(REPO / "fer_hf/assets/default_model", model, ignore=shutil.ignore_patterns("evaluation*", "*.png"))
    return model


def test_outputs_that_overlap_their_input_are_refused_and_nothing_is_lost(tmp_path, capsys):
    model = copy_default(tmp_path)
    before = sorted(p.name for p in model.iterdir())
    cases = [
        (evaluate.main, [str(model), "--data", "bundled", "--output", str(model), "--overwrite"]),
        (evaluate.main, [str(model), "--data", "bundled", "--output", str(tmp_path), "--overwrite"]),  # contains it
        (export.main, [str(model), "--output", str(model / "onnx"), "--overwrite"]),  # inside it
        (publish.main, [str(model), "--repo-id", "user/x", "--dry-run", str(model), "--overwrite"]),
    ]
    for command, argv in cases:
        assert run(command, argv) == 2, argv
        err = capsys.readouterr().err
        assert "overlaps the input" in err and err.count("error:") == 1, err
        assert sorted(p.name for p in model.iterdir()) == before  # the model folder is as it was


def test_predict_refuses_a_batch_size_of_zero(capsys):
    with pytest.raises(SystemExit) as stop:
        predict.main(["--batch-size", "0", "photo.jpg"])
    assert stop.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["default", "lite0", "ensemble"])
def test_every_bundled_models_processor_takes_fer2013s_own_1_channel_faces(name):
    """FER2013 faces are 1-channel; calling a bundled model's processor on one used to end in a broadcast error
    (only pipeline() worked, because it converts to RGB). Now the gray face and its RGB copy give the same input,
    and the model's answer on it is the one the package's own evaluation path gives."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    from fer_hf.evaluation.inputs import eval_transform_for
    from fer_hf.models.loading import BUNDLED_MODELS, load_classifier

    folder = BUNDLED_MODELS[name].path
    processor = AutoImageProcessor.from_pretrained(folder)
    face = Image.open(REPO / "spaces_app/examples/fer_happy.png")
    assert face.mode == "L"
    gray = processor(images=face, return_tensors="pt")["pixel_values"]  # (1, 1 or 3, S, S)
    rgb = processor(images=face.convert("RGB"), return_tensors="pt")["pixel_values"]  # (1, 3, S, S)
    assert gray.shape[-2:] == rgb.shape[-2:]
    torch.testing.assert_close(rgb.mean(1), gray.mean(1))
    loaded = load_classifier(name)
    pixels = torch.from_numpy(np.array(face)).unsqueeze(0)  # (1, 48, 48) uint8
    with torch.no_grad():
        from_processor = loaded.model(pixel_values=gray).logits.softmax(-1)
        from_package = loaded.model(pixel_values=eval_transform_for(loaded)(pixels)).logits.softmax(-1)
    # PIL's resize rounds to uint8, the package's does not: the same answer, probabilities within 0.02.
    torch.testing.assert_close(from_processor, from_package, atol=0.02, rtol=0)


def test_16_bit_and_sideways_faces_in_a_dataset_decode_as_they_look(bundled_dd, tmp_path):
    """An ImageFolder copy of real FER2013 faces saved as 16-bit PNGs, and as JPEGs stored sideways with an EXIF
    orientation tag, gives the same faces as the 8-bit originals (they used to decode white, or turned)."""
    import numpy as np
    from PIL import Image

    from fer_hf.data.dataset import load_fer_dataset
    from fer_hf.data.decode import FerTensorDataset

    rows = bundled_dd["validation"].select(range(0, 70, 10))  # 7 faces, one per class
    names = rows.features["label"].names
    originals = [np.asarray(row["image"].convert("L")) for row in rows]
    for kind in ("png16", "sideways"):
        for i, (row, face) in enumerate(zip(rows, originals, strict=True)):
            folder = tmp_path / kind / "validation" / names[row["label"]]
            folder.mkdir(parents=True, exist_ok=True)
            if kind == "png16":
                Image.fromarray(face.astype(np.uint16) * 257).save(folder / f"{i}.png")
            else:
                stored = Image.fromarray(face).rotate(90, expand=True)
                exif = stored.getexif()
                exif[0x0112] = 6
                stored.save(folder / f"{i}.jpg", exif=exif, quality=100)
        (tmp_path / kind / "train").symlink_to(tmp_path / kind / "validation")  # an ImageFolder copy needs train/
        split = load_fer_dataset(tmp_path / kind)["validation"]
        decoded = FerTensorDataset.from_split(split).images.numpy()
        by_label = {int(lab): img for lab, img in zip(split["label"], decoded, strict=True)}
        for row, face in zip(rows, originals, strict=True):
            error = np.abs(by_label[row["label"]].astype(int) - face).mean()
            assert error < (0.01 if kind == "png16" else 3), (kind, names[row["label"]], error)


def test_a_training_folder_is_locked_checked_and_its_validation_split_too(tmp_path, bundled_dd):
    import json
    import os
    import socket
    import subprocess
    import sys

    from fer_hf.runlock import LOCK_FILE, RunLockError, run_lock
    from fer_hf.training.run import load_data, train_from_recipe

    out = tmp_path / "run"
    out.mkdir()
    host = socket.gethostname()
    (out / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": host, "since": "now"}))  # a live holder
    recipe = load_recipe(REPO / "recipes/smoke.yaml", ["--training.output_dir", str(out)])
    with pytest.raises(RunLockError, match=rf"PID {os.getpid()} on host"):
        train_from_recipe(recipe)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_FILE).write_text(json.dumps({"pid": int(gone.stdout), "host": host, "since": "then"}))  # stale
    with run_lock(out):  # taken over: its process has ended
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()  # released

    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(RecipeError, match="is a file"):
        train_from_recipe(
            load_recipe(REPO / "recipes/smoke.yaml", ["--training.output_dir", str(tmp_path / "a_file")])
        )
    with pytest.raises(RunLockError, match="cannot create the output folder"):
        train_from_recipe(
            load_recipe(REPO / "recipes/smoke.yaml", ["--training.output_dir", str(tmp_path / "a_file/x")])
        )

    empty = bundled_dd.copy()
    empty["validation"] = bundled_dd["validation"].select([])
    with pytest.raises(RecipeError, match=r"validation split is empty \(train 280, validation 0 faces\)"):
        load_data(recipe, empty)


def test_publishing_runs_only_its_own_code_and_stages_no_outside_links(tmp_path, capsys):
    model = copy_default(tmp_path)
    marker = tmp_path / "comparison_code_ran"
    comparison = tmp_path / "comparison.md"
    comparison.write_text(
        f"| model | accuracy |\n|---|---|\n| x | 0.5 |\n\n```python\nopen({str(marker)!r}, 'w')\n```\n"
    )
    argv = [str(model), "--repo-id", "user/fer-test", "--comparison", str(comparison)]
    assert publish.main([*argv, "--dry-run", str(tmp_path / "stage")]) == 0
    assert not marker.exists()  # the card carries the block, but only the package's own examples were run
    assert f"open({str(marker)!r}, 'w')" in (tmp_path / "stage" / "README.md").read_text()

    secret = tmp_path / "outside.yaml"
    secret.write_text("not: the run's\n")
    (model / "recipe.yaml").unlink()
    (model / "recipe.yaml").symlink_to(secret)
    assert run(publish.main, [*argv, "--dry-run", str(tmp_path / "stage2")]) == 2
    assert "outside the run folder" in capsys.readouterr().err


def test_every_command_ends_bad_input_with_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    from fer_hf import data
    from fer_hf.cli import run

    (tmp_path / "faces.parquet").write_text("emotion,pixels\n0,1 2 3\n")  # a CSV named .parquet
    for command, argv, fragment in [
        (data.main, [str(tmp_path / "missing")], "missing"),
        (data.main, [str(tmp_path / "faces.parquet")], "faces.parquet"),
        (evaluate.main, [str(tmp_path / "no_model"), "--data", "bundled"], "no_model"),
    ]:
        assert run(command, argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
    with pytest.raises(Exception):  # noqa: B017  (whatever the error is, --debug lets it through with its traceback)
        run(data.main, [str(tmp_path / "missing"), "--debug"])


def test_a_truncated_checkpoint_is_one_clear_line(tmp_path, capsys):
    model = copy_default(tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])  # cut short, as by a failed download
    assert run(predict.main, ["--model", str(model), str(REPO / "spaces_app/examples/fer_happy.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the model's weights cannot be read" in err and "model" in err


def _real_parquet(folder: Path, change) -> Path:
    """A one-split parquet folder of 20 real faces of the bundled sample, changed by `change(DataFrame)`."""
    import pyarrow.parquet as pq

    from fer_hf.data.sources import BUNDLED_SAMPLE

    folder.mkdir()
    change(pq.read_table(BUNDLED_SAMPLE / "validation.parquet").slice(0, 20).to_pandas()).to_parquet(
        folder / "train.parquet"
    )
    return folder


def _kaggle_csv(path: Path, emotions: list[str], values: int = 2304) -> Path:
    pixels = " ".join(["10"] * values)
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{e},{pixels},Training\n" for e in emotions))
    return path


def _bad_label(table):
    table.loc[7, "label"] = 9
    return table


DATA_CASES = {  # name -> (make the bad source in tmp_path, fragments the one error line must hold)
    "label out of range": (
        lambda d: _real_parquet(d / "a", _bad_label),
        ["train.parquet", "row 7 has label 9", "0..6"],
    ),
    "no label column": (
        lambda d: _real_parquet(d / "b", lambda t: t.rename(columns={"label": "emotion_id"})),
        ["train.parquet", "no label column", "emotion_id"],
    ),
    "csv emotion out of range": (
        lambda d: _kaggle_csv(d / "c.csv", ["0", "11"]),
        ["c.csv", "row 2 (line 3)", "emotion '11'", "0..6"],
    ),
    "csv face of the wrong size": (
        lambda d: _kaggle_csv(d / "d.csv", ["1"], values=2000),
        ["d.csv", "row 1 (line 2)", "2000 values", "2304"],
    ),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_sources_name_the_file_the_row_and_what_was_expected(case, tmp_path, capsys):
    from fer_hf import data
    from fer_hf.cli import run

    make, fragments = DATA_CASES[case]
    source = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert run(data.main, [str(source)]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress bars of datasets, then the error
    assert [line for line in err if line.startswith("error:")] == err[-1:], err
    assert all(fragment in err[-1] for fragment in fragments), (fragments, err[-1])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, nothing removed
