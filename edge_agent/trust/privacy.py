"""``assert_no_patient_data(payload, dataset)``: does a payload that leaves the device carry any
identifying value from the DICOM dataset it was made from? Used by tests on every payload shape,
and usable by an integrator on their own extensions.

Checked values (PS3.15 Annex E, Basic Application Level Confidentiality Profile, is the model):
every Person Name (PN), the patient's IDs, birth date/time, sex-independent demographics,
accession number, study ID, institution, all dates and times of study/series/acquisition/content,
and every UID (UI) except the ones that name a *class* (SOP Class, Transfer Syntax,
Implementation Class, or any UID in the DICOM registry — PS3.6 Annex A).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ..errors import PatientDataLeak

__all__ = ["assert_no_patient_data", "identifying_values"]

_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientAddress", "PatientTelephoneNumbers", "MilitaryRank", "EthnicGroup", "PatientComments",
    "AccessionNumber", "StudyID", "InstitutionName", "InstitutionAddress", "StationName",
    "DeviceSerialNumber", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "AcquisitionDateTime",
    "RequestAttributesSequence", "StudyDescription", "SeriesDescription", "MedicalRecordLocator",
)
_CLASS_UID_KEYWORDS = {
    "SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID",
    "ReferencedSOPClassUID", "ReferencedSOPClassUIDInFile", "CodingSchemeUID",
}


def _strings(value: Any) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        for v in value:
            yield from _strings(v)
        return
    text = str(value).strip("\x00 ")
    if text:
        yield text


def identifying_values(dataset: Any) -> list[tuple[str, str]]:
    """``(keyword, value)`` pairs that must not leave the device, from a pydicom Dataset
    (its file meta included), recursing into sequences."""
    from pydicom.uid import UID

    found: list[tuple[str, str]] = []

    def walk(ds: Any) -> None:
        for elem in ds:
            if elem.VR == "SQ":
                for item in elem.value or ():
                    walk(item)
                continue
            kw = elem.keyword or str(elem.tag)
            if elem.VR == "PN":
                for name in _strings(elem.value):
                    found.append((kw, name))
                    found.extend((kw, part) for part in name.replace("=", "^").split("^") if len(part.strip()) >= 3)
            elif elem.VR == "UI":
                for uid in _strings(elem.value):
                    if kw in _CLASS_UID_KEYWORDS or UID(uid).is_valid and UID(uid).name != uid:
                        continue  # a registered class/transfer-syntax UID, not an instance
                    found.append((kw, uid))
            elif kw in _KEYWORDS:
                for text in _strings(elem.value):
                    found.append((kw, text))
                    if elem.VR == "DA" and len(text) == 8:
                        found.append((kw, f"{text[:4]}-{text[4:6]}-{text[6:]}"))

    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        walk(meta)
    walk(dataset)
    return found


# Hashes, UUIDs and numbers are compared whole: a 4-digit patient ID occurs by chance inside a
# 64-digit hex digest about once in a thousand payloads, and that would be a flaky false alarm.
_OPAQUE = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f-]{36}|-?[0-9.e+-]+|true|false)$")


def _leaves(obj: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield path + f".{k}", str(k)
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}[{i}]")
    elif obj is not None:
        yield path, obj if isinstance(obj, str) else json.dumps(obj)


def assert_no_patient_data(payload: dict[str, Any] | bytes | str, dataset: Any) -> None:
    """Raise :class:`PatientDataLeak` naming the DICOM keyword and the payload path of the first
    identifying value found. Values of 4+ characters are searched as substrings (so a name inside
    a sentence is caught); shorter ones must not equal a whole payload string."""
    if isinstance(payload, (bytes, str)):
        payload = json.loads(payload)
    leaves = list(_leaves(payload))
    for keyword, value in identifying_values(dataset):
        needle = value.lower()
        for path, text in leaves:
            hay = text.lower()
            substring = len(needle) >= 4 and not _OPAQUE.match(hay)
            if hay == needle or (substring and needle in hay):
                raise PatientDataLeak(
                    f"payload leaks {keyword} at {path}: identifying values must be dropped or HMAC'd "
                    "before they leave the device"
                )
