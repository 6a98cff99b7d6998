"""Extra real-like data: physics-simulated flat-panel/CR radiographs at full bit depth.

Why: every real image of the data pack is an 8-bit re-encode of a processed clinical image, and
the only raw detector output is one pydicom-data CR chest (RG1). Detector 1.0.0 learned "the
texture of an 8-bit re-encode is real": it called every simulated authentic exposure and the
held-out RG3 extremity CR synthetic. Issue 3 allows a physics simulator "as extra real-like
data ... never as the only real data"; this module renders such images with
:mod:`edge_agent.forensics.simulator` (Beer-Lambert projection, quantum noise through the
scintillator blur, gain/offset maps, defect pixels, row noise) and varies what differs between
real devices and sites:

* the panel (each image its own panel: no panel recurs across splits), blur, electronic noise,
  bit depth 10-16, dose over two decades (very noisy to the low-noise look of RG3);
* anatomy: the simulator's chest, or an extremity (long bones with a cortical shell in soft
  tissue, much direct exposure around it);
* collimation: shutter blades with scatter behind them, sometimes blanked to one value by the
  device, as CR readers do;
* presentation processing a real modality applies before export: unsharp-mask / multi-scale
  contrast enhancement (cf. Vuylsteke & Schoeters, "Multiscale image contrast amplification
  (MUSICA)", SPIE 1994) and a tone curve;
* container: DICOM CR/DX (MONOCHROME1 or 2, BitsStored as rendered), or an 8-bit PNG/JPEG export.

The fake families are then derived from these images exactly as from the other real sources, so
the detector must learn what an edit does to authentic detector noise, not which source is real.
"""
from __future__ import annotations

from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from edge_agent.forensics.phantom_dicom import Exposure, exposure_dicom
from edge_agent.forensics.simulator import Panel, PanelSpec, phantom

from .imaging import ContainerSpec, encode_like

__all__ = ["simulated_radiograph", "encode_simulated", "build_simulated"]


def _limb(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Line integrals of an extremity: soft-tissue cylinder with 1-2 long bones (cortex + marrow)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(-0.5, 0.5) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
    c, s = np.cos(ang), np.sin(ang)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    d = (xx - cx) * c + (yy - cy) * s  # distance across the limb axis
    along = -(xx - cx) * s + (yy - cy) * c
    half_len = max(h, w) * rng.uniform(0.35, 0.6)
    taper = np.clip(1.0 - (np.abs(along) / half_len) ** 6, 0.0, 1.0)
    r_soft = min(h, w) * rng.uniform(0.16, 0.3) * (1.0 + 0.12 * np.sin(along / (0.2 * h) + rng.uniform(0, 6)))

    unit = float(np.mean(r_soft))

    def chord(dist: np.ndarray, r: np.ndarray | float) -> np.ndarray:
        """Path length through a cylinder of radius r at distance ``dist`` from its axis, in units of ``unit``."""
        return 2.0 * np.sqrt(np.clip(np.asarray(r) ** 2 - dist**2, 0.0, None)) / unit

    a = 0.15 + rng.uniform(0.6, 1.2) * chord(d, r_soft) * taper
    for k in range(int(rng.integers(1, 3))):
        off = (k - 0.5) * r_soft * 0.8 if k else rng.uniform(-0.2, 0.2) * r_soft
        r_out = np.asarray(r_soft * rng.uniform(0.22, 0.35))
        cortex = chord(d - off, r_out) - chord(d - off, r_out * rng.uniform(0.5, 0.7))
        marrow = chord(d - off, r_out * 0.6)
        a = a + (cortex * rng.uniform(2.0, 4.0) + marrow * 0.8) * taper
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), rng.uniform(1.5, 4.0))
    return np.clip(a + 0.25 * tex * taper, 0.0, None).astype(np.float32)


