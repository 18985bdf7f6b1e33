"""Scaling over processes: predict's faces/s and training's steps/s with 1 and 2 processes, in one run.

    python -m fer_hf.bench scale [--photos 48] [--steps 40] [--quick]

Both sides are launched as `accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml --num_processes N
--num_cpu_threads_per_process 1 ...`, so N processes of one thread each: on a 2-core machine the ideal ratio is 2.

Prediction: `-m fer_hf.predict` over one folder of real photos (copies of skimage's astronaut, one face, and
insightface's six-person photo, alternating), YuNet detection + crop + the bundled default model, the sharded path
with its shard folder for both N (`--resume` on a fresh output makes one process keep one too). Faces/s = face rows
of the merged CSV / the span from the first shard's start to the last shard's end (the manifests' times), so
process start-up and model loading are left out. Training: `-m fer_hf.train recipes/smoke.yaml` made tiny (the
1.3k-parameter CNN of tests/test_train.py, 256 real faces of the bundled sample, batches of 16 per rank, no
evaluation or saving) for `--steps` optimizer steps; steps/s = global steps / the Trainer's train_runtime
(trainer_state.json); with N ranks a step holds N batches, so images/s = steps/s x N x 16.

The last line is `scale: predict 1 process X faces/s, 2 processes Y faces/s, ratio R; train 1 rank A steps/s,
2 ranks B steps/s, ratio C (images/s ratio D)`.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fer_hf.bench import at_least, bench_parser

REPO = Path(__file__).resolve().parents[2]
CPU_DDP = REPO / "recipes" / "accelerate_configs" / "cpu_ddp.yaml"
SMOKE = REPO / "recipes" / "smoke.yaml"
TINY_CNN = (  # tests/test_train.py's
    "{blocks: [{out_channels: 4, norm: batch, pool: max}, {out_channels: 8, norm: batch, pool: max},"
    " {out_channels: 8, norm: batch, pool: max}], global_pool: avg, hidden_sizes: [], classifier_dropout: 0.2}"
)
TRAIN_BATCH = 16
PROCESSES = (1, 2)


def launch(processes: int, *argv: str) -> None:
    """`accelerate launch` N one-thread processes on CPU; a failure ends the bench with the launch's stderr."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(CPU_DDP), "--num_processes", str(processes)]
    cmd += ["--num_cpu_threads_per_process", "1", *argv]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def photo_folder(folder: Path, count: int) -> int:
    """`count` real photos, alternately the astronaut and the six-person photo; -> faces in them (1 or 6 each)."""
    import importlib.util

    from PIL import Image
    from skimage.data import astronaut

    folder.mkdir(parents=True)
    six = Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images" / "t1.jpg"
    Image.fromarray(astronaut()).save(folder / "astronaut.jpg", quality=90)
    for i in range(count):
        shutil.copy(six if i % 2 else folder / "astronaut.jpg", folder / f"photo_{i:04d}.jpg")
    (folder / "astronaut.jpg").unlink()
    return sum(6 if i % 2 else 1 for i in range(count))


def predict_rate(processes: int, photos: Path, out: Path, batch_size: int) -> tuple[float, int]:
    """(faces/s over the shards' span, face rows) of a sharded predict over `photos`."""
    csv_path = out / "p.csv"
    argv = ["-m", "fer_hf.predict", str(photos), "--csv", str(csv_path), "--resume"]
    launch(processes, *argv, "--batch-size", str(batch_size), "--shard-size", str(batch_size))
    with csv_path.open() as handle:
        faces = sum(1 for row in csv.DictReader(handle) if row["face"])
    entries = [
        json.loads(line) for manifest in (out / "p.csv.shards").glob("rank-*/manifest.jsonl")
        for line in manifest.read_text().splitlines()
    ]  # fmt: skip
    span = max(e["finished"] for e in entries) - min(e["started"] for e in entries)
    return faces / span, faces


def train_rate(processes: int, out: Path, steps: int) -> float:
    """Optimizer steps per second of the tiny smoke run on `processes` ranks."""
    argv = ["-m", "fer_hf.train", str(SMOKE), "--training.output_dir", str(out), "--model.cnn_overrides", TINY_CNN]
    argv += ["--data.max_train_samples", "256", "--training.per_device_train_batch_size", str(TRAIN_BATCH)]
    argv += ["--training.max_steps", str(steps), "--training.eval_strategy", "no", "--training.save_strategy", "no"]
    argv += ["--training.logging_strategy", "no", "--training.disable_tqdm", "true"]
    argv += ["--training.ddp_find_unused_parameters", "false"]
    launch(processes, *argv)
    state = json.loads((out / "trainer_state.json").read_text())
    runtime = next(entry["train_runtime"] for entry in state["log_history"] if "train_runtime" in entry)
    return state["global_step"] / runtime


def parse_args(argv: Sequence[str] | None):
    parser = bench_parser("scale", __doc__)
    parser.add_argument("--photos", type=at_least(1), default=48, help="photos predicted (half of them hold 6 faces)")
    parser.add_argument("--batch-size", type=at_least(1), default=4, help="predict's --batch-size and --shard-size")
    parser.add_argument("--steps", type=at_least(1), default=60, help="training steps per run")
    parser.add_argument("--quick", action="store_true", help="8 photos and 12 steps (for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.steps = 8, 12
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        faces = photo_folder(Path(tmp) / "photos", args.photos)
        print(
            f"inputs: {args.photos} real photos ({faces} faces: skimage astronaut + insightface t1.jpg), "
            f"{os.cpu_count()} CPU core(s), 1 thread per process"
        )
        predict, train = {}, {}
        for n in PROCESSES:
            predict[n], found = predict_rate(n, Path(tmp) / "photos", Path(tmp) / f"predict{n}", args.batch_size)
            if found != faces:
                raise RuntimeError(f"{n} process(es) found {found} faces, expected {faces}")
            print(f"  predict {n} process(es): {predict[n]:7.1f} faces/s")
        for n in PROCESSES:
            train[n] = train_rate(n, Path(tmp) / f"train{n}", args.steps)
            print(f"  train   {n} rank(s):     {train[n]:7.1f} steps/s, {train[n] * n * TRAIN_BATCH:7.0f} img/s")
    images = train[2] * 2 / train[1]
    print(
        f"scale: predict 1 process {predict[1]:.1f} faces/s, 2 processes {predict[2]:.1f} faces/s, ratio "
        f"{predict[2] / predict[1]:.2f}; train 1 rank {train[1]:.1f} steps/s, 2 ranks {train[2]:.1f} steps/s, ratio "
        f"{train[2] / train[1]:.2f} (images/s ratio {images:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
