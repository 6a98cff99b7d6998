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

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from ..errors import ModelSignatureError
from ..manifest import load_manifest
from .certs import load_certificates
from .chained_jws import sign_chained, verify_chained
from .jws import Signer

__all__ = ["MODEL_SIG_TYP", "SIGNATURE_NAME", "sign_manifest", "verify_manifest_signature", "verify_signed_model"]

MODEL_SIG_TYP = "edge-agent.model-manifest+jws"
SIGNATURE_NAME = "manifest.sig.json"


def sign_manifest(manifest_bytes: bytes, key: Signer, chain: Sequence[x509.Certificate], now: dt.datetime) -> bytes:
    """Pure: manifest bytes + signer -> ``manifest.sig.json`` bytes."""
    return sign_chained(MODEL_SIG_TYP, manifest_bytes, key, chain, now)


def verify_manifest_signature(
    manifest_bytes: bytes,
    signature: bytes,
    trust_anchors: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Raise :class:`ModelSignatureError` unless ``signature`` is a valid vendor signature over
    exactly ``manifest_bytes``; returns the signer's certificate."""
    payload, signer = verify_chained(signature, MODEL_SIG_TYP, trust_anchors, "model", now,
                                     name=SIGNATURE_NAME, what="model signature", error=ModelSignatureError)
    if payload != manifest_bytes:
        raise ModelSignatureError(
            "manifest.json differs from the manifest the vendor signed: it was edited after signing; reinstall the model"
        )
    return signer


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
