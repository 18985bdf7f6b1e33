"""Hugging Face Hub repository ids (`owner/name`), told apart from local paths: the one check that data sources,
recipes, model cards and the Space use."""

from __future__ import annotations

import re
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name
FILE_SUFFIXES = (".csv", ".parquet", ".zip", ".tar", ".gz", ".png", ".jpg", ".yaml", ".json")


def is_hub_id(ref: str | Path | None) -> bool:
    """`owner/name` with no file suffix that is not a file or folder here: a Hub repository, not a relative path."""
    text = str(ref or "")
    return (
        bool(HUB_ID.fullmatch(text))
        and not text.lower().endswith(FILE_SUFFIXES)
        and not Path(text).expanduser().exists()
    )
