"""The spool: where every ingestion path leaves an accepted image, durably, before saying "yes".

Layout under ``<state_dir>/spool``::

    <sha256>.<ext>         the image, named by the SHA-256 of its bytes (the commit point)
    <sha256>.meta.json     where it came from: source, display name, time accepted
    .tmp/                  files being written; never read by the worker

Accepting a file streams it into ``.tmp`` while hashing (memory stays bounded whatever the size),
fsyncs it, renames it to ``<sha256>.<ext>`` and fsyncs the folder: after :meth:`Spool.accept_file`
returns, the image survives a ``kill -9`` or a power cut. Content addressing makes a retry harmless:
the same bytes submitted twice are one queued item. A writer that can put its file in
:attr:`Spool.temp_dir` itself (the C-STORE SCP) hands it over with :meth:`Spool.adopt`: one rename,
no copy.

Bounds. A spool that accepts until the disk is full takes the modality's own image store and the
operating system down with it, so accepting is refused (:class:`SpoolFullError`, nothing queued)
when it would cross either limit:

* ``max_pending_bytes`` (``spool.max_pending_bytes``, default 2 GiB): everything the spool holds,
  queued images and files still being written. A radiograph is 10-30 MB and a CT slice 0.5 MB, so
  2 GiB is a backlog of about a hundred radiographs or a few thousand slices: hours of work for
  the worker, far beyond a normal queue, small beside a modality PC's disk.
* ``min_free_bytes`` (``spool.min_free_bytes``, default 1 GiB): free space left on the spool's
  filesystem (``shutil.disk_usage``, the space an unprivileged writer may use), which the
  spool usually shares with the modality software, its logs and its database.

The senders keep the image and try again later: C-STORE answers 0xA700, the hook socket answers
``ERR not_queued``, the hot folder leaves the file where it is. The condition is logged once at
ERROR when it starts and once at WARNING when it clears (when the worker has freed room, or the
next image fits), not once per refused image. A single image larger than ``max_pending_bytes``
can never fit and is refused with a plain :class:`IngestError` instead.

Files left in ``.tmp`` by a writer that died (an aborted C-STORE association, a killed
``edge-agent submit``) are removed once untouched for ten minutes, checked at most once a minute
while images arrive; until then the cap counts them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .durable import fsync_dir
from .errors import IngestError

__all__ = [
    "Spool",
    "SpoolItem",
    "SpoolFullError",
    "durable_copy",
    "format_size",
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MIN_FREE_BYTES",
]

log = logging.getLogger(__name__)

_ITEM = re.compile(r"^([0-9a-f]{64})\.([a-z0-9]{1,8})$")
_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_CHUNK = 1 << 20
_STALE_TMP_SECONDS = 600.0
_SWEEP_EVERY_SECONDS = 60.0
# Group-readable: `edge-agent submit` may run as the firmware's account, in the agent's group.
_FILE_MODE = 0o640

DEFAULT_MAX_PENDING_BYTES = 2 << 30
DEFAULT_MIN_FREE_BYTES = 1 << 30


class SpoolFullError(IngestError):
    """The spool or its filesystem has no room for this image now; the sender should retry later.

    A subclass of :class:`~edge_agent.errors.IngestError`, so every path that refuses an image
    refuses this one too; the hot folder uses it to retry instead of waiting for the file to change.
    """


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


def format_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``: figures an operator reads in a log line."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


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

    def __init__(
        self,
        directory: Path,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self.directory = directory
        self.max_pending_bytes = max_pending_bytes
        self.min_free_bytes = min_free_bytes
        self._tmp = directory / ".tmp"
        self.arrived = threading.Event()  # set when this process accepts an image
        # Room accounting, shared by the ingestion threads (hook, C-STORE, hot folder).
        self._room_lock = threading.Lock()
        self._in_flight: dict[str, int] = {}  # .tmp name -> size reserved by a copy in progress
        self._full_kind: str | None = None  # "pending" | "disk" while images are being refused
        self._refused_size = 0  # the last refused image: room is back once it would fit
        self._refused_count = 0
        self._last_sweep = float("-inf")
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"spool folder {directory} cannot be created: {exc.strerror}") from None

    @property
    def temp_dir(self) -> Path:
        """Where a writer puts a file it will :meth:`adopt` (same filesystem: the rename is atomic)."""
        return self._tmp

    def accept_file(self, path: Path, source: str, name: str | None = None, ext: str | None = None) -> SpoolItem:
        """Copy ``path`` into the spool durably; returns the (possibly already queued) item.

        Raises :class:`SpoolFullError` if the spool has no room for it now, and
        :class:`IngestError` if the file cannot be read, changed while being read, can never fit,
        or the spool cannot be written (permissions, disk errors).
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
        self._never_fits(origin, before.st_size)
        fd, tmp = self._reserve(before.st_size)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), _FILE_MODE)
                sha = _copy_hashing(src, out)
            after = os.fstat(src.fileno())  # the same inode grew or was rewritten while we read it
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise IngestError(f"{origin}: changed while it was being read; try again once it is complete")
            return self._commit(tmp, sha, source, name, ext)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IngestError(f"spool {self.directory} cannot be written ({exc.strerror}); nothing was queued") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            with self._room_lock:
                self._in_flight.pop(tmp.name, None)

    def adopt(self, path: Path, source: str, name: str, ext: str) -> SpoolItem:
        """Queue a complete file that its writer left in :attr:`temp_dir`, by renaming it.

        The file is hashed and fsync'd here. On refusal (:class:`SpoolFullError`, or
        :class:`IngestError`) it is deleted: nothing was queued and nothing is left behind.
        """
        if path.parent != self._tmp:
            raise ValueError(f"{path} is not in the spool's temporary folder {self._tmp}")
        try:
            try:
                with open(path, "rb") as f:
                    size = os.fstat(f.fileno()).st_size
                    self._never_fits(path, size)
                    h = hashlib.sha256()
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                    sha = h.hexdigest()
                    if self.find(sha) is None:  # a resend of a queued image is answered even when full
                        with self._room_lock:
                            self._check_room(size, already_written=path.name)
                    os.fsync(f.fileno())  # any descriptor of the inode flushes the writer's data
                os.chmod(path, _FILE_MODE)
                return self._commit(path, sha, source, name, ext)
            except OSError as exc:
                raise IngestError(
                    f"spool {self.directory}: received file {path.name} cannot be queued ({exc.strerror}); "
                    "nothing was queued"
                ) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _commit(self, tmp: Path, sha: str, source: str, name: str, ext: str) -> SpoolItem:
        """Rename a complete, fsync'd temporary into place (or drop it if already queued)."""
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
        log.info("queued %s from %s as %s", name, source, final.name)
        self.arrived.set()
        return SpoolItem(sha, final, source, name, meta["accepted_at"])

    # -- room ---------------------------------------------------------------------------------

    def _never_fits(self, origin: Path, size: int) -> None:
        if size > self.max_pending_bytes:
            raise IngestError(
                f"{origin}: {format_size(size)} is more than the whole spool may hold "
                f"(spool.max_pending_bytes = {format_size(self.max_pending_bytes)}); nothing was queued; "
                "it can never be accepted unless spool.max_pending_bytes is raised"
            )

    def _reserve(self, size: int) -> tuple[int, Path]:
        """Check for room and create the temporary a copy of ``size`` bytes will go into."""
        with self._room_lock:
            self._check_room(size, already_written=None)
            try:
                fd, tmp_name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
            except OSError as exc:
                raise IngestError(
                    f"spool {self.directory} cannot be written ({exc.strerror}); nothing was queued"
                ) from None
            tmp = Path(tmp_name)
            self._in_flight[tmp.name] = size
        return fd, tmp

    def _check_room(self, size: int, already_written: str | None) -> None:
        """Raise :class:`SpoolFullError` if holding ``size`` more bytes would cross a limit.

        ``already_written``: the name in ``.tmp`` of the file being adopted, which is on disk
        (and in the free space figure) already. Called with ``_room_lock`` held.
        """
        now = time.monotonic()
        if now - self._last_sweep >= _SWEEP_EVERY_SECONDS:
            self._last_sweep = now
            self._sweep_temporaries(keep=already_written)
        problem = self._room_problem(size, already_written)
        if problem is None:
            self._room_again()
            return
        kind, message = problem
        if self._full_kind != kind:
            log.error("%s; new images are refused until there is room (logged once, not per image)", message)
        self._full_kind, self._refused_size = kind, size
        self._refused_count += 1
        hint = ("it is accepted once the agent has judged queued images" if kind == "pending"
                else "free space on that filesystem or lower spool.min_free_bytes")
        raise SpoolFullError(f"{message}; nothing was queued; {hint}")

    def _room_problem(self, size: int, already_written: str | None) -> tuple[str, str] | None:
        held = self._held_bytes(exclude=already_written)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError as exc:
            raise IngestError(
                f"spool {self.directory}: free space cannot be read ({exc.strerror}); nothing was queued"
            ) from None
        if held + size > self.max_pending_bytes:
            return "pending", (
                f"spool {self.directory} is full: it holds {format_size(held)} and this {format_size(size)} image "
                f"would cross spool.max_pending_bytes ({format_size(self.max_pending_bytes)})"
            )
        left = free if already_written is not None else free - size
        if left < self.min_free_bytes:
            return "disk", (
                f"the disk of spool {self.directory} is nearly full: {format_size(free)} free, and this "
                f"{format_size(size)} image would leave less than spool.min_free_bytes "
                f"({format_size(self.min_free_bytes)}) for the rest of the system"
            )
        return None

    def _room_again(self) -> None:
        if self._full_kind is None:
            return
        held = self._held_bytes(exclude=None)
        try:
            free = format_size(shutil.disk_usage(self.directory).free)
        except OSError:
            free = "unknown"
        log.warning(
            "spool %s has room again (holds %s of %s, %s free on its disk); images are accepted again "
            "(%d refused while it was full)", self.directory, format_size(held),
            format_size(self.max_pending_bytes), free, self._refused_count,
        )
        self._full_kind, self._refused_size, self._refused_count = None, 0, 0

    def _held_bytes(self, exclude: str | None) -> int:
        """Bytes in the spool and its ``.tmp``; copies in progress count at their full size."""
        total = sum(self._in_flight.values())
        for folder in (self.directory, self._tmp):
            try:
                entries = os.scandir(folder)
            except OSError:
                continue
            with entries:
                for e in entries:
                    if folder is self._tmp and (e.name in self._in_flight or e.name == exclude):
                        continue
                    try:
                        if e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        return total

    def _sweep_temporaries(self, keep: str | None = None) -> None:
        now = time.time()
        try:
            entries = list(os.scandir(self._tmp))
        except OSError:
            return
        for e in entries:
            if e.name in self._in_flight or e.name == keep:
                continue
            try:
                if now - e.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS:
                    os.unlink(e.path)
                    log.info("spool: removed %s, a temporary left by a writer that stopped", e.name)
            except OSError:
                continue

    # -- queue --------------------------------------------------------------------------------

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
        if self._full_kind is not None:  # say so as soon as the refused image would fit again
            with self._room_lock:
                try:
                    if self._full_kind is not None and self._room_problem(self._refused_size, None) is None:
                        self._room_again()
                except IngestError:
                    pass  # the next image's check will tell

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
        with self._room_lock:
            self._sweep_temporaries()
        for p in self.directory.glob("*.meta.json"):
            sha = p.name.split(".", 1)[0]
            try:
                if self.find(sha) is None and now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                    p.unlink()
            except OSError:
                continue
