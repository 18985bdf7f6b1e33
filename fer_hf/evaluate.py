"""Evaluate a trained FER model on one split, with the preprocessing of training's evaluation.

    python -m fer_hf.evaluate runs/cnn --data ../shared/fer2013 --split validation --tta hflip

MODEL is a run folder, a saved model folder, a Hub id or a bundled model (`default`, `lite0`); --data is anything
`load_fer_dataset` takes, including a single parquet file (used whole, as one split). Writes metrics.json
(the keys of `fer_hf.evaluation.metrics.compute_fer_metrics` plus split, model, TTA mode, throughput and parameters),
a normalised confusion matrix and a grid of the most confident mistakes. Outputs are written to a temporary
folder and renamed into place at the end, so a folder with a metrics.json is always a complete evaluation.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fer_hf.cli import positive_int
from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.sources import raters_of
from fer_hf.devices import DEVICE_HELP, DeviceError, resolve_device
from fer_hf.evaluation.evaluator import align_labels, default_output, evaluate, write_outputs
from fer_hf.evaluation.report import per_class_table
from fer_hf.evaluation.results import EvalRecord
from fer_hf.evaluation.tta import TTA_MODES
from fer_hf.labels import resolve_classes
from fer_hf.models.loading import MODEL_HELP, load_classifier, resolve_model_path
from fer_hf.outputs import atomic_output_dir, check_apart


def print_summary(report: EvalRecord, out: Path) -> None:
    print(f"{report.model} on {report.split} ({report.split_size} faces), TTA {report.tta}:")
    print(
        f"accuracy {report.accuracy:.4f}  macro-F1 {report.macro_f1:.4f}  top-2 {report.top2_accuracy:.4f}"
        f"  ({report.images_per_second:.0f} img/s)"
    )
    print(f"calibration: ECE {report.ece:.4f} (15 bins)  NLL {report.nll:.4f}", end="")
    if report.kl_raters is not None:
        print(f"  |  raters (FER+ votes): KL(raters||model) {report.kl_raters:.4f}  NLL {report.nll_raters:.4f}")
    else:
        print()
    if report.left_out:
        print(f"left out: {report.left_out['faces']} faces ({report.left_out['why']})")
    print(per_class_table(report.per_class))
    print(f"written to {out}")


# ---------------------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=MODEL_HELP)
    parser.add_argument("--data", required=True, help="FER2013 source: parquet file/folder, Kaggle CSV, ImageFolder")
    parser.add_argument("--split", default=None, help="split to evaluate (default: validation, or the only split)")
    parser.add_argument("--classes", default=None, help="class subset (name or comma-separated), as in training")
    parser.add_argument("--tta", default="none", choices=TTA_MODES, help="test-time augmentation (default: none)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="faces per forward pass")
    parser.add_argument("--output", default=None, help="output folder (default: runs/eval/MODEL-SPLIT-TTA)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--mistakes", type=int, default=16, help="how many confident mistakes to show")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a Hub model's own code to run")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    try:  # before anything loads: `--device cuda` on a machine without a GPU is one sentence
        args.device = resolve_device(args.device)
    except DeviceError as err:
        parser.error(str(err))
    if args.classes:
        try:
            resolve_classes(args.classes)
        except ValueError as err:
            parser.error(f"--classes: {err}")
    return args


def evaluate_model(args: argparse.Namespace) -> tuple[EvalRecord, Path]:
    """The command: load, check, evaluate, write (atomically). Returns (metrics, folder)."""
    out = Path(args.output) if args.output else default_output(args.model, args.split, args.tta)
    with atomic_output_dir(out, args.overwrite) as tmp:
        loaded = load_classifier(args.model, trust_remote_code=args.trust_remote_code, device=args.device)
        split, ds = load_split(args.data, args.split, args.classes)
        ds, alignment = align_labels(loaded.label_names, ds.features["label"].names, args.model).select(ds)
        faces = FerTensorDataset.from_split(ds, desc=f"decode {split}")
        settings = dict(tta=args.tta, batch_size=args.batch_size, classes=args.classes, mistakes=args.mistakes)
        report = evaluate(
            loaded, faces, data=args.data, split=split, **settings, raters=raters_of(ds), alignment=alignment
        )
        write_outputs(tmp, report, faces.images)
    return report, out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The command never writes over (into, around) its inputs; bundle writes evaluations into its staging folder.
    check_apart(args.output or default_output(args.model, args.split, args.tta), resolve_model_path(args.model),
                args.data)  # fmt: skip
    report, out = evaluate_model(args)
    print_summary(report, out)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
