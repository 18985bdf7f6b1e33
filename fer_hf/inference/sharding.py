"""Sharded batch prediction: several processes split a big job, each writes its shards, the main one merges.

    accelerate launch --config_file recipes/accelerate_configs/cpu_ddp.yaml -m fer_hf.predict photos/ --csv out.csv
    accelerate launch ... -m fer_hf.predict --data ../shared/fer2013 --split test --csv test.parquet
    accelerate launch ... -m fer_hf.predict photos/ --csv out.csv --resume      # after a kill: redo what is missing

The inputs (files of folders and videos as `python -m fer_hf.predict` finds them, or the rows of a `datasets` split,
classified directly as face crops) are split between the processes (`PartialState().split_between_processes`).
Each process predicts its part `--shard-size` inputs at a time and writes every such shard as soon as it is done:
`OUT.shards/rank-K/part-NNNNNNNNN.json` (predict's own JSON records, staged then renamed) and a line in
`OUT.shards/rank-K/manifest.jsonl` naming the inputs it holds. The main process waits for all of them, then writes
the merged CSV/JSON (parquet when `--csv` ends with .parquet) in input order through predict's writers.

`--resume` skips every input a manifest lists, so a killed run loses at most one shard per process; the shard
folder holds a fingerprint of the command line (model, inputs, options) and is refused on `--resume` when the
command line differs. One process without `--resume` keeps no shard folder: it behaves as predict always did.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from tqdm.auto import tqdm

from fer_hf.cli import positive_int
from fer_hf.devices import resolve_device
from fer_hf.inference.faces import detector_config
from fer_hf.inference.predictions import ImageResult, Result
from fer_hf.inference.predictor import Predictor, check_outputs, expand_inputs, predict_inputs
from fer_hf.inference.shard_files import (
    FINGERPRINT,
    Manifests,
    ShardError,
    ShardWriter,
    compare_fingerprints,
    fingerprint,
    is_parquet,
    shard_folder,
    staged_file,
    write_outputs,
)
from fer_hf.inference.tracking import TrackingConfig
from fer_hf.outputs import check_apart

# ---------------------------------------------------------------- the hook predict's command line calls


def add_shard_args(parser: argparse.ArgumentParser) -> None:
    """predict's options for datasets sources and for sharded runs under `accelerate launch`."""
    group = parser.add_argument_group("datasets sources and sharded runs (accelerate launch -m fer_hf.predict)")
    group.add_argument(
        "--data",
        metavar="SOURCE",
        help="predict on the faces of a dataset split instead of files (any source fer_hf.data takes: a parquet "
        "file/folder, a Kaggle CSV, an image folder, 'bundled', a Hub id); the faces are taken as crops, no detection",
    )
    group.add_argument("--split", default="test", help="the split of --data (default: test)")
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run: skip the inputs its shard folder (OUT.shards beside --csv/--json) lists as done",
    )
    group.add_argument(
        "--shard-size",
        type=positive_int,
        default=64,
        help="inputs per shard file, rounded up to whole --batch-size batches: the most a killed process loses "
        "(default: 64)",
    )


def check_shard_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Inputs or --data, not both and not neither; --data rows have no file copies to annotate."""
    if bool(args.inputs) == bool(args.data):
        parser.error("give INPUT files/folders/videos or --data SOURCE (one of them)")
    if args.data and (args.annotate or args.plot_dir):
        parser.error("--annotate and --plot-dir apply to files and videos, not to --data rows")
    return args


def world_size() -> int:
    """Processes of this launch (torchrun, which `accelerate launch` starts, sets WORLD_SIZE in each)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def takes_over(args: argparse.Namespace) -> bool:
    """Whether this module runs the command: several processes, a datasets source, --resume or a parquet table.
    Otherwise predict's own main goes on unchanged."""
    return world_size() > 1 or bool(args.data) or args.resume or is_parquet(args.csv)


# ---------------------------------------------------------------- the job: what the inputs are, how one is predicted


@dataclass
class Job:
    keys: list[str]  # one per input, in input order: the file's path, or SOURCE:SPLIT:ROW
    predict: Callable[[Predictor, list[int]], list[Result]]  # input indexes -> their results, in that order
    fingerprint: dict  # what identifies the inputs (compared on --resume)


