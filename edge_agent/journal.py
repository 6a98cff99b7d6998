"""Where verdicts go: the ``VerdictSink`` interface and its first implementation, the journal.

A sink receives one :class:`JudgedImage` per accepted image (all its frames' verdicts together)
and must have made it durable when ``record`` returns. Later sinks (an MQTT outbox, a signing
stage in front of it) implement the same two methods.

The journal is an append-only JSON-lines file, one line per image, fsync'd per line. It is also
the agent's ledger of what has been judged: an image whose SHA-256 is in the journal is never
judged again, which makes the spool's crash window (verdict written, spool item not yet deleted)
and repeated submissions harmless. A line torn by a crash mid-write is dropped on open.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import IngestError
from .spool import fsync_dir
from .verdict import Verdict

__all__ = ["JudgedImage", "VerdictSink", "Journal", "JOURNAL_SCHEMA"]

log = logging.getLogger(__name__)

JOURNAL_SCHEMA = 1


@dataclass(frozen=True)
class JudgedImage:
    """Everything the agent concluded about one accepted image."""

    sha256: str
    source: str  # "hook" | "dicom" | "hot_folder" | "unknown"
    name: str  # the name the image arrived under (file name, or the calling AE for C-STORE)
    accepted_at: str
    judged_at: str
    verdicts: tuple[Verdict, ...]
    quarantined: str | None = None  # where an unreadable file was moved

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or not all(c in "0123456789abcdef" for c in self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} must be 64 lower-case hex digits")
        if not self.verdicts:
            raise ValueError("a judged image has at least one verdict")

    @property
    def unreadable(self) -> bool:
        return any(v.verdict == "unreadable" for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": JOURNAL_SCHEMA,
            "sha256": self.sha256,
            "source": self.source,
            "name": self.name,
            "accepted_at": self.accepted_at,
            "judged_at": self.judged_at,
            "quarantined": self.quarantined,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


class VerdictSink(Protocol):
    def record(self, judged: JudgedImage) -> None:
        """Make ``judged`` durable; raise :class:`IngestError` if that is impossible."""
        ...

    def close(self) -> None: ...


class Journal:
    """Append-only, fsync'd JSON lines; also answers "was this image judged already?"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._judged = self._load_and_repair()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            fsync_dir(path.parent)  # a new journal's own directory entry must survive too
        except OSError as exc:
            raise IngestError(f"verdict journal {path} cannot be opened: {exc.strerror}") from None

    def _load_and_repair(self) -> set[str]:
        judged: set[str] = set()
        if not self.path.exists():
            return judged
        good_end = 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn by a crash mid-append: the image is still in the spool
                good_end += len(line)
                try:
                    judged.add(str(json.loads(line)["sha256"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("verdict journal %s: skipping a line that is not a record", self.path)
        if good_end != self.path.stat().st_size:
            log.warning("verdict journal %s: dropping a torn last line (the agent stopped mid-write)", self.path)
            with self.path.open("r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        return judged

    def judged(self, sha256: str) -> bool:
        return sha256 in self._judged

    def record(self, judged: JudgedImage) -> None:
        line = json.dumps(judged.to_dict(), separators=(",", ":"), allow_nan=False).encode() + b"\n"
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            try:  # leave no partial line for the next append to glue onto
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise IngestError(f"verdict journal {self.path} cannot be written: {exc.strerror}") from None
        self._judged.add(judged.sha256)

    def close(self) -> None:
        os.close(self._fd)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
