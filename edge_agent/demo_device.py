"""The demo's own X-ray detector: a simulated flat panel that learns its noise and fingerprint the
way a real device does, then acquires the images the forensic layers judge.

``edge-agent demo`` runs on a machine without a detector, so it renders one with the physics
simulator (:mod:`edge_agent.forensics.simulator`: Beer-Lambert projection of procedural anatomy,
Poisson quanta, scintillator blur, gain and offset maps, defect pixels, line noise). Its first ten
acquisitions teach the device its noise profile and fingerprint (:func:`~edge_agent.learn_cmd.learn_device`,
what ``edge-agent learn`` runs); then it writes, as DX DICOM files claiming this device:

* two new authentic exposures (they pass),
* an exposure of another panel of the same model (its fingerprint is absent),
* an exposure with a region pasted in from the other panel (the fingerprint is missing there;
  the heat map marks it in cyan),
* a generated image with uniform grain, no detector behind it (noise and fingerprint both wrong).

Only the simulator's panels are real-like here; a real device learns from its own acquisitions.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["make_device", "SHAPE"]

SHAPE = (768, 1024)  # rows, columns of the demo panel (12 model tiles)
_THIS, _OTHER = 4242, 4243  # panel seeds: this device, another unit of the same model
_DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation (PS3.4 B.5)


def _dx_dicom(img: np.ndarray, bits: int = 12) -> bytes:
    """A DX exposure as a detector writes it (PS3.3 A.26: DX Image; Imager Pixel Spacing, KVP);
    a phantom, no patient."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = "DX", ["ORIGINAL", "PRIMARY"]
    ds.Manufacturer, ds.ManufacturerModelName = "edge-agent demo", "simulated flat panel"
    ds.PatientName, ds.PatientID = "DEMO^PHANTOM", "PHANTOM"
    ds.KVP, ds.ImagerPixelSpacing = "110", ["0.139", "0.139"]
    stored = np.round(np.clip(img, 0, 1) * ((1 << bits) - 1)).astype(np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_device(device_dir: Path, images: Path, seed: int = 7, enrolment_images: int = 10) -> dict[str, str]:
    """Enrol the demo panel into ``device_dir`` and write the images it judges into ``images``;
    returns the ``forensics:`` config section that points at what it learned."""
    from .decode import decode_path
    from .forensics.simulator import Panel, PanelSpec, generated_like, splice
    from .learn_cmd import learn_device

    rng = np.random.default_rng(seed)
    this, other = Panel(PanelSpec(_THIS, shape=SHAPE)), Panel(PanelSpec(_OTHER, shape=SHAPE))
    first = device_dir / "first-acquisitions"
    first.mkdir(parents=True, exist_ok=True)
    for i in range(enrolment_images):
        (first / f"acquisition-{i:02d}.dcm").write_bytes(_dx_dicom(this.acquire(rng)))

    def read() -> Iterator[tuple[str, str, np.ndarray]]:
        for p in sorted(first.glob("*.dcm")):
            decoded = decode_path(p)
            yield p.name, decoded.facts.modality or "", decoded.frames[0]

    learned = learn_device(read)
    (device_dir / "noise-profile.json").write_text(learned.profile_json)
    (device_dir / "fingerprint.bin").write_bytes(learned.fingerprint_bytes)
    images.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (images / f"authentic-{i + 1}.dcm").write_bytes(_dx_dicom(this.acquire(rng)))
    (images / "other-detector.dcm").write_bytes(_dx_dicom(other.acquire(rng)))
    forged, _ = splice(this.acquire(rng), other.acquire(rng), rng)
    (images / "spliced-region.dcm").write_bytes(_dx_dicom(forged))
    (images / "generated-uniform-grain.dcm").write_bytes(_dx_dicom(generated_like(rng, SHAPE, "uniform_grain")))
    return {"noise_profile": str((device_dir / "noise-profile.json").resolve()),
            "fingerprint": str((device_dir / "fingerprint.bin").resolve()),
            "fingerprint_sha256": learned.fingerprint_sha256}
