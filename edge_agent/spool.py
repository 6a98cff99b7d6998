"""The spool: where every ingestion path leaves an accepted image, durably, before saying "yes".

Layout under ``<state_dir>/spool``::

    <sha256>.<ext>         the image, named by the SHA-256 of its bytes (the commit point)
    <sha256>.meta.json     where it came from: source, display name, time accepted
    .tmp/                  files being written; never read by the worker

Accepting a file streams it into ``.tmp`` while hashing (memory stays bounded whatever the size),
fsyncs it, renames it to ``<sha256>.<ext>`` and fsyncs the folder: after :meth:`Spool.accept_file`
returns, the image survives a ``kill -9`` or a power cut. Content addressing makes a retry harmless:
the same bytes submitted twice are one queued item.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import IngestError

__all__ = ["Spool", "SpoolItem", "fsync_dir", "durable_copy"]

log = logging.getLogger(__name__)

_ITEM = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,8})$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_CHUNK = 1 << 20
_STALE_TMP_SECONDS = 600.0
# Group-readable: `edge-agent submit` may run as the firmware's account, in the agent's group.
_FILE_MODE = 0o640


@dataclass(frozen=True)
class SpoolItem:
    """One accepted image waiting to be judged."""

    sha256: str
    path: Path
    source: str = "unknown"
    name: str = ""
    accepted_at: str = ""

    @property
    def display(self) -> str:
        return self.name or self.path.name


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: the entry lives in the folder)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> str:
    h = hashlib.sha256()
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        dst.write(chunk)
    dst.flush()
    os.fsync(dst.fileno())
    return h.hexdigest()


def durable_copy(src: Path, dst: Path) -> None:
    """Place a copy of ``src`` at ``dst`` atomically and durably (hard link when on one filesystem)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
                _copy_hashing(inp, out)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    fsync_dir(dst.parent)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ext_for(name: str, default: str = "bin") -> str:
    ext = Path(name).suffix.lower().lstrip(".")
    return ext if _EXT.match(ext) else default


class Spool:
    """A folder of durably accepted images; shared by the agent and ``edge-agent submit``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tmp = directory / ".tmp"
        self.arrived = threading.Event()  # set when this process accepts an image
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"spool folder {directory} cannot be created: {exc.strerror}") from None

    def accept_file(self, path: Path, source: str, name: str | None = None, ext: str | None = None) -> SpoolItem:
        """Copy ``path`` into the spool durably; returns the (possibly already queued) item.

        Raises :class:`IngestError` if the file cannot be read, changed while being read, or the
        spool cannot be written (disk full, permissions).
        """
        try:
            # O_NONBLOCK: opening a FIFO must not hang the caller; regular files ignore it.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise IngestError(f"{path}: cannot be read ({exc.strerror}); nothing was queued") from None
        with os.fdopen(fd, "rb") as src:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise IngestError(f"{path}: not a regular file; nothing was queued")
            return self._accept_stream(src, source, name or path.name, ext or _ext_for(path.name), path, before)

    def _accept_stream(
        self, src: BinaryIO, source: str, name: str, ext: str, origin: Path, before: os.stat_result
    ) -> SpoolItem:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
        except OSError as exc:
            raise IngestError(f"spool {self.directory} cannot be written ({exc.strerror}); nothing was queued") from None
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), _FILE_MODE)
                sha = _copy_hashing(src, out)
            after = os.fstat(src.fileno())  # the same inode grew or was rewritten while we read it
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise IngestError(f"{origin}: changed while it was being read; try again once it is complete")
            existing = self.find(sha)
            if existing is not None:
                tmp.unlink()
                log.info("%s: already queued as %s", name, existing.name)
                return self._item(existing)
            meta = {"source": source, "name": name, "accepted_at": _utc_now()}
            self._write_meta(sha, meta)
            final = self.directory / f"{sha}.{ext}"
            os.replace(tmp, final)
            fsync_dir(self.directory)  # the durability point: the rename itself is on disk
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IngestError(f"spool {self.directory} cannot be written ({exc.strerror}); nothing was queued") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("queued %s from %s as %s", name, source, final.name)
        self.arrived.set()
        return SpoolItem(sha, final, source, name, meta["accepted_at"])

    def _write_meta(self, sha: str, meta: dict[str, str]) -> None:
        # Written before the image; the image's rename and the folder fsync commit both.
        fd, tmp = tempfile.mkstemp(dir=self._tmp, suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / f"{sha}.meta.json")

    def find(self, sha: str) -> Path | None:
        for p in self.directory.glob(f"{sha}.*"):
            if _ITEM.match(p.name):
                return p
        return None

    def pending(self) -> list[SpoolItem]:
        """Queued items, oldest first."""
        found: list[tuple[int, str, Path]] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            log.error("spool %s cannot be listed: %s", self.directory, exc.strerror)
            return []
        for e in entries:
            if _ITEM.match(e.name):
                try:
                    found.append((e.stat().st_mtime_ns, e.name, Path(e.path)))
                except FileNotFoundError:
                    continue
        return [self._item(p) for _, _, p in sorted(found)]

    def _item(self, path: Path) -> SpoolItem:
        m = _ITEM.match(path.name)
        assert m is not None
        sha = m.group(1)
        try:
            meta = json.loads((self.directory / f"{sha}.meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        return SpoolItem(sha, path, str(meta.get("source", "unknown")), str(meta.get("name", "")),
                         str(meta.get("accepted_at", "")))

    def remove(self, item: SpoolItem) -> None:
        """Forget an item once its verdict is recorded (or it was judged before)."""
        item.path.unlink(missing_ok=True)
        (self.directory / f"{item.sha256}.meta.json").unlink(missing_ok=True)
        (self.directory / f"{item.sha256}.attempts.txt").unlink(missing_ok=True)
        fsync_dir(self.directory)

    def count_attempt(self, item: SpoolItem) -> int:
        """Record that judging ``item`` starts; returns how many times it has started.

        A file that crashes a native decoder would otherwise crash the restarted agent forever.
        """
        marker = self.directory / f"{item.sha256}.attempts.txt"
        try:
            n = int(marker.read_text() or "0") + 1
        except (OSError, ValueError):
            n = 1
        try:
            marker.write_text(str(n))  # survives a process crash; fsync would only matter for power loss
        except OSError as exc:
            log.warning("%s: cannot record the attempt (%s)", item.path.name, exc.strerror)
        return n

    def clean_stale(self) -> None:
        """Drop half-written temporary files and metadata whose image never arrived."""
        now = time.time()
        for p in self._tmp.iterdir():
            try:
                if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    p.unlink()
            except OSError:
                continue
        for p in self.directory.glob("*.meta.json"):
            sha = p.name.split(".", 1)[0]
            try:
                if self.find(sha) is None and now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    p.unlink()
            except OSError:
                continue
