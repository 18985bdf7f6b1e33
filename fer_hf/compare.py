"""Put FER results side by side: one table (Markdown, CSV, JSON) and bar charts, like for like only.

    python -m fer_hf.compare runs/cnn runs/vit runs/eval/cnn-validation-none --output runs/compare

Each input is a training run folder (its metrics.json from `fer_hf.train`; --split picks validation or test),
an evaluation folder (`fer_hf.evaluate`), a cross-validation folder (`fer_hf.cv`, mean ± std over folds), one
of their JSON files, or an earlier comparison folder: its rows are carried over as they were measured (with
their confusion matrices), and a later input of the same name replaces its row. That is how one new model joins
a published table without re-evaluating the others. Results on different splits (name or size), label sets or
TTA modes are refused unless --allow-mismatch: a number is only comparable with numbers measured the same way.
Training runs also get their learning curves drawn on shared axes (curves.png): validation accuracy and macro-F1
per epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fer_hf.evaluation.report import plot_curves, plt, run_log_history
from fer_hf.evaluation.results import (
    CV_FILE,
    METRICS_FILE,
    CVRecord,
    EvalRecord,
    Metrics,
    RecordError,
    RunRecord,
    TrainerEval,
    find_record_file,
    read_record,
)
from fer_hf.outputs import atomic_output_dir

OUTPUT_STEM = "comparison"


class ComparisonError(ValueError):
    """Inputs that cannot be read or cannot fairly be put side by side; the message says which and why."""


@dataclass
class ResultRow:
    """One model's result, whatever file it came from."""

    name: str
    source: str
    kind: str  # run | evaluate | cv
    split: str
    num_samples: int
    labels: list[str]
    tta: str
    accuracy: float
    macro_f1: float
    weighted_f1: float
    top2_accuracy: float
    per_class_f1: dict[str, float]
    per_class_recall: dict[str, float] = field(default_factory=dict)  # empty for cv (its folds keep F1 only)
    epochs: float | None = None  # training runs: epochs trained
    parameters: int | None = None
    trainable_parameters: int | None = None
    train_seconds: float | None = None
    images_per_second: float | None = None
    std: dict = field(default_factory=dict)  # cv only: sample std of each metric over the folds
    carried_from: str | None = None  # the earlier comparison folder this row was read from (None: measured here)


# ---------------------------------------------------------------------------------------------- reading
def find_metrics_file(path: Path) -> Path:
    """A folder -> its cv_metrics.json, metrics.json or (an earlier comparison) comparison.json; a file -> itself."""
    if (
        path.is_dir()
        and (path / f"{OUTPUT_STEM}.json").is_file()
        and not any((path / name).is_file() for name in (CV_FILE, METRICS_FILE))
    ):
        return path / f"{OUTPUT_STEM}.json"
    try:
        return find_record_file(path)
    except RecordError as err:
        raise ComparisonError(str(err)) from None


def _per_class(m: Metrics) -> dict[str, dict[str, float]]:
    return {f"per_class_{key}": {name: row[key] for name, row in m.per_class.items()} for key in ("f1", "recall")}


SCORES = ("accuracy", "macro_f1", "weighted_f1", "top2_accuracy")


def _costs(record: EvalRecord | CVRecord | RunRecord) -> dict:
    keys = ("parameters", "trainable_parameters", "train_seconds")
    return {key: getattr(record, key) for key in keys}


def row_from_run(run: RunRecord, name: str, source: str, split: str) -> ResultRow:
    """A training run: the chosen split's metrics plus the run's parameters and training time."""
    if split not in run.splits:
        present = sorted(run.splits)
        raise ComparisonError(f"{source}: the run has no {split!r} metrics; it has {present} (choose with --split)")
    m = run.splits[split]
    # Trainer.predict's time for the split (batch size of the recipe), the run's only throughput figure; a bundled
    # or ensemble folder's split is fer_hf.evaluate's report, whose speed its own evaluation row shows.
    speed = m.images_per_second if isinstance(m, TrainerEval) else None
    head = dict(name=name, source=source, kind="run", split=split, num_samples=m.num_samples, tta="none")
    scores = {key: getattr(m, key) for key in SCORES}
    costs = {**_costs(run), "images_per_second": speed}
    return ResultRow(**head, labels=run.labels, **scores, **_per_class(m), epochs=run.epochs, **costs)


