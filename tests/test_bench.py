"""`python -m fer_hf.bench data --quick`: both pipelines run on real faces and the headline line is printed."""

from __future__ import annotations

import re

import pytest
import torch

from fer_hf.bench.__main__ import main

HEADLINE = re.compile(r"data pipeline: fer_hf (\d+) img/s, per-sample baseline (\d+) img/s, ratio (\d+\.\d)")


def test_bench_data_quick(shared_fer, capsys):
    threads = torch.get_num_threads()
    source = str(shared_fer / "train.parquet")
    assert main(["data", "--quick", "--threads", "1", "--source", source]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = HEADLINE.fullmatch(lines[-1])
    assert match, lines[-1]
    ours, baseline, ratio = int(match[1]), int(match[2]), float(match[3])
    assert ratio > 1 and ours > baseline > 0
    assert abs(ratio - ours / baseline) < 0.1 + 0.05 * ratio  # the printed rates are rounded
    assert "128 real faces" in lines[0]
    assert torch.get_num_threads() == threads  # --threads is undone afterwards


def test_bench_dispatch_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_train_bench_baseline_uses_the_trainers_optimizer(tmp_path):
    """Same math on both paths: the plain loop's optimizer has the Trainer's class, groups and weight decay."""
    from transformers import Trainer

    from fer_hf.bench.train import build_bench_model, parse_args, trainer_like_optimizer, training_args

    model = build_bench_model("cnn").model
    targs = training_args(parse_args(["--families", "cnn", "--batch-size", "8", "--steps", "1"]), "cpu", str(tmp_path))
    targs.weight_decay = 0.05
    ours = trainer_like_optimizer(model, targs)
    theirs = Trainer(model=model, args=targs).create_optimizer()
    assert type(ours) is type(theirs)
    assert [g["weight_decay"] for g in ours.param_groups] == [g["weight_decay"] for g in theirs.param_groups]
    assert [[id(p) for p in g["params"]] for g in ours.param_groups] == [
        [id(p) for p in g["params"]] for g in theirs.param_groups
    ]
    assert len(ours.param_groups[1]["params"]) > 0  # biases and norms: not decayed


FAMILY_LINE = re.compile(r"cnn \[.*\]: trainer [\d.]+ img/s, .*; data transform (\d+\.\d)% of the step \((.*)\)")


@pytest.mark.parametrize(
    ("placement", "where"), [("step", "in the step"), ("collator", "in the collator, 0 worker(s)")]
)
def test_bench_train_prints_the_data_transforms_share_of_the_step(capsys, placement, where):
    """Both placements of the batch transform train the same model; the family line says where it ran and which
    share of the plain loop's step went into getting the batch ready (loading + transform: > 0, < 100%)."""
    args = ["train", "--families", "cnn", "--batch-size", "16", "--steps", "2", "--warmup", "1", "--repeats", "1"]
    assert main([*args, "--transform", placement]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = next(m for m in map(FAMILY_LINE.fullmatch, lines) if m)
    assert 0 < float(match[1]) < 100 and match[2] == where
    assert lines[-1].startswith("train step: trainer ")


FRONT_END = re.compile(
    r"front end: found (\d+\.\d)% of faces, kept (\d\.\d{3}) of the direct accuracy overall, (\d\.\d{3}) on the faces found"
)


def test_bench_faces_pastes_real_faces_and_finds_them(shared_fer, capsys):
    """40 PublicTest faces in real photos: the scene holds the face where it says, YuNet finds most of them, and
    the headline's R is about F x K (a missed face counts as wrong)."""
    import numpy as np

    from fer_hf.bench.faces import backgrounds, make_scene, read_faces

    faces, _ = read_faces(shared_fer / "validation.parquet", 3, seed=0)
    scene = make_scene(faces[0], backgrounds()[0], np.random.default_rng(0), tilt=0)
    x, y, side = scene.square
    assert scene.rgb.shape == (480, 640, 3) and 96 <= side <= 220
    pasted = scene.rgb[y : y + side, x : x + side, 0]
    assert np.abs(pasted[side // 2, side // 2].astype(int) - int(faces[0][24, 24])) < 30

    assert main(["faces", "--count", "40", "--detectors", "yunet", "--data", str(shared_fer)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = FRONT_END.fullmatch(lines[-1])
    assert match, lines[-1]
    found, r, k = float(match[1]) / 100, float(match[2]), float(match[3])
    assert found >= 0.8 and 0.5 < k <= 1.5
    assert r == pytest.approx(found * k, abs=0.05)


SCALE = re.compile(
    r"scale: predict 1 process ([\d.]+) faces/s, 2 processes ([\d.]+) faces/s, ratio (\d+\.\d\d); "
    r"train 1 rank ([\d.]+) steps/s, 2 ranks ([\d.]+) steps/s, ratio (\d+\.\d\d) \(images/s ratio (\d+\.\d\d)\)"
)


def test_bench_scale_quick_launches_1_and_2_processes(capsys):
    """Real photos predicted by 1 and 2 `accelerate launch`ed processes (every face found by both: the bench checks
    the merged CSVs), the tiny smoke run trained on 1 and 2 ranks; the headline's ratios are those of its rates."""
    assert main(["scale", "--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("inputs: 8 real photos (28 faces: ")
    match = SCALE.fullmatch(lines[-1])
    assert match, lines[-1]
    p1, p2, p_ratio, t1, t2, t_ratio, images = map(float, match.groups())
    assert min(p1, p2, t1, t2) > 0
    assert p_ratio == pytest.approx(p2 / p1, abs=0.02) and t_ratio == pytest.approx(t2 / t1, abs=0.02)
    assert images == pytest.approx(2 * t2 / t1, abs=0.02)  # 2 ranks: 2 batches a step


def test_bench_app_quick_sends_a_burst_and_the_server_stays_up(tmp_path, capsys):
    """`bench app --quick`: the app on 127.0.0.1 with a tiny model, 3 clients at once, every request answered."""
    import re

    from helpers import save_tiny_cnn

    model = save_tiny_cnn(tmp_path / "tiny")
    assert main(["app", "--quick", "--model", str(model)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"app: 3 clients x 1: ok (\d), refused 0, failed 0; median ([\d.]+) s, max ([\d.]+) s; server up", last
    )
    assert found and found.group(1) == "3" and float(found.group(2)) <= float(found.group(3)), last


def test_bench_app_refuses_no_clients(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["app", "--clients", "0"])
    assert stop.value.code == 2 and "argument --clients: expected an integer of at least 1" in capsys.readouterr().err
