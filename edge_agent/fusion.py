"""One verdict from all the evidence: the model, the forensic layers and the capture signature.

Policy, first matching row wins (issue 6 section 4; PS3.15 Annex C for the signature):

=====================================  ==========================================================
capture signature (DICOM, PS3.15 C.2)  verdict
=====================================  ==========================================================
``invalid`` (altered after signing)    ``synthetic``: the pixels or signed attributes changed
                                       after the image was signed at capture, whatever the
                                       model says
``valid`` (trusted capture signer)     ``authentic``: the pixels are what the device captured
``unsigned`` / ``untrusted``           the fused score below decides, with the model's
                                       thresholds
=====================================  ==========================================================

Fused logit = ``bias + w_model * model_logit + sum(w_layer * layer_score)`` over the layers that
could judge (``LayerFinding.score`` in [0, 1], 0 = nothing found; a layer that could not judge
adds nothing). With the default weights a layer at full strength adds 6 logits, enough to flag an
image the model alone scored at its median for real images; ``FusionModel.from_json`` loads
weights fitted on validation data (``benchmarks/fit_fusion.py``). Every layer's reasons are kept.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .manifest import Thresholds
from .verdict import Reason

if TYPE_CHECKING:
    from .dicom_signature import ProvenanceResult
    from .forensics import LayerFinding

__all__ = ["FusionModel", "Fused", "fuse"]


@dataclass(frozen=True)
class FusionModel:
    bias: float = 0.0
    model: float = 1.0
    physics: float = 6.0
    fingerprint: float = 6.0
    metadata: float = 6.0
    fitted_on: str = "default weights (not fitted): each layer at full strength adds 6 logits"

    def __post_init__(self) -> None:
        for name in ("bias", "model", "physics", "fingerprint", "metadata"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"fusion weight {name} must be a finite number, got {value!r}")
        if self.model <= 0:
            raise ValueError("fusion weight model must be positive (the model's evidence must count)")

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


@dataclass(frozen=True)
class Fused:
    label: str
    score: float
    reasons: tuple[Reason, ...]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def fuse(
    model_logit: float,
    model_reason: Reason,
    findings: Sequence[LayerFinding],
    provenance: ProvenanceResult | None,
    thresholds: Thresholds,
    weights: FusionModel = FusionModel(),
) -> Fused:
    """Pure: the evidence in, label + score + every reason out."""
    logit = weights.bias + weights.model * model_logit
    reasons = [model_reason]
    for f in findings:
        if f.score is not None:
            logit += weights.weight(f.layer) * f.score
        reasons.extend(f.reasons)
    score = _sigmoid(logit)
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
