"""The hot folder: files dropped into a folder are spooled once they are complete, then removed.

"Complete" means one of two conventions a writer can follow:

* rename into place: write ``.name`` or ``name.part`` / ``name.tmp`` / ``name.partial`` and
  rename it when done; those names are never picked up;
* stable size: a plain file is taken once its size and modification time have not changed for
  ``stable_seconds`` (a writer that pauses longer than that mid-file should rename into place).

Only regular files directly in the folder are taken. A file that cannot be read or removed is
logged and left alone until it changes; a folder that vanishes is logged and watched for. While
the spool is full (:class:`~edge_agent.spool.SpoolFullError`; the spool logs that once) files are
left where they are, the pass stops, and the next poll tries again, so the hot folder itself is
the queue until there is room.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import IngestError
from .spool import Spool, SpoolFullError

__all__ = ["HotFolder", "StabilityWatch", "is_in_progress_name"]

log = logging.getLogger(__name__)

_IN_PROGRESS_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".filepart")


def is_in_progress_name(name: str) -> bool:
    """Names a writer uses while a file is still being written (rename-into-place convention)."""
    return name.startswith(".") or name.lower().endswith(_IN_PROGRESS_SUFFIXES)


@dataclass(frozen=True)
class _Seen:
    signature: tuple[int, int]  # (size, mtime_ns)
    since: float  # clock reading when the signature was first seen
    failed: bool = False  # taken once and failed: wait for a change before trying again


class StabilityWatch:
    """Pure bookkeeping: which names have kept the same (size, mtime) for long enough."""

    def __init__(self, stable_seconds: float) -> None:
        self.stable_seconds = stable_seconds
        self._seen: dict[str, _Seen] = {}

    def observe(self, files: dict[str, tuple[int, int]], now: float) -> list[str]:
        """Given the current ``name -> (size, mtime_ns)``, return the names that are complete."""
        for gone in set(self._seen) - set(files):
            del self._seen[gone]
        ready = []
        for name, sig in files.items():
            seen = self._seen.get(name)
            if seen is None or seen.signature != sig:
                self._seen[name] = _Seen(sig, now)
                seen = self._seen[name]
            if not seen.failed and now - seen.since >= self.stable_seconds:
                ready.append(name)
        return sorted(ready)

    def failed(self, name: str) -> None:
        if name in self._seen:
            s = self._seen[name]
            self._seen[name] = _Seen(s.signature, s.since, failed=True)


class HotFolder:
    def __init__(
        self,
        path: Path,
        spool: Spool,
        stable_seconds: float,
        poll_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.spool = spool
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.watch = StabilityWatch(stable_seconds)
        self._missing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"hot_folder.path: {self.path} cannot be created ({exc.strerror})") from None
        self._thread = threading.Thread(target=self._loop, name="hot-folder", daemon=True)
        self._thread.start()
        log.info("watching hot folder %s", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # keep watching whatever happened on this pass
                log.exception("hot folder %s: poll failed", self.path)
            self._stop.wait(self.poll_seconds)

    def poll_once(self) -> list[str]:
        """One pass: spool every complete file; returns the SHA-256 of each one taken."""
        files = self._list()
        taken = []
        for name in self.watch.observe(files, self.clock()):
            if self._stop.is_set():
                break
            src = self.path / name
            try:
                item = self.spool.accept_file(src, source="hot_folder", name=name)
            except SpoolFullError as exc:
                log.debug("hot folder: %s left in place until the spool has room: %s", name, exc)
                break  # the other files would be refused too; the next poll retries
            except IngestError as exc:
                log.error("hot folder: %s not taken: %s", name, exc)
                self.watch.failed(name)
                continue
            taken.append(item.sha256)
            try:
                src.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                # Spooled already; leaving it would only queue a repeat the journal drops.
                log.error("hot folder: %s was queued but cannot be removed (%s)", src, exc.strerror)
                self.watch.failed(name)
        return taken

    def _list(self) -> dict[str, tuple[int, int]]:
        try:
            entries = list(os.scandir(self.path))
        except OSError as exc:
            if not self._missing:
                log.error("hot folder %s cannot be read (%s); still watching for it", self.path, exc.strerror)
            self._missing = True
            return {}
        if self._missing:
            log.warning("hot folder %s is back", self.path)
            self._missing = False
        files = {}
        for e in entries:
            if is_in_progress_name(e.name):
                continue
            try:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    files[e.name] = (st.st_size, st.st_mtime_ns)
            except OSError:
                continue
        return files
