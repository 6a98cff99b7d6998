"""decode -> detect (+ forensic evidence, fused) -> verdict for one file: the stage every
ingestion path calls.

``Pipeline.process(path, display)`` never raises for a bad image: an input that cannot be read
becomes an ``unreadable`` verdict with the reason, so one broken file never stops the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .decode import DecodedImage, DecodeLimits, decode_path
from .detect import Detector, FrameScore, open_detector
from .errors import ModelError, UnreadableImage
from .evidence import Evidence, EvidenceSettings, FrameEvidence
from .fusion import fuse
from .tiling import sigmoid
from .verdict import Reason, Timings, Verdict

if TYPE_CHECKING:
    from .forensics import LayerFinding

__all__ = ["Pipeline", "ScoredFrame", "open_pipeline"]

log = logging.getLogger(__name__)

# When the fingerprint or the copy search is among the frame layers (Evidence.worth_a_core) they run
# on a thread of their own while the model infers (they read the model's tiles, not its output), and
# the fingerprint check then keeps to that thread (Evidence.run_beside_model). Images with fewer tiles
# than this also run the model on a session with one thread fewer (Detector.add_narrow_session), so
# model and layers each have a core: on a 512x512 image (4 tiles) the layers cost about as much as the
# model. Larger images keep the model on all its threads.
# Model + layers, ms (2-core VM, xray-npr 1.7.0, crops of RG1, layers beside a narrow model vs after a
# full one): 4 tiles 6.4-7.4 vs 10.2-11.5; 16 tiles 22.4 vs 26.5; 20 tiles 28.0 vs 29.0; 25 tiles
# 36.1 vs 35.8; 33 (RG3) 44.0 vs 40.7. Beside a full-width model with a one-thread fingerprint check
# (2026-12-08, xray-npr 1.9.0, interleaved in one process, 0.15 s pauses): RG1 added 0.24-0.27 of the
# model vs 0.33-0.34 after it, RG3 0.39 vs 0.48.
# The physics layer alone (a CT device) runs after the model: ~1.2 ms of a 512x512 slice, and the
# model on one thread fewer loses more than that (6.7 ms beside vs 4.7 after).
CONCURRENT_BELOW_TILES = 20


class ScoredFrame(NamedTuple):
    """One frame's verdict with what it was judged from: the model's score (CAM for heat maps), the
    decoded image, and the frame layers' findings (their heat maps: fingerprint mismatch)."""

    verdict: Verdict
    score: FrameScore | None
    decoded: DecodedImage | None
    findings: tuple[LayerFinding, ...] = ()