def _collimate(expected: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shutter blades: a soft-edged open rectangle; scatter (2-10 %) leaks behind the blades."""
    h, w = expected.shape
    y0, y1 = int(h * rng.uniform(0.0, 0.2)), int(h * rng.uniform(0.8, 1.0))
    x0, x1 = int(w * rng.uniform(0.0, 0.2)), int(w * rng.uniform(0.8, 1.0))
    open_ = np.zeros((h, w), np.float32)
    open_[y0:y1, x0:x1] = 1.0
    open_ = ndimage.gaussian_filter(open_, rng.uniform(1.0, 4.0))
    leak = rng.uniform(0.02, 0.1)
    return expected * (leak + (1 - leak) * open_), open_ > 0.5


def _presentation(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Device-side processing before export: multi-scale unsharp masking and a tone curve."""
    ops = []
    if rng.random() < 0.6:
        for sigma in sorted(rng.uniform(4, 48, size=int(rng.integers(1, 4)))):
            img = img + rng.uniform(0.2, 1.2) * (img - ndimage.gaussian_filter(img, sigma))
        ops.append("usm")
    if rng.random() < 0.5:
        lo, hi = np.percentile(img, [0.5, 99.5])
        img = (img - lo) / max(hi - lo, 1e-3)
        ops.append("window")
    if rng.random() < 0.5:
        g = rng.uniform(0.6, 1.6)
        img = np.clip(img, 0, 1) ** g
        ops.append(f"gamma{g:.2f}")
    return np.clip(img, 0.0, 1.0).astype(np.float32), "+".join(ops)


def simulated_radiograph(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """One authentic-looking acquisition of a random panel: ([0,1] MONOCHROME2 image, facts)."""
    bits = int(rng.choice([10, 12, 12, 14, 15, 16]))
    h, w = (int(v) // 2 * 2 for v in rng.uniform(560, 1150, size=2))
    spec = PanelSpec(seed=int(rng.integers(1 << 30)), shape=(h, w), gain_std=rng.uniform(0.003, 0.02),
                     offset_std=rng.uniform(0.5, 3.0), column_std=rng.uniform(0.0, 3.0),
                     row_noise_std=rng.uniform(0.0, 3.0), electronic_std=float(np.exp(rng.uniform(0, np.log(12)))),
                     psf_sigma=rng.uniform(0.4, 1.4), dead_fraction=rng.uniform(0, 4e-4), bits=bits)
    panel = Panel(spec)
    limb = rng.random() < 0.45
    atten = _limb(h, w, rng) if limb else phantom(rng, (h, w))
    n0 = float(np.exp(rng.uniform(np.log(1500), np.log(200000))))
    expected = (n0 * np.exp(-atten)).astype(np.float32)
    shutter = None
    if rng.random() < 0.5:
        expected, shutter = _collimate(expected, rng)
    # Panel.acquire draws noise, blur, gain/offset, row noise and defects for this attenuation.
    img = panel.acquire(rng, dose=n0, attenuation=-np.log(np.maximum(expected, 1e-6) / n0))
    img, ops = _presentation(img, rng)
    if shutter is not None and rng.random() < 0.4:
        img = np.where(shutter, img, np.float32(rng.choice([0.0, 1.0])))  # device blanks the shutter area
        ops += "+blank"
    full = float((1 << bits) - 1)
    img = (np.round(img * full) / full).astype(np.float32)
    return img, {"bits": bits, "anatomy": "extremity" if limb else "chest", "dose": round(n0),
                 "shape": (h, w), "processing": ops}


EXPORT_FRACTION = 0.15        # share of simulated images written as 8-bit exports (half PNG, half JPEG)
EXPORT_JPEG_QUALITY = (85, 97)  # quality range of the JPEG exports (inclusive)


def encode_simulated(img: np.ndarray, bits: int, rng: np.random.Generator,
                     facts: dict[str, Any] | None = None, export_fraction: float = EXPORT_FRACTION,
                     export_jpeg_quality: tuple[int, int] = EXPORT_JPEG_QUALITY) -> tuple[bytes, str, str]:
    """Write as DICOM (by default 85 %: CR or DX, MONOCHROME1/2) or an 8-bit PNG/JPEG export
    (``export_fraction``, half each; JPEG quality drawn from ``export_jpeg_quality``); (bytes, suffix, container).

    With ``facts`` (from :func:`simulated_radiograph`) the DICOM carries the exposure attributes a
    real CR/DX acquisition writes (PS3.3 C.8.11.4 DX Detector: Imager Pixel Spacing, Type 1;
    C.8.7.2 / C.8.11.7: KVP, exposure in uAs), so the metadata rules judge it like a real file.
    They are derived from the facts, not drawn from ``rng``: the pixels stay the same for a seed.
    """
    u = rng.random()
    if u < export_fraction / 2:
        return *encode_like(img, ContainerSpec("png")), "png"
    if u < export_fraction:
        lo, hi = export_jpeg_quality
        return *encode_like(img, ContainerSpec("png"), jpeg_quality=int(rng.integers(lo, hi + 1))), "jpeg"
    mono1 = rng.random() < 0.5
    cr = rng.random() < 0.5
    exposure = Exposure(modality="CR" if cr else "DX", monochrome1=mono1)
    if facts is not None:
        extremity = facts.get("anatomy") == "extremity"
        # photons per pixel ~ dose: a few uAs for the lowest, a few hundred for the highest
        exposure = replace(exposure, kvp="55" if extremity else "125",
                           exposure_uas=max(1, int(round(float(facts.get("dose", 10000)) / 400.0))),
                           pixel_spacing_mm="0.1" if cr else "0.139")
    return exposure_dicom(img, bits, exposure), ".dcm", "dicom"


def _one(args: tuple[int, str, str, float, tuple[int, int]]) -> dict[str, str]:
    seed, split, out, export_fraction, export_q = args
    rng = np.random.default_rng(seed)
    img, facts = simulated_radiograph(rng)
    data, suffix, _ = encode_simulated(img, facts["bits"], rng, facts, export_fraction, export_q)
    path = Path(out) / split / f"sim-{seed}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    desc = f"{facts['anatomy']} {facts['shape'][0]}x{facts['shape'][1]} {facts['bits']}-bit dose {facts['dose']} {facts['processing']}"
    return {"path": str(path.resolve()), "split": split, "source": "sim", "patient_id": f"sim-{seed}", "label": "real",
            "licence": "generated by this project (edge-agent physics simulator)", "origin": f"simulated: {desc}"}


def build_simulated(out: Path, seed: int, counts: dict[str, Any], workers: int = 2) -> list[dict[str, str]]:
    """Render ``counts[split]`` images per split into ``out`` (deterministic in ``seed``); index rows.
    ``counts`` is the config's ``simulated`` section: it may also set ``export_fraction`` and
    ``export_jpeg_quality`` (see :func:`encode_simulated`)."""
    frac = float(counts.get("export_fraction", EXPORT_FRACTION))
    q = tuple(int(v) for v in counts.get("export_jpeg_quality", EXPORT_JPEG_QUALITY))
    if not 0.0 <= frac <= 1.0 or len(q) != 2 or not 1 <= q[0] <= q[1] <= 100:
        raise ValueError(f"simulated: export_fraction must lie in [0, 1] and export_jpeg_quality be [low, high] "
                         f"within 1-100; found {frac!r} and {list(q)!r}")
    jobs = []
    for k, split in enumerate(("train", "val", "test")):
        for i in range(int(counts.get(split, 0))):
            jobs.append((seed * 1000 + k * 100_000 + i, split, str(out), frac, (q[0], q[1])))
    with get_context("fork").Pool(workers) as pool:
        return list(pool.imap(_one, jobs, chunksize=4))