def row_from_evaluate(ev: EvalRecord, name: str, source: str) -> ResultRow:
    head = dict(name=name, source=source, kind="evaluate", split=ev.split, num_samples=ev.split_size)
    scores = {**{key: getattr(ev, key) for key in SCORES}, **_per_class(ev)}
    costs = {**_costs(ev), "images_per_second": ev.images_per_second}
    return ResultRow(**head, labels=ev.labels, tta=ev.tta, **scores, **costs)


def row_from_cv(cv: CVRecord, name: str, source: str) -> ResultRow:
    """A cross-validation: the mean over folds, with the folds' sample std kept for the table."""
    head = dict(name=name, source=source, kind="cv", split=cv.split, num_samples=cv.split_size)
    scores = {**{key: cv.mean[key] for key in SCORES}, "per_class_f1": cv.mean["per_class_f1"], "std": cv.std}
    costs = {**_costs(cv), "images_per_second": cv.images_per_second}
    return ResultRow(**head, labels=cv.labels, tta=cv.tta, **scores, **costs)


def rows_from_comparison(doc: dict, file: Path) -> list[ResultRow]:
    """An earlier comparison's rows, as they were measured (`source` names the original file); `carried_from` is the
    folder they were read from, which also holds their confusion matrices."""
    rows = []
    for i, row in enumerate(doc["rows"]):
        try:
            rows.append(ResultRow(**{**row, "carried_from": str(file.parent)}))
        except TypeError as err:
            raise ComparisonError(f"{file}: row {i} ({row.get('name')!r}) is not a comparison row: {err}") from None
    return rows


def load_rows(path: str | Path, split: str = "validation") -> list[ResultRow]:
    """One input -> its rows: one for a run, evaluation or cv; all of them for an earlier comparison."""
    file = find_metrics_file(Path(path))
    if file.name == f"{OUTPUT_STEM}.json":
        try:
            doc = json.loads(file.read_text())
            return rows_from_comparison(doc, file)
        except (ValueError, KeyError, TypeError) as err:
            raise ComparisonError(f"{file}: not a comparison of fer_hf ({type(err).__name__}: {err})") from None
    return [load_row(file, split)]


def merge_rows(groups: list[list[ResultRow]]) -> list[ResultRow]:
    """Inputs in order; a row measured here replaces a carried-over row of the same name, in its place."""
    rows: list[ResultRow] = []
    for group in groups:
        for row in group:
            carried = next((i for i, old in enumerate(rows) if old.name == row.name and old.carried_from), None)
            if carried is not None and not row.carried_from:
                print(f"{row.name}: replaces the row carried over from {rows[carried].carried_from}")
                rows[carried] = row
            else:
                rows.append(row)
    return rows


def load_row(path: str | Path, split: str = "validation") -> ResultRow:
    """Read one input (folder or JSON file) into a ResultRow, whichever command wrote it."""
    file = find_metrics_file(Path(path))
    name = (file.parent if file.name.endswith("metrics.json") else file).name or str(path)
    try:
        record = read_record(file)
    except RecordError as err:
        raise ComparisonError(str(err)) from None
    if isinstance(record, EvalRecord):
        return row_from_evaluate(record, name, str(file))
    if isinstance(record, CVRecord):
        return row_from_cv(record, name, str(file))
    return row_from_run(record, name, str(file), split)


