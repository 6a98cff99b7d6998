"""Draw where the model saw evidence: the model's own class-activation map over the image.

The map comes from the same forward pass as the score (global average pooling + linear head
make the CAM exact: the tile logit is the mean of its CAM), so no gradients are needed on the
device. Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .detect import FrameScore

__all__ = ["heat_at_full_size", "render_overlay"]


def heat_at_full_size(fs: FrameScore) -> np.ndarray:
    """Per-pixel evidence in logit units at the image grid (max over overlapping tiles)."""
    h, w = fs.shape
    big_h, big_w = max(h, fs.tile), max(w, fs.tile)
    heat = np.full((big_h, big_w), -np.inf, dtype=np.float32)
    for cam, (y, x) in zip(fs.cam, fs.origins):
        ry, rx = fs.tile // cam.shape[0], fs.tile // cam.shape[1]
        up = np.repeat(np.repeat(cam, ry, axis=0), rx, axis=1)
        up = np.pad(up, ((0, fs.tile - up.shape[0]), (0, fs.tile - up.shape[1])), mode="edge")
        region = heat[y : y + fs.tile, x : x + fs.tile]
        np.maximum(region, up, out=region)
    heat = heat[:h, :w]
    # Tiles skipped by max_tiles leave holes: show them as "no evidence" rather than -inf.
    heat[~np.isfinite(heat)] = np.float32(-20.0)
    return heat


def render_overlay(frame: np.ndarray, fs: FrameScore, out_path: Path, label: str, max_side: int = 1024) -> Path:
    """Write a PNG: the image in grey, evidence in red (opacity rises with sigmoid(CAM))."""
    h, w = frame.shape
    step = max(1, math.ceil(max(h, w) / max_side))
    size = (max(1, w // step), max(1, h // step))
    bilinear = Image.Resampling.BILINEAR
    grey = Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8), "L").resize(size, bilinear)
    prob = 1.0 / (1.0 + np.exp(-heat_at_full_size(fs).astype(np.float64)))
    prob_img = Image.fromarray((prob * 255).astype(np.uint8), "L").resize(size, bilinear)
    alpha = (np.asarray(prob_img, dtype=np.float32) / 255.0) ** 2 * 0.7
    base = np.asarray(grey.convert("RGB"), dtype=np.float32)
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    mixed = base * (1 - alpha[..., None]) + red * alpha[..., None]
    out = Image.fromarray(mixed.astype(np.uint8), "RGB")
    ImageDraw.Draw(out).text((4, 4), f"{label} {fs.score:.3f}", fill=(255, 255, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.save(out_path, format="PNG")
    return out_path
