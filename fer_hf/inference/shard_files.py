"""The files of a sharded prediction: each shard's rows written atomically with a manifest, the fingerprint that
ties them to one command line (`--resume` refuses another), and the merge into the one CSV/JSON/parquet in input
order."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from fer_hf.inference.predictions import FacePrediction, FrameResult, ImageResult, Result, VideoResult
from fer_hf.inference.writers import result_rows, write_csv, write_json
from fer_hf.models.loading import resolve_model_path

if TYPE_CHECKING:
    from fer_hf.inference.sharding import Job

SHARD_SUFFIX = ".shards"
FINGERPRINT = "fingerprint.json"
MANIFEST = "manifest.jsonl"
# Options that change where the merged files go or how the work is cut, never what a row holds: a resume may change
# them. Everything else on the command line is part of the fingerprint.
NOT_FINGERPRINTED = {"resume", "shard_size", "csv", "json", "inputs", "data", "split", "model"}


class ShardError(ValueError):
    """A shard folder that cannot be used for this command line (the message says why and what to do)."""


def fingerprint(args: argparse.Namespace, job: Job) -> dict:
    """What makes two runs' shards interchangeable: the model (its folder and its files' sizes and times), the
    inputs, and every option that changes a row. Values are strings, so the saved copy compares equal."""
    model = args.model
    with contextlib.suppress(ValueError):  # a bad --model is reported when it is loaded
        model = resolve_model_path(args.model)
    folder = Path(model)
    files = sorted(
        f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (folder.iterdir() if folder.is_dir() else ())
    )  # retrained in the same folder is another model too
    digest = hashlib.sha256(" ".join(files).encode()).hexdigest()[:16]
    found = {"model": f"{model} (files {digest})" if files else str(model)}
    found.update(job.fingerprint)
    found.update({key: repr(value) for key, value in sorted(vars(args).items()) if key not in NOT_FINGERPRINTED})
    return found


def _flag(key: str) -> str:
    return {"model": "--model", "inputs": "the inputs"}.get(key, "--" + key.replace("_", "-"))


def compare_fingerprints(folder: Path, saved: dict, now: dict) -> None:
    """Refuse a shard folder written by another command line, naming the first thing that differs."""
    for key in sorted(saved.keys() | now.keys(), key=lambda k: (k not in ("model", "inputs"), k)):
        if saved.get(key) != now.get(key):
            raise ShardError(
                f"--resume: {folder} was written by another command line ({_flag(key)} was {saved.get(key)}, now "
                f"{now.get(key)}); resume with the same command line, or delete {folder} to start over"
            )


class ShardWriter:
    """One process's shards: each part staged then renamed, then its line appended to the manifest, so a part the
    manifest names is always complete."""

    def __init__(self, folder: Path, rank: int):
        self.dir = folder / f"rank-{rank}"
        self.manifest = self.dir / MANIFEST
        self._ready = False

    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        # A kill in the middle of a line leaves it unfinished: end it, so the next line starts clean (the torn one
        # does not parse and is skipped, and its inputs are redone).
        if self.manifest.is_file() and self.manifest.stat().st_size:
            with open(self.manifest, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
        self._ready = True

    def add(self, indexes: list[int], keys: list[str], results: Sequence[Result], started: float) -> None:
        """`started`: time.time() when this shard's prediction began (the manifest keeps it, with the end, for
        `python -m fer_hf.bench scale`'s throughput without start-up)."""
        if not self._ready:
            self._prepare()
        part = self.dir / f"part-{indexes[0]:09d}.json"
        staged = part.with_name(part.name + ".partial")
        write_json(results, staged)
        os.replace(staged, part)
        times = {"started": round(started, 3), "finished": round(time.time(), 3)}
        line = json.dumps({"part": part.name, "inputs": indexes, "keys": keys, **times}) + "\n"
        with open(self.manifest, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


class Manifests:
    """Every rank's manifest of a shard folder, read a little more at each refresh: which inputs are done, where."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets: dict[Path, int] = {}
        self.where: dict[int, tuple[Path, int]] = {}  # input index -> (part file, position in it)

    def refresh(self) -> int:
        """Read what was appended since the last call; -> the number of inputs done."""
        for path in sorted(self.folder.glob(f"rank-*/{MANIFEST}")):
            with open(path, "rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                data = handle.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next refresh
            self.offsets[path] = self.offsets.get(path, 0) + len(complete)
            for line in complete.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # torn by a kill: its inputs are not done
                for position, index in enumerate(entry["inputs"]):
                    self.where[index] = (path.parent / entry["part"], position)
        return len(self.where)

    def results(self, count: int) -> list[Result]:
        """The results of inputs 0..count-1, in input order, rebuilt from the parts."""
        missing = [i for i in range(count) if i not in self.where]
        if missing:
            raise ShardError(f"{self.folder}: {len(missing)} input(s) have no shard (the first: input {missing[0]})")
        parts: dict[Path, list[dict]] = {}
        records = []
        for index in range(count):
            part, position = self.where[index]
            if part not in parts:
                parts[part] = json.loads(part.read_text())
            records.append(parts[part][position])
        return [result_from_record(record) for record in records]


def result_from_record(record: dict) -> Result:
    """write_json's record -> the ImageResult / VideoResult it was written from (JSON has lists for tuples)."""
    record = {key: value for key, value in record.items() if key != "status"}  # a property, not a field
    if record.get("kind") == "video":
        record["frames"] = [
            FrameResult(f["index"], f["time_s"], [_face(face) for face in f["faces"]]) for f in record["frames"]
        ]
        return VideoResult(**_known(VideoResult, record))
    record["faces"] = [_face(face) for face in record["faces"]]
    record["size"] = tuple(record["size"]) if record.get("size") else None
    return ImageResult(**_known(ImageResult, record))


def _face(record: dict) -> FacePrediction:
    return FacePrediction(**_known(FacePrediction, {**record, "box": tuple(record["box"])}))


def _known(cls, record: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in record.items() if key in names}


def is_parquet(path: str | None) -> bool:
    return bool(path) and Path(path).suffix.lower() == ".parquet"


def write_outputs(results: Sequence[Result], label_names: Sequence[str], args: argparse.Namespace) -> None:
    """--csv (a parquet table when it ends with .parquet) and --json, each staged then renamed into place."""
    if args.csv:
        staged_file(args.csv, lambda tmp: _write_table(results, label_names, tmp, is_parquet(args.csv)))
    if args.json:
        staged_file(args.json, lambda tmp: write_json(results, tmp))


def _write_table(results, label_names, path: Path, parquet: bool) -> None:
    if not parquet:
        write_csv(results, label_names, path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The CSV's empty cells are nulls here, so that each column keeps one type (ints, floats or strings).
    rows = [
        {key: (None if value == "" else value) for key, value in row.items()}
        for row in result_rows(results, label_names)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def staged_file(out: str | Path, write: Callable[[Path], None]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.partial")
    write(staged)
    os.replace(staged, out)


def shard_folder(args: argparse.Namespace) -> Path:
    out = args.csv or args.json
    if not out:
        raise ShardError(
            "a sharded run (several processes or --resume) needs --csv or --json: the merged results go there and "
            "the shards beside it (OUT.shards)"
        )
    return Path(out).with_name(Path(out).name + SHARD_SUFFIX)
