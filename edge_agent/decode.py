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

A file that cannot be decoded raises :class:`UnreadableImage` with one of these codes:
``missing``, ``io_error``, ``empty``, ``not_an_image`` (neither DICOM nor a raster image),
``truncated`` (the file ends inside the header or the pixel data), ``bad_header``,
``no_pixel_data``, ``unsupported_encoding`` (no decoder for the Transfer Syntax),
``too_large`` (the declared size exceeds :class:`DecodeLimits`; checked before any pixel
buffer is allocated) and ``truncated_or_corrupt`` (the pixel data does not decode).
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
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
    # The parsed DICOM header (and raw pixel bytes) for the metadata and signature checks;
    # None for PNG/JPEG. Stays on the device like ``facts``.
    dataset: pydicom.Dataset | None = field(default=None, repr=False, compare=False)


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


# First element group of a DICOM data set written without the PS3.10 preamble (old ACR-NEMA
# style files, or a bare data set): File Meta (0002) or Identifying (0008), in either byte order.
# Without this check any text file "parses" as a data set of garbage elements.
_RAW_DATASET_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _looks_like_raw_dataset(data: bytes) -> bool:
    return len(data) >= 8 and data[:2] in _RAW_DATASET_STARTS


class _CutDetector(io.BytesIO):
    """A byte stream that notices when the file ends inside a data element.

    pydicom stops quietly at the end of the data, keeping a short last value or dropping an
    unterminated one. Its parser starts every element with an 8-byte read, so a read that comes
    back empty there is the clean end of the file; any other short read means the file was cut.
    """

    cut_at: int | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        start = self.tell()
        out = super().read(size)
        if size is not None and 0 < size and len(out) < size and self.cut_at is None:
            clean_end = size == 8 and not out
            if not clean_end and start >= 132:  # the preamble is probed, not parsed
                self.cut_at = start + len(out)
        return out


def _truncated(data: bytes, where: str) -> UnreadableImage:
    return UnreadableImage(
        "truncated",
        f"the file ends {where} after {len(data)} bytes: it was cut short, e.g. by an interrupted "
        "transfer or copy; send the image again",
    )


def _pixel_data_lengths(ds: pydicom.Dataset) -> tuple[int, int]:
    """(bytes read, bytes declared) of a defined-length Pixel Data element, as parsed."""
    elem = ds.get_item("PixelData")
    declared = getattr(elem, "length", 0xFFFFFFFF)
    if elem is None or not isinstance(elem.value, bytes) or declared == 0xFFFFFFFF:
        return 0, 0  # encapsulated (undefined length): pydicom drops it when unterminated
    return len(elem.value), int(declared)


_NOT_AN_IMAGE = "neither DICOM (PS3.10) nor an image format Pillow reads (PNG, JPEG, TIFF, WebP, BMP, GIF...)"


def _decode_dicom(data: bytes, file_sha: str, limits: DecodeLimits) -> DecodedImage:
    preamble = _looks_like_dicom(data)
    if not preamble and not _looks_like_raw_dataset(data):
        raise UnreadableImage("not_an_image", _NOT_AN_IMAGE)
    stream = _CutDetector(data)
    try:
        ds = pydicom.dcmread(stream, force=not preamble)
    except InvalidDicomError:
        raise UnreadableImage("not_an_image", _NOT_AN_IMAGE) from None
    except zlib.error as exc:
        # Deflated Explicit VR Little Endian (PS3.5 A.5): the whole data set is one deflate stream.
        if "incomplete or truncated" in str(exc):
            raise _truncated(data, "inside the deflated data set") from None
        raise UnreadableImage("bad_header", f"deflated data set cannot be inflated: {exc}") from None
    except Exception as exc:  # pydicom raises many types on damaged headers
        if stream.cut_at is not None:
            raise _truncated(data, "inside the DICOM header") from None
        raise UnreadableImage("bad_header", f"DICOM header cannot be parsed: {exc}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if stream.cut_at is not None:
            raise _truncated(data, "inside a data element")
        if len(ds) == 0:
            if preamble:
                raise _truncated(data, "after the File Meta Information, before the data set")
            raise UnreadableImage("not_an_image", _NOT_AN_IMAGE)
        raise UnreadableImage("no_pixel_data", "DICOM object has no Pixel Data (7FE0,0010)")
    if stream.cut_at is not None:
        have, declared = _pixel_data_lengths(ds)
        if have < declared:
            raise _truncated(data, f"inside the Pixel Data ({have} of its {declared} bytes are there)")
    _declare_detected_encoding(ds)
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
        if stream.cut_at is not None:
            raise _truncated(data, "inside the Pixel Data") from None
        raise UnreadableImage("truncated_or_corrupt", f"pixel data cannot be decoded: {exc}") from None

    samples = int(getattr(ds, "SamplesPerPixel", 1))
    arr = np.asarray(arr)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    try:
        grey = [_dicom_frame_to_grey(f, photometric, samples, bits_stored, signed, slope, ds) for f in arr]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        # e.g. PALETTE COLOR without its lookup tables (PS3.3 C.7.9)
        raise UnreadableImage(
            "bad_header", f"pixels of photometric interpretation {photometric} cannot be converted to grey: {exc}"
        ) from None
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    facts = ImageFacts(
        container="dicom",
        file_sha256=file_sha,
        pixel_sha256=_samples_sha256(arr),
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
    return DecodedImage(frames=tuple(grey), facts=facts, dataset=ds)


def _declare_detected_encoding(ds: pydicom.Dataset) -> None:
    """A bare data set (no PS3.10 File Meta) names no Transfer Syntax, and pydicom will not
    decode its pixels without one: declare the native encoding pydicom detected while reading."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        return
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _samples_sha256(arr: np.ndarray) -> str:
    # Hash little-endian samples: Explicit VR Big Endian decodes to a big-endian array whose
    # bytes differ from the same samples decoded from any other transfer syntax.
    le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(np.ascontiguousarray(le).tobytes()).hexdigest()


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
        raise UnreadableImage("not_an_image", _NOT_AN_IMAGE) from None
    except Image.DecompressionBombError as exc:
        raise UnreadableImage("too_large", str(exc)) from None
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower():  # Pillow: "image file is truncated", "Truncated File Read"
            raise _truncated(data, "inside the image data") from None
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
