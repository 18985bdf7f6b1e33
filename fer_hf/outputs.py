"""Output folders that never destroy their inputs: shared by every command that writes a folder."""

from __future__ import annotations

from pathlib import Path


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
