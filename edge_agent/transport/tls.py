"""TLS for the broker link: mutual TLS with fleet certificates (the only I/O here is file reads).

Both ends present a certificate issued by the fleet CA (TLS 1.3 / 1.2, RFC 8446 §4.4.2); the
broker maps the client certificate's CN to the MQTT username (``use_identity_as_username``),
which the ACL then confines to its own topic prefix. Hostname checking stays on: the broker's
certificate must name the host we dial (RFC 6125).
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from ..errors import ConfigError

__all__ = ["TlsFiles", "client_context", "certificate_identity", "certificate_not_after"]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the fleet CA certificate(s), PEM: trust anchors for the broker's certificate
    cert: Path  # this client's certificate (chain), PEM
    key: Path  # its private key, PEM (mode 0600)

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if not Path(path).is_file():
                raise ConfigError(f"tls.{name}: expected a readable PEM file, found {str(path)!r} (missing)")


def client_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_verify_locations(cafile=str(files.ca))
        ctx.load_cert_chain(certfile=str(files.cert), keyfile=str(files.key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"tls: the CA {files.ca}, certificate {files.cert} or key {files.key} cannot be used ({exc}); "
            "expected PEM files where the key matches the certificate"
        ) from None
    return ctx


def _load(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tls.cert: {path} is not a PEM certificate ({exc})") from None


def certificate_identity(path: Path) -> str:
    """The subject CN: the MQTT username the broker will give this client."""
    cns = _load(path).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise ConfigError(f"tls.cert: {path} has no subject CN; the broker's ACL needs one")
    return str(cns[0].value)


def certificate_not_after(path: Path) -> dt.datetime:
    return _load(path).not_valid_after_utc
