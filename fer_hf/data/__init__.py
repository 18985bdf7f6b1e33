"""FER2013 and FER+ as `datasets` data, and the faces as model input.

    sources.py     every copy people have (parquet, Kaggle CSV, ImageFolder, FER+ layout, Hub id) -> splits
    dataset.py     load_fer_dataset: a source -> DatasetDict train/validation[/test], ready to train on
    splits.py      carving a validation split, FER+'s vote modes, class subsets, counts and weights
    ferplus.py     FER+'s vote arithmetic (FERPlus's _process_data/_process_target), numpy only
    images.py      image arrays of any depth -> 8-bit (numpy + Pillow only: the light install uses it)
    transforms.py  decoding and the batch transform: uint8 faces -> a model's normalised input (torch)
    summary.py     `python -m fer_hf.data SOURCE`: counts, plot, --save as parquet with a dataset card

Nothing is imported until it is used, so `fer_hf.data.images` stays free of `datasets` and torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_fer_dataset": "fer_hf.data.dataset",
    "prepare_splits": "fer_hf.data.dataset",
    "FerDataError": "fer_hf.data.sources",
    "read_source": "fer_hf.data.sources",
    "main": "fer_hf.data.summary",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fer_hf.data' has no attribute {name!r}")


__all__ = list(_LAZY)
