"""Gather the evidence beside the model for one image: forensic layers and the capture signature.

Per file: the DICOM metadata rules and the DICOM Digital Signature check (PS3.15 Annex C).
Per frame: the imaging-physics noise check and the device-fingerprint check, on the model's own
tiles (no second tiling pass). Which layers run is the site's configuration
(:class:`EvidenceSettings`); the metadata and signature checks need nothing configured and run by
default; the noise profile and the fingerprint are learned on the device (docs/forensics.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import resolve_path
from .errors import ConfigError, ForensicsError
from .fusion import FusionModel

if TYPE_CHECKING:
    from cryptography import x509

    from .decode import DecodedImage
    from .detect import FrameScore
    from .dicom_signature import ProvenanceResult
    from .forensics import DeviceIdentity, Fingerprint, LayerFinding, NoiseFeatures, NoiseProfile
    from .forensics.refine import ProfileRefiner
    from .site_calibration import SiteCalibration

__all__ = ["EvidenceSettings", "Evidence", "FrameEvidence", "load_evidence_settings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvidenceSettings:
    metadata: bool = True
    signatures: bool = True
    identity: DeviceIdentity | None = None
    capture_anchors: tuple[x509.Certificate, ...] = ()
    noise_profile: NoiseProfile | None = None
    fingerprint: Fingerprint | None = None
    fusion: FusionModel = field(default_factory=FusionModel)
    # ``forensics.refine_profile``: where the agent keeps the noise profile it refines from the
    # images it judges authentic (edge_agent/forensics/refine.py); None: the profile stays as learned.
    refine_state: Path | None = None
    noise_profile_sha256: str = ""  # of the configured profile file: the refined state must grow from it
    # ``forensics.device_identity``: the device's enrolment folder (``edge-agent enroll``); its key
    # signs the refined state and only a state this device signed is read back (refine.py), judged
    # by ``enrolment_anchors`` (``forensics.enrolment_trust``) or else the folder's fleet-ca.pem
    device_identity: Path | None = None
    enrolment_anchors: tuple[x509.Certificate, ...] = ()
    # ``forensics.model_calibration``: the model's scale on this device's authentic images
    # (edge_agent/site_calibration.py, written by ``edge-agent learn``)
    model_calibration: SiteCalibration | None = None
    # ``forensics.copy_search``: look for regions whose noise repeats elsewhere in the image
    # (copy-move, pasted noise; edge_agent/forensics/copysearch.py). Off by default: it costs
    # seconds per radiograph, several times the model (docs/forensics.md, "Copy search").
    copy_search: bool = False


@dataclass(frozen=True)
class FrameEvidence:
    """The frame layers' findings, and what the physics layer measured (to refine the profile)."""

    findings: list[LayerFinding]
    noise: NoiseFeatures | None = None


