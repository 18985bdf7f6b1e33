"""Output folders that never destroy their inputs: shared by every command that writes a folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(ValueError):
    """An output folder that already holds something, written over only when the user asks (--overwrite)."""


class OutputOverlapError(ValueError):
    """An output folder that is, contains or lies inside one of the command's inputs."""


def check_apart(
    output: str | Path, *inputs: str | Path | None, flag: str = "--output", fix: str = "choose a folder outside it"
) -> None:
    """Refuse an output that is, contains or lies inside an input: replacing it (--overwrite) would delete the
    input, and writing into it would mix results with what the user had. `fix`: the end of the sentence (a file
    output is not a folder)."""
    out = Path(output).expanduser().resolve()
    for item in inputs:
        if item is None or not Path(item).expanduser().exists():
            continue  # a Hub id or a bundled name is not a folder of the user's
        src = Path(item).expanduser().resolve()
        if out == src or out in src.parents or src in out.parents:
            raise OutputOverlapError(
                f"{flag} {output} overlaps the input {item}: it would be replaced or mixed with it; {fix}"
            )


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out` in one rename, on error it is removed."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out} already exists and is not empty; choose another --output or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # move the old folder aside first: a directory rename cannot replace a non-empty one
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
