"""Families 3 and 4: generator-typical processing and synthetic grain, in BOTH directions.

Family 3 ("processing"): up-sampling traces (a low-resolution image enlarged by
nearest/bilinear/bicubic interpolation -- the periodic neighbouring-pixel correlations NPR
targets, Tan et al., CVPR 2024), over-smoothing followed by signal-independent synthetic noise,
and too-clean textures.

Family 4 ("grain"): the "uniform grain" seen in GPT-4o radiographs (RSNA 2026): noise that is
too strong and/or too uniform (independent of exposure, identical in bone and lung), and its
opposite, over-smoothed images with almost no quantum noise. Spanning both directions stops
the detector from learning "noisy = real" or "smooth = real".
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .imaging import resize_float

__all__ = ["processing_fake", "grain_fake"]


def processing_fake(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    h, w = img.shape
    kind = str(rng.choice(["upsample", "smooth_noise", "too_clean"]))
    if kind == "upsample":
        f = float(rng.uniform(1.6, 4.0))
        down = str(rng.choice(["box", "bilinear"]))
        up = str(rng.choice(["nearest", "bilinear", "bicubic", "lanczos"]))
        small = resize_float(img, max(8, round(h / f)), max(8, round(w / f)), down)
        out = resize_float(small, h, w, up)
        return out, f"upsample{f:.1f}-{up}"
    if kind == "smooth_noise":
        s = float(rng.uniform(1.0, 2.5))
        n = float(rng.uniform(0.004, 0.015))
        out = ndimage.gaussian_filter(img, s) + rng.standard_normal(img.shape).astype(np.float32) * n
        return np.clip(out, 0, 1).astype(np.float32), f"smooth{s:.1f}+awgn{n:.3f}"
    s = float(rng.uniform(1.5, 3.0))
    out = ndimage.gaussian_filter(img, s)
    tex = ndimage.gaussian_filter(rng.standard_normal(img.shape).astype(np.float32), 3.0)
    out = out + tex / (tex.std() + 1e-6) * float(rng.uniform(0.0, 0.004))
    return np.clip(out, 0, 1).astype(np.float32), f"too_clean{s:.1f}"


def grain_fake(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    direction = str(rng.choice(["grainy", "grainy", "smooth"]))
    if direction == "smooth":
        s = float(rng.uniform(0.8, 1.6))
        # edge-preserving-ish: blend blur with original by local contrast
        blur = ndimage.gaussian_filter(img, s)
        edge = np.abs(ndimage.sobel(blur, 0)) + np.abs(ndimage.sobel(blur, 1))
        a = np.clip(edge / (np.percentile(edge, 95) + 1e-6), 0, 1) * 0.3
        return np.clip(blur * (1 - a) + img * a, 0, 1).astype(np.float32), f"oversmooth{s:.1f}"
    sigma = float(rng.uniform(0.012, 0.045))
    corr = float(rng.uniform(0.0, 1.0))
    base = ndimage.gaussian_filter(img, float(rng.uniform(0.0, 1.2))) if rng.random() < 0.6 else img
    noise = rng.standard_normal(img.shape).astype(np.float32)
    if rng.random() < 0.3:
        noise = (rng.random(img.shape).astype(np.float32) - 0.5) * 3.46  # uniform, unit variance
    if corr > 0.3:
        noise = ndimage.gaussian_filter(noise, corr)
        noise /= noise.std() + 1e-6
    return np.clip(base + sigma * noise, 0, 1).astype(np.float32), f"uniform_grain{sigma:.3f}c{corr:.1f}"
