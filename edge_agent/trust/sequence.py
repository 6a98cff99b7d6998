"""A per-device sequence number that only ever increases, across restarts and crashes.

Numbers are *reserved* in blocks: before handing out any number from ``[h, h + block)`` the
store durably writes the new high-water mark ``h + block`` (write to a temp file, ``fsync``,
``rename``, ``fsync`` the directory — the POSIX recipe for an atomic, durable replace). After a
crash the next process starts at the persisted mark, so a number is never reused; at worst the
rest of one block is skipped. A verifier therefore sees gaps, never repeats.

The file holds one decimal integer: the first number *not* yet reserved. A second process
opening the same file is refused (``flock`` on ``<file>.lock``): two signers sharing one counter
would interleave blocks and, after a crash, could reuse numbers.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from ..durable import write_atomically
from ..errors import SequenceError

__all__ = ["SequenceStore", "DEFAULT_BLOCK"]

# One fsync per 1000 verdicts: a few µs amortised; a crash skips at most 999 numbers.
DEFAULT_BLOCK = 1000


class SequenceStore:
    """``next()`` returns 1, 2, 3, ... (strictly increasing for the life of the file)."""

    def __init__(self, path: Path, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = Path(path)
        self.block = block
        self._lock = threading.Lock()
        self._lock_fd = -1
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SequenceError(
                f"another process is signing with {self.path}; one state directory serves one agent process"
            ) from None
        self._lock_fd = fd
        try:
            self._next = self._read_mark()
        except SequenceError:
            self.close()
            raise
        self._limit = self._next  # nothing reserved by this process yet

    def _read_mark(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 1
        except OSError as exc:
            raise SequenceError(f"cannot read sequence file {self.path}: {exc.strerror}") from None
        if not text.isdigit() or int(text) < 1:
            # Never guess: restarting from a smaller number would reuse sequence numbers and
            # make every collector reject this device's verdicts as replays.
            raise SequenceError(
                f"sequence file {self.path} holds {text[:40]!r}, not a positive integer; restore it from "
                "backup or set it above the last sequence number the collector saw"
            )
        return int(text)

    def next(self) -> int:
        with self._lock:
            if self._next >= self._limit:
                new_limit = self._next + self.block
                try:
                    write_atomically(self.path, f"{new_limit}\n".encode("ascii"))
                except OSError as exc:
                    raise SequenceError(f"cannot reserve sequence numbers in {self.path}: {exc.strerror}") from None
                self._limit = new_limit
            value = self._next
            self._next += 1
            return value

    def close(self) -> None:
        """Release the process lock (numbers already reserved are simply skipped)."""
        fd, self._lock_fd = getattr(self, "_lock_fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "SequenceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @property
    def reserved_until(self) -> int:
        """The persisted high-water mark (first number not reserved)."""
        return self._limit
