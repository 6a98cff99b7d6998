"""The verdict: what the agent concludes about one image (one frame of a multi-frame object).

A frozen, validated value; ``to_dict()`` is the JSON form printed by ``scan --jsonl``, written
to the verdict journal and, in later stages, signed. It carries no patient data: no names, IDs,
dates or UIDs in clear (the SOP Instance UID stays in ``facts``, which is never serialised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keeps `import verdict` free of pydicom (the submit hook must start fast)
    from .decode import ImageFacts

__all__ = ["LABELS", "Reason", "ModelRef", "Timings", "Verdict"]

LABELS = ("authentic", "suspicious", "synthetic", "unreadable")


@dataclass(frozen=True)
class Reason:
    """A short machine-readable code and the sentence a person reads."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if not self.code or not self.code.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"reason code {self.code!r} must be a short identifier")

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    sha256: str
    backend: str
    precision: str

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "backend": self.backend,
            "precision": self.precision,
        }


@dataclass(frozen=True)
class Timings:
    decode: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    forensics: float = 0.0
    total: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in vars(self).items()}


@dataclass(frozen=True)
class Verdict:
    path: str
    frame: int | None
    verdict: str
    score: float | None
    threshold: float | None
    reasons: tuple[Reason, ...]
    timings_ms: Timings
    model: ModelRef | None = None
    synthetic_threshold: float | None = None
    facts: ImageFacts | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.verdict not in LABELS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {LABELS}")
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside [0, 1]")
        if self.verdict == "unreadable" and self.score is not None:
            raise ValueError("an unreadable image has no score")
        if self.verdict != "unreadable" and (self.score is None or self.model is None):
            raise ValueError("a scored verdict needs a score and a model")

    @property
    def flagged(self) -> bool:
        return self.verdict in ("suspicious", "synthetic")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "frame": self.frame,
            "verdict": self.verdict,
            "score": None if self.score is None else round(self.score, 6),
            "threshold": self.threshold,
            "thresholds": None
            if self.threshold is None
            else {"suspicious": self.threshold, "synthetic": self.synthetic_threshold},
            "model": None if self.model is None else self.model.to_dict(),
            "reasons": [r.to_dict() for r in self.reasons],
            "timings_ms": self.timings_ms.to_dict(),
        }
        if self.facts is not None:
            f = self.facts
            d["image"] = {
                "container": f.container,
                "file_sha256": f.file_sha256,
                "pixel_sha256": f.pixel_sha256,
                "modality": f.modality,
                "sop_class_uid": f.sop_class_uid,  # a class, not an instance: no patient data
                "transfer_syntax_uid": f.transfer_syntax_uid,
                "rows": f.rows,
                "columns": f.columns,
                "frames": f.frames,
                "bits_stored": f.bits_stored,
            }
        return d
