"""Signed models: the vendor signs ``manifest.json`` (which pins every model file's SHA-256) and
ships the signature as ``manifest.sig.json`` beside it; the agent verifies both before loading.

Format: a flattened JWS (RFC 7515 §7.2.2), ES256, payload = the exact bytes of ``manifest.json``
(embedded, so any JOSE library verifies the file alone), ``x5c`` = the model-signing certificate
chain (EKU codeSigning), ``iat`` (RFC 7519 §4.1.6 NumericDate, in the protected header) = when it
was signed; the chain is judged at that time so a model stays loadable after the signing
certificate expires, as with timestamped code signing.

Why JWS and not OpenSSF model-signing (Sigstore bundles): Sigstore's keyless flow needs Fulcio
and Rekor online at signing *and* its verification policy expects a transparency-log inclusion
proof, while devices in a hospital network verify offline against one pinned vendor CA. JWS reuses
the code, the verifier and the trust model of signed verdicts, and any JOSE library can check it.
(model-signing's "private key" mode would work offline too, but brings a second envelope format
— DSSE in-toto — for no gain here.)
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import EnvelopeError, ModelSignatureError
from ..manifest import load_manifest
from .certs import load_certificates, utcnow, validate_chain
from .jws import Signer, jwk_thumbprint, parse_flattened, sign_flattened, verify_es256

__all__ = ["MODEL_SIG_TYP", "SIGNATURE_NAME", "sign_manifest", "verify_manifest_signature", "verify_signed_model"]

MODEL_SIG_TYP = "edge-agent.model-manifest+jws"
SIGNATURE_NAME = "manifest.sig.json"


def sign_manifest(manifest_bytes: bytes, key: Signer, chain: Sequence[x509.Certificate], now: dt.datetime) -> bytes:
    """Pure: manifest bytes + signer -> ``manifest.sig.json`` bytes."""
    header = {
        "alg": "ES256",
        "typ": MODEL_SIG_TYP,
        "kid": jwk_thumbprint(key.public_key()),
        "iat": int(now.timestamp()),
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain],
    }
    return sign_flattened(header, manifest_bytes, key)


def verify_manifest_signature(
    manifest_bytes: bytes,
    signature: bytes,
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Raise :class:`ModelSignatureError` unless ``signature`` is a valid vendor signature over
    exactly ``manifest_bytes``; returns the signer's certificate."""
    try:
        jws = parse_flattened(signature, typ=MODEL_SIG_TYP)
        x5c = jws.header.get("x5c")
        iat = jws.header.get("iat")
        if not isinstance(x5c, list) or not x5c or not isinstance(iat, int) or isinstance(iat, bool):
            raise ModelSignatureError("manifest.sig.json lacks x5c or iat in its protected header")
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c[:4]]
        verify_es256(chain[0].public_key(), jws.signing_input, jws.signature)  # type: ignore[arg-type]
        signed_at = dt.datetime.fromtimestamp(iat, dt.timezone.utc)
        if signed_at > (now or utcnow()) + dt.timedelta(days=1):
            raise ModelSignatureError(f"the model signature claims a signing time in the future ({signed_at:%Y-%m-%d})")
        validate_chain(chain[0], chain[1:], trust_anchors, at=signed_at, purpose="model")
    except ModelSignatureError:
        raise
    except EnvelopeError as exc:
        raise ModelSignatureError(f"the model signature is not valid ({exc.reason}): {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ModelSignatureError(f"manifest.sig.json is malformed: {exc}") from None
    if jws.payload != manifest_bytes:
        raise ModelSignatureError(
            "manifest.json differs from the manifest the vendor signed: it was edited after signing; reinstall the model"
        )
    return chain[0]


def verify_signed_model(model_dir: str | Path, trust_anchor_pem: bytes, now: dt.datetime | None = None) -> None:
    """Refuse a model unless ``manifest.sig.json`` verifies against ``trust_anchor_pem`` (the
    vendor model-signing CA) *and* every file matches the signed manifest's SHA-256.

    Raises :class:`~edge_agent.errors.ModelSignatureError` (signature) or
    :class:`~edge_agent.errors.ModelIntegrityError` naming the file that differs."""
    d = Path(model_dir)
    d = d.parent if d.name == "manifest.json" else d
    sig_path = d / SIGNATURE_NAME
    try:
        manifest_bytes = (d / "manifest.json").read_bytes()
        signature = sig_path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelSignatureError(
            f"{exc.filename} is missing: the model is unsigned; only vendor-signed models are loaded"
        ) from None
    try:
        anchors = load_certificates(trust_anchor_pem)
    except Exception as exc:
        raise ModelSignatureError(f"the model trust anchor is not a PEM certificate: {exc}") from None
    verify_manifest_signature(manifest_bytes, signature, anchors, now)
    load_manifest(d).verify_files()
