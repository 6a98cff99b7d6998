"""Signed verdict envelopes: a payload (:mod:`.payload`) as a flattened JWS (RFC 7515 §7.2.2),
ES256 (RFC 7518 §3.4), with the device certificate chain in ``x5c`` (RFC 7515 §4.1.6: standard
base64 DER, the signing certificate first, the fleet CA root left out — verifiers bring it) and
``kid`` = the RFC 7638 JWK SHA-256 thumbprint of the device public key (not ``x5t#S256``: the
thumbprint names the *key*, so it survives certificate renewal with the same key and matches what
JOSE libraries compute, e.g. ``jwcrypto.jwk.JWK.thumbprint()``).

Everything is in the protected header, so the chain and kid are covered by the signature.
:func:`build_envelope` is pure (payload + signer + chain -> bytes); :class:`VerdictSigner` is the
small stateful edge that adds sequence numbers, time and clock status.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import EnrollmentError
from ..verdict import Verdict
from .certs import device_id_of, utcnow
from .clock import clock_synchronised
from .jws import Signer, b64url_encode, jwk_thumbprint, sign_encoded_header
from .payload import DeviceContext, build_verdict_payload
from .sequence import SequenceStore

__all__ = ["ENVELOPE_TYP", "PROCESS_BOOT_ID", "build_envelope", "VerdictSigner"]

ENVELOPE_TYP = "edge-agent.verdict+jws"
_CLOCK_TTL_S = 60.0
# One boot id per process start: a collector sees a restart as a new boot, and (device, boot,
# seq) identifies a message even if the sequence file were ever restored from an old backup.
PROCESS_BOOT_ID = DeviceContext.new_boot_id()


def build_envelope(payload: dict[str, Any], key: Signer, chain: Sequence[x509.Certificate]) -> bytes:
    """Sign ``payload`` (serialised as canonical JSON: sorted keys, no spaces) with ``key``.
    ``chain[0]`` must be the certificate of ``key``."""
    if not chain:
        raise EnrollmentError("no device certificate: run `edge-agent enroll install` first")
    protected_b64, cert_key = _header(tuple(chain))
    if key.public_key() != cert_key:
        raise EnrollmentError("the device certificate does not belong to the signing key (stale certificate?)")
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return sign_encoded_header(protected_b64, body, key)


@functools.lru_cache(maxsize=64)
def _header(chain: tuple[x509.Certificate, ...]) -> tuple[str, ec.EllipticCurvePublicKey]:
    """The encoded protected header for a chain (the same for every verdict of a device) and
    the leaf's public key."""
    leaf_key = chain[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise EnrollmentError("the device certificate's key is not ECDSA P-256")
    header = {
        "alg": "ES256",
        "typ": ENVELOPE_TYP,
        "kid": jwk_thumbprint(leaf_key),
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain],
    }
    protected = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii")
    return b64url_encode(protected), leaf_key


class VerdictSigner:
    """Signs verdicts for one process: one boot id, a persisted sequence, the clock status.

    Not pure on purpose — it reads the clock and advances the sequence — but each of those is
    injected, so tests pin them.
    """

    def __init__(
        self,
        key: Signer,
        chain: Sequence[x509.Certificate],
        sequence: SequenceStore,
        site_secret: bytes,
        boot_id: str | None = None,
        now: Callable[[], dt.datetime] = utcnow,
        clock_status: Callable[[], bool | None] = clock_synchronised,
    ) -> None:
        self.key = key
        self.chain = tuple(chain)
        self.device = DeviceContext(device_id_of(self.chain[0]), boot_id or PROCESS_BOOT_ID, site_secret)
        self.sequence = sequence
        self._now = now
        self._clock_status = clock_status
        self._clock_cache: tuple[float, bool | None] | None = None

    def _clock_synced(self) -> bool | None:
        # The sync state changes on a scale of minutes; asking once a minute keeps a possible
        # `timedatectl` subprocess off the per-verdict path.
        t = time.monotonic()
        if self._clock_cache is None or t - self._clock_cache[0] > _CLOCK_TTL_S:
            self._clock_cache = (t, self._clock_status())
        return self._clock_cache[1]

    def sign(self, verdict: Verdict) -> bytes:
        payload = build_verdict_payload(
            verdict, self.device, seq=self.sequence.next(), issued_at=self._now(), clock_synced=self._clock_synced()
        )
        return build_envelope(payload, self.key, self.chain)
