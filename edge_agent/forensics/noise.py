"""Imaging-physics consistency: does the image's noise behave like this modality's detectors?

Authentic radiographs carry quantum (Poisson) noise whose variance follows the detected signal,
plus electronic noise, both shaped by the detector's blur (Bushberg et al., *The Essential Physics
of Medical Imaging*, 3rd ed., ch. 4 and 7). In the log-transformed presentation image the quantum
noise std grows with attenuation, i.e. with grey value: ``sigma_P ~ exp(P * L / 2) / sqrt(N0)``.
Generated images often carry noise that does not follow the signal ("uniform grain", reported by
radiologists for GPT-4o radiographs, RSNA *Radiology* 2026) or too little noise ("too perfect",
"overly smooth bones").

Per image this module estimates

* the **noise level function** (NLF): noise std against local intensity, from flat blocks of a
  second-difference residual, binned by intensity (Liu, Szeliski, Kang, Zitnick & Freeman, "Noise
  estimation from a single image", CVPR 2006; the Poisson-Gaussian model of Foi, Trimeche,
  Katkovnik & Egiazarian, "Practical Poissonian-Gaussian noise modeling and fitting for
  single-image raw-data", IEEE TIP 17(10), 2008); the residual is Immerkaer's kernel ("Fast noise
  variance estimation", CVIU 64(2), 1996), the block std its median absolute value (robust to
  edges);
* its **slope** ``d ln(sigma) / d intensity`` (signal dependence);
* the **noise spectrum** of flat blocks (Welch periodogram, radial bands): detector blur makes
  authentic noise fall off towards Nyquist; synthetic white grain does not; up-sampling leaves
  peaks at Nyquist;

and tests each two-sided against a :class:`NoiseProfile` learned from authentic images of the
modality (refined on the device by :meth:`NoiseProfile.updated`), stored as small JSON.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..decode import ImageFacts
from ..errors import ForensicsError
from ..tiling import grid_tiles
from ..verdict import Reason
from .finding import LayerFinding, logistic

__all__ = ["NoiseFeatures", "NoiseProfile", "NoiseCheck", "measure_noise", "image_noise", "FEATURES"]

_BINS = 8  # intensity bins of the NLF over [0, 1]
_BLOCK = 32
_MIN_BLOCKS_PER_BIN = 3
_MAX_TILES = 6  # tiles the layer reads (half their blocks): 192 blocks of 32x32 for 16 numbers
_SPECTRUM_BLOCKS = 48
_NLF = tuple(f"nlf_{i}" for i in range(_BINS))
_SPECTRAL = ("spec_hf", "spec_mid", "spec_nyquist")
_FIT = ("quantum", "floor", "exponent", "fit_rms")
FEATURES = _NLF + ("slope",) + _FIT + _SPECTRAL
_FORMAT = "edge-agent-noise-profile"


@dataclass(frozen=True)
class NoiseFeatures:
    """What one image's noise looks like; ``None`` where the image has too few flat blocks."""

    values: Mapping[str, float | None]
    flat_blocks: int

    def __post_init__(self) -> None:
        unknown = set(self.values) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown noise features {sorted(unknown)}")


def measure_noise(tiles: np.ndarray, pick: Sequence[int] | None = None) -> NoiseFeatures:
    """Noise level function, its Poisson-Gaussian fit and the noise spectrum from tiles
    ``[N, (1,) T, T]`` (float32 grey in [0, 1]); ``pick``: read only these tiles (default all),
    gathered block by block instead of copying the tiles first."""
    blocks = _flat_blocks(tiles, pick)
    if len(blocks) < 8:  # tiles smaller than two blocks
        return NoiseFeatures({}, 0)
    sigma = _immerkaer_sigma(blocks)
    coarse = _coarse_means(blocks)
    mean = coarse.mean(axis=(1, 2))
    structure = coarse.std(axis=(1, 2)) / np.maximum(sigma, 1e-7)
    ok = sigma > 0
    # blocks with clipped pixels: the noise there is cut off (tested on the blocks read, which is
    # all the test below looks at)
    if blocks.min() <= 0.0 or blocks.max() >= 1.0:
        ok &= ~((blocks <= 0.0) | (blocks >= 1.0)).any(axis=(1, 2))
    if ok.sum() < 8:
        return NoiseFeatures({}, 0)
    flat = ok & (structure <= _median(structure[ok]))  # the flatter half (least low-frequency structure)
    values: dict[str, float | None] = dict.fromkeys(_NLF)
    bin_of = np.minimum((mean * _BINS).astype(int), _BINS - 1)
    centres, logs, weights = [], [], []
    for i, count, med_sigma, med_mean in _bin_medians(bin_of[flat], sigma[flat], mean[flat]):
        v = float(np.log(med_sigma))
        values[_NLF[i]] = v
        centres.append(float(med_mean))
        logs.append(v)
        weights.append(math.sqrt(count))
    values["slope"] = _weighted_slope(centres, logs, weights) if len(centres) >= 3 else None
    values.update(_poisson_gaussian_fit(centres, logs, weights))
    values.update(_spectrum(blocks, np.flatnonzero(flat), sigma[flat]))
    return NoiseFeatures(values, int(flat.sum()))


