"""Draw where the evidence is: the model's own class-activation map (red) and, where a forensic
layer localises what it found, its map (cyan: the device fingerprint is missing there, i.e. a
region pasted or moved into an image of this detector; docs/forensics.md).

The model's map comes from the same forward pass as the score (global average pooling + linear
head make the CAM exact: the tile logit is the mean of its CAM), so no gradients are needed on the
device. Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016. The
layers' maps are per model tile (``LayerFinding.heat``, same origins), drawn the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from .detect import FrameScore
from .tiling import tiles_to_full

if TYPE_CHECKING:
    from .forensics import LayerFinding

__all__ = ["heat_at_full_size", "layer_heat_at_full_size", "render_overlay"]


def heat_at_full_size(fs: FrameScore) -> np.ndarray:
    """Per-pixel evidence in logit units at the image grid (max over overlapping tiles)."""
    return _tiles_at_full_size(fs.cam, fs, empty=-20.0)


def layer_heat_at_full_size(fs: FrameScore, findings: Sequence[LayerFinding]) -> np.ndarray | None:
    """The forensic layers' per-tile maps in [0, 1] at the image grid (max over layers and
    overlapping tiles); ``None`` when no layer localised anything."""
    maps = [f.heat for f in findings if f.heat is not None and f.heat.shape[0] == len(fs.origins) and f.heat.max() > 0]
    if not maps:
        return None
    return np.max([_tiles_at_full_size(m, fs, empty=0.0) for m in maps], axis=0)


def _tiles_at_full_size(maps: np.ndarray, fs: FrameScore, empty: float) -> np.ndarray:
    """Per-tile maps ``[N, h, w]`` (tile ``i`` at ``fs.origins[i]``) up-sampled to the image grid."""
    return tiles_to_full(maps, fs.origins, fs.tile, fs.shape, empty)


MODEL_COLOUR = (255.0, 0.0, 0.0)  # red: the model's evidence
LAYER_COLOUR = (0.0, 255.0, 255.0)  # cyan: a forensic layer's local finding (fingerprint missing)
_MAX_ALPHA = 0.7  # opacity of a colour at full strength: the image stays visible under it


def render_overlay(frame: np.ndarray, fs: FrameScore, out_path: Path, label: str,
                   findings: Sequence[LayerFinding] = (), max_side: int = 1024, score: float | None = None) -> Path:
    """Write a PNG: the image in grey, the model's evidence in red (opacity rises with
    sigmoid(CAM)), the layers' local findings in cyan over it; captioned with the verdict's
    ``label`` and ``score`` (the fused one; the model's when not given)."""
    h, w = frame.shape
    step = max(1, math.ceil(max(h, w) / max_side))
    size = (max(1, w // step), max(1, h // step))
    bilinear = Image.Resampling.BILINEAR
    grey = Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8), "L").resize(size, bilinear)
    mixed = np.asarray(grey.convert("RGB"), dtype=np.float32)
    prob = 1.0 / (1.0 + np.exp(-heat_at_full_size(fs).astype(np.float64)))
    layers = layer_heat_at_full_size(fs, findings)

    def alpha_of(strength: np.ndarray) -> np.ndarray:
        img = Image.fromarray((np.clip(strength, 0, 1) * 255).astype(np.uint8), "L").resize(size, bilinear)
        return (np.asarray(img, dtype=np.float32) / 255.0) ** 2 * _MAX_ALPHA

    model_alpha = alpha_of(prob)
    layer_alpha = None if layers is None else alpha_of(layers)
    if layer_alpha is not None:
        # a layer's local finding is drawn through the model's red, not over a red-tinted image:
        # where the fingerprint is missing, the cyan must read as cyan whatever the model scored
        model_alpha *= 1.0 - layer_alpha / _MAX_ALPHA
    for alpha, colour in ((model_alpha, MODEL_COLOUR), (layer_alpha, LAYER_COLOUR)):
        if alpha is not None:
            mixed = mixed * (1 - alpha[..., None]) + np.array(colour, dtype=np.float32) * alpha[..., None]
    out = Image.fromarray(mixed.astype(np.uint8), "RGB")
    ImageDraw.Draw(out).text((4, 4), f"{label} {fs.score if score is None else score:.3f}", fill=(255, 255, 0))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out.save(out_path, format="PNG")
    return out_path
