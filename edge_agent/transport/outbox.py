"""The durable outbox: a signed verdict is committed here before anything is published.

SQLite in WAL mode (one writer, readers never blocked; https://sqlite.org/wal.html). A row
leaves the ``outbox`` table only when the broker acknowledged it (PUBACK, MQTT 5 §3.4) or when
it is quarantined; so after a crash, a restart or a lost connection, every row still there is
simply sent again (at-least-once; the collector de-duplicates by message id).

Row states (a table, like pynetdicom's FSM; any other (state, event) raises OutboxStateError):

===========  ===============  ===========  =================================================
state        event            next         what happens
===========  ===============  ===========  =================================================
pending      send             inflight     handed to the MQTT client (QoS 1)
inflight     ack              delivered    PUBACK with a success code: the row is deleted
inflight     nack             pending      PUBACK >= 0x80 or a local publish error: attempts+1
inflight     nack_final       quarantined  the N-th failure: moved to ``quarantine``, queue moves on
inflight     connection_lost  pending      no verdict on the message itself: attempts unchanged
inflight     no_subscribers   pending      PUBACK 0x10: the broker took it but no collector is
                                           subscribed (e.g. just after a broker restart); held
                                           and resent later, attempts unchanged
===========  ===============  ===========  =================================================

``inflight`` lives in memory only: after a restart every stored row is ``pending`` again, which
is exactly the resend rule. ``delivered`` rows no longer exist.

Bounds (``OutboxLimits``): when the row count or the byte total is reached, ``add`` refuses the
new verdict with :class:`OutboxFullError` and logs ERROR; nothing already stored is ever dropped.
When the oldest row is older than ``max_age_s`` the outbox raises an alarm (ERROR log, health)
but keeps accepting: expiring old verdicts would be silent loss, and refusing new ones would not
bring the broker back. ``synchronous=FULL`` (the default) fsyncs the WAL at each commit, so a
power cut after ``add`` returns loses nothing; ``NORMAL`` survives process crashes only.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutboxFullError, OutboxStateError, TransportError

__all__ = ["RowState", "OutboxLimits", "OutboxRow", "OutboxStats", "Outbox", "next_state"]

log = logging.getLogger(__name__)


class RowState(enum.Enum):
    PENDING = "pending"
    INFLIGHT = "inflight"
    DELIVERED = "delivered"
    QUARANTINED = "quarantined"


_TRANSITIONS: dict[tuple[RowState, str], RowState] = {
    (RowState.PENDING, "send"): RowState.INFLIGHT,
    (RowState.INFLIGHT, "ack"): RowState.DELIVERED,
    (RowState.INFLIGHT, "nack"): RowState.PENDING,
    (RowState.INFLIGHT, "nack_final"): RowState.QUARANTINED,
    (RowState.INFLIGHT, "connection_lost"): RowState.PENDING,
    (RowState.INFLIGHT, "no_subscribers"): RowState.PENDING,
}


def next_state(state: RowState, event: str) -> RowState:
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise OutboxStateError(
            f"outbox row in state {state.value!r} cannot take event {event!r}; allowed: "
            + ", ".join(f"{s.value}+{e}" for s, e in _TRANSITIONS)
        ) from None


@dataclass(frozen=True)
class OutboxLimits:
    max_rows: int = 100_000
    max_bytes: int = 512 * 1024 * 1024
    max_age_s: float = 7 * 86400.0
    max_attempts: int = 5  # failures (negative PUBACK / publish refused) before quarantine
    synchronous: str = "FULL"

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_bytes", "max_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"outbox {name} must be a positive integer, found {value!r}")
        if not self.max_age_s > 0:
            raise ValueError(f"outbox max_age_s must be > 0, found {self.max_age_s!r}")
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"outbox synchronous must be FULL or NORMAL, found {self.synchronous!r}")


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    created_at: float
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    inflight: int
    oldest_age_s: float | None
    quarantined: int
    alarm: str | None  # None, or a sentence saying which bound is reached

    def to_dict(self) -> dict[str, object]:
        return {
            "depth": self.depth,
            "bytes": self.bytes,
            "inflight": self.inflight,
            "oldest_age_s": None if self.oldest_age_s is None else round(self.oldest_age_s, 1),
            "quarantined": self.quarantined,
            "alarm": self.alarm,
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    quarantined_at REAL NOT NULL
);
"""


