"""Verify DICOM Digital Signatures (PS3.3 C.12.1.1.3, PS3.15 Annex C) and judge provenance.

For every item of every Digital Signatures Sequence (FFFA,FFFA), in the main Data Set and in
sequence items, :func:`inspect_dicom_signatures` checks, in this order:

1. form: a MAC Parameters item with the same MAC ID Number, an explicit VR little endian MAC
   Calculation Transfer Syntax (Table C.12-6), Certificate Type ``X509_1993_SIG`` with a DER
   certificate, a Digital Signature DateTime;
2. integrity: every tag in Data Elements Signed is still present, and the RSA signature (PKCS #1
   v1.5, RFC 8017 8.2) of the MAC over them (``_mac_stream``) holds. The signature is opened with
   the certificate's public key to recover the signed DigestInfo, which tells apart "the signed
   attributes changed" (digest differs: ``tags_altered``) from "the signature or certificate is
   not the one that made it" (nothing recoverable: ``invalid_signature``);
3. coverage, for main Data Set signatures: a signature that covers Pixel Data and the
   identifying UIDs was meant as a Creator signature (PS3.15 C.2), so a Creator-profile
   attribute present but unsigned was *added after signing* (``tags_added``: e.g. an overlay
   drawn on the image); one that does not cover them proves nothing about the pixels
   (``incomplete_coverage``);
4. trust: the Certificate of Signer is a trust anchor or is directly issued by one, and both were
   valid at the Digital Signature DateTime. That time is the signer's claim, not a certified
   timestamp (PS3.3 Table C.12-6 says so of Digital Signature DateTime): a key stolen after its certificate expired could
   back-date; revocation is left to the fleet PKI.

:func:`verify_dicom_signatures` raises the gravest problem found (``errors.py`` tree);
:func:`check_dicom_signatures` never raises and returns a :class:`ProvenanceResult` for the verdict.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pydicom
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import DT

from ..errors import (
    DicomSignatureError,
    SignatureIncomplete,
    SignatureMissing,
    SignatureRejected,
    SignerNotTrusted,
)
from ._creator_profile import REQUIRED_TAGS, creator_tags_present
from ._mac_stream import SIGNATURE_ITEM_EXCLUDED, mac_chunks, unsignable_reason

__all__ = [
    "ProvenanceResult",
    "SignatureReport",
    "load_trust_anchors",
    "inspect_dicom_signatures",
    "verify_dicom_signatures",
    "check_dicom_signatures",
    "provenance_from_reports",
]

Status = Literal["unsigned", "valid", "invalid", "untrusted"]
_STATUSES = ("unsigned", "valid", "invalid", "untrusted")
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float Pixel Data

# RFC 8017 9.2 note 1 (and RFC 3447 for RIPEMD-160): DER DigestInfo prefix of each MAC Algorithm
# defined term (PS3.3 C.12.1.1.3, MAC Algorithm (0400,0015)).
_DIGEST_INFO: dict[str, tuple[bytes, Callable[[], Any]]] = {
    "SHA256": (bytes.fromhex("3031300d060960864801650304020105000420"), hashlib.sha256),
    "SHA384": (bytes.fromhex("3041300d060960864801650304020205000430"), hashlib.sha384),
    "SHA512": (bytes.fromhex("3051300d060960864801650304020305000440"), hashlib.sha512),
    "RIPEMD160": (bytes.fromhex("3021300906052b2403020105000414"), lambda: hashlib.new("ripemd160")),
    "SHA1": (bytes.fromhex("3021300906052b0e03021a05000414"), hashlib.sha1),
    "MD5": (bytes.fromhex("3020300c06082a864886f70d020505000410"), hashlib.md5),
}
# Collisions are practical for these: a signed image could be swapped for a twin.
_WEAK_MACS = frozenset({"SHA1", "MD5"})


@dataclass(frozen=True)
class SignatureReport:
    """One Digital Signatures Sequence item and what its verification found (``problem``)."""

    location: str  # "" = main Data Set, else the item path, e.g. "(0040,A730)[0]"
    uid: str
    signer: str | None  # RFC 4514 subject of the Certificate of Signer
    issuer: str | None
    signed_at: datetime | None
    mac_algorithm: str
    profile: str  # "Creator RSA", "Base RSA" or "" when the form/algorithm fits neither
    signed_tags: tuple[int, ...]
    trust_anchor: str | None = None  # subject of the anchor that vouched, when trusted
    purpose: str = ""  # Digital Signature Purpose (0400,0401) code meaning, if given
    problem: DicomSignatureError | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class ProvenanceResult:
    """What the agent's verdict needs to know about an image's signatures.

    ``status``: ``unsigned`` (no signature), ``valid`` (a trusted Creator signature holds),
    ``invalid`` (the image changed after signing, or a signature is broken/malformed),
    ``untrusted`` (intact, but the signer is not vouched for or the signature proves too little).
    ``code`` is the machine-readable reason (``tags_altered``, ``unknown_signer``...).
    """

    status: Status
    signer: str | None
    signed_at: datetime | None
    reason: str
    code: str = ""

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {self.status!r}")
        if self.status == "valid" and not self.signer:
            raise ValueError("a valid result names its signer")


def load_trust_anchors(path: str | Path) -> tuple[x509.Certificate, ...]:
    """All certificates of a PEM file (a CA bundle, or pinned device certificates)."""
    try:
        anchors = tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    except OSError as exc:
        raise SignerNotTrusted("anchors_unreadable", f"cannot read trust anchors {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SignerNotTrusted("anchors_unreadable", f"{path} holds no PEM certificate ({exc})") from exc
    return anchors


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword_for_tag(tag) or 'private/unknown'}"


def _read(dicom: bytes | bytearray | memoryview | Dataset) -> Dataset:
    if isinstance(dicom, Dataset):
        return dicom
    try:
        return pydicom.dcmread(io.BytesIO(bytes(dicom)))
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not readable"
        raise SignatureRejected("unreadable", f"not a readable DICOM Part 10 file ({exc})") from exc


def _signature_levels(ds: Dataset, path: str = "") -> Iterator[tuple[str, Dataset]]:
    """(path, data set) for every level that holds a Digital Signatures Sequence.

    Only sequences are converted from the raw bytes read: the MAC must see the file's bytes.
    """
    if 0xFFFAFFFA in ds:
        yield path, ds
    for tag in sorted(int(t) for t in ds.keys()):
        if tag in (0xFFFAFFFA, 0x4FFE0001):
            continue
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        if vr == "SQ" or (vr is None and ds[tag].VR == "SQ"):  # None: implicit VR, ask the dictionary
            for index, item in enumerate(ds[tag].value):
                where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})[{index}]"
                yield from _signature_levels(item, f"{path}>{where}" if path else where)


def _der_certificate(value: bytes) -> x509.Certificate:
    # OB values are padded to even length (PS3.5 7.1.1): cut the DER at its own length.
    if len(value) >= 4 and value[0] == 0x30 and value[1] & 0x80:
        n = value[1] & 0x7F
        value = value[: 2 + n + int.from_bytes(value[2 : 2 + n], "big")]
    elif len(value) >= 2 and value[0] == 0x30:
        value = value[: 2 + value[1]]
    return x509.load_der_x509_certificate(value)


def _signed_tags(params: Dataset) -> list[int]:
    value = params.get("DataElementsSigned")
    if value is None or value == "":
        return []
    return [int(t) for t in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]  # VM 1 is a bare tag


def _signed_at(item: Dataset) -> datetime:
    value = str(item.get("DigitalSignatureDateTime", "") or "").strip()
    if not value:
        raise SignatureRejected("malformed", "the signature has no Digital Signature DateTime (0400,0105)")
    try:
        when = DT(value)
    except ValueError as exc:
        raise SignatureRejected("malformed", f"Digital Signature DateTime {value!r} is not a DICOM DT") from exc
    # PS3.3 requires the UTC offset; read a missing one as UTC rather than local time.
    plain = datetime.combine(when.date(), when.timetz())  # a datetime, not pydicom's DT subclass
    return plain if plain.tzinfo else plain.replace(tzinfo=timezone.utc)


def _trusted_by(cert: x509.Certificate, anchors: Sequence[x509.Certificate], at: datetime) -> x509.Certificate:
    subject = cert.subject.rfc4514_string()
    if not anchors:
        raise SignerNotTrusted(
            "no_trust_anchors", f"no trust anchors were given, so signer {subject} is not vouched for (pass --trust CA.pem)"
        )

    def valid_at(c: x509.Certificate, role: str) -> str | None:
        if c.not_valid_before_utc <= at <= c.not_valid_after_utc:
            return None
        return (f"the {role} certificate ({c.subject.rfc4514_string()}) is valid {c.not_valid_before_utc:%Y-%m-%d} "
                f"to {c.not_valid_after_utc:%Y-%m-%d}, not at the signature time {at:%Y-%m-%d %H:%M} UTC")

    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise SignerNotTrusted("untrusted_chain", f"signer {subject}'s Key Usage does not allow signatures")
    if cert in anchors:  # pinned device certificate
        problem = valid_at(cert, "signer")
        if problem:
            raise SignerNotTrusted("untrusted_chain", problem)
        return cert
    issuers = [a for a in anchors if a.subject == cert.issuer]
    if not issuers:
        raise SignerNotTrusted(
            "unknown_signer",
            f"signer {subject} was issued by {cert.issuer.rfc4514_string()}, which is none of the "
            f"{len(anchors)} trust anchor(s): the image was not signed by a device of this fleet",
        )
    problems = []
    for anchor in issuers:
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(f"the signer certificate's signature does not verify with anchor {anchor.subject.rfc4514_string()} (forged or re-issued under the same name)")
            continue
        try:
            is_ca = anchor.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            problems.append(f"anchor {anchor.subject.rfc4514_string()} is not a CA (BasicConstraints cA)")
            continue
        problem = valid_at(cert, "signer") or valid_at(anchor, "CA")
        if problem:
            problems.append(problem)
            continue
        return anchor
    raise SignerNotTrusted("untrusted_chain", "; ".join(problems))


def _check_integrity(level: Dataset, item: Dataset, params: Dataset, public_key: rsa.RSAPublicKey) -> None:
    algorithm = str(params.get("MACAlgorithm", "") or "").strip()
    if algorithm not in _DIGEST_INFO:
        raise SignatureIncomplete("unsupported_mac_algorithm", f"MAC Algorithm {algorithm!r} is not one this verifier knows")
    prefix, new_hash = _DIGEST_INFO[algorithm]
    tags = _signed_tags(params)
    if not tags:
        raise SignatureRejected("malformed", "Data Elements Signed (0400,0020) is empty")
    for tag in tags:
        if tag not in level:
            raise SignatureRejected("tags_altered", f"signed attribute {_tag_name(tag)} has been removed since signing")
        reason = unsignable_reason(level, tag)
        if reason:
            raise SignatureRejected("malformed", f"Data Elements Signed lists {_tag_name(tag)}, which cannot be signed: {reason}")
    mac = new_hash()
    try:
        for chunk in mac_chunks(level, tags):
            mac.update(chunk)
        for chunk in mac_chunks(item, [int(t) for t in item.keys() if int(t) not in SIGNATURE_ITEM_EXCLUDED]):
            mac.update(chunk)
    except (ValueError, KeyError) as exc:
        raise SignatureRejected("malformed", f"the signed attributes cannot be encoded for the MAC: {exc}") from exc
    signature = bytes(item.get("Signature", b"") or b"")
    try:
        recovered = public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (ValueError, InvalidSignature):
        raise SignatureRejected(
            "invalid_signature",
            f"the Signature ({len(signature)} bytes) does not open with the Certificate of Signer's "
            f"{public_key.key_size}-bit key: it is truncated or corrupt, or the certificate was swapped",
        ) from None
    if recovered == prefix + mac.digest():
        if algorithm in _WEAK_MACS:
            raise SignatureIncomplete("weak_mac_algorithm", f"the MAC Algorithm {algorithm} allows forged twins; re-sign with SHA256")
        return
    if recovered.startswith(prefix) and len(recovered) == len(prefix) + mac.digest_size:
        raise SignatureRejected(
            "tags_altered",
            f"the {len(tags)} signed attributes changed after signing (their {algorithm} MAC differs "
            "from the one the signer signed): the image or its identifying data were altered",
        )
    raise SignatureRejected("invalid_signature", f"the Signature was not made over a {algorithm} MAC (wrong algorithm or certificate)")


def _check_coverage(level: Dataset, signed: set[int]) -> None:
    """Raise unless a main Data Set signature meets the Creator profile (PS3.15 C.2)."""
    missing_ids = [t for t in REQUIRED_TAGS if t not in signed]
    pixels = [t for t in _PIXEL_TAGS if t in level]
    unsigned_pixels = [t for t in pixels if t not in signed]
    if missing_ids or unsigned_pixels:
        names = ", ".join(_tag_name(t) for t in sorted(missing_ids + unsigned_pixels))
        raise SignatureIncomplete("incomplete_coverage", f"the signature leaves out {names}: it proves nothing about this image's origin")
    added = [t for t in creator_tags_present(level) if t not in signed]
    if added:
        raise SignatureRejected(
            "tags_added",
            f"{', '.join(_tag_name(t) for t in added)} (attributes the Creator profile signs, PS3.15 C.2) "
            "are present but were not signed: they were added after signing",
        )


def _examine(level: Dataset, item: Dataset, location: str, anchors: Sequence[x509.Certificate]) -> SignatureReport:
    details: dict[str, Any] = {"location": location, "uid": str(item.get("DigitalSignatureUID", "") or ""),
                               "signer": None, "issuer": None, "signed_at": None, "mac_algorithm": "",
                               "profile": "", "signed_tags": ()}
    try:
        purposes = item.get("DigitalSignaturePurposeCodeSequence") or []
        if len(purposes) and isinstance(purposes[0], Dataset):
            details["purpose"] = str(purposes[0].get("CodeMeaning", "") or purposes[0].get("CodeValue", "") or "")
        mac_id = item.get("MACIDNumber")
        params = [p for p in level.get("MACParametersSequence", []) if p.get("MACIDNumber") == mac_id]
        if mac_id is None or len(params) != 1:
            raise SignatureRejected("malformed", f"no single MAC Parameters item (4FFE,0001) has this signature's MAC ID Number {mac_id}")
        details["mac_algorithm"] = str(params[0].get("MACAlgorithm", "") or "")
        details["signed_tags"] = tuple(_signed_tags(params[0]))
        ts = UID(str(params[0].get("MACCalculationTransferSyntaxUID", "") or ""))
        if not ts.is_transfer_syntax or ts.is_implicit_VR or not ts.is_little_endian:
            raise SignatureRejected("malformed", f"MAC Calculation Transfer Syntax {ts!r} is not explicit VR little endian (PS3.3 Table C.12-6)")
        details["signed_at"] = signed_at = _signed_at(item)
        if str(item.get("CertificateType", "") or "").strip() != "X509_1993_SIG":
            raise SignerNotTrusted("unknown_signer", f"Certificate Type {item.get('CertificateType')!r} is not X509_1993_SIG: the signer cannot be identified")
        try:
            cert = _der_certificate(bytes(item.get("CertificateOfSigner", b"") or b""))
        except ValueError as exc:
            raise SignatureRejected("malformed", f"Certificate of Signer is not a DER X.509 certificate ({exc})") from exc
        details["signer"], details["issuer"] = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureIncomplete("unsupported_algorithm", f"the signer's key is {type(public_key).__name__}; this verifier checks RSA signatures (PS3.15 C.1/C.2)")
        signed = set(details["signed_tags"])
        claims_creator = location == "" and REQUIRED_TAGS <= signed and all(t in signed for t in _PIXEL_TAGS if t in level)
        details["profile"] = "Creator RSA" if claims_creator else "Base RSA"
        _check_integrity(level, item, params[0], public_key)
        if location == "":  # the Creator profile is a main Data Set profile
            _check_coverage(level, signed)
        details["trust_anchor"] = _trusted_by(cert, anchors, signed_at).subject.rfc4514_string()
    except DicomSignatureError as problem:
        return SignatureReport(**details, problem=problem)
    except Exception as exc:  # hostile or broken input must become a finding, not a crash
        broken = SignatureRejected("malformed", f"the signature cannot be examined: {type(exc).__name__}: {exc}")
        return SignatureReport(**details, problem=broken)
    return SignatureReport(**details)


def inspect_dicom_signatures(
    dicom: bytes | bytearray | memoryview | Dataset, trust_anchors: Sequence[x509.Certificate] = ()
) -> tuple[SignatureReport, ...]:
    """A report per signature (main Data Set first); raises only when the input is unreadable."""
    ds = _read(dicom)
    reports = []
    for location, level in _signature_levels(ds):
        for item in level.DigitalSignaturesSequence:
            reports.append(_examine(level, item, location, tuple(trust_anchors)))
    return tuple(reports)


def verify_dicom_signatures(
    dicom: bytes | bytearray | memoryview | Dataset, trust_anchors: Sequence[x509.Certificate]
) -> tuple[SignatureReport, ...]:
    """Reports of all signatures, or raise the gravest problem: :class:`SignatureMissing`, then
    :class:`SignatureRejected`, :class:`SignatureIncomplete`, :class:`SignerNotTrusted`."""
    reports = inspect_dicom_signatures(dicom, trust_anchors)
    if not reports:
        raise SignatureMissing("unsigned", "the image has no Digital Signatures Sequence (FFFA,FFFA)")
    for kind in (SignatureRejected, SignatureIncomplete, SignerNotTrusted):
        for report in reports:
            if isinstance(report.problem, kind):
                raise report.problem
    return reports


def check_dicom_signatures(
    dataset_or_bytes: bytes | bytearray | memoryview | Dataset, trust_anchors: Sequence[x509.Certificate]
) -> ProvenanceResult:
    """Provenance of an image for the verdict; never raises.

    ``valid`` needs a main Data Set signature that is intact, meets the Creator profile and is
    vouched for by ``trust_anchors``, and no signature anywhere that was broken.
    """
    try:
        reports = inspect_dicom_signatures(dataset_or_bytes, trust_anchors)
    except DicomSignatureError as exc:
        return ProvenanceResult("invalid", None, None, str(exc), exc.code)
    except Exception as exc:  # the verifier must not take the agent down on hostile input
        return ProvenanceResult("invalid", None, None, f"the signatures could not be examined: {type(exc).__name__}: {exc}", "unreadable")
    return provenance_from_reports(reports)


def provenance_from_reports(reports: Sequence[SignatureReport]) -> ProvenanceResult:
    """The :class:`ProvenanceResult` that :func:`inspect_dicom_signatures` reports amount to."""
    if not reports:
        return ProvenanceResult("unsigned", None, None, "no Digital Signatures Sequence (FFFA,FFFA)", "unsigned")
    for report in reports:
        if isinstance(report.problem, SignatureRejected):
            return ProvenanceResult("invalid", report.signer, report.signed_at, str(report.problem), report.problem.code)
    for report in reports:
        if report.ok and report.location == "":
            return ProvenanceResult(
                "valid", report.signer, report.signed_at,
                f"{report.profile} signature by {report.signer}, vouched for by {report.trust_anchor}", "valid",
            )
    first = next((r for r in reports if r.problem is not None), None)
    if first is None or first.problem is None:  # only item-level signatures, all fine
        return ProvenanceResult("untrusted", reports[0].signer, reports[0].signed_at,
                                "only sequence items are signed, not the image itself", "incomplete_coverage")
    return ProvenanceResult("untrusted", first.signer, first.signed_at, str(first.problem), first.problem.code)
