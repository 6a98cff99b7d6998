"""Values the collector passes between its stages (frozen, validated where it matters)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Rejection", "DeviceUpdate", "Alert", "SEVERITY", "alert_id"]

# Alert kinds and their severity (CEF 0-10, ArcSight convention: 7-8 high, 9-10 very high).
SEVERITY: dict[str, int] = {
    "synthetic": 8,
    "suspicious": 6,
    "bad_signature": 9,
    "replay": 9,
    "untrusted_chain": 9,
    "certificate_revoked": 9,
    "device_mismatch": 9,
    "unknown_device": 7,
    "certificate_expired": 7,
    "certificate_not_yet_valid": 5,
    "bad_format": 5,
    "bad_payload": 5,
    "verifier_error": 5,
    "device_offline": 5,
    "device_silent": 6,
    "certificate_expiring": 4,
    "device_outbox_alarm": 7,
}


def alert_id(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Rejection:
    envelope_sha256: str
    received_at: float
    topic: str
    site: str | None
    device_id: str | None
    reason: str
    detail: str
    size: int


@dataclass(frozen=True)
class DeviceUpdate:
    site: str
    device_id: str
    seen_at: float
    status: str | None = None  # "online" | "offline"
    last_verdict_at: float | None = None
    cert_not_after: float | None = None
    health: str | None = None  # JSON text of the last health message


@dataclass(frozen=True)
class Alert:
    kind: str
    site: str
    device_id: str | None
    message: str
    at: float
    ref: str  # what it is about: a msg_id, an envelope digest, a status time
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SEVERITY:
            raise ValueError(f"alert kind {self.kind!r} is not one of {sorted(SEVERITY)}")

    @property
    def severity(self) -> int:
        return SEVERITY[self.kind]

    @property
    def id(self) -> str:
        return alert_id(self.kind, self.site, self.device_id, self.ref)

    def to_dict(self) -> dict[str, Any]:
        from ..transport.health import iso_utc

        return {
            "schema": 1,
            "alert_id": self.id,
            "at": iso_utc(self.at),
            "site": self.site,
            "device_id": self.device_id,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "ref": self.ref,
            "details": self.details,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()
