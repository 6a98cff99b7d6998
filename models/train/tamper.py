"""Family 2: local tampering with lesion-sized masks (kept for the pointing game).

Operations follow the medical-image tampering literature: copy-move and splicing (classic
image forensics), inpainting that removes a finding, and nodule injection in the spirit of
CT-GAN (Mirsky et al., USENIX Security 2019). A "noise touch-up" re-applies real noise taken
from elsewhere in the image to the edited region so that the edit is noise-consistent -- the
attacker's counter to noise-level forensics (cf. Lukas, Fridrich & Goljan 2006 on
sensor-noise fingerprints).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["tamper", "TAMPER_KINDS"]

TAMPER_KINDS = ("copy_move", "splice", "inpaint_remove", "nodule_add")


def _disk_mask(h: int, w: int, cy: float, cx: float, r: float, rng: np.random.Generator) -> np.ndarray:
    """Soft, slightly irregular lesion-shaped mask in [0,1]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.15 * np.sin(3 * ang + rng.uniform(0, 6.28)) + 0.08 * np.sin(5 * ang + rng.uniform(0, 6.28))
    d = np.hypot(yy - cy, xx - cx) / (r * wobble)
    return np.clip((1.15 - d) / 0.3, 0, 1).astype(np.float32)


def _highpass(img: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return img - ndimage.gaussian_filter(img, sigma)


def _shifted(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(np.roll(img, dy, axis=0), dx, axis=1)


def tamper(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
           kind: str | None = None, touch_up: bool | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (tampered image, binary mask uint8, description)."""
    h, w = img.shape
    kind = kind or str(rng.choice(TAMPER_KINDS))
    touch_up = bool(rng.random() < 0.5) if touch_up is None else touch_up
    r = float(rng.uniform(0.03, 0.08) * min(h, w))
    r = max(r, 6.0)
    cy = float(rng.uniform(0.25, 0.75) * h)
    cx = float(rng.uniform(0.2, 0.8) * w)
    m = _disk_mask(h, w, cy, cx, r, rng)
    out = img.copy()
    if kind == "copy_move":
        dy = int(rng.integers(-h // 3, h // 3 + 1)) or int(2 * r)
        dx = int(rng.integers(-w // 3, w // 3 + 1)) or int(2 * r)
        src = _shifted(img, dy, dx)
        out = img * (1 - m) + src * m
    elif kind == "splice":
        d = donor
        if d.shape != img.shape:
            zy, zx = h / d.shape[0], w / d.shape[1]
            d = np.clip(ndimage.zoom(d, (zy, zx), order=1), 0, 1)[:h, :w]
            d = np.pad(d, ((0, h - d.shape[0]), (0, w - d.shape[1])), mode="edge")
        sel = m > 0.5
        d = (d - d[sel].mean()) / (d[sel].std() + 1e-6) * (img[sel].std() + 1e-6) + img[sel].mean()
        out = img * (1 - m) + d * m
    elif kind == "inpaint_remove":
        # diffusion-style fill: heavy blur of the surround, as simple inpainting tools do
        fill = ndimage.gaussian_filter(img, r * 0.6)
        out = img * (1 - m) + fill * m
    elif kind == "nodule_add":
        rr = r * float(rng.uniform(0.5, 0.9))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (rr / 1.6) ** 2))
        texture = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), rr / 6)
        texture /= texture.std() + 1e-6
        contrast = float(rng.uniform(0.04, 0.15))
        out = img + contrast * blob * (1 + 0.15 * texture)
    else:
        raise ValueError(f"unknown tamper kind {kind!r}; expected one of {TAMPER_KINDS}")
    if touch_up:
        # smooth the edit, then paste real noise from a shifted, untouched region onto it
        sm = ndimage.gaussian_filter(out, 1.2)
        noise = _shifted(_highpass(img), int(h // 2), int(w // 3))
        out = out * (1 - m) + (sm + noise) * m
    mask = (m > 0.5).astype(np.uint8)
    return np.clip(out, 0, 1).astype(np.float32), mask, f"{kind}{'+touchup' if touch_up else ''}"
