"""A physics radiograph simulator for validating the forensic layers (numpy only; no torch).

It is a test instrument, not a model of any real product. Each stage follows the textbook chain
of an indirect-conversion flat panel (Bushberg et al., *The Essential Physics of Medical Imaging*,
3rd ed., ch. 7; Cunningham, "Applied linear-systems theory", Handbook of Medical Imaging vol. 1,
2000):

1. procedural anatomy as projected ellipsoids, ribs and spine: a line-integral map
   ``A = sum(mu * L)`` (ellipsoid projections have the exact chord length ``2c*sqrt(1-r^2)``);
2. Beer-Lambert transmission ``T = exp(-A)``; expected quanta ``N0 * T`` per pixel, optionally
   modulated by an anti-scatter grid (a fine line pattern, Bushberg ch. 7.9);
3. Poisson quantum noise, then the scintillator blur (Gaussian PSF): light spread blurs the signal
   *and* the quantum noise, so authentic noise is coloured (NPS ~ MTF^2) and signal dependent;
4. the panel: residual gain non-uniformity after flat-field correction (PRNU-like, 1-2 % std),
   a fixed offset pattern, a column pattern shared by every panel of the same model (readout
   design: a non-unique artefact the fingerprint must ignore), per-image row line noise and
   Gaussian electronic noise, then defect pixels replaced by the mean of their neighbours;
5. presentation: log transform ``ln(N0_ref / D)`` scaled to [0, 1], MONOCHROME2 (bone bright),
   quantised to 12 bits - the domain ``decode.py`` hands the checks.

In the log domain the multiplicative gain becomes an *additive* fixed pattern, which is why
:mod:`edge_agent.forensics.fingerprint` defaults to the additive model.

Also here: "generator-like" images (the same anatomy rendered without a detector: smooth, plus
synthetic white noise that does not follow the signal, optionally at half resolution and
up-sampled), and the tampering operations used by the evaluation (splice, copy-move, JPEG).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "PanelSpec",
    "Panel",
    "phantom",
    "present",
    "generated_like",
    "splice",
    "copy_move",
    "jpeg_roundtrip",
]

_LOG_RANGE = 6.0  # presentation maps ln(N0/D) in [0, 6] onto [0, 1]
_MODEL_SEED = 7  # all simulated panels are "the same model": they share the column pattern


@dataclass(frozen=True)
class PanelSpec:
    """One simulated detector; ``seed`` makes its fixed pattern."""

    seed: int
    shape: tuple[int, int] = (512, 640)
    gain_std: float = 0.015  # residual PRNU after flat-field correction
    offset_std: float = 2.0  # fixed offset pattern, quanta units
    column_std: float = 3.0  # model-wide column pattern, quanta units
    row_noise_std: float = 2.0  # per-image row line noise, quanta units
    electronic_std: float = 6.0  # electronic noise, quanta units
    psf_sigma: float = 0.7  # scintillator blur, pixels
    dead_fraction: float = 2e-4
    bits: int = 12
    exact_poisson: bool = False  # True: numpy's Poisson sampler (5x slower than the normal approximation)

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 32:
            raise ValueError(f"panel shape {self.shape} must be 2-D and at least 32x32")
        if not 0.0 <= self.gain_std < 0.2 or self.psf_sigma < 0 or not 0 <= self.dead_fraction < 0.01:
            raise ValueError("gain_std in [0, 0.2), psf_sigma >= 0 and dead_fraction in [0, 0.01) expected")
        if not 8 <= self.bits <= 16:
            raise ValueError(f"bits {self.bits} must be in 8..16")


@dataclass
class Panel:
    """A detector with its fixed pattern; :meth:`acquire` makes authentic images."""

    spec: PanelSpec
    gain: np.ndarray = field(init=False, repr=False)
    offset: np.ndarray = field(init=False, repr=False)
    dead: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.spec.seed)
        h, w = self.spec.shape
        # PRNU: mostly white, plus a little low-frequency shading (flat-field drift).
        white = rng.standard_normal((h, w))
        shading = ndimage.gaussian_filter(rng.standard_normal((h, w)), 24) * 24
        self.gain = (1.0 + self.spec.gain_std * (0.95 * white + 0.3 * shading)).astype(np.float32)
        col = np.random.default_rng(_MODEL_SEED).standard_normal(w) * self.spec.column_std
        self.offset = (rng.standard_normal((h, w)) * self.spec.offset_std + col[None, :]).astype(np.float32)
        self.dead = rng.random((h, w)) < self.spec.dead_fraction

    def acquire(
        self,
        rng: np.random.Generator,
        dose: float | None = None,
        grid: bool | None = None,
        attenuation: np.ndarray | None = None,
    ) -> np.ndarray:
        """One authentic exposure: float32 [0, 1], MONOCHROME2, quantised to ``spec.bits``."""
        s = self.spec
        a = phantom(rng, s.shape) if attenuation is None else attenuation
        n0 = float(dose if dose is not None else np.exp(rng.uniform(np.log(2500), np.log(25000))))
        expected = n0 * np.exp(-a)
        if grid if grid is not None else rng.random() < 0.3:
            expected = expected * _grid_pattern(rng, s.shape)
        quanta = _quantum_noise(rng, expected.astype(np.float32), self.spec.exact_poisson)
        if s.psf_sigma > 0:
            quanta = ndimage.gaussian_filter(quanta, s.psf_sigma)
        h = s.shape[0]
        d = quanta * self.gain + self.offset
        d += rng.standard_normal(s.shape).astype(np.float32) * np.float32(s.electronic_std)
        d += (rng.standard_normal(h).astype(np.float32) * np.float32(s.row_noise_std))[:, None]
        d = _interpolate_defects(d, self.dead)
        return present(d, n0, s.bits)


def _quantum_noise(rng: np.random.Generator, expected: np.ndarray, exact: bool) -> np.ndarray:
    """Poisson counts, or their normal approximation N(lambda, lambda): the same signal-dependent
    variance (the property the noise check relies on) at a fraction of the cost; counts stay >= 0."""
    if exact:
        return rng.poisson(expected).astype(np.float32)
    noise = rng.standard_normal(expected.shape, dtype=np.float32)
    return np.maximum(expected + np.sqrt(expected) * noise, np.float32(0.0))


def _grid_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    period = rng.uniform(2.6, 4.2)  # grid line pitch aliased onto the pixel grid
    x = np.arange(shape[1])
    line = 1.0 - 0.03 * (0.5 + 0.5 * np.cos(2 * np.pi * x / period + rng.uniform(0, 2 * np.pi)))
    return line[None, :].astype(np.float32)


def _interpolate_defects(d: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Defect pixels are replaced by the mean of their 4-neighbours, as panel firmware does."""
    if not dead.any():
        return d
    padded = np.pad(d, 1, mode="edge")
    neigh = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) * 0.25
    out = d.copy()
    out[dead] = neigh[dead]
    return out


