"""DICOM Digital Signatures at the point of capture (PS3.15 Annex C, PS3.3 C.12.1.1.3).

    sign_dicom(bytes, DeviceSigner) -> bytes        Creator RSA signature, SHA-256 (PS3.15 C.2)
    verify_dicom_signatures(bytes | Dataset, anchors) -> reports, or raises (errors.py tree)
    check_dicom_signatures(bytes | Dataset, anchors) -> ProvenanceResult, never raises

Modules: ``_mac_stream`` (the bytes a MAC covers), ``_creator_profile`` (which attributes),
``_signing`` (the builder), ``_verification`` (checks and trust).
"""

from ._creator_profile import CREATOR_PROFILE_KEYWORDS, creator_tags_present
from ._mac_stream import mac_stream
from ._signing import DeviceSigner, load_device_signer, sign_dicom
from ._verification import (
    ProvenanceResult,
    SignatureReport,
    check_dicom_signatures,
    inspect_dicom_signatures,
    load_trust_anchors,
    provenance_from_reports,
    verify_dicom_signatures,
)

__all__ = [
    "CREATOR_PROFILE_KEYWORDS",
    "creator_tags_present",
    "mac_stream",
    "DeviceSigner",
    "load_device_signer",
    "sign_dicom",
    "ProvenanceResult",
    "SignatureReport",
    "check_dicom_signatures",
    "inspect_dicom_signatures",
    "load_trust_anchors",
    "provenance_from_reports",
    "verify_dicom_signatures",
]