def unique_names(rows: list[ResultRow]) -> None:
    """Two inputs with the same folder name get their parent folder too, so table rows stay distinct."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.name] = seen.get(row.name, 0) + 1
    for row in rows:
        if seen[row.name] > 1:
            row.name = "/".join(Path(row.source).parent.parts[-2:])


# ---------------------------------------------------------------------------------------------- checking
def mismatches(rows: list[ResultRow]) -> list[str]:
    """Why these rows are not like for like (empty when they are)."""
    checks = {
        "split": lambda r: f"{r.split} ({r.num_samples} images)",
        "label set": lambda r: ", ".join(r.labels),
        "TTA mode": lambda r: r.tta,
    }
    reasons = []
    for what, key in checks.items():
        values = {key(r) for r in rows}
        if len(values) > 1:
            listing = "; ".join(f"{r.name}: {key(r)}" for r in rows)
            reasons.append(f"different {what}: {listing}")
    return reasons


# ---------------------------------------------------------------------------------------------- writing
def _fmt(row: ResultRow, key: str) -> str:
    value = getattr(row, key)
    return f"{value:.4f} ± {row.std[key]:.4f}" if key in row.std else f"{value:.4f}"


def _num(value, spec: str = ",") -> str:
    return "" if value is None else format(value, spec)


PER_CLASS = {"f1": "F1", "recall": "recall"}  # --per-class: which per-class score the table and chart show


def per_class_scores(row: ResultRow, per_class: str) -> dict[str, float]:
    return row.per_class_f1 if per_class == "f1" else row.per_class_recall


def markdown_table(rows: list[ResultRow], per_class: str = "f1") -> str:
    names = rows[0].labels
    score = PER_CLASS[per_class]
    head = ["model", "split (n)", "TTA", "accuracy", "macro-F1", "top-2", *[f"{score} {c}" for c in names]]
    head += ["params", "trainable", "epochs", "train time (s)", "img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        scores = per_class_scores(r, per_class)
        cells = [r.name, f"{r.split} ({r.num_samples})", r.tta, *(_fmt(r, k) for k in ("accuracy", "macro_f1"))]
        cells += [_fmt(r, "top2_accuracy"), *(f"{scores[c]:.3f}" if c in scores else "" for c in names)]
        cells += [_num(r.parameters), _num(r.trainable_parameters), _num(r.epochs, "g")]
        cells += [_num(r.train_seconds), _num(r.images_per_second)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flat_record(row: ResultRow) -> dict:
    """A CSV row: scalars, per-class F1 as f1_<class>, std as <metric>_std."""
    out = {k: v for k, v in asdict(row).items() if k not in ("per_class_f1", "per_class_recall", "std", "labels")}
    out["labels"] = ",".join(row.labels)
    out.update({f"f1_{c}": v for c, v in row.per_class_f1.items()})
    out.update({f"recall_{c}": v for c, v in row.per_class_recall.items()})
    out.update({f"{k}_std": v for k, v in row.std.items() if not isinstance(v, dict)})
    return out


def write_csv(rows: list[ResultRow], path: Path) -> None:
    records = [flat_record(r) for r in rows]
    fields = list(dict.fromkeys(k for rec in records for k in rec))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def plot_comparison(rows: list[ResultRow], path: Path, title: str, per_class: str = "f1") -> None:
    """Left: accuracy and macro-F1 per model; right: per-class F1 (or recall), one bar group per class."""
    names = rows[0].labels
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6 + 1.2 * len(rows), 4.5), gridspec_kw={"width_ratios": [1, 2.2]})
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = np.arange(2) + i * width
        errs = [r.std.get("accuracy", 0), r.std.get("macro_f1", 0)]
        bars = ax1.bar(xs, [r.accuracy, r.macro_f1], width, yerr=errs, label=r.name)
        ax1.bar_label(bars, fmt="%.3f", fontsize=7)
        scores = per_class_scores(r, per_class)
        ax2.bar(np.arange(len(names)) + i * width, [scores.get(c, 0) for c in names], width, label=r.name)
    panels = ((ax1, ["accuracy", "macro-F1"], "overall"), (ax2, names, f"{PER_CLASS[per_class]} per class"))
    for ax, ticks, panel in panels:
        ax.set_xticks(np.arange(len(ticks)) + width * (len(rows) - 1) / 2, ticks)
        ax.set_ylim(0, 1)
        ax.set_title(panel)
        ax.grid(axis="y", alpha=0.3)
    ax2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, rows: list[ResultRow], notes: list[str], per_class: str = "f1") -> None:
    table = markdown_table(rows, per_class)
    if notes:  # --allow-mismatch: say in the table itself what is not like for like
        table += "\n\n" + "\n".join(f"> not like for like: {note}" for note in notes)
    (out / f"{OUTPUT_STEM}.md").write_text(table + "\n")
    write_csv(rows, out / f"{OUTPUT_STEM}.csv")
    doc = {"rows": [asdict(r) for r in rows], "mismatches": notes}
    (out / f"{OUTPUT_STEM}.json").write_text(json.dumps(doc, indent=2) + "\n")
    split = f"{rows[0].split} ({rows[0].num_samples} images)"
    title = "not like for like: see the table" if notes else f"{split}, TTA {rows[0].tta}"
    plot_comparison(rows, out / f"{OUTPUT_STEM}.png", title, per_class)
    copy_confusion_matrices(rows, out)
    runs = [r for r in rows if r.kind == "run" and not r.carried_from]
    histories = {r.name: h for r in runs if (h := run_log_history(Path(r.source).parent))}
    if histories:
        plot_curves(histories, out / "curves.png", f"learning curves: {', '.join(histories)} on {split}")


def copy_confusion_matrices(rows: list[ResultRow], out: Path) -> None:
    """Each row's confusion-matrix PNG (beside its metrics file) as confusion_<name>.png, so that the folder stands
    alone: the app's Compare tab and model cards show it without the evaluation folders."""
    for row in rows:
        target = f"confusion_{row.name.replace('/', '_')}.png"
        folder = Path(row.source).parent  # evaluate/cv write confusion_matrix.png, a training run one per split
        candidates = [folder / "confusion_matrix.png", folder / f"confusion_matrix_{row.split}.png"]
        if row.carried_from:  # the earlier comparison kept its own copy
            candidates = [Path(row.carried_from) / target]
        found = [p for p in candidates if p.is_file()]
        if found:
            shutil.copy2(found[0], out / target)


