"""Forensic layers beside the learned detector (issue 6): physics, the device's own fingerprint,
and DICOM metadata. Each layer has one entry point returning a :class:`LayerFinding`:

    NoiseCheck(profile).check(frame, tiles, origins, facts)   # imaging-physics consistency
    FingerprintCheck(fingerprint).check(frame, tiles, origins) # this detector's fixed pattern
    check_metadata(dataset, identity)                          # header rules

``tiles``/``origins`` are the model's own (``edge_agent.tiling.grid_tiles``), so the layers add
no tiling work and their heat maps align with the model's CAM. The simulator used to validate
them is ``edge_agent.forensics.simulator`` (numpy only; not imported here).
"""

from .finding import LAYERS, LayerFinding
from .fingerprint import Fingerprint, FingerprintEnrollment, enroll
from .fingerprint_check import FingerprintCheck
from .metadata import RULES, DeviceIdentity, check_metadata
from .noise import NoiseCheck, NoiseFeatures, NoiseProfile, measure_noise

__all__ = [
    "LAYERS",
    "LayerFinding",
    "NoiseCheck",
    "NoiseFeatures",
    "NoiseProfile",
    "measure_noise",
    "Fingerprint",
    "FingerprintCheck",
    "FingerprintEnrollment",
    "enroll",
    "DeviceIdentity",
    "RULES",
    "check_metadata",
]
