"""A device key inside a PKCS#11 token (OASIS PKCS#11 v2.40): SoftHSM2, a smart card or HSM, or a
TPM 2.0 through tpm2-pkcs11. The key pair is generated *in* the token (``C_GenerateKeyPair`` with
``CKA_SENSITIVE=true, CKA_EXTRACTABLE=false``), so the private key never exists outside it.

Signing hashes in software and asks the token for a bare ``CKM_ECDSA`` over the 32-byte SHA-256
digest: every token supports that mechanism (SoftHSM2 2.6 lacks ``CKM_ECDSA_SHA256``), and
PKCS#11 returns ECDSA signatures as ``r || s`` — already the ES256 form (RFC 7518 §3.4).

The user PIN comes from an environment variable or a 0600 file, never from the command line
(which ``ps`` would show). ``python-pkcs11`` is imported lazily, so file-key devices need not
install it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ..errors import KeyStoreError
from .keys import check_private_file_mode

__all__ = ["Pkcs11KeyStore", "Pkcs11Key", "PIN_ENV"]

PIN_ENV = "EDGE_AGENT_PKCS11_PIN"

# PKCS#11 login is per application *and token* (v2.40 §5.6): once one session has logged in, a
# second C_Login fails with CKR_USER_ALREADY_LOGGED_IN. So the process keeps one logged-in session
# per token and shares it, with one lock, between every key object that uses that token.
_SESSIONS: dict[tuple[str, str], tuple[Any, threading.Lock]] = {}
_SESSIONS_LOCK = threading.Lock()


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise KeyStoreError(
            "PKCS#11 keys need the python-pkcs11 package: pip install python-pkcs11"
        ) from None
    return pkcs11


@dataclass(frozen=True)
class Pkcs11KeyStore:
    """A key labelled ``key_label`` in the token labelled ``token_label`` of ``module``."""

    module: str
    token_label: str
    key_label: str
    pin_env: str | None = PIN_ENV
    pin_file: Path | None = None

    def __post_init__(self) -> None:
        if not self.module or not self.token_label or not self.key_label:
            raise KeyStoreError("a PKCS#11 key needs a module path, a token label and a key label")

    @classmethod
    def from_reference(cls, ref: dict[str, Any]) -> "Pkcs11KeyStore":
        pin_file = ref.get("pin_file")
        return cls(
            module=str(ref["module"]),
            token_label=str(ref["token_label"]),
            key_label=str(ref["key_label"]),
            pin_env=ref.get("pin_env", PIN_ENV),
            pin_file=Path(pin_file) if pin_file else None,
        )

    def reference(self) -> dict[str, Any]:
        ref: dict[str, Any] = {
            "type": "pkcs11",
            "module": self.module,
            "token_label": self.token_label,
            "key_label": self.key_label,
            "pin_env": self.pin_env,
        }
        if self.pin_file is not None:
            ref["pin_file"] = str(self.pin_file)
        return ref

    def _pin(self) -> str:
        if self.pin_file is not None:
            check_private_file_mode(self.pin_file, "PKCS#11 PIN file")
            return self.pin_file.read_text(encoding="utf-8").splitlines()[0]
        if self.pin_env and os.environ.get(self.pin_env):
            return os.environ[self.pin_env]
        raise KeyStoreError(
            f"no PIN for PKCS#11 token {self.token_label!r}: set ${self.pin_env or PIN_ENV} or give a PIN file"
        )

    def _session(self) -> tuple[Any, threading.Lock]:
        pkcs11 = _pkcs11()
        with _SESSIONS_LOCK:
            cached = _SESSIONS.get((self.module, self.token_label))
            if cached is not None:
                return cached
            try:
                lib = pkcs11.lib(self.module)
                token = lib.get_token(token_label=self.token_label)
                session = token.open(user_pin=self._pin(), rw=True)
            except KeyStoreError:
                raise
            except Exception as exc:  # python-pkcs11 raises its own tree plus RuntimeError for dlopen
                raise KeyStoreError(
                    f"cannot open PKCS#11 token {self.token_label!r} via {self.module}: {type(exc).__name__} {exc}"
                ) from None
            _SESSIONS[(self.module, self.token_label)] = (session, threading.Lock())
            return _SESSIONS[(self.module, self.token_label)]

    def generate(self) -> "Pkcs11Key":
        pkcs11 = _pkcs11()
        from pkcs11 import Attribute, KeyType, ObjectClass
        from pkcs11.util.ec import encode_named_curve_parameters

        session, lock = self._session()
        try:
            existing = list(session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: self.key_label}))
            if existing:
                raise KeyStoreError(
                    f"token {self.token_label!r} already has a key labelled {self.key_label!r}; choose another label"
                )
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
            )
            key_id = os.urandom(8)
            params.generate_keypair(
                store=True,
                label=self.key_label,
                id=key_id,
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True},
            )
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(f"token {self.token_label!r} could not generate a P-256 key: {type(exc).__name__}") from None
        return Pkcs11Key(session, lock, self.key_label)

    def load(self) -> "Pkcs11Key":
        session, lock = self._session()
        return Pkcs11Key(session, lock, self.key_label)


@dataclass
class Pkcs11Key:
    """A private key handle in the shared token session; signs inside the token."""

    session: Any
    lock: threading.Lock = field(repr=False)
    key_label: str
    _public: ec.EllipticCurvePublicKey | None = field(default=None, repr=False)
    _private: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        pkcs11 = _pkcs11()
        from pkcs11 import ObjectClass
        from pkcs11.util.ec import encode_ec_public_key

        try:
            self._private = self.session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self.key_label)
            pub = self.session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=self.key_label)
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as exc:
            raise KeyStoreError(f"PKCS#11 key {self.key_label!r}: {type(exc).__name__}") from None
        key = load_der_public_key(encode_ec_public_key(pub))
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise KeyStoreError(f"PKCS#11 key {self.key_label!r} is not ECDSA P-256")
        self._public = key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        assert self._public is not None
        return self._public

    def sign_es256(self, data: bytes) -> bytes:
        from pkcs11 import Mechanism

        digest = hashlib.sha256(data).digest()
        with self.lock:  # one PKCS#11 session must not run two operations at once
            sig = bytes(self._private.sign(digest, mechanism=Mechanism.ECDSA))
        if len(sig) != 64:
            raise KeyStoreError(f"token returned a {len(sig)}-byte ECDSA signature; expected 64 (r || s)")
        return sig
