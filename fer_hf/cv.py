"""Stratified k-fold cross-validation on the Training split (report-a's protocol for choosing a model).

    python -m fer_hf.cv recipes/cnn.yaml --folds 5 --output runs/cnn-cv5 --training.num_train_epochs 60

Training is split into k stratified folds (seeded); each fold is the validation split of one run of the
recipe, trained on the other k-1 folds by `fer_hf.training.run.train_from_recipe` (same data preparation, model,
loss, callbacks and metric code as a normal run). PublicTest/PrivateTest are never looked at. The folder gets
one run folder per fold, `cv_metrics.json` (per-fold metrics, mean and sample std, pooled confusion matrix;
readable by `fer_hf.compare`) and `cv_table.md`. cv_metrics.json is written last: its presence means complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from sklearn.model_selection import StratifiedKFold, train_test_split

from fer_hf.configs import Recipe, RecipeError
from fer_hf.data.dataset import load_fer_dataset
from fer_hf.data.sources import labels_of
from fer_hf.evaluation.results import CV_FILE, METRICS_FILE, CVRecord, RunRecord, read_record, write_record
from fer_hf.logs import get_logger
from fer_hf.recipe_parser import load_recipe
from fer_hf.training.run import train_from_recipe

SCALARS = ("accuracy", "macro_f1", "weighted_f1", "top2_accuracy")

logger = get_logger(__name__)


def make_folds(labels: np.ndarray, k: int, seed: int, names: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """k stratified (train indices, validation indices) pairs; every row is validated exactly once."""
    if k < 2:
        raise RecipeError(f"--folds must be at least 2, got {k}")
    counts = np.bincount(labels, minlength=len(names))
    if counts.min() < k:
        rare = names[int(counts.argmin())]
        raise RecipeError(f"--folds {k}: class {rare!r} has {counts.min()} training images; each fold needs one")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def cv_pool(recipe: Recipe, max_samples: int | None) -> Dataset:
    """The Training split of the recipe's source (class subset applied), optionally a stratified subset."""
    train = load_fer_dataset(recipe.data.source, classes=recipe.data.classes)["train"]
    if max_samples and max_samples < len(train):
        keep, _ = train_test_split(
            np.arange(len(train)), train_size=max_samples, stratify=labels_of(train), random_state=_seed(recipe)
        )
        train = train.select(np.sort(keep))
    return train


def _seed(recipe: Recipe) -> int:
    return int(recipe.training.seed)


def fold_recipe(recipe: Recipe, out: Path, fold: int) -> Recipe:
    """The recipe of one fold: its own output folder, no test evaluation, no resuming."""
    run = dataclasses.replace(recipe.run, resume=False, evaluate_test=False)
    return dataclasses.replace(recipe, run=run).with_training(output_dir=str(out / f"fold_{fold}"))


def run_fold(recipe: Recipe, pool: Dataset, train_idx: np.ndarray, val_idx: np.ndarray) -> RunRecord:
    """Train one fold and return the record its run folder's metrics.json holds."""
    dd = DatasetDict({"train": pool.select(train_idx), "validation": pool.select(val_idx)})
    train_from_recipe(recipe, dd=dd)
    return read_record(Path(recipe.training.output_dir) / METRICS_FILE, RunRecord)


def fold_row(fold: int, run: RunRecord, train_size: int) -> dict:
    val = run.splits["validation"]
    return {
        "fold": fold,
        "train_size": train_size,
        "validation_size": val.num_samples,
        **{key: getattr(val, key) for key in SCALARS},
        "per_class_f1": {name: row["f1"] for name, row in val.per_class.items()},
        "train_seconds": run.train_seconds,
        "images_per_second": round(val.num_samples / max(val.seconds, 1e-9), 1),
    }


