"""PKCS#10 certificate signing request (RFC 2986) built from DER by hand, so any
:class:`~edge_agent.trust.keys.DeviceKey` can sign it — including a PKCS#11 token, which
``cryptography``'s CSR builder cannot drive (it needs an in-memory private key).

    CertificationRequest ::= SEQUENCE {                              -- RFC 2986 §4.2
        certificationRequestInfo  SEQUENCE {                         -- §4.1
            version       INTEGER { v1(0) },
            subject       Name,
            subjectPKInfo SubjectPublicKeyInfo,
            attributes    [0] IMPLICIT SET OF Attribute },            -- extensionRequest (RFC 2985 §5.4.2)
        signatureAlgorithm  AlgorithmIdentifier,                     -- ecdsa-with-SHA256, no params (RFC 5758 §3.2)
        signature           BIT STRING }                             -- DER Ecdsa-Sig-Value (RFC 3279 §2.2.3)

Name, SubjectPublicKeyInfo and the SAN extension value come from ``cryptography``'s encoders;
only the outer structure is assembled here. Tests check the result with ``openssl req -verify``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from .certs import DEVICE_URN_PREFIX, validate_device_id
from .jws import Signer, raw_to_der

__all__ = ["build_device_csr"]

_OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
_OID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
_OID_SAN = "2.5.29.17"


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _len(len(content)) + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _tlv(0x06, bytes(body))


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def build_device_csr(device_id: str, key: Signer, dns_suffix: str | None = None) -> bytes:
    """A PEM CSR with CN=<device id> and a SAN ``urn:edge-agent:device:<id>`` request, signed by
    ``key`` (proof of possession, RFC 2986 §3). Pure apart from the signer."""
    validate_device_id(device_id)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]).public_bytes()
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(DEVICE_URN_PREFIX + device_id)]
    if dns_suffix:
        names.append(x509.DNSName(f"{device_id}.{dns_suffix.strip('.')}"))
    san_value = x509.SubjectAlternativeName(names).public_bytes()
    extensions = _seq(_seq(_oid(_OID_SAN), _tlv(0x04, san_value)))
    attribute = _seq(_oid(_OID_EXTENSION_REQUEST), _tlv(0x31, extensions))
    info = _seq(_tlv(0x02, b"\x00"), subject, spki, _tlv(0xA0, attribute))
    signature = raw_to_der(key.sign_es256(info))
    csr_der = _seq(info, _seq(_oid(_OID_ECDSA_SHA256)), _tlv(0x03, b"\x00" + signature))
    # Round-trip through cryptography: a malformed structure fails here, on the device.
    csr = x509.load_der_x509_csr(csr_der)
    if not csr.is_signature_valid:
        raise ValueError("the CSR we built does not verify; the key store signed something else")
    return csr.public_bytes(serialization.Encoding.PEM)
