"""The collector's verification edge: envelope bytes + the topic they came on -> a verified record.

``EnvelopeVerifier`` is the narrow interface (tests and benchmarks swap in their own); the real
one, :class:`FleetVerifier`, is the trust library's :func:`~edge_agent.trust.verify.verify_envelope`
(format, ES256 signature, chain to the fleet CA, validity at issue time, CRL, device id = the
certificate's, kid) plus the two checks only the collector can make:

* the device in the **topic** must be the device in the certificate (the broker's ACL already
  confines a client to its own prefix; this catches a misconfigured broker, and an envelope that
  a device re-publishes for another one);
* **freshness**: ``issued_at`` no older than ``max_age`` (an old envelope re-injected after the
  store forgot it) and not far in the future.

Replay of a *sequence* — the same (device, boot, seq) or msg_id with other bytes — is judged by
the store (``store.py``), because only the store is shared by every collector process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from ..errors import DeviceMismatchError, ReplayError
from ..trust.certs import load_certificates, utcnow
from ..trust.verify import load_crls, verify_envelope

__all__ = ["VerifiedRecord", "EnvelopeVerifier", "FleetVerifier", "record_from_payload"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedRecord:
    """A verified verdict, as the store keeps it."""

    msg_id: str
    site: str
    device_id: str
    boot_id: str
    seq: int
    issued_at: str
    label: str
    score: float | None
    model: str | None
    file_sha256: str | None
    envelope_sha256: str
    payload: str  # the verified payload, JSON text
    cert_not_after: float | None  # epoch seconds

    @property
    def flagged(self) -> bool:
        return self.label in ("suspicious", "synthetic")


class EnvelopeVerifier(Protocol):
    def verify(self, envelope: bytes, *, site: str, topic_device: str, envelope_sha256: str) -> VerifiedRecord:
        """Return the record or raise an ``EnvelopeError`` / ``PayloadError`` subclass."""
        ...


def record_from_payload(
    payload: dict[str, Any], *, site: str, envelope_sha256: str, cert_not_after: float | None
) -> VerifiedRecord:
    verdict = payload.get("verdict") or {}
    model = payload.get("model") or {}
    image = payload.get("image") or {}
    score = verdict.get("score")
    return VerifiedRecord(
        msg_id=str(payload["msg_id"])[:64],
        site=site,
        device_id=str(payload["device_id"]),
        boot_id=str(payload["boot_id"])[:64],
        seq=int(payload["seq"]),
        issued_at=str(payload["issued_at"])[:40],
        label=str(verdict.get("label", "unknown"))[:20],
        score=float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
        model=f"{model.get('name')}@{model.get('version')}" if model else None,
        file_sha256=str(image.get("file_sha256"))[:64] if image.get("file_sha256") else None,
        envelope_sha256=envelope_sha256,
        payload=json.dumps(payload, separators=(",", ":")),
        cert_not_after=None if cert_not_after is None else float(cert_not_after),
    )


class FleetVerifier:
    def __init__(
        self,
        trust_anchors: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        max_age: dt.timedelta = dt.timedelta(days=14),
        max_ahead: dt.timedelta = dt.timedelta(minutes=10),
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.trust_anchors = list(trust_anchors)
        self.crls = list(crls)
        self.max_age = max_age
        self.max_ahead = max_ahead
        self._now = now
        self._crl_files: dict[Path, float] = {}
        self._crl_checked = time.monotonic()

    @classmethod
    def from_files(cls, ca: Path, crls: Sequence[Path] = (), **kw: Any) -> "FleetVerifier":
        anchors = load_certificates(Path(ca).read_bytes())
        crl_list = [c for p in crls for c in load_crls(Path(p).read_bytes())]
        verifier = cls(anchors, crl_list, **kw)
        verifier._crl_files = {Path(p): Path(p).stat().st_mtime for p in crls}
        return verifier

    def _reload_crls(self) -> None:
        """A CRL file replaced on disk (``edge-agent ca crl`` + copy) takes effect within a minute,
        without a restart: a revoked device must not stay trusted until the next deploy."""
        mono = time.monotonic()
        if not self._crl_files or mono < self._crl_checked + 60.0:
            return
        self._crl_checked = mono
        try:
            mtimes = {p: p.stat().st_mtime for p in self._crl_files}
            if mtimes != self._crl_files:
                self.crls = [c for p in mtimes for c in load_crls(p.read_bytes())]
                self._crl_files = mtimes
                log.warning("reloaded %d CRL(s) from %s", len(self.crls), ", ".join(map(str, mtimes)))
        except (OSError, ValueError) as exc:
            log.error("a CRL file cannot be reloaded (%s); keeping the CRLs loaded before", exc)

    def verify(self, envelope: bytes, *, site: str, topic_device: str, envelope_sha256: str = "") -> VerifiedRecord:
        self._reload_crls()
        now = self._now()
        v = verify_envelope(envelope, self.trust_anchors, self.crls, now=now, replay_state=None)
        if v.device_id != topic_device:
            raise DeviceMismatchError(
                f"the envelope is signed by device {v.device_id!r} but arrived on device {topic_device!r}'s topic; "
                "a device may publish only its own verdicts (check the broker ACL)"
            )
        if v.issued_at < now - self.max_age:
            raise ReplayError(
                f"issued_at {v.payload['issued_at']} is older than {self.max_age} (the freshness window): "
                "an old envelope re-injected; if a device really queued verdicts that long, widen max_age"
            )
        if v.issued_at > now + self.max_ahead:
            raise ReplayError(f"issued_at {v.payload['issued_at']} is in the future (more than {self.max_ahead} ahead)")
        return record_from_payload(
            v.payload,
            site=site,
            envelope_sha256=envelope_sha256 or hashlib.sha256(envelope).hexdigest(),
            cert_not_after=v.certificate.not_valid_after_utc.timestamp(),
        )
