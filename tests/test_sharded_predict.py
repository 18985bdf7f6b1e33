"""`accelerate launch -m fer_hf.predict`: 2 gloo processes on CPU give the one-process results, --resume redoes
nothing that a manifest lists, and a shard folder of another command line is refused.

Inputs are real: skimage's astronaut, insightface's six-person photo and FER2013 faces of the bundled sample saved
as PNG; the model is the bundled default on CPU.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skdata

from fer_hf import predict
from fer_hf.cli import run
from fer_hf.inference import sharding

REPO = Path(__file__).resolve().parents[1]
CPU_DDP = REPO / "recipes" / "accelerate_configs" / "cpu_ddp.yaml"
SIX_PEOPLE = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images" / "t1.jpg"
# Small batches and shards: 9 photos make 5 batches, so each process writes more than one shard.
SMALL = ["--batch-size", "2", "--shard-size", "2"]


def same_json(a, b) -> bool:
    """Two JSON files with the same structure and values, floats equal within 1e-6: a shard's batches of faces
    can differ from one process's, and a convolution's last bits with them."""

    def same(x, y) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            return isinstance(x, int | float) and isinstance(y, int | float) and abs(x - y) <= 1e-6
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(map(same, x, y))
        return x == y

    return same(json.loads(Path(a).read_text()), json.loads(Path(b).read_text()))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, bundled_dd) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(3):
        Image.fromarray(skdata.astronaut()).save(folder / f"astronaut_{i}.jpg")
    for i in range(2):
        shutil.copy(SIX_PEOPLE, folder / f"group_{i}.jpg")
    for i in range(4):
        bundled_dd["validation"][i]["image"].save(folder / f"fer_{i}.png")
    return folder


def launch(*argv: str, processes: int = 2) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(CPU_DDP), "--num_processes", str(processes)]
    cmd += ["--num_cpu_threads_per_process", "1", "-m", "fer_hf.predict", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def stamps(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_two_processes_merge_to_the_one_process_rows_and_resume_redoes_nothing(photos, tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    assert predict.main([str(photos), "--csv", str(one / "p.csv"), "--json", str(one / "p.json"), *SMALL]) == 0
    assert not (one / "p.csv.shards").exists()  # one process: no shard folder, as always
    one_out = capsys.readouterr().out

    argv = [str(photos), "--csv", str(two / "p.csv"), "--json", str(two / "p.json"), *SMALL]
    done = launch(*argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (two / "p.csv").read_text() == (one / "p.csv").read_text()
    assert same_json(two / "p.json", one / "p.json")  # the same results (floats within 1e-6)
    rows = list(csv.DictReader((two / "p.csv").open()))
    assert len(rows) == 3 + 2 * 6 + 4 and {r["status"] for r in rows} == {"ok"}
    assert done.stdout.startswith(one_out)  # the main process prints the same summaries, once
    assert done.stderr.count("predict:") >= 1 and done.stderr.count("images:") == 0  # the job's bar only

    shards = two / "p.csv.shards"
    manifests = {r: (shards / f"rank-{r}" / "manifest.jsonl").read_text().splitlines() for r in (0, 1)}
    listed = [i for r in (0, 1) for line in manifests[r] for i in json.loads(line)["inputs"]]
    assert sorted(listed) == list(range(9)) and all(len(m) >= 2 for m in manifests.values())  # both worked

    before = stamps(shards)
    (two / "p.csv").unlink()
    (two / "p.json").unlink()
    again = launch(*argv, "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert stamps(shards) == before  # nothing predicted again, nothing written there
    assert (two / "p.csv").read_text() == (one / "p.csv").read_text()
    assert same_json(two / "p.json", one / "p.json")


def test_resume_with_another_model_or_without_resume_is_refused(photos, tmp_path, capsys):
    from helpers import save_tiny_cnn

    out = tmp_path / "p.csv"
    argv = [str(photos), "--csv", str(out), *SMALL, "--resume"]
    assert run(predict.main, argv) == 0  # one process with --resume keeps a shard folder too
    capsys.readouterr()
    written = stamps(tmp_path / "p.csv.shards")
    other = save_tiny_cnn(tmp_path / "tiny")
    capsys.readouterr()
    assert run(predict.main, [*argv, "--model", str(other)]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err.startswith(f"error: --resume: {out}.shards was written by another command line (--model was ")
    assert f"now {other} (files" in err
    assert run(predict.main, [*argv, "--tta", "hflip"]) == 2
    assert "(--tta was 'none', now 'hflip')" in capsys.readouterr().err
    assert stamps(tmp_path / "p.csv.shards") == written
    # One process without --resume is predict as always: it leaves the shard folder alone. A sharded run without
    # --resume refuses the folder rather than throw an earlier run's work away (the check every rank makes).
    assert run(predict.main, argv[:-1]) == 0
    assert stamps(tmp_path / "p.csv.shards") == written
    args = predict.parse_args(argv[:-1])
    with pytest.raises(sharding.ShardError, match=r"p.csv.shards holds the shards of an earlier run: pass --resume"):
        sharding._checked_folder(tmp_path / "p.csv.shards", args, sharding.file_job(args, "auto", None), True)


def test_a_manifest_line_torn_by_a_kill_is_redone(photos, tmp_path, capsys):
    """A kill while a manifest line is written: that shard's inputs are predicted again, the others are not."""
    out = tmp_path / "p.csv"
    argv = [str(photos), "--csv", str(out), *SMALL, "--resume"]
    assert run(predict.main, argv) == 0
    whole = out.read_text()
    manifest = tmp_path / "p.csv.shards" / "rank-0" / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:-1]) + lines[-1][:20])  # the last shard's line cut short
    parts = sorted(manifest.parent.glob("part-*.json"))
    first_mtime = parts[0].stat().st_mtime_ns
    out.unlink()
    assert run(predict.main, argv) == 0
    assert out.read_text() == whole
    assert parts[0].stat().st_mtime_ns == first_mtime  # a shard the manifest lists is kept as it was
    redone = [json.loads(line)["inputs"] for line in manifest.read_text().splitlines()[len(lines) :]]
    assert redone == [json.loads(lines[-1])["inputs"]]  # exactly the torn shard's inputs, once


