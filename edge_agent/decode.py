"""Decode an acquired image into grey pixels at its native grid, plus the facts the agent reports.

Inputs: DICOM Part 10 files (PS3.10) in any transfer syntax pydicom and its pixel-data
plugins decode (implicit/explicit VR little endian, deflated, RLE, JPEG baseline and
lossless, JPEG-LS, JPEG 2000), and PNG / JPEG files.

Output contract (shared with model training, so real and fake pass one format chain):
every frame is a 2-D ``float32`` array in [0, 1] in MONOCHROME2 polarity (PS3.3 C.7.6.3.1.2),
never resized. Integer samples are scaled by their full stored range (8-bit by 255,
BitsStored bits by ``2**BitsStored - 1``), so the scaling depends on the encoding's declared
depth only, not on the image content; lossless encodings of one image decode identically.
Colour is reduced to ITU-R BT.601 luma.

Rescale Slope/Intercept (the Modality LUT, PS3.3 C.11.1) is a linear map of the stored values;
normalising the rescaled values by the rescaled range gives the same numbers, so only the sign of
the slope matters (a negative slope flips polarity). The slope and intercept are kept in the facts.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from PIL import Image, UnidentifiedImageError

from .errors import UnreadableImage

__all__ = ["DecodedImage", "ImageFacts", "DecodeLimits", "decode_path", "decode_bytes"]

# BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds that keep memory in check whatever a file declares."""

    max_file_bytes: int = 1 << 30  # 1 GiB
    max_frame_pixels: int = 40_000 * 40_000 // 16  # 100 Mpixel per frame
    max_total_pixels: int = 400_000_000  # all frames of one object

    def __post_init__(self) -> None:
        if min(self.max_file_bytes, self.max_frame_pixels, self.max_total_pixels) <= 0:
            raise ValueError("decode limits must be positive")


@dataclass(frozen=True)
class ImageFacts:
    """What the agent knows about an image besides its pixels. Stays on the device as is;
    anything that leaves it is hashed or dropped by the signing stage."""

    container: str  # "dicom" | "png" | "jpeg" | other Pillow format name, lower case
    file_sha256: str
    pixel_sha256: str  # over the decoded stored samples, so lossless re-encodings agree
    rows: int
    columns: int
    frames: int
    bits_stored: int
    photometric: str
    modality: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax_uid: str = ""
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0


@dataclass(frozen=True)
class DecodedImage:
    frames: tuple[np.ndarray, ...]
    facts: ImageFacts


