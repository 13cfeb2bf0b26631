"""Files on local disk that several processes of one data folder share.

A reader must only ever see a whole file, and processes that update the same file must take
turns: the registry snapshot and the compact geo data both live in ``EVOTHESIS_DATA_DIR``,
which every collector worker of a deployment shares.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["locked", "replace_file"]


def replace_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole:
    a temporary file, fsync'ed, renamed over it, the folder fsync'ed. The file gets
    ``mode`` less the umask: by default readable by its owner only (the registry snapshot
    holds secrets)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # one left by a crash would keep its old mode
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock file (``path`` + ``.lock``, never removed: removing it would let
    two processes lock two different files): one holder at a time across processes."""
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
