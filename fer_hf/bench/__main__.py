"""`python -m fer_hf.bench NAME [args]`: dispatch to `fer_hf.bench.NAME.main(args)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fer_hf.bench import BENCHMARKS

HELP = {
    "data": "per-batch data pipeline vs. the per-sample set_transform pipeline of transformers' example",
    "train": "training-step throughput",
    "predict": "inference throughput",
    "faces": "the face front end (detect, align, crop) on FER2013 faces pasted into real photos",
    "video": "video frames per second, detection on every frame vs every k-th frame with tracking",
    "scale": "predict's faces/s and training's steps/s with 1 and 2 processes (accelerate launch)",
    "app": "the app under a burst of photo requests: ok / refused / failed, latency, still up",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.bench",
        description="fer_hf benchmarks. `python -m fer_hf.bench NAME --help` lists a benchmark's own options.",
    )
    sub = parser.add_subparsers(dest="name", required=True, metavar="{" + ",".join(BENCHMARKS) + "}")
    for name in BENCHMARKS:
        # add_help=False: `--help` after the name reaches the benchmark's own parser.
        sub.add_parser(name, help=HELP[name], add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"fer_hf.bench.{args.name}")
    return module.main(rest) or 0


if __name__ == "__main__":
    from fer_hf.cli import run  # bad input (a missing photo, a model that does not load) is one error line, exit 2

    sys.exit(run(main))
