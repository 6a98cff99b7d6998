"""Test builders for tests/test_dicom_signature*.py: RSA-2048 CAs and capture certificates made
with ``cryptography``, written as PEM files the way a device would hold them, and small real
DICOM inputs from pydicom's test data. Plain functions; keys are cached because RSA key
generation is the slow part of these tests."""

from __future__ import annotations

import datetime as dt
import functools
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pydicom.data import get_testdata_file

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DCMSIGN = shutil.which("dcmsign")


@functools.lru_cache(maxsize=None)
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA-2048 key per label, generated once per test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Fleet"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Test Fleet Capture CA", key_label: str = "ca") -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa_key(key_label)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=365)).not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_device_cert(ca: tuple[rsa.RSAPrivateKey, x509.Certificate], key_label: str = "device",
                     cn: str = "CR-0042 capture", days: tuple[int, int] = (-30, 365)) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    ca_key, ca_cert = ca
    key = rsa_key(key_label)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


@dataclass(frozen=True)
class PkiFiles:
    ca_pem: Path
    key_pem: Path
    cert_pem: Path


def write_pki(directory: Path, ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
              device: tuple[rsa.RSAPrivateKey, x509.Certificate]) -> PkiFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = PkiFiles(directory / "ca.pem", directory / "capture.key", directory / "capture.crt")
    files.ca_pem.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    files.cert_pem.write_bytes(device[1].public_bytes(serialization.Encoding.PEM))
    files.key_pem.write_bytes(device[0].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    os.chmod(files.key_pem, 0o600)
    return files


def pydicom_testfile(name: str) -> Path:
    """A file of pydicom's / pydicom-data's test set (no download)."""
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), f"{name} is not installed (pip install pydicom-data)"
    return Path(path)


def ct_small() -> bytes:
    return pydicom_testfile("CT_small.dcm").read_bytes()


def radiograph_path() -> Path:
    return pydicom_testfile("RG3_UNCR.dcm")


@functools.lru_cache(maxsize=None)
def cropped_radiograph(size: int = 256) -> bytes:
    """The centre of RG3_UNCR (a real CR chest radiograph), cropped so tests stay fast."""
    ds = pydicom.dcmread(radiograph_path())
    arr = ds.pixel_array
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    ds.PixelData = arr[top:top + size, left:left + size].copy().tobytes()
    ds.Rows = ds.Columns = size
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def flip_pixel_byte(dicom: bytes, at_fraction: float = 0.5) -> bytes:
    """The same file with one byte of Pixel Data changed (the tampering every test must catch)."""
    raw = pydicom.dcmread(io.BytesIO(dicom)).get_item(0x7FE00010)
    assert isinstance(raw, pydicom.dataelem.RawDataElement) and raw.value_tell is not None
    offset = raw.value_tell + int(len(raw.value) * at_fraction)
    changed = bytearray(dicom)
    changed[offset] ^= 0x01
    return bytes(changed)


def dcmsign(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert DCMSIGN, "dcmsign (DCMTK) is not installed"
    return subprocess.run([DCMSIGN, *map(str, args)], capture_output=True, text=True, timeout=60)
