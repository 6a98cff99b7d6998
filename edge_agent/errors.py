"""One exception tree for edge-agent.

    EdgeAgentError
    ├── ConfigError          a config key is unknown, mistyped or points at a missing file
    ├── ModelError           a shipped model is missing, altered, or cannot run
    │   ├── ModelIntegrityError   a file's sha256 differs from the manifest
    │   └── ModelSignatureError   manifest.sig.json is missing, forged, or not from the trusted vendor
    ├── UnreadableImage      an input cannot be decoded (carries a machine-readable code)
    ├── IngestError          an ingestion path (spool, hot folder, C-STORE) cannot accept an image
    │   └── SpoolFullError   (edge_agent.spool) the spool's size cap or free-space floor is reached
    ├── TrustError           device identity, keys, certificates, signed verdicts (``reason`` code)
    │   ├── KeyStoreError        a key cannot be created, loaded or used
    │   │   └── KeyPermissionError   a key file is readable by group/others (the agent refuses to start)
    │   ├── EnrollmentError      a CSR or certificate does not fit this device / fleet
    │   ├── CertificateAuthorityError  the fleet CA tool cannot do what was asked
    │   ├── SequenceError        the persisted sequence counter cannot be reserved
    │   ├── PatientDataLeak      a payload carries a value from the source image's patient data
    │   └── EnvelopeError        a signed verdict is rejected (one subclass per reason)
    │       ├── EnvelopeFormatError     not a flattened ES256 JWS with the expected header/payload
    │       ├── ChainError              x5c does not chain to a trust anchor (foreign CA, bad profile)
    │       ├── CertificateExpiredError     the device certificate had expired at issue time
    │       ├── CertificateNotYetValidError the device certificate was not yet valid at issue time
    │       ├── CertificateRevokedError the device certificate is on the fleet CA's CRL
    │       ├── SignatureError          the ES256 signature does not verify
    │       ├── DeviceMismatchError     payload device_id differs from the certificate's
    │       └── ReplayError             (device, boot, sequence) was seen before
    ├── DicomSignatureError  a DICOM Digital Signature (PS3.15 Annex C) cannot be made or does not
    │   │                    hold (``code``; ``edge_agent.dicom_signature``)
    │   ├── SigningRefused        key, certificate or image unfit for signing (key file mode, mismatch)
    │   ├── SignatureMissing      the image carries no Digital Signatures Sequence (FFFA,FFFA)
    │   ├── SignatureRejected     the image changed after signing, or the signature is broken/malformed
    │   ├── SignatureIncomplete   proves too little: Creator profile not covered, weak/unknown algorithm
    │   └── SignerNotTrusted      intact, but the certificate does not chain to a trust anchor
    ├── ForensicsError       a noise profile or detector fingerprint is malformed, altered, or made
    │                        for another image geometry (``edge_agent.forensics``)
    ├── DemoError            a step of ``edge-agent demo``'s loop failed (names the step and its log)
    └── TransportError       the outbox, the broker link or the collector cannot carry a verdict (``reason``)
        ├── OutboxFullError      the outbox reached its row, byte or age bound: the verdict is refused, loudly
        ├── OutboxStateError     an outbox row event that its state does not allow (a bug, never data)
        ├── PayloadError         a verified envelope's payload is not a verdict message (schema, size)
        ├── UnknownDeviceError   a message from a device or site the collector was not told about
        └── StoreError           the collector's store (SQLite / PostgreSQL) cannot be opened or written

Every message says what was expected, what was found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "EdgeAgentError",
    "ConfigError",
    "ModelError",
    "ModelIntegrityError",
    "UnreadableImage",
    "IngestError",
    "ForensicsError",
    "ModelSignatureError",
    "TrustError",
    "KeyStoreError",
    "KeyPermissionError",
    "EnrollmentError",
    "CertificateAuthorityError",
    "SequenceError",
    "PatientDataLeak",
    "EnvelopeError",
    "EnvelopeFormatError",
    "ChainError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "CertificateRevokedError",
    "SignatureError",
    "DeviceMismatchError",
    "ReplayError",
    "DemoError",
    "TransportError",
    "OutboxFullError",
    "OutboxStateError",
    "PayloadError",
    "UnknownDeviceError",
    "StoreError",
    "DicomSignatureError",
    "SigningRefused",
    "SignatureMissing",
    "SignatureRejected",
    "SignatureIncomplete",
    "SignerNotTrusted",
]


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """The configuration cannot be used; the message names the key and the expected form."""


class ModelError(EdgeAgentError):
    """A model cannot be loaded or run."""


class ModelIntegrityError(ModelError):
    """A model file does not match the sha256 its manifest records."""


class IngestError(EdgeAgentError):
    """An image could not be accepted by an ingestion path."""


class UnreadableImage(EdgeAgentError):
    """An input could not be decoded into pixels.

    ``code`` is short and machine-readable (e.g. ``truncated``, ``no_pixel_data``);
    ``str(self)`` is the sentence for a person.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ModelSignatureError(ModelError):
    """A model's ``manifest.sig.json`` is missing, malformed, forged, or from an untrusted signer."""


