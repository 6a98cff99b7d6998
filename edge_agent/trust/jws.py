"""JSON Web Signature (RFC 7515) in the flattened JSON serialization, ES256 only. Pure: bytes in,
bytes out; the private key is injected as a :class:`Signer`.

* Flattened JSON serialization: RFC 7515 §7.2.2 — ``{"protected", "payload", "signature"}``.
* Signing input: RFC 7515 §5.1 step 5 — ``ASCII(BASE64URL(protected) '.' BASE64URL(payload))``.
* ES256: RFC 7518 §3.4 — ECDSA P-256 + SHA-256; the signature is the 64-byte big-endian
  ``R || S``, *not* the DER ``Ecdsa-Sig-Value`` that X.509 and OpenSSL use.
* base64url without padding: RFC 7515 §2 and Appendix C.

Only ``alg: ES256`` is accepted when parsing: the header cannot downgrade the algorithm
(``none``, HS256 with the public key as secret — the classic JOSE algorithm-confusion attacks).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from hashlib import sha256
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ..errors import EnvelopeFormatError, SignatureError

__all__ = [
    "Signer",
    "ParsedJws",
    "b64url_encode",
    "b64url_decode",
    "der_to_raw",
    "raw_to_der",
    "sign_flattened",
    "sign_encoded_header",
    "parse_flattened",
    "verify_es256",
    "jwk_thumbprint",
    "MAX_ENVELOPE_BYTES",
]

# A verdict envelope is ~3 kB; a model signature a little more. Anything far larger is refused
# before JSON parsing, so a hostile input cannot make the verifier allocate without bound.
MAX_ENVELOPE_BYTES = 256 * 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ES256 = ec.ECDSA(hashes.SHA256())
_P256_BYTES = 32


class Signer(Protocol):
    """Anything that can make an ES256 signature: a key file, a PKCS#11 token, a TPM."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_es256(self, data: bytes) -> bytes:
        """ECDSA P-256 / SHA-256 over ``data``; returns raw ``R || S`` (64 bytes)."""
        ...


@dataclass(frozen=True)
class ParsedJws:
    header: dict[str, Any]
    payload: bytes
    signature: bytes
    signing_input: bytes


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): rejects '=', '+', '/', whitespace."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise EnvelopeFormatError("a JWS member is not base64url text (RFC 7515 §2)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise EnvelopeFormatError("a JWS member is not valid base64url (RFC 7515 §2)") from None


def der_to_raw(der_signature: bytes) -> bytes:
    """DER Ecdsa-Sig-Value -> ES256 ``R || S`` (RFC 7518 §3.4), each left-padded to 32 bytes."""
    r, s = decode_dss_signature(der_signature)
    return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")


def raw_to_der(raw: bytes) -> bytes:
    if len(raw) != 2 * _P256_BYTES:
        raise SignatureError(
            f"ES256 signature is {len(raw)} bytes; RFC 7518 §3.4 requires 64 (R || S), not DER"
        )
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_flattened(protected_header: dict[str, Any], payload: bytes, signer: Signer) -> bytes:
    """Build a flattened JWS (RFC 7515 §7.2.2) over ``payload``; returns UTF-8 JSON bytes."""
    if protected_header.get("alg") != "ES256":
        raise ValueError("only ES256 is supported")
    return sign_encoded_header(b64url_encode(_canonical_json(protected_header)), payload, signer)


def sign_encoded_header(protected_b64: str, payload: bytes, signer: Signer) -> bytes:
    """:func:`sign_flattened` with the protected header already encoded (a device's header is the
    same for every verdict, so its ~1.5 kB of JSON and base64 is done once)."""
    payload_b64 = b64url_encode(payload)
    signing_input = f"{protected_b64}.{payload_b64}".encode("ascii")
    signature = signer.sign_es256(signing_input)
    if len(signature) != 2 * _P256_BYTES:
        raise SignatureError(f"the signer returned {len(signature)} bytes; ES256 needs 64 (R || S)")
    # The same bytes as canonical JSON of the three members (sorted keys, no spaces); written
    # out directly because base64url needs no JSON escaping and this is the per-verdict path.
    return (
        f'{{"payload":"{payload_b64}","protected":"{protected_b64}","signature":"{b64url_encode(signature)}"}}'
    ).encode("ascii")


def parse_flattened(data: bytes | str, typ: str | None = None) -> ParsedJws:
    """Parse a flattened JWS, checking shape only (no signature check). Raises
    :class:`EnvelopeFormatError` for anything that is not an ES256 flattened JWS."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeFormatError(f"envelope is {len(data)} bytes; the limit is {MAX_ENVELOPE_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeFormatError("envelope is not JSON (truncated or altered?)") from None
    if not isinstance(obj, dict) or not {"protected", "payload", "signature"} <= obj.keys():
        raise EnvelopeFormatError(
            "envelope is not a flattened JWS: expected members protected, payload, signature "
            "(RFC 7515 §7.2.2)"
        )
    if "header" in obj:
        # Unprotected header parameters could be swapped by anyone; we put everything in
        # the protected header and refuse envelopes that rely on the unprotected one.
        raise EnvelopeFormatError("unprotected 'header' member is not accepted; use the protected header")
    protected_b64, payload_b64, sig_b64 = obj["protected"], obj["payload"], obj["signature"]
    try:
        header = json.loads(b64url_decode(protected_b64))
    except (ValueError, UnicodeDecodeError):
        raise EnvelopeFormatError("protected header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise EnvelopeFormatError("protected header is not a JSON object")
    if header.get("alg") != "ES256":
        raise EnvelopeFormatError(f"alg {header.get('alg')!r} is not accepted; only ES256 (RFC 7518 §3.4)")
    if "crit" in header:
        raise EnvelopeFormatError("'crit' header parameters are not understood (RFC 7515 §4.1.11)")
    if typ is not None and header.get("typ") != typ:
        raise EnvelopeFormatError(f"typ {header.get('typ')!r}; expected {typ!r}")
    payload = b64url_decode(payload_b64)
    signature = b64url_decode(sig_b64)
    if len(signature) != 2 * _P256_BYTES:
        raise EnvelopeFormatError(
            f"ES256 signature is {len(signature)} bytes; RFC 7518 §3.4 requires 64 (R || S)"
        )
    return ParsedJws(header, payload, signature, f"{protected_b64}.{payload_b64}".encode("ascii"))


def verify_es256(public_key: ec.EllipticCurvePublicKey, signing_input: bytes, raw_signature: bytes) -> None:
    """Raise :class:`SignatureError` unless ``raw_signature`` is a valid ES256 signature."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise SignatureError("the signing certificate's key is not ECDSA P-256, which ES256 requires")
    try:
        public_key.verify(raw_to_der(raw_signature), signing_input, _ES256)
    except InvalidSignature:
        raise SignatureError(
            "the ES256 signature does not verify with the certificate's key: the envelope was "
            "altered, or signed by another key"
        ) from None


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK SHA-256 thumbprint of a P-256 key: the required members ``crv, kty, x, y``
    in lexicographic order, no whitespace (§3.2, §3.3), hashed, base64url."""
    nums = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url_encode(nums.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url_encode(nums.y.to_bytes(_P256_BYTES, "big")),
    }
    return b64url_encode(sha256(_canonical_json(jwk)).digest())
