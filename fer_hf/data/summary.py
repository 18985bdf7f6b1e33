"""`python -m fer_hf.data SOURCE`: what a copy holds (sizes, class counts, what each FER+ mode keeps), its class
distribution as a plot, and `--save DIR`: the copy as parquet with a Hub dataset card."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from fer_hf.data import ferplus
from fer_hf.data.dataset import prepare_splits
from fer_hf.data.sources import FerDataError, has_votes, read_source, votes_of
from fer_hf.data.splits import class_counts


def summarize(dd: DatasetDict) -> dict:
    """Per-split sizes and class counts, plus the imbalance ratio (largest / smallest class)."""
    out = {}
    for name, split in dd.items():
        names = split.features["label"].names
        counts = class_counts(split)
        out[name] = {
            "rows": len(split),
            "counts": dict(zip(names, counts, strict=True)),
            "imbalance": round(max(counts) / max(min(counts), 1), 2),
            "smallest": names[int(np.argmin(counts))],
            "largest": names[int(np.argmax(counts))],
        }
    return out


def plot_distribution(summary: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    splits = list(summary)
    names = list(next(iter(summary.values()))["counts"])
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        counts = [summary[split]["counts"][n] for n in names]
        xs = np.arange(len(names)) + i * width
        ax.bar(xs, counts, width, label=f"{split} ({summary[split]['rows']})")
    ax.set_xticks(np.arange(len(names)) + width * (len(splits) - 1) / 2, names)
    ax.set_ylabel("images")
    ax.set_title("FER2013 class distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ferplus_summary(raw: DatasetDict) -> dict:
    """Per split of a source with votes: faces each FER+ mode keeps and drops, and (where the source also has
    FER2013's labels) how often they equal FER+'s majority."""
    out = {}
    for name, split in raw.items():
        votes = votes_of(split)
        info = {"faces": len(split), "modes": ferplus.mode_counts(votes)}
        if "fer2013_label" in split.column_names:
            fer2013 = np.asarray(split["fer2013_label"], dtype=np.int64)
            info["agreement"] = ferplus.agreement(fer2013, ferplus.majority_labels(votes))
        out[name] = info
    return out


def save_dataset(raw: DatasetDict, folder: str | Path, source: str) -> list[Path]:
    """Write each split as `folder/<split>.parquet` (every face, FER+ votes kept) and a dataset card README.md, so
    that `load_fer_dataset(folder)` reads it back and `huggingface-cli upload` makes it a Hub dataset. Written to a
    staging folder and renamed into place: a folder with a README.md is complete."""
    import shutil
    import tempfile

    out = Path(folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FerDataError(f"{out} already exists and is not empty; choose another --save folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        files = []
        for name, split in raw.items():
            split.to_parquet(str(tmp / f"{name}.parquet"))
            files.append(out / f"{name}.parquet")
        (tmp / "README.md").write_text(dataset_card(raw, source))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [*files, out / "README.md"]


def dataset_card(raw: DatasetDict, source: str) -> str:
    """The Hub dataset card of a saved copy: splits, features and where labels and votes come from."""
    votes = has_votes(next(iter(raw.values())))
    configs = "\n".join(f"      - split: {name}\n        path: {name}.parquet" for name in raw)
    rows = "\n".join(f"| {name} | {len(split):,} |" for name, split in raw.items())
    names = next(iter(raw.values())).features["label"].names
    what = (
        "FER+ (Barsoum et al. 2016, arXiv 1608.01041; labels MIT, https://github.com/microsoft/FERPlus): FER2013's "
        "faces, each labelled by 10 crowd taggers. `votes` holds the 10 raw counts in FER+'s order ("
        f"{', '.join(ferplus.VOTE_NAMES)}); `label` is the majority label of the paper's protocol (votes of 1 "
        "removed, more than half of the rest on one of the 8 emotions), -1 where there is none. "
        "`fer_hf.data.ferplus` derives the four training modes' targets from `votes`."
        if votes
        else "FER2013 (Goodfellow et al. 2013, ICML 2013 representation-learning challenge): 48x48 gray faces, "
        "one label each."
    )
    return f"""---
task_categories:
- image-classification
tags:
- facial-expression-recognition
- fer_hf
configs:
  - config_name: default
    data_files:
{configs}
---

# {"FER+" if votes else "FER2013"} (saved by fer_hf)

{what}

Written by `python -m fer_hf.data {source} --save DIR`; `fer_hf.data.load_fer_dataset(DIR)` reads it back.
Labels (`ClassLabel`): {", ".join(names)}.

| split | faces |
|---|---:|
{rows}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf.data", description="Summarise a FER2013 or FER+ source.")
    parser.add_argument(
        "source", help="parquet file/folder, Kaggle CSV, ImageFolder root, FER+ layout folder, 'bundled' or a Hub id"
    )
    parser.add_argument("--classes", default=None, help="class subset name or comma-separated class names")
    parser.add_argument("--votes", default=None, metavar="FILE", help="FER+'s fer2013new.csv for a Kaggle CSV")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--plot", default=None, metavar="FILE.png", help="draw the class distribution")
    parser.add_argument("--save", default=None, metavar="DIR", help="write the source as parquet + a dataset card")
    args = parser.parse_args(argv)
    raw = read_source(args.source, None, args.votes)
    voted = has_votes(next(iter(raw.values())))
    summary = summarize(prepare_splits(raw, args.source, classes=args.classes))  # the files are read once
    extra = ferplus_summary(raw) if voted else {}
    if args.json:
        print(json.dumps({"splits": summary, "ferplus": extra} if voted else summary, indent=2))
    else:
        _print_table(
            summary, "FER+ majority protocol (validation/test always; train in majority mode)" if voted else ""
        )
        if voted:
            _print_ferplus(extra)
    if args.plot:
        plot_distribution(summary, args.plot)
        print(f"class distribution plot written to {args.plot}")
    if args.save:
        files = save_dataset(raw, args.save, args.source)
        print(f"saved {', '.join(map(str, files))}")
    return 0


def _print_table(summary: dict, title: str = "") -> None:
    if title:
        print(title)
    names = list(next(iter(summary.values()))["counts"])
    print(f"{'split':<11}{'rows':>7}" + "".join(f"{n:>10}" for n in names) + "  imbalance")
    for split, info in summary.items():
        counts = "".join(f"{info['counts'][n]:>10}" for n in names)
        print(f"{split:<11}{info['rows']:>7}{counts}  {info['imbalance']}x ({info['largest']}/{info['smallest']})")


def _print_ferplus(extra: dict) -> None:
    print("\nFER+ faces kept / dropped by each training mode (votes of 1 removed as outliers; faces whose target is")
    print("unknown or not-a-face dropped):")
    print(f"{'split':<11}{'faces':>7}" + "".join(f"{mode:>22}" for mode in ferplus.MODES))
    for split, info in extra.items():
        cells = "".join(f"{m['kept']:>13,} / {m['dropped']:<6,}" for m in info["modes"].values())
        print(f"{split:<11}{info['faces']:>7,}{cells}")
    for split, info in extra.items():
        if "agreement" not in info:
            continue
        table = info["agreement"]
        print(f"\n{split}: FER2013's label = FER+'s majority on {table['all']['share']:.1%} of "
              f"{table['all']['faces']:,} faces with both")  # fmt: skip
        print("  " + "  ".join(f"{name} {row['share']:.1%} ({row['faces']:,})" for name, row in table.items()
                               if name != "all"))  # fmt: skip
    if not any("agreement" in info for info in extra.values()):
        print(
            "(no FER2013 labels in this source: a Kaggle fer2013.csv with fer2013new.csv has both, for the agreement"
        )
        print(" table between FER2013's label and FER+'s majority)")
