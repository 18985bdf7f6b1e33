"""`load_fer_dataset`: any copy of FER2013 or FER+ -> the DatasetDict that training and evaluation read (see
`fer_hf.data.sources` for the copies it reads, `fer_hf.data.splits` for what happens after reading)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict

from fer_hf.data.sources import FerDataError, has_votes, read_source
from fer_hf.data.splits import add_validation_split, apply_ferplus_mode, select_classes


def load_fer_dataset(
    source: str | Path,
    *,
    classes: str | Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    revision: str | None = None,
    ferplus_mode: str | None = "majority",
    votes: str | Path | None = None,
) -> DatasetDict:
    """Load any common copy of FER2013 or FER+ as a DatasetDict with `train`, `validation` (and maybe `test`).

    Args:
        source: parquet file/folder, Kaggle CSV, ImageFolder root, FER+ layout folder, "bundled" (the package's
            sample) or a Hub id.
        classes: a subset name from `fer_hf.labels.CLASS_SUBSETS` or class names; relabelled 0..K-1.
        validation_fraction: share of train carved out (stratified) when the source has no validation split.
        seed: seed of that split.
        revision: Hub revision, for Hub ids only.
        ferplus_mode: for a source with votes, the training mode whose faces `train` keeps (`fer_hf.data.ferplus.MODES`);
            validation and test always keep the majority protocol's (the paper's test protocol). `label` is the
            mode's top emotion. None keeps every face, `label` -1 where the majority protocol has none (the raw
            votes, as `python -m fer_hf.data --save` writes them).
        votes: a Kaggle CSV's FER+ vote file (fer2013new.csv), when it is not beside the CSV.
    """
    return prepare_splits(read_source(str(source), revision, votes), source, classes, validation_fraction, seed,
                          ferplus_mode)  # fmt: skip


def prepare_splits(
    dd: DatasetDict,
    source: str | Path,
    classes: str | Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    ferplus_mode: str | None = "majority",
) -> DatasetDict:
    """`load_fer_dataset`'s steps after reading: a validation split where there is none, FER+'s mode, the subset."""
    for name, split in dd.items():
        if len(split) == 0:
            raise FerDataError(f"{source}: split {name!r} is empty; every split needs at least one image")
    if "train" in dd and "validation" not in dd:
        dd = add_validation_split(dd, validation_fraction, seed)  # (an evaluation-only copy has no train)
    if ferplus_mode is not None and has_votes(next(iter(dd.values()))):
        dd = apply_ferplus_mode(dd, ferplus_mode)  # after the carve: a carved validation split is scored by majority
    if classes is not None:
        dd = select_classes(dd, classes)
    return dd


def load_split(source: str, split: str | None, classes: str | None = None) -> tuple[str, Dataset]:
    """One split of SOURCE (default: validation, or the only split). A single file is used whole."""
    file = Path(source).expanduser()
    if file.is_file():
        if file.suffix == ".parquet" and pq.read_metadata(file).num_rows == 0:
            raise FerDataError(f"{file}: the parquet file is empty; nothing to evaluate")
        dd = read_source(str(file), None)  # used whole: no validation split carved out of a single file
        dd = select_classes(dd, classes) if classes else dd
    else:
        dd = load_fer_dataset(source, classes=classes)
    name = split or ("validation" if "validation" in dd or len(dd) > 1 else next(iter(dd)))
    if name not in dd:
        raise FerDataError(f"{source}: no split {name!r}; it has {list(dd)} (choose one with --split)")
    ds = dd[name]
    if len(ds) == 0:
        raise FerDataError(f"{source}: split {name!r} is empty; nothing to evaluate")
    return name, ds
