"""A device enrolls itself: it makes its key (which never leaves), sends a CSR, installs only a
certificate that fits; it refuses keys others can read; it renews at 80 % and shouts when expired."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.cli import main
from edge_agent.errors import EnrollmentError, KeyPermissionError, KeyStoreError
from edge_agent.trust.enrollment import DeviceState
from edge_agent.trust.keys import FileKeyStore, PassphraseSource
from edge_agent.trust.renewal import certificate_health, renewal_decision
from trust_factory import new_device, new_fleet


def _pem(c) -> bytes:  # type: ignore[no-untyped-def]
    return c.public_bytes(serialization.Encoding.PEM)


def _enrolled(tmp_path: Path, device_id: str = "ct-0042", **init_kw):  # type: ignore[no-untyped-def]
    ca = new_fleet(tmp_path / "ca")
    state = DeviceState(tmp_path / "state")
    csr = state.init(device_id, **init_kw)
    cert = ca.issue_device(csr)
    state.install(_pem(cert), ca.cert_path.read_bytes())
    return ca, state


def test_device_generates_its_key_locally_and_the_csr_verifies_with_openssl(tmp_path: Path) -> None:
    state = DeviceState(tmp_path / "state")
    state.init("ct-0042")
    assert stat.S_IMODE((tmp_path / "state" / "device.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state" / "site.secret").stat().st_mode) == 0o600
    assert b"PRIVATE" not in state.csr_path.read_bytes()
    if shutil.which("openssl"):
        out = subprocess.run(["openssl", "req", "-in", str(state.csr_path), "-verify", "-noout", "-text"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "URI:urn:edge-agent:device:ct-0042" in out.stdout, out.stderr


def test_installed_device_loads_and_reports_ok_health(tmp_path: Path) -> None:
    _, state = _enrolled(tmp_path)
    device = state.load()
    assert device.device_id == "ct-0042" and len(device.site_secret) == 32
    assert state.health().level == "OK"


def test_install_refuses_a_certificate_for_another_key_device_or_fleet(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    state = DeviceState(tmp_path / "state")
    state.init("ct-0042")
    fleet_pem = ca.cert_path.read_bytes()
    with pytest.raises(EnrollmentError, match="another CSR"):
        state.install(_pem(new_device(ca, "ct-0042", issued=dt.datetime.now(dt.timezone.utc)).cert), fleet_pem)
    with pytest.raises(EnrollmentError, match="for device 'ct-0099'"):
        state.install(_pem(new_device(ca, "ct-0099", issued=dt.datetime.now(dt.timezone.utc)).cert), fleet_pem)
    foreign = new_fleet(tmp_path / "foreign")
    with pytest.raises(EnrollmentError, match="does not chain"):
        state.install(_pem(foreign.issue_device(state.csr_path.read_bytes())), fleet_pem)
    assert not state.cert_path.exists()


def test_a_key_readable_by_group_or_others_stops_the_agent_with_a_fix(tmp_path: Path) -> None:
    _, state = _enrolled(tmp_path)
    key = tmp_path / "state" / "device.key"
    os.chmod(key, 0o640)
    with pytest.raises(KeyPermissionError, match=r"mode 0640.*chmod 600"):
        state.load()
    os.chmod(key, 0o600)
    os.chmod(tmp_path / "state" / "site.secret", 0o644)
    with pytest.raises(KeyPermissionError, match="site secret"):
        state.load()


def test_passphrase_encrypted_key_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    os.chmod(pw, 0o600)
    store = FileKeyStore(tmp_path / "k.pem", PassphraseSource(file=pw))
    public = store.generate().public_key()
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.pem").read_bytes()
    assert store.load().public_key() == public
    monkeypatch.setenv("KEY_PW", "correct horse")
    assert FileKeyStore(tmp_path / "k.pem", PassphraseSource(env="KEY_PW")).load().public_key() == public
    monkeypatch.setenv("KEY_PW", "wrong")
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        FileKeyStore(tmp_path / "k.pem", PassphraseSource(env="KEY_PW")).load()
    with pytest.raises(KeyStoreError, match="encrypted"):
        FileKeyStore(tmp_path / "k.pem").load()


def test_enrollment_with_an_encrypted_key_signs_after_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_PW", "s3cret")
    _, state = _enrolled(tmp_path, passphrase=PassphraseSource(env="DEVICE_PW"))
    assert state.load().key.sign_es256(b"x")
    monkeypatch.delenv("DEVICE_PW")
    with pytest.raises(KeyStoreError, match="DEVICE_PW"):
        state.load()


def test_renewal_keeps_the_old_key_until_the_new_certificate_is_installed(tmp_path: Path) -> None:
    ca, state = _enrolled(tmp_path)
    old_public = state.load().key.public_key()
    csr = state.renew()
    assert state.load().key.public_key() == old_public  # still signing with the old key
    state.install(_pem(ca.issue_device(csr)), ca.cert_path.read_bytes())
    device = state.load()
    assert device.key.public_key() != old_public
    assert device.chain[0].public_key() == device.key.public_key()


def test_renewal_is_due_at_80_percent_of_the_lifetime_and_expiry_is_an_error(tmp_path: Path) -> None:
    ca = new_fleet(tmp_path / "ca")
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    cert = new_device(ca, issued=start, days=100).cert
    nb = cert.not_valid_before_utc
    assert renewal_decision(cert, nb + dt.timedelta(days=79)).state == "valid"
    due = renewal_decision(cert, nb + dt.timedelta(days=80, seconds=1))
    assert due.state == "renew" and due.renew_at == nb + dt.timedelta(days=80)
    assert any("enroll renew" in step for step in due.steps)
    assert certificate_health(cert, nb + dt.timedelta(days=81)).level == "WARNING"
    expired = certificate_health(cert, cert.not_valid_after_utc)
    assert expired.level == "ERROR" and expired.code == "device_certificate_expired" and "EXPIRED" in expired.message
    assert certificate_health(cert, nb - dt.timedelta(days=1)).level == "ERROR"
    assert certificate_health(None, start).code == "device_not_enrolled"


def test_enroll_cli_init_install_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = new_fleet(tmp_path / "ca")
    state_dir = tmp_path / "state"
    assert main(["enroll", "init", "--device-id", "mr-0003", "--dir", str(state_dir)]) == 0
    (tmp_path / "device.pem").write_bytes(_pem(ca.issue_device((state_dir / "device.csr").read_bytes())))
    assert main(["enroll", "install", str(tmp_path / "device.pem"), "--dir", str(state_dir),
                 "--fleet-ca", str(ca.cert_path)]) == 0
    assert main(["enroll", "status", "--dir", str(state_dir)]) == 0
    assert '"level": "OK"' in capsys.readouterr().out
    os.chmod(state_dir / "device.key", 0o644)
    assert main(["sign-verdicts", "--dir", str(state_dir), "--in", os.devnull]) == 2
    assert "chmod 600" in capsys.readouterr().err
