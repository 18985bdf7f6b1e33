"""One logger for the package, set once per process: what the library says goes through `logging` (commands print
only their results), at the level the Trainer gives each process, so that under `accelerate launch` the main
process speaks and the others keep to warnings, without hand-made rank checks. Progress bars stay on tqdm.

    from fer_hf.logs import get_logger
    logger = get_logger(__name__)
    logger.info("written to %s", out)
"""

from __future__ import annotations

import logging
import sys

ROOT = "fer_hf"


class _CurrentStdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a record is emitted (pytest's capture, a redirect), like print."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):  # noqa: D102  (logging.StreamHandler reads self.stream)
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the current stdout is used instead
        pass


def get_logger(name: str) -> logging.Logger:
    """A logger under fer_hf's; messages appear once `setup_logging` ran (every command's entry does, via cli.run)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """fer_hf's messages at `level`: to stdout as plain lines, unless the application configured logging itself (the
    root logger has handlers: theirs show the messages, which still propagate). Idempotent."""
    logger = logging.getLogger(ROOT)
    configured = logging.getLogger().handlers
    if not configured and not any(isinstance(h, _CurrentStdout) for h in logger.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    return logger


def setup_process_logging(training_args) -> int:
    """The level `TrainingArguments.get_process_log_level()` gives this process (main: log_level, replicas:
    log_level_replica), for fer_hf, datasets and transformers alike, as the Hugging Face example scripts do."""
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    # log_level "passive" (the default) leaves the libraries at warning; fer_hf's own lines (the summary, where the
    # run went) speak for the whole run, so they show once: on the first process of the first machine.
    first = training_args.process_index == 0
    ours = (logging.INFO if training_args.log_level == "passive" else level) if first else max(level, logging.WARNING)
    setup_logging(ours)
    return ours