class Evidence:
    """``refine``: learn from authentic images into ``settings.refine_state`` (the agent); without it
    a refined state is read but never written (``edge-agent scan``)."""

    def __init__(self, settings: EvidenceSettings = EvidenceSettings(), refine: bool = False) -> None:
        self.settings = settings
        self._noise = self._fingerprint = self._copy = None
        self.refiner: ProfileRefiner | None = None
        if settings.noise_profile is not None:
            from .forensics import NoiseCheck

            profile = settings.noise_profile
            if settings.refine_state is not None:
                from .forensics.refine import ProfileRefiner

                seal = None
                if settings.device_identity is not None:
                    from .trust.enrolment_signing import DeviceSeal

                    seal = DeviceSeal.of(settings.device_identity, signing=refine,
                                         anchors=settings.enrolment_anchors)
                self.refiner = ProfileRefiner(profile, settings.noise_profile_sha256, settings.refine_state,
                                              writable=refine, seal=seal)
                profile = self.refiner.profile
            self._noise = NoiseCheck(profile)
        if settings.fingerprint is not None:
            from .forensics import FingerprintCheck

            self._fingerprint = FingerprintCheck(settings.fingerprint)
        if settings.copy_search:
            from .forensics.copysearch import CopySearch

            self._copy = CopySearch()

    def for_file(self, decoded: DecodedImage) -> tuple[list[LayerFinding], ProvenanceResult | None]:
        """Metadata findings and the capture-signature result; DICOM only."""
        ds = decoded.dataset
        if ds is None:
            return [], None
        findings: list[LayerFinding] = []
        provenance = None
        if self.settings.metadata:
            from .forensics import check_metadata

            findings.append(_guarded("metadata", lambda: check_metadata(ds, self.settings.identity)))
        if self.settings.signatures and "DigitalSignaturesSequence" in ds:
            from .dicom_signature import check_dicom_signatures

            provenance = check_dicom_signatures(ds, self.settings.capture_anchors)  # never raises
        return findings, provenance

    @property
    def judges_frames(self) -> bool:
        """Whether :meth:`frame_evidence` has any layer to run (a noise profile, a fingerprint, the
        copy search)."""
        return self._noise is not None or self._fingerprint is not None or self._copy is not None

    @property
    def worth_a_core(self) -> bool:
        """Whether the frame layers cost enough to run beside the model on a core of their own
        (the fingerprint or the copy search; the physics layer alone, ~1 ms on a 512x512 slice,
        costs less than the model loses on one thread fewer: ``Pipeline.score_frame``)."""
        return self._fingerprint is not None or self._copy is not None

    def run_beside_model(self) -> None:
        """The pipeline runs the frame layers on a thread of their own while the model infers: the
        fingerprint check then keeps to that one thread instead of splitting its tiles over two."""
        if self._fingerprint is not None:
            self._fingerprint.threads = 1

    def for_frame(self, frame: np.ndarray, fs: FrameScore, decoded: DecodedImage) -> list[LayerFinding]:
        return self.frame_evidence(frame, fs.tiles, fs.origins, decoded).findings

    def frame_evidence(self, frame: np.ndarray, tiles: np.ndarray, origins_: Sequence[tuple[int, int]],
                       decoded: DecodedImage) -> FrameEvidence:
        """Physics, fingerprint and copy-search findings from the model's own tiles (they need no model output,
        so the pipeline may run them while the model infers), with the physics layer's measurement
        for :meth:`learn`."""
        origins = list(origins_)
        out: list[LayerFinding] = []
        measured: list[NoiseFeatures | None] = [None]
        noise, fingerprint = self._noise, self._fingerprint
        if noise is not None:
            def physics() -> LayerFinding:
                finding, measured[0] = noise.measure_and_judge(frame, tiles, decoded.facts)
                return finding

            out.append(_guarded("physics", physics))
        if fingerprint is not None:
            def fingerprint_layer() -> LayerFinding:
                from .forensics.placement import declared_placement

                declared = (None if decoded.dataset is None else
                            declared_placement(decoded.dataset, frame.shape, fingerprint.fingerprint.shape))
                return fingerprint.check(frame, tiles, origins, declared, decoded.facts.modality or "")

            out.append(_guarded("fingerprint", fingerprint_layer))
        if (copy := self._copy) is not None:
            out.append(_guarded("copy", lambda: copy.check(frame, tiles, origins)))
        return FrameEvidence(out, measured[0])

    def learn(self, frame: FrameEvidence, verdict: str) -> bool:
        """Refine the noise profile with one judged frame (authentic and typical only); whether it
        was learned. The physics layer judges the next image against the refined profile."""
        if self.refiner is None or self._noise is None or not self.refiner.offer(frame.noise, verdict):
            return False
        self._noise.profile = self.refiner.profile
        return True

    def close(self) -> None:
        """Save what was learned (the agent calls this at shutdown)."""
        if self.refiner is not None:
            self.refiner.save()


