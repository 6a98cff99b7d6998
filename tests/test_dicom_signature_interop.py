"""Interoperability is the test: DCMTK's ``dcmsign`` (an independent implementation of PS3.15
Annex C) verifies what we sign, we verify what it signs, and one changed Pixel Data byte fails
both. Includes the CLI as the firmware calls it, and one full-size real radiograph."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from dicom_signature_pki import (
    DCMSIGN,
    PkiFiles,
    cropped_radiograph,
    ct_small,
    dcmsign,
    flip_pixel_byte,
    make_ca,
    make_device_cert,
    pydicom_testfile,
    radiograph_path,
    write_pki,
)
from edge_agent import dicom_signature_cli
from edge_agent.dicom_signature import check_dicom_signatures, load_trust_anchors, verify_dicom_signatures

pytestmark = pytest.mark.skipif(DCMSIGN is None, reason="DCMTK dcmsign not installed")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    ca = make_ca()
    return write_pki(tmp_path_factory.mktemp("pki"), ca, make_device_cert(ca))


def _cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser()
    dicom_signature_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return int(args.func(args))


def _dcmsign_verifies(path: Path, pki: PkiFiles) -> subprocess.CompletedProcess[str]:
    # +rg: fail without a signature, +rc: fail without a Creator RSA one, +cf: our CA as trust
    # anchor, so the certificate chain is checked as well as the MAC.
    return dcmsign("--verify", "+rg", "+rc", "+cf", pki.ca_pem, path)


def test_image_we_sign_verifies_with_dcmsign_and_a_pixel_byte_change_fails_it(tmp_path: Path, pki: PkiFiles) -> None:
    src, signed, tampered = tmp_path / "cr.dcm", tmp_path / "cr.signed.dcm", tmp_path / "cr.tampered.dcm"
    src.write_bytes(cropped_radiograph())
    assert _cli("sign-dicom", src, signed, "--key", pki.key_pem, "--cert", pki.cert_pem, "--purpose", "14") == 0
    ok = _dcmsign_verifies(signed, pki)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Signature Verification : OK" in ok.stdout + ok.stderr
    shown = dcmsign("-v", "--verify", "+cf", pki.ca_pem, signed)
    assert "Source Signature" in shown.stdout + shown.stderr  # the purpose code DCMTK read back
    tampered.write_bytes(flip_pixel_byte(signed.read_bytes()))
    bad = _dcmsign_verifies(tampered, pki)
    assert bad.returncode != 0 and "Verification" in bad.stdout + bad.stderr
    assert _cli("verify-dicom", tampered, "--trust", pki.ca_pem) == 1


@pytest.mark.parametrize(
    "options",
    [("+pc", "+m2"),   # Creator RSA profile, SHA-256, every attribute
     ("+m2",),          # no profile enforced, SHA-256, every attribute
     ("+pc",)],         # Creator RSA profile with dcmsign's default MAC, RIPEMD-160
    ids=["creator-sha256", "plain-sha256", "creator-ripemd160"],
)
def test_image_dcmsign_signs_verifies_with_ours_and_a_pixel_byte_change_fails_it(
    tmp_path: Path, pki: PkiFiles, options: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    src, signed = tmp_path / "ct.dcm", tmp_path / "ct.signed.dcm"
    src.write_bytes(ct_small())
    made = dcmsign("--sign", pki.key_pem, pki.cert_pem, "-pw", *options, src, signed)
    assert made.returncode == 0, made.stderr
    anchors = load_trust_anchors(pki.ca_pem)
    assert check_dicom_signatures(signed.read_bytes(), anchors).status == "valid"
    assert _cli("verify-dicom", signed, "--trust", pki.ca_pem, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["signatures"][0]["profile"] == "Creator RSA"
    assert "(7FE0,0010) PixelData" in shown["signatures"][0]["signed_tags"]
    result = check_dicom_signatures(flip_pixel_byte(signed.read_bytes()), anchors)
    assert (result.status, result.code) == ("invalid", "tags_altered")


def test_dcmsign_signature_over_a_few_tags_proves_nothing_about_the_pixels(tmp_path: Path, pki: PkiFiles) -> None:
    src, signed = tmp_path / "ct.dcm", tmp_path / "ct.signed.dcm"
    src.write_bytes(ct_small())
    made = dcmsign("--sign", pki.key_pem, pki.cert_pem, "-pw", "+m2", "-t", "0008,0018", src, signed)
    assert made.returncode == 0, made.stderr
    result = check_dicom_signatures(signed.read_bytes(), load_trust_anchors(pki.ca_pem))
    assert (result.status, result.code) == ("untrusted", "incomplete_coverage")


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm", "emri_small.dcm"])
def test_compressed_implicit_and_multiframe_images_we_sign_verify_with_dcmsign(tmp_path: Path, pki: PkiFiles, name: str) -> None:
    signed = tmp_path / "signed.dcm"
    assert _cli("sign-dicom", pydicom_testfile(name), signed, "--key", pki.key_pem, "--cert", pki.cert_pem) == 0
    ok = _dcmsign_verifies(signed, pki)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_dcmsign_signature_with_sha1_is_intact_but_not_relied_on(tmp_path: Path, pki: PkiFiles) -> None:
    src, signed = tmp_path / "ct.dcm", tmp_path / "ct.signed.dcm"
    src.write_bytes(ct_small())
    assert dcmsign("--sign", pki.key_pem, pki.cert_pem, "-pw", "+pc", "+ms", src, signed).returncode == 0
    result = check_dicom_signatures(signed.read_bytes(), load_trust_anchors(pki.ca_pem))
    assert (result.status, result.code) == ("untrusted", "weak_mac_algorithm")


def test_full_size_radiograph_signed_by_us_verifies_with_dcmsign_and_ours(tmp_path: Path, pki: PkiFiles) -> None:
    signed = tmp_path / "RG3.signed.dcm"
    assert _cli("sign-dicom", radiograph_path(), signed, "--key", pki.key_pem, "--cert", pki.cert_pem) == 0
    ok = _dcmsign_verifies(signed, pki)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert _cli("verify-dicom", signed, "--trust", pki.ca_pem) == 0
    tampered = tmp_path / "RG3.tampered.dcm"
    tampered.write_bytes(flip_pixel_byte(signed.read_bytes(), at_fraction=0.9))
    assert _dcmsign_verifies(tampered, pki).returncode != 0
    assert _cli("verify-dicom", tampered, "--trust", pki.ca_pem) == 1


def test_verify_dicom_exit_status_tells_unsigned_untrusted_and_valid_apart(
    tmp_path: Path, pki: PkiFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    unsigned, signed = tmp_path / "ct.dcm", tmp_path / "ct.signed.dcm"
    unsigned.write_bytes(ct_small())
    assert _cli("sign-dicom", unsigned, signed, "--key", pki.key_pem, "--cert", pki.cert_pem) == 0
    assert _cli("verify-dicom", unsigned, "--trust", pki.ca_pem) == 4
    assert _cli("verify-dicom", signed) == 3  # intact, but no trust anchor given
    capsys.readouterr()
    assert _cli("verify-dicom", signed, "--trust", pki.ca_pem) == 0
    out = capsys.readouterr().out
    for shown in ("VALID", "signer:   CN=CR-0042 capture", "Creator RSA Digital Signature Profile (PS3.15 C.2), MAC SHA256",
                  "(7FE0,0010) PixelData", "time:     20"):
        assert shown in out


def test_sign_dicom_command_is_registered_in_edge_agent() -> None:
    from edge_agent.cli import build_parser

    args = build_parser().parse_args(["sign-dicom", "in.dcm", "out.dcm", "--key", "k", "--cert", "c"])
    assert args.func is dicom_signature_cli.run_sign


def test_signature_dcmsign_puts_in_a_sequence_item_is_verified_too(tmp_path: Path, pki: PkiFiles) -> None:
    ours, both = tmp_path / "ct.signed.dcm", tmp_path / "ct.item-signed.dcm"
    src = tmp_path / "ct.dcm"
    src.write_bytes(ct_small())
    assert _cli("sign-dicom", src, ours, "--key", pki.key_pem, "--cert", pki.cert_pem) == 0
    made = dcmsign("--sign-item", pki.key_pem, pki.cert_pem, "OtherPatientIDsSequence[0]", "-pw", "+m2", ours, both)
    assert made.returncode == 0, made.stderr
    anchors = load_trust_anchors(pki.ca_pem)
    reports = verify_dicom_signatures(both.read_bytes(), anchors)
    assert [(r.location, r.profile) for r in reports] == [("", "Creator RSA"), ("(0010,1002)[0]", "Base RSA")]
    ds = pydicom.dcmread(both)
    ds.OtherPatientIDsSequence[0].PatientID = "SOMEONE-ELSE"
    altered = io.BytesIO()
    ds.save_as(altered)
    result = check_dicom_signatures(altered.getvalue(), anchors)
    assert (result.status, result.code) == ("invalid", "tags_altered")


@pytest.mark.skipif(shutil.which("edge-agent") is None, reason="edge-agent is not installed on PATH")
def test_firmware_hook_signs_in_place_and_leaves_the_image_alone_when_it_refuses(tmp_path: Path, pki: PkiFiles) -> None:
    hook = Path(__file__).resolve().parents[1] / "firmware_hooks" / "sign_after_acquisition.sh"
    image = tmp_path / "IMG0001.dcm"
    image.write_bytes(ct_small())
    env = {**os.environ, "EDGE_AGENT_CAPTURE_KEY": str(pki.key_pem), "EDGE_AGENT_CAPTURE_CERT": str(pki.cert_pem)}
    pki.key_pem.chmod(0o640)
    try:
        refused = subprocess.run([hook, image], env=env, capture_output=True, text=True, timeout=60)
    finally:
        pki.key_pem.chmod(0o600)
    assert refused.returncode == 2 and "chmod 600" in refused.stderr
    assert image.read_bytes() == ct_small()
    signed = subprocess.run([hook, image], env=env, capture_output=True, text=True, timeout=60)
    assert signed.returncode == 0, signed.stderr
    assert _dcmsign_verifies(image, pki).returncode == 0
