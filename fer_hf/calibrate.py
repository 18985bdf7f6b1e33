"""Fit one softmax temperature on a validation split and store it in the model's config (temperature scaling, Guo et
al. 2017): the probabilities a model reports then match how often it is right, and nothing else moves (the argmax,
so accuracy, stays).

    python -m fer_hf.calibrate default --data ../shared/fer2013
    python -m fer_hf.calibrate runs/ferplus_cnn --data ../shared/ferplus     # fitted to the raters' votes

The temperature T minimises the negative log-likelihood of the split's FER+ vote distributions where it has votes,
of its labels otherwise (`--fit labels` uses the labels even where there are votes). The two answer different
questions: fitted to the votes, a probability says what share of people would pick the class (lower KL to the
raters); fitted to the labels, how often the top class is the majority's (lower ECE, which is measured on labels). It is written to MODEL's config.json as `logit_temperature`, which the package's models
divide their logits by in `forward`: predict, the app, evaluate, the ensemble (each member's own, and the ensemble's)
and an ONNX export made afterwards (the division is part of the traced graph, so the runtime applies it too). Only
config.json changes, never the weights. Prints ECE (15 bins), NLL and KL to the raters before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.data.sources import raters_of
from fer_hf.evaluation.evaluator import align_labels, run_inference
from fer_hf.evaluation.metrics import calibration_metrics, rater_metrics, softmax
from fer_hf.exports.runtime import is_export
from fer_hf.models.loading import MODEL_HELP, ModelLoadError, load_classifier, resolve_model_path

TEMPERATURE_KEY = "logit_temperature"
FIT_TARGETS = ("auto", "votes", "labels")
BOUNDS = (0.05, 20.0)  # T outside these is a model or split that temperature scaling cannot fix


@dataclass(frozen=True)
class Calibration:
    temperature: float
    previous: float
    fitted_on: str  # "votes" or "labels"
    faces: int
    before: dict[str, float]  # ece, nll (+ kl_raters, nll_raters)
    after: dict[str, float]


def fit_temperature(logits: np.ndarray, labels: np.ndarray, raters: np.ndarray | None = None) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T): of the raters' distributions (N, K) where given,
    else of the labels (N,). The NLL is convex in 1/T, so a bounded scalar search finds its minimum."""
    logits = np.asarray(logits, dtype=np.float64)
    target = raters if raters is not None else np.eye(logits.shape[1])[labels]

    def nll(log_t: float) -> float:
        return float(-(target * log_softmax(logits / np.exp(log_t), axis=1)).sum(axis=1).mean())

    result = minimize_scalar(nll, bounds=np.log(BOUNDS), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def scores(logits: np.ndarray, labels: np.ndarray, raters: np.ndarray | None, temperature: float) -> dict:
    probs = softmax(np.asarray(logits, dtype=np.float64) / temperature)
    out = {k: v for k, v in calibration_metrics(probs, labels).items() if k != "reliability"}
    if raters is not None:
        out.update(rater_metrics(probs, raters))
    return out


def calibrate(
    model: str, data: str, split: str | None = None, batch_size: int = 256, write: bool = True, fit: str = "auto"
):
    """Fit MODEL's temperature on a split of DATA and (write=True) store it in MODEL's config.json. `fit`: "auto"
    (the votes where the split has them, else the labels), "votes" or "labels"."""
    if fit not in FIT_TARGETS:
        raise ValueError(f"--fit {fit!r}: choose one of {list(FIT_TARGETS)}")
    folder = Path(resolve_model_path(model))
    if not folder.is_dir():
        raise ModelLoadError(f"{model}: calibrate writes the model's config.json, so MODEL must be a local folder")
    if is_export(str(folder)):
        raise ModelLoadError(f"{folder}: an ONNX export; calibrate the model it was exported from, then export again")
    loaded = load_classifier(str(folder))
    previous = float(getattr(loaded.model.config, TEMPERATURE_KEY, 1.0))
    set_temperature(loaded.model, 1.0)  # the raw logits: what T divides
    name, ds = load_split(data, split)
    ds, alignment = align_labels(loaded.label_names, ds.features["label"].names, model).select(ds)
    faces = FerTensorDataset.from_split(ds, desc=f"decode {name}")
    logits, _ = run_inference(loaded, faces, batch_size=batch_size)
    logits = logits[:, list(alignment.columns)]
    labels, raters = faces.labels.numpy(), raters_of(ds)
    if fit == "votes" and raters is None:
        raise ValueError(f"--fit votes: {data} [{name}] has no FER+ votes; use --fit labels or a FER+ source")
    target = None if fit == "labels" else raters
    temperature = fit_temperature(logits, labels, target)
    result = Calibration(
        temperature=round(temperature, 4),
        previous=previous,
        fitted_on="votes" if target is not None else "labels",
        faces=len(labels),
        before=scores(logits, labels, raters, previous),
        after=scores(logits, labels, raters, round(temperature, 4)),
    )
    if write:
        write_temperature(folder, result.temperature)
    return result


def set_temperature(model: torch.nn.Module, temperature: float) -> None:
    model.config.logit_temperature = float(temperature)


def write_temperature(folder: Path, temperature: float) -> None:
    """config.json with `logit_temperature` set, written atomically; the rest of the file unchanged."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config[TEMPERATURE_KEY] = temperature
    tmp = path.with_name(".config.json.partial")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def print_result(model: str, data: str, result: Calibration, written: bool) -> None:
    print(f"{model} on {data} ({result.faces} faces), fitted to the {result.fitted_on}:")
    print(f"temperature {result.previous:g} -> {result.temperature:g}")
    for key in result.before:
        print(f"  {key:<11} {result.before[key]:.4f} -> {result.after[key]:.4f}")
    if written:
        print(f"written to {resolve_model_path(model)}/config.json ({TEMPERATURE_KEY})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help=MODEL_HELP + " (a local folder: its config.json is rewritten)")
    parser.add_argument("--data", required=True, help="FER2013 or FER+ source (votes are used where it has them)")
    parser.add_argument("--split", default=None, help="split to fit on (default: validation)")
    parser.add_argument("--batch-size", type=int, default=256, help="faces per forward pass")
    parser.add_argument(
        "--fit", default="auto", choices=FIT_TARGETS, help="fit to the FER+ votes or the labels (auto: votes if any)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the fit, write nothing")
    args = parser.parse_args(argv)
    result = calibrate(args.model, args.data, args.split, args.batch_size, write=not args.dry_run, fit=args.fit)
    print_result(args.model, args.data, result, written=not args.dry_run)
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
