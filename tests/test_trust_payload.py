"""What leaves the device: a verdict payload with hashes and an HMAC'd instance UID, never patient
data; a sequence number that survives restarts and crashes; an honest clock-sync flag."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path

import pydicom
import pytest

from edge_agent.errors import PatientDataLeak, SequenceError
from edge_agent.trust import clock
from edge_agent.trust.payload import DeviceContext, build_verdict_payload, uid_hmac
from edge_agent.trust.privacy import assert_no_patient_data
from edge_agent.trust.sequence import SequenceStore
from trust_factory import BOOT_ID, NOW, SITE_SECRET, dicom_path, verdict_for

CTX = DeviceContext("ct-0042", BOOT_ID, SITE_SECRET)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
def test_payload_from_a_real_dicom_file_carries_no_patient_data(name: str) -> None:
    path = dicom_path(name)
    ds = pydicom.dcmread(path)
    payload = build_verdict_payload(verdict_for(path), CTX, seq=3, issued_at=NOW, clock_synced=None)
    assert_no_patient_data(payload, ds)
    assert_no_patient_data(json.dumps(payload), ds)  # the serialised form too
    image = payload["image"]
    assert image["sop_class_uid"] == ds.SOPClassUID  # a class, allowed
    assert image["sop_instance_uid_hmac"] == uid_hmac(ds.SOPInstanceUID, SITE_SECRET)
    assert ds.SOPInstanceUID not in json.dumps(payload)
    assert "path" not in payload and str(path) not in json.dumps(payload)
    assert uuid.UUID(payload["msg_id"]).version == 4
    assert payload["verdict"]["reasons"][0]["message"].startswith("<image>: score")


def test_checker_catches_a_patient_name_in_a_reason_and_an_instance_uid_anywhere() -> None:
    path = dicom_path("CT_small.dcm")
    ds = pydicom.dcmread(path)
    payload = build_verdict_payload(verdict_for(path), CTX, seq=1, issued_at=NOW, clock_synced=True)
    leaky = json.loads(json.dumps(payload))
    leaky["verdict"]["reasons"][0]["message"] = f"tampered image of {ds.PatientName}"
    with pytest.raises(PatientDataLeak, match=r"PatientName at \$\.verdict\.reasons\[0\]\.message"):
        assert_no_patient_data(leaky, ds)
    leaky = json.loads(json.dumps(payload))
    leaky["image"]["sop_instance_uid_hmac"] = ds.SOPInstanceUID
    with pytest.raises(PatientDataLeak, match="SOPInstanceUID"):
        assert_no_patient_data(leaky, ds)
    leaky = json.loads(json.dumps(payload))
    leaky["extra"] = {"birth": ds.PatientBirthDate or "19700101"}
    ds.PatientBirthDate = leaky["extra"]["birth"]
    with pytest.raises(PatientDataLeak, match="PatientBirthDate"):
        assert_no_patient_data(leaky, ds)


def test_the_same_uid_hashes_alike_at_one_site_and_differently_at_another() -> None:
    uid = "1.2.3.4.5.6.7.8"
    assert uid_hmac(uid, SITE_SECRET) == uid_hmac(uid + "\x00", SITE_SECRET)
    assert uid_hmac(uid, SITE_SECRET) != uid_hmac(uid, b"t" * 32)


def test_payload_builder_refuses_naive_times_and_short_secrets() -> None:
    v = verdict_for(dicom_path())
    with pytest.raises(ValueError, match="timezone"):
        build_verdict_payload(v, CTX, seq=1, issued_at=NOW.replace(tzinfo=None), clock_synced=None)
    with pytest.raises(ValueError, match="secret"):
        DeviceContext("ct-0042", BOOT_ID, b"short")


def test_unreadable_image_still_gets_a_payload_without_image_facts() -> None:
    v = dataclasses.replace(verdict_for(dicom_path()), verdict="unreadable", score=None, model=None, facts=None)
    payload = build_verdict_payload(v, CTX, seq=1, issued_at=NOW, clock_synced=False)
    assert payload["image"] is None and payload["verdict"]["label"] == "unreadable"


def test_sequence_only_increases_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "sequence"
    store = SequenceStore(path, block=5)
    assert [store.next() for _ in range(7)] == [1, 2, 3, 4, 5, 6, 7]
    store.close()  # the process ends
    restarted = SequenceStore(path, block=5)
    assert restarted.next() == 11  # 8..10 were reserved by the first process: skipped, never reused


def test_reserved_mark_is_on_disk_before_any_number_of_the_block_is_used(tmp_path: Path) -> None:
    path = tmp_path / "sequence"
    store = SequenceStore(path, block=100)
    first = store.next()
    assert int(path.read_text()) == first + 100  # a crash right now restarts at 101
    store.close()  # the process dies (the kernel drops its lock)
    crashed_and_restarted = SequenceStore(path, block=100)
    assert crashed_and_restarted.next() > first


def test_a_second_process_cannot_share_the_sequence(tmp_path: Path) -> None:
    with SequenceStore(tmp_path / "sequence"):
        with pytest.raises(SequenceError, match="another process"):
            SequenceStore(tmp_path / "sequence")
    assert SequenceStore(tmp_path / "sequence").next() == 1  # nothing was reserved: starts at 1


def test_corrupt_sequence_file_stops_signing_instead_of_guessing(tmp_path: Path) -> None:
    path = tmp_path / "sequence"
    path.write_text("garbage")
    with pytest.raises(SequenceError, match="not a positive integer"):
        SequenceStore(path)


def test_clock_status_degrades_to_unknown_when_the_os_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "_adjtimex", lambda: None)
    monkeypatch.setattr(clock.shutil, "which", lambda name: None)
    assert clock.clock_synchronised() is None
    monkeypatch.setattr(clock, "_adjtimex", lambda: True)
    assert clock.clock_synchronised() is True


def test_clock_status_on_this_machine_is_a_bool_or_none() -> None:
    assert clock.clock_synchronised() in (True, False, None)


def test_issue_time_is_rfc3339_utc_with_milliseconds() -> None:
    payload = build_verdict_payload(verdict_for(dicom_path()), CTX, seq=1,
                                    issued_at=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc),
                                    clock_synced=True)
    assert payload["issued_at"] == "2026-01-02T03:04:05.678Z"
