"""The judging loop: spool -> pipeline -> (quarantine) -> sinks -> forget the spool item.

Order matters for "never lost, never judged twice":

1. an item whose SHA-256 the journal already holds is only removed (a repeat submission, or a
   crash after step 4 and before step 5);
2. the pipeline judges it (it never raises for a bad image);
3. an unreadable file is copied to the quarantine folder (hard link where possible);
4. the verdicts go to the sinks, the journal last: its fsync'd line is the commit point;
5. the spool item is deleted.

A crash anywhere before 4 repeats the work after restart; a crash after 4 repeats nothing.
If a sink refuses (outbox full, disk full), the item stays spooled and its verdict is kept in
memory; it is offered again after ``RETRY_SECONDS`` without being judged again, and only to the
sinks that have not taken it yet (a signing sink that took it must not sign it a second time
under a new message id: the collector would store the image twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .errors import EdgeAgentError
from .journal import Journal, JudgedImage, VerdictSink, utc_now
from .spool import Spool, SpoolItem, durable_copy
from .verdict import Reason, Timings, Verdict

__all__ = ["Worker", "Judge", "MAX_ATTEMPTS", "RETRY_SECONDS"]

log = logging.getLogger(__name__)

# Starts of one item before it is declared unreadable: a file that kills the process inside a
# native decoder must not crash-loop the agent after every restart.
MAX_ATTEMPTS = 3
_IDLE_POLL_SECONDS = 0.5
RETRY_SECONDS = 30.0  # before an item whose verdict could not be recorded is tried again  # also picks up items written by `edge-agent submit` in another process


class Judge(Protocol):
    """What the worker needs from :class:`~edge_agent.pipeline.Pipeline`."""

    def process(self, path: str | Path, display: str | None = None) -> list[Verdict]: ...


class Worker:
    def __init__(
        self,
        spool: Spool,
        judge: Judge,
        journal: Journal,
        quarantine_dir: Path,
        sinks: Sequence[VerdictSink] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.judge = judge
        self.journal = journal
        self.quarantine_dir = quarantine_dir
        self.sinks = tuple(sinks)
        self.clock = clock
        self._retry_at: dict[str, float] = {}  # sha256 -> when to try a failed item again
        self._unrecorded: dict[str, JudgedImage] = {}  # judged, but a sink refused it: not judged twice
        self._taken_by: dict[str, set[int]] = {}  # sha256 -> indexes of the sinks that already took it

    def run(self, stop: threading.Event) -> None:
        """Judge items oldest first until ``stop`` is set; the current image is always finished."""
        while not stop.is_set():
            if not self.drain_once(stop):
                self.spool.arrived.wait(_IDLE_POLL_SECONDS)
                self.spool.arrived.clear()

    def drain_once(self, stop: threading.Event | None = None) -> bool:
        """Handle every pending item once; returns whether there was anything to do."""
        now = self.clock()
        items = [i for i in self.spool.pending() if self._retry_at.get(i.sha256, now) <= now]
        for item in items:
            if stop is not None and stop.is_set():
                break
            try:
                self.handle(item)
            except Exception:  # never let one item end the worker thread
                log.exception("%s: cannot be handled; left in the spool, retried later", item.display)
                self._later(item)
        return bool(items)

    def _later(self, item: SpoolItem) -> None:
        self._retry_at[item.sha256] = self.clock() + RETRY_SECONDS

    def handle(self, item: SpoolItem) -> JudgedImage | None:
        if self.journal.judged(item.sha256):
            log.info("%s (%s): already judged; dropping the repeat", item.display, item.sha256[:12])
            self._forget(item)
            return None
        judged = self._unrecorded.pop(item.sha256, None) or self._judge(item)
        taken = self._taken_by.setdefault(item.sha256, set())
        try:
            for index, sink in enumerate((*self.sinks, self.journal)):
                if index not in taken:
                    sink.record(judged)
                    taken.add(index)
        except EdgeAgentError as exc:
            # e.g. the outbox is full or the disk is: keep the image spooled and the verdict in
            # memory, and try again later with the sinks that have not taken it.
            log.error("%s: verdict not recorded (%s); retrying in %.0f s", item.display, exc, RETRY_SECONDS)
            self._unrecorded[item.sha256] = judged
            self._later(item)
            return None
        del self._taken_by[item.sha256]
        self._forget(item)
        return judged

    def _judge(self, item: SpoolItem) -> JudgedImage:
        attempts = self.spool.count_attempt(item)
        if attempts > MAX_ATTEMPTS:
            verdicts = [_unreadable(item, "crashed_agent", f"judging this file stopped the agent {attempts - 1} times")]
        else:
            try:
                verdicts = self.judge.process(item.path, item.display)
            except Exception as exc:  # a bug or a runtime failure must not stop the other images
                log.exception("%s: the pipeline failed", item.display)
                verdicts = [_unreadable(item, "internal_error", f"the pipeline failed: {exc}")]
        quarantined = None
        if any(v.verdict == "unreadable" for v in verdicts):
            quarantined = self._quarantine(item)
        for v in verdicts:
            log.info("%s: %s%s", item.display, v.verdict, "" if v.score is None else f" ({v.score:.3f})")
        return JudgedImage(
            sha256=item.sha256,
            source=item.source,
            name=item.display,
            accepted_at=item.accepted_at,
            judged_at=utc_now(),
            verdicts=tuple(verdicts),
            quarantined=quarantined,
        )

    def _quarantine(self, item: SpoolItem) -> str | None:
        target = self.quarantine_dir / item.path.name
        try:
            durable_copy(item.path, target)
        except OSError as exc:
            # Keep the evidence: the file stays in the spool, renamed so it is not judged again.
            kept = item.path.with_name(item.path.name + ".unquarantined")
            log.error("%s: cannot move to quarantine %s (%s); kept as %s", item.display, target, exc.strerror, kept)
            try:
                item.path.rename(kept)
            except OSError:
                self._later(item)
            return None
        log.warning("%s: unreadable; moved to %s", item.display, target)
        return str(target)

    def _forget(self, item: SpoolItem) -> None:
        try:
            self.spool.remove(item)
        except OSError as exc:
            log.error("%s: judged, but the spool item cannot be removed (%s)", item.display, exc.strerror)
            self._later(item)
            return
        self._retry_at.pop(item.sha256, None)


def _unreadable(item: SpoolItem, code: str, message: str) -> Verdict:
    return Verdict(
        path=item.display,
        frame=None,
        verdict="unreadable",
        score=None,
        threshold=None,
        reasons=(Reason(code, message),),
        timings_ms=Timings(),
    )
