"""Verify signed verdict envelopes with nothing but the fleet CA certificate (and its CRL).

:func:`verify_envelope` raises one :class:`~edge_agent.errors.EnvelopeError` subclass per reason
and returns a :class:`VerifiedVerdict` otherwise. The checks run in this order, so the reason
names the first thing wrong and a forged envelope can never touch the replay state:

    1. format      flattened JWS, alg ES256, typ, x5c parses, payload schema 1   EnvelopeFormatError
    2. signature   ES256 over the signing input with the x5c[0] key               SignatureError
    3. chain       x5c chains to a trust anchor, device profile (RFC 5280 §6)     ChainError
    4. validity    every certificate valid at the payload's issued_at             CertificateExpiredError /
                                                                                  CertificateNotYetValidError
    5. revocation  not on a CRL signed by its issuer (RFC 5280 §6.3)              CertificateRevokedError
    6. identity    payload device_id == the certificate's device URN, kid ==      DeviceMismatchError
                   RFC 7638 thumbprint of its key
    7. replay      (device, boot, seq) not seen before (only if a state is given) ReplayError

Validity is judged at the *issue* time the device signed, so verdicts queued during an outage
still verify after the certificate's renewal; a stolen key used after expiry cannot claim an
earlier time without it being revoked — revoke lost devices.

:class:`Verifier` wraps it for a stream: it never raises, and counts outcomes by reason.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ..durable import write_atomically
from ..errors import (
    ChainError,
    DeviceMismatchError,
    EnvelopeError,
    EnvelopeFormatError,
    ReplayError,
    SignatureError,
    TrustError,
)
from .certs import check_revocation, device_id_of, utcnow, validate_chain
from .envelope import ENVELOPE_TYP
from .jws import jwk_thumbprint, parse_flattened, verify_es256
from .payload import PAYLOAD_TYPE, SCHEMA

__all__ = ["VerifiedVerdict", "ReplayState", "Verifier", "VerificationOutcome", "verify_envelope", "load_crls"]

_log = logging.getLogger(__name__)
_MAX_CHAIN = 4


@dataclass(frozen=True)
class VerifiedVerdict:
    payload: dict[str, Any]
    device_id: str
    boot_id: str
    seq: int
    msg_id: str
    issued_at: dt.datetime
    certificate: x509.Certificate = field(repr=False)
    kid: str
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        v = self.payload.get("verdict") or {}
        img = self.payload.get("image") or {}
        model = self.payload.get("model") or {}
        score = v.get("score")
        return (
            f"VALID {v.get('label')} score={'-' if score is None else score} device={self.device_id} "
            f"seq={self.seq} issued_at={self.payload.get('issued_at')} clock_synced={self.payload.get('clock_synced')} "
            f"modality={img.get('modality') or '-'} pixel_sha256={(img.get('pixel_sha256') or '-')[:16]} "
            f"model={model.get('name', '-')}@{model.get('version', '-')}"
        )


class ReplayState:
    """Seen ``(device, boot, seq)`` triples, bounded: per (device, boot) a floor below which every
    number counts as seen, plus the last ``window`` numbers above it (the IPsec anti-replay
    window idea, RFC 4303 §3.4.3, without its fixed bitmap)."""

    def __init__(self, data: dict[str, Any] | None = None, window: int = 4096) -> None:
        self.window = window
        self._boots: dict[tuple[str, str], tuple[int, set[int]]] = {}
        for dev, boots in ((data or {}).get("devices") or {}).items():
            for boot, st in boots.items():
                self._boots[(dev, boot)] = (int(st["floor"]), set(int(s) for s in st["seen"]))

    @classmethod
    def load(cls, path: Path) -> "ReplayState":
        try:
            return cls(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Never start from empty: that would accept every replay. Make the operator decide.
            raise TrustError(f"replay state {path} is corrupt ({exc!r}); restore it from backup") from None

    def save(self, path: Path) -> None:
        devices: dict[str, dict[str, Any]] = {}
        for (dev, boot), (floor, seen) in sorted(self._boots.items()):
            devices.setdefault(dev, {})[boot] = {"floor": floor, "seen": sorted(seen)}
        write_atomically(path, (json.dumps({"version": 1, "devices": devices}, separators=(",", ":")) + "\n").encode())

    def seen(self, device_id: str, boot_id: str, seq: int) -> bool:
        floor, seen = self._boots.get((device_id, boot_id), (0, set()))
        return seq < floor or seq in seen

    def record(self, device_id: str, boot_id: str, seq: int) -> None:
        floor, seen = self._boots.get((device_id, boot_id), (0, set()))
        seen.add(seq)
        while len(seen) > self.window:
            lowest = min(seen)
            seen.discard(lowest)
            floor = max(floor, lowest + 1)
        self._boots[(device_id, boot_id)] = (floor, seen)


def load_crls(pem: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in a PEM bundle."""
    out = []
    marker = b"-----BEGIN X509 CRL-----"
    for part in pem.split(marker)[1:]:
        out.append(x509.load_pem_x509_crl(marker + part))
    return out


def _x5c(header: dict[str, Any]) -> list[x509.Certificate]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= _MAX_CHAIN or not all(isinstance(c, str) for c in x5c):
        raise EnvelopeFormatError(f"x5c must be a list of 1..{_MAX_CHAIN} base64 certificates (RFC 7515 §4.1.6)")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c]
    except (binascii.Error, ValueError):
        raise EnvelopeFormatError("an x5c entry is not a base64 DER certificate (RFC 7515 §4.1.6)") from None


