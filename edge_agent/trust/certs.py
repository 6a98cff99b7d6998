"""X.509 profiles for the fleet (RFC 5280) and path validation for verifiers. Pure: keys and
certificates in, certificates out; no files.

Profiles
  fleet CA        self-signed P-256; basicConstraints CA:TRUE pathlen 0 (critical, §4.2.1.9);
                  keyUsage keyCertSign|cRLSign (critical, §4.2.1.3); SKI (§4.2.1.2).
  device          subject CN = device id; SAN URI ``urn:edge-agent:device:<id>`` (+ optional DNS)
                  (§4.2.1.6); keyUsage digitalSignature (critical) — ES256 verdict signatures and
                  the TLS 1.3 / ECDHE client signature both need exactly that bit; EKU clientAuth
                  (§4.2.1.12) for MQTT mTLS; validity at most 365 days.
  model signer    subject CN = signer name; keyUsage digitalSignature; EKU codeSigning only, so
                  a device certificate cannot sign a model and a model signer cannot pose as a
                  device.
  server          the site's MQTT broker: subject CN = a name; SAN DNS / IP names the clients
                  dial (§4.2.1.6; TLS clients match the SAN, never the CN: RFC 6125 §6.4.4);
                  keyUsage digitalSignature (ECDHE_ECDSA); EKU serverAuth only, so a broker
                  certificate cannot pose as a device; validity at most 365 days.

Validation (:func:`validate_chain`) first finds the path by issuer signature to classify a
foreign CA, then checks each certificate's validity at the *given* time (the verdict's issue
time, or the model signature's time) to name expired vs not-yet-valid, then runs
``cryptography``'s RFC 5280 path validator as the authoritative check.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import threading
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..errors import (
    CertificateAuthorityError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateRevokedError,
    ChainError,
    EnrollmentError,
)

__all__ = [
    "DEVICE_URN_PREFIX",
    "MAX_DEVICE_DAYS",
    "CLOCK_SKEW",
    "validate_device_id",
    "build_ca_certificate",
    "build_device_certificate",
    "build_model_signer_certificate",
    "build_server_certificate",
    "MAX_SERVER_DAYS",
    "device_id_of",
    "validate_chain",
    "check_revocation",
    "load_certificates",
    "utcnow",
]

DEVICE_URN_PREFIX = "urn:edge-agent:device:"
MAX_DEVICE_DAYS = 365
MAX_SERVER_DAYS = 365
# Back-date notBefore so a device whose clock is a little behind the CA's can use a fresh cert.
CLOCK_SKEW = dt.timedelta(minutes=5)
# Validated chains and CRL signature checks, so a collector verifying thousands of envelopes
# from the same few hundred devices does the expensive RFC 5280 work once per device.
_CACHE_SIZE = 4096
_CACHE_LOCK = threading.Lock()
_PATH_CACHE: dict[tuple[object, ...], list[x509.Certificate]] = {}
_CRL_CACHE: dict[tuple[bytes, x509.Certificate], bool] = {}
_DEVICE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")  # RFC 1123 §2.1; no wildcards


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def validate_device_id(device_id: str) -> str:
    """A device id is one lower-case DNS label (RFC 1035 §2.3.1): it goes in the CN, the URN and
    optionally a DNS SAN, and is safe in file names and MQTT topics."""
    if not isinstance(device_id, str) or not _DEVICE_ID.match(device_id):
        raise EnrollmentError(
            f"device id {device_id!r} is not valid: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'ct-scanner-0042')"
        )
    return device_id


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise EnrollmentError(f"not a PEM certificate file: {exc}") from None
    return certs


def _ski(public_key: ec.EllipticCurvePublicKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def _require_p256(public_key: object, what: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
        raise CertificateAuthorityError(f"{what} key is not ECDSA P-256; the fleet profile requires P-256")
    return public_key


def build_ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey, name: str, days: int, now: dt.datetime
) -> x509.Certificate:
    _require_p256(ca_key.public_key(), "CA")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    pub = ca_key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(pub), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _leaf_builder(
    subject_cn: str,
    public_key: ec.EllipticCurvePublicKey,
    ca_cert: x509.Certificate,
    days: int,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    not_before = now - CLOCK_SKEW
    not_after = min(not_before + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(_ski(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )


def build_device_certificate(
    csr: x509.CertificateSigningRequest,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    now: dt.datetime,
    dns_suffix: str | None = None,
) -> x509.Certificate:
    """Issue a device certificate for a CSR. The CA takes only the device id (CN) and public key
    from the CSR and writes every extension itself: a device cannot ask for CA rights or
    another device's name."""
    if not 1 <= days <= MAX_DEVICE_DAYS:
        raise CertificateAuthorityError(f"--days {days}: a device certificate lives 1..{MAX_DEVICE_DAYS} days")
    if not csr.is_signature_valid:
        raise CertificateAuthorityError("the CSR's self-signature does not verify (altered or corrupt CSR)")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CertificateAuthorityError("the CSR must have exactly one CN (the device id)")
    device_id = validate_device_id(str(cns[0].value))
    pub = _require_p256(csr.public_key(), "the CSR's")
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(DEVICE_URN_PREFIX + device_id)]
    if dns_suffix:
        names.append(x509.DNSName(f"{device_id}.{dns_suffix.strip('.')}"))
    builder = (
        _leaf_builder(device_id, pub, ca_cert, days, now)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    return builder.sign(ca_key, hashes.SHA256())


def build_model_signer_certificate(
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    _require_p256(public_key, "model signer")
    return (
        _leaf_builder(name, public_key, ca_cert, days, now)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def build_server_certificate(
    public_key: ec.EllipticCurvePublicKey,
    name: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    now: dt.datetime,
) -> x509.Certificate:
    """A TLS server certificate (the site's MQTT broker) for the names clients connect to."""
    if not 1 <= days <= MAX_SERVER_DAYS:
        raise CertificateAuthorityError(f"--days {days}: a server certificate lives 1..{MAX_SERVER_DAYS} days")
    _require_p256(public_key, "the server")
    if not name.strip():
        raise CertificateAuthorityError("a server certificate needs a name (its CN, e.g. broker.site-a)")
    names: list[x509.GeneralName] = []
    for dns in dns_names:
        if len(dns) > 253 or not all(_HOST_LABEL.match(label) for label in dns.split(".")):
            raise CertificateAuthorityError(f"DNS name {dns!r} is not a host name (e.g. broker.site-a.example)")
        names.append(x509.DNSName(dns.lower()))
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise CertificateAuthorityError(f"IP address {ip!r} is not an IPv4 or IPv6 address") from None
    if not names:
        raise CertificateAuthorityError("a server certificate needs at least one DNS name or IP address (its SAN)")
    return (
        _leaf_builder(name, public_key, ca_cert, days, now)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def device_id_of(cert: x509.Certificate) -> str:
    """The device id the certificate vouches for: its ``urn:edge-agent:device:`` SAN URI, which
    must agree with the CN."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ChainError("the certificate has no subjectAltName; it is not a fleet device certificate") from None
    urns = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(DEVICE_URN_PREFIX)]
    if len(urns) != 1:
        raise ChainError(f"the certificate must name exactly one {DEVICE_URN_PREFIX}<id> URI; found {len(urns)}")
    device_id = urns[0][len(DEVICE_URN_PREFIX):]
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [device_id]:
        raise ChainError(f"the certificate's CN {cns} disagrees with its device URN {device_id!r}")
    return device_id


def _find_path(
    leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    path = [leaf]
    cur = leaf
    for _ in range(4):
        for anchor in anchors:
            if _issued_by(cur, anchor):
                path.append(anchor)
                return path
        nxt = next((c for c in intermediates if c not in path and _issued_by(cur, c)), None)
        if nxt is None:
            break
        path.append(nxt)
        cur = nxt
    raise ChainError(
        f"certificate {leaf.subject.rfc4514_string()} (issuer {cur.issuer.rfc4514_string()}) does not chain "
        "to any trusted fleet CA: a foreign CA, or the wrong --trust file"
    )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # InvalidSignature, name mismatch, unsupported key type: not the issuer
        return False


def _code_signing_only(policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise ValueError("the certificate's EKU does not include codeSigning")


def validate_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    at: dt.datetime,
    purpose: str = "device",
) -> list[x509.Certificate]:
    """Validate ``leaf`` up to one of ``anchors`` as of time ``at`` (RFC 5280 §6.1); returns the
    path leaf..anchor. ``purpose`` is ``device`` (EKU clientAuth) or ``model`` (codeSigning).

    Raises :class:`ChainError` (foreign CA, wrong profile), :class:`CertificateExpiredError` or
    :class:`CertificateNotYetValidError` (validity §4.1.2.5 at ``at``)."""
    if not anchors:
        raise ChainError("no trust anchor given; pass the fleet CA certificate")
    key = (leaf, tuple(intermediates), tuple(anchors), purpose)
    with _CACHE_LOCK:
        cached = _PATH_CACHE.get(key)
    path = cached if cached is not None else _find_path(leaf, intermediates, anchors)
    for cert in path:
        what = "device" if cert is leaf else "CA"
        if at > cert.not_valid_after_utc:
            raise CertificateExpiredError(
                f"the {what} certificate {cert.subject.rfc4514_string()} expired {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, "
                f"before the time of signing {at:%Y-%m-%dT%H:%M:%SZ}; renew it (`edge-agent enroll renew`)"
            )
        if at < cert.not_valid_before_utc:
            raise CertificateNotYetValidError(
                f"the {what} certificate {cert.subject.rfc4514_string()} is valid only from "
                f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}, after the time of signing {at:%Y-%m-%dT%H:%M:%SZ} "
                "(device clock wrong?)"
            )
    if cached is not None:
        # RFC 5280 path validation depends on time only through the validity periods just
        # checked, so a chain that passed the full policy once passes it at any valid time.
        return path
    builder = PolicyBuilder().store(Store(list(anchors))).time(at).max_chain_depth(2)
    try:
        if purpose == "device":
            builder.build_client_verifier().verify(leaf, list(intermediates))
        elif purpose == "model":
            # A model signer is named by its CN, not a SAN; its EKU must say codeSigning.
            ee = (
                ExtensionPolicy.webpki_defaults_ee()
                .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _code_signing_only)
                .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
            )
            builder.extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
            ).build_client_verifier().verify(leaf, list(intermediates))
        else:
            raise ValueError(f"unknown purpose {purpose!r}")
    except VerificationError as exc:
        raise ChainError(f"the certificate chain is not valid for {purpose} signing (RFC 5280): {exc}") from None
    with _CACHE_LOCK:
        if len(_PATH_CACHE) >= _CACHE_SIZE:
            _PATH_CACHE.pop(next(iter(_PATH_CACHE)))
        _PATH_CACHE[key] = path
    return path


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = (crl.fingerprint(hashes.SHA256()), issuer)
    with _CACHE_LOCK:
        hit = _CRL_CACHE.get(key)
    if hit is None:
        try:
            hit = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, ValueError):
            hit = False
        with _CACHE_LOCK:
            if len(_CRL_CACHE) >= _CACHE_SIZE:
                _CRL_CACHE.pop(next(iter(_CRL_CACHE)))
            _CRL_CACHE[key] = hit
    return hit


def check_revocation(path: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]) -> None:
    """Raise :class:`CertificateRevokedError` if any non-anchor certificate of ``path`` is listed on
    a CRL that its issuer signed (RFC 5280 §6.3). CRLs from other issuers are ignored."""
    for cert, issuer in zip(path, path[1:]):
        for crl in crls:
            if crl.issuer != issuer.subject or not _crl_signed_by(crl, issuer):
                continue  # a CRL not signed by the issuer says nothing
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                raise CertificateRevokedError(
                    f"certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) was revoked "
                    f"on {entry.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ} by {issuer.subject.rfc4514_string()}"
                )
