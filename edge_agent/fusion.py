"""One verdict from all the evidence: the model, the forensic layers and the capture signature.

Policy, first matching row wins (issue 6 section 4; PS3.15 Annex C for the signature):

=====================================  ==========================================================
capture signature (DICOM, PS3.15 C.2)  verdict
=====================================  ==========================================================
``invalid`` (altered after signing)    ``synthetic``: the pixels or signed attributes changed
                                       after the image was signed at capture, whatever the
                                       model says
``valid`` (trusted capture signer)     ``authentic``: the pixels are what the device captured
``unsigned`` / ``untrusted``           the fused score below decides, with the fitted fusion's
                                       thresholds when it has them, else the model's
=====================================  ==========================================================

Fused logit = ``bias + w_model * model_logit + sum(c_layer + w_layer * layer_score)`` over the
layers that could judge (``LayerFinding.score`` in [0, 1], 0 = nothing found; ``c_layer`` =
``<layer>_judged``, 0 unless fitted; a layer that could not judge adds nothing). With the default
weights a layer at full strength adds 6 logits, enough to flag an image the model alone scored at
its median for real images; ``FusionModel.from_json`` loads weights fitted on validation data
(``benchmarks/fit_fusion.py``, docs/fusion-ablation.md), which may carry their own
``suspicious``/``synthetic`` thresholds on the fused score (1 % / 0.1 % FPR on validation authentic
images): the fused score is not the model's, so the model's thresholds would not keep their
false-positive rates. Every layer's reasons are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from .manifest import Thresholds
from .tiling import sigmoid
from .verdict import Reason

if TYPE_CHECKING:
    from .dicom_signature import ProvenanceResult
    from .forensics import LayerFinding

__all__ = ["FusionModel", "Fused", "fuse"]


_NOT_WEIGHTS = ("fitted_on", "suspicious", "synthetic")  # FusionModel's fields that are not logit terms


@dataclass(frozen=True)
class FusionModel:
    bias: float = 0.0
    model: float = 1.0
    physics: float = 6.0
    fingerprint: float = 6.0
    metadata: float = 6.0
    copy: float = 6.0  # the copy search (off by default): never fitted (fit_fusion does not run it)
    fitted_on: str = "default weights (not fitted): each layer at full strength adds 6 logits"
    suspicious: float | None = None  # fused-score thresholds; None: the model's
    synthetic: float | None = None
    # Logit added when a layer could judge, before its score: a layer that judged and found nothing
    # is evidence too (this detector's own fingerprint is present). 0: the original form.
    physics_judged: float = 0.0
    fingerprint_judged: float = 0.0
    metadata_judged: float = 0.0
    copy_judged: float = 0.0

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.name not in _NOT_WEIGHTS):  # every weight and offset
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"fusion weight {name} must be a finite number, got {value!r}")
        if self.model <= 0:
            raise ValueError("fusion weight model must be positive (the model's evidence must count)")
        if (self.suspicious is None) != (self.synthetic is None):
            raise ValueError("fusion thresholds: give both suspicious and synthetic, or neither")
        if self.suspicious is not None and self.synthetic is not None:
            if not 0.0 <= self.suspicious <= self.synthetic <= 1.0:
                raise ValueError(f"fusion thresholds must satisfy 0 <= suspicious <= synthetic <= 1, "
                                 f"got {self.suspicious} / {self.synthetic}")

    @classmethod
    def from_json(cls, text: str) -> FusionModel:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("fusion weights must be a JSON object")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def weight(self, layer: str) -> float:
        return float(getattr(self, layer))

    def judged(self, layer: str) -> float:
        return float(getattr(self, f"{layer}_judged"))

    def thresholds(self, model: Thresholds) -> Thresholds:
        """The thresholds the fused score is labelled with: this fit's own, else the model's."""
        if self.suspicious is None or self.synthetic is None:
            return model
        return Thresholds(self.suspicious, self.synthetic)


@dataclass(frozen=True)
class Fused:
    label: str
    score: float
    reasons: tuple[Reason, ...]


def fuse(
    model_logit: float,
    model_reason: Reason,
    findings: Sequence[LayerFinding],
    provenance: ProvenanceResult | None,
    thresholds: Thresholds,
    weights: FusionModel = FusionModel(),
    model_notes: Sequence[Reason] = (),
) -> Fused:
    """Pure: the evidence in, label + score + every reason out. ``thresholds`` are the model's;
    fitted weights with their own thresholds override them. ``model_notes`` follow the model's
    reason (how its logit was read: the site calibration)."""
    thresholds = weights.thresholds(thresholds)
    logit = weights.bias + weights.model * model_logit
    reasons = [model_reason, *model_notes]
    for f in findings:
        if f.score is not None:
            logit += weights.judged(f.layer) + weights.weight(f.layer) * f.score
        reasons.extend(f.reasons)
    score = sigmoid(logit)
    if provenance is not None and provenance.status != "unsigned":
        code = f"provenance.{provenance.status}"
        if provenance.status == "invalid":
            reasons.insert(0, Reason(code, f"capture signature does not hold: {provenance.reason}; "
                                           "the image was altered after it was signed"))
            return Fused("synthetic", max(score, thresholds.synthetic), tuple(reasons))
        if provenance.status == "valid":
            reasons.insert(0, Reason(code, f"capture signature by {provenance.signer} holds: "
                                           "the pixels are what the device captured"))
            return Fused("authentic", min(score, math.nextafter(thresholds.suspicious, 0.0)), tuple(reasons))
        reasons.append(Reason(code, f"capture signature not trusted: {provenance.reason}"))
    return Fused(thresholds.label(score), score, tuple(reasons))
