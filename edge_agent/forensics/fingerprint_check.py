"""Looking for the enrolled fingerprint (:mod:`.fingerprint`) in each image, everywhere in it.

* the decision statistic peak-to-correlation energy, PCE (Goljan, Fridrich & Filler, "Large scale
  test of sensor fingerprint camera identification", Proc. SPIE 7254, 2009), per tile from the
  tile's cross-spectrum, the per-pixel work in one compiled pass (:mod:`.kernels`);
* local integrity: a region whose correlation falls short of what the fingerprint predicts there
  has lost the sensor's pattern (Chen, Fridrich, Goljan & Lukas, IEEE TIFS 3(1), 2008, sec. V:
  forgery detection by a correlation predictor, which also models where the predictor itself is
  unreliable - there saturation and intensity, here clipped pixels and the enrolment's local noise);
* placement: an image cropped, turned or mirrored from the detector's frame is checked where the
  search of :mod:`.placement` (or its DICOM Field of View) puts it.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft
from scipy import ndimage

from ..errors import ForensicsError
from ..tiling import full_to_tiles, grid_origins, grid_tiles, tiles_to_full
from ..verdict import Reason
from .finding import LayerFinding, logistic
from .fingerprint import _REL_BLOCK, Fingerprint
from .placement import ORIENTATIONS, Placement, PlacementSearch, binned_high_pass, search_residual, threshold_margin
from .residual import WB, background_energy, cells, intact_blocks, spectrum_multiplicity, wiener_weight

__all__ = ["FingerprintCheck", "FingerprintMeasurement"]

_CHUNK = 32  # at most this many tiles per chunk: one chunk per thread up to 64 tiles (fewest Python steps)
_THREADS = max(1, min(2, os.cpu_count() or 1))  # chunks in parallel (see FingerprintCheck.measure)
# Fewer tiles than this run as one chunk on the calling thread. Split into two 2-tile chunks on two
# threads, a 512x512 image (4 tiles) lost more than it gained on the 2-core bench VM: the GIL passes
# back and forth between short numpy calls, and waking an idle vCPU costs more than a small chunk
# takes (bench_forensics: 3.4 ms on one thread vs 4.3-4.7 ms on two, idle machine).
_PARALLEL_TILES = 16
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_THREADS, thread_name_prefix="fingerprint")
        return _POOL


@functools.lru_cache(maxsize=64)
def _fft_subset(n: int, fft_tiles: int) -> tuple[frozenset[int], np.ndarray, np.ndarray]:
    """Which of ``n`` tiles get the FFT (``fft_tiles`` evenly spread), as a set and sorted, and the
    others: the same for every image of one geometry, so worked out once."""
    measured = np.unique(np.round(np.linspace(0, n - 1, min(n, fft_tiles))).astype(int))
    rest = np.setdiff1d(np.arange(n), measured)
    for a in (measured, rest):
        a.setflags(write=False)
    return frozenset(measured.tolist()), measured, rest


def _reference_power(s: np.ndarray) -> np.ndarray:
    """[n, t, t/2 + 1] float32: ``|FFT(s)|^2`` of reference tiles [n, t, t] on the half spectrum,
    times each column's multiplicity in the full one (:func:`.residual.spectrum_multiplicity`), as
    :func:`.kernels.spectral_power` takes it."""
    f = scipy.fft.rfft2(s)
    return ((f.real**2 + f.imag**2) * spectrum_multiplicity(s.shape[-1])).astype(np.float32)


@dataclass(frozen=True)
class FingerprintMeasurement:
    """Raw statistics of one check (for evaluation and the heat map)."""

    pce: float  # overall, signed (negative: anti-correlated)
    tile_pce: np.ndarray  # [N]
    gain: float  # how strongly the fingerprint is present (1 ~ as at enrolment)
    mismatch_z: np.ndarray  # [N, h, w] one-sided z of "weaker here than predicted"; 0 where unknown
    cell: int
    cell_z: np.ndarray | None = None  # [N, h, w] the same test per single cell (noisier; for the peak)

    def peak(self) -> tuple[int, int, int]:
        """(tile, cell row, cell column) of the strongest mismatch: the best 3x3-cell window,
        then within it the single cell that falls furthest below the prediction (the window
        smooths the map for detection; this puts the point back inside the region)."""
        n, yy, xx = (int(v) for v in np.unravel_index(int(np.argmax(self.mismatch_z)), self.mismatch_z.shape))
        if self.cell_z is None or self.mismatch_z[n, yy, xx] <= 0:
            return n, yy, xx
        h, w = self.cell_z.shape[1:]
        y0, x0 = max(yy - 1, 0), max(xx - 1, 0)
        win = self.cell_z[n, y0 : min(yy + 2, h), x0 : min(xx + 2, w)]
        dy, dx = (int(v) for v in np.unravel_index(int(np.argmax(win)), win.shape))
        return n, y0 + dy, x0 + dx


class FingerprintCheck:
    """Does this image carry the enrolled detector's fingerprint, everywhere?

    ``present_pce``: below it the fingerprint is absent. Under "no fingerprint" the zero-lag PCE is
    ~chi^2(1) (alignment is known: same detector, native grid), so 50 is ~1e-12 false "present";
    authentic simulated images score 10^3-10^5 (docs/forensics.md). ``local_z``: a 3x3-cell window
    whose correlation falls this many standard errors below ``1 - tolerance`` of the prediction is a
    local mismatch. The operating point (tolerance 0.5, z 8) was chosen on calibration panels kept
    apart from the evaluation ones: 0 of 500 authentic images alarmed, 92 % of splices/copy-moves
    did (docs/forensics.md has the test figures).
    ``min_intact``: clipped (saturated or empty) pixels carry no pattern, so the local map leaves out
    the 4x4 blocks around them, not whole cells; a cell is judged when at least this share of its
    blocks is left. ``model_error``: the predictor is ``rel / mean enrolment weight``; above 1 it
    says the enrolment images were noisy there (dense anatomy, few quanta), where the fingerprint
    holds a different mix of gain and offset (1/quanta) pattern than a calmer test image carries.
    Measured on calibration panels, the per-cell correlation of authentic images then scatters by
    ~0.13 * sqrt(predictor - 1) of the prediction; the tolerance absorbs most of that, and the
    standard error gets ``model_error * sqrt(predictor - 1) * prediction`` on top (per cell,
    independent between cells). ``min_intact`` and ``model_error`` were chosen on calibration panels
    301-303 and 311-316, never on the evaluation's panels or seeds (``python -m
    benchmarks.eval_forensics --only calibration``: 1350 authentic images, 360 splices/copy-moves):
    0.03 is the smallest of 0.02 / 0.03 / 0.05 that keeps every authentic window below z 5 (max 3.4;
    17.8 and 1.3 % alarmed without it).
    ``weak_gain``: an image carrying the pattern at less than this fraction of its enrolled strength
    was processed after acquisition (JPEG q90 leaves ~15 %).
    ``placement``: an image of another size than the detector's, or one without the pattern at the
    native position, is searched for at every crop position, rotation and mirror of the detector's
    frame (:mod:`.placement`); if found there it is checked there, with a ``fingerprint.placed``
    reason and its map and points in the image's own coordinates. ``binnings``: the same search on
    the fingerprint binned by each factor (:meth:`.Fingerprint.binned`), for consoles that deliver
    2 x 2 binned images; a binned image is checked for the pattern's presence and strength only (its
    local map is not made: a region holds a quarter of the pixels, too few to tell a pasted one,
    docs/forensics.md). Images of another size that are not found are not judged (a scaled image
    cannot be told from another detector's).

    PCE: per tile, the zero-lag correlation squared over the mean squared correlation at all other
    lags, the latter from the tile's cross-spectrum (FFT, Parseval). The FFT runs on ``fft_tiles``
    evenly spread tiles; they calibrate the white-noise variance model (factor ``kappa``: blur and
    residual anatomy correlate the noise) that gives the other tiles' energy. Overall PCE is
    ``(sum of zero-lag values)^2 / (sum of energies)``: tiles are (nearly) independent."""

    def __init__(self, fingerprint: Fingerprint, present_pce: float = 50.0, local_z: float = 8.0,
                 cell: int = 32, tile: int = 256, max_tiles: int = 64, tolerance: float = 0.5,
                 weak_gain: float = 0.5, fft_tiles: int = 16, min_intact: float = 0.5,
                 model_error: float = 0.03, placement: bool = True, binnings: tuple[int, ...] = (2,)) -> None:
        if (present_pce <= 0 or local_z <= 0 or not 0.0 <= tolerance < 1.0 or cell % WB or tile % cell
                or not 0.0 < min_intact <= 1.0 or model_error < 0 or any(int(b) != b or b < 2 for b in binnings)):
            raise ForensicsError(f"present_pce and local_z must be positive, tolerance in [0, 1), min_intact in "
                                 f"(0, 1], model_error >= 0, binnings whole numbers >= 2, the cell a multiple of "
                                 f"{WB} px and the tile a multiple of the cell (got cell {cell}, tile {tile})")
        # a binned frame under two cells of the check on a side could not be checked: not searched
        self.binnings = tuple(int(b) for b in binnings if min(fingerprint.shape) // int(b) >= max(2 * cell, 16))
        self.tolerance = tolerance
        self.min_intact = min_intact
        self.model_error = model_error
        self.weak_gain = weak_gain
        self.fft_tiles = max(1, fft_tiles)
        # threads for the tiles' chunks (at most the machine's two): 1 when the check runs on a
        # thread of its own beside the model's inference (Evidence.run_beside_model)
        self.threads = _THREADS
        self.fingerprint = fingerprint
        self.present_pce = present_pce
        self.local_z = local_z
        self.cell = cell
        self.tile = tile
        self.max_tiles = max_tiles
        self._cache_key: tuple[tuple[int, int], ...] | None = None
        self._cache: tuple[np.ndarray, ...] | None = None
        self.placement = placement
        self._searches: dict[int, PlacementSearch] = {}  # by binning
        self._recent: Placement | None = None
        self._subs: dict[tuple[int, int, int, int, int], FingerprintCheck] = {}
        # Compile the kernels now, not on the first image (about a second; cached on disk). Imported
        # here: numba costs ~0.15 s and ~60 MB to import, which only a device with a fingerprint pays.
        try:
            from .kernels import warm_up

            warm_up()
        except ImportError as exc:
            raise ForensicsError(f"the fingerprint check needs numba ({exc}): pip install numba, or leave "
                                 "forensics.fingerprint out of the config") from None
        except Exception as exc:  # numba/LLVM refusing this CPU or platform: say so at start-up, not per image
            raise ForensicsError(f"the fingerprint check's kernels did not compile on this machine "
                                 f"({type(exc).__name__}: {exc}); leave forensics.fingerprint out of the config "
                                 "until numba supports it") from None

    def check(self, frame: np.ndarray, tiles: np.ndarray | None = None,
              origins: Sequence[tuple[int, int]] | None = None, declared: Placement | None = None,
              modality: str = "") -> LayerFinding:
        """The layer's finding: score in [0, 1], reasons, and a per-tile mismatch heat map.

        An image whose size differs from the detector's, or which lacks the fingerprint where it
        should be, is looked for at every crop position, rotation and mirror of the detector's frame
        (:mod:`.placement`, unless ``placement`` is off); once placed it is checked there.
        ``declared``: where the image's header says it lies (DICOM Field of View, PS3.3
        C.8.11.4.1.1; :func:`.placement.declared_placement`), tried before any search; pixels that
        lie elsewhere get a ``fingerprint.header_placement_differs`` note. ``modality``: the image's
        DICOM Modality; an image of another modality than the enrolled one is not searched for the
        pattern (``fingerprint.other_modality``: a CT series on a DX device would pay the placement
        search per slice), unless it has the detector's own frame size: the header is the sender's
        word, and relabelling a forged frame must not switch the check off."""
        enrolled, claimed = self.fingerprint.modality.strip().upper(), modality.strip().upper()
        h, w = self.fingerprint.shape
        if enrolled and claimed and claimed != enrolled and tuple(frame.shape) not in ((h, w), (w, h)):
            return LayerFinding("fingerprint", None, (Reason(
                "fingerprint.other_modality", f"not checked: the image is modality {claimed}, the fingerprint is of "
                f"this device's {enrolled} detector"),))
        at = list(origins) if origins is not None else self._origins(frame)
        tile = int(tiles.shape[-1]) if tiles is not None else self.tile  # the caller's tiles, for the heat map
        at_header = None
        if declared is not None and not declared.as_acquired(self.fingerprint.shape) and self.placement:
            at_header = self._measure_placed(frame, at, tile, declared, "where its header's Field of View places it")
            if at_header is not None and not _weak(at_header):
                self._recent = declared
                return at_header
            # Weak there: a lossy copy of that cut, or a header one pixel off (a 1-based origin). The
            # residual still correlates with the pattern one pixel diagonally away, weakly: the
            # search below decides which.
        finding = self._check(frame, tiles, origins, at, tile)
        codes = finding.flagged_codes
        found: Placement | None
        if "fingerprint.placed" in codes:
            found = self._recent
        elif finding.score is not None and "fingerprint.absent" not in codes:
            found = Placement(ORIENTATIONS[0], 0, 0, *self.fingerprint.shape, math.nan, math.nan, 1)
        else:
            found = None  # not this detector's pattern anywhere: nothing to compare the header with
        if at_header is not None and declared is not None and (found is None or found.same_place(declared)):
            self._recent = declared  # no better place than the header's: the pattern is weak there
            return at_header
        if declared is not None and found is not None and not found.same_place(declared):
            where = found.describe(self.fingerprint.shape)
            finding = LayerFinding("fingerprint", finding.score, finding.reasons + (Reason(
                "fingerprint.header_placement_differs",
                f"the header places the image at {declared.describe(self.fingerprint.shape)}, its pixels carry the "
                f"detector's pattern {where}: the header was written for another cut of the image"),), finding.heat)
        return finding

    def _check(self, frame: np.ndarray, tiles: np.ndarray | None, origins: Sequence[tuple[int, int]] | None,
               at: list[tuple[int, int]], tile: int) -> LayerFinding:
        if tuple(frame.shape) != self.fingerprint.shape:
            placed, tried = self._check_placed(frame, at, tile)
            if placed is not None:
                return placed
            if tried is not None and tuple(frame.shape[::-1]) == self.fingerprint.shape:
                # the detector's whole frame turned a quarter, in none of its orientations: as absent
                # as an image of the native size (the search's PCE is the same chi-square statistic)
                return LayerFinding("fingerprint", self._absent(tried.pce), (Reason(
                    "fingerprint.absent", f"the image does not carry this detector's fingerprint in any rotation or "
                    f"mirror of its frame (best PCE {tried.pce:.1f}, needs {tried.threshold:.0f})"),))
            also = "" if tried is None else (
                f"; its pixels match the detector's frame {tried.describe(self.fingerprint.shape)} (PCE "
                f"{tried.pce:.0f}), but the check there could not confirm it: a region under two {self.cell}-pixel "
                "cells on a side, or the pattern too weak there") if tried.found else (
                f"; no crop position, rotation or mirror of its frame matches either (best PCE {tried.pce:.1f}, "
                f"needs {tried.threshold:.0f}): too small a crop, an image scaled other than by binning "
                f"{' or '.join(f'{b}x{b}' for b in self.binnings) or '(none searched)'}, or another detector's")
            return LayerFinding("fingerprint", None, (Reason(
                "fingerprint.geometry_mismatch",
                f"image is {frame.shape[0]}x{frame.shape[1]} pixels, this detector makes "
                f"{self.fingerprint.shape[0]}x{self.fingerprint.shape[1]}: not checked at the native grid{also}"),))
        m = self.measure(frame, tiles, origins)
        tried = None
        if m.pce < self.present_pce:
            placed, tried = self._check_placed(frame, at, tile)
            if placed is not None:
                return placed
        score, reasons = self._judge(m, at, lambda r, c: (r, c))
        if tried is not None and reasons and reasons[0].code == "fingerprint.absent":
            reasons[0] = Reason("fingerprint.absent", reasons[0].message + (
                f"; nor rotated, mirrored or shifted (best PCE {tried.pce:.1f}, needs {tried.threshold:.0f})"))
        return LayerFinding("fingerprint", score, tuple(reasons), self._heat(m))

    def _heat(self, m: FingerprintMeasurement) -> np.ndarray | None:
        # The map says where the pattern is missing in an image that carries it; in an image without
        # it (another detector) "missing everywhere" is the finding, and the map would paint it all.
        if m.pce < self.present_pce or math.isinf(self.local_z):
            return None
        return np.clip(m.mismatch_z / (2 * self.local_z), 0.0, 1.0).astype(np.float32)

    def _absent(self, pce: float) -> float:
        """How strongly a PCE says "not this detector" (0.5 at half the threshold's square root)."""
        return logistic(math.copysign(math.sqrt(abs(pce)), pce), math.sqrt(self.present_pce) * 0.7, -1.5)

    def _judge(self, m: FingerprintMeasurement, origins: Sequence[tuple[int, int]],
               point: Callable[[int, int], tuple[int, int]]) -> tuple[float, list[Reason]]:
        """Score and reasons from a measurement; ``point`` maps a pixel of the measured frame to
        the image (the identity unless the image was placed)."""
        absent = self._absent(m.pce)
        reasons: list[Reason] = []
        local = weakened = 0.0
        if m.pce < self.present_pce:
            reasons.append(Reason("fingerprint.absent", f"the image does not carry this detector's fingerprint "
                                  f"(PCE {m.pce:.1f}, authentic images exceed {self.present_pce:.0f})"))
        else:
            weakened = logistic(m.gain, self.weak_gain * 0.7, -20.0)
            if m.gain < self.weak_gain:
                reasons.append(Reason("fingerprint.weakened", (
                    f"the detector's fingerprint is present at only {100 * m.gain:.0f} % of its enrolled strength: "
                    "the image was re-encoded lossily or filtered after it left the detector")))
            zmax = float(m.mismatch_z.max()) if m.mismatch_z.size else 0.0
            local = logistic(zmax, self.local_z, 1.0)
            if zmax >= self.local_z:
                n, yy, xx = m.peak()
                oy, ox = origins[n]
                row, col = point(oy + yy * m.cell + m.cell // 2, ox + xx * m.cell + m.cell // 2)
                reasons.append(Reason("fingerprint.local_mismatch", (
                    f"the detector's fingerprint is missing around row {row}, column {col} ({zmax:.1f} standard "
                    "errors below the prediction): that region was likely pasted or moved")))
        return float(max(absent, local, weakened)), reasons

    def _check_placed(self, frame: np.ndarray, origins: Sequence[tuple[int, int]], tile: int
                      ) -> tuple[LayerFinding | None, Placement | None]:
        """(finding, the searches' best placement) for an image that is not the detector's frame as
        acquired: the last placement is tried first (a device that always crops, turns or bins its
        images the same way pays the search once, unless the pattern is weak there: then the search
        tells a lossy copy of that cut from a cut a pixel away), then the search at the native grid
        and at each binning the image fits. ``(None, best)`` when it is not placed."""
        if not self.placement:
            return None, None
        recent, tried, weak = self._recent, None, None
        if recent is not None and recent.orientation.turned_shape(recent.turned_back_shape) == frame.shape:
            finding = self._measure_placed(frame, origins, tile, recent, "checked at that position")
            if finding is not None and not _weak(finding):
                return finding, None
            weak = finding
        # Weak at the remembered cut: the pattern is there, so the orientation and binning are right
        # (turned or binned otherwise it would not correlate at all); only the offset is in question,
        # and one orientation at one binning is searched (an eighth of the full search, or less).
        searches = [(recent.binning, (recent.orientation,))] if weak is not None and recent is not None else [
            (b, ORIENTATIONS) for b in (1, *self.binnings)]
        # the frame's residual, computed once for the searches at every binning
        residual = functools.cache(lambda: search_residual(frame, self.fingerprint.model == "multiplicative"))
        for b, turns in searches:
            best = self._searcher(b).search(frame, turns, residual)  # None: larger than the (binned) detector
            if best is None:
                continue
            if tried is None or best.pce / best.threshold > tried.pce / tried.threshold:
                tried = best
            if not best.found or best.as_acquired(self.fingerprint.shape) or (
                    recent is not None and best.same_place(recent)):
                continue
            finding = self._measure_placed(frame, origins, tile, best, "checked at that position")
            if finding is not None:
                self._recent = best
                return finding, best
        return (weak, None) if weak is not None else (None, tried)

    def _measure_placed(self, frame: np.ndarray, origins: Sequence[tuple[int, int]], tile: int,
                        p: Placement, how: str) -> LayerFinding | None:
        """The check of ``frame`` turned back and laid on the detector at ``p``; ``None`` when the
        fingerprint is not present there after all (the native verdict stands). A binned placement
        (from a header or remembered) counts only at a binning this check searches, and needs the
        binned search's margin (:func:`.placement.threshold_margin`): a header cannot claim a binning
        whose null was never calibrated."""
        if p.binning > 1 and p.binning not in self.binnings:
            return None
        sub = self._sub_check(p)
        if sub is None:
            return None
        det = np.ascontiguousarray(p.orientation.to_detector(frame))
        if det.shape != sub.fingerprint.shape:
            return None
        sub_tiles, sub_origins = grid_tiles(det, sub.tile, self.max_tiles)
        m = sub.measure(det, sub_tiles, sub_origins)
        if m.pce < self.present_pce * threshold_margin(p.binning):
            return None
        score, reasons = sub._judge(m, sub_origins, lambda r, c: p.orientation.point_to_image(r, c, det.shape))
        local = "" if p.binning == 1 else "; the local check is not made on binned images"
        reasons.insert(0, Reason("fingerprint.placed", (
            f"the image is this detector's frame, {p.describe(self.fingerprint.shape)} (PCE {m.pce:.0f} there); "
            f"{how}{local}")))
        heat = None
        if (h := sub._heat(m)) is not None:
            full = p.orientation.to_image(tiles_to_full(h, sub_origins, sub.tile, det.shape, 0.0))
            heat = full_to_tiles(np.ascontiguousarray(full), origins, tile, self.cell)
        return LayerFinding("fingerprint", score, tuple(reasons), heat)

    def _searcher(self, binning: int = 1) -> PlacementSearch:
        if binning not in self._searches:
            self._searches[binning] = PlacementSearch(self.fingerprint.pattern, self.fingerprint.model == "multiplicative",
                                                      min_pce=self.present_pce, binning=binning)
        return self._searches[binning]

    def _sub_check(self, p: Placement) -> FingerprintCheck | None:
        """A check of the detector's region under ``p`` (cached: one device keeps one habit), on
        tiles no larger than the region; ``None`` for a region under two cells on a side. Binned:
        the region's fingerprint binned alike, without the local map."""
        key = (p.row, p.col, p.height, p.width, p.binning)
        tile = min(self.tile, min(p.turned_back_shape) // self.cell * self.cell)
        if tile < 2 * self.cell or min(p.turned_back_shape) < 16:
            return None
        sub = self._subs.pop(key, None)
        if sub is None:
            fp = self.fingerprint.cropped(p.row, p.col, p.height, p.width).binned(p.binning)
            if p.binning > 1:  # the search's pattern (binned_high_pass), so the check's PCE has its null
                fp = replace(fp, pattern=binned_high_pass(fp.pattern), scale=0.0)
            sub = FingerprintCheck(fp, self.present_pce, self.local_z if p.binning == 1 else math.inf, self.cell,
                                   tile, self.max_tiles, self.tolerance, self.weak_gain, self.fft_tiles,
                                   self.min_intact, self.model_error, placement=False)
            sub.threads = self.threads
        self._subs[key] = sub
        while len(self._subs) > 4:
            self._subs.pop(next(iter(self._subs)))
        return sub

    def _origins(self, frame: np.ndarray) -> list[tuple[int, int]]:
        return grid_origins(frame.shape[0], frame.shape[1], self.tile, self.max_tiles)

    def measure(self, frame: np.ndarray, tiles: np.ndarray | None = None,
                origins: Sequence[tuple[int, int]] | None = None) -> FingerprintMeasurement:
        if tiles is None or origins is None:
            tiles, origins = grid_tiles(frame, self.tile, self.max_tiles)
        x = tiles[:, 0] if tiles.ndim == 4 else tiles
        n, t = x.shape[0], x.shape[-1]
        if x.shape[-2:] != (t, t) or t % self.cell or any(
                y + t > self.fingerprint.shape[0] or xo + t > self.fingerprint.shape[1] for y, xo in origins):
            raise ForensicsError(f"tiles {x.shape} at the given origins do not fit the {self.fingerprint.shape} "
                                 f"fingerprint (tile must be a multiple of the {self.cell}-pixel cell)")
        from .kernels import spectral_power, tile_stats, weighted_block_correlation, weighted_residual

        ktiles, kpower, rel_cell = self._reference(tuple(origins), t)
        c = self.cell
        g = t // c
        peak = np.empty(n, np.float64)
        energy = np.empty(n, np.float64)
        num = np.empty((n, g, g), np.float64)
        den = np.empty((n, g, g), np.float64)
        pred_den = np.empty((n, g, g), np.float64)
        varden = np.empty((n, g, g), np.float64)
        usable = np.empty((n, g, g), bool)
        num_l, pred_l, var_l = (np.empty((n, g, g)) for _ in range(3))
        mult = self.fingerprint.model == "multiplicative"
        fft_set, measured, rest = _fft_subset(n, self.fft_tiles)
        threads = max(1, min(self.threads, _THREADS))
        parallel = threads > 1 and n >= _PARALLEL_TILES
        parts = -(-n // _CHUNK) if parallel else 1
        parts += -parts % threads if parallel else 0  # as many chunks for each thread, of even size
        chunk = -(-n // parts)

        def one_chunk(s: int) -> None:
            xs = x[s : s + chunk]
            sl = slice(s, s + len(xs))
            # which of these tiles get the FFT (their residual is kept)
            sub = [i for i in range(len(xs)) if s + i in fft_set]
            want = np.zeros(len(xs), bool)
            want[sub] = True
            st = tile_stats(xs, ktiles[sl], mult, want)
            om, local = wiener_weight(st.energy), st.energy
            ws4, row_mean, col_mean = weighted_block_correlation(st, om)  # correlation per 4x4 block
            sig2 = st.ss  # block sums of the reference squared (k, or k * x when multiplicative)
            den[sl] = cells(sig2, c // WB)
            # Cross-correlation in the DFT domain, on an evenly spread subset of tiles: the zero-lag
            # value is sum(W*S); the energy of the whole correlation surface follows from Parseval as
            # sum |FFT(W)|^2 |FFT(S)|^2 (no inverse FFT, no product spectrum). It calibrates the
            # white-noise model for every tile (kappa below).
            power = None
            if sub:
                w = weighted_residual(st, om, row_mean, col_mean, sub)  # these tiles only
                kpow = _reference_power(xs[sub] * ktiles[sl][sub]) if mult else kpower[sl][sub]
                power = spectral_power(scipy.fft.rfft2(w), kpow)
            # what an authentic image with this residual weighting would correlate, per cell
            pred_den[sl] = cells((om * sig2).astype(np.float32), c // WB)
            num[sl] = cells(ws4, c // WB)
            peak[sl] = num[sl].sum(axis=(1, 2))
            # per-pixel variance of the weighted residual per cell, from the 4x4 block statistics
            varden[sl] = cells((om * om * local).astype(np.float32), c // WB) / ((c // WB) ** 2) * den[sl]
            # the local map: the same sums over the 4x4 blocks that clipping left intact
            intact = intact_blocks(st.clipped) if st.clipped.any() else None
            v = np.ones_like(om) if intact is None else intact.astype(np.float32)
            num_l[sl] = num[sl] if intact is None else cells(ws4 * v, c // WB)
            pred_l[sl] = pred_den[sl] if intact is None else cells((om * sig2 * v).astype(np.float32), c // WB)
            usable[sl] = cells(v, c // WB) >= self.min_intact * (c // WB) ** 2
            var_l[sl] = cells((om * om * local * sig2 * v).astype(np.float32), c // WB)
            if power is not None:
                energy[sl][sub] = background_energy(power, peak[sl][sub], t)

        # Chunks write disjoint slices of the arrays above, and the kernels, numpy and pocketfft
        # release the GIL in their loops: two threads, like the model's own two, cut the wall time
        # on a 2-core device once there are enough tiles (_PARALLEL_TILES) for each thread.
        starts = range(0, n, chunk)
        if parallel and len(starts) > 1:
            list(_pool().map(one_chunk, starts))
        else:
            for s0 in starts:
                one_chunk(s0)
        model_var = np.maximum(varden.sum(axis=(1, 2)), 1e-30)
        # correlation noise measured off-peak vs the white-noise model: the inflation factor
        kappa = np.sqrt(energy[measured] / model_var[measured])
        k_inf = float(np.median(kappa))
        energy[rest] = k_inf**2 * model_var[rest]
        tile_pce = np.sign(peak) * peak**2 / energy
        total_peak = float(peak.sum())
        overall = math.copysign(total_peak**2, total_peak) / float(energy.sum())
        # how strongly this image carries the pattern, relative to the enrolment's prediction
        pred = rel_cell * pred_den
        tile_gain = num.sum(axis=(1, 2)) / np.maximum(pred.sum(axis=(1, 2)), 1e-30)
        gain = float(np.median(tile_gain))
        usable &= rel_cell > 0
        pred_l *= rel_cell
        # predictor error (see the class docstring): relative sd model_error * sqrt(predictor - 1)
        model_sd = self.model_error * np.sqrt(np.maximum(rel_cell - 1.0, 0.0)) * gain * pred_l
        z, zc = self._mismatch(num_l, pred_l, var_l, model_sd, usable, gain, k_inf)
        return FingerprintMeasurement(pce=overall, tile_pce=tile_pce, gain=gain, mismatch_z=z.astype(np.float32),
                                      cell=c, cell_z=zc.astype(np.float32))

    def _mismatch(self, num: np.ndarray, pred: np.ndarray, var: np.ndarray, model_sd: np.ndarray, usable: np.ndarray,
                  gain: float, k_inf: float) -> tuple[np.ndarray, np.ndarray]:
        """One-sided z of "weaker than predicted" per 3x3-cell window (stride one cell) and per cell,
        from per-cell correlation, prediction, noise variance and predictor error (Chen et al. 2008
        sec. V, with the standard error of the correlation in place of a trained error model)."""
        u = usable.astype(np.float64)
        model_var = (model_sd * u) ** 2
        # 3x3-cell window sums of the five maps in one filter call (each line is filtered on its own,
        # so stacking them gives the same values as five calls, without four calls' overhead)
        box_var, box_model, pred_w, box_num, box_u = ndimage.uniform_filter(
            np.stack((var * u, model_var, pred * u, num * u, u)), size=(1, 1, 3, 3), mode="constant") * 9
        # sampling noise (kappa-inflated) and predictor error, the latter independent from cell to cell
        se = np.sqrt(np.maximum(k_inf**2 * box_var + box_model, 1e-30))
        # The predictor is good to ~+-20 % (simulator, 5-95 %), the statistics to a few %: test
        # "significantly below half the prediction", so model error is not taken for evidence.
        z = ((1.0 - self.tolerance) * gain * pred_w - box_num) / se
        ok = (box_u >= 6) & (pred_w > 0) & usable
        z = np.where(ok, np.maximum(z, 0.0), 0.0)
        zc = ((1.0 - self.tolerance) * gain * pred - num) / np.sqrt(np.maximum(k_inf**2 * var + model_var, 1e-30))
        zc = np.where(usable & (pred > 0), zc, -np.inf)
        return z, zc

    def _reference(self, origins: tuple[tuple[int, int], ...], t: int) -> tuple[np.ndarray, ...]:
        """Fingerprint tiles, their power spectra (:func:`_reference_power`) and the predictor per
        cell for these origins; cached, since one detector keeps producing one geometry."""
        key = origins + ((t, self.cell),)
        if self._cache_key != key or self._cache is None:
            fp = self.fingerprint
            k = np.stack([fp.pattern[y : y + t, x : x + t] for y, x in origins]).astype(np.float32)
            kpower = _reference_power(k)
            g = t // self.cell
            rel = np.empty((len(origins), g, g), np.float64)
            for i, (y, x) in enumerate(origins):
                cy = (y + (np.arange(g) + 0.5) * self.cell) // _REL_BLOCK
                cx = (x + (np.arange(g) + 0.5) * self.cell) // _REL_BLOCK
                rel[i] = fp.predictor[np.ix_(cy.astype(int), cx.astype(int))]
            self._cache_key, self._cache = key, (k, kpower, rel)
        return self._cache


def _weak(finding: LayerFinding) -> bool:
    """The pattern is there, but at under ``weak_gain`` of its enrolled strength."""
    return "fingerprint.weakened" in finding.flagged_codes
