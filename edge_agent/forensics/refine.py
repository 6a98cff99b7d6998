"""Refine the device's noise profile from the images it judges authentic (issue 6, part 1: the
profile is "learned from real images, per modality, and refined per device").

``edge-agent learn`` learns the profile once, from a batch of the device's images. Detectors drift
after that: tubes age, panels are recalibrated, exposure protocols change. The agent then keeps
learning, but only from images that

* got the verdict ``authentic`` (fused: model, every layer, a valid capture signature), and
* are *typical*: every noise feature within ``max_z`` (3) standard deviations of the current
  profile, and within ``max_base_z`` (6) of the profile as learned;
* one frame per file (a multi-frame file counts once).

These gates keep an attacker who gets images through as authentic from dragging the profile: the
learned profile weighs as at least ``min_weight_images`` (50) images, so an accepted image moves a
mean by at most 3/51 of a standard deviation (about 17 images at the edge move it by one), the
weight falls to 1/1000 as images accumulate (``NoiseProfile.updated``: exponential moving
average beyond the profile's ``horizon``), and however many pass, nothing beyond 6 standard
deviations of the learned profile is ever learned. Genuine slow drift within that range is
followed; a detector that drifts further needs a new ``edge-agent learn``.

The refined profile lives in a state file beside the agent's other state (JSON, written to a
temporary file, fsync'd and renamed: a power cut leaves the old or the new file, never half of
one). It records the sha256 of the profile it grew from: after a new ``edge-agent learn`` the old
state is ignored (logged) and refinement starts again from the new profile. A state file that
cannot be read is moved aside as ``*.unreadable`` (kept for inspection) and the agent goes on with
the configured profile.

With a ``seal`` (``forensics.device_identity``: :class:`edge_agent.trust.enrolment_signing.DeviceSeal`)
the state file is signed by the device key at every save, and only a state this device signed is
read back: whoever can write the file but not use the key cannot hand the physics layer a widened
profile. An edited, unsigned or another device's state is set aside like an unreadable one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Protocol

from ..errors import ForensicsError
from ..durable import write_atomically
from .noise import NoiseFeatures, NoiseProfile

__all__ = ["ProfileRefiner", "Seal", "typical"]

log = logging.getLogger(__name__)

_FORMAT = "edge-agent-refined-noise-profile"


class Seal(Protocol):
    """Signs the state file's bytes and opens them again (raising :class:`ForensicsError`)."""

    def sign(self, payload: bytes) -> bytes: ...

    def open(self, data: bytes, name: str) -> bytes: ...


def typical(profile: NoiseProfile, features: NoiseFeatures, max_z: float) -> bool:
    """Pure: whether an image's noise lies well inside the profile (every measured feature within
    ``max_z`` standard deviations), so learning from it cannot widen or drag the profile much."""
    if features.flat_blocks < 8:
        return False
    z = profile.z(features)
    return bool(z) and all(math.isfinite(v) and abs(v) <= max_z for v in z.values())


