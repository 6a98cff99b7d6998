"""Device and vendor private keys behind one small interface.

``DeviceKey`` (the :class:`~edge_agent.trust.jws.Signer` protocol) is all the signing code sees:
``public_key()`` and ``sign_es256(data) -> R || S``. Two stores implement it:

* :class:`FileKeyStore` — a PKCS#8 PEM file, mode 0600, optionally encrypted with a passphrase
  (PKCS#8 ``EncryptedPrivateKeyInfo``, RFC 5958 §3) read from a file or an environment variable.
  Loading a key that group/others can read or write, or that another user owns, is refused.
* :class:`~edge_agent.trust.pkcs11_keys.Pkcs11KeyStore` — the key is generated inside a
  PKCS#11 token (SoftHSM2, a smart card, an HSM, or a TPM via tpm2-pkcs11) and never leaves it.

A key reference is a small JSON-able dict (``{"type": "file", "path": ...}`` or
``{"type": "pkcs11", ...}``) kept in the device state; :func:`open_key_store` turns it back into
a store.
"""

from __future__ import annotations

import functools
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import KeyPermissionError, KeyStoreError
from .jws import der_to_raw

__all__ = [
    "DeviceKey",
    "KeyStore",
    "SoftwareKey",
    "FileKeyStore",
    "PassphraseSource",
    "check_private_file_mode",
    "write_private_file",
    "open_key_store",
    "PASSPHRASE_ENV",
]

PASSPHRASE_ENV = "EDGE_AGENT_KEY_PASSPHRASE"
_ES256 = ec.ECDSA(hashes.SHA256())


class DeviceKey(Protocol):
    """A P-256 private key that signs but need not be exportable."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_es256(self, data: bytes) -> bytes: ...


class KeyStore(Protocol):
    """Where a device key lives. ``generate`` creates it there (it never leaves); ``load`` opens it."""

    def generate(self) -> DeviceKey: ...

    def load(self) -> DeviceKey: ...

    def reference(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SoftwareKey:
    """A key held in process memory (loaded from a file)."""

    private_key: ec.EllipticCurvePrivateKey

    def __post_init__(self) -> None:
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or self.private_key.curve.name != "secp256r1":
            raise KeyStoreError("the key is not ECDSA P-256; ES256 and the fleet profile need P-256")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @functools.cached_property
    def _public(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def sign_es256(self, data: bytes) -> bytes:
        return der_to_raw(self.private_key.sign(data, _ES256))


@dataclass(frozen=True)
class PassphraseSource:
    """Where a key passphrase comes from: a file (first line) or an environment variable.
    Neither set means the key is stored unencrypted (protected by file mode only)."""

    file: Path | None = None
    env: str | None = None

    def read(self) -> bytes | None:
        if self.file is not None:
            check_private_file_mode(self.file, "passphrase file")
            text = self.file.read_text(encoding="utf-8").splitlines()
            if not text or not text[0]:
                raise KeyStoreError(f"passphrase file {self.file} is empty")
            return text[0].encode("utf-8")
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise KeyStoreError(f"environment variable {self.env} (key passphrase) is not set or empty")
            return value.encode("utf-8")
        return None


def check_private_file_mode(path: Path, what: str = "private key") -> None:
    """Refuse a secret file that group/others can access or that another user owns.

    The agent calls this before loading any key, so a key copied with the wrong mode stops the
    agent with a message saying how to fix it instead of running with an exposed key."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyStoreError(f"{what} {path} does not exist; run `edge-agent enroll init` first") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyPermissionError(
            f"{what} {path} has mode {mode:04o}: group/others can access it. Refusing to use it; "
            f"run `chmod 600 {path}` (and consider the key compromised if others could read it)"
        )
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise KeyPermissionError(
            f"{what} {path} is owned by uid {st.st_uid}, not by this user (uid {os.getuid()}); "
            f"run `chown {os.getuid()} {path}`"
        )


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Create ``path`` with mode 0600 from the start (no window where it is world-readable) and
    fsync it; refuses to replace an existing key unless ``overwrite``."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyStoreError(f"{path} already exists; refusing to overwrite a key") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileKeyStore:
    """A P-256 key in a PKCS#8 PEM file with mode 0600."""

    path: Path
    passphrase: PassphraseSource = PassphraseSource()

    def generate(self) -> SoftwareKey:
        key = ec.generate_private_key(ec.SECP256R1())
        secret = self.passphrase.read()
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(self.path, pem)
        return SoftwareKey(key)

    def load(self) -> SoftwareKey:
        check_private_file_mode(self.path)
        pem = self.path.read_bytes()
        encrypted = b"ENCRYPTED" in pem
        secret = self.passphrase.read() if encrypted else None  # ask for a passphrase only when needed
        if encrypted and secret is None:
            raise KeyStoreError(
                f"key {self.path} is encrypted; give its passphrase with --passphrase-file or "
                f"${self.passphrase.env or PASSPHRASE_ENV}"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=secret)
        except ValueError as exc:
            hint = "wrong passphrase?" if encrypted else "not a PEM private key?"
            raise KeyStoreError(f"key {self.path} cannot be loaded ({hint}): {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"key {self.path} is not an EC key; ES256 needs P-256")
        return SoftwareKey(key)

    def reference(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"type": "file", "path": str(self.path)}
        if self.passphrase.file is not None:
            ref["passphrase_file"] = str(self.passphrase.file)
        if self.passphrase.env is not None:
            ref["passphrase_env"] = self.passphrase.env
        return ref


def open_key_store(ref: dict[str, Any], base: Path | None = None) -> KeyStore:
    """Turn a key reference from the device state back into a key store. Relative paths are
    resolved against ``base`` (the state directory)."""

    def _path(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() or base is None else base / q

    kind = ref.get("type")
    if kind == "file":
        pf = ref.get("passphrase_file")
        return FileKeyStore(
            _path(str(ref["path"])),
            PassphraseSource(file=_path(pf) if pf else None, env=ref.get("passphrase_env")),
        )
    if kind == "pkcs11":
        from .pkcs11_keys import Pkcs11KeyStore

        return Pkcs11KeyStore.from_reference(ref)
    raise KeyStoreError(f"unknown key store type {kind!r}; expected 'file' or 'pkcs11'")
