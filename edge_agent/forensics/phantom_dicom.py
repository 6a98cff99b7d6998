"""A simulated exposure written as the DICOM file a CR or DX detector would send.

One writer for the demo's panel (:mod:`edge_agent.demo_device`) and the training data's simulated
radiographs (``models/train/simdata.py``), so both carry the same header a real acquisition has:
the CR / DX Image Storage SOP classes (PS3.4 B.5), ImageType ORIGINAL\\PRIMARY, and the exposure
attributes a detector writes (PS3.3 C.8.11.4 DX Detector: Imager Pixel Spacing; C.8.7.2 /
C.8.11.7: KVP, exposure in uAs), which the metadata rules look for. The patient is a phantom.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["Exposure", "exposure_dicom", "STORAGE"]

STORAGE = {  # PS3.4 B.5
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
}


@dataclass(frozen=True)
class Exposure:
    """What the header says about the device and the exposure (None: the attribute is left out)."""

    modality: str = "DX"
    manufacturer: str = "edge-agent physics simulator"
    model_name: str | None = None
    patient: tuple[str, str] = ("SIMULATED^PHANTOM", "SIM")
    kvp: str | None = None
    exposure_uas: int | None = None
    pixel_spacing_mm: str | None = None
    monochrome1: bool = False

    def __post_init__(self) -> None:
        if self.modality not in STORAGE:
            raise ValueError(f"modality {self.modality!r}: expected one of {sorted(STORAGE)}")


def exposure_dicom(img: np.ndarray, bits: int, exposure: Exposure) -> bytes:
    """``img`` in [0, 1] (1 = most signal) stored at ``bits`` bits as an uncompressed PS3.10 file."""
    full = (1 << bits) - 1
    shown = np.clip(img, 0.0, 1.0)
    stored = np.round((1.0 - shown if exposure.monochrome1 else shown) * full).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = STORAGE[exposure.modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = exposure.modality
    ds.Manufacturer = exposure.manufacturer
    if exposure.model_name is not None:
        ds.ManufacturerModelName = exposure.model_name
    ds.PatientName, ds.PatientID = exposure.patient
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if exposure.kvp is not None:
        ds.KVP = exposure.kvp
    if exposure.exposure_uas is not None:
        ds.ExposureInuAs = exposure.exposure_uas
    if exposure.pixel_spacing_mm is not None:
        ds.ImagerPixelSpacing = [exposure.pixel_spacing_mm, exposure.pixel_spacing_mm]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if exposure.monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