def file_job(args: argparse.Namespace, crop_mode: str, tracking) -> Job:
    """Files, folders (searched as predict searches them) and videos. Each expanded entry is predicted by
    `predict_inputs` again, which takes an entry back to the same kind (a missing path stays missing)."""
    keys = [path for path, _kind in expand_inputs(args.inputs)]
    options = {"crop_mode": crop_mode, "annotate_dir": args.annotate, "fps": args.fps}
    options.update(plot_dir=args.plot_dir, tracking=tracking)

    def run(predictor: Predictor, indexes: list[int]) -> list[Result]:
        return predict_inputs(predictor, [keys[i] for i in indexes], **options)

    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()
    return Job(keys, run, {"inputs": f"{len(keys)} file(s), list sha256 {digest[:16]}"})


def data_job(args: argparse.Namespace) -> Job:
    """The rows of `--split` of a `load_fer_dataset` source, each a face crop (detection off)."""
    from fer_hf.data.dataset import load_fer_dataset

    splits = load_fer_dataset(args.data)
    if args.split not in splits:
        raise ShardError(f"--data {args.data} has no split {args.split!r}; it has {', '.join(splits)} (--split)")
    split = splits[args.split]
    keys = [f"{args.data}:{args.split}:{row}" for row in range(len(split))]

    def run(predictor: Predictor, indexes: list[int]) -> list[Result]:
        return predict_rows(predictor, split.select(indexes)["image"], [keys[i] for i in indexes])

    source = str(Path(args.data).expanduser().resolve()) if Path(args.data).expanduser().exists() else args.data
    return Job(keys, run, {"inputs": f"split {args.split!r} of {source}, {len(keys)} rows"})


def predict_rows(predictor: Predictor, images: Sequence, keys: Sequence[str]) -> list[ImageResult]:
    """PIL face crops -> one ImageResult each, classified in one batch like `--cropped` files (the same crop)."""
    import numpy as np

    results, faces = [], []
    for key, image in zip(keys, images, strict=True):
        rgb = np.asarray(image.convert("RGB"))
        results.append(ImageResult(path=key, size=(rgb.shape[1], rgb.shape[0])))
        faces.append(predictor.detector.faces(rgb, "cropped"))
    for result, preds in zip(results, predictor.predict_faces(faces, [1.0] * len(faces)), strict=True):
        result.faces = preds
    return results


# ---------------------------------------------------------------- the run


def main(args: argparse.Namespace) -> int:
    """predict's main for a sharded run (or a --data / parquet one in one process). Exit status as predict's."""
    from accelerate import PartialState

    check_outputs(args)
    if args.data:
        for flag, output in (("--csv", args.csv), ("--json", args.json)):
            if output:
                check_apart(output, args.data, flag=flag, fix="write it outside the inputs")
    detector = detector_config(args)
    tracking = TrackingConfig(args.detect_every, args.max_lost, args.smoothing)
    crop_mode = "cropped" if args.cropped or args.detector == "none" else "detect" if args.detect else "auto"
    args.device = resolve_device(args.device)  # auto -> cuda, mps or cpu; a device that is not there: a sentence
    # cpu=True unless a GPU is asked for: without it, accelerate on a machine without GPUs sees one process per rank.
    on_cpu = args.device == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    # A long barrier timeout: the main process waits there for the slowest shard of a big archive.
    state = PartialState(cpu=on_cpu, timeout=timedelta(hours=12)) if world_size() > 1 else PartialState(cpu=on_cpu)
    job = data_job(args) if args.data else file_job(args, crop_mode, tracking)
    sharded = state.num_processes > 1 or args.resume
    folder = shard_folder(args) if sharded else None
    manifests = Manifests(folder) if folder else None
    if folder is not None:
        _checked_folder(folder, args, job, state.is_main_process)  # every rank, before anyone writes
        manifests.refresh()
    device = args.device
    if device == "cuda" and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"  # one GPU per process
    predictor = Predictor(
        args.model,
        tta=args.tta,
        detector=detector,
        batch_size=args.batch_size,
        device=device,
        trust_remote_code=args.trust_remote_code,
        backend=getattr(args, "backend", None),
    )
    if folder is None:
        results = _predict_here(job, predictor, args.shard_size)
    else:
        results = _predict_sharded(job, predictor, state, folder, manifests, args)
    if results is None:  # not the main process: the main one merges and reports
        return 0
    for result in results:
        print(result.summary() + (f" -> {result.plot}" if getattr(result, "plot", None) else ""))
    write_outputs(results, predictor.label_names, args)
    if folder is not None:
        print(f"merged {len(results)} input(s) from {folder} ({state.num_processes} process(es))")
    return 1 if any(r.status == "error" for r in results) else 0


