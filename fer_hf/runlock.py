"""One training at a time per output folder: a lock file made atomically, naming the PID and host that hold it.

    with run_lock(output_dir):      # RunLockError while another live training writes there
        trainer.train()

A lock left by a process that is gone (killed with -9, a crashed machine) is taken over when it names this host
and its PID is not running; a lock of another host is never taken over silently (shared disks), the message says
which file to delete. Only the main process of a distributed run locks (RANK 0 or not distributed).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".fer_hf_training.lock"


class RunLockError(RuntimeError):
    """The output folder is being written by another training, or cannot be written at all."""


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Create `folder` (checking that it can be written), hold its lock while the block runs, release it after."""
    if not _main_process():
        yield
        return
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunLockError(f"{folder}: cannot create the output folder ({err.strerror or err})") from None
    lock = folder / LOCK_FILE
    _acquire(lock)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()


def _acquire(lock: Path) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(lock)
            if holder.get("host") == record["host"] and not _alive(int(holder.get("pid", -1))):
                lock.unlink(missing_ok=True)  # its process is gone: the lock is stale
                continue
            raise RunLockError(
                f"{lock.parent} is being written by another training (PID {holder.get('pid')} on host "
                f"{holder.get('host')}, since {holder.get('since')}); wait for it, choose another "
                f"--training.output_dir, or delete {lock} if that training is gone"
            ) from None
        except OSError as err:
            raise RunLockError(f"{lock.parent}: the output folder cannot be written ({err.strerror or err})") from None
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
        return
    raise RunLockError(f"{lock}: could not take the lock")


def _read(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
