"""Signatures at the point of capture: what the device signs, and what the agent's ingest makes of
signed, altered, re-signed and hostile images (check_dicom_signatures never raises)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization

from dicom_signature_pki import (
    NOW,
    cropped_radiograph,
    ct_small,
    flip_pixel_byte,
    make_ca,
    make_device_cert,
    rsa_key,
    pydicom_testfile,
    write_pki,
)
from edge_agent.dicom_signature import (
    CREATOR_PROFILE_KEYWORDS,
    DeviceSigner,
    check_dicom_signatures,
    load_device_signer,
    sign_dicom,
    verify_dicom_signatures,
)
from edge_agent.errors import SignatureRejected, SigningRefused, SignerNotTrusted

CA = make_ca()
DEVICE = make_device_cert(CA)
SIGNER = DeviceSigner(*DEVICE)


def _edit(dicom: bytes, **values: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom))
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def signed_radiograph() -> bytes:
    return sign_dicom(cropped_radiograph(), SIGNER)


def test_radiograph_signed_at_capture_is_valid_for_the_fleet_ca(signed_radiograph: bytes) -> None:
    result = check_dicom_signatures(signed_radiograph, [CA[1]])
    assert (result.status, result.code) == ("valid", "valid")
    assert result.signer == DEVICE[1].subject.rfc4514_string()
    assert result.signed_at is not None and abs(result.signed_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)


def test_signature_covers_exactly_the_creator_profile_attributes_present(signed_radiograph: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    signed = {pydicom.datadict.keyword_for_tag(t) for t in ds.MACParametersSequence[0].DataElementsSigned}
    present = {e.keyword for e in ds if e.keyword in CREATOR_PROFILE_KEYWORDS}
    assert signed == present
    assert {"SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PixelData", "Rows"} <= signed
    assert "PatientName" not in signed  # demographics stay correctable (PS3.15 C.2 does not list them)
    item = ds.DigitalSignaturesSequence[0]
    assert (item.CertificateType, ds.MACParametersSequence[0].MACAlgorithm) == ("X509_1993_SIG", "SHA256")
    assert item.DigitalSignatureDateTime.endswith("+0000")


def test_patient_name_corrected_at_pacs_keeps_signature_valid(signed_radiograph: bytes) -> None:
    assert check_dicom_signatures(_edit(signed_radiograph, PatientName="Doe^Jane"), [CA[1]]).status == "valid"


def test_one_byte_changed_in_pixel_data_is_invalid(signed_radiograph: bytes) -> None:
    result = check_dicom_signatures(flip_pixel_byte(signed_radiograph), [CA[1]])
    assert (result.status, result.code) == ("invalid", "tags_altered")
    assert result.signer == DEVICE[1].subject.rfc4514_string()  # who signed the original
    with pytest.raises(SignatureRejected, match="changed after signing"):
        verify_dicom_signatures(flip_pixel_byte(signed_radiograph), [CA[1]])


@pytest.mark.parametrize(
    ("edit", "code"),
    [({"Manufacturer": "Deepfake Imaging Inc"}, "tags_altered"),
     ({"SOPInstanceUID": "1.2.3.4"}, "tags_altered"),
     ({"Rows": None}, "tags_altered"),
     ({"StationName": "CR-ROOM-9"}, "tags_added")],
)
def test_edited_signed_attributes_are_rejected_with_their_own_reason(signed_radiograph: bytes, edit: dict[str, object], code: str) -> None:
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    if "StationName" in edit:
        assert "StationName" not in ds  # adding it is the attack: a false claim about capture
    result = check_dicom_signatures(_edit(signed_radiograph, **edit), [CA[1]])
    assert (result.status, result.code) == ("invalid", code)


def test_overlay_drawn_on_the_image_after_signing_is_rejected(signed_radiograph: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x60000011, "US", 8)
    ds.add_new(0x60003000, "OW", b"\xff" * 8)
    out = io.BytesIO()
    ds.save_as(out)
    result = check_dicom_signatures(out.getvalue(), [CA[1]])
    assert (result.status, result.code) == ("invalid", "tags_added")
    assert "(6000,3000)" in result.reason


def test_truncated_signature_is_invalid_and_does_not_crash(signed_radiograph: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    ds.DigitalSignaturesSequence[0].Signature = ds.DigitalSignaturesSequence[0].Signature[:100]
    out = io.BytesIO()
    ds.save_as(out)
    result = check_dicom_signatures(out.getvalue(), [CA[1]])
    assert (result.status, result.code) == ("invalid", "invalid_signature")


def test_certificate_swapped_for_another_devices_is_invalid(signed_radiograph: bytes) -> None:
    other = make_device_cert(CA, key_label="other-device", cn="CR-0666 capture")
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    ds.DigitalSignaturesSequence[0].CertificateOfSigner = other[1].public_bytes(serialization.Encoding.DER)
    out = io.BytesIO()
    ds.save_as(out)
    result = check_dicom_signatures(out.getvalue(), [CA[1]])
    assert (result.status, result.code) == ("invalid", "invalid_signature")


def test_signer_from_another_fleet_is_an_unknown_signer(signed_radiograph: bytes) -> None:
    foreign_ca = make_ca("Foreign CA", key_label="foreign-ca")
    result = check_dicom_signatures(signed_radiograph, [foreign_ca[1]])
    assert (result.status, result.code) == ("untrusted", "unknown_signer")


def test_ca_impostor_with_the_same_name_is_an_untrusted_chain(signed_radiograph: bytes) -> None:
    impostor = make_ca(key_label="impostor-ca")  # same subject as CA, different key
    with pytest.raises(SignerNotTrusted) as caught:
        verify_dicom_signatures(signed_radiograph, [impostor[1]])
    assert caught.value.code == "untrusted_chain"


def test_without_trust_anchors_an_intact_signature_is_untrusted(signed_radiograph: bytes) -> None:
    assert check_dicom_signatures(signed_radiograph, []).code == "no_trust_anchors"


def test_unsigned_image_is_unsigned() -> None:
    assert check_dicom_signatures(ct_small(), [CA[1]]).status == "unsigned"


def test_image_from_c_store_as_a_dataset_is_checked_too(signed_radiograph: bytes) -> None:
    ds = pydicom.dcmread(io.BytesIO(signed_radiograph))
    del ds.file_meta  # what an SCP hands over: a data set, no Part 10 header
    assert check_dicom_signatures(ds, [CA[1]]).status == "valid"


@pytest.mark.parametrize("cut", ["empty", "preamble", "header", "pixel data", "signature sequence"])
def test_truncated_or_garbage_files_give_a_result_never_an_exception(signed_radiograph: bytes, cut: str) -> None:
    signatures_at = signed_radiograph.index(bytes.fromhex("fafffaff") + b"SQ")
    end = {"empty": 0, "preamble": 10, "header": 300, "pixel data": len(signed_radiograph) // 2,
           "signature sequence": signatures_at + 400}[cut]
    result = check_dicom_signatures(signed_radiograph[:end], [CA[1]])
    assert result.status in ("invalid", "unsigned"), result
    assert check_dicom_signatures(b"\x00garbage" * 50, [CA[1]]).status == "invalid"


def test_a_second_signature_keeps_the_first_valid(signed_radiograph: bytes) -> None:
    twice = sign_dicom(signed_radiograph, SIGNER)
    ds = pydicom.dcmread(io.BytesIO(twice))
    assert [i.MACIDNumber for i in ds.DigitalSignaturesSequence] == [0, 1]
    reports = verify_dicom_signatures(twice, [CA[1]])
    assert len(reports) == 2 and all(r.ok for r in reports)


def test_implicit_vr_image_is_signed_as_explicit_vr() -> None:
    implicit = pydicom_testfile("MR_small_implicit.dcm").read_bytes()
    signed = sign_dicom(implicit, SIGNER)
    ds = pydicom.dcmread(io.BytesIO(signed))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert check_dicom_signatures(signed, [CA[1]]).status == "valid"


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pki = write_pki(tmp_path, CA, DEVICE)
    pki.key_pem.chmod(0o644)
    with pytest.raises(SigningRefused, match=r"mode 0644.*chmod 600") as caught:
        load_device_signer(pki.key_pem, pki.cert_pem)
    assert caught.value.code == "key_file_mode"
    pki.key_pem.chmod(0o600)
    assert load_device_signer(pki.key_pem, pki.cert_pem).certificate == DEVICE[1]


def test_key_that_is_not_the_certificates_is_refused() -> None:
    with pytest.raises(SigningRefused) as caught:
        DeviceSigner(rsa_key("stranger"), DEVICE[1])
    assert caught.value.code == "key_cert_mismatch"


def test_expired_capture_certificate_is_refused_before_signing() -> None:
    expired = make_device_cert(CA, key_label="device", days=(-400, -1))
    with pytest.raises(SigningRefused) as caught:
        sign_dicom(ct_small(), DeviceSigner(*expired), signed_at=NOW)
    assert caught.value.code == "cert_not_valid_now"


def test_image_without_its_uids_is_refused() -> None:
    with pytest.raises(SigningRefused) as caught:
        sign_dicom(_edit(ct_small(), SeriesInstanceUID=None), SIGNER)
    assert caught.value.code == "missing_identifiers"


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_dataset_already_decoded_by_the_pipeline_still_checks_valid(name: str) -> None:
    # The ingest hands over a Dataset whose values the decoder has touched (converted from raw
    # bytes); re-encoding them for the MAC must give the bytes that were signed.
    ds = pydicom.dcmread(io.BytesIO(sign_dicom(pydicom_testfile(name).read_bytes(), SIGNER)))

    def touch(level: pydicom.Dataset) -> None:
        for elem in level:
            if elem.VR == "SQ":
                for item in elem.value:
                    touch(item)

    touch(ds)
    assert ds.pixel_array.size > 0
    assert check_dicom_signatures(ds, [CA[1]]).status == "valid"
