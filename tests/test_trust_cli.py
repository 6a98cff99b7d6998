"""The docs/trust.md walk-through as a test: a new user creates a fleet CA, enrolls a device,
scans an image, signs the verdicts in a pipe, and verifies them with the fleet CA alone."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization

from edge_agent.cli import main
from edge_agent.trust.jws import b64url_decode
from edge_agent.trust.privacy import assert_no_patient_data
from trust_factory import dicom_path, new_fleet


def _run(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None,
         monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_new_user_signs_scanned_verdicts_and_verifies_them_with_the_fleet_ca_alone(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, state = tmp_path / "fleet-ca", tmp_path / "state"
    images = tmp_path / "images"
    images.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(dicom_path(name), images / name)
    (images / "notes.txt").write_text("not an image")  # becomes an 'unreadable' verdict, signed too

    assert _run(["ca", "init", str(ca), "--name", "Acme Fleet CA"], capsys)[0] == 0
    assert _run(["enroll", "init", "--device-id", "ct-0042", "--dir", str(state)], capsys)[0] == 0
    assert _run(["ca", "issue", "--ca", str(ca), str(state / "device.csr"), "--out", str(tmp_path / "device.pem")], capsys)[0] == 0
    assert _run(["enroll", "install", str(tmp_path / "device.pem"), "--dir", str(state),
                 "--fleet-ca", str(ca / "ca.pem")], capsys)[0] == 0

    rc, scan_out, _ = _run(["scan", "--jsonl", "--model", str(tiny_model_dir), "--backend", "onnxruntime", str(images)], capsys)
    assert rc in (0, 1, 4, 5) and len(scan_out.splitlines()) == 3
    rc, signed, err = _run(["sign-verdicts", "--dir", str(state)], capsys, scan_out, monkeypatch)
    assert rc == 0, err
    envelopes = tmp_path / "verdicts.jsonl"
    envelopes.write_text(signed)

    rc, out, err = _run(["verify", str(envelopes), "--trust", str(ca / "ca.pem"), "--state", str(tmp_path / "seen.json")], capsys)
    assert rc == 0, out + err
    assert out.count("VALID") == 3 and '"valid": 3' in err

    payloads = [json.loads(b64url_decode(json.loads(line)["payload"])) for line in signed.splitlines()]
    assert [p["seq"] for p in payloads] == [1, 2, 3]
    for p, name in zip(payloads, ("CT_small.dcm", "MR_small.dcm")):
        assert_no_patient_data(p, pydicom.dcmread(images / name))

    # replaying the same file is caught by the state; a second batch continues the sequence
    rc, out, _ = _run(["verify", str(envelopes), "--trust", str(ca / "ca.pem"), "--state", str(tmp_path / "seen.json")], capsys)
    assert rc == 1 and out.count("REJECTED replay") == 3
    rc, signed2, _ = _run(["sign-verdicts", "--dir", str(state)], capsys, scan_out.splitlines()[0], monkeypatch)
    assert json.loads(b64url_decode(json.loads(signed2)["payload"]))["seq"] > 3


def test_a_file_changed_after_its_scan_is_not_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = new_fleet(tmp_path / "ca")
    state = tmp_path / "state"
    assert main(["enroll", "init", "--device-id", "ct-0042", "--dir", str(state)]) == 0
    (tmp_path / "d.pem").write_bytes(
        fleet.issue_device((state / "device.csr").read_bytes()).public_bytes(serialization.Encoding.PEM))
    assert main(["enroll", "install", str(tmp_path / "d.pem"), "--dir", str(state), "--fleet-ca", str(fleet.cert_path)]) == 0
    image = tmp_path / "ct.dcm"
    shutil.copy(dicom_path(), image)
    record = {"path": str(image), "frame": None, "verdict": "authentic", "score": 0.1, "threshold": 0.5,
              "thresholds": {"suspicious": 0.5, "synthetic": 0.9},
              "model": {"name": "m", "version": "1", "sha256": "0" * 64, "backend": "onnxruntime", "precision": "fp32"},
              "reasons": [], "timings_ms": {"decode": 1, "preprocess": 1, "infer": 1, "total": 3},
              "image": {"container": "dicom", "file_sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                        "pixel_sha256": "1" * 64, "modality": "CT", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1", "rows": 128, "columns": 128, "frames": 1, "bits_stored": 16}}
    with open(image, "ab") as fh:
        fh.write(b"\x00")
    capsys.readouterr()
    rc, out, err = _run(["sign-verdicts", "--dir", str(state)], capsys, json.dumps(record), monkeypatch)
    assert rc == 2 and out == "" and "changed since it was scanned" in err