# ---------------------------------------------------------------------------------------------- CLI
def compare(
    inputs: Sequence[str],
    output: str | Path,
    split: str = "validation",
    allow_mismatch: bool = False,
    per_class: str = "f1",
):
    """Read, check and write; returns the rows. Raises ComparisonError when the inputs are not like for like."""
    rows = merge_rows([load_rows(path, split) for path in inputs])
    unique_names(rows)
    notes = mismatches(rows)
    if notes and not allow_mismatch:
        raise ComparisonError(
            "refusing to put these results side by side:\n  " + "\n  ".join(notes) + "\n"
            "evaluate them on the same split, classes and TTA mode, or pass --allow-mismatch"
        )
    out = Path(output)
    if out.is_dir() and any(out.iterdir()) and not (out / f"{OUTPUT_STEM}.json").is_file():
        raise ComparisonError(f"{out}: exists and is not an earlier comparison; choose another --output")
    with atomic_output_dir(out, overwrite=True) as tmp:
        write_outputs(tmp, rows, notes, per_class)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fer_hf.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", help="run folders, evaluate/cv folders, or their metrics JSON files")
    parser.add_argument("--output", required=True, help="folder for comparison.{md,csv,json,png}")
    parser.add_argument("--split", default="validation", help="which split of a training run (validation | test)")
    parser.add_argument("--allow-mismatch", action="store_true", help="compare different splits/labels/TTA anyway")
    parser.add_argument("--per-class", choices=sorted(PER_CLASS), default="f1", help="per-class score in the table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = compare(args.inputs, args.output, args.split, args.allow_mismatch, args.per_class)
    print(markdown_table(rows, args.per_class))
    curves = " and curves.png" if (Path(args.output) / "curves.png").is_file() else ""
    print(f"written to {args.output}/{OUTPUT_STEM}.{{md,csv,json,png}}{curves}")
    return 0


if __name__ == "__main__":
    from fer_hf.cli import run

    sys.exit(run(main))
