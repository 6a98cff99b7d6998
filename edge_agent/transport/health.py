"""The device's health message (pure): what an operator needs to see that a device is well.

Published periodically on ``edge/v1/{site}/{device}/health``; the collector keeps the latest one
per device and raises alerts from it (outbox alarm, certificate expiring, clock unsynchronised).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .outbox import OutboxStats

__all__ = ["HEALTH_SCHEMA", "health_message", "iso_utc"]

HEALTH_SCHEMA = 1


def iso_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def health_message(
    *,
    now: float,
    outbox: OutboxStats,
    last_verdict_at: float | None,
    model: dict[str, Any] | None,
    cert_not_after: dt.datetime | None,
    clock_synchronised: bool | None,
    connected_since: float | None,
) -> dict[str, Any]:
    days_left = None
    if cert_not_after is not None:
        days_left = round((cert_not_after.timestamp() - now) / 86400.0, 2)
    return {
        "schema": HEALTH_SCHEMA,
        "at": iso_utc(now),
        "at_epoch": round(now, 3),
        "queue": outbox.to_dict(),
        "last_verdict_at": None if last_verdict_at is None else iso_utc(last_verdict_at),
        "model": model,
        "certificate": {
            "not_after": None if cert_not_after is None else cert_not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": days_left,
        },
        "clock": {"synchronised": clock_synchronised},
        "connected_since": None if connected_since is None else iso_utc(connected_since),
    }
