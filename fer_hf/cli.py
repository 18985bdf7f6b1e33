"""One ending for bad input in every `python -m fer_hf.<command>`: exit code 2 and one `error: ...` line naming the
file, row or key and what was expected; a traceback only with `--debug` (or FER_HF_DEBUG=1).

    if __name__ == "__main__":
        sys.exit(run(main))

The commands' own error types (RecipeError, FerDataError, ModelLoadError, ...) are ValueErrors or RuntimeErrors
with such messages; files that cannot be read raise OSError; weights that cannot be read raise safetensors' or
pickle's errors. Anything else is a bug and keeps its traceback. Imports nothing heavy (the runtime uses it).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence

DEBUG_ENV = "FER_HF_DEBUG"


def positive_int(text: str) -> int:
    """argparse type of every --batch-size: an integer >= 1 (a batch of 0 would loop forever or divide by zero, and
    torch's split(0) crashes deep inside inference), refused by argparse with a sentence (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ValueError, OSError, pickle.UnpicklingError]
    from fer_hf.runlock import RunLockError  # light, and imported here so that cli stays first to load

    errors.append(RunLockError)
    for module, name in (("fer_hf.inference.faces", "DetectorError"), ("safetensors", "SafetensorError")):
        found = sys.modules.get(module)  # only types of modules the command has imported can have been raised
        if found is not None and hasattr(found, name):
            errors.append(getattr(found, name))
    return tuple(errors)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """main(argv) with `--debug` taken out; a user error becomes one `error:` line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    from fer_hf.logs import setup_logging  # light: the runtime's light install uses cli.run too

    setup_logging(logging.DEBUG if debug else logging.INFO)  # the library's lines; training refines it per process
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug or not isinstance(err, _user_errors()):
            raise
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message held
        print(f"error: {message} (run with --debug for the traceback)", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # 2, or an error's own (a failed export parity check: 1)