def _median(a: np.ndarray) -> np.floating:
    """``np.median`` of a 1-D array (the mean of the two middle values when even) by one partition,
    without ``np.median``'s checks and dispatch, which cost more than the work on ~100 values."""
    n = a.size
    part = np.partition(a, (n // 2 - (1 - n % 2), n // 2))
    return part[n // 2] if n % 2 else (part[n // 2 - 1 : n // 2 + 1]).mean()


def _bin_medians(bins: np.ndarray, sigma: np.ndarray, mean: np.ndarray) -> list[tuple[int, int, float, float]]:
    """(bin, count, median sigma, median mean) of every bin that holds at least
    ``_MIN_BLOCKS_PER_BIN`` blocks: one sort per quantity instead of two medians per bin."""
    counts = np.bincount(bins, minlength=_BINS)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    by_sigma = sigma[np.lexsort((sigma, bins))]
    by_mean = mean[np.lexsort((mean, bins))]
    out = []
    for i in np.flatnonzero(counts >= _MIN_BLOCKS_PER_BIN).tolist():
        c, s0 = int(counts[i]), int(starts[i])
        mid = slice(s0 + (c - 1) // 2, s0 + c // 2 + 1)  # one value, or the two middle ones
        out.append((i, c, by_sigma[mid].mean(), by_mean[mid].mean()))
    return out


def _flat_blocks(tiles: np.ndarray, pick: Sequence[int] | None) -> np.ndarray:
    """Every other 32x32 block of the picked tiles, chequerboard fashion (half the pixels, the same
    spatial coverage), as one contiguous float32 stack ``[M, 32, 32]``, tile by tile, row-major:
    one gather, no copy of the whole tiles."""
    x = tiles[:, 0] if tiles.ndim == 4 else tiles
    t, b = x.shape[-1], _BLOCK
    g = t // b
    grid = x[:, : g * b, : g * b].reshape(x.shape[0], g, b, g, b).transpose(0, 1, 3, 2, 4)
    rows, cols = _chequerboard(g)
    which = np.arange(x.shape[0]) if pick is None else np.asarray(pick, dtype=np.intp)
    blocks = grid[which[:, None], rows[None, :], cols[None, :]].reshape(-1, b, b)
    return blocks.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=8)
def _chequerboard(g: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero((np.add.outer(np.arange(g), np.arange(g)) % 2) == 0)
    for a in (rows, cols):
        a.setflags(write=False)
    return rows, cols


def _immerkaer_sigma(blocks: np.ndarray) -> np.ndarray:
    """Per block noise std from Immerkaer's residual (second differences in both axes: blind to
    ramps), ``sigma = sqrt(pi/2) / 6 * E|r|``, over each block's interior.

    The 3x3 stencil runs on the flattened stack with contiguous 1-D shifts (several times faster
    than 2-D strided slices); the values on block borders mix neighbouring blocks and are not read.
    Same float32 operations in the same order as the 2-D form, so the same bits."""
    m, b, _ = blocks.shape
    f = blocks.reshape(-1)
    lo, hi = b + 1, f.size - b - 1  # covers every block's interior

    def at(d: int) -> np.ndarray:
        return f[lo + d : hi + d]

    r = np.empty(f.size, np.float32)
    acc = r[lo:hi]
    np.add(at(-b - 1), at(-b + 1), out=acc)
    acc += at(b - 1)
    acc += at(b + 1)
    edge = at(-b) + at(b)
    edge += at(-1)
    edge += at(1)
    edge *= np.float32(2)  # exact (power of two)
    acc -= edge
    np.multiply(at(0), np.float32(4), out=edge)  # exact
    acc += edge
    inner = np.abs(r.reshape(m, b, b)[:, 1:-1, 1:-1])  # contiguous [m, b-2, b-2]
    return inner.mean(axis=(1, 2)) * np.float32(math.sqrt(math.pi / 2) / 6.0)


def _coarse_means(blocks: np.ndarray) -> np.ndarray:
    """4x4 means of each block: noise averages away, anatomy does not. Four strided adds per axis
    (left to right, as numpy's length-4 reductions add) instead of reductions over 4-long axes."""
    b = blocks.shape[-1]
    v = blocks.reshape(-1, b // 4, 4, b)
    rows = v[:, :, 0] + v[:, :, 1]
    rows += v[:, :, 2]
    rows += v[:, :, 3]
    q = rows.reshape(-1, 4)
    out = q[:, 0] + q[:, 1]
    out += q[:, 2]
    out += q[:, 3]
    out /= np.float32(16)
    return out.reshape(-1, b // 4, b // 4)


_EXPONENTS = np.linspace(1.0, 12.0, 23)


def _poisson_gaussian_fit(xs: Sequence[float], ys: Sequence[float], ws: Sequence[float]) -> dict[str, float | None]:
    """Fit ``sigma^2(P) = f + q * exp(lam * P)`` to the binned NLF (relative least squares).

    In a log-transformed radiograph the quantum variance of the detector signal ``D`` becomes
    ``var(P) ~ 1/D ~ exp(lam * P)``; ``f`` collects what does not follow the signal (fixed-pattern
    residue, quantisation, a generator's uniform grain). ``lam`` is searched on a grid; ``f`` and
    ``q`` are non-negative least squares in two unknowns (Foi et al. 2008 fit the same kind of
    model to raw data, where it is affine)."""
    none: dict[str, float | None] = {"quantum": None, "floor": None, "exponent": None, "fit_rms": None}
    if len(xs) < 3:
        return none
    x, v, w = np.asarray(xs), np.exp(2 * np.asarray(ys)), np.asarray(ws)
    u = w / v  # the f column of the weighted relative design (the same for every lam)
    a1 = np.exp(_EXPONENTS[:, None] * x[None, :]) * u  # [L, n]: the q column, per lam
    # numpy's own reductions, not BLAS: identical rows must give identical sums, so that a fit
    # with no quantum term ties every lam exactly and argmin keeps the first (BLAS kernels round
    # by CPU and tail position: a tie broken at lam 11 instead of 1)
    g00, h0 = float((u * u).sum()), float((u * w).sum())
    g01, h1, g11 = (a1 * u).sum(1), (a1 * w).sum(1), (a1 * a1).sum(1)
    det = g00 * g11 - g01 * g01
    safe = np.where(det > 0, det, 1)
    f = np.where(det > 0, (g11 * h0 - g01 * h1) / safe, -1.0)
    q = np.where(det > 0, (g00 * h1 - g01 * h0) / safe, -1.0)
    bad = (f < 0) | (q < 0)  # non-negative least squares: fall back to the better single term
    f_only, q_only = max(h0 / g00, 0.0), np.maximum(h1 / g11, 0)
    err_f = float(((u * f_only - w) ** 2).sum())
    err_q = ((a1 * q_only[:, None] - w) ** 2).sum(1)
    use_f = err_f <= err_q
    f = np.where(bad, np.where(use_f, f_only, 0.0), f)
    q = np.where(bad, np.where(use_f, 0.0, q_only), q)
    model = f[:, None] + q[:, None] * (a1 / u)
    dev = np.log(np.maximum(model, 1e-30)) - np.log(v)
    rms = np.sqrt((dev * dev * w).sum(1) / w.sum()) / 2  # np.average's own arithmetic
    i = int(np.argmin(rms))
    lam, fi, qi, err = float(_EXPONENTS[i]), float(f[i]), float(q[i]), float(rms[i])
    # the quantum term at mid-grey, in ln(std); floor it so "no quantum noise at all" stays finite
    return {"quantum": 0.5 * math.log(max(qi * math.exp(lam * 0.5), 1e-16)),
            "floor": 0.5 * math.log(max(fi, 1e-16)), "exponent": lam, "fit_rms": err}


def _weighted_slope(xs: Sequence[float], ys: Sequence[float], ws: Sequence[float]) -> float | None:
    x, y, w = np.asarray(xs), np.asarray(ys), np.asarray(ws)
    dx = x - (x @ w) / w.sum()
    var = float((dx * dx) @ w)
    if var < 1e-4:  # all flat blocks at one grey level: no slope to measure
        return None
    return float((dx * w) @ (y - (y @ w) / w.sum()) / var)


def _spectrum(blocks: np.ndarray, flat: np.ndarray, sigma: np.ndarray) -> dict[str, float | None]:
    """Welch periodogram of the flat blocks ``blocks[flat]`` (each normalised by its own noise
    level, so bright and dark blocks weigh alike); log ratios of radial bands and of the Nyquist
    points."""
    if len(flat) < 8:
        return {k: None for k in _SPECTRAL}
    order = np.argsort(sigma)[:: max(1, len(flat) // _SPECTRUM_BLOCKS)][:_SPECTRUM_BLOCKS]
    sel = blocks[flat[order]]
    n, b, _ = sel.shape
    sel -= sel.reshape(n, -1).mean(axis=1)[:, None, None]
    sel *= _spectral_masks(b)[0]
    # |F|^2 as the squares of the interleaved real and imaginary parts [n, 2K]: each block's
    # normaliser is its mean power, the periodogram their weighted mean, and the bands and the
    # Nyquist points fixed averages of it (one matrix product)
    f = scipy.fft.rfft2(sel)
    sq = f.view(f.real.dtype).reshape(n, -1)
    sq *= sq
    norm = sq.sum(axis=1) / (sq.shape[1] // 2)
    p = (1 / np.maximum(norm, 1e-20)) @ sq
    lo, mid, hi, nyq = _band_matrix(b) @ (p[0::2] + p[1::2]).astype(np.float64)
    return {"spec_hf": float(np.log(hi / mid)), "spec_mid": float(np.log(mid / lo)), "spec_nyquist": float(np.log(nyq / hi))}


@functools.lru_cache(maxsize=4)
def _spectral_masks(b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hann window of a ``b`` x ``b`` block and its half spectrum's radial bands (built once)."""
    win = np.outer(np.hanning(b), np.hanning(b)).astype(np.float32)
    fy = np.abs(np.fft.fftfreq(b))[:, None]
    fx = np.fft.rfftfreq(b)[None, :]
    rad = np.sqrt(fy**2 + fx**2)
    bands = ((rad >= 0.05) & (rad < 0.15), (rad >= 0.15) & (rad < 0.3), (rad >= 0.3) & (rad <= 0.5))
    for a in (win, *bands):
        a.setflags(write=False)
    return (win, *bands)


@functools.lru_cache(maxsize=4)
def _band_matrix(b: int) -> np.ndarray:
    """[4, b * (b/2 + 1)]: the mean over each radial band of a flattened half spectrum, and the
    mean of its three Nyquist points."""
    _, *bands = _spectral_masks(b)
    nyq = np.zeros((b, b // 2 + 1), bool)
    nyq[b // 2, 0] = nyq[0, b // 2] = nyq[b // 2, b // 2] = True
    m = np.stack([(a / a.sum()).reshape(-1) for a in (*bands, nyq)])
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class _Stat:
    n: float
    mean: float
    m2: float

    def std(self, floor: float) -> float:
        return max(math.sqrt(self.m2 / max(self.n - 1, 1)), floor)


# Smallest std a feature may claim (natural-log units): keeps a profile learned from few or very
# alike images from calling ordinary variation "impossible".
_STD_FLOOR = {**{k: 0.05 for k in _NLF}, "slope": 0.08, "quantum": 0.1, "floor": 0.1, "exponent": 0.5,
              "fit_rms": 0.02, "spec_hf": 0.04, "spec_mid": 0.04, "spec_nyquist": 0.08}


@dataclass(frozen=True)
class NoiseProfile:
    """Per-feature mean and spread of authentic images of one modality (Welford accumulators).

    ``horizon``: beyond this many images, online updates weigh new images as an exponential
    moving average with that horizon, so a device follows slow drift (tube ageing, recalibration)
    without one image moving it much. Only images the agent judged authentic should be fed in:
    an attacker who can feed the update can drag the profile."""

    modality: str
    stats: Mapping[str, _Stat]
    source: str = ""
    horizon: int = 1000

    def __post_init__(self) -> None:
        unknown = set(self.stats) - set(FEATURES)
        if unknown:
            raise ForensicsError(f"noise profile has unknown features {sorted(unknown)}")
        if self.horizon < 2:
            raise ForensicsError("noise profile horizon must be >= 2 images")

    @property
    def images(self) -> int:
        return int(max((s.n for s in self.stats.values()), default=0))

    @classmethod
    def fit(cls, features: Iterable[NoiseFeatures], modality: str, source: str = "", horizon: int = 1000) -> NoiseProfile:
        p = cls(modality=modality, stats={}, source=source, horizon=horizon)
        for f in features:
            p = p.updated(f)
        return p

    def updated(self, features: NoiseFeatures) -> NoiseProfile:
        """A new profile that also knows this authentic image (Welford's online update)."""
        stats = dict(self.stats)
        for k, v in features.values.items():
            if v is None or not math.isfinite(v):
                continue
            s = stats.get(k, _Stat(0.0, 0.0, 0.0))
            n = min(s.n + 1, float(self.horizon))
            d = v - s.mean
            mean = s.mean + d / n
            m2 = s.m2 * ((n - 1) / s.n if s.n >= self.horizon else 1.0) + d * (v - mean)
            stats[k] = _Stat(n, mean, m2)
        return NoiseProfile(self.modality, stats, self.source, self.horizon)

    def counted_as(self, images: int) -> NoiseProfile:
        """The same means and spreads, weighing as if learned from at least ``images`` images, so
        that each later :meth:`updated` moves it by at most ``1 / (images + 1)`` of the distance."""
        stats = {k: _Stat(max(s.n, float(images)), s.mean, s.m2 * (max(s.n, images) - 1) / max(s.n - 1, 1.0))
                 for k, s in self.stats.items()}
        return NoiseProfile(self.modality, stats, self.source, self.horizon)

    def z(self, features: NoiseFeatures) -> dict[str, float]:
        out = {}
        for k, v in features.values.items():
            s = self.stats.get(k)
            if v is not None and s is not None and s.n >= 2:
                out[k] = (v - s.mean) / s.std(_STD_FLOOR[k])
        return out

    def to_json(self) -> str:
        return json.dumps({
            "format": _FORMAT, "version": 1, "modality": self.modality, "source": self.source,
            "horizon": self.horizon,
            "features": {k: [s.n, s.mean, s.m2] for k, s in sorted(self.stats.items())},
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> NoiseProfile:
        try:
            d = json.loads(text)
            if d.get("format") != _FORMAT or d.get("version") != 1:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}")
            stats = {k: _Stat(float(v[0]), float(v[1]), float(v[2])) for k, v in d["features"].items()}
            return cls(str(d["modality"]), stats, str(d.get("source", "")), int(d.get("horizon", 1000)))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ForensicsError(f"noise profile JSON is malformed ({exc}); expected {_FORMAT} version 1") from None


@functools.lru_cache(maxsize=64)
def _spread(n: int, k: int) -> tuple[int, ...]:
    """``k`` tile indices evenly spread over ``n`` (all of them when ``n <= k``)."""
    return tuple(np.unique(np.round(np.linspace(0, n - 1, min(n, k))).astype(int)).tolist())


def image_noise(tiles: np.ndarray, max_tiles: int = _MAX_TILES) -> NoiseFeatures:
    """One image's noise features as :class:`NoiseCheck` reads them: from ``max_tiles`` of its model
    tiles, evenly spread. Learn a profile from the same call (``edge-agent learn``)."""
    return measure_noise(tiles, _spread(tiles.shape[0], max_tiles))


class NoiseCheck:
    """Two-sided tests of one image's noise against a modality's :class:`NoiseProfile`.

    ``z_threshold`` 4.5: the profile has ~12 correlated features, so a Gaussian-tail false-alarm rate
    per image stays around 1e-4; the simulator evaluation measures it (docs/forensics.md)."""

    def __init__(self, profile: NoiseProfile, z_threshold: float = 4.5, max_tiles: int = _MAX_TILES,
                 tile: int = 256) -> None:
        if z_threshold <= 0 or max_tiles < 1:
            raise ForensicsError("z_threshold must be positive and max_tiles >= 1")
        self.profile = profile
        self.z_threshold = z_threshold
        self.max_tiles = max_tiles
        self.tile = tile

    def check(self, frame: np.ndarray, tiles: np.ndarray | None = None,
              origins: Sequence[tuple[int, int]] | None = None, facts: ImageFacts | None = None) -> LayerFinding:
        return self.measure_and_judge(frame, tiles, facts)[0]

    def measure_and_judge(self, frame: np.ndarray, tiles: np.ndarray | None = None,
                          facts: ImageFacts | None = None) -> tuple[LayerFinding, NoiseFeatures | None]:
        """The finding and the features it judged (``None`` for another modality's image), so the
        agent can refine the profile with the same measurement (:mod:`.refine`)."""
        want = self.profile.modality
        if facts is not None and want and facts.modality != want:
            # A profile learned on this device's DICOM output does not judge other outputs: another
            # modality, or an 8-bit PNG/JPEG export (quantisation and compression reshape its noise)
            what = (f"modality {facts.modality}" if facts.modality
                    else f"a {facts.container} image without a DICOM modality")
            return LayerFinding("physics", None, (Reason(
                "physics.no_profile", f"no noise profile for {what} (this one is for {want} acquisitions)"),)), None
        if tiles is None:
            tiles, _ = grid_tiles(frame, self.tile, 64)
        feats = image_noise(tiles, self.max_tiles)
        return self.judge(feats), feats

    def judge(self, feats: NoiseFeatures) -> LayerFinding:
        if feats.flat_blocks < 8:
            return LayerFinding("physics", None, (Reason(
                "physics.insufficient_flat_area", "too few flat, unsaturated regions to measure the noise"),))
        z = self.profile.z(feats)
        thr = self.z_threshold
        reasons: list[Reason] = []
        worst = 0.0
        zq, zs, zf = z.get("quantum"), z.get("slope"), z.get("floor")
        dep = [v for v in (zq, zs) if v is not None]
        low = min(dep) if dep else 0.0
        floor = zf if zf is not None else 0.0
        worst = max(worst, -low, floor)
        if low <= -thr or floor >= thr:
            what = (f"the signal-dependent (quantum) part is far below this modality's (z={low:.1f})" if low <= -thr
                    else f"a grain of constant strength is far above this modality's (z={floor:.1f})")
            reasons.append(Reason("physics.noise_not_signal_dependent",
                                  f"noise does not rise with signal as quantum noise does: {what}"))
        shape = {k: z[k] for k in ("slope", "exponent", "fit_rms") if k in z}
        if shape:
            name, zk = max(shape.items(), key=lambda kv: kv[1])
            worst = max(worst, zk)
            if zk >= thr:
                reasons.append(Reason("physics.noise_dependence_abnormal", (
                    "noise does not follow the Poisson-Gaussian law of this modality's detectors "
                    f"({name} z={zk:.1f})")))
        levels = [z[k] for k in _NLF if k in z]
        if levels:
            zl = float(np.mean(levels))
            worst = max(worst, abs(zl))
            if zl <= -thr:
                reasons.append(Reason("physics.noise_too_low", (
                    f"noise far below what an exposure on this modality gives (z={zl:.1f}): too smooth")))
            elif zl >= thr:
                reasons.append(Reason("physics.noise_too_high", (
                    f"noise far above what an exposure on this modality gives (z={zl:.1f})")))
        spectral = {k: z[k] for k in _SPECTRAL if k in z}
        if spectral:
            k, zk = max(spectral.items(), key=lambda kv: abs(kv[1]))
            worst = max(worst, abs(zk))
            if abs(zk) >= thr:
                what = {"spec_hf": "high-frequency noise power", "spec_mid": "mid-frequency noise power",
                        "spec_nyquist": "power at the Nyquist frequency"}[k]
                hint = " (white grain, not blurred by a detector)" if k == "spec_hf" and zk > 0 else (
                    " (an up-sampling or periodic pattern)" if k == "spec_nyquist" and zk > 0 else "")
                reasons.append(Reason("physics.spectrum_abnormal", (
                    f"the noise spectrum is unlike this modality's: {what} is "
                    f"{'above' if zk > 0 else 'below'} the authentic range (z={zk:.1f}){hint}")))
        if not z:
            return LayerFinding("physics", None, (Reason(
                "physics.no_profile", "the noise profile has no statistics for this image's grey levels"),))
        return LayerFinding("physics", logistic(worst, thr, 1.5), tuple(reasons))
