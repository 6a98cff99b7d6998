"""The demo's own X-ray detector: a simulated flat panel that learns its noise and fingerprint the
way a real device does, then acquires the images the forensic layers judge.

``edge-agent demo`` runs on a machine without a detector, so it renders one with the physics
simulator (:mod:`edge_agent.forensics.simulator`: Beer-Lambert projection of procedural anatomy,
Poisson quanta, scintillator blur, gain and offset maps, defect pixels, line noise). Its first ten
acquisitions teach the device its noise profile and fingerprint (:func:`~edge_agent.learn_cmd.learn_device`,
what ``edge-agent learn`` runs); then it writes, as DX DICOM files claiming this device:

* two new authentic exposures (they pass), one of them mirrored and cropped to the collimated field
  as a console delivers a view (the fingerprint is found where it lies on the detector),
* an exposure of another panel of the same model (its fingerprint is absent),
* an exposure with a region pasted in from the other panel (the fingerprint is missing there;
  the heat map marks it in cyan),
* a generated image with uniform grain, no detector behind it (noise and fingerprint both wrong).

Only the simulator's panels are real-like here; a real device learns from its own acquisitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import ForensicsError
from .forensics.phantom_dicom import Exposure, exposure_dicom

__all__ = ["make_device", "SHAPE"]

SHAPE = (768, 1024)  # rows, columns of the demo panel (12 model tiles)
_THIS, _OTHER = 4242, 4243  # panel seeds: this device, another unit of the same model
_DEMO_EXPOSURE = Exposure(modality="DX", manufacturer="edge-agent demo", model_name="simulated flat panel",
                          patient=("DEMO^PHANTOM", "PHANTOM"), kvp="110", pixel_spacing_mm="0.139")


def _dx_dicom(img: np.ndarray, bits: int = 12) -> bytes:
    """A DX exposure of the demo panel as the detector writes it; a phantom, no patient."""
    return exposure_dicom(img, bits, _DEMO_EXPOSURE)


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
    if learned.profile_json is None or learned.fingerprint_bytes is None:
        raise ForensicsError(f"the demo panel's enrolment learned no profile or fingerprint: {'; '.join(learned.notes)}")
    (device_dir / "noise-profile.json").write_text(learned.profile_json)
    (device_dir / "fingerprint.bin").write_bytes(learned.fingerprint_bytes)
    images.mkdir(parents=True, exist_ok=True)
    (images / "authentic.dcm").write_bytes(_dx_dicom(this.acquire(rng)))
    # as a console delivers a view: mirrored and cropped to the collimated field (the fingerprint
    # check finds where it lies on the detector)
    turned = np.ascontiguousarray(this.acquire(rng)[96:704, 160:960][:, ::-1])
    (images / "authentic-mirrored-cropped.dcm").write_bytes(_dx_dicom(turned))
    (images / "other-detector.dcm").write_bytes(_dx_dicom(other.acquire(rng)))
    forged, _ = splice(this.acquire(rng), other.acquire(rng), rng)
    (images / "spliced-region.dcm").write_bytes(_dx_dicom(forged))
    (images / "generated-uniform-grain.dcm").write_bytes(_dx_dicom(generated_like(rng, SHAPE, "uniform_grain")))
    return {"noise_profile": str((device_dir / "noise-profile.json").resolve()),
            "fingerprint": str((device_dir / "fingerprint.bin").resolve()),
            "fingerprint_sha256": learned.fingerprint_sha256}