class Pipeline:
    def __init__(
        self, detector: Detector, limits: DecodeLimits = DecodeLimits(), evidence: Evidence | None = None
    ) -> None:
        self.detector = detector
        self.limits = limits
        self.evidence = evidence if evidence is not None else Evidence()
        self._layers: ThreadPoolExecutor | None = None
        # the layers on a thread of their own beside the model; small frames: the model on the other
        # cores (CONCURRENT_BELOW_TILES)
        if self.evidence.worth_a_core:
            self.evidence.run_beside_model()
        self._narrow = self.evidence.worth_a_core and self._open_narrow_session()
        self.calibration = self.evidence.settings.model_calibration
        self._calibration_note = ""  # the calibration's description, composed once for every verdict
        if self.calibration is not None:  # a scale learned on other weights would mislead: refuse
            self.calibration.check_model(detector.manifest)
            self._calibration_note = self.calibration.describe()
            (log.warning if self.calibration.large else log.info)("%s", self._calibration_note)

    def _open_narrow_session(self) -> bool:
        try:
            return self.detector.add_narrow_session()
        except ModelError as exc:  # the full session works: carry on with it alone
            log.warning("small images will run the model on all its threads beside the layers: %s", exc)
            return False

    def process(self, path: str | Path, display: str | None = None) -> list[Verdict]:
        """All verdicts for one file (one per frame)."""
        return [scored.verdict for scored in self.process_detailed(path, display)]

    def process_detailed(self, path: str | Path, display: str | None = None) -> list[ScoredFrame]:
        decoded, decode_ms = self._decode(path)
        return self._score(decoded, str(display if display is not None else path), decode_ms)

    def process_many(self, items: Iterable[tuple[Path, str]]) -> Iterator[ScoredFrame]:
        """Like :meth:`process_detailed` over many files, decoding the next file on a second
        thread while the model runs on the current one (both release the GIL in C code)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            pending: tuple[Future[tuple[DecodedImage | UnreadableImage, float]], str] | None = None
            for path, display in items:
                nxt = (pool.submit(self._decode, path), display)
                if pending is not None:
                    yield from self._finish(pending)
                pending = nxt
            if pending is not None:
                yield from self._finish(pending)

    def _finish(self, pending: tuple[Future[tuple[DecodedImage | UnreadableImage, float]], str]) -> list[ScoredFrame]:
        fut, display = pending
        decoded, decode_ms = fut.result()
        return self._score(decoded, display, decode_ms)

    def _decode(self, path: str | Path) -> tuple[DecodedImage | UnreadableImage, float]:
        """Decode, timing only the decoding itself (not time spent queued behind inference)."""
        t0 = time.perf_counter()
        result: DecodedImage | UnreadableImage
        try:
            result = decode_path(path, self.limits)
        except UnreadableImage as exc:
            result = exc
        except MemoryError:
            result = UnreadableImage("too_large", "decoding ran out of memory")
        except Exception as exc:  # a decoder bug on one file must not stop the agent
            log.exception("%s: unexpected error while decoding", path)
            result = UnreadableImage("decode_failed", f"the decoder failed unexpectedly: {type(exc).__name__}: {exc}")
        return result, (time.perf_counter() - t0) * 1e3

    def _score(self, decoded: DecodedImage | UnreadableImage, display: str, decode_ms: float) -> list[ScoredFrame]:
        if isinstance(decoded, UnreadableImage):
            log.warning("%s: unreadable (%s): %s", display, decoded.code, decoded)
            v = Verdict(
                path=display,
                frame=None,
                verdict="unreadable",
                score=None,
                threshold=None,
                reasons=(Reason(decoded.code, str(decoded)),),
                timings_ms=Timings(decode=decode_ms, total=decode_ms),
            )
            return [ScoredFrame(v, None, None)]
        out: list[ScoredFrame] = []
        multi = len(decoded.frames) > 1
        th = self.detector.manifest.thresholds
        fused_th = self.evidence.settings.fusion.thresholds(th)  # the verdict's score is the fused one
        t0 = time.perf_counter()
        file_findings, provenance = self.evidence.for_file(decoded)
        file_ms = (time.perf_counter() - t0) * 1e3
        for i, frame in enumerate(decoded.frames):
            fs, frame_evidence, layers_ms = self.score_frame(frame, decoded)
            findings = [*file_findings, *frame_evidence.findings]
            notes: tuple[Reason, ...] = ()
            if self.calibration is not None and self.calibration.applies_to(decoded.facts.modality):
                # this device's scale (edge_agent/site_calibration.py); other modalities: the shipped one
                off, raw = self.calibration.offset, fs.score
                # the tile logits and the CAM too, so a heat map shows what the verdict was judged on
                fs = dataclasses.replace(fs, logit=fs.logit - off, score=sigmoid(fs.logit - off),
                                         tile_logits=fs.tile_logits - off, cam=fs.cam - off)
                notes = (Reason("model.site_calibrated",
                                f"{self._calibration_note} (this image: {raw:.3f} before, {fs.score:.3f} after)"),)
            model_reason = _model_reason(th.label(fs.score), fs, th.suspicious)
            fused = fuse(fs.logit, model_reason, findings, provenance, th, self.evidence.settings.fusion, notes)
            if i == 0:  # one frame per file teaches the noise profile (a 100-frame file counts once)
                self.evidence.learn(frame_evidence, fused.label)
            forensics_ms = layers_ms + (file_ms if i == 0 else 0.0)
            work = fs.preprocess_ms + fs.infer_ms + forensics_ms
            v = Verdict(
                path=display,
                frame=i if multi else None,
                verdict=fused.label,
                score=fused.score,
                threshold=fused_th.suspicious,
                synthetic_threshold=fused_th.synthetic,
                reasons=fused.reasons,
                timings_ms=Timings(
                    decode=decode_ms if i == 0 else 0.0,
                    preprocess=fs.preprocess_ms,
                    infer=fs.infer_ms,
                    forensics=forensics_ms,
                    total=work + (decode_ms if i == 0 else 0.0),
                ),
                model=self.detector.model_ref,
                facts=decoded.facts,
            )
            out.append(ScoredFrame(v, fs, decoded, tuple(frame_evidence.findings)))
        return out


    def score_frame(self, frame: np.ndarray, decoded: DecodedImage) -> tuple[FrameScore, FrameEvidence, float]:
        """The model's score and the physics/fingerprint evidence of one frame, and the ms the
        layers added after the model (they run beside it when the fingerprint or the copy search is
        among them, :data:`CONCURRENT_BELOW_TILES`)."""
        prepared = self.detector.prepare(frame)
        if self.evidence.worth_a_core:
            if self._layers is None:
                self._layers = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forensics")
            pending = self._layers.submit(self.evidence.frame_evidence, frame, prepared.tiles, prepared.origins, decoded)
            fs = self.detector.score(frame, prepared, narrow=self._narrow and len(prepared.origins) < CONCURRENT_BELOW_TILES)
            t1 = time.perf_counter()
            evidence = pending.result()
        else:
            fs = self.detector.score(frame, prepared)
            t1 = time.perf_counter()
            evidence = self.evidence.frame_evidence(frame, prepared.tiles, prepared.origins, decoded)
        return fs, evidence, (time.perf_counter() - t1) * 1e3

    def close(self) -> None:
        """Save what the evidence layers learned and stop the layers' thread (agent shutdown)."""
        self.evidence.close()
        if self._layers is not None:
            self._layers.shutdown(wait=True)
            self._layers = None


def open_pipeline(
    model: Path | None,
    backend: str = "auto",
    precision: str = "auto",
    threads: int = 2,
    cache_dir: Path | None = None,
    trust_anchor: Path | None = None,
    evidence: EvidenceSettings | None = None,
    refine: bool = False,
) -> Pipeline:
    """The pipeline the agent and ``scan --config`` run: the model (vendor-signed when a
    ``trust_anchor`` PEM is given) and the evidence layers of the config's ``forensics:``.
    ``refine``: let the noise profile learn from authentic images (the agent; not ``scan``)."""
    anchor = trust_anchor.read_bytes() if trust_anchor is not None else None
    detector = open_detector(model, backend, precision, threads, cache_dir, trust_anchor=anchor)
    return Pipeline(detector, evidence=Evidence(evidence, refine=refine) if evidence is not None else None)


def _model_reason(label: str, fs: FrameScore, threshold: float) -> Reason:
    y, x = fs.peak_origin
    if label == "authentic":
        return Reason(
            "model.below_threshold",
            f"the detector scored {fs.score:.3f}, below the threshold {threshold:.3f}",
        )
    return Reason(
        "model.above_threshold",
        f"the detector scored {fs.score:.3f} (threshold {threshold:.3f}); strongest evidence in the "
        f"{fs.tile}x{fs.tile} tile at row {y}, column {x}",
    )
