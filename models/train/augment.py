"""The augmentation chain applied identically to BOTH classes (real and fake) after faking.

JPEG re-encode (quality range `augment.jpeg_quality` of the config: q70-95, q50-95 since 1.9.0), 0.9-1.1x resize and mild *signal-dependent* (Poisson-Gaussian) noise,
as a real detector would add. Keeping these shared means none of them can become a class cue
(the "format trap" of the data README). Synthetic-grain fakes use signal-INDEPENDENT noise of a
clearly different level, so "mild noise" here does not overlap that family.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from .imaging import resize_float

__all__ = ["augment_shared", "jpeg_roundtrip", "poisson_gaussian"]


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode as 8-bit JPEG at ``quality`` and decode back to [0,1] float."""
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8), "L").save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def poisson_gaussian(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Quantum-like noise: variance grows with exposure (here ~ intensity), as in radiography."""
    std = sigma * np.sqrt(np.clip(img, 0.02, 1.0)) + 0.25 * sigma
    return np.clip(img + rng.standard_normal(img.shape).astype(np.float32) * std, 0, 1).astype(np.float32)


def augment_shared(img: np.ndarray, cfg: dict[str, Any], rng: np.random.Generator,
                   allow_jpeg: bool = True) -> tuple[np.ndarray, list[str]]:
    """Random shared augmentation; returns the image and the list of applied operations."""
    ops: list[str] = []
    if rng.random() < cfg["p_resize"]:
        f = float(rng.uniform(*cfg["resize"]))
        h, w = img.shape
        img = resize_float(img, max(8, round(h * f)), max(8, round(w * f)), "bicubic" if f > 1 else "box")
        ops.append(f"resize{f:.2f}")
    if rng.random() < cfg["p_noise"]:
        s = float(rng.uniform(*cfg["noise_sigma"]))
        img = poisson_gaussian(img, s, rng)
        ops.append(f"pgnoise{s:.4f}")
    if allow_jpeg and rng.random() < cfg["p_jpeg"]:
        q = int(rng.integers(cfg["jpeg_quality"][0], cfg["jpeg_quality"][1] + 1))
        img = jpeg_roundtrip(img, q)
        ops.append(f"jpeg{q}")
    return img.astype(np.float32), ops
