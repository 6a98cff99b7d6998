"""What the collector does with each message (logic only: the verifier and the store are injected).

    classify(message)  -> one of: a verified verdict, a rejection, a status, a health, ignored
    apply(store, batch) -> one transaction: verdicts (idempotent), rejections, devices, alerts;
                           returns the alerts that are new, to publish after the commit

Nothing here raises on bad input: a message that is not JSON, too large, of the wrong schema or
badly signed becomes a counted, stored, alerted ``Rejection``. Status and health messages are not
signed; they are authenticated by the broker (mutual TLS + the ACL's per-device prefix).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import EnvelopeError, TransportError
from ..transport.topics import parse_topic
from .records import Alert, DeviceUpdate, Rejection
from .store import Store
from .verify import EnvelopeVerifier, VerifiedRecord

__all__ = ["Incoming", "Classified", "Classifier", "apply_batch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: float
    reason: str | None = None  # the MQTT 5 user property "reason" (status messages: shutdown / connection_lost)


@dataclass(frozen=True)
class Classified:
    kind: str  # "verdict" | "rejection" | "status" | "health" | "ignored"
    received_at: float
    site: str | None = None
    device_id: str | None = None
    record: VerifiedRecord | None = None
    rejection: Rejection | None = None
    status: str | None = None
    status_reason: str | None = None
    health: str | None = None
    cert_days_left: float | None = None
    outbox_alarm: str | None = None


class Classifier:
    def __init__(
        self,
        verifier: EnvelopeVerifier,
        known_devices: Mapping[str, Sequence[str]] | None = None,
        max_payload: int = 256 * 1024,
        recent: int = 50_000,
    ) -> None:
        self.verifier = verifier
        self.known = {s: set(d) for s, d in (known_devices or {}).items()}
        self.max_payload = max_payload
        self.counts: Counter[str] = Counter()
        # (device, envelope digest) pairs this process stored: an honest resend on the same device's
        # topic skips verification. Keyed by device too, so the same bytes on another device's
        # topic are still verified (and rejected as a device mismatch).
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._recent_max = recent

    def remember(self, device_id: str, envelope_sha256: str) -> None:
        self._recent[(device_id, envelope_sha256)] = None
        if len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def classify(self, msg: Incoming) -> Classified:
        self.counts["received"] += 1
        digest = hashlib.sha256(msg.payload).hexdigest()
        topic = parse_topic(msg.topic)
        if topic is None:
            return self._reject(msg, digest, None, None, "bad_format", f"topic {msg.topic[:120]!r} is not edge/v1/SITE/DEVICE/KIND")
        site, device = topic.site, topic.device
        if self.known and device not in self.known.get(site, ()):
            return self._reject(msg, digest, site, device, "unknown_device",
                                f"device {device!r} of site {site!r} is not in known_devices; enrol it or add it")
        if len(msg.payload) > self.max_payload:
            return self._reject(msg, digest, site, device, "bad_payload",
                                f"payload of {len(msg.payload)} bytes exceeds {self.max_payload}")
        if topic.kind == "status":
            status = msg.payload.decode("utf-8", "replace").strip()
            if status not in ("online", "offline"):
                return self._reject(msg, digest, site, device, "bad_payload", f"status {status[:40]!r} is not online/offline")
            return Classified("status", msg.received_at, site, device, status=status, status_reason=msg.reason)
        if topic.kind == "health":
            try:
                health = json.loads(msg.payload)
                if not isinstance(health, dict):
                    raise ValueError("not an object")
                days = (health.get("certificate") or {}).get("days_left")
            except (ValueError, UnicodeDecodeError, AttributeError) as exc:
                return self._reject(msg, digest, site, device, "bad_payload", f"health is not a JSON object ({exc})")
            days_left = float(days) if isinstance(days, (int, float)) and not isinstance(days, bool) else None
            alarm = (health.get("queue") or {}).get("alarm") if isinstance(health.get("queue"), dict) else None
            return Classified("health", msg.received_at, site, device, health=json.dumps(health, separators=(",", ":")),
                              cert_days_left=days_left, outbox_alarm=str(alarm)[:300] if alarm else None)
        if (device, digest) in self._recent:
            self.counts["duplicate"] += 1
            return Classified("ignored", msg.received_at, site, device)
        try:
            record = self.verifier.verify(msg.payload, site=site, topic_device=device, envelope_sha256=digest)
        except (EnvelopeError, TransportError) as exc:
            return self._reject(msg, digest, site, device, exc.reason, str(exc))
        except Exception as exc:  # a verifier bug costs one message, never the collector
            log.exception("verifier failed on a message from %s/%s", site, device)
            return self._reject(msg, digest, site, device, "verifier_error", f"{type(exc).__name__}: {exc}")
        return Classified("verdict", msg.received_at, site, device, record=record)

    def _reject(self, msg: Incoming, digest: str, site: str | None, device: str | None, reason: str, detail: str) -> Classified:
        self.counts[f"rejected.{reason}"] += 1
        rej = Rejection(digest, msg.received_at, msg.topic, site, device, reason, detail, len(msg.payload))
        return Classified("rejection", msg.received_at, site, device, rejection=rej)


def _day(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")


def apply_batch(store: Store, batch: Sequence[Classified], classifier: Classifier, now: float, cert_warn_days: float) -> list[Alert]:
    """Write one batch in one transaction; returns the alerts that are new."""
    verdicts = [c for c in batch if c.kind == "verdict" and c.record is not None]
    rejections = [c.rejection for c in batch if c.kind == "rejection" and c.rejection is not None]
    alerts: list[Alert] = []
    updates: list[DeviceUpdate] = []
    with store.batch() as tx:
        outcomes = tx.insert_verdicts([(c.record, c.received_at) for c in verdicts])  # type: ignore[misc]
        for c, outcome in zip(verdicts, outcomes):
            r = c.record
            assert r is not None
            classifier.counts[f"verdict.{outcome}"] += 1
            if outcome == "replay":
                rej = Rejection(r.envelope_sha256, c.received_at, f"edge/v1/{r.site}/{r.device_id}/verdict", r.site,
                                r.device_id, "replay",
                                f"msg_id {r.msg_id} / boot {r.boot_id} seq {r.seq} was already stored with other bytes: "
                                "a replayed or re-signed envelope", 0)
                rejections.append(rej)
                classifier.counts["rejected.replay"] += 1
                continue
            classifier.remember(r.device_id, r.envelope_sha256)
            updates.append(DeviceUpdate(r.site, r.device_id, c.received_at, last_verdict_at=c.received_at,
                                        cert_not_after=r.cert_not_after))
            if outcome == "inserted" and r.flagged:
                alerts.append(Alert(r.label, r.site, r.device_id,
                                    f"{r.label} image from {r.device_id} (score {r.score}, model {r.model}, seq {r.seq})",
                                    now, r.msg_id, {"msg_id": r.msg_id, "score": r.score, "file_sha256": r.file_sha256,
                                                    "issued_at": r.issued_at}))
            if r.cert_not_after is not None and (r.cert_not_after - now) / 86400 < cert_warn_days:
                days = (r.cert_not_after - now) / 86400
                alerts.append(Alert("certificate_expiring", r.site, r.device_id,
                                    f"{r.device_id}'s certificate expires in {days:.1f} days; renew it", now, _day(now)))
        for rej in rejections:
            alerts.append(Alert(rej.reason if rej.reason in _ALERTED else "bad_payload", rej.site or "unknown",
                                rej.device_id, f"rejected message on {rej.topic[:120]}: {rej.detail[:300]}", now,
                                rej.envelope_sha256, {"reason": rej.reason, "topic": rej.topic[:300], "size": rej.size}))
        tx.insert_rejections(rejections)
        for c in batch:
            if c.kind == "status" and c.site and c.device_id:
                updates.append(DeviceUpdate(c.site, c.device_id, c.received_at, status=c.status))
                if c.status == "offline":
                    why = {"shutdown": "clean shutdown",
                           "connection_lost": "connection lost: the broker published its Will"}.get(c.status_reason or "", "")
                    alerts.append(Alert("device_offline", c.site, c.device_id,
                                        f"{c.device_id} went offline" + (f" ({why})" if why else ""),
                                        now, f"{c.received_at:.3f}", {"reason": c.status_reason}))
            elif c.kind == "health" and c.site and c.device_id:
                updates.append(DeviceUpdate(c.site, c.device_id, c.received_at, health=c.health))
                if c.outbox_alarm:  # once per device, alarm kind and day
                    alerts.append(Alert("device_outbox_alarm", c.site, c.device_id,
                                        f"{c.device_id}: {c.outbox_alarm}", now, f"{_day(now)}|{c.outbox_alarm.split(':')[0]}"))
                if c.cert_days_left is not None and c.cert_days_left < cert_warn_days:
                    alerts.append(Alert("certificate_expiring", c.site, c.device_id,
                                        f"{c.device_id}'s certificate expires in {c.cert_days_left:.1f} days; renew it",
                                        now, _day(now)))
        tx.upsert_devices(updates)
        return tx.insert_alerts(alerts)


_ALERTED = {
    "bad_signature", "replay", "untrusted_chain", "certificate_revoked", "device_mismatch", "unknown_device",
    "certificate_expired", "certificate_not_yet_valid", "bad_format", "bad_payload", "verifier_error",
}
