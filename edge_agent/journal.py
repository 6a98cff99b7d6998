"""Where verdicts go: the ``VerdictSink`` interface and its first implementation, the journal.

A sink receives one :class:`JudgedImage` per accepted image (all its frames' verdicts together)
and must have made it durable when ``record`` returns. Later sinks (an MQTT outbox, a signing
stage in front of it) implement the same two methods.

The journal is an append-only JSON-lines file, one line per image, fsync'd per line. It is also
the agent's ledger of what has been judged: an image whose SHA-256 is in the retained journal is
not judged again, which makes the spool's crash window (verdict written, spool item not yet
deleted) and repeated submissions harmless. A line torn by a crash mid-write is dropped on open.

Rotation keeps the disk and the memory bounded on an agent that runs for years. When the next
line would take the active file past ``max_bytes`` (``journal_rotation.max_bytes``), it is renamed
``verdicts.jsonl.1``, older files move up one (``.1`` -> ``.2`` ...), the one past ``keep``
(``journal_rotation.keep``) is deleted, and a new active file is started; every rename is followed
by an fsync of the folder, so a crash or power cut mid-rotation leaves each file whole, at worst
with a gap in the numbering. The de-duplication memory holds exactly the SHA-256s of the retained
files (read from them at start), so an image repeated after its verdict has left the retained
journal is judged again and gets a new line. A line is about 1-1.5 KB for a single-frame image
(more for multi-frame: one verdict per frame), so the defaults (32 MiB x 5 files) remember
100,000-150,000 images. Measured with 150,000 lines of 1.1 KB: 22 MB of memory (a 32-byte digest
per image in a set) and 1.1 s to read them at start on a busy two-core machine.
Rotated files are never modified: only the active file is repaired after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import IngestError
from .durable import fsync_dir
from .verdict import Verdict

__all__ = ["JudgedImage", "VerdictSink", "Journal", "JOURNAL_SCHEMA", "DEFAULT_MAX_BYTES", "DEFAULT_KEEP"]

log = logging.getLogger(__name__)

JOURNAL_SCHEMA = 1
DEFAULT_MAX_BYTES = 32 << 20
DEFAULT_KEEP = 4


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
    """Append-only, fsync'd, size-rotated JSON lines; also answers "was this image judged already?"."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes < 1 or keep < 1:
            raise ValueError(f"max_bytes ({max_bytes}) and keep ({keep}) must be at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # index -> SHA-256 digests in verdicts.jsonl.<index>; follows the files on disk step by step
            self._rotated: dict[int, set[bytes]] = {
                i: _shas_in(self._rotated_path(i)) for i in range(1, keep + 1) if self._rotated_path(i).exists()
            }
            self._active = self._load_and_repair()
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            fsync_dir(path.parent)  # a new journal's own directory entry must survive too
        except OSError as exc:
            raise IngestError(f"verdict journal {path} cannot be opened: {exc.strerror}") from None
        log.info("verdict journal %s: %d judged image(s) remembered from %d file(s)", path,
                 len(self._active) + sum(map(len, self._rotated.values())), 1 + len(self._rotated))

    def _rotated_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _load_and_repair(self) -> set[bytes]:
        judged: set[bytes] = set()
        if not self.path.exists():
            return judged
        good_end = 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn by a crash mid-append: the image is still in the spool
                good_end += len(line)
                sha = _sha_of(line)
                if sha is None:
                    log.warning("verdict journal %s: skipping a line that is not a record", self.path)
                else:
                    judged.add(sha)
        if good_end != self.path.stat().st_size:
            log.warning("verdict journal %s: dropping a torn last line (the agent stopped mid-write)", self.path)
            with self.path.open("r+b") as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        return judged

    def judged(self, sha256: str) -> bool:
        """Whether the retained journal (the active and the rotated files) holds ``sha256``."""
        try:
            digest = bytes.fromhex(sha256)
        except ValueError:
            return False
        return digest in self._active or any(digest in shas for shas in self._rotated.values())

    def record(self, judged: JudgedImage) -> None:
        line = json.dumps(judged.to_dict(), separators=(",", ":"), allow_nan=False).encode() + b"\n"
        try:
            size = os.fstat(self._fd).st_size
            if size > 0 and size + len(line) > self.max_bytes:
                self._rotate()
        except OSError as exc:
            raise IngestError(
                f"verdict journal {self.path} cannot be rotated ({exc.strerror}); the verdict was not recorded"
            ) from None
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
        self._active.add(bytes.fromhex(judged.sha256))

    def _rotate(self) -> None:
        """verdicts.jsonl -> .1 -> .2 ... -> .<keep>, the one past it deleted; a folder fsync per step.

        Each step leaves whole files behind, so a crash anywhere in here loses no line; the
        in-memory index follows each step once it is made.
        """
        folder, name = self.path.parent, self.path.name
        beyond = [p for p in folder.iterdir() if _index(p, name) >= self.keep]
        for p in beyond:  # the oldest kept file, and any left from a larger `keep`
            p.unlink()
            self._rotated.pop(_index(p, name), None)
        if beyond:
            fsync_dir(folder)
        for i in range(self.keep - 1, 0, -1):
            if self._rotated_path(i).exists():
                os.replace(self._rotated_path(i), self._rotated_path(i + 1))
                fsync_dir(folder)
                self._rotated[i + 1] = self._rotated.pop(i, set())
        if self.path.exists():  # absent only after a rotation that could not create the new file
            os.replace(self.path, self._rotated_path(1))
            fsync_dir(folder)
            self._rotated[1], self._active = self._active, set()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        os.close(self._fd)
        self._fd = fd
        fsync_dir(folder)
        log.info("verdict journal %s rotated; %d older file(s) kept", self.path, len(self._rotated))

    def close(self) -> None:
        os.close(self._fd)


# The top-level sha256 is the second key of every line this module writes (to_dict's order).
_LINE_START = re.compile(rb'^\{"schema":\d+,"sha256":"([0-9a-f]{64})"')


def _sha_of(line: bytes) -> bytes | None:
    m = _LINE_START.match(line)
    if m is not None:
        return bytes.fromhex(m.group(1).decode())
    try:  # a line written some other way (by hand, by an older agent): parse it whole
        return bytes.fromhex(str(json.loads(line)["sha256"]))
    except (ValueError, KeyError, TypeError):
        return None


def _shas_in(path: Path) -> set[bytes]:
    shas: set[bytes] = set()
    with path.open("rb") as f:
        for line in f:
            sha = _sha_of(line)
            if sha is not None:
                shas.add(sha)
    return shas


def _index(path: Path, active_name: str) -> int:
    """``verdicts.jsonl.3`` -> 3; anything else (``verdicts.jsonl.bak``) -> -1, never touched."""
    if not path.name.startswith(active_name + "."):
        return -1
    suffix = path.name[len(active_name) + 1:]
    return int(suffix) if suffix.isdigit() and not suffix.startswith("0") else -1


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
