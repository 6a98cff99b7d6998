"""Signatures that carry their signer: a flattened JWS (RFC 7515 §7.2.2), ES256, with the
signer's certificate chain in ``x5c`` (§4.1.6) and the signing time ``iat`` (RFC 7519 §4.1.6) in
the protected header, judged against trust anchors as of that time, like timestamped code
signing. Signed models (:mod:`.model_signing`) and signed device enrolments
(:mod:`.enrolment_signing`) are this form with their own ``typ`` and payload.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import EnvelopeError
from .certs import utcnow, validate_chain
from .jws import Signer, jwk_thumbprint, parse_flattened, sign_flattened, verify_es256

__all__ = ["sign_chained", "verify_chained"]


def sign_chained(typ: str, payload: bytes, key: Signer, chain: Sequence[x509.Certificate], now: dt.datetime) -> bytes:
    """Pure: payload + signer + its chain -> the JWS bytes."""
    header = {
        "alg": "ES256",
        "typ": typ,
        "kid": jwk_thumbprint(key.public_key()),
        "iat": int(now.timestamp()),
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain],
    }
    return sign_flattened(header, payload, key)


def verify_chained(signature: bytes, typ: str, anchors: Sequence[x509.Certificate], purpose: str,
                   now: dt.datetime | None, *, name: str, what: str,
                   error: type[Exception]) -> tuple[bytes, x509.Certificate]:
    """(payload, signer's certificate) of a valid signature; raises ``error`` otherwise, naming the
    file ``name`` or the ``what`` ("model signature") in its message. ``purpose`` as in
    :func:`~.certs.validate_chain`."""
    try:
        jws = parse_flattened(signature, typ=typ)
        x5c, iat = jws.header.get("x5c"), jws.header.get("iat")
        if not isinstance(x5c, list) or not x5c or not isinstance(iat, int) or isinstance(iat, bool):
            raise error(f"{name} lacks x5c or iat in its protected header")
        chain = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True)) for c in x5c[:4]]
        verify_es256(chain[0].public_key(), jws.signing_input, jws.signature)  # type: ignore[arg-type]
        signed_at = dt.datetime.fromtimestamp(iat, dt.timezone.utc)
        if signed_at > (now or utcnow()) + dt.timedelta(days=1):
            raise error(f"the {what} claims a signing time in the future ({signed_at:%Y-%m-%d})")
        validate_chain(chain[0], chain[1:], anchors, at=signed_at, purpose=purpose)
    except error:
        raise
    except EnvelopeError as exc:
        raise error(f"the {what} is not valid ({exc.reason}): {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise error(f"{name} is malformed: {exc}") from None
    return jws.payload, chain[0]
