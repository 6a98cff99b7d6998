"""Device identity, signed verdicts and signed models.

    fleet CA (vendor/site)          device                              collector / auditor
    ca init / issue / revoke / crl  enroll init -> CSR, install cert    verify_envelope(bytes, fleet CA, CRL)
                                    VerdictSigner -> JWS envelope  --->
    vendor model-signing CA         verify_signed_model() before load

Modules: :mod:`.jws` (RFC 7515 flattened, ES256), :mod:`.keys` / :mod:`.pkcs11_keys` (where the
private key lives), :mod:`.certs` (X.509 profiles, path validation), :mod:`.csr` (PKCS#10),
:mod:`.fleet_ca`, :mod:`.enrollment`, :mod:`.renewal`, :mod:`.sequence`, :mod:`.clock`,
:mod:`.payload`, :mod:`.privacy`, :mod:`.envelope`, :mod:`.verify`, :mod:`.model_signing`.
"""

from __future__ import annotations

from .enrollment import DeviceState, EnrolledDevice
from .envelope import VerdictSigner, build_envelope
from .fleet_ca import FleetCA
from .keys import DeviceKey, FileKeyStore, KeyStore, PassphraseSource
from .model_signing import sign_manifest, verify_signed_model
from .payload import DeviceContext, build_verdict_payload
from .privacy import assert_no_patient_data
from .renewal import HealthRecord, certificate_health, renewal_decision
from .sequence import SequenceStore
from .verify import ReplayState, VerifiedVerdict, Verifier, verify_envelope

__all__ = [
    "DeviceState",
    "EnrolledDevice",
    "VerdictSigner",
    "build_envelope",
    "FleetCA",
    "DeviceKey",
    "FileKeyStore",
    "KeyStore",
    "PassphraseSource",
    "sign_manifest",
    "verify_signed_model",
    "DeviceContext",
    "build_verdict_payload",
    "assert_no_patient_data",
    "HealthRecord",
    "certificate_health",
    "renewal_decision",
    "SequenceStore",
    "ReplayState",
    "VerifiedVerdict",
    "Verifier",
    "verify_envelope",
]
