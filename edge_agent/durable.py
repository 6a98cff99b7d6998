"""Durable file replacement: the POSIX recipe every state file of the agent and the trust tools uses.

Write a temporary file beside the target, ``fsync`` it, ``rename`` it over the target, ``fsync``
the folder (POSIX.1-2017 ``rename()``: the replacement is atomic; the folder's ``fsync`` makes the
new entry survive a power cut). A crash leaves the old file or the whole new one, never half.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomically"]


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: the entry lives in the folder)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` (permissions ``mode``, private by default) so that a crash or
    power cut leaves the old file or the whole new one: a temporary file beside it, fsync, rename,
    fsync of the folder. The temporary name is unique, so two writers never share one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
