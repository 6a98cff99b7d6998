"""The fleet CA a vendor or a site runs, kept in one directory:

    DIR/ca.key      P-256 private key, PKCS#8 PEM, mode 0600 (optionally passphrase-encrypted)
    DIR/ca.pem      self-signed CA certificate (profile in :mod:`.certs`)
    DIR/index.json  every certificate issued (serial, subject, notAfter) and revocations
    DIR/crl.pem     the latest CRL (RFC 5280 §5), written by :meth:`FleetCA.publish_crl`

Run it offline (an air-gapped laptop or an HSM-backed host); devices only ever see ``ca.pem``
and the CRL. The certificate logic is in :mod:`.certs`; this module is the file edge.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..durable import write_atomically
from ..errors import CertificateAuthorityError, KeyStoreError
from .certs import (
    MAX_DEVICE_DAYS,
    MAX_SERVER_DAYS,
    build_ca_certificate,
    build_device_certificate,
    build_model_signer_certificate,
    build_server_certificate,
    utcnow,
)
from .keys import FileKeyStore, PassphraseSource, SoftwareKey, write_private_file

__all__ = ["FleetCA", "CA_PASSPHRASE_ENV"]

CA_PASSPHRASE_ENV = "EDGE_AGENT_CA_PASSPHRASE"


@dataclass(frozen=True)
class FleetCA:
    directory: Path
    passphrase: PassphraseSource = PassphraseSource(env=CA_PASSPHRASE_ENV)

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def index_path(self) -> Path:
        return self.directory / "index.json"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    # -- creation ---------------------------------------------------------------------------
    def init(self, name: str, days: int = 3650, now: dt.datetime | None = None) -> x509.Certificate:
        """Create the CA key (0600) and self-signed certificate. Refuses an existing CA."""
        if self.key_path.exists() or self.cert_path.exists():
            raise CertificateAuthorityError(f"{self.directory} already holds a CA; refusing to overwrite it")
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        secret = self._secret_if_given()
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
        )
        write_private_file(self.key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
        cert = build_ca_certificate(key, name, days, now or utcnow())
        write_atomically(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self._save_index({"crl_number": 0, "issued": {}})
        return cert

    def _secret_if_given(self) -> bytes | None:
        try:
            return self.passphrase.read()
        except KeyStoreError:
            if self.passphrase.file is not None:
                raise
            return None  # env var unset: an unencrypted key (file mode still 0600)

    # -- loading ----------------------------------------------------------------------------
    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except FileNotFoundError:
            raise CertificateAuthorityError(f"no CA at {self.directory}; run `edge-agent ca init {self.directory}`") from None

    def _key(self) -> ec.EllipticCurvePrivateKey:
        key: SoftwareKey = FileKeyStore(self.key_path, self.passphrase).load()
        return key.private_key

    def _index(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.index_path.read_text(encoding="utf-8"))
            return data
        except FileNotFoundError:
            raise CertificateAuthorityError(f"{self.index_path} is missing; is {self.directory} a fleet CA?") from None

    def _save_index(self, index: dict[str, Any]) -> None:
        write_atomically(self.index_path, json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")

    def _record(self, cert: x509.Certificate, kind: str) -> None:
        index = self._index()
        index["issued"][format(cert.serial_number, "x")] = {
            "kind": kind,
            "subject": cert.subject.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "revoked_at": None,
        }
        self._save_index(index)

    # -- operations ---------------------------------------------------------------------------
    def issue_device(
        self, csr_pem: bytes, days: int = MAX_DEVICE_DAYS, dns_suffix: str | None = None, now: dt.datetime | None = None
    ) -> x509.Certificate:
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise CertificateAuthorityError(f"not a PEM CSR: {exc}") from None
        cert = build_device_certificate(csr, self.certificate(), self._key(), days, now or utcnow(), dns_suffix)
        self._record(cert, "device")
        return cert

    def issue_model_signer(
        self, key_path: Path, name: str, days: int = 3 * 365, passphrase: PassphraseSource = PassphraseSource(),
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Create a vendor model-signing key at ``key_path`` (0600) and certify it (EKU codeSigning)."""
        signer = FileKeyStore(key_path, passphrase).generate()
        cert = build_model_signer_certificate(signer.public_key(), name, self.certificate(), self._key(), days, now or utcnow())
        self._record(cert, "model-signer")
        return cert

    def issue_server(
        self, public_key: ec.EllipticCurvePublicKey, name: str, dns_names: Sequence[str] = ("localhost",),
        ip_addresses: Sequence[str] = ("127.0.0.1", "::1"), days: int = MAX_SERVER_DAYS, now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Certify a TLS server key (the site's MQTT broker; EKU serverAuth). The caller generates
        the P-256 key where the server runs and passes only its public half. The defaults name
        this machine's loopback only; a real broker passes the names its clients dial."""
        cert = build_server_certificate(public_key, name, dns_names, ip_addresses, self.certificate(), self._key(), days,
                                        now or utcnow())
        self._record(cert, "server")
        return cert

    def revoke(self, serial: int, now: dt.datetime | None = None) -> None:
        index = self._index()
        entry = index["issued"].get(format(serial, "x"))
        if entry is None:
            raise CertificateAuthorityError(f"serial {serial:x} was not issued by this CA ({self.directory})")
        if entry["revoked_at"] is None:
            entry["revoked_at"] = (now or utcnow()).isoformat()
            self._save_index(index)

    def publish_crl(self, days: int = 7, now: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked serial (RFC 5280 §5) valid for ``days``; also written to crl.pem.
        Verifiers keep using a CRL past nextUpdate (more revocations never hurt) but should fetch anew."""
        now = now or utcnow()
        ca_cert = self.certificate()
        index = self._index()
        index["crl_number"] = int(index.get("crl_number", 0)) + 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=days))
            .add_extension(x509.CRLNumber(index["crl_number"]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
                ),
                critical=False,
            )
        )
        for serial_hex, entry in sorted(index["issued"].items()):
            if entry["revoked_at"]:
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(int(serial_hex, 16))
                    .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                    .build()
                )
        crl = builder.sign(self._key(), hashes.SHA256())
        self._save_index(index)
        write_atomically(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
        return crl