def _checked_folder(folder: Path, args: argparse.Namespace, job: Job, is_main: bool) -> None:
    """Every rank checks the folder as it was at launch (nothing is written before the barrier); only the main
    process says why it refuses, the others stop quietly. Then the main one writes a fresh folder's fingerprint."""
    from accelerate import PartialState

    state = PartialState()
    now = fingerprint(args, job)
    try:
        if (folder / FINGERPRINT).is_file():
            if not args.resume:
                raise ShardError(
                    f"{folder} holds the shards of an earlier run: pass --resume to continue it (with the same command "
                    "line), or delete the folder to start over"
                )
            compare_fingerprints(folder, json.loads((folder / FINGERPRINT).read_text())["fingerprint"], now)
        elif folder.exists() and any(folder.iterdir()):
            raise ShardError(f"{folder} exists without {FINGERPRINT}: not a shard folder of predict; move it away")
    except ShardError:
        if is_main:
            raise
        raise SystemExit(2) from None
    state.wait_for_everyone()
    if is_main and not (folder / FINGERPRINT).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        staged_file(folder / FINGERPRINT, lambda tmp: tmp.write_text(json.dumps({"fingerprint": now}, indent=1)))
    state.wait_for_everyone()


def _progress(total: int, done: int, disable: bool = False):

    return tqdm(total=total, initial=done, desc="predict", unit="input", disable=disable or total < 2)


@contextlib.contextmanager
def quiet_inner_bars() -> Iterator[None]:
    """predict's own bars (per chunk of images, per video) stay off: the job has one bar, on the main process."""

    from fer_hf.inference import predictor

    def silent(*args, **kwargs):
        return tqdm(*args, **{**kwargs, "disable": True})

    saved, predictor.tqdm = predictor.tqdm, silent
    try:
        yield
    finally:
        predictor.tqdm = saved


def shards(todo: Sequence[int], batch_size: int, shard_size: int) -> list[list[int]]:
    """The inputs to do, cut into shards of whole batches of the one-process run (inputs i // batch_size together):
    the model then sees the same batches whatever the number of processes, so the results are the same to the bit.
    A shard holds `shard_size` inputs, rounded up to whole batches."""
    blocks: dict[int, list[int]] = {}
    for index in todo:
        blocks.setdefault(index // batch_size, []).append(index)
    per_shard = -(-shard_size // batch_size)
    ordered = list(blocks.values())
    return [sum(ordered[start : start + per_shard], []) for start in range(0, len(ordered), per_shard)]


def _predict_here(job: Job, predictor: Predictor, size: int) -> list[Result]:
    """One process, no shard folder: every input in memory, in order."""
    results: list[Result] = []
    bar = _progress(len(job.keys), 0)
    with quiet_inner_bars():
        for chunk in shards(range(len(job.keys)), predictor.batch_size, size):
            results += job.predict(predictor, chunk)
            bar.update(len(chunk))
    bar.close()
    return results


def _predict_sharded(job, predictor, state, folder: Path, manifests: Manifests, args) -> list[Result] | None:
    """This process's part of what is not done yet, shard by shard; the main process then follows the others'
    manifests (its bar counts every process's inputs) until all are done, and merges. None on the other ranks."""
    total = len(job.keys)
    todo = [i for i in range(total) if i not in manifests.where]
    writer = ShardWriter(folder, state.process_index)
    bar = _progress(total, len(manifests.where), disable=not state.is_main_process)
    with quiet_inner_bars(), state.split_between_processes(shards(todo, args.batch_size, args.shard_size)) as mine:
        for chunk in mine:
            started = time.time()
            writer.add(chunk, [job.keys[i] for i in chunk], job.predict(predictor, chunk), started)
            if state.is_main_process:
                bar.update(manifests.refresh() - bar.n)
    if state.is_main_process:
        while manifests.refresh() < total:  # a rank that dies takes the launch down with it (torchrun)
            bar.update(len(manifests.where) - bar.n)
            time.sleep(0.2)
        bar.update(total - bar.n)
    bar.close()
    state.wait_for_everyone()
    return manifests.results(total) if state.is_main_process else None
