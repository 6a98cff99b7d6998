"""Site calibration of the detector: read its score against this device's own authentic images.

Why: the detector learns what "real" looks like from the hospitals and devices it was trained
on. Images from a device it never saw can sit higher on its scale: in the leave-one-source-out
runs (docs/site-calibration.md) a held-out hospital's real test images were flagged at 15-16 %
instead of the 1 % the threshold was set for, and a held-out kind of detector at 91 %.

A site fixes the scale with its own authentic acquisitions, the ones ``edge-agent learn`` enrols
the noise profile and the fingerprint from. The rule (chosen on those runs, docs/site-calibration.md):
compare the 50th, 75th and 90th percentiles of the model's image logits on the site's images with
the same percentiles on the model's own validation reals (``thresholds.reference_logit_quantiles``
in the model's manifest) and raise the threshold by the largest excess, never lower it:

    offset = max(0, max over q in {50, 75, 90 %} of (site_q - reference_q))

The agent subtracts ``offset`` from every image logit of this device before the thresholds and the
fusion see it (the same as raising the thresholds by it) and says so in the verdict. Several
percentiles catch a site whose scores are spread wider, not only shifted (the held-out detector
type: 91 % false alarms -> 6 % with the 90th percentile, 33 % with the median alone); never
lowering keeps a site whose images score lower from trading its false-alarm rate for sensitivity
(that raised a held-out hospital from 0.1 % to 4.6 %).

A calibration is tied to one model (name, version and its files' hashes): after a model update
the site learns again. It applies to images of the modality it was learned on only (an image
without a Modality, e.g. a PNG, is its own modality: removing the tag earns no discount). A large
offset (``LARGE_OFFSET``) means the model barely tells this device's images from fakes; it is
applied, and ``learn``, the agent's log and every verdict say so plainly. Raising the threshold by
the offset is exact when the fusion's model weight is 1 (the default and models/fusion-1.json).
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

__all__ = ["SiteCalibration", "QUANTILES", "MIN_IMAGES", "LARGE_OFFSET", "MAX_OFFSET", "model_identity", "reference_quantiles",
           "quantiles", "raise_by"]

QUANTILES = (0.5, 0.75, 0.9)
MIN_IMAGES = 20  # the 90th percentile of fewer images moves too much between sets (docs/site-calibration.md)
LARGE_OFFSET = 4.0  # logits: above it the model hardly separates this device's images from fakes
MAX_OFFSET = 30.0  # logits: beyond any logit the model gives; a file claiming more is damaged or forged
KIND = "edge-agent.site-calibration"


def quantiles(values: Sequence[float]) -> tuple[float, ...]:
    """The :data:`QUANTILES` of ``values`` (linear interpolation, numpy's default)."""
    s = sorted(float(v) for v in values)
    if not s:
        raise ValueError("no values")

    def q(p: float) -> float:
        x = p * (len(s) - 1)
        i = int(math.floor(x))
        return s[i] if i + 1 >= len(s) else s[i] + (x - i) * (s[i + 1] - s[i])

    return tuple(q(p) for p in QUANTILES)


def raise_by(site_q: Sequence[float], reference_q: Sequence[float]) -> float:
    """The rule: the largest excess of the site's percentiles over the reference's, never below 0."""
    return max(0.0, *(s - r for s, r in zip(site_q, reference_q)))


def model_identity(manifest: ModelManifest) -> str:
    """SHA-256 over the model's file hashes as its manifest lists them: which weights were measured."""
    return hashlib.sha256(json.dumps(sorted(f.sha256 for f in manifest.files)).encode()).hexdigest()


def reference_quantiles(manifest: ModelManifest) -> tuple[float, ...]:
    """The model's :data:`QUANTILES` of image logits on its real validation images."""
    ref = manifest.raw.get("thresholds", {}).get("reference_logit_quantiles")
    try:
        values = tuple(float(ref[str(q)]) for q in QUANTILES)
    except (TypeError, KeyError, ValueError):
        raise ConfigError(f"model {manifest.name} {manifest.version} has no thresholds.reference_logit_quantiles "
                          f"({', '.join(str(q) for q in QUANTILES)}) in its manifest: it cannot be calibrated to a site"
                          ) from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"model {manifest.name} {manifest.version}: reference_logit_quantiles are not finite")
    return values


