"""Make a Creator RSA Digital Signature (PS3.15 C.2) in a DICOM file: bytes in, bytes out.

What :func:`sign_dicom` adds, per PS3.3 C.12.1.1.3 (Digital Signatures Macro, Table C.12-6):

* an item in the MAC Parameters Sequence (4FFE,0001): MAC ID Number (0400,0005), MAC Calculation
  Transfer Syntax UID (0400,0010), MAC Algorithm (0400,0015) ``SHA256``, Data Elements Signed
  (0400,0020) = the attributes PS3.15 C.2 lists that the image has (``_creator_profile``);
* an item in the Digital Signatures Sequence (FFFA,FFFA): the same MAC ID Number, Digital
  Signature UID (0400,0100), Digital Signature DateTime (0400,0105, with its UTC offset),
  Certificate Type (0400,0110) ``X509_1993_SIG``, Certificate of Signer (0400,0115, DER) and
  Signature (0400,0120): RSASSA-PKCS1-v1_5 (RFC 8017 8.2) over the SHA-256 of the MAC stream
  (``_mac_stream``), as PS3.15 C.1/C.2 (Base/Creator RSA profile) specify.

Existing signatures are kept (a new MAC ID is allocated). Patient and study demographics are
deliberately *not* signed: the Creator profile covers what the device produced (identity,
equipment, pixels), so a PACS may still correct a patient name without breaking it.

The output is parsed back and its MAC recomputed before it is returned, so a file whose re-encoding
would change signed bytes is never handed out as signed.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from struct import error as StructError
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pydicom
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ..errors import SigningRefused
from ._creator_profile import REQUIRED_TAGS, creator_tags_present
from ._mac_stream import SIGNATURE_ITEM_EXCLUDED, mac_chunks, unsignable_reason

__all__ = ["DeviceSigner", "load_device_signer", "sign_dicom", "MIN_RSA_BITS", "SIGNATURE_PURPOSES"]

#: NIST SP 800-131A: RSA below 2048 bits is disallowed for new signatures.
MIN_RSA_BITS = 2048
_CERTIFICATE_TYPE = "X509_1993_SIG"  # PS3.3 Table C.12-6 defined term: one DER X.509 certificate

#: Digital Signature Purpose codes, ASTM E1762-95 (PS3.16 CID 7007, scheme "ASTM-sigpurpose").
SIGNATURE_PURPOSES: dict[int, str] = {
    1: "Author's Signature", 2: "Coauthor's Signature", 3: "Co-participant's Signature",
    4: "Transcriptionist/Recorder Signature", 5: "Verification Signature", 6: "Validation Signature",
    7: "Consent Signature", 8: "Signature Witness Signature", 9: "Event Witness Signature",
    10: "Identity Witness Signature", 11: "Consent Witness Signature", 12: "Interpreter Signature",
    13: "Review Signature", 14: "Source Signature", 15: "Addendum Signature",
    16: "Modification Signature", 17: "Administrative (Error/Edit) Signature", 18: "Timestamp Signature",
}


@dataclass(frozen=True)
class DeviceSigner:
    """The device's capture key and the certificate that vouches for it.

    Checked on construction: RSA of at least :data:`MIN_RSA_BITS` bits (Creator *RSA* profile), the
    key is the certificate's, and a Key Usage extension, if any, allows signatures.
    """

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise SigningRefused(
                "not_rsa",
                f"the capture key is {type(self.private_key).__name__}; the Creator RSA Digital "
                "Signature Profile (PS3.15 C.2) needs an RSA key: provision an RSA-2048+ key",
            )
        if self.private_key.key_size < MIN_RSA_BITS:
            raise SigningRefused(
                "weak_key",
                f"the capture key has {self.private_key.key_size} bits; at least {MIN_RSA_BITS} are "
                "needed: provision a new key",
            )
        cert_key = self.certificate.public_key()
        if not isinstance(cert_key, rsa.RSAPublicKey) or (
            cert_key.public_numbers() != self.private_key.public_key().public_numbers()
        ):
            raise SigningRefused(
                "key_cert_mismatch",
                f"the certificate ({self.certificate.subject.rfc4514_string()}) is not the capture "
                "key's: give the certificate issued for this key",
            )
        try:
            usage = self.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            return
        if not (usage.digital_signature or usage.content_commitment):
            raise SigningRefused(
                "key_usage",
                "the certificate's Key Usage allows neither digitalSignature nor nonRepudiation: "
                "it cannot vouch for image signatures",
            )


def load_device_signer(key_path: str | os.PathLike[str], cert_path: str | os.PathLike[str]) -> DeviceSigner:
    """Read an unencrypted PEM RSA key (mode 0600 or stricter) and a PEM certificate."""
    key_path, cert_path = Path(key_path), Path(cert_path)
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
    except OSError as exc:
        raise SigningRefused("key_unreadable", f"cannot read the private key {key_path}: {exc.strerror}") from exc
    if mode & 0o077:
        # A key others can read is a key others can sign with: refuse rather than warn.
        raise SigningRefused(
            "key_file_mode",
            f"private key {key_path} has mode {mode:04o}; it must be readable by its owner only "
            f"(0600 or 0400): run `chmod 600 {key_path}`",
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningRefused(
            "key_unreadable", f"{key_path} is not an unencrypted PEM private key ({exc})"
        ) from exc
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise SigningRefused("cert_unreadable", f"cannot read the certificate {cert_path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise SigningRefused("cert_unreadable", f"{cert_path} is not a PEM X.509 certificate ({exc})") from exc
    return DeviceSigner(key, certificate)  # type: ignore[arg-type]  # checked in __post_init__


def _read(dicom: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(dicom))
    except (InvalidDicomError, EOFError, ValueError, OSError, StructError) as exc:
        raise SigningRefused("not_dicom", f"the input is not a readable DICOM Part 10 file ({exc})") from exc
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        raise SigningRefused("not_dicom", "the input has no File Meta Information (PS3.10 7.1)")
    return ds


def _normalised(ds: Dataset) -> Dataset:
    """Implicit VR and deflated inputs are rewritten as explicit VR little endian.

    The VR that was signed then sits in the file, so a verifier never has to guess it from a
    dictionary (US/SS, OB/OW), and the MAC Calculation Transfer Syntax, which PS3.3 Table C.12-6
    limits to explicit VR little endian ones, is the file's own. Big endian (retired) is refused
    rather than converted.
    """
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if not ts.is_little_endian:
        raise SigningRefused(
            "big_endian",
            f"transfer syntax {ts.name} is big endian (retired, PS3.5 A.3); convert to explicit VR "
            "little endian first (e.g. `dcmconv +te IN OUT`)",
        )
    if ts.is_implicit_VR or ts.is_deflated:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, implicit_vr=False, little_endian=True)
        return pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    return ds


def _mac_id(ds: Dataset) -> int:
    used = {int(i.MACIDNumber) for seq in ("MACParametersSequence", "DigitalSignaturesSequence")
            for i in ds.get(seq, []) if "MACIDNumber" in i}
    return next(n for n in range(0x10000) if n not in used)


def _mac_input(ds: Dataset, tags: list[int], signature_item: Dataset) -> list[bytes]:
    """The MAC byte stream in chunks: the signed data elements, then the signature item's."""
    item_tags = [int(t) for t in signature_item.keys() if int(t) not in SIGNATURE_ITEM_EXCLUDED]
    return [*mac_chunks(ds, tags), *mac_chunks(signature_item, item_tags)]