class TrustError(EdgeAgentError):
    """Device identity, keys, certificates and signed verdicts.

    ``reason`` is a short machine-readable code, stable across releases: verifiers count
    rejections by it and print it; ``str(self)`` is the sentence for a person.
    """

    reason = "trust_error"


class KeyStoreError(TrustError):
    reason = "key_store"


class KeyPermissionError(KeyStoreError):
    """A private key file is readable or writable by group/others, or owned by another user."""

    reason = "key_permissions"


class EnrollmentError(TrustError):
    reason = "enrollment"


class CertificateAuthorityError(TrustError):
    reason = "certificate_authority"


class SequenceError(TrustError):
    reason = "sequence"


class PatientDataLeak(TrustError):
    """A payload that should leave the device carries a patient-identifying value."""

    reason = "patient_data_leak"


class EnvelopeError(TrustError):
    """A signed verdict envelope was rejected; the subclass (and ``reason``) says why."""

    reason = "envelope"


class EnvelopeFormatError(EnvelopeError):
    reason = "bad_format"


class ChainError(EnvelopeError):
    reason = "untrusted_chain"


class CertificateExpiredError(EnvelopeError):
    reason = "certificate_expired"


class CertificateNotYetValidError(EnvelopeError):
    reason = "certificate_not_yet_valid"


class CertificateRevokedError(EnvelopeError):
    reason = "certificate_revoked"


class SignatureError(EnvelopeError):
    reason = "bad_signature"


class DeviceMismatchError(EnvelopeError):
    reason = "device_mismatch"


class ReplayError(EnvelopeError):
    reason = "replay"


class DemoError(EdgeAgentError):
    """A step of the demo loop (CA, broker, collector, agent, delivery, shutdown) failed; the message
    names the step and the log to read. Everything the demo started has been stopped."""


class TransportError(EdgeAgentError):
    """A verdict cannot be carried from the device's outbox to the collector's store.

    ``reason`` is a short stable code (counted and printed by the collector, as for
    :class:`TrustError`); ``str(self)`` is the sentence for a person.
    """

    reason = "transport_error"


class OutboxFullError(TransportError):
    """The outbox reached a bound (rows, bytes, oldest row's age); the new verdict was NOT taken.

    Raised instead of dropping anything: the caller keeps the image (spool) and retries later.
    """

    reason = "outbox_full"


class OutboxStateError(TransportError):
    """An outbox row received an event its state does not allow (see ``transport/outbox.py``)."""

    reason = "outbox_state"


class PayloadError(TransportError):
    """A message is not a verdict message of a known schema (not JSON, too large, wrong fields)."""

    reason = "bad_payload"


class UnknownDeviceError(TransportError):
    """A message came from a site or device the collector's configuration does not list."""

    reason = "unknown_device"


class StoreError(TransportError):
    """The collector's store cannot be opened, migrated or written."""

    reason = "store"


class ForensicsError(EdgeAgentError):
    """A forensic reference (noise profile, detector fingerprint) cannot be used: malformed,
    altered (sha256 mismatch) or made for another image geometry."""


class DicomSignatureError(EdgeAgentError):
    """A DICOM Digital Signature could not be created or verified.

    ``code`` is short and machine-readable; ``str(self)`` is the sentence for a person.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SigningRefused(DicomSignatureError):
    """The key, the certificate or the image cannot be used to make a signature."""


class SignatureMissing(DicomSignatureError):
    """The image has no Digital Signatures Sequence (FFFA,FFFA) to verify."""


class SignatureRejected(DicomSignatureError):
    """The signature does not hold: signed attributes changed, or it is broken or malformed."""


class SignatureIncomplete(DicomSignatureError):
    """The signature cannot prove the image's origin: it leaves out attributes the Creator RSA
    profile must cover, or uses an algorithm too weak (MD5, SHA-1) or unknown to this verifier."""


class SignerNotTrusted(DicomSignatureError):
    """The signature is intact but its certificate does not chain to a trust anchor."""
