"""What a loaded DatasetDict becomes before training: a carved validation split, FER+'s mode applied, a class
subset, class counts and weights. Every function reads labels through Arrow and never decodes an image."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from datasets import Dataset, DatasetDict, Features, Value

from fer_hf.data import ferplus
from fer_hf.data.sources import EXTRA_COLUMNS, FerDataError, fer_features, labels_of, votes_of
from fer_hf.labels import FERPLUS_LABELS, resolve_classes


def add_validation_split(dd: DatasetDict, fraction: float, seed: int) -> DatasetDict:
    """Carve a stratified, seeded validation split out of train; both parts keep the original row order.

    Each class gives round(fraction * n_class) rows (at least 1, and never its last one), so the class
    proportions of both parts match train's.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    labels = labels_of(dd["train"])
    rng = np.random.default_rng(seed)
    chosen, alone = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        k = min(max(1, round(fraction * len(rows))), len(rows) - 1)
        chosen.append(rng.choice(rows, size=k, replace=False))
        if k == 0:
            alone.append(label)
    names = dd["train"].features["label"].names
    if sum(len(c) for c in chosen) == 0:
        raise FerDataError(
            f"{dd['train'].info.description or 'train'}: no class has 2 or more faces, so no validation split can be "
            "carved out of train; give a source with a validation split, or more faces per class"
        )
    if alone:
        warnings.warn(
            f"validation split: {[names[i] if 0 <= i < len(names) else int(i) for i in alone]} have one training "
            "face each, kept in train: the validation split has none of them",
            stacklevel=2,
        )
    is_validation = np.zeros(len(labels), dtype=bool)
    is_validation[np.concatenate(chosen)] = True
    out = DatasetDict(
        {
            "train": dd["train"].select(np.flatnonzero(~is_validation)),
            "validation": dd["train"].select(np.flatnonzero(is_validation)),
        }
    )
    if "test" in dd:
        out["test"] = dd["test"]
    return out


def apply_ferplus_mode(dd: DatasetDict, mode: str) -> DatasetDict:
    """Keep the faces FER+'s protocol keeps: train's under `mode`, validation's and test's under the majority
    protocol (the paper's test protocol), each labelled with its target's top emotion."""
    try:
        ferplus.check_mode(mode)
    except ValueError as err:
        raise FerDataError(str(err)) from None
    out = {}
    for name, split in dd.items():
        dist, kept = ferplus.vote_distributions(votes_of(split), mode if name == "train" else "majority")
        split = split.select(np.flatnonzero(kept)).remove_columns("label")
        split = split.add_column("label", dist[kept].argmax(axis=1).tolist())
        columns = ["image", "label", *[c for c in EXTRA_COLUMNS if c in split.column_names]]
        out[name] = split.select_columns(columns).cast(split_features(split, FERPLUS_LABELS))
        out[name].info.description = dd[name].info.description
    return DatasetDict(out)


def split_features(ds: Dataset, names: Sequence[str]) -> Features:
    """`ds`'s features with its label set replaced by `names` (FER+ columns kept)."""
    return fer_features(names, [c for c in EXTRA_COLUMNS if c in ds.column_names])


def select_classes(dd: DatasetDict, classes: str | Sequence[str]) -> DatasetDict:
    """Keep only `classes` and relabel them contiguously 0..K-1 in canonical order (with matching names)."""
    names = resolve_classes(classes)
    current = next(iter(dd.values())).features["label"].names
    missing = [n for n in names if n not in current]
    if missing:
        raise FerDataError(f"class subset {list(names)}: {missing} not in this dataset's labels {current}")
    old_ids = [current.index(n) for n in names]
    mapping = np.full(len(current), -1, dtype=np.int64)
    mapping[old_ids] = np.arange(len(names))
    out = {}
    for split_name, split in dd.items():
        keep = np.flatnonzero(np.isin(labels_of(split), old_ids))
        if keep.size == 0:
            raise FerDataError(f"split {split_name!r} has no images of classes {list(names)}")
        split = split.select(keep).cast_column("label", Value("int64"))
        split = split.map(lambda b: {"label": mapping[np.asarray(b["label"])]}, batched=True, desc="relabel")
        out[split_name] = split.cast(split_features(split, names))
    return DatasetDict(out)


def class_counts(ds: Dataset) -> list[int]:
    names = ds.features["label"].names
    return np.bincount(labels_of(ds), minlength=len(names)).tolist()


def class_weights(ds: Dataset) -> list[float]:
    """Inverse-frequency weights N / (K * n_c): a balanced dataset gets 1.0 for every class."""
    counts = np.asarray(class_counts(ds), dtype=np.float64)
    if (counts == 0).any():
        empty = [ds.features["label"].names[i] for i in np.flatnonzero(counts == 0)]
        raise FerDataError(f"no training images of {empty}: cannot weight classes by inverse frequency")
    return (counts.sum() / (len(counts) * counts)).tolist()
