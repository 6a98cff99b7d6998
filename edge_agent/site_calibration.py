"""Site calibration of the detector: read its score against this device's own authentic images.

Why: the detector learns what "real" looks like from the hospitals and devices it was trained
on. Images from a device it never saw can sit higher on its scale: in the leave-one-source-out
runs (models/<model>/REPORT.md, docs/site-calibration.md) a held-out hospital's real test images
were flagged at 16 % instead of the 1 % the threshold was set for, and a held-out detector type
at 92 %. A site fixes the scale with its own authentic acquisitions, the same ones ``edge-agent
learn`` enrols the noise profile and the fingerprint from: the model's median image logit on
them, against the median on the model's own validation reals (``thresholds.reference_median_logit``
in the model's manifest), gives an offset that is subtracted from every image logit of this
device before the thresholds and the fusion see it. Raising the threshold by the offset is the
same thing; the verdict says so in its reasons.

The offset is a location shift only (the spread of a site's scores is not learned from a few
dozen images), tied to one model (name, version and the hash of its manifest's files): after a
model update the site learns again. It is bounded by ``MAX_OFFSET`` logits: a site whose
authentic images look that different from anything the model knows needs a model trained on
them, not a shifted threshold.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .manifest import ModelManifest

__all__ = ["SiteCalibration", "MIN_IMAGES", "MAX_OFFSET", "model_identity", "reference_median"]

MIN_IMAGES = 20  # fewer: the median of a site's logits moves too much between draws (docs/site-calibration.md)
MAX_OFFSET = 4.0  # logits; see the module docstring
KIND = "edge-agent.site-calibration"


def model_identity(manifest: ModelManifest) -> str:
    """SHA-256 over the model's file hashes as its manifest lists them: which weights were measured."""
    return hashlib.sha256(json.dumps(sorted(f.sha256 for f in manifest.files)).encode()).hexdigest()


def reference_median(manifest: ModelManifest) -> float:
    """The model's median image logit on its real validation images (the scale a site is compared to)."""
    value = manifest.raw.get("thresholds", {}).get("reference_median_logit")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"model {manifest.name} {manifest.version} has no thresholds.reference_median_logit in its "
                          "manifest: it cannot be calibrated to a site (models from 1.5.0 on carry it)")
    return float(value)


@dataclass(frozen=True)
class SiteCalibration:
    """What ``edge-agent learn`` measured; ``offset`` is subtracted from this device's image logits."""

    model_name: str
    model_version: str
    model_sha256: str
    n_images: int
    site_median_logit: float
    reference_median_logit: float
    site_logit_quartiles: tuple[float, float]
    learned_from: str = ""

    def __post_init__(self) -> None:
        values = (self.site_median_logit, self.reference_median_logit, *self.site_logit_quartiles)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError(f"site calibration: the logits must be finite numbers, found {values}")
        if self.n_images < MIN_IMAGES:
            raise ValueError(f"site calibration from {self.n_images} image(s); at least {MIN_IMAGES} are needed")
        if abs(self.offset) > MAX_OFFSET:
            raise ValueError(
                f"site calibration: this site's authentic images score {self.offset:+.2f} logits from the model's "
                f"validation reals (at most {MAX_OFFSET} is corrected): the model does not know this device's images; "
                "report it to the model's vendor rather than shifting the threshold")

    @property
    def offset(self) -> float:
        return self.site_median_logit - self.reference_median_logit

    @classmethod
    def learn(cls, logits: Sequence[float], manifest: ModelManifest, learned_from: str = "") -> SiteCalibration:
        """From the model's image logits on this site's authentic images."""
        s = sorted(float(v) for v in logits)
        if len(s) < MIN_IMAGES:
            raise ValueError(f"{len(s)} image(s) to calibrate the model on; at least {MIN_IMAGES} are needed")

        def q(p: float) -> float:  # linear interpolation, as numpy's default quantile
            x = p * (len(s) - 1)
            i = int(math.floor(x))
            return s[i] if i + 1 >= len(s) else s[i] + (x - i) * (s[i + 1] - s[i])

        return cls(manifest.name, manifest.version, model_identity(manifest), len(s), q(0.5), reference_median(manifest),
                   (q(0.25), q(0.75)), learned_from)

    def check_model(self, manifest: ModelManifest) -> None:
        """Refuse a calibration learned for other weights (the scale is the model's own)."""
        if (self.model_name, self.model_version, self.model_sha256) != (manifest.name, manifest.version,
                                                                         model_identity(manifest)):
            raise ConfigError(
                f"forensics.model_calibration was learned for model {self.model_name} {self.model_version}, but the "
                f"agent runs {manifest.name} {manifest.version}"
                + (" (other weights)" if (self.model_name, self.model_version) == (manifest.name, manifest.version) else "")
                + ": run edge-agent learn again on this device's authentic images")

    def to_json(self) -> str:
        return json.dumps({"kind": KIND, **asdict(self)}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SiteCalibration:
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.pop("kind", None) != KIND:
            raise ValueError(f"not a site calibration (kind {KIND!r}); write it with edge-agent learn")
        try:
            q = data.pop("site_logit_quartiles")
            return cls(**data, site_logit_quartiles=(float(q[0]), float(q[1])))
        except (TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"site calibration: {exc}") from None

    def describe(self) -> str:
        return (f"the detector's score is read against this site's own authentic images: their median logit "
                f"{self.site_median_logit:+.2f} ({self.n_images} images) vs {self.reference_median_logit:+.2f} on the "
                f"model's validation reals, so {self.offset:+.2f} is taken off this image's logit")
