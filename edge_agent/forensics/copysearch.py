"""Copy search: a region whose noise residual repeats at another place of the same image.

Copy-move forgery, and the "noise touch-up" that pastes real noise from elsewhere onto an edit so
that its noise level looks right, both leave one mark that no tile-by-tile detector can see: the
pasted region's noise residual is a copy of another region's (docs/tamper-evidence.md: 46 % of the
tamper family carries it, and the tile network scores those at chance). Sensor noise never repeats
by itself, so a repeat is evidence of copying, whatever the content.

Method (block-wise cross-correlation of the whitened residual, in the spirit of exhaustive
block matching for copy-move, Fridrich, Soukal & Lukas, DFRWS 2003, and of the peak-to-correlation
energy decision of sensor forensics, Goljan, Fridrich & Filler 2009):

1. residual = 4-neighbour high-pass (:func:`.residual.laplacian`) divided by its local RMS, with
   clipped and constant areas set to 0 (they carry no noise); then its spectrum is flattened and
   periodic lines (anti-scatter grid, JPEG 8x8 blocks, row/column patterns: spectral bins over 6x
   their neighbourhood) are removed, so only aperiodic noise is left;
2. the image is cut into about 8 x 8 blocks; each block's residual is correlated with the whole
   image's residual at every shift (one FFT pair per block, circular);
3. per block, the best shift outside the block's own neighbourhood, as a normalised correlation,
   and its **lead**: how far it stands above the runner-up shift, in units of the RMS of all the
   block's correlations (a copy has one source, so one peak; the peak-to-correlation-energy idea
   of sensor forensics, made two-sided against repeated structure). A line of high correlation
   along one axis (structure constant along that axis: collimator edges, row and column noise) is
   subtracted first, since a copy shows as a single point; JPEG's identical 8x8 blocks in flat
   areas and other repeated structure give many equal peaks, hence no lead;
4. the image statistic is the largest lead; shifts that win in many blocks at once are periodic
   structure left by step 1, not a copy, and are dropped;
5. the map: the local correlation of the residual with itself at the winning shift marks both the
   copy and its source (which is which cannot be told from the pixels).

Cost: one FFT pair per block, about 64 blocks: seconds per radiograph on a 2-core CPU, far more
than the other layers (benchmarks/bench_copysearch.py). The layer is therefore off by default
(``forensics.copy_search``) and meant for images without an enrolled fingerprint, or as an
on-demand check of an image already flagged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ..tiling import full_to_tiles
from ..verdict import Reason
from .finding import LayerFinding, logistic
from .residual import laplacian

__all__ = ["BlockPeak", "CopySearch", "whitened_residual", "block_size", "block_count", "block_peaks", "strongest", "copy_map"]

MIN_SIDE = 128        # smaller images have too little residual to tell a copy from chance
FLAT = 0.05           # local residual RMS under this share of the image's median: clipped/constant
MIN_SHIFT = 32        # shifts closer than this (both axes) are the residual's own neighbourhood (a
                      # lesion-sized copy moved by less would overlap itself)
NOTCH = 6.0           # spectral bins above NOTCH x their neighbourhood's mean power are periodic lines
PERIODIC_SHARE = 0.25 # a shift that wins in more than this share of blocks (and > 4) is periodic structure
CANDIDATES = 256      # largest correlations per block examined for a line through them
LINE_STEP = 4         # pixels either side of a shift where a line of correlation is read (_isolated_best)
CENTRE = 8.0          # decision point on the lead: above every validation real (max 7.0 of 946;
                      # benchmarks/eval_copysearch.py, docs/forensics.md section 4)
STEEPNESS = 2.0       # a real at the validation maximum adds 0.7 logits at the default weight


@dataclass(frozen=True)
class BlockPeak:
    """The best repeat of one block: block origin and side, shift ``(dy, dx)`` (circular, so
    ``-d`` is ``shape - d``), normalised correlation, and its lead over the runner-up shift in
    units of the RMS over all shifts."""

    y: int
    x: int
    size: int
    dy: int
    dx: int
    corr: float
    lead: float


def whitened_residual(frame: np.ndarray) -> np.ndarray:
    """Step 1: the residual with a flat spectrum, no periodic lines, unit RMS, and 0 where the image
    is clipped or constant (float32)."""
    r = laplacian(frame)
    rms = np.sqrt(np.maximum(ndimage.uniform_filter(r * r, 9), 0.0))
    # clipped or constant areas (collimator shadow, saturation, padding) carry no noise: left out,
    # with a margin, so the spectral flattening's ringing along their edges is not taken for noise
    live = ndimage.binary_erosion(rms > FLAT * np.median(rms), iterations=4)
    r = np.where(live, r / np.maximum(rms, 1e-12), 0.0).astype(np.float32)
    r[live] -= r[live].mean() if live.any() else 0.0
    spec = sfft.rfft2(r, workers=-1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    local = ndimage.uniform_filter(power, 15, mode="wrap")
    gain = 1.0 / np.sqrt(local + 1e-12)
    gain[power > NOTCH * local] = 0.0
    out = np.where(live, sfft.irfft2(spec * gain, s=r.shape, workers=-1), 0.0).astype(np.float32)
    scale = float(np.sqrt(np.mean(out[live] ** 2))) if live.any() else 0.0
    return out / scale if scale > 0 else out  # unit RMS over the live area


def block_size(shape: tuple[int, int]) -> int:
    """About 8 blocks along the longer side, a multiple of 32, at least 64 pixels."""
    return max(64, 32 * int(np.ceil(max(shape) / 8 / 32)))


def block_count(shape: tuple[int, int]) -> int:
    """How many blocks (one FFT pair each) the search correlates for an image of ``shape``."""
    b = block_size(shape)
    return len(_origins(shape[0], b)) * len(_origins(shape[1], b))


def _origins(n: int, b: int) -> list[int]:
    """Block starts covering ``[0, n)``; the last block is aligned to the edge."""
    starts = list(range(0, max(n - b, 0) + 1, b))
    if starts[-1] + b < n:
        starts.append(n - b)
    return starts


def block_peaks(r: np.ndarray, size: int) -> list[BlockPeak]:
    """Steps 2-3 on a whitened residual: each block's best repeat elsewhere in the image.

    Each block is transformed in place at the origin, so its correlation ``c'`` is indexed by the
    block's new top-left corner ``t = block origin + shift``; the energy under the block there is
    one integral-image lookup per corner, shared by all blocks."""
    h, w = r.shape
    spec = sfft.rfft2(r, workers=-1)
    sq = np.pad((r * r).astype(np.float64), ((0, size), (0, size)), mode="wrap")
    s = np.zeros((sq.shape[0] + 1, sq.shape[1] + 1))
    s[1:, 1:] = sq.cumsum(0).cumsum(1)
    box = s[size:size + h, size:size + w] - s[:h, size:size + w] - s[size:size + h, :w] + s[:h, :w]
    full = size * size  # unit RMS: the energy of a block of live residual
    # 1 / sqrt(energy under the block at each corner), 0 where the block would lie mostly on
    # clipped or constant areas (a ratio there is ill-conditioned)
    inv = np.where(box > 0.25 * full, 1.0 / np.sqrt(np.maximum(box, 1e-12)), 0.0).astype(np.float32)
    live = max(int(np.count_nonzero(inv)), 1)
    k = MIN_SHIFT
    peaks = []
    for y in _origins(h, size):
        for x in _origins(w, size):
            blk = r[y:y + size, x:x + size]
            energy = float(np.vdot(blk, blk))
            if energy < 0.25 * full:  # mostly clipped or constant: nothing to match
                continue
            c = sfft.irfft2(np.conj(sfft.rfft2(blk, s=(h, w), workers=-1)) * spec, s=(h, w), workers=-1)
            c *= inv
            c /= np.sqrt(energy)
            rows, cols = np.arange(y - k + 1, y + k) % h, np.arange(x - k + 1, x + k) % w
            c[np.ix_(rows, cols)] = 0.0                          # the block's own neighbourhood
            rms = float(np.sqrt(np.vdot(c, c) / live))          # over the corners where c is defined
            t = _isolated_best(c)
            if t is None:
                continue
            ty, tx, value, second = t
            peaks.append(BlockPeak(y, x, size, (ty - y) % h, (tx - x) % w,
                                   value, (value - second) / (rms + 1e-12)))
    return peaks


def _isolated_best(c: np.ndarray, candidates: int = CANDIDATES, step: int = LINE_STEP
                   ) -> tuple[int, int, float, float] | None:
    """The best of the ``candidates`` largest correlations after subtracting what a line through
    each holds: structure constant along one axis (collimator edges, row and column noise, padding)
    correlates with every shift along that axis, so its correlation forms a line of high values,
    where a copy is a single point. At a shift, the smaller of the two values ``step`` pixels
    either side along y, and the same along x, are the line's level there; the larger of the two
    is subtracted. Returns the winner's corner, its value and the runner-up's value."""
    h, w = c.shape
    flat = c.ravel()
    top = np.argpartition(flat, -candidates)[-candidates:]
    ty, tx = np.divmod(top, w)

    def at(dy: int, dx: int) -> np.ndarray:
        return c[(ty + dy) % h, (tx + dx) % w]

    line = np.maximum(np.minimum(at(step, 0), at(-step, 0)), np.minimum(at(0, step), at(0, -step)))
    isolated = flat[top] - np.maximum(line, 0.0)
    j = int(np.argmax(isolated))
    if isolated[j] <= 0:
        return None
    # the runner-up: the best candidate more than 2 px from the winner (a peak's own shoulder is not one)
    far = (np.minimum(np.abs(ty - ty[j]), h - np.abs(ty - ty[j])) > 2) | \
          (np.minimum(np.abs(tx - tx[j]), w - np.abs(tx - tx[j])) > 2)
    second = float(isolated[far].max()) if far.any() else 0.0
    return int(ty[j]), int(tx[j]), float(isolated[j]), max(second, 0.0)


def strongest(peaks: Sequence[BlockPeak]) -> BlockPeak | None:
    """Step 4: the block with the largest lead, shifts that win in many blocks dropped."""
    wins = Counter((p.dy, p.dx) for p in peaks)
    limit = max(4, int(PERIODIC_SHARE * len(peaks)))
    kept = [p for p in peaks if wins[(p.dy, p.dx)] <= limit]
    return max(kept, key=lambda p: p.lead) if kept else None


def copy_map(r: np.ndarray, dy: int, dx: int, window: int = 15) -> np.ndarray:
    """Step 5: local normalised correlation of the residual with itself at shift ``(dy, dx)``,
    marked at both ends of the copy, in [0, 1]."""
    moved = np.roll(r, (-dy, -dx), axis=(0, 1))                    # moved(x) = r(x + d)
    num = ndimage.uniform_filter(r * moved, window)
    den = np.sqrt(np.maximum(ndimage.uniform_filter(r * r, window) * ndimage.uniform_filter(moved * moved, window),
                             0.0)) + 1e-12
    local = np.clip(num / den, 0.0, 1.0)
    return np.maximum(local, np.roll(local, (dy, dx), axis=(0, 1))).astype(np.float32)


class CopySearch:
    """The layer: ``check(frame, tiles, origins)`` -> :class:`LayerFinding` named ``copy``."""

    def __init__(self, centre: float = CENTRE, steepness: float = STEEPNESS, cell: int = 8) -> None:
        if not (centre > 0 and steepness > 0 and cell > 0):
            raise ValueError("copy search: centre, steepness and cell must be positive")
        self.centre, self.steepness, self.cell = float(centre), float(steepness), int(cell)

    def measure(self, frame: np.ndarray) -> tuple[BlockPeak | None, np.ndarray | None]:
        """The strongest repeat and the whitened residual, zero-padded to fast FFT sizes (``None,
        None`` for too small a frame)."""
        if min(frame.shape) < MIN_SIDE:
            return None, None
        r = whitened_residual(np.asarray(frame, dtype=np.float32))
        # zero rows and columns up to sizes the FFT is fast at (a side of 1841 = 7 x 263 px took
        # several times longer); zeros are "no noise", like clipped areas, and shifts are then
        # read modulo the padded size
        h, w = r.shape
        r = np.pad(r, ((0, sfft.next_fast_len(h, real=True) - h), (0, sfft.next_fast_len(w, real=True) - w)))
        return strongest(block_peaks(r, block_size((h, w)))), r

    def check(self, frame: np.ndarray, tiles: np.ndarray | None = None,
              origins: Sequence[tuple[int, int]] | None = None) -> LayerFinding:
        peak, r = self.measure(frame)
        if r is None:
            return LayerFinding("copy", None, (Reason(
                "copy.not_judged", f"image {frame.shape[1]}x{frame.shape[0]} is under {MIN_SIDE} px on a side: "
                                   "too little noise to search for copied regions"),))
        if peak is None and not np.any(r):
            return LayerFinding("copy", None, (Reason(
                "copy.not_judged", "the image has no noise to compare (flat or clipped everywhere)"),))
        if peak is None:
            return LayerFinding("copy", 0.0, ())
        score = logistic(peak.lead, self.centre, self.steepness)
        if peak.lead < self.centre:
            return LayerFinding("copy", score, ())
        h, w = r.shape
        # both ends lie in the image (the padding holds no noise to match), so the displacement is
        # their difference; the circular shift itself, read as signed, was wrong for copies moved
        # by more than half the (padded) image
        sy, sx = (peak.y + peak.dy) % h, (peak.x + peak.dx) % w
        dy, dx = sy - peak.y, sx - peak.x
        reason = Reason("copy.duplicated_region", (
            f"the noise of the {peak.size}x{peak.size} px region at x={peak.x}, y={peak.y} repeats at "
            f"x={sx}, y={sy} (shift {dx:+d}, {dy:+d} px; correlation {peak.corr:.2f}, {peak.lead:.0f} times "
            "the background above any other shift): a copied region or pasted noise (copy-move or touch-up)"))
        heat = None
        if tiles is not None and origins is not None:
            full = copy_map(r, peak.dy, peak.dx)[: frame.shape[0], : frame.shape[1]]
            heat = full_to_tiles(full, origins, tiles.shape[-1], self.cell)
        return LayerFinding("copy", score, (reason,), heat)
