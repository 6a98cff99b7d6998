"""Signed verdict envelopes interoperate: two independent JOSE libraries (joserfc, jwcrypto)
verify what we sign, and we verify what they sign — and reject it when the key is wrong."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws as joserfc_jws
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from edge_agent.errors import EnvelopeFormatError, SignatureError
from edge_agent.trust.certs import validate_chain
from edge_agent.trust.envelope import ENVELOPE_TYP, build_envelope
from edge_agent.trust.jws import b64url_decode, b64url_encode
from edge_agent.trust.verify import verify_envelope
from trust_factory import NOW, new_device, new_fleet, payload_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    ca = new_fleet(tmp_path_factory.mktemp("ca"))
    device = new_device(ca)
    envelope = build_envelope(payload_for(), device.key, [device.cert])
    return ca, device, envelope


def _leaf_from_x5c(envelope: bytes) -> x509.Certificate:
    header = json.loads(b64url_decode(json.loads(envelope)["protected"]))
    return x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))


def test_joserfc_verifies_our_envelope_with_only_the_fleet_ca(world) -> None:  # type: ignore[no-untyped-def]
    ca, device, envelope = world
    leaf = _leaf_from_x5c(envelope)
    validate_chain(leaf, [], [ca.certificate()], at=NOW)  # the fleet CA is the only thing brought
    # joserfc caps protected headers at 512 bytes by default (a DoS guard); x5c with one P-256
    # certificate makes ours ~1.1 kB, so a verifier raises the cap — a documented interop note.
    registry = JWSRegistry(algorithms=["ES256"])
    registry.max_header_length = 8192
    result = joserfc_jws.deserialize_json(json.loads(envelope), ECKey.import_key(leaf.public_key()), registry=registry)
    assert json.loads(result.payload)["device_id"] == "ct-0042"
    assert result.headers()["typ"] == ENVELOPE_TYP


def test_jwcrypto_verifies_our_envelope_and_kid_is_its_rfc7638_thumbprint(world) -> None:  # type: ignore[no-untyped-def]
    _, device, envelope = world
    leaf = _leaf_from_x5c(envelope)
    key = jwcrypto_jwk.JWK.from_pyca(leaf.public_key())
    token = jwcrypto_jws.JWS()
    token.deserialize(envelope.decode(), key=key)  # raises on a bad signature
    assert json.loads(token.payload)["seq"] == 1
    assert token.jose_header["kid"] == key.thumbprint()  # RFC 7638 SHA-256
    assert leaf == device.cert


def test_es256_signature_is_64_raw_bytes_not_der(world) -> None:  # type: ignore[no-untyped-def]
    _, _, envelope = world
    sig = b64url_decode(json.loads(envelope)["signature"])
    assert len(sig) == 64  # R || S, 32 bytes each (RFC 7518 §3.4); DER would be 70-72 bytes


def test_we_verify_an_envelope_that_jwcrypto_signed_with_the_device_key(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    device = new_device(ca)
    ours = json.loads(build_envelope(payload_for(), device.key, [device.cert]))
    header = json.loads(b64url_decode(ours["protected"]))
    token = jwcrypto_jws.JWS(b64url_decode(ours["payload"]))
    token.add_signature(jwcrypto_jwk.JWK.from_pyca(device.key.private_key), alg="ES256", protected=json.dumps(header))
    theirs = token.serialize()  # flattened JSON
    assert verify_envelope(theirs, [ca.certificate()], now=NOW).device_id == "ct-0042"


def test_envelope_signed_by_joserfc_with_a_wrong_key_is_rejected_as_bad_signature(world) -> None:  # type: ignore[no-untyped-def]
    ca, _, envelope = world
    ours = json.loads(envelope)
    header = json.loads(b64url_decode(ours["protected"]))  # the real device's x5c and kid
    registry = JWSRegistry(algorithms=["ES256"])
    registry.max_header_length = 8192
    forged = joserfc_jws.serialize_json(
        {"protected": header}, b64url_decode(ours["payload"]), ECKey.generate_key("P-256"), registry=registry
    )
    with pytest.raises(SignatureError):
        verify_envelope(json.dumps(forged), [ca.certificate()], now=NOW)


@pytest.mark.parametrize("alg", ["none", "HS256", "ES384", "RS256"])
def test_algorithm_confusion_is_refused(world, alg: str) -> None:  # type: ignore[no-untyped-def]
    ca, _, envelope = world
    ours = json.loads(envelope)
    header = json.loads(b64url_decode(ours["protected"]))
    header["alg"] = alg
    ours["protected"] = b64url_encode(json.dumps(header).encode())
    with pytest.raises(EnvelopeFormatError, match="alg"):
        verify_envelope(json.dumps(ours), [ca.certificate()], now=NOW)


def test_a_der_signature_is_refused_as_malformed(world) -> None:  # type: ignore[no-untyped-def]
    ca, device, envelope = world
    ours = json.loads(envelope)
    from cryptography.hazmat.primitives import hashes

    signing_input = f"{ours['protected']}.{ours['payload']}".encode()
    ours["signature"] = b64url_encode(device.key.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    with pytest.raises(EnvelopeFormatError, match="64"):
        verify_envelope(json.dumps(ours), [ca.certificate()], now=NOW)


# RFC 7515 Appendix A.3 (ES256): the published key, signing input and signature. ECDSA is
# randomised, so this checks our R || S decoding and verification against the standard's own
# vector rather than against our signer.
_A3_X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
_A3_Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
_A3_INPUT = ("eyJhbGciOiJFUzI1NiJ9."
             "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ")
_A3_SIG = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"


def test_es256_verifier_accepts_the_rfc7515_appendix_a3_vector_and_rejects_a_flip() -> None:
    from edge_agent.trust.jws import verify_es256

    key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(_A3_X), "big"), int.from_bytes(b64url_decode(_A3_Y), "big"), ec.SECP256R1()
    ).public_key()
    verify_es256(key, _A3_INPUT.encode(), b64url_decode(_A3_SIG))
    bad = bytearray(b64url_decode(_A3_SIG))
    bad[10] ^= 1
    with pytest.raises(SignatureError):
        verify_es256(key, _A3_INPUT.encode(), bytes(bad))
