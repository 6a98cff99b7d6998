"""The detector's own fingerprint: what it is, how it is enrolled from authentic images, how it is stored.

Every flat panel and CR reader leaves a fixed pattern in its images: the gain non-uniformity
left after flat-field correction, defect-pixel interpolation, row/column offsets. Camera forensics
identifies a source sensor from its photo-response non-uniformity (PRNU) the same way:

* noise residual ``W = I - denoise(I)`` (Lukas, Fridrich & Goljan, "Digital camera
  identification from sensor pattern noise", IEEE TIFS 1(2), 2006);
* maximum-likelihood fingerprint ``K = sum(W_i * I_i) / sum(I_i^2)`` over N images, with
  zero-mean rows/columns and Wiener filtering in the DFT domain to strip non-unique artefacts
  (Chen, Fridrich, Goljan & Lukas, "Determining image origin and integrity using sensor noise",
  IEEE TIFS 3(1), 2008, sec. III-IV).

Looking for it in an image (PCE, the local map, placement) is :mod:`.fingerprint_check`.

Radiographs differ from photographs in one point that matters: the presentation image is a log
transform of the detector signal, so the multiplicative gain pattern becomes *additive*
(``ln(g*q) = ln g + ln q``). ``model="additive"`` (the default) therefore uses ``I = 1`` in the
estimator; ``model="multiplicative"`` keeps Chen's form for linear ("for processing") images.

Non-unique artefacts (a column pattern shared by every panel of one model, anti-scatter grid lines)
are removed by zero-meaning rows and columns and by attenuating spectral peaks, so that two panels
of one model are not confused.

Storage: the pattern is quantised to int8 (or 1 bit, after Bayram, Sencar & Memon, "Efficient
sensor fingerprint matching through fingerprint binarization", IEEE TIFS 7(4), 2012) and zlib'd;
:meth:`Fingerprint.to_bytes` is what the device key signs, :attr:`Fingerprint.sha256` pins it.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ForensicsError
from .residual import WB, block_mean, noise_residual

__all__ = ["Fingerprint", "FingerprintEnrollment", "enroll", "noise_residual"]

_MAGIC = b"EAFP"
_FORMAT_VERSION = 1
_MODELS = ("additive", "multiplicative")
_REL_BLOCK = 16  # predictor map resolution (pixels per block)


@dataclass(frozen=True)
class Fingerprint:
    """A detector's enrolled fixed pattern at its native pixel grid.

    ``pattern`` is the (dequantised) estimate ``K``; ``predictor`` ([H/16, W/16]) is the correlation
    predictor per 16x16 block: the fraction of ``K``'s energy that is the sensor rather than
    enrolment noise, divided by the mean Wiener weight the enrolment images had there. An authentic
    image whose own residual weight is ``w`` correlates with ``K`` in a cell as
    ``sum(w * K^2) * predictor`` (times one image-wide gain)."""

    pattern: np.ndarray
    predictor: np.ndarray
    model: str = "additive"
    images: int = 0
    bits: int = 8
    scale: float = 0.0  # quantisation step once stored (0: not yet quantised); keeps to_bytes idempotent
    modality: str = ""  # DICOM Modality of the enrolled images (PS3.3 C.7.3.1.1.1); "" = not recorded

    def __post_init__(self) -> None:
        if self.model not in _MODELS:
            raise ForensicsError(f"fingerprint model {self.model!r} is not one of {_MODELS}")
        if self.pattern.ndim != 2 or min(self.pattern.shape) < 16:
            raise ForensicsError(f"fingerprint pattern must be 2-D and at least 16x16, got {self.pattern.shape}")
        want = _rel_shape(self.pattern.shape)
        if self.predictor.shape != want:
            raise ForensicsError(f"predictor map must be {want} for a {self.pattern.shape} pattern, "
                                 f"got {self.predictor.shape}")
        if self.bits not in (1, 8) or self.images < 1:
            raise ForensicsError(f"bits must be 1 or 8 (got {self.bits}); images >= 1 (got {self.images})")
        if not isinstance(self.modality, str) or len(self.modality) > 16 or not self.modality.isascii():
            raise ForensicsError(f"fingerprint modality must be a DICOM code string of at most 16 characters, "
                                 f"got {self.modality!r}")
        for a in (self.pattern, self.predictor):
            a.setflags(write=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.pattern.shape[0]), int(self.pattern.shape[1]))

    def cropped(self, row: int, col: int, height: int, width: int) -> Fingerprint:
        """The fingerprint of a ``height`` x ``width`` crop at (``row``, ``col``) of the detector: the
        pattern cut out, each predictor block taken from the detector block under its centre."""
        h, w = self.shape
        if row < 0 or col < 0 or row + height > h or col + width > w:
            raise ForensicsError(f"crop {height}x{width} at ({row}, {col}) is outside the {h}x{w} detector")
        bh, bw = _rel_shape((height, width))
        half = _REL_BLOCK // 2
        ys = np.minimum((row + np.arange(bh) * _REL_BLOCK + half) // _REL_BLOCK, self.predictor.shape[0] - 1)
        xs = np.minimum((col + np.arange(bw) * _REL_BLOCK + half) // _REL_BLOCK, self.predictor.shape[1] - 1)
        return Fingerprint(pattern=np.ascontiguousarray(self.pattern[row : row + height, col : col + width]),
                           predictor=np.ascontiguousarray(self.predictor[np.ix_(ys, xs)]), model=self.model,
                           images=self.images, bits=self.bits, scale=self.scale, modality=self.modality)

    def binned(self, factor: int) -> Fingerprint:
        """The fingerprint of the detector's images binned ``factor`` x ``factor`` after correction
        (each output pixel the mean of a block; trailing rows and columns that fill no block are
        dropped): the pattern block-averaged; each predictor block the mean of the native blocks
        under it, or 0 ("not judged") where any of them is. Binning averages the pattern and the
        image noise alike, so the share of the pattern that is sensor stays as enrolled."""
        if factor == 1:
            return self
        if factor < 1 or min(self.shape) // factor < 16:
            raise ForensicsError(f"binning {factor} leaves less than 16x16 of the {self.shape} detector")
        k = block_mean(self.pattern, factor)
        bh, bw = _rel_shape(k.shape)
        ph, pw = self.predictor.shape
        # native blocks under each binned block; past the native map's edge (the binned frame's last
        # block row/column) there are fewer of them, and those present decide
        pad = np.full((bh * factor, bw * factor), np.nan, np.float32)
        pad[: min(ph, bh * factor), : min(pw, bw * factor)] = self.predictor[: bh * factor, : bw * factor]
        blocks = pad.reshape(bh, factor, bw, factor)
        judged = np.where(np.isnan(blocks), True, blocks > 0).all(axis=(1, 3))
        pred = np.where(judged, np.nanmean(blocks, axis=(1, 3)), 0.0)
        return Fingerprint(pattern=k, predictor=pred.astype(np.float32),
                           model=self.model, images=self.images, bits=self.bits, modality=self.modality)

    def to_bytes(self) -> bytes:
        """Canonical serialised form (what the device key signs): magic, header JSON, two zlib
        payloads (quantised pattern, float16 predictor). Deterministic for a given fingerprint."""
        k = self.pattern.astype(np.float32)
        if self.bits == 8:
            scale = self.scale or (float(np.std(k)) * 4.0 / 127.0 or 1.0)  # +-4 sigma in int8
            q = np.clip(np.round(k / np.float32(scale)), -127, 127).astype(np.int8).tobytes()
        else:
            scale = self.scale or (float(np.std(k)) or 1.0)
            q = np.packbits(k.reshape(-1) >= 0).tobytes()
        fields: dict[str, object] = {
            "format": "edge-agent-fingerprint", "version": _FORMAT_VERSION, "shape": list(self.shape),
            "model": self.model, "images": self.images, "bits": self.bits, "scale": scale,
        }
        if self.modality:  # written only when known: fingerprints enrolled before it keep their bytes
            fields["modality"] = self.modality
        header = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        p1 = zlib.compress(q, 9)
        p2 = zlib.compress(self.predictor.astype("<f2").tobytes(), 9)
        return b"".join([_MAGIC, struct.pack("<III", len(header), len(p1), len(p2)), header, p1, p2])

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, expected_sha256: str | None = None) -> Fingerprint:
        """Parse :meth:`to_bytes` output; with ``expected_sha256`` refuse an altered copy."""
        if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256.lower():
            raise ForensicsError("fingerprint bytes do not match the expected sha256: the stored copy was "
                                 "altered or is another device's; re-provision it from the signed original")
        if len(data) < 16 or data[:4] != _MAGIC:
            raise ForensicsError("not an edge-agent fingerprint (magic 'EAFP' missing)")
        try:
            lh, l1, l2 = struct.unpack("<III", data[4:16])
            header = json.loads(data[16 : 16 + lh])
            p1 = zlib.decompress(data[16 + lh : 16 + lh + l1])
            p2 = zlib.decompress(data[16 + lh + l1 : 16 + lh + l1 + l2])
            h, w = (int(v) for v in header["shape"])
            bits, scale = int(header["bits"]), float(header["scale"])
            if header.get("version") != _FORMAT_VERSION:
                raise ValueError(f"version {header.get('version')} (expected {_FORMAT_VERSION})")
            if bits == 8:
                k = np.frombuffer(p1, np.int8).astype(np.float32).reshape(h, w) * np.float32(scale)
            else:
                signs = np.unpackbits(np.frombuffer(p1, np.uint8))[: h * w].reshape(h, w)
                k = (signs.astype(np.float32) * 2 - 1) * np.float32(scale)
            rel = np.frombuffer(p2, "<f2").astype(np.float32).reshape(_rel_shape((h, w)))
        except (ValueError, KeyError, TypeError, struct.error, zlib.error) as exc:
            raise ForensicsError(f"fingerprint bytes are malformed ({exc}); re-provision the fingerprint") from None
        return cls(pattern=k, predictor=rel, model=str(header["model"]), images=int(header["images"]), bits=bits,
                   scale=scale, modality=str(header.get("modality", "")))

    def quantised(self, bits: int = 8) -> Fingerprint:
        """The fingerprint as the device will hold it (round trip through the stored form)."""
        same = bits == self.bits
        return Fingerprint.from_bytes(Fingerprint(self.pattern, self.predictor, self.model, self.images, bits,
                                                  self.scale if same else 0.0, self.modality).to_bytes())


def _rel_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    return (math.ceil(shape[0] / _REL_BLOCK), math.ceil(shape[1] / _REL_BLOCK))


@dataclass
class FingerprintEnrollment:
    """Streaming maximum-likelihood estimate over authentic images or flat-field frames of one
    detector (float64 sums; the images themselves are not kept)."""

    shape: tuple[int, int]
    model: str = "additive"
    images: int = 0
    _wi: np.ndarray = field(init=False, repr=False)
    _ii: np.ndarray = field(init=False, repr=False)
    _ww: np.ndarray = field(init=False, repr=False)
    _om: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.model not in _MODELS:
            raise ForensicsError(f"fingerprint model {self.model!r} is not one of {_MODELS}")
        self._wi = np.zeros(self.shape, np.float64)
        self._ii = np.zeros(self.shape, np.float64)
        self._ww = np.zeros(self.shape, np.float64)
        self._om = np.zeros((-(-self.shape[0] // WB), -(-self.shape[1] // WB)), np.float64)

    def add(self, frame: np.ndarray) -> None:
        if frame.shape != self.shape:
            raise ForensicsError(f"enrolment image is {frame.shape}, the detector is {self.shape}: enrol "
                                 "with full-size native-grid images of one detector")
        w32, om = noise_residual(frame, with_weight=True)
        w = w32.astype(np.float64)
        self._om += om
        i = _signal(frame, self.model).astype(np.float64)
        self._wi += w * i
        self._ii += i * i
        self._ww += w * w
        self.images += 1

    def finish(self) -> Fingerprint:
        if self.images == 0:
            raise ForensicsError("no enrolment images were added")
        k = self._wi / np.maximum(self._ii, 1e-12)
        k -= k.mean(axis=1, keepdims=True)
        k -= k.mean(axis=0, keepdims=True)
        k = _suppress_spectral_peaks(k)
        # Energy of the estimation noise per pixel: var(K_hat) ~ sigma^2 / sum(I^2), sigma^2 ~ sum(W^2)/N.
        noise = self._ww / (self.images * np.maximum(self._ii, 1e-12))
        rel = np.clip(1.0 - _block_sum(noise) / np.maximum(_block_sum(k * k), 1e-30), 0.0, 1.0)
        per = _REL_BLOCK // WB
        mean_weight = np.maximum(_block_sum(self._om, per) / (self.images * _block_sum(np.ones(self._om.shape), per)), 1e-3)
        # where the enrolment noise dominates the estimate (rel < 0.25) the pattern is not known well
        # enough to say it is missing: predictor 0 = "do not judge this block"
        predictor = np.where(rel >= 0.25, rel / mean_weight, 0.0)
        return Fingerprint(pattern=k.astype(np.float32), predictor=predictor.astype(np.float32),
                           model=self.model, images=self.images)


def enroll(frames: Iterable[np.ndarray], model: str = "additive") -> Fingerprint:
    """Fingerprint from authentic native-grid frames of one detector (all the same shape)."""
    acc: FingerprintEnrollment | None = None
    for f in frames:
        if acc is None:
            acc = FingerprintEnrollment((int(f.shape[0]), int(f.shape[1])), model)
        acc.add(f)
    if acc is None:
        raise ForensicsError("no enrolment images were given")
    return acc.finish()


def _signal(x: np.ndarray, model: str) -> np.ndarray:
    return x if model == "multiplicative" else np.ones_like(x)


def _suppress_spectral_peaks(k: np.ndarray, factor: float = 3.0) -> np.ndarray:
    """Attenuate DFT coefficients stronger than ``factor`` x the median magnitude: periodic
    patterns (grid lines, readout blocks) are common to many detectors (Chen et al. 2008 sec. IV)."""
    f = np.fft.rfft2(k)
    mag = np.abs(f)
    limit = factor * np.median(mag)
    f *= np.minimum(1.0, limit / np.maximum(mag, 1e-30))
    return np.fft.irfft2(f, s=k.shape)


def _block_sum(a: np.ndarray, b: int = _REL_BLOCK) -> np.ndarray:
    h, w = a.shape
    hp, wp = math.ceil(h / b) * b, math.ceil(w / b) * b
    p = np.pad(a, ((0, hp - h), (0, wp - w)))
    return p.reshape(hp // b, b, wp // b, b).sum(axis=(1, 3))
