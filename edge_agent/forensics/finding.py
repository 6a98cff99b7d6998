"""What one forensic layer concludes about one frame: the value the lead fuses into the verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..verdict import Reason

__all__ = ["LayerFinding", "LAYERS", "logistic"]

LAYERS = ("physics", "fingerprint", "metadata", "copy")


@dataclass(frozen=True)
class LayerFinding:
    """``score`` in [0, 1] is how strongly the layer says "not an authentic acquisition of this
    device" (``None``: the layer could not judge, and ``reasons`` say why). ``heat`` is an optional
    per-tile map ``[N, h, w]`` in [0, 1] aligned with the model's tiles (same origins, same order),
    so the heat-map stage draws it exactly like the model's CAM."""

    layer: str
    score: float | None
    reasons: tuple[Reason, ...]
    heat: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"layer {self.layer!r} is not one of {LAYERS}")
        if self.score is not None and not (0.0 <= self.score <= 1.0 and math.isfinite(self.score)):
            raise ValueError(f"score {self.score} is outside [0, 1]")
        if not all(isinstance(r, Reason) for r in self.reasons):
            raise ValueError("reasons must be Reason values")
        if self.heat is not None:
            if self.heat.ndim != 3 or not np.all((self.heat >= 0) & (self.heat <= 1)):
                raise ValueError(f"heat must be [N, h, w] in [0, 1], got shape {self.heat.shape}")
            self.heat.setflags(write=False)

    @property
    def flagged_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


def logistic(z: float, centre: float, steepness: float) -> float:
    """Map an evidence statistic onto [0, 1]: 0.5 at ``centre``; overflow-safe."""
    t = steepness * (z - centre)
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)