class ProfileRefiner:
    """The current noise profile of this device, learning from authentic, typical images.

    ``writable`` False (``edge-agent scan``): the refined state is read, never written, so a scan
    of a folder of arbitrary images judges like the agent but teaches the device nothing."""

    def __init__(self, base: NoiseProfile, base_sha256: str, state: Path, *, writable: bool = True,
                 save_every: int = 25, max_z: float = 3.0, min_weight_images: int = 50,
                 max_base_z: float = 6.0, seal: Seal | None = None) -> None:
        if save_every < 1 or max_z <= 0 or min_weight_images < 1 or max_base_z < max_z:
            raise ForensicsError("save_every and min_weight_images must be >= 1, max_z positive, max_base_z >= max_z")
        self.base = base
        self.min_weight_images = min_weight_images
        self.max_base_z = max_base_z
        self._replace = False
        self.base_sha256 = base_sha256
        self.state = state
        self.seal = seal
        self.writable = writable
        self.save_every = save_every
        self.max_z = max_z
        self.learned = 0  # images learned since the configured profile (over all runs)
        self._unsaved = 0
        self._lock = threading.Lock()
        if writable:
            try:
                state.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ForensicsError(f"forensics.refine_profile: folder {state.parent} cannot be created "
                                     f"({exc.strerror})") from None
        self.profile = self._load(base)

    @staticmethod
    def sha256_of(profile_text: str | bytes) -> str:
        data = profile_text.encode() if isinstance(profile_text, str) else profile_text
        return hashlib.sha256(data).hexdigest()

    def _load(self, base: NoiseProfile) -> NoiseProfile:
        if not self.state.exists():
            return base.counted_as(self.min_weight_images)
        try:
            raw = self.state.read_bytes()
            d = json.loads(self.seal.open(raw, str(self.state)) if self.seal is not None else raw)
            if not isinstance(d, dict):
                raise ValueError(f"expected a JSON object, found {type(d).__name__}")
            if d.get("format") != _FORMAT or d.get("version") != 1:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
            if d["base_sha256"] != self.base_sha256:
                log.warning("refined noise profile %s grew from another profile (sha256 %s..., configured %s...): "
                            "starting again from the configured one", self.state, str(d["base_sha256"])[:12],
                            self.base_sha256[:12])
                self._replace = True  # the next save overwrites it, even before anything is learned
                return base.counted_as(self.min_weight_images)
            profile = NoiseProfile.from_json(json.dumps(d["profile"]))
            if profile.modality != base.modality:
                raise ValueError(f"modality {profile.modality!r}, the configured profile's is {base.modality!r}")
            self.learned = int(d["learned"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, ForensicsError) as exc:
            aside = self.state.with_name(self.state.name + ".unreadable")
            log.error("refined noise profile %s cannot be used (%s); going on with the configured profile%s",
                      self.state, exc, f", the file is kept as {aside}" if self.writable else "")
            if self.writable:
                try:
                    os.replace(self.state, aside)
                except OSError as move:
                    log.error("cannot move %s aside: %s", self.state, move.strerror)
            return base.counted_as(self.min_weight_images)
        log.info("noise profile: refined state %s (%d images learned on this device)", self.state, self.learned)
        return profile.counted_as(self.min_weight_images)

    def offer(self, features: NoiseFeatures | None, verdict: str) -> bool:
        """Learn from one judged image when it is authentic and typical; whether it was learned."""
        if not self.writable or features is None or verdict != "authentic":
            return False
        with self._lock:
            # typical for the current profile, and still within reach of the learned one: however many
            # images pass, the profile cannot be walked further than max_base_z from where it started
            if not typical(self.profile, features, self.max_z) or not typical(self.base, features, self.max_base_z):
                return False
            self.profile = self.profile.updated(features)
            self.learned += 1
            self._unsaved += 1
            due = self._unsaved >= self.save_every
        if due:
            self.save()
        return True

    def save(self) -> None:
        """Write the refined profile (:func:`~edge_agent.durable.write_atomically`).
        A failed write is logged and retried at the next save; the profile in memory is kept."""
        if not self.writable:
            return
        with self._lock:
            if self._unsaved == 0 and self.state.exists() and not self._replace:
                return
            body = {"format": _FORMAT, "version": 1, "base_sha256": self.base_sha256, "learned": self.learned,
                    "profile": json.loads(self.profile.to_json())}
            pending = self._unsaved
        data = json.dumps(body, indent=1).encode()
        try:
            if self.seal is not None:
                data = self.seal.sign(data)
            write_atomically(self.state, data)
        except Exception as exc:  # a full disk, an expired certificate, a key token pulled out
            log.error("cannot save the refined noise profile to %s (%s); kept in memory, retried later",
                      self.state, exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._unsaved -= pending
            self._replace = False
