"""The signed verdict payload (schema 1): what leaves the device about one judged image. Pure.

It carries what a collector needs to trust, order, deduplicate and act on a verdict, and nothing
that identifies a patient: no names, IDs, dates of birth, accession numbers, file paths or UIDs
in clear. The SOP Instance UID is replaced by HMAC-SHA256 (RFC 2104) under a *site secret*: the
site can recompute it for an image it holds and so find the verdict; nobody without the secret
can reverse it or test guesses against it (a bare SHA-256 of a UID could be brute-forced, UIDs
being structured). The SOP *Class* UID names a kind of object (e.g. CT Image Storage), not a
patient, and is kept.

    {"schema": 1, "type": "edge-agent.verdict", "msg_id": uuid4, "device_id", "boot_id", "seq",
     "issued_at": RFC 3339 UTC, "clock_synced": true|false|null,
     "image": {"file_sha256", "pixel_sha256", "modality", "sop_class_uid",
               "sop_instance_uid_hmac", "container", "frame"} | null,
     "model": {"name", "version", "sha256", "backend", "precision"} | null,
     "verdict": {"label", "score", "threshold", "thresholds", "reasons": [{"code", "message"}]}}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Any

from ..verdict import Verdict
from .certs import validate_device_id

__all__ = ["SCHEMA", "PAYLOAD_TYPE", "DeviceContext", "build_verdict_payload", "uid_hmac", "format_time"]

SCHEMA = 1
PAYLOAD_TYPE = "edge-agent.verdict"
_MIN_SECRET = 16


@dataclass(frozen=True)
class DeviceContext:
    """What stays the same for every verdict a process signs."""

    device_id: str
    boot_id: str
    site_secret: bytes = b""

    def __post_init__(self) -> None:
        validate_device_id(self.device_id)
        uuid.UUID(self.boot_id)
        if len(self.site_secret) < _MIN_SECRET:
            raise ValueError(f"the site secret must be at least {_MIN_SECRET} bytes (use 32 random bytes)")

    @staticmethod
    def new_boot_id() -> str:
        return str(uuid.uuid4())


def uid_hmac(uid: str, site_secret: bytes) -> str:
    """HMAC-SHA256 (RFC 2104) of a UID's ASCII form (PS3.5 §9.1 padding removed), hex."""
    return hmac.new(site_secret, uid.strip("\x00 ").encode("ascii"), hashlib.sha256).hexdigest()


def format_time(t: dt.datetime) -> str:
    """RFC 3339 §5.6 UTC with milliseconds, e.g. ``2026-11-22T01:02:03.456Z``."""
    t = t.astimezone(dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _scrub(message: str, path: str) -> str:
    """Reason messages may quote the file's path or name (which can hold a patient's name)."""
    for s in sorted({path, path.rsplit("/", 1)[-1]}, key=len, reverse=True):
        if len(s) >= 3:
            message = message.replace(s, "<image>")
    # UIDs quoted in a message (e.g. "unsupported transfer syntax 1.2.840...") are classes;
    # instance UIDs never appear in our messages, but a dotted number is dropped to be sure.
    return re.sub(r"\b\d+(?:\.\d+){5,}\b", "<uid>", message)


def build_verdict_payload(
    verdict: Verdict,
    device: DeviceContext,
    *,
    seq: int,
    issued_at: dt.datetime,
    clock_synced: bool | None,
    msg_id: str | None = None,
) -> dict[str, Any]:
    """The payload for ``verdict`` (see the module docstring). ``seq`` comes from the
    :class:`~edge_agent.trust.sequence.SequenceStore`; ``msg_id`` defaults to a fresh uuid4."""
    if seq < 1:
        raise ValueError("seq must be >= 1")
    if issued_at.tzinfo is None:
        raise ValueError("issued_at must be timezone-aware")
    image: dict[str, Any] | None = None
    f = verdict.facts
    if f is not None:
        image = {
            "container": f.container,
            "file_sha256": f.file_sha256,
            "pixel_sha256": f.pixel_sha256,
            "modality": f.modality or None,
            "sop_class_uid": f.sop_class_uid or None,
            "sop_instance_uid_hmac": uid_hmac(f.sop_instance_uid, device.site_secret) if f.sop_instance_uid else None,
            "frame": verdict.frame,
        }
    m = verdict.model
    return {
        "schema": SCHEMA,
        "type": PAYLOAD_TYPE,
        "msg_id": msg_id or str(uuid.uuid4()),
        "device_id": device.device_id,
        "boot_id": device.boot_id,
        "seq": seq,
        "issued_at": format_time(issued_at),
        "clock_synced": clock_synced,
        "image": image,
        "model": None if m is None else {
            "name": m.name, "version": m.version, "sha256": m.sha256, "backend": m.backend, "precision": m.precision,
        },
        "verdict": {
            "label": verdict.verdict,
            "score": None if verdict.score is None else round(verdict.score, 6),
            "threshold": verdict.threshold,
            "thresholds": None if verdict.threshold is None
            else {"suspicious": verdict.threshold, "synthetic": verdict.synthetic_threshold},
            "reasons": [{"code": r.code, "message": _scrub(r.message, verdict.path)} for r in verdict.reasons],
        },
    }
