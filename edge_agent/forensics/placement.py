"""Where an image lies on the detector: a fingerprint search over crops, mirrors and rotations.

The fingerprint check (:mod:`.fingerprint`) correlates an image with the enrolled pattern at the
native grid, in the detector's own orientation. Images that leave a device are often not that
frame: consoles rotate and mirror views (a lateral view turned upright, a portable AP image
flipped), and many systems crop to the collimated field. Such an image still carries the
detector's pattern, moved. Without this search it read as "another detector's image" (mirrored or
rotated on a square panel) or was not judged at all (cropped).

Search (Goljan & Fridrich, "Camera identification from cropped and scaled images", Proc. SPIE
6819, 2008, sec. 3): the noise residual of the image, brought back by each of the 8 rotations and
mirrors of a rectangle (the dihedral group D4) that fits inside the detector, is cross-correlated
with the fingerprint at every offset, one FFT pair per orientation. The peak's PCE is its square
over the mean square of the correlation surface outside an 11 x 11 neighbourhood of it. Under "not
this detector" the correlation at each position is ~N(0, sigma^2), so the largest of S positions
exceeds ``sqrt(t) sigma`` with probability at most ``S Q(sqrt(t))`` (Bonferroni): the threshold is
raised for the number of positions searched, and never set below the native check's own.
Binning is searched the same way against the fingerprint binned alike (:meth:`.Fingerprint.binned`;
``binning`` below): a console that averages 2 x 2 pixels after correction keeps the pattern,
averaged. Other scaling (resampling by a non-integer factor) is not searched: such an image is not
placed.

DICOM describes the same relation for DX, MG and IO images (DX Detector module, PS3.3 C.8.11.4 and
C.8.11.4.1.1): Field of View Origin (0018,7030) is the row and column of the stored pixels' top-left
corner on the physical detector before rotation or flipping, Field of View Rotation (0018,7032) a
clockwise turn of 0, 90, 180 or 270 degrees, Field of View Horizontal Flip (0018,7034) a mirror
applied after the turn, and Detector Binning (0018,701A) the physical detector pixels per image pixel,
rows then columns. :func:`declared_placement` reads them; the check tries that placement first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage
from scipy.special import ndtri

from ..errors import ForensicsError
from .residual import block_mean, noise_residual

__all__ = ["Orientation", "ORIENTATIONS", "Placement", "PlacementSearch", "declared_placement", "binned_high_pass",
           "BINNED_MARGIN", "threshold_margin", "search_residual"]

_NEIGHBOURHOOD = 11  # lags around the peak left out of the background energy (Goljan et al. 2009)


@dataclass(frozen=True)
class Orientation:
    """How an image was turned from the detector's frame: a left-right mirror (first), then
    ``quarter_turns`` counter-clockwise quarter turns (``np.rot90``)."""

    name: str
    quarter_turns: int
    mirrored: bool

    def to_image(self, a: np.ndarray) -> np.ndarray:
        """The detector-oriented array as the image shows it."""
        return np.rot90(a[:, ::-1] if self.mirrored else a, self.quarter_turns)

    def to_detector(self, a: np.ndarray) -> np.ndarray:
        """The image-oriented array back in the detector's orientation (inverse of :meth:`to_image`)."""
        b = np.rot90(a, -self.quarter_turns)
        return b[:, ::-1] if self.mirrored else b

    def turned_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The shape of an array of ``shape`` after :meth:`to_image` or :meth:`to_detector` (a quarter
        turn swaps the sides, a mirror does not)."""
        h, w = int(shape[0]), int(shape[1])
        return (w, h) if self.quarter_turns % 2 else (h, w)

    def dicom(self) -> tuple[int, bool]:
        """(Field of View Rotation in degrees clockwise, Field of View Horizontal Flip) of PS3.3
        C.8.11.4.1.1: turn clockwise first, then mirror."""
        return _DICOM[self.name]

    def point_to_image(self, row: int, col: int, shape: tuple[int, int]) -> tuple[int, int]:
        """Where pixel ``(row, col)`` of a detector-oriented array of ``shape`` lands in the image."""
        h, w = shape
        if self.mirrored:
            col = w - 1 - col
        for _ in range(self.quarter_turns % 4):  # np.rot90: new[i, j] = old[j, w - 1 - i]
            row, col, h, w = w - 1 - col, row, w, h
        return row, col


# The table of D4, in the order searched (the first is the native orientation).
ORIENTATIONS: tuple[Orientation, ...] = (
    Orientation("as acquired", 0, False),
    Orientation("mirrored left-right", 0, True),
    Orientation("rotated 180 degrees", 2, False),
    Orientation("mirrored top-bottom", 2, True),
    Orientation("rotated 90 degrees counter-clockwise", 1, False),
    Orientation("rotated 90 degrees clockwise", 3, False),
    Orientation("transposed (mirrored about the main diagonal)", 1, True),
    Orientation("mirrored about the anti-diagonal", 3, True),
)


def _dicom_table() -> dict[str, tuple[int, bool]]:
    """Each orientation's DICOM (rotation, flip), found by applying both to one asymmetric array."""
    a = np.arange(6).reshape(2, 3)
    out = {}
    for rotation in (0, 90, 180, 270):
        for flip in (False, True):
            shown = np.rot90(a, -rotation // 90)
            shown = shown[:, ::-1] if flip else shown
            o = next(o for o in ORIENTATIONS if o.to_image(a).shape == shown.shape and (o.to_image(a) == shown).all())
            out[o.name] = (rotation, flip)
    return out


_DICOM = _dicom_table()


def declared_placement(dataset: object, image_shape: tuple[int, int], detector: tuple[int, int]) -> Placement | None:
    """The placement a DX/MG/IO header declares (PS3.3 C.8.11.4.1.1), or ``None`` when it declares
    none, declares one that does not fit the detector, or is malformed (then the search decides)."""
    origin = getattr(dataset, "FieldOfViewOrigin", None)
    if origin is None:
        return None
    try:
        row, col = (int(v) for v in origin)
        rotation = int(getattr(dataset, "FieldOfViewRotation", 0) or 0) % 360
        flip = str(getattr(dataset, "FieldOfViewHorizontalFlip", "NO") or "NO").strip().upper() == "YES"
        o = next(o for o in ORIENTATIONS if o.dicom() == (rotation, flip))
        bins = getattr(dataset, "DetectorBinning", None)
        b_row, b_col = (1.0, 1.0) if bins is None else (float(v) for v in bins)
    except (TypeError, ValueError, OverflowError, StopIteration):  # OverflowError: int(inf)
        return None
    if not (math.isfinite(b_row) and 1 <= b_row <= 64) or b_row != b_col or b_row != int(b_row):
        return None  # unequal, fractional or absurd binning: not a block average of the pattern
    b = int(b_row)
    height, width = (v * b for v in o.turned_shape(image_shape))
    if row < 0 or col < 0 or row + height > detector[0] or col + width > detector[1]:
        return None
    return Placement(o, row, col, height, width, pce=float("nan"), threshold=float("nan"), positions=1, binning=b)


@dataclass(frozen=True)
class Placement:
    """The best position found: the image, turned back by ``orientation``, covers detector rows
    ``row .. row + height - 1`` and columns ``col .. col + width - 1`` (``height`` x ``width`` physical
    detector pixels in the detector's orientation), each image pixel the mean of ``binning`` x
    ``binning`` of them. ``found``: its PCE reaches the threshold for ``positions`` searched."""

    orientation: Orientation
    row: int
    col: int
    height: int
    width: int
    pce: float
    threshold: float
    positions: int
    binning: int = 1

    def __post_init__(self) -> None:
        if self.binning < 1 or self.height % self.binning or self.width % self.binning:
            raise ForensicsError(f"placement of {self.height}x{self.width} detector pixels is not whole "
                                 f"{self.binning}x{self.binning} bins")

    @property
    def found(self) -> bool:
        return self.pce >= self.threshold

    def as_acquired(self, detector: tuple[int, int]) -> bool:
        """The ``detector``'s whole frame as it was acquired (nothing to re-place); a crop that
        starts at its first row and column is not."""
        return (self.orientation is ORIENTATIONS[0] and self.binning == 1
                and (self.row, self.col, self.height, self.width) == (0, 0, *detector))

    @property
    def turned_back_shape(self) -> tuple[int, int]:
        """The image's shape in the detector's orientation (image pixels)."""
        return (self.height // self.binning, self.width // self.binning)

    def describe(self, detector: tuple[int, int]) -> str:
        b = self.binning
        turned = "" if self.orientation is ORIENTATIONS[0] else self.orientation.name
        whole = (self.row, self.col, self.height, self.width) == (0, 0, *(v // b * b for v in detector))
        cropped = "" if whole else (f"cropped to detector rows {self.row}-{self.row + self.height - 1}, "
                                    f"columns {self.col}-{self.col + self.width - 1}")
        binned = "" if b == 1 else f"binned {b}x{b}"
        rotation, flip = self.orientation.dicom()
        dicom = (f"DICOM Field of View Origin {self.row}\\{self.col}, Rotation {rotation}, "
                 f"Horizontal Flip {'YES' if flip else 'NO'}" + ("" if b == 1 else f", Detector Binning {b}\\{b}"))
        return (", ".join(p for p in (binned, turned, cropped) if p) or "as acquired") + f" ({dicom})"

    def same_place(self, other: Placement) -> bool:
        return (self.orientation, self.row, self.col, self.height, self.width, self.binning) == (
            other.orientation, other.row, other.col, other.height, other.width, other.binning)


BINNED_MARGIN = 3.0


def threshold_margin(binning: int) -> float:
    """How much a placement at ``binning`` must exceed the native presence threshold: binned
    images' null has heavier tails than native ones' (:func:`binned_high_pass`), so their threshold
    is raised by ``BINNED_MARGIN`` (chosen on calibration panels, docs/forensics.md), whether the
    placement was searched, declared by a header or remembered."""
    return 1.0 if binning == 1 else BINNED_MARGIN


def binned_high_pass(pattern: np.ndarray) -> np.ndarray:
    """What binned images are correlated with: the binned pattern minus its Gaussian blur (sigma
    1 px). Block averaging keeps the pattern's low-frequency part (flat-field drift) and quarters its
    white part; correlated with that smooth remainder, binned crops of other panels and of generated
    images reached up to 2.2x the search threshold (29 of 96 placed in benchmarks.eval_placement,
    0 with the high-pass), and other panels' images passed the check at a remembered binned placement."""
    return (pattern - ndimage.gaussian_filter(pattern, 1.0)).astype(np.float32)


def search_residual(frame: np.ndarray, multiplicative: bool = False) -> np.ndarray:
    """What the search correlates with the pattern: the frame's noise residual (times the frame for
    a multiplicative fingerprint). The same at every binning: binning acts on the pattern."""
    residual = noise_residual(np.asarray(frame, dtype=np.float32))
    return residual * frame if multiplicative else residual


class PlacementSearch:
    """``search(frame)`` -> the best :class:`Placement` of ``frame`` on the detector whose
    fingerprint ``pattern`` is given, or ``None`` when the frame fits in no orientation (larger
    than the detector). ``pfa``: the chance that an image of another detector is placed, over
    the whole search; ``min_pce``: the threshold never goes below it (the native check's).
    ``binning``: look for the frame as the detector's image binned so; the pattern is binned alike
    (:func:`.residual.block_mean`, then :func:`binned_high_pass`) at every phase of the bins (a
    crop that began at a row or column that is not a multiple of ``binning`` lies half a binned
    pixel off the even phase: there it is found weakly, at the wrong position), and the threshold
    counts the positions of all phases. Placements are in physical detector pixels all the same."""

    def __init__(self, pattern: np.ndarray, multiplicative: bool = False, pfa: float = 1e-6,
                 min_pce: float = 50.0, binning: int = 1) -> None:
        if pattern.ndim != 2 or not 0.0 < pfa < 1.0 or min_pce <= 0 or binning < 1:
            raise ForensicsError("placement search: a 2-D pattern, pfa in (0, 1), min_pce > 0 and binning >= 1 "
                                 "are required")
        self.binning = binning
        self.pattern = pattern
        # (row, column) of the first bin's corner on the detector, and the pattern seen at that phase
        self._phases = [((0, 0), pattern)] if binning == 1 else [
            ((dy, dx), binned_high_pass(block_mean(pattern[dy:, dx:], binning)))
            for dy in range(binning) for dx in range(binning)]
        self.margin = threshold_margin(binning)
        self.multiplicative = multiplicative
        self.pfa = pfa
        self.min_pce = min_pce
        self._spectra: list[tuple[tuple[int, int], np.ndarray]] | None = None  # per phase, on the first search

    def threshold(self, positions: int) -> float:
        """PCE that fewer than ``pfa`` of foreign images reach at their best of ``positions``."""
        return self.margin * max(self.min_pce, float(-ndtri(self.pfa / max(positions, 1))) ** 2)  # Q^-1(p) = -Phi^-1(p)

    def search(self, frame: np.ndarray, orientations: tuple[Orientation, ...] = ORIENTATIONS,
               residual: Callable[[], np.ndarray] | None = None) -> Placement | None:
        """``residual``: gives the frame's :func:`search_residual` (called only when the frame fits),
        so that the searches of one frame at several binnings compute it once."""
        dh, dw = self._phases[0][1].shape  # the largest phase
        shapes = [o.turned_shape(frame.shape) for o in orientations]
        if not any(h <= dh and w <= dw for h, w in shapes):
            return None  # larger than the detector in every orientation: nothing to compute
        r = residual() if residual is not None else search_residual(frame, self.multiplicative)
        if self._spectra is None:
            self._spectra = []
            for _, k in self._phases:
                fft_shape = (sfft.next_fast_len(k.shape[0], real=True), sfft.next_fast_len(k.shape[1], real=True))
                self._spectra.append((fft_shape, sfft.rfft2(k, s=fft_shape)))
        best: tuple[float, Orientation, int, int, int, int, tuple[int, int]] | None = None
        positions = 0
        for ((oy, ox), k), (fft_shape, spectrum) in zip(self._phases, self._spectra):
            dh, dw = k.shape
            for o in orientations:
                u = o.to_detector(r)
                h, w = u.shape
                if h > dh or w > dw:
                    continue
                positions += (dh - h + 1) * (dw - w + 1)
                pce, row, col = _best_offset(u, spectrum, fft_shape, (dh - h + 1, dw - w + 1))
                if best is None or pce > best[0]:
                    best = (pce, o, row, col, h, w, (oy, ox))
        if best is None:
            return None
        pce, o, row, col, h, w, (oy, ox) = best
        b = self.binning
        return Placement(o, row * b + oy, col * b + ox, h * b, w * b, pce, self.threshold(positions), positions, b)


def _best_offset(u: np.ndarray, spectrum: np.ndarray, shape: tuple[int, int],
                 valid: tuple[int, int]) -> tuple[float, int, int]:
    """(PCE, row, col) of the largest correlation ``sum u[y, x] K[y + row, x + col]`` over offsets
    where ``u`` lies wholly inside the pattern; the background is the whole (circular) surface."""
    c = sfft.irfft2(np.conj(sfft.rfft2(u, s=shape)) * spectrum, s=shape)
    inside = c[: valid[0], : valid[1]]
    row, col = (int(v) for v in np.unravel_index(int(np.argmax(inside)), inside.shape))
    peak = float(inside[row, col])
    energy = c * c
    half = _NEIGHBOURHOOD // 2
    rows = np.arange(row - half, row + half + 1) % shape[0]
    cols = np.arange(col - half, col + half + 1) % shape[1]
    near = float(energy[np.ix_(rows, cols)].sum())
    background = (float(energy.sum()) - near) / max(energy.size - _NEIGHBOURHOOD**2, 1)
    return float(np.sign(peak) * peak * peak / max(background, 1e-30)), row, col

