"""DICOM metadata rules: header evidence that an image is not this device's fresh acquisition.

The rules are a table (:data:`RULES`): each names the attack it catches, a pure check over a
pydicom ``Dataset`` (and, when configured, the device's own :class:`DeviceIdentity`) and a
severity. Rules that need the identity are skipped when it is absent; rules that judge an
*acquisition* apply only to image storage SOP classes of acquisition modalities.

Standards: attribute types and modules from DICOM PS3.3 (CR Image C.8.1.1, CT Image C.8.2.1,
DX Detector C.8.11.4, General Image C.7.6.1 with Image Type C.7.6.1.1.2, General Equipment C.7.5.1);
DA/TM/DT value formats from PS3.5 sec. 6.2 (with the ACR-NEMA ``yyyy.mm.dd`` date form that
PS3.5 lists for backward compatibility); UID construction from PS3.5 sec. 9.

False-positive rates of every rule on the real DICOM files shipped with pydicom, pydicom-data and
pynetdicom are measured by ``python -m benchmarks.eval_forensics --only metadata`` and listed in
docs/forensics.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from ..verdict import Reason
from .finding import LayerFinding

__all__ = ["DeviceIdentity", "Rule", "RULES", "SEVERITY_SCORE", "check_metadata", "evaluate_rules"]

SEVERITY_SCORE = {"high": 0.9, "medium": 0.6, "low": 0.3}
_ROENTGEN = dt.date(1895, 11, 8)  # discovery of X-rays: no radiograph is older


@dataclass(frozen=True)
class DeviceIdentity:
    """What this device writes into its own images (from its configuration / provisioning).

    Empty fields are unknown, and the rules that need them are skipped. ``uid_roots``: prefixes of
    the UIDs the device generates (PS3.5 sec. 9: an organisation root, then the device's suffix);
    ``writes_original``: the device marks its exposures ORIGINAL (then DERIVED is suspicious);
    ``fresh``: images are checked as they leave the detector (then an acquisition dated before
    its study is impossible - in archives, re-dating by anonymisation makes it common);
    ``writes``: DICOM keywords every exposure of this device carries beyond what the standard
    requires (e.g. ``KVP``, ``ExposureInuAs``, ``DetectorID``): missing on an image claiming to be
    its acquisition, they are evidence of a hand-made header."""

    manufacturer: str = ""
    model: str = ""
    serial: str = ""
    station: str = ""
    uid_roots: tuple[str, ...] = ()
    writes_original: bool = False
    fresh: bool = True
    writes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from pydicom.datadict import tag_for_keyword

        if isinstance(self.writes, str) or not all(isinstance(k, str) for k in self.writes):
            raise ValueError(f"writes: expected a list of attribute keywords such as [KVP], got {self.writes!r}")
        for keyword in self.writes:
            if tag_for_keyword(keyword) is None:
                raise ValueError(f"writes: {keyword!r} is not a DICOM attribute keyword (PS3.6)")
        for root in self.uid_roots:
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)*\.?", root) or len(root) > 64:
                raise ValueError(f"UID root {root!r} is not a dotted-decimal prefix (PS3.5 sec. 9)")


@dataclass(frozen=True)
class Rule:
    code: str
    attack: str
    severity: str
    check: Callable[[Dataset, DeviceIdentity | None, dt.datetime], str | None] = field(repr=False)
    needs_identity: bool = False
    acquisition_only: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITY_SCORE:
            raise ValueError(f"severity {self.severity!r} is not one of {tuple(SEVERITY_SCORE)}")


# --- SOP classes (PS3.4 Annex B.5) and the modalities their IODs allow (PS3.3 A.x, C.7.3.1.1.1) ---
_SOP_MODALITIES: dict[str, frozenset[str]] = {
    "1.2.840.10008.5.1.4.1.1.1": frozenset({"CR"}),
    "1.2.840.10008.5.1.4.1.1.1.1": frozenset({"DX"}),
    "1.2.840.10008.5.1.4.1.1.1.1.1": frozenset({"DX"}),
    "1.2.840.10008.5.1.4.1.1.1.2": frozenset({"MG"}),
    "1.2.840.10008.5.1.4.1.1.1.2.1": frozenset({"MG"}),
    "1.2.840.10008.5.1.4.1.1.1.3": frozenset({"IO"}),
    "1.2.840.10008.5.1.4.1.1.1.3.1": frozenset({"IO"}),
    "1.2.840.10008.5.1.4.1.1.2": frozenset({"CT"}),
    "1.2.840.10008.5.1.4.1.1.2.1": frozenset({"CT"}),
    "1.2.840.10008.5.1.4.1.1.3": frozenset({"US"}),
    "1.2.840.10008.5.1.4.1.1.3.1": frozenset({"US"}),
    "1.2.840.10008.5.1.4.1.1.4": frozenset({"MR"}),
    "1.2.840.10008.5.1.4.1.1.4.1": frozenset({"MR"}),
    "1.2.840.10008.5.1.4.1.1.5": frozenset({"NM"}),
    "1.2.840.10008.5.1.4.1.1.6": frozenset({"US"}),
    "1.2.840.10008.5.1.4.1.1.6.1": frozenset({"US"}),
    "1.2.840.10008.5.1.4.1.1.12.1": frozenset({"XA"}),
    "1.2.840.10008.5.1.4.1.1.12.2": frozenset({"RF"}),
    "1.2.840.10008.5.1.4.1.1.20": frozenset({"NM"}),
    "1.2.840.10008.5.1.4.1.1.481.1": frozenset({"RTIMAGE"}),
}
_PROJECTION_XRAY = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA"})
# Enhanced (multi-frame) classes keep acquisition attributes inside functional groups (PS3.3
# C.7.6.16), not at the top level, so the top-level attribute rule skips them.
_ENHANCED = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.4.1"})

# What the standard requires an exposure to write, per modality (Type 1 or 2: a conformant object
# always has it). Optional attributes are not here: CR readers and retrofit DR panels are not
# coupled to the generator and write no kVp or exposure (the real Fuji CR file RG3 in pydicom-data
# carries neither kVp nor exposure nor spacing), so requiring them by default flags real images.
# A device that always writes them says so in its identity (``DeviceIdentity.writes``).
_ACQUISITION_ATTRIBUTES: dict[str, tuple[tuple[str, ...], ...]] = {
    # DX Detector module C.8.11.4 (DX, MG and IO IODs): Imager Pixel Spacing is Type 1.
    "DX": (("ImagerPixelSpacing",),),
    "MG": (("ImagerPixelSpacing",),),
    "IO": (("ImagerPixelSpacing",),),
    # CT Image module C.8.2.1: KVP is Type 2 (present, may be empty).
    "CT": (("KVP",),),
}

# Image editing and generation tools. Word-boundary patterns, lower case; general DICOM toolkits
# (pydicom, dcmtk, gdcm) are NOT here: vendors and PACS write with them every day.
_TOOL_PATTERNS = {
    "Adobe Photoshop": r"photoshop",
    "GIMP": r"\bgimp\b",
    "Stable Diffusion": r"stable[\s_-]?diffusion|\bsdxl\b|\bsd[\s_-]?(1\.5|2\.1|3)\b",
    "DALL-E": r"dall[\s·\-_.]?e",
    "Midjourney": r"mid[\s_-]?journey",
    "ComfyUI": r"comfy[\s_-]?ui",
    "AUTOMATIC1111": r"automatic1111|stable-diffusion-webui",
    "InvokeAI": r"invoke[\s_-]?ai",
    "Hugging Face diffusers": r"\bdiffusers\b",
    "Adobe Firefly": r"\bfirefly\b",
    "GPT-4o image generation": r"gpt[\s_-]?4o|gpt-image|\bopenai\b",
    "Google Imagen": r"\bimagen\b",
    "FLUX": r"\bflux\.1\b|black forest labs",
    "RoentGen (chest X-ray diffusion)": r"\broentgen[\s_-]?(diffusion|model)|\broentgen\b.*\bdiffusion",
}
_TOOL_RE = [(name, re.compile(p, re.IGNORECASE)) for name, p in _TOOL_PATTERNS.items()]
_TOOL_FIELDS = ("SoftwareVersions", "Manufacturer", "ManufacturerModelName", "DerivationDescription",
                "SecondaryCaptureDeviceManufacturer", "SecondaryCaptureDeviceManufacturerModelName",
                "SecondaryCaptureDeviceSoftwareVersions", "ImageComments", "StationName")


def _text(ds: Dataset, keyword: str) -> str:
    v = ds.get(keyword)
    if v is None:
        return ""
    if isinstance(v, (list, tuple)) or (hasattr(v, "__iter__") and not isinstance(v, (str, bytes))):
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _norm(s: str) -> str:
    return re.sub(r"[\s.,_-]+", " ", s).strip().upper()


def _is_acquisition_image(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in _SOP_MODALITIES


# ------------------------------------------------------------------------------------------ checks
def _identity_field(keyword: str, attr: str, label: str) -> Callable[[Dataset, DeviceIdentity | None, dt.datetime], str | None]:
    def check(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
        want = getattr(ident, attr) if ident else ""
        if not want:
            return None
        got = _text(ds, keyword)
        if _norm(got) != _norm(want):
            return f"{label} is {got!r}, this device is {want!r}"
        return None

    return check


def _sop_modality(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    allowed = _SOP_MODALITIES.get(str(ds.get("SOPClassUID", "")))
    modality = _text(ds, "Modality").upper()
    if allowed is None or not modality or modality in allowed:
        return None
    name = getattr(ds.get("SOPClassUID"), "name", str(ds.get("SOPClassUID")))
    return f"a {name} object with Modality {modality} (the IOD allows {', '.join(sorted(allowed))})"


def _acquisition_attributes(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    if str(ds.get("SOPClassUID", "")) in _ENHANCED:
        return None
    modality = _text(ds, "Modality").upper()
    missing = [" or ".join(group) for group in _ACQUISITION_ATTRIBUTES.get(modality, ())
               if not any(k in ds for k in group)]
    own = [k for k in (ident.writes if ident is not None else ()) if k not in ds and k not in missing]
    if missing:
        return f"a {modality} exposure without {', '.join(missing + own)}, which the standard requires it to write"
    if own:
        return f"an exposure without {', '.join(own)}, which every exposure of this device writes"
    return None


def _image_type(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    modality = _text(ds, "Modality").upper()
    if modality not in _PROJECTION_XRAY or "ImageType" not in ds:
        return None
    values = [v.strip().upper() for v in _text(ds, "ImageType").split("\\")]
    shown = "\\".join(values)
    if len(values) > 1 and values[1] == "SECONDARY":
        return f"Image Type {shown}: SECONDARY means created after the examination, not by the exposure"
    if values and values[0] == "DERIVED" and ident is not None and ident.writes_original:
        return f"Image Type {shown}: this device writes ORIGINAL for its exposures"
    return None


def _editing_tool(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    texts = [(k, _text(ds, k)) for k in _TOOL_FIELDS]
    for item in ds.get("ContributingEquipmentSequence", []) or []:
        texts += [(f"ContributingEquipment.{k}", _text(item, k)) for k in ("Manufacturer", "ManufacturerModelName", "SoftwareVersions")]
    for keyword, value in texts:
        for name, pattern in _TOOL_RE:
            if value and pattern.search(value):
                return f"{keyword} names {name} ({value[:60]!r})"
    return None


def _uid_root(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    if ident is None or not ident.uid_roots:
        return None
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID"):  # the Study UID may come from the worklist
        uid = _text(ds, keyword)
        if uid and not any(uid == r.rstrip(".") or uid.startswith(r.rstrip(".") + ".") for r in ident.uid_roots):
            return f"{keyword} {uid[:24]}... is not under this device's UID root(s)"
    return None


_DATE_KEYS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_TIME_KEYS = {"StudyDate": "StudyTime", "SeriesDate": "SeriesTime", "AcquisitionDate": "AcquisitionTime",
              "ContentDate": "ContentTime"}


def _parse_da(s: str) -> dt.date:
    s = s.strip()
    if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", s):  # ACR-NEMA form, PS3.5 6.2 (backward compatibility)
        s = s.replace(".", "")
    if not re.fullmatch(r"\d{8}", s):
        raise ValueError(s)
    return dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def _parse_tm(s: str) -> dt.time:
    s = s.strip()
    m = re.fullmatch(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?", s)
    if not m:
        raise ValueError(s)
    h, mi, se = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if h > 23 or mi > 59 or se > 60:
        raise ValueError(s)
    return dt.time(h, mi, min(se, 59), int((m[4] or "0").ljust(6, "0")))


def _dates(ds: Dataset) -> tuple[dict[str, dt.datetime], list[str]]:
    """Parsed date(+time) of each dated attribute present, and the malformed ones."""
    out: dict[str, dt.datetime] = {}
    bad: list[str] = []
    for key in _DATE_KEYS:
        raw = _text(ds, key)
        if not raw:
            continue
        try:
            d = _parse_da(raw)
            traw = _text(ds, _TIME_KEYS[key])
            t = _parse_tm(traw) if traw else dt.time(0, 0)
            out[key] = dt.datetime.combine(d, t)
        except ValueError:
            bad.append(f"{key}={raw!r}")
    return out, bad


def _date_malformed(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    _, bad = _dates(ds)
    return f"malformed date/time ({', '.join(bad)}); PS3.5 6.2 wants YYYYMMDD / HHMMSS" if bad else None


def _date_impossible(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    dates, _ = _dates(ds)
    for key, when in dates.items():
        if when.date() < _ROENTGEN:
            return f"{key} {when.date()} is before X-rays were discovered (8 Nov 1895)"
        # A future date is impossible only for an image checked as it leaves the detector: archives
        # and research sets shift dates when they de-identify (PS3.15 E.1-1, "Retain Longitudinal
        # Temporal Information with Modified Dates Option"), often decades ahead, and a scan of such
        # files would flag every one. One day of slack: time zones and device clocks (PS3.3 C.12.1.1.8).
        if ident is not None and ident.fresh and when > now + dt.timedelta(days=1):
            return f"{key} {when:%Y-%m-%d %H:%M} is in the future (now {now:%Y-%m-%d %H:%M})"
    return None


def _deidentified(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    if ident is None or not ident.fresh:
        return None
    # PS3.15 E.1 and PS3.3 C.12.1 (SOP Common): what a de-identifier writes; a detector writes
    # none of it into the exposure it has just made
    marks = [f"Patient Identity Removed {_text(ds, 'PatientIdentityRemoved')}"
             if _text(ds, "PatientIdentityRemoved").upper() == "YES" else "",
             "De-identification Method" if "DeidentificationMethod" in ds or "DeidentificationMethodCodeSequence" in ds else "",
             f"Longitudinal Temporal Information Modified {_text(ds, 'LongitudinalTemporalInformationModified')}"
             if _text(ds, "LongitudinalTemporalInformationModified").upper() in ("MODIFIED", "REMOVED") else ""]
    found = [m for m in marks if m]
    return f"the header says it was de-identified ({'; '.join(found)}): not a fresh acquisition" if found else None


def _acquired_before_study(ds: Dataset, ident: DeviceIdentity | None, now: dt.datetime) -> str | None:
    if ident is None or not ident.fresh:
        return None
    dates, _ = _dates(ds)
    study = dates.get("StudyDate")
    acq = dates.get("AcquisitionDate") or dates.get("ContentDate")
    if study and acq and acq < study - dt.timedelta(minutes=5):
        return f"acquired {acq:%Y-%m-%d %H:%M}, before its study began ({study:%Y-%m-%d %H:%M})"
    return None


RULES: tuple[Rule, ...] = (
    Rule("metadata.manufacturer_mismatch",
         "an image from another vendor's device, or a generated image with a copied header, injected as this device's",
         "high", _identity_field("Manufacturer", "manufacturer", "Manufacturer"), needs_identity=True),
    Rule("metadata.model_mismatch", "an image from another device model presented as this device's",
         "high", _identity_field("ManufacturerModelName", "model", "Manufacturer's Model Name"), needs_identity=True),
    Rule("metadata.serial_mismatch", "an image from another unit (same model) replayed as this unit's",
         "high", _identity_field("DeviceSerialNumber", "serial", "Device Serial Number"), needs_identity=True),
    Rule("metadata.station_mismatch", "an image relabelled from another station (stations do get renamed: low)",
         "low", _identity_field("StationName", "station", "Station Name"), needs_identity=True),
    Rule("metadata.sop_class_modality_mismatch",
         "a hand-assembled header: pixels wrapped in a storage class whose IOD forbids the claimed modality",
         "medium", _sop_modality),
    Rule("metadata.acquisition_attributes_missing",
         "a generated or pasted image wrapped in a minimal header: the exposure attributes a detector writes are absent",
         "medium", _acquisition_attributes, acquisition_only=True),
    Rule("metadata.not_primary_acquisition",
         "an edited/secondary-capture image presented as an exposure (Image Type SECONDARY, or DERIVED where the device writes ORIGINAL)",
         "high", _image_type, acquisition_only=True),
    Rule("metadata.editing_software",
         "an image that passed through an editor or a generator that left its name in the header",
         "high", _editing_tool),
    Rule("metadata.uid_root_foreign", "a UID minted outside this device: the object was created elsewhere",
         "high", _uid_root, needs_identity=True),
    Rule("metadata.date_malformed", "a header written by hand or by a careless tool", "low", _date_malformed),
    Rule("metadata.date_impossible", "a fabricated header: dated before X-rays existed, or (on a device checking "
         "fresh images) in the future", "medium", _date_impossible),
    Rule("metadata.deidentified_on_device", "an image taken from a de-identified archive or research set and injected "
         "as this device's fresh acquisition", "medium", _deidentified, needs_identity=True),
    Rule("metadata.acquired_before_study", "a re-dated or replayed image on a device that stamps fresh acquisitions",
         "medium", _acquired_before_study, needs_identity=True),
)


def evaluate_rules(ds: Dataset, identity: DeviceIdentity | None = None, now: dt.datetime | None = None,
                   rules: Sequence[Rule] = RULES) -> list[tuple[Rule, str]]:
    """The rules that fire, each with its sentence. ``now`` defaults to the current UTC time
    (naive, like DICOM DA/TM without a timezone offset)."""
    when = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    acquisition = _is_acquisition_image(ds)
    fired = []
    for rule in rules:
        if rule.needs_identity and identity is None:
            continue
        if rule.acquisition_only and not acquisition:
            continue
        message = rule.check(ds, identity, when)
        if message:
            fired.append((rule, message))
    return fired


def check_metadata(ds: Dataset, identity: DeviceIdentity | None = None, now: dt.datetime | None = None) -> LayerFinding:
    """The metadata layer's finding: noisy-OR of the fired rules' severities."""
    fired = evaluate_rules(ds, identity, now)
    keep = 1.0
    for rule, _ in fired:
        keep *= 1.0 - SEVERITY_SCORE[rule.severity]
    return LayerFinding("metadata", 1.0 - keep, tuple(Reason(rule.code, msg) for rule, msg in fired))
