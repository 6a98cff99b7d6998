"""Enrollment on the device: the key pair is made here and never leaves; only the CSR does.

State directory (``--dir STATE``), written by this module only:

    STATE/device.json    {"device_id", "key": <key ref>, "pending_key": <key ref> | null}
    STATE/device.key     the device private key (file store; 0600, optionally encrypted)
    STATE/device.csr     the CSR to take to the fleet CA
    STATE/device.pem     the installed device certificate (+ intermediates), after ``install``
    STATE/fleet-ca.pem   the fleet CA the certificate was checked against at install
    STATE/site.secret    32-byte key for the SOP Instance UID HMAC (0600)
    STATE/sequence       the persisted sequence high-water mark (:mod:`.sequence`)

Protocol (a table, as the rest of the agent writes protocols):

    state          event     -> state          effect
    (none)         init      -> csr_pending    generate key, write CSR
    csr_pending    install   -> enrolled       cert must match key and chain to the fleet CA
    enrolled       renew     -> renewing       generate *pending* key, write new CSR
    renewing       install   -> enrolled       cert matches pending key: pending becomes current
    renewing       install   -> renewing       cert matches current key: reinstall (e.g. new chain)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..durable import write_atomically
from ..errors import EnrollmentError, EnvelopeError
from .certs import device_id_of, load_certificates, utcnow, validate_chain, validate_device_id
from .csr import build_device_csr
from .keys import DeviceKey, FileKeyStore, KeyStore, PassphraseSource, check_private_file_mode, open_key_store, write_private_file
from .renewal import HealthRecord, certificate_health

if TYPE_CHECKING:
    from .envelope import VerdictSigner

__all__ = ["DeviceState", "EnrolledDevice"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class EnrolledDevice:
    device_id: str
    key: DeviceKey
    chain: tuple[x509.Certificate, ...]
    site_secret: bytes


@dataclass(frozen=True)
class DeviceState:
    directory: Path

    def _p(self, name: str) -> Path:
        return self.directory / name

    @property
    def csr_path(self) -> Path:
        return self._p("device.csr")

    @property
    def cert_path(self) -> Path:
        return self._p("device.pem")

    @property
    def sequence_path(self) -> Path:
        return self._p("sequence")

    def _meta(self) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads(self._p("device.json").read_text(encoding="utf-8"))
            return meta
        except FileNotFoundError:
            raise EnrollmentError(f"{self.directory} is not enrolled: run `edge-agent enroll init --dir {self.directory}`") from None

    def _save_meta(self, meta: dict[str, Any]) -> None:
        write_atomically(self._p("device.json"), (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), 0o644)

    def _store(self, ref: dict[str, Any]) -> KeyStore:
        return open_key_store(ref, self.directory)

    # -- init / renew --------------------------------------------------------------------------
    def init(
        self,
        device_id: str,
        key_store: KeyStore | None = None,
        passphrase: PassphraseSource = PassphraseSource(),
        site_secret: bytes | None = None,
        dns_suffix: str | None = None,
    ) -> bytes:
        """Generate the device key and write the CSR; returns the CSR PEM."""
        validate_device_id(device_id)
        if self._p("device.json").exists():
            raise EnrollmentError(f"{self.directory} is already initialised; use `enroll renew` for a new key")
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        store = key_store or FileKeyStore(self._p("device.key"), passphrase)
        key = store.generate()
        ref = store.reference()
        if ref.get("type") == "file":
            ref["path"] = os.path.relpath(ref["path"], self.directory)
        if not self._p("site.secret").exists():
            write_private_file(self._p("site.secret"), site_secret or secrets.token_bytes(32))
        csr = build_device_csr(device_id, key, dns_suffix)
        self.csr_path.write_bytes(csr)
        self._save_meta({"device_id": device_id, "key": ref, "pending_key": None, "dns_suffix": dns_suffix})
        return csr

    def renew(self, key_store: KeyStore | None = None, passphrase: PassphraseSource | None = None) -> bytes:
        """Generate a pending key and a new CSR; the current key keeps signing until install."""
        meta = self._meta()
        if meta.get("pending_key"):
            raise EnrollmentError("a renewal is already pending: install its certificate (or delete pending_key)")
        if key_store is None:
            cur = meta["key"]
            if cur.get("type") == "pkcs11":
                from .pkcs11_keys import Pkcs11KeyStore

                ref = dict(cur, key_label=f"{cur['key_label'].split('@')[0]}@{utcnow():%Y%m%d%H%M%S}")
                key_store = Pkcs11KeyStore.from_reference(ref)
            else:
                src = passphrase or PassphraseSource(
                    file=Path(cur["passphrase_file"]) if cur.get("passphrase_file") else None, env=cur.get("passphrase_env"))
                key_store = FileKeyStore(self._p(f"device.{utcnow():%Y%m%d%H%M%S}.key"), src)
        key = key_store.generate()
        ref = key_store.reference()
        if ref.get("type") == "file":
            ref["path"] = os.path.relpath(ref["path"], self.directory)
        csr = build_device_csr(meta["device_id"], key, meta.get("dns_suffix"))
        self.csr_path.write_bytes(csr)
        meta["pending_key"] = ref
        self._save_meta(meta)
        return csr

    # -- install -------------------------------------------------------------------------------
    def install(self, cert_pem: bytes, fleet_ca_pem: bytes, now: dt.datetime | None = None) -> x509.Certificate:
        """Check the certificate (chains to the fleet CA now, names this device, matches the
        current or pending key) and install it. Raises :class:`EnrollmentError` saying which."""
        meta = self._meta()
        chain = load_certificates(cert_pem)
        anchors = load_certificates(fleet_ca_pem)
        leaf = chain[0]
        try:
            validate_chain(leaf, chain[1:], anchors, at=now or utcnow(), purpose="device")
            cert_id = device_id_of(leaf)
        except EnvelopeError as exc:
            raise EnrollmentError(f"the certificate is not usable with this fleet CA: {exc}") from None
        if cert_id != meta["device_id"]:
            raise EnrollmentError(f"the certificate is for device {cert_id!r}; this device is {meta['device_id']!r}")
        leaf_spki = leaf.public_key().public_bytes(*_SPKI)
        slot = None
        for name in ("pending_key", "key"):
            ref = meta.get(name)
            if ref and self._store(ref).load().public_key().public_bytes(*_SPKI) == leaf_spki:
                slot = name
                break
        if slot is None:
            raise EnrollmentError(
                "the certificate's public key matches neither this device's key nor a pending renewal key: "
                "it was issued for another CSR"
            )
        if slot == "pending_key":
            meta["retired_key"], meta["key"], meta["pending_key"] = meta["key"], meta["pending_key"], None
        # Keep the chain as given minus any trust anchor (verifiers bring their own root).
        anchor_der = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
        keep = [c for c in chain if c.public_bytes(serialization.Encoding.DER) not in anchor_der]
        self.cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in keep))
        self._p("fleet-ca.pem").write_bytes(fleet_ca_pem)
        self._save_meta(meta)
        return leaf

    # -- use -----------------------------------------------------------------------------------
    def device_id(self) -> str:
        return str(self._meta()["device_id"])

    def certificate(self) -> x509.Certificate | None:
        try:
            return load_certificates(self.cert_path.read_bytes())[0]
        except FileNotFoundError:
            return None

    def health(self, now: dt.datetime | None = None) -> HealthRecord:
        return certificate_health(self.certificate(), now or utcnow())

    def load(self) -> EnrolledDevice:
        """Open the enrolled identity for signing. Refuses (raises) when a key or secret file is
        readable by others or the certificate does not belong to the key."""
        meta = self._meta()
        key = self._store(meta["key"]).load()
        if not self.cert_path.exists():
            raise EnrollmentError(f"no certificate installed in {self.directory}: run `edge-agent enroll install`")
        chain = tuple(load_certificates(self.cert_path.read_bytes()))
        if chain[0].public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
            raise EnrollmentError("the installed certificate does not belong to the device key")
        secret_path = self._p("site.secret")
        check_private_file_mode(secret_path, "site secret")
        return EnrolledDevice(meta["device_id"], key, chain, secret_path.read_bytes())

    def open_signer(self) -> "VerdictSigner":
        """What the agent calls at start-up: the enrolled identity as a :class:`VerdictSigner`
        (raises — so the agent does not start — on a readable key, a missing certificate or a
        sequence file in use by another process). Check :meth:`health` too and report it."""
        from .envelope import VerdictSigner
        from .sequence import SequenceStore

        device = self.load()
        return VerdictSigner(device.key, device.chain, SequenceStore(self.sequence_path), device.site_secret)
