"""The collector's store: verdicts, rejections, devices and alerts, in SQLite or PostgreSQL.

Both dialects share the schema and the logic below; a subclass only opens the connection and
names its placeholder. Every write of a verdict is idempotent on ``msg_id``
(``INSERT ... ON CONFLICT DO NOTHING``): a redelivered message changes nothing. When an insert
conflicts, the stored row decides what the newcomer was:

* same envelope bytes (SHA-256)   -> ``duplicate`` (QoS 1 redelivery, an outbox resend): counted
* other bytes, same ``msg_id`` or same (device, boot, seq) -> ``replay``: rejected and alerted

The outbox keeps signed bytes, so an honest resend is always byte-identical; only a replayed or
re-signed message can collide with different bytes. That check lives here, not in a verifier's
memory, because every collector process of the group shares the store.

One ``batch()`` is one transaction: the collector acknowledges the MQTT messages (PUBACK) only
after it commits, so a killed collector loses nothing (the broker redelivers, §4.4).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from .records import Alert, DeviceUpdate, Rejection
from .verify import VerifiedRecord

__all__ = ["SCHEMA_SQL", "Store", "Batch"]

SCHEMA_SQL = [
    """CREATE TABLE IF NOT EXISTS verdicts (
        msg_id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        device_id TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        issued_at TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        label TEXT NOT NULL,
        score DOUBLE PRECISION,
        model TEXT,
        file_sha256 TEXT,
        envelope_sha256 TEXT NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (device_id, boot_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS verdicts_received_at ON verdicts (received_at)",
    """CREATE TABLE IF NOT EXISTS rejections (
        envelope_sha256 TEXT PRIMARY KEY,
        received_at DOUBLE PRECISION NOT NULL,
        topic TEXT NOT NULL,
        site TEXT,
        device_id TEXT,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        size BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS devices (
        site TEXT NOT NULL,
        device_id TEXT NOT NULL,
        status TEXT,
        status_at DOUBLE PRECISION,
        last_seen DOUBLE PRECISION NOT NULL,
        last_verdict_at DOUBLE PRECISION,
        cert_not_after DOUBLE PRECISION,
        health TEXT,
        silent_alerted BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (site, device_id)
    )""",
    """CREATE TABLE IF NOT EXISTS alerts (
        alert_id TEXT PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        site TEXT NOT NULL,
        device_id TEXT,
        kind TEXT NOT NULL,
        severity BIGINT NOT NULL,
        message TEXT NOT NULL,
        ref TEXT NOT NULL,
        body TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS alerts_at ON alerts (at)",
]

_VERDICT_COLUMNS = (
    "msg_id, site, device_id, boot_id, seq, issued_at, received_at, label, score, model, file_sha256, "
    "envelope_sha256, payload"
)


class Batch:
    """One transaction's worth of writes (use through ``Store.batch()``)."""

    def __init__(self, store: "Store") -> None:
        self._s = store
        self._cur = store._cursor()

    def insert_verdicts(self, records: Sequence[tuple[VerifiedRecord, float]]) -> list[str]:
        """Returns, per record, ``inserted`` | ``duplicate`` | ``replay``."""
        if not records:
            return []
        p = self._s.ph
        sql = (
            f"INSERT INTO verdicts ({_VERDICT_COLUMNS}) VALUES ({', '.join([p] * 13)}) "
            "ON CONFLICT DO NOTHING RETURNING msg_id"
        )
        rows = [
            (r.msg_id, r.site, r.device_id, r.boot_id, r.seq, r.issued_at, at, r.label, r.score, r.model,
             r.file_sha256, r.envelope_sha256, r.payload)
            for r, at in records
        ]
        inserted = self._s._insert_returning(self._cur, sql, rows)
        out = []
        for (r, _), ok in zip(records, inserted):
            if ok:
                out.append("inserted")
                continue
            self._cur.execute(
                f"SELECT envelope_sha256 FROM verdicts WHERE msg_id = {p} OR (device_id = {p} AND boot_id = {p} AND seq = {p})",
                (r.msg_id, r.device_id, r.boot_id, r.seq),
            )
            digests = {row[0] for row in self._cur.fetchall()}
            out.append("duplicate" if digests == {r.envelope_sha256} else "replay")
        return out

    def insert_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        p = self._s.ph
        self._cur.executemany(
            f"INSERT INTO rejections (envelope_sha256, received_at, topic, site, device_id, reason, detail, size) "
            f"VALUES ({', '.join([p] * 8)}) ON CONFLICT DO NOTHING",
            [(r.envelope_sha256, r.received_at, r.topic[:300], r.site, r.device_id, r.reason, r.detail[:1000], r.size)
             for r in rejections],
        )

    def upsert_devices(self, updates: Sequence[DeviceUpdate]) -> None:
        if not updates:
            return
        p, g = self._s.ph, self._s.greatest
        self._cur.executemany(
            f"""INSERT INTO devices (site, device_id, status, status_at, last_seen, last_verdict_at, cert_not_after, health)
            VALUES ({', '.join([p] * 8)})
            ON CONFLICT (site, device_id) DO UPDATE SET
              status = CASE WHEN excluded.status IS NOT NULL
                             AND excluded.status_at >= COALESCE(devices.status_at, 0)
                            THEN excluded.status ELSE devices.status END,
              status_at = {g}(COALESCE(excluded.status_at, 0), COALESCE(devices.status_at, 0)),
              last_seen = {g}(excluded.last_seen, devices.last_seen),
              last_verdict_at = {g}(COALESCE(excluded.last_verdict_at, 0), COALESCE(devices.last_verdict_at, 0)),
              cert_not_after = COALESCE(excluded.cert_not_after, devices.cert_not_after),
              health = COALESCE(excluded.health, devices.health),
              silent_alerted = 0""",
            [(u.site, u.device_id, u.status, u.seen_at if u.status else None, u.seen_at, u.last_verdict_at,
              u.cert_not_after, u.health) for u in updates],
        )

    def mark_silent(self, site: str, device_id: str) -> None:
        p = self._s.ph
        self._cur.execute(f"UPDATE devices SET silent_alerted = 1 WHERE site = {p} AND device_id = {p}", (site, device_id))

    def insert_alerts(self, alerts: Sequence[Alert]) -> list[Alert]:
        """Store alerts; returns those that were new (an alert is raised once per id)."""
        if not alerts:
            return []
        p = self._s.ph
        sql = (
            f"INSERT INTO alerts (alert_id, at, site, device_id, kind, severity, message, ref, body) "
            f"VALUES ({', '.join([p] * 9)}) ON CONFLICT DO NOTHING RETURNING alert_id"
        )
        rows = [(a.id, a.at, a.site, a.device_id, a.kind, a.severity, a.message[:1000], a.ref, a.to_json().decode())
                for a in alerts]
        return [a for a, ok in zip(alerts, self._s._insert_returning(self._cur, sql, rows)) if ok]


class Store:
    """Base: subclasses set ``ph`` / ``greatest`` and implement the connection hooks."""

    ph = "?"
    greatest = "MAX"

    def _cursor(self) -> Any:
        raise NotImplementedError

    def _insert_returning(self, cur: Any, sql: str, rows: list[tuple[Any, ...]]) -> list[bool]:
        out = []
        for row in rows:
            cur.execute(sql, row)
            out.append(cur.fetchone() is not None)
        return out

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- reads (the CLI's tables, the collector's watch) --------------------------------------
    def verdicts(self, since: float, limit: int = 1000, device: str | None = None) -> list[dict[str, Any]]:
        p = self.ph
        where = f"received_at >= {p}"
        params: list[Any] = [since]
        if device:
            where += f" AND device_id = {p}"
            params.append(device)
        return self._query(
            f"SELECT msg_id, site, device_id, seq, issued_at, received_at, label, score, model, file_sha256 "
            f"FROM verdicts WHERE {where} ORDER BY received_at DESC LIMIT {int(limit)}",
            params,
        )

    def count_verdicts(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM verdicts")[0]["n"])

    def verdict_ids(self) -> list[str]:
        return [r["msg_id"] for r in self._query("SELECT msg_id FROM verdicts")]

    def rejections(self, since: float = 0.0) -> list[dict[str, Any]]:
        return self._query(
            f"SELECT received_at, site, device_id, reason, detail, topic, size FROM rejections "
            f"WHERE received_at >= {self.ph} ORDER BY received_at DESC",
            [since],
        )

    def devices(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT site, device_id, status, status_at, last_seen, last_verdict_at, cert_not_after, health, silent_alerted "
            "FROM devices ORDER BY site, device_id"
        )
        for r in rows:
            r["health"] = json.loads(r["health"]) if r["health"] else None
        return rows

    def alerts(self, since: float = 0.0) -> list[dict[str, Any]]:
        return self._query(
            f"SELECT at, site, device_id, kind, severity, message, ref FROM alerts WHERE at >= {self.ph} ORDER BY at DESC",
            [since],
        )

    def silent_devices(self, last_seen_before: float) -> list[dict[str, Any]]:
        return self._query(
            f"SELECT site, device_id, last_seen FROM devices WHERE status = 'online' AND silent_alerted = 0 "
            f"AND last_seen < {self.ph}",
            [last_seen_before],
        )