def sign_dicom(
    dicom: bytes,
    signer: DeviceSigner,
    *,
    signed_at: datetime | None = None,
    signature_uid: str | None = None,
    purpose: int | None = None,
) -> bytes:
    """Return ``dicom`` with one more Creator RSA Digital Signature (SHA-256) by ``signer``.

    ``signed_at`` (default: now, UTC) and ``signature_uid`` (default: a fresh 2.25 UUID-derived
    UID) are parameters so tests can be deterministic. ``purpose`` adds a Digital Signature Purpose
    Code Sequence (0400,0401) with that :data:`SIGNATURE_PURPOSES` code (14, "Source Signature",
    fits a capture device); it is part of the MAC. Raises :class:`SigningRefused` when the
    image lacks the UIDs the profile requires, holds a required attribute as UN, or the key/cert
    is unfit (expired at ``signed_at``...).
    """
    when = (signed_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if purpose is not None and purpose not in SIGNATURE_PURPOSES:
        raise SigningRefused("bad_purpose", f"signature purpose {purpose} is not an ASTM E1762 code (1-18)")
    cert = signer.certificate
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise SigningRefused(
            "cert_not_valid_now",
            f"the capture certificate is valid {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not at {when:%Y-%m-%d %H:%M} UTC: a "
            "signature made now would not verify; renew the certificate (check the clock too)",
        )
    ds = _normalised(_read(dicom))
    missing = sorted(t for t in REQUIRED_TAGS if t not in ds)
    if missing:
        names = ", ".join(keyword_for_tag(t) for t in missing)
        raise SigningRefused("missing_identifiers", f"the image lacks {names}: PS3.15 C.2 requires them signed")
    tags = creator_tags_present(ds)
    for tag in tags:
        reason = unsignable_reason(ds, tag)
        if reason:
            raise SigningRefused(
                "unsignable_attribute",
                f"({tag >> 16:04X},{tag & 0xFFFF:04X}) must be signed (PS3.15 C.2) but {reason}; "
                "re-encode it with its real VR first (e.g. `dcmconv +uc`)",
            )
    mac_id = _mac_id(ds)
    item = Dataset()
    item.MACIDNumber = mac_id
    item.DigitalSignatureUID = signature_uid or generate_uid(prefix=None)
    item.DigitalSignatureDateTime = when.strftime("%Y%m%d%H%M%S.%f+0000")
    item.CertificateType = _CERTIFICATE_TYPE
    if purpose is not None:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = str(purpose), "ASTM-sigpurpose"
        code.CodeMeaning = SIGNATURE_PURPOSES[purpose]
        item.DigitalSignaturePurposeCodeSequence = Sequence([code])
    item.CertificateOfSigner = cert.public_bytes(serialization.Encoding.DER)
    stream = _mac_input(ds, tags, item)
    mac = hashlib.sha256()
    for chunk in stream:
        mac.update(chunk)
    digest = mac.digest()
    item.Signature = signer.private_key.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    params = Dataset()
    params.MACIDNumber = mac_id
    params.MACCalculationTransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    params.MACAlgorithm = "SHA256"
    params.DataElementsSigned = tags
    ds.MACParametersSequence = Sequence([*ds.get("MACParametersSequence", []), params])
    ds.DigitalSignaturesSequence = Sequence([*ds.get("DigitalSignaturesSequence", []), item])
    out = io.BytesIO()
    ds.save_as(out)
    signed = out.getvalue()
    _check_round_trip(signed, tags, stream)
    return signed


def _check_round_trip(signed: bytes, tags: list[int], stream: list[bytes]) -> None:
    # Comparing the streams (not re-hashing them) halves the cost on a 6 MB radiograph.
    reread = pydicom.dcmread(io.BytesIO(signed))
    if _mac_input(reread, tags, reread.DigitalSignaturesSequence[-1]) != stream:
        raise SigningRefused(
            "unstable_encoding",
            "writing the signed file changed signed bytes (a non-conformant value pydicom "
            "re-encodes?); the signature would not verify, so no file was produced",
        )