def summarize(rows: list[dict], runs: list[RunRecord], recipe: Recipe, k: int, pool_size: int) -> CVRecord:
    """Per-fold rows -> mean and sample std (ddof=1) of every metric, plus the pooled confusion matrix."""
    names = runs[0].labels

    def stat(fn, key: str, cls: str | None = None) -> float:
        values = [r["per_class_f1"][cls] if cls else r[key] for r in rows]
        return round(float(fn(values)), 6)

    def std(v):
        return np.std(v, ddof=1)

    return CVRecord(
        recipe=recipe.path,
        model_family=recipe.model.family,
        data=recipe.data.source,
        split=f"train ({k}-fold CV)",
        split_size=pool_size,
        folds=k,
        seed=_seed(recipe),
        labels=names,
        tta="none",
        mean={
            **{key: stat(np.mean, key) for key in SCALARS},
            "per_class_f1": {c: stat(np.mean, "", c) for c in names},
        },
        std={**{key: stat(std, key) for key in SCALARS}, "per_class_f1": {c: stat(std, "", c) for c in names}},
        confusion_matrix=np.sum([r.splits["validation"].confusion_matrix for r in runs], axis=0).tolist(),
        parameters=runs[0].parameters,
        trainable_parameters=runs[0].trainable_parameters,
        train_seconds=round(float(np.mean([r["train_seconds"] for r in rows])), 1),
        images_per_second=round(float(np.mean([r["images_per_second"] for r in rows])), 1),
        per_fold=rows,
    )


def cv_table(summary: CVRecord) -> str:
    """Markdown: one row per fold, then mean ± std."""
    lines = [
        "| fold | train | validation | accuracy | macro-F1 | weighted-F1 | top-2 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.per_fold:
        scores = " | ".join(f"{r[key]:.4f}" for key in SCALARS)
        lines.append(f"| {r['fold']} | {r['train_size']} | {r['validation_size']} | {scores} |")
    mean_std = " | ".join(f"{summary.mean[key]:.4f} ± {summary.std[key]:.4f}" for key in SCALARS)
    lines.append(f"| mean ± std | | {summary.split_size} | {mean_std} |")
    return "\n".join(lines)


def write_summary(out: Path, summary: CVRecord) -> None:
    (out / "cv_table.md").write_text(cv_table(summary) + "\n")
    write_record(summary, out / CV_FILE)  # last and atomic: cv_metrics.json only ever exists complete


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.cv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other --section.key value arguments override the recipe, as in fer_hf.train.",
    )
    parser.add_argument("recipe", help="YAML recipe (recipes/*.yaml)")
    parser.add_argument("--folds", type=int, default=5, help="number of stratified folds (default 5)")
    parser.add_argument("--output", default=None, help="output folder (default: the recipe's output_dir + -cvK)")
    parser.add_argument("--max-samples", type=int, default=None, help="cross-validate a stratified subset of train")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    summary, out = cross_validate(load_recipe(args.recipe, overrides), args)
    print(cv_table(summary))
    print(f"written to {out / CV_FILE}")
    return 0


def cross_validate(recipe: Recipe, args: argparse.Namespace) -> tuple[CVRecord, Path]:
    """Train every fold, then write the summary. Returns (summary, folder)."""
    out = Path(args.output or f"{recipe.training.output_dir}-cv{args.folds}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CV_FILE).unlink(missing_ok=True)  # an earlier, now stale summary must not look like this run's
    recipe.save(out / "recipe.yaml")
    pool = cv_pool(recipe, args.max_samples)
    folds = make_folds(labels_of(pool), args.folds, _seed(recipe), pool.features["label"].names)
    rows, runs = [], []
    for fold, (train_idx, val_idx) in enumerate(folds, start=1):
        logger.info("fold %d/%d: train %d, validation %d", fold, args.folds, len(train_idx), len(val_idx))
        runs.append(run_fold(fold_recipe(recipe, out, fold), pool, train_idx, val_idx))
        rows.append(fold_row(fold, runs[-1], len(train_idx)))
    summary = summarize(rows, runs, recipe, args.folds, len(pool))
    write_summary(out, summary)
    return summary, out


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