@dataclass(frozen=True)
class SiteCalibration:
    """What ``edge-agent learn`` measured; :attr:`offset` is subtracted from this device's image logits."""

    model_name: str
    model_version: str
    model_sha256: str
    n_images: int
    site_quantiles: tuple[float, ...]  # at QUANTILES
    reference_quantiles: tuple[float, ...]
    learned_from: str = ""
    modality: str = ""  # the DICOM modality it was learned on; "" = images without one (PNG, JPEG)

    def applies_to(self, modality: str) -> bool:
        """Whether an image of ``modality`` is read on this scale: only the learned modality exactly
        ("" is a modality of its own), so stripping the Modality tag earns no discount."""
        return modality == self.modality

    def __post_init__(self) -> None:
        for name in ("model_name", "model_version", "model_sha256", "learned_from", "modality"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"site calibration: {name} must be a string, found {getattr(self, name)!r}")
        for name in ("site_quantiles", "reference_quantiles"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or len(v) != len(QUANTILES) or not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
                raise ValueError(f"site calibration: {name} must be {len(QUANTILES)} finite numbers (at the "
                                 f"{QUANTILES} percentiles), found {v!r}")
        if not isinstance(self.n_images, int) or isinstance(self.n_images, bool) or self.n_images < MIN_IMAGES:
            raise ValueError(f"site calibration: n_images must be a whole number of at least {MIN_IMAGES}, "
                             f"found {self.n_images!r}")
        if self.offset > MAX_OFFSET:
            raise ValueError(f"site calibration: an offset of {self.offset:.3g} logits is no calibration (the model's "
                             f"logits do not reach that far); at most {MAX_OFFSET}")

    @property
    def offset(self) -> float:
        return raise_by(self.site_quantiles, self.reference_quantiles)

    @property
    def large(self) -> bool:
        return self.offset > LARGE_OFFSET

    @classmethod
    def learn(cls, logits: Sequence[float], manifest: ModelManifest, learned_from: str = "",
              modality: str = "") -> SiteCalibration:
        """From the model's image logits on this site's authentic images (of ``modality``)."""
        if len(logits) < MIN_IMAGES:
            raise ValueError(f"{len(logits)} image(s) to calibrate the model on; at least {MIN_IMAGES} are needed")
        return cls(manifest.name, manifest.version, model_identity(manifest), len(logits), quantiles(logits),
                   reference_quantiles(manifest), learned_from, modality)

    def check_model(self, manifest: ModelManifest) -> None:
        """Refuse a calibration learned for other weights (the scale is the model's own)."""
        if (self.model_name, self.model_version, self.model_sha256) != (manifest.name, manifest.version,
                                                                         model_identity(manifest)):
            same = (self.model_name, self.model_version) == (manifest.name, manifest.version)
            raise ConfigError(
                f"forensics.model_calibration was learned for model {self.model_name} {self.model_version}, but the "
                f"agent runs {manifest.name} {manifest.version}{' (other weights)' if same else ''}: run edge-agent "
                "learn again on this device's authentic images")

    def to_json(self) -> str:
        return json.dumps({"kind": KIND, "quantiles": list(QUANTILES), **asdict(self)}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SiteCalibration:
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.pop("kind", None) != KIND:
            raise ValueError(f"not a site calibration (kind {KIND!r}); write it with edge-agent learn")
        if data.pop("quantiles", None) != list(QUANTILES):
            raise ValueError(f"site calibration: quantiles must be {list(QUANTILES)}")
        try:
            for name in ("site_quantiles", "reference_quantiles"):
                if not isinstance(data[name], list):
                    raise ValueError(f"site calibration: {name} must be a list of numbers, found {data[name]!r}")
                data[name] = tuple(data[name])
            return cls(**data)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"site calibration: {exc}") from None

    def describe(self) -> str:
        pct = "/".join(f"{round(q * 100)}" for q in QUANTILES)
        site = " / ".join(f"{v:+.2f}" for v in self.site_quantiles)
        ref = " / ".join(f"{v:+.2f}" for v in self.reference_quantiles)
        head = (f"site calibration: this device's authentic images ({self.n_images}) score {site} at the {pct} % "
                f"percentiles vs {ref} on the model's validation reals")
        if self.offset == 0.0:
            return head + ": no higher, so the thresholds stay as shipped"
        tail = f", so {self.offset:.2f} is taken off this image's logit (the thresholds raised by as much)"
        if self.large:
            tail += ("; that much means the model hardly separates this device's images from fakes: the "
                     "fingerprint and physics checks carry the verdict")
        return head + tail