def decode_path(path: str | Path, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    """Read and decode one file. Raises :class:`UnreadableImage` with a code and a sentence."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise UnreadableImage("missing", f"{p}: no such file") from None
    except OSError as exc:
        raise UnreadableImage("io_error", f"{p}: cannot be read ({exc.strerror})") from None
    if size > limits.max_file_bytes:
        raise UnreadableImage(
            "too_large", f"file is {size} bytes; the limit is {limits.max_file_bytes} bytes"
        )
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UnreadableImage("io_error", f"{p}: cannot be read ({exc.strerror})") from None
    return decode_bytes(data, limits)


def decode_bytes(data: bytes, limits: DecodeLimits = DecodeLimits()) -> DecodedImage:
    """Decode the bytes of one file (DICOM, PNG or JPEG)."""
    if not data:
        raise UnreadableImage("empty", "the file is empty (0 bytes)")
    file_sha = hashlib.sha256(data).hexdigest()
    if _looks_like_dicom(data):
        return _decode_dicom(data, file_sha, limits)
    try:
        return _decode_raster(data, file_sha, limits)
    except UnreadableImage as exc:
        if exc.code != "not_an_image":
            raise
    # No preamble and not a raster image: a raw DICOM dataset is the last chance.
    return _decode_dicom(data, file_sha, limits)


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def _decode_dicom(data: bytes, file_sha: str, limits: DecodeLimits) -> DecodedImage:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not _looks_like_dicom(data))
    except InvalidDicomError:
        raise UnreadableImage("not_an_image", "neither DICOM (PS3.10) nor a PNG/JPEG image") from None
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise UnreadableImage("bad_header", f"DICOM header cannot be parsed: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if len(ds) == 0:
            raise UnreadableImage("not_an_image", "neither DICOM (PS3.10) nor a PNG/JPEG image")
        raise UnreadableImage("no_pixel_data", "DICOM object has no Pixel Data (7FE0,0010)")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        bits_stored = int(getattr(ds, "BitsStored", ds.BitsAllocated))
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
    except (AttributeError, ValueError, TypeError) as exc:
        raise UnreadableImage("bad_header", f"image pixel module incomplete: {exc}") from None
    _check_size(rows, cols, frames, limits)
    try:
        arr = ds.pixel_array
    except NotImplementedError as exc:
        tsuid = ds.file_meta.get("TransferSyntaxUID", "?") if hasattr(ds, "file_meta") else "?"
        raise UnreadableImage("unsupported_encoding", f"no decoder for transfer syntax {tsuid}: {exc}") from None
    except Exception as exc:
        raise UnreadableImage("truncated_or_corrupt", f"pixel data cannot be decoded: {exc}") from None

    samples = int(getattr(ds, "SamplesPerPixel", 1))
    arr = np.asarray(arr)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    grey = [_dicom_frame_to_grey(f, photometric, samples, bits_stored, signed, slope, ds) for f in arr]
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    facts = ImageFacts(
        container="dicom",
        file_sha256=file_sha,
        pixel_sha256=hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(),
        rows=rows,
        columns=cols,
        frames=frames,
        bits_stored=bits_stored,
        photometric=photometric,
        modality=str(getattr(ds, "Modality", "")),
        sop_class_uid=str(getattr(ds, "SOPClassUID", "")),
        sop_instance_uid=str(getattr(ds, "SOPInstanceUID", "")),
        transfer_syntax_uid=tsuid,
        rescale_slope=slope,
        rescale_intercept=intercept,
    )
    return DecodedImage(frames=tuple(grey), facts=facts)


def _dicom_frame_to_grey(
    frame: np.ndarray,
    photometric: str,
    samples: int,
    bits_stored: int,
    signed: bool,
    slope: float,
    ds: pydicom.Dataset,
) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(frame, ds)
        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return _luma(rgb, float((1 << depth) - 1))
    if samples == 3 or frame.ndim == 3:
        # pydicom converts YBR_* to RGB by default when decoding.
        return _luma(frame, float((1 << bits_stored) - 1))
    full = float((1 << bits_stored) - 1)
    grey = frame.astype(np.float32)
    if signed:
        grey += float(1 << (bits_stored - 1))
    grey *= np.float32(1.0 / full)
    np.clip(grey, 0.0, 1.0, out=grey)
    invert = (photometric == "MONOCHROME1") != (slope < 0)
    if invert:
        np.subtract(np.float32(1.0), grey, out=grey)
    return grey


def _luma(rgb: np.ndarray, full: float) -> np.ndarray:
    grey = rgb[..., :3].astype(np.float32) @ _LUMA
    grey *= np.float32(1.0 / full)
    np.clip(grey, 0.0, 1.0, out=grey)
    return grey


def _check_size(rows: int, cols: int, frames: int, limits: DecodeLimits) -> None:
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise UnreadableImage("bad_header", f"declared size {rows}x{cols}x{frames} is not an image")
    if rows * cols > limits.max_frame_pixels or rows * cols * frames > limits.max_total_pixels:
        raise UnreadableImage(
            "too_large",
            f"declared size {rows}x{cols} pixels x {frames} frames exceeds the limit of "
            f"{limits.max_frame_pixels} pixels per frame / {limits.max_total_pixels} in total",
        )


def _decode_raster(data: bytes, file_sha: str, limits: DecodeLimits) -> DecodedImage:
    try:
        img = Image.open(io.BytesIO(data))
        cols, rows = img.size
        _check_size(rows, cols, 1, limits)
        img.load()
    except UnidentifiedImageError:
        raise UnreadableImage("not_an_image", "neither DICOM (PS3.10) nor a PNG/JPEG image") from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage("too_large", str(exc)) from None
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage("truncated_or_corrupt", f"image data cannot be decoded: {exc}") from None
    fmt = (img.format or "raster").lower()
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        raw = np.asarray(img)
        bits = 16
        grey = raw.astype(np.float32) * np.float32(1.0 / 65535.0)
        np.clip(grey, 0.0, 1.0, out=grey)
    elif mode == "L":
        raw = np.asarray(img)
        bits = 8
        grey = raw.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        raw = np.asarray(img.convert("RGB"))
        bits = 8
        grey = _luma(raw, 255.0)
    facts = ImageFacts(
        container=fmt,
        file_sha256=file_sha,
        pixel_sha256=hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest(),
        rows=rows,
        columns=cols,
        frames=1,
        bits_stored=bits,
        photometric="MONOCHROME2" if raw.ndim == 2 else "RGB",
    )
    return DecodedImage(frames=(grey,), facts=facts)
