"""User stories for the DICOM metadata rules (edge_agent.forensics.metadata)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from edge_agent.forensics import RULES, DeviceIdentity, check_metadata
from edge_agent.forensics.metadata import evaluate_rules

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

NOW = dt.datetime(2026, 11, 22, 3, 0)
DX = "1.2.840.10008.5.1.4.1.1.1.1"
IDENTITY = DeviceIdentity(manufacturer="Acme Imaging", model="FlatPanel 3000", serial="SN-0042",
                          station="XR-ROOM-1", uid_roots=("1.2.826.0.1.3680043.10.99",))


def _dx(**overrides: object) -> Dataset:
    """A DX exposure as this (fictitious) device writes it."""
    ds = Dataset()
    ds.SOPClassUID = DX
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.99.1.2.3"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.99.1.2"
    ds.StudyInstanceUID = "1.2.840.999.1"  # from the worklist: not the device's root, and fine
    ds.Modality = "DX"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Manufacturer = "Acme Imaging"
    ds.ManufacturerModelName = "FlatPanel 3000"
    ds.DeviceSerialNumber = "SN-0042"
    ds.StationName = "XR-ROOM-1"
    ds.SoftwareVersions = "FP3000 fw 4.2.1"
    ds.KVP = "110"
    ds.ExposureTime = "12"
    ds.ImagerPixelSpacing = [0.139, 0.139]
    ds.StudyDate, ds.StudyTime = "20261122", "024500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20261122", "025012"
    ds.ContentDate, ds.ContentTime = "20261122", "025013"
    for k, v in overrides.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def _codes(ds: Dataset, identity: DeviceIdentity | None = IDENTITY) -> set[str]:
    return set(check_metadata(ds, identity, NOW).flagged_codes)


def test_the_devices_own_exposure_passes_every_rule():
    finding = check_metadata(_dx(), IDENTITY, NOW)
    assert finding.layer == "metadata" and finding.reasons == () and finding.score == 0.0


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG3_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm"])
def test_real_acquisitions_from_other_vendors_raise_nothing_without_a_device_identity(name):
    ds = pydicom.dcmread(get_testdata_file(name, download=False), stop_before_pixels=True)
    assert check_metadata(ds, None, NOW).reasons == ()


def test_image_from_another_vendors_device_is_caught_by_the_identity_rules():
    codes = _codes(_dx(Manufacturer="Other Corp", ManufacturerModelName="X1", DeviceSerialNumber="9"))
    assert {"metadata.manufacturer_mismatch", "metadata.model_mismatch", "metadata.serial_mismatch"} <= codes


def test_identity_compares_names_loosely_but_serials_exactly():
    assert _codes(_dx(Manufacturer="ACME  imaging.")) == set()
    assert "metadata.serial_mismatch" in _codes(_dx(DeviceSerialNumber="SN-0043"))


def test_identity_rules_are_skipped_when_no_identity_is_configured():
    assert _codes(_dx(Manufacturer="Other Corp", SOPInstanceUID="1.2.3.4"), identity=None) == set()


def test_cr_storage_object_claiming_modality_ct_is_a_hand_assembled_header():
    codes = _codes(_dx(SOPClassUID="1.2.840.10008.5.1.4.1.1.1", Modality="CT"))
    assert "metadata.sop_class_modality_mismatch" in codes


def test_dx_exposure_without_imager_pixel_spacing_is_missing_what_the_standard_requires():
    assert "metadata.acquisition_attributes_missing" in _codes(_dx(ImagerPixelSpacing=None))
    assert "metadata.acquisition_attributes_missing" in _codes(_dx(ImagerPixelSpacing=None), identity=None)


def test_a_retrofit_panel_that_writes_no_kvp_is_not_flagged_unless_its_device_says_it_always_writes_one():
    # kVp is optional in the DX IOD; a panel not coupled to the generator does not know it
    assert _codes(_dx(KVP=None, ExposureTime=None)) == set()
    assert _codes(_dx(KVP=None), identity=None) == set()
    ours = dataclasses.replace(IDENTITY, writes=("KVP", "ExposureTime"))
    assert _codes(_dx(), ours) == set()
    finding = check_metadata(_dx(KVP=None), ours, NOW)
    assert finding.flagged_codes == ("metadata.acquisition_attributes_missing",)
    assert "without KVP, which every exposure of this device writes" in finding.reasons[0].message


def test_a_device_identity_naming_an_attribute_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="KVPP"):
        DeviceIdentity(writes=("KVPP",))


def test_secondary_capture_image_type_on_an_exposure_is_flagged_and_derived_only_when_device_writes_original():
    assert "metadata.not_primary_acquisition" in _codes(_dx(ImageType=["DERIVED", "SECONDARY"]))
    assert "metadata.not_primary_acquisition" not in _codes(_dx(ImageType=["DERIVED", "PRIMARY"]))
    strict = DeviceIdentity(manufacturer="Acme Imaging", writes_original=True)
    assert "metadata.not_primary_acquisition" in _codes(_dx(ImageType=["DERIVED", "PRIMARY"]), strict)


@pytest.mark.parametrize("field,value", [
    ("SoftwareVersions", "Adobe Photoshop 25.1"),
    ("SoftwareVersions", "ComfyUI + SDXL 1.0"),
    ("Manufacturer", "Midjourney"),
    ("DerivationDescription", "generated with Stable Diffusion 2.1"),
    ("ImageComments", "DALL·E 3"),
    ("SecondaryCaptureDeviceSoftwareVersions", "GIMP 2.10"),
])
def test_editing_or_generation_tool_named_in_the_header_is_flagged(field, value):
    assert "metadata.editing_software" in _codes(_dx(**{field: value}), identity=None)


@pytest.mark.parametrize("value", ["pydicom 3.0.1", "DCMTK 3.6.8", "Roentgen 2.0", "Firefox", "dallas"])
def test_dicom_toolkits_and_lookalike_words_are_not_mistaken_for_editors(value):
    assert "metadata.editing_software" not in _codes(_dx(SoftwareVersions=value), identity=None)


def test_uids_minted_outside_the_devices_root_are_flagged_but_the_worklist_study_uid_is_not():
    assert "metadata.uid_root_foreign" in _codes(_dx(SOPInstanceUID="1.2.826.0.1.3680043.10.990.1"))
    assert "metadata.uid_root_foreign" not in _codes(_dx(StudyInstanceUID="2.25.1234"))


@pytest.mark.parametrize("overrides,code", [
    ({"AcquisitionDate": "20271122"}, "metadata.date_impossible"),
    ({"ContentDate": "18901231"}, "metadata.date_impossible"),
    ({"AcquisitionDate": "2026-11-22"}, "metadata.date_malformed"),
    ({"AcquisitionTime": "256100"}, "metadata.date_malformed"),
    ({"AcquisitionDate": "20261121"}, "metadata.acquired_before_study"),
])
def test_impossible_or_malformed_dates_are_flagged(overrides, code):
    assert code in _codes(_dx(**overrides))


def test_a_research_archive_with_dates_shifted_decades_ahead_is_not_flagged_when_scanned_without_a_device():
    # de-identification with the Modified Dates option (PS3.15 E.1-1) moves dates, e.g. into the 2180s
    shifted = _dx(StudyDate="21800506", AcquisitionDate="21800506", ContentDate="21800506",
                  PatientIdentityRemoved="YES", LongitudinalTemporalInformationModified="MODIFIED")
    assert _codes(shifted, identity=None) == set()
    archive = DeviceIdentity(manufacturer="Acme Imaging", fresh=False)
    assert _codes(shifted, archive) == set()
    assert _codes(_dx(ContentDate="18901231"), identity=None) == {"metadata.date_impossible"}


def test_a_de_identified_image_arriving_as_this_devices_fresh_acquisition_is_flagged():
    codes = _codes(_dx(PatientIdentityRemoved="YES", DeidentificationMethod="Basic Application Confidentiality Profile"))
    assert codes == {"metadata.deidentified_on_device"}
    # shifting the dates to hide it still leaves the date in the future on a fresh device
    assert {"metadata.deidentified_on_device", "metadata.date_impossible"} <= _codes(
        _dx(AcquisitionDate="21800506", LongitudinalTemporalInformationModified="MODIFIED"))
    assert "metadata.deidentified_on_device" not in _codes(_dx(PatientIdentityRemoved="NO"))


def test_acr_nema_dotted_dates_of_old_real_files_are_accepted():
    assert _codes(_dx(StudyDate="2026.11.22", AcquisitionDate="2026.11.22")) == set()


def test_every_rule_names_its_attack_and_codes_are_unique():
    codes = [r.code for r in RULES]
    assert len(codes) == len(set(codes))
    for rule in RULES:
        assert rule.code.startswith("metadata.") and len(rule.attack) > 20


def test_score_is_a_noisy_or_of_the_fired_rules_severities():
    fired = evaluate_rules(_dx(Manufacturer="Other", SoftwareVersions="Photoshop"), IDENTITY, NOW)
    finding = check_metadata(_dx(Manufacturer="Other", SoftwareVersions="Photoshop"), IDENTITY, NOW)
    assert len(fired) == 2 and finding.score == pytest.approx(1 - 0.1 * 0.1)