def present(d: np.ndarray, n0: float, bits: int = 12) -> np.ndarray:
    """Log-transform detector signal into a MONOCHROME2 presentation image in [0, 1]."""
    p = np.log(np.float32(n0) / np.maximum(d, np.float32(1.0))) / np.float32(_LOG_RANGE)
    full = float((1 << bits) - 1)
    return (np.round(np.clip(p, 0.0, 1.0) * full) / full).astype(np.float32)


def phantom(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Line-integral map ``sum(mu * L)`` of a procedural chest (dimensionless attenuation).

    Drawn at half resolution and bilinearly enlarged: anatomy is smooth at the pixel scale, and
    this keeps the evaluation fast."""
    small = _phantom((shape[0] + 1) // 2, (shape[1] + 1) // 2, rng)
    return _enlarge2(small)[: shape[0], : shape[1]]


def _enlarge2(s: np.ndarray) -> np.ndarray:
    """Bilinear 2x enlargement (interpolated samples midway between the originals)."""
    nxt_y = np.concatenate([s[1:], s[-1:]], axis=0)
    rows = np.empty((2 * s.shape[0], s.shape[1]), s.dtype)
    rows[0::2], rows[1::2] = s, (s + nxt_y) * 0.5
    nxt_x = np.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out = np.empty((rows.shape[0], 2 * s.shape[1]), s.dtype)
    out[:, 0::2], out[:, 1::2] = rows, (rows + nxt_x) * 0.5
    return out


def _phantom(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    shape = (h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    j = lambda s: rng.uniform(-s, s)  # noqa: E731 - tiny jitter helper
    a = np.zeros(shape, np.float32)
    cy, cx = 0.52 + j(0.04), 0.5 + j(0.04)
    a += 0.4  # table, cassette and air: the background is not a clipped direct exposure
    body = _ellipsoid(yy, xx, cy, cx, 0.55 + j(0.05), 0.42 + j(0.04), j(0.1), 3.3 + j(0.4))
    a += body
    for side in (-1, 1):  # lungs: air replaces tissue
        a -= _ellipsoid(yy, xx, cy - 0.05 + j(0.02), cx + side * (0.18 + j(0.02)),
                        0.32 + j(0.03), 0.13 + j(0.015), side * j(0.15), 1.9 + j(0.2))
    a += _ellipsoid(yy, xx, cy + 0.1 + j(0.03), cx + 0.04 + j(0.02), 0.16, 0.12 + j(0.02), j(0.3), 1.2)  # heart
    # spine: a vertical bony band with a chord profile
    half = 0.035 + j(0.005)
    u = np.clip(1 - ((xx - cx) / half) ** 2, 0, None)
    a += 1.1 * np.sqrt(u) * (yy > 0.05)
    # ribs: curved bony bands across each lung
    ribs = np.zeros(shape, np.float32)
    for side in (-1, 1):
        for k in range(9):
            y0 = 0.17 + 0.072 * k + j(0.01)
            x0 = cx + side * 0.02
            dx = (xx - x0) * side
            curve = y0 + 0.9 * dx**2 - 0.02 + 0.15 * dx
            dist = np.abs(yy - curve)
            width = 0.012 + j(0.002)
            band = np.clip(1 - (dist / width) ** 2, 0, None) * ((dx > 0.02) & (dx < 0.36))
            ribs += (0.45 + j(0.08)) * np.sqrt(band)
    a += ribs * (body > 0)
    # soft-tissue texture (vessels): smoothed noise, stronger inside the lungs
    tex = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    a += 0.9 * tex
    return np.clip(a, 0.0, None)


def _ellipsoid(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
               angle: float, mu_c: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    return (mu_c * np.sqrt(np.clip(1 - u * u - v * v, 0, None))).astype(np.float32)


def generated_like(
    rng: np.random.Generator,
    shape: tuple[int, int],
    kind: str = "uniform_grain",
    noise_std: float | None = None,
) -> np.ndarray:
    """An image with plausible anatomy but no detector behind it.

    ``uniform_grain``: smooth rendering + white Gaussian noise of constant std (what readers
    describe for GPT-4o radiographs); ``too_smooth``: almost no noise; ``upsampled``: rendered at
    half resolution, bilinearly up-sampled, then grain added (diffusion/GAN decoders up-sample);
    ``physics_noise``: an adaptive attacker adding Poisson-Gaussian noise through a blur - it passes
    noise checks and only lacks the panel's fingerprint.
    """
    n0 = float(np.exp(rng.uniform(np.log(2500), np.log(25000))))
    a = phantom(rng, shape)
    if kind == "physics_noise":
        q = _quantum_noise(rng, (n0 * np.exp(-a)).astype(np.float32), exact=False)
        q = ndimage.gaussian_filter(q, 0.7) + rng.standard_normal(shape).astype(np.float32) * 6.0
        return present(q, n0)
    clean = present(n0 * np.exp(-a).astype(np.float32), n0, bits=16)
    if kind == "upsampled":
        small = clean[::2, ::2]
        clean = _enlarge2(small)[: shape[0], : shape[1]]
    clean = ndimage.gaussian_filter(clean, 0.8)
    if kind == "too_smooth":
        sigma = 0.0008 if noise_std is None else noise_std
    elif kind in ("uniform_grain", "upsampled"):
        sigma = rng.uniform(0.003, 0.012) if noise_std is None else noise_std
    else:
        raise ValueError(f"unknown generator kind {kind!r}")
    img = clean + rng.standard_normal(shape).astype(np.float32) * np.float32(sigma)
    return (np.round(np.clip(img, 0, 1) * 4095) / 4095).astype(np.float32)


def splice(target: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
           size: tuple[int, int] = (96, 160)) -> tuple[np.ndarray, np.ndarray]:
    """Paste a random rectangle of ``donor`` (same place) into ``target``; returns (image, mask)."""
    h, w = target.shape
    rh, rw = int(rng.integers(*size)), int(rng.integers(*size))
    y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
    out = target.copy()
    out[y : y + rh, x : x + rw] = donor[y : y + rh, x : x + rw]
    mask = np.zeros(target.shape, bool)
    mask[y : y + rh, x : x + rw] = True
    return out, mask


def copy_move(image: np.ndarray, rng: np.random.Generator,
              size: tuple[int, int] = (96, 160)) -> tuple[np.ndarray, np.ndarray]:
    """Copy a rectangle to another place in the same image (shift >= 64 px); returns (image, mask)."""
    h, w = image.shape
    rh, rw = int(rng.integers(*size)), int(rng.integers(*size))
    while True:
        ys, xs = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        yd, xd = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
        if max(abs(ys - yd), abs(xs - xd)) >= 64:
            break
    out = image.copy()
    out[yd : yd + rh, xd : xd + rw] = image[ys : ys + rh, xs : xs + rw]
    mask = np.zeros(image.shape, bool)
    mask[yd : yd + rh, xd : xd + rw] = True
    return out, mask


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Lossy JPEG via Pillow (8-bit: baseline JPEG has no more), back to float32 [0, 1]."""
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / np.float32(255.0)
