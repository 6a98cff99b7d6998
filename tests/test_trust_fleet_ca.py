"""A vendor or site runs the fleet CA: creates it, issues device certificates fit for verdict
signing and MQTT mTLS, revokes, and publishes CRLs that OpenSSL (an independent tool) accepts."""

from __future__ import annotations

import datetime as dt
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_agent.cli import main
from edge_agent.errors import CertificateAuthorityError, EnrollmentError
from edge_agent.trust.certs import MAX_DEVICE_DAYS, device_id_of
from edge_agent.trust.csr import build_device_csr
from edge_agent.trust.keys import SoftwareKey
from trust_factory import NOW, new_device, new_fleet

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


def _pem(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)


def test_ca_init_writes_a_0600_key_and_a_p256_ca_certificate(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    cert = ca.certificate()
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    with pytest.raises(CertificateAuthorityError, match="already holds a CA"):
        ca.init("again")


def test_ca_folder_publishes_the_certificate_and_crl_keeps_its_index_private_and_leaves_no_temporaries(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    key = SoftwareKey(ec.generate_private_key(ec.SECP256R1()))
    ca.issue_device(build_device_csr("ct-0042", key), days=30, now=NOW)
    ca.publish_crl(now=NOW)
    assert stat.S_IMODE(ca.cert_path.stat().st_mode) == 0o644  # handed to every collector and device
    assert stat.S_IMODE(ca.crl_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(ca.index_path.stat().st_mode) == 0o600  # which devices exist: the CA's own record
    assert sorted(p.name for p in ca.directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp") == []


def test_device_certificate_names_the_device_and_fits_signing_and_tls_client_auth(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    key = SoftwareKey(ec.generate_private_key(ec.SECP256R1()))
    cert = ca.issue_device(build_device_csr("ct-0042", key), days=365, dns_suffix="devices.example", now=NOW)
    assert device_id_of(cert) == "ct-0042"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ct-0042.devices.example"]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 365


def test_ca_refuses_more_than_a_year_and_a_tampered_csr(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    csr = build_device_csr("ct-0042", SoftwareKey(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(CertificateAuthorityError, match=f"1..{MAX_DEVICE_DAYS}"):
        ca.issue_device(csr, days=MAX_DEVICE_DAYS + 1)
    der = bytearray(x509.load_pem_x509_csr(csr).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CertificateAuthorityError, match="does not verify"):
        ca.issue_device(tampered)


def test_ca_ignores_extensions_a_device_asks_for(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    k = ec.generate_private_key(ec.SECP256R1())
    greedy = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ct-0042")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:edge-agent:device:ct-0001")]), critical=False)
        .sign(k, hashes.SHA256())
    )
    cert = ca.issue_device(greedy.public_bytes(serialization.Encoding.PEM))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert device_id_of(cert) == "ct-0042"


@pytest.mark.parametrize("bad", ["CT-0042", "ct_0042", "-ct", "a" * 64, "ct 42", "ct/../x"])
def test_device_ids_must_be_one_dns_label(bad: str) -> None:
    with pytest.raises(EnrollmentError, match="not valid"):
        build_device_csr(bad, SoftwareKey(ec.generate_private_key(ec.SECP256R1())))


@needs_openssl
def test_openssl_accepts_device_cert_for_tls_client_and_rejects_it_once_revoked(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    device = new_device(ca, issued=dt.datetime.now(dt.timezone.utc))  # openssl checks against the real clock
    (tmp_path / "dev.pem").write_bytes(_pem(device.cert))
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert_path), "-purpose", "sslclient", str(tmp_path / "dev.pem")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ca.revoke(device.cert.serial_number)
    ca.publish_crl()
    revoked = subprocess.run(["openssl", "verify", "-crl_check", "-CRLfile", str(ca.crl_path), "-CAfile", str(ca.cert_path),
                              str(tmp_path / "dev.pem")], capture_output=True, text=True)
    assert revoked.returncode != 0 and "revoked" in revoked.stdout + revoked.stderr


def test_ca_cli_init_issue_revoke_crl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_dir = tmp_path / "fleet-ca"
    assert main(["ca", "init", str(ca_dir), "--name", "Site Fleet CA"]) == 0
    csr = tmp_path / "device.csr"
    csr.write_bytes(build_device_csr("us-0007", SoftwareKey(ec.generate_private_key(ec.SECP256R1()))))
    cert = tmp_path / "device.pem"
    assert main(["ca", "issue", "--ca", str(ca_dir), str(csr), "--out", str(cert), "--days", "90"]) == 0
    assert main(["ca", "issue", "--ca", str(ca_dir), str(csr), "--out", str(cert), "--days", "400"]) == 2
    assert main(["ca", "revoke", "--ca", str(ca_dir), str(cert)]) == 0
    assert main(["ca", "crl", "--ca", str(ca_dir), "--out", str(tmp_path / "crl.pem")]) == 0
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number)
    assert "1 revoked" in capsys.readouterr().out


def test_ca_key_encrypted_with_a_passphrase_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("EDGE_AGENT_CA_PASSPHRASE", "offline ceremony")
    ca_dir = tmp_path / "fleet-ca"
    assert main(["ca", "init", str(ca_dir)]) == 0
    assert b"ENCRYPTED PRIVATE KEY" in (ca_dir / "ca.key").read_bytes()
    csr = tmp_path / "device.csr"
    csr.write_bytes(build_device_csr("us-0008", SoftwareKey(ec.generate_private_key(ec.SECP256R1()))))
    assert main(["ca", "issue", "--ca", str(ca_dir), str(csr), "--out", str(tmp_path / "d.pem")]) == 0
    monkeypatch.delenv("EDGE_AGENT_CA_PASSPHRASE")
    assert main(["ca", "issue", "--ca", str(ca_dir), str(csr), "--out", str(tmp_path / "d.pem")]) == 2
    assert "EDGE_AGENT_CA_PASSPHRASE" in capsys.readouterr().err


def test_broker_certificate_from_the_fleet_ca_serves_tls_on_localhost_and_cannot_pose_as_a_device(tmp_path: Path) -> None:
    from cryptography.x509 import DNSName, IPAddress
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
    import ipaddress

    ca = new_fleet(tmp_path / "ca")
    key = ec.generate_private_key(ec.SECP256R1())  # made by the caller, where the broker runs
    cert = ca.issue_server(key.public_key(), "broker.site-a", now=NOW)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 365

    policy = PolicyBuilder().store(Store([ca.certificate()])).time(NOW)
    for name in (DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1")), IPAddress(ipaddress.ip_address("::1"))):
        policy.build_server_verifier(name).verify(cert, [])  # RFC 5280 path + serverAuth + SAN match
    with pytest.raises(VerificationError):
        policy.build_server_verifier(DNSName("broker.elsewhere.example")).verify(cert, [])
    with pytest.raises(VerificationError):
        policy.build_client_verifier().verify(cert, [])  # no clientAuth: it cannot connect as a device
    with pytest.raises(CertificateAuthorityError, match="1..365"):
        ca.issue_server(key.public_key(), "broker.site-a", days=400)
    with pytest.raises(CertificateAuthorityError, match="not ECDSA P-256"):
        ca.issue_server(ec.generate_private_key(ec.SECP384R1()).public_key(), "broker.site-a")


@needs_openssl
def test_ca_issue_server_command_writes_a_private_key_and_a_cert_openssl_accepts_for_sslserver(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = new_fleet(tmp_path / "ca", now=dt.datetime.now(dt.timezone.utc))
    key, cert = tmp_path / "broker.key", tmp_path / "broker.pem"
    assert main(["ca", "issue-server", "--ca", str(ca.directory), "--name", "broker.site-a", "--dns", "broker.site-a.example",
                 "--ip", "10.0.0.5", "--out-key", str(key), "--out-cert", str(cert)]) == 0
    assert "DNS:broker.site-a.example, IP:10.0.0.5" in capsys.readouterr().out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert_path), "-purpose", "sslserver",
                         "-verify_hostname", "broker.site-a.example", str(cert)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    as_client = subprocess.run(["openssl", "verify", "-CAfile", str(ca.cert_path), "-purpose", "sslclient", str(cert)],
                               capture_output=True, text=True)
    assert as_client.returncode != 0
    assert main(["ca", "issue-server", "--ca", str(ca.directory), "--name", "b", "--out-key", str(key),
                 "--out-cert", str(tmp_path / "again.pem")]) == 2  # never overwrites a key