def _guarded(layer: str, check: Callable[[], LayerFinding]) -> LayerFinding:
    """A layer that fails on one odd image says so in the verdict instead of stopping the agent."""
    from .forensics import LayerFinding
    from .verdict import Reason

    try:
        return check()
    except Exception as exc:
        log.exception("forensic layer %s failed", layer)
        return LayerFinding(layer, None, (Reason(f"{layer}.error", f"the {layer} check failed: {type(exc).__name__}: {exc}"),))


def load_evidence_settings(section: dict[str, Any], base_dir: Path) -> EvidenceSettings:
    """The agent config's ``forensics:`` section (validated; paths relative to the config)."""
    allowed = {"metadata", "signatures", "identity", "capture_trust", "noise_profile", "fingerprint",
               "fingerprint_sha256", "enrolment_trust", "fusion", "refine_profile", "device_identity",
               "model_calibration", "copy_search"}
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"forensics: unknown key(s) {sorted(unknown)}; known keys: {sorted(allowed)}")

    def path(key: str) -> Path | None:
        value = section.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"forensics.{key}: expected a path (a string), found {value!r}")
        p = resolve_path(value, base_dir)
        if not p.is_file():
            raise ConfigError(f"forensics.{key}: {p} does not exist")
        return p

    blobs: dict[Path, bytes] = {}

    def read(p: Path) -> bytes:
        """Each learned file is read once: the bytes whose signature was checked are the bytes parsed."""
        if p not in blobs:
            blobs[p] = p.read_bytes()
        return blobs[p]

    def text(p: Path) -> str:  # as Path.read_text() reads it (universal newlines)
        return read(p).decode().replace("\r\n", "\n").replace("\r", "\n")

    if all(section.get(k) is not None for k in ("refine_profile", "enrolment_trust")) and \
            section.get("device_identity") is None:
        raise ConfigError("forensics.refine_profile: the learned files are signed (enrolment_trust), so what the "
                          "agent learns on top must be signed too: set forensics.device_identity to this device's "
                          "enrolment folder (the one edge-agent enroll and mqtt.identity use)")
    for key in ("metadata", "signatures", "copy_search"):
        if not isinstance(section.get(key, key != "copy_search"), bool):
            raise ConfigError(f"forensics.{key}: expected true or false, found {section[key]!r}")
    try:
        identity = None
        if section.get("identity") is not None:
            from .forensics import DeviceIdentity

            ident = section["identity"]
            if not isinstance(ident, dict):
                raise ConfigError(f"forensics.identity: expected a mapping, found {ident!r}")
            identity = DeviceIdentity(**{k: tuple(v) if isinstance(v, list) else v for k, v in ident.items()})
        anchors: tuple[Any, ...] = ()
        if (p := path("capture_trust")) is not None:
            from .dicom_signature import load_trust_anchors

            anchors = load_trust_anchors(p)
        profile = fingerprint = None
        if (trust := path("enrolment_trust")) is not None:  # the device signed what it learned
            from .trust.enrolment_signing import verify_enrolment_files

            learned = [p for p in (path("noise_profile"), path("fingerprint"), path("model_calibration")) if p is not None]
            if not learned:
                raise ConfigError("forensics.enrolment_trust is set but none of noise_profile, fingerprint and "
                                  "model_calibration is")
            if len({p.parent for p in learned}) > 1:
                raise ConfigError("forensics: noise_profile, fingerprint and model_calibration must be in one folder "
                                  "with their enrolment.sig.json when enrolment_trust is set")
            trust_pem = trust.read_bytes()
            try:
                enrolled_device = verify_enrolment_files(learned, trust_pem, contents={q: read(q) for q in learned})
            except ForensicsError as exc:
                hint = (" (list every file edge-agent learn signed: it prints the lines, model_calibration "
                        "included)" if "signature covers" in str(exc) else "")
                raise ConfigError(f"forensics.enrolment_trust: {exc}{hint}") from None
        profile_sha = ""
        if (p := path("noise_profile")) is not None:
            from .forensics import NoiseProfile
            from .forensics.refine import ProfileRefiner

            profile_text = text(p)
            profile, profile_sha = NoiseProfile.from_json(profile_text), ProfileRefiner.sha256_of(profile_text)
        refine_state = _refine_state(section.get("refine_profile"), base_dir, profile is not None,
                                     [q for q in (path("noise_profile"), path("fingerprint"), path("fusion"),
                                                  path("model_calibration")) if q])
        device_identity = _device_identity(section.get("device_identity"), base_dir, refine_state is not None)
        enrolment_anchors: tuple[Any, ...] = ()
        if device_identity is not None and trust is not None:
            from .trust.certs import load_certificates
            from .trust.enrollment import DeviceState

            enrolment_anchors = tuple(load_certificates(trust_pem))
            if (named := DeviceState(device_identity).device_id()) != enrolled_device:
                raise ConfigError(f"forensics.device_identity: {device_identity} is device {named!r}, but the "
                                  f"learned files were signed by {enrolled_device!r}: give that device's folder")
        if (p := path("fingerprint")) is not None:
            from .forensics import Fingerprint

            fingerprint = Fingerprint.from_bytes(read(p), section.get("fingerprint_sha256"))
        fusion = FusionModel()
        if (p := path("fusion")) is not None:
            fusion = FusionModel.from_json(p.read_text())
        calibration = None
        if (p := path("model_calibration")) is not None:
            from .site_calibration import SiteCalibration

            try:
                calibration = SiteCalibration.from_json(text(p))
            except ValueError as exc:
                raise ConfigError(f"forensics.model_calibration: {p}: {exc}") from None
    except ConfigError:
        raise
    except (TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"forensics: {exc}") from None
    except Exception as exc:  # a malformed profile / fingerprint / certificate file
        raise ConfigError(f"forensics: {type(exc).__name__}: {exc}") from None
    return EvidenceSettings(
        metadata=section.get("metadata", True),
        signatures=section.get("signatures", True),
        identity=identity,
        capture_anchors=anchors,
        noise_profile=profile,
        fingerprint=fingerprint,
        fusion=fusion,
        refine_state=refine_state,
        noise_profile_sha256=profile_sha,
        device_identity=device_identity,
        enrolment_anchors=enrolment_anchors,
        model_calibration=calibration,
        copy_search=section.get("copy_search", False),
    )