def test_dataset_split_with_two_processes_equals_one(tmp_path, photos, capsys):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    argv = ["--data", "bundled", "--split", "validation", "--batch-size", "16"]
    assert run(predict.main, [*argv, "--csv", str(one)]) == 0
    capsys.readouterr()
    done = launch(*argv, "--csv", str(two), "--json", str(tmp_path / "two.json"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert two.read_text() == one.read_text()
    rows = list(csv.DictReader(one.open()))
    assert [r["path"] for r in rows] == [f"bundled:validation:{i}" for i in range(70)]
    assert {(r["x"], r["y"], r["w"], r["h"]) for r in rows} == {("0", "0", "48", "48")}  # crops, no detection
    # A row is classified as the same face saved as a PNG is (the photo folder's fer_0.png is row 0).
    assert predict.main([str(photos / "fer_0.png"), "--csv", str(tmp_path / "png.csv")]) == 0
    (png,) = csv.DictReader((tmp_path / "png.csv").open())
    for name in ("angry", "happy", "neutral"):  # (another batch: equal up to float rounding)
        assert float(png[f"p_{name}"]) == pytest.approx(float(rows[0][f"p_{name}"]), abs=2e-5)


def test_parquet_table_and_bad_data_arguments(tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "v.parquet"
    assert run(predict.main, ["--data", "bundled", "--split", "validation", "--csv", str(out)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 70 and table.schema.field("p_happy").type == "double"
    assert len(set(table.column("label").to_pylist())) > 1
    capsys.readouterr()
    assert run(predict.main, ["--data", "bundled", "--csv", str(tmp_path / "t.csv")]) == 2
    assert "--data bundled has no split 'test'; it has train, validation (--split)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["x.jpg", "--data", "bundled"])
    assert "give INPUT files/folders/videos or --data SOURCE (one of them)" in capsys.readouterr().err


def test_shards_are_whole_batches():
    assert sharding.shards(range(10), 4, 3) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sharding.shards([1, 2, 5, 9], 4, 8) == [[1, 2, 5], [9]]  # resumed: only what is left, same batches