class Outbox:
    """Thread-safe: the sink adds from the agent's thread, the publisher drains from its own."""

    def __init__(self, path: Path, limits: OutboxLimits = OutboxLimits(), clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._inflight: set[int] = set()
        self._cursor = 0  # rows with id <= cursor were handed out at least once since (re)connect
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={limits.synchronous}")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
            self._depth, self._bytes = int(row[0]), int(row[1])
            self._quarantined = int(self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
        except sqlite3.Error as exc:
            raise TransportError(f"outbox {self.path} cannot be opened: {exc}; check the path and free space") from None
        self._alarm: str | None = None

    # -- the sink's side ------------------------------------------------------------------
    def add(self, topic: str, payload: bytes) -> int:
        """Commit one message; returns its row id. Raises OutboxFullError at a size bound."""
        return self.add_many(topic, [payload])[0]

    def add_many(self, topic: str, payloads: list[bytes]) -> list[int]:
        """Commit several messages in one transaction (all or none; e.g. every frame of an image)."""
        size = sum(len(p) for p in payloads)
        with self._lock:
            refused = None
            if self._depth + len(payloads) > self.limits.max_rows:
                refused = f"it holds {self._depth} rows (max_rows {self.limits.max_rows})"
            elif self._bytes + size > self.limits.max_bytes:
                refused = f"it holds {self._bytes} bytes (max_bytes {self.limits.max_bytes})"
            if refused:
                self._alarm = f"outbox full: {refused}; new verdicts are refused until the broker takes some"
                log.error("%s (%s)", self._alarm, self.path)
                raise OutboxFullError(
                    f"the outbox {self.path} refused a verdict: {refused}. Nothing was dropped; "
                    "the image stays queued. Restore the broker link, or raise the bound."
                )
            now, ids = self._clock(), []
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for payload in payloads:
                    cur = self._db.execute(
                        "INSERT INTO outbox (topic, payload, created_at) VALUES (?, ?, ?)", (topic, payload, now)
                    )
                    ids.append(int(cur.lastrowid or 0))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise TransportError(f"outbox {self.path} cannot be written: {exc}; check free space") from None
            self._depth += len(payloads)
            self._bytes += size
            return ids

    # -- the publisher's side -------------------------------------------------------------
    def next_batch(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` pending rows, oldest first, now ``inflight`` (event ``send``)."""
        if limit <= 0:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, created_at, attempts FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (self._cursor, limit + len(self._inflight)),
            ).fetchall()
            batch = []
            for r in rows:
                if r[0] in self._inflight:
                    continue
                next_state(RowState.PENDING, "send")
                self._inflight.add(r[0])
                batch.append(OutboxRow(r[0], r[1], bytes(r[2]), r[3], r[4]))
                self._cursor = max(self._cursor, r[0])
                if len(batch) == limit:
                    break
            return batch

    def acked(self, ids: Iterable[int]) -> None:
        """PUBACK with a success code for these rows: delete them in one transaction."""
        ids = [i for i in ids]
        if not ids:
            return
        with self._lock:
            for i in ids:
                self._check_inflight(i, "ack")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                sizes = self._db.execute(
                    f"SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM outbox WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                ).fetchone()
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise TransportError(f"outbox {self.path}: delivered rows cannot be deleted: {exc}") from None
            self._inflight.difference_update(ids)
            self._bytes -= int(sizes[0])
            self._depth -= int(sizes[1])
            if self._alarm and self._alarm.startswith("outbox full") and self._depth < self.limits.max_rows:
                log.warning("outbox %s accepts verdicts again (%d rows)", self.path, self._depth)
                self._alarm = None

    def failed(self, row_id: int, error: str) -> RowState:
        """A negative PUBACK or a refused publish: count it; quarantine at ``max_attempts``."""
        with self._lock:
            self._check_inflight(row_id, "nack")
            self._inflight.discard(row_id)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error[:500], row_id)
                )
                row = self._db.execute("SELECT attempts, LENGTH(payload) FROM outbox WHERE id = ?", (row_id,)).fetchone()
                final = row is not None and row[0] >= self.limits.max_attempts
                if final:
                    self._db.execute(
                        "INSERT INTO quarantine SELECT id, topic, payload, created_at, attempts, last_error, ? "
                        "FROM outbox WHERE id = ?",
                        (self._clock(), row_id),
                    )
                    self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise TransportError(f"outbox {self.path}: a failed row cannot be updated: {exc}") from None
            state = next_state(RowState.INFLIGHT, "nack_final" if final else "nack")
            if final:
                self._depth -= 1
                self._bytes -= int(row[1])
                self._quarantined += 1
                log.error(
                    "outbox row %d quarantined after %d failed attempts (last: %s); the queue moves on. "
                    "Inspect it with: sqlite3 %s 'SELECT * FROM quarantine'",
                    row_id, row[0], error, self.path,
                )
            else:
                self._cursor = min(self._cursor, row_id - 1)  # send it again on the next batch
            return state

    def not_delivered(self, ids: Iterable[int]) -> None:
        """PUBACK 0x10 No matching subscribers: pending again, resent later, not a failure."""
        with self._lock:
            for i in ids:
                self._check_inflight(i, "no_subscribers")
                next_state(RowState.INFLIGHT, "no_subscribers")
                self._inflight.discard(i)
                self._cursor = min(self._cursor, i - 1)

    def connection_lost(self) -> None:
        """The broker link dropped: every inflight row is pending again (resent on reconnect)."""
        with self._lock:
            for i in self._inflight:
                next_state(RowState.INFLIGHT, "connection_lost")
            self._inflight.clear()
            self._cursor = 0

    def stats(self) -> OutboxStats:
        with self._lock:
            # Rows are inserted in time order, so the lowest id is the oldest: O(1), no scan.
            row = self._db.execute("SELECT created_at FROM outbox ORDER BY id LIMIT 1").fetchone()
            oldest = None if row is None else row[0]
            age = None if oldest is None else max(0.0, self._clock() - oldest)
            if age is not None and age > self.limits.max_age_s:
                alarm = (
                    f"outbox stale: the oldest verdict has waited {age / 3600:.1f} h "
                    f"(max_age_s {self.limits.max_age_s:.0f} s); the broker has not taken it"
                )
                if alarm.split(":")[0] != (self._alarm or "").split(":")[0]:
                    log.error("%s (%s)", alarm, self.path)
                self._alarm = alarm
            elif self._alarm and self._alarm.startswith("outbox stale"):
                self._alarm = None
            return OutboxStats(self._depth, self._bytes, len(self._inflight), age, self._quarantined, self._alarm)

    def quarantined_rows(self) -> list[tuple[int, str, int, str | None]]:
        with self._lock:
            return [tuple(r) for r in self._db.execute("SELECT id, topic, attempts, last_error FROM quarantine ORDER BY id")]  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _check_inflight(self, row_id: int, event: str) -> None:
        if row_id not in self._inflight:
            next_state(RowState.PENDING, event)  # raises: only inflight rows take ack/nack

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