def _device_identity(value: Any, base_dir: Path, refining: bool) -> Path | None:
    """``forensics.device_identity``: an enrolment folder (``device.json`` and ``fleet-ca.pem``;
    the agent opens the key and certificate at start). Only meaningful with ``refine_profile``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"forensics.device_identity: expected the enrolment folder (a string), found {value!r}")
    if not refining:
        raise ConfigError("forensics.device_identity is set but forensics.refine_profile is not: it signs the "
                          "refined noise profile, so set both or neither")
    p = resolve_path(value, base_dir)
    if not (p / "device.json").is_file() or not (p / "fleet-ca.pem").is_file():
        raise ConfigError(f"forensics.device_identity: {p} is not an enrolled device's folder (no device.json and "
                          "fleet-ca.pem): run edge-agent enroll init / install there first")
    return p


def _refine_state(value: Any, base_dir: Path, has_profile: bool, inputs: list[Path]) -> Path | None:
    """``forensics.refine_profile``: a file the agent creates and rewrites (with its folder, at start)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"forensics.refine_profile: expected a file path (a string), found {value!r}")
    if not has_profile:
        raise ConfigError("forensics.refine_profile is set but forensics.noise_profile is not: "
                          "learn a profile first (edge-agent learn), then it can be refined")
    p = resolve_path(value, base_dir)
    if p.is_dir():
        raise ConfigError(f"forensics.refine_profile: {p} is a folder; give a file path")
    if any(p.resolve() == q.resolve() for q in inputs):
        raise ConfigError(f"forensics.refine_profile: {p} is one of the learned files the agent reads; give a "
                          "separate, writable file (e.g. in the agent's state_dir)")
    return p