def _payload(raw: bytes) -> tuple[dict[str, Any], dt.datetime]:
    try:
        p = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeFormatError("the payload is not JSON") from None
    if not isinstance(p, dict) or p.get("schema") != SCHEMA or p.get("type") != PAYLOAD_TYPE:
        raise EnvelopeFormatError(f"the payload is not a {PAYLOAD_TYPE} schema {SCHEMA} object")
    for name, typ in (("device_id", str), ("boot_id", str), ("msg_id", str), ("issued_at", str)):
        if not isinstance(p.get(name), typ):
            raise EnvelopeFormatError(f"payload field {name!r} is missing or not a {typ.__name__}")
    seq = p.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise EnvelopeFormatError("payload field 'seq' must be a positive integer")
    try:
        issued = dt.datetime.fromisoformat(p["issued_at"].replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeFormatError(f"issued_at {p['issued_at'][:40]!r} is not an RFC 3339 time") from None
    if issued.tzinfo is None:
        raise EnvelopeFormatError("issued_at has no time zone")
    return p, issued


@functools.lru_cache(maxsize=4096)
def _leaf_key(leaf: x509.Certificate) -> ec.EllipticCurvePublicKey:
    try:
        key = leaf.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise EnvelopeFormatError("the x5c certificate's public key cannot be parsed") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError("the signing certificate's key is not ECDSA P-256, which ES256 requires")
    return key


@functools.lru_cache(maxsize=4096)
def _leaf_identity(leaf: x509.Certificate) -> tuple[str, str]:
    """(device id, RFC 7638 kid) of a device certificate; cached per certificate."""
    return device_id_of(leaf), jwk_thumbprint(_leaf_key(leaf))


def verify_envelope(
    data: bytes | str,
    trust_anchors: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList] = (),
    now: dt.datetime | None = None,
    replay_state: ReplayState | None = None,
) -> VerifiedVerdict:
    """Verify one envelope (see the module docstring for the order of checks). Records the
    (device, boot, seq) in ``replay_state`` only when everything else passed."""
    now = now or utcnow()
    jws = parse_flattened(data, typ=ENVELOPE_TYP)
    chain = _x5c(jws.header)
    payload, issued_at = _payload(jws.payload)
    leaf = chain[0]
    leaf_key = _leaf_key(leaf)
    verify_es256(leaf_key, jws.signing_input, jws.signature)
    try:
        path = validate_chain(leaf, chain[1:], trust_anchors, at=issued_at, purpose="device")
        check_revocation(path, crls)
        cert_device, kid = _leaf_identity(leaf)
    except (UnsupportedAlgorithm, ValueError) as exc:  # lazily parsed certificate fields
        raise ChainError(f"a certificate in x5c is malformed: {exc}") from None
    if payload["device_id"] != cert_device:
        raise DeviceMismatchError(
            f"payload says device {payload['device_id'][:64]!r} but the certificate is for {cert_device!r}: "
            "a device may only sign its own verdicts"
        )
    if jws.header.get("kid") != kid:
        raise DeviceMismatchError("kid is not the RFC 7638 thumbprint of the certificate's key")
    if replay_state is not None:
        if replay_state.seen(cert_device, payload["boot_id"], payload["seq"]):
            raise ReplayError(
                f"device {cert_device} boot {payload['boot_id']} seq {payload['seq']} was seen before: replayed envelope"
            )
        replay_state.record(cert_device, payload["boot_id"], payload["seq"])
    warnings = []
    if issued_at > now + dt.timedelta(minutes=10):
        warnings.append(f"issued_at is {issued_at - now} ahead of this verifier's clock")
    for crl in crls:
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            warnings.append(f"CRL from {crl.issuer.rfc4514_string()} is past its nextUpdate; fetch a fresh one")
    return VerifiedVerdict(
        payload, cert_device, payload["boot_id"], payload["seq"], payload["msg_id"], issued_at, leaf, kid, tuple(warnings)
    )


@dataclass(frozen=True)
class VerificationOutcome:
    ok: bool
    reason: str  # "valid" or an EnvelopeError.reason
    message: str
    verdict: VerifiedVerdict | None = None


class Verifier:
    """Verifies a stream of envelopes; never raises for bad input, counts outcomes by reason."""

    def __init__(
        self,
        trust_anchors: Sequence[x509.Certificate],
        crls: Sequence[x509.CertificateRevocationList] = (),
        replay_state: ReplayState | None = None,
    ) -> None:
        self.trust_anchors = list(trust_anchors)
        self.crls = list(crls)
        self.replay_state = replay_state
        self.stats: Counter[str] = Counter()

    def verify(self, data: bytes | str, now: dt.datetime | None = None) -> VerificationOutcome:
        try:
            v = verify_envelope(data, self.trust_anchors, self.crls, now, self.replay_state)
        except EnvelopeError as exc:
            self.stats[exc.reason] += 1
            return VerificationOutcome(False, exc.reason, str(exc))
        except Exception as exc:  # a bug must cost one envelope, not the collector
            _log.exception("verifier error")
            self.stats["verifier_error"] += 1
            return VerificationOutcome(False, "verifier_error", f"{type(exc).__name__}: {exc}")
        self.stats["valid"] += 1
        return VerificationOutcome(True, "valid", v.summary(), v)
