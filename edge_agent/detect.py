"""Score one decoded frame with the shipped model: tiles in, a score and a heat map out.

Pure apart from the injected :class:`~edge_agent.runtime.Backend`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ModelError
from .manifest import ModelManifest, load_manifest
from .runtime import Backend, choose_backend, open_backend
from .tiling import aggregate_logits, grid_tiles, sigmoid
from .verdict import ModelRef

__all__ = ["FrameScore", "Prepared", "Detector", "default_model_dir", "open_detector"]

# Tiles per runtime call. The first layers' activations of a batch (4 tiles: 24 x 128 x 128 x 4 B x
# 4 = 6 MiB after the stem) then stay in the CPU's cache: per radiograph the model ran 13-17 %
# faster than with 16 on ONNX Runtime and 9-11 % on OpenVINO (RG1 60 vs 70 ms, RG3 32 vs 38 ms,
# 2 threads, identical scores; python -m benchmarks.bench_batch), and the runtime's peak memory is
# a quarter.
_BATCH = 4


@dataclass(frozen=True)
class FrameScore:
    score: float
    logit: float  # the aggregated image logit: score == sigmoid(logit)
    tile_logits: np.ndarray  # [N]
    cam: np.ndarray  # [N, h, w], logit units
    origins: tuple[tuple[int, int], ...]
    tile: int
    shape: tuple[int, int]
    preprocess_ms: float
    infer_ms: float
    tiles: np.ndarray = field(repr=False, compare=False)  # the model's input, reused by forensics

    @property
    def peak_origin(self) -> tuple[int, int]:
        return self.origins[int(np.argmax(self.tile_logits))]


@dataclass(frozen=True)
class Prepared:
    """A frame cut into the model's tiles, before inference (the forensic layers read them too)."""

    tiles: np.ndarray  # [N, 1, tile, tile]
    origins: tuple[tuple[int, int], ...]
    preprocess_ms: float


class Detector:
    """``open_narrow()`` loads the same model file into the same runtime again with one thread
    fewer (:func:`open_detector` provides it); see :meth:`add_narrow_session`."""

    def __init__(self, manifest: ModelManifest, backend: Backend,
                 open_narrow: Callable[[], Backend] | None = None) -> None:
        self.manifest = manifest
        self.backend = backend
        f = backend.model_file
        self.model_ref = ModelRef(manifest.name, manifest.version, f.sha256, backend.name, f.precision)
        self._open_narrow = open_narrow
        self._narrow: Backend | None = None

    def add_narrow_session(self) -> bool:
        """Open the model a second time with one thread fewer, for frames whose forensic layers run
        on the freed core meanwhile (:data:`edge_agent.pipeline.CONCURRENT_BELOW_TILES`); whether
        there is one. On 1-16 tiles of a 2-core device the model on one thread beside the layers
        finished sooner than on two threads with the layers competing for them, e.g. a 4-tile image
        6.4-7.4 vs 9.3-10.2 ms and 12 tiles 17.8 vs 24.5 ms (docs/forensics.md, Speed)."""
        if self._narrow is None and self._open_narrow is not None:
            self._narrow = self._open_narrow()
        return self._narrow is not None

    def prepare(self, frame: np.ndarray) -> Prepared:
        t0 = time.perf_counter()
        spec = self.manifest.tiling
        tiles, origins = grid_tiles(frame, spec.tile, spec.max_tiles, spec.flat_fraction)
        return Prepared(tiles, tuple(origins), (time.perf_counter() - t0) * 1e3)

    def score(self, frame: np.ndarray, prepared: Prepared | None = None, narrow: bool = False) -> FrameScore:
        """``narrow``: run on the session with one thread fewer if :meth:`add_narrow_session`
        opened one (the same model file: the same scores)."""
        p = prepared if prepared is not None else self.prepare(frame)
        spec = self.manifest.tiling
        tiles, origins = p.tiles, p.origins
        backend = self._narrow if narrow and self._narrow is not None else self.backend
        t1 = time.perf_counter()
        logits_parts, cam_parts = [], []
        for start in range(0, tiles.shape[0], _BATCH):
            lg, cm = backend.run(tiles[start : start + _BATCH])
            logits_parts.append(lg)
            cam_parts.append(cm)
        t2 = time.perf_counter()
        logits = np.concatenate(logits_parts).astype(np.float32)
        cam = np.concatenate(cam_parts).astype(np.float32)
        agg = aggregate_logits(logits, spec.aggregate, spec.topk)
        return FrameScore(
            score=sigmoid(agg),
            logit=agg,
            tile_logits=logits,
            cam=cam,
            origins=origins,
            tile=spec.tile,
            shape=(int(frame.shape[0]), int(frame.shape[1])),
            preprocess_ms=p.preprocess_ms,
            infer_ms=(t2 - t1) * 1e3,
            tiles=tiles,
        )


def default_model_dir() -> Path:
    """The model the agent uses when the config names none: ``$EDGE_AGENT_MODEL``, else the newest
    ``models/<name>-<version>/manifest.json`` shipped beside the package (checkout, editable
    install, or the copy a wheel bundles as ``edge_agent/bundled_models``)."""
    env = os.environ.get("EDGE_AGENT_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for root in (here / "bundled_models", here.parent / "models"):
        found = sorted(root.glob("*/manifest.json"), key=lambda p: _version_key(p.parent.name))
        if found:
            return found[-1].parent
    raise ModelError(
        "no shipped model found (looked for models/*/manifest.json beside the package); "
        "set model.path in the config or EDGE_AGENT_MODEL"
    )


def _version_key(name: str) -> tuple[int, ...]:
    version = name.rsplit("-", 1)[-1]
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def open_detector(
    model_dir: Path | None = None,
    backend: str = "auto",
    precision: str = "auto",
    threads: int = 2,
    cache_dir: Path | None = None,
    trust_anchor: bytes | None = None,
) -> Detector:
    """Load the manifest, choose a runtime, verify hashes, and compile the model. With
    ``trust_anchor`` (the vendor model-signing CA, PEM) the model must be vendor-signed."""
    directory = model_dir if model_dir is not None else default_model_dir()
    if trust_anchor is not None:
        from .trust.model_signing import verify_signed_model  # raises naming the failing file

        verify_signed_model(directory, trust_anchor)
    manifest = load_manifest(directory)
    choice = choose_backend(manifest, backend, precision)
    narrow = (lambda: open_backend(manifest, choice, threads - 1, cache_dir)) if threads > 1 else None
    return Detector(manifest, open_backend(manifest, choice, threads, cache_dir), narrow)
