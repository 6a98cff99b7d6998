"""Image I/O shared by every stage: decode through the agent's own chain, write containers.

All pixels that reach the detector (training, thresholds, evaluation) are decoded by
``edge_agent.decode.decode_path`` -- the function the agent runs in the field -- so real and
fake images pass one identical format chain (see the data README's "format trap").
Fakes are written back into the container of the real image they came from (PNG stays PNG,
JPEG keeps its source quantisation tables, DICOM keeps its header and BitsStored).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from edge_agent.decode import decode_bytes, decode_path
from edge_agent.tiling import grid_tiles

__all__ = ["load_grey", "load_grey_bytes", "encode_like", "grid_tiles", "pad_to_tile", "resize_float",
           "ContainerSpec", "container_of"]


def load_grey(path: str | Path) -> np.ndarray:
    """First frame of an image file, as the agent sees it ([0,1] float32, MONOCHROME2)."""
    return np.asarray(decode_path(path).frames[0], dtype=np.float32)


def load_grey_bytes(data: bytes) -> np.ndarray:
    """Same as :func:`load_grey` for in-memory file bytes (robustness tests)."""
    return np.asarray(decode_bytes(data).frames[0], dtype=np.float32)


class ContainerSpec:
    """How a source file is encoded, so a derived image can be re-encoded the same way."""

    def __init__(self, kind: str, mode: str = "L", qtables: object = None, subsampling: int = -1,
                 dicom_path: str = "", bits: int = 8) -> None:
        self.kind, self.mode, self.qtables, self.subsampling = kind, mode, qtables, subsampling
        self.dicom_path, self.bits = dicom_path, bits


def container_of(path: str | Path) -> ContainerSpec:
    """Inspect a source file's container (format, colour mode, JPEG tables, DICOM depth)."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        return ContainerSpec("dicom", dicom_path=str(p), bits=int(ds.BitsStored))
    with Image.open(p) as im:
        mode = "RGB" if im.mode in ("RGB", "RGBA", "P", "CMYK") else "L"
        if im.format == "JPEG":
            from PIL import JpegImagePlugin
            sub = JpegImagePlugin.get_sampling(im)
            return ContainerSpec("jpeg", mode, qtables=getattr(im, "quantization", None), subsampling=sub)
        return ContainerSpec("png", mode)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def encode_like(img: np.ndarray, spec: ContainerSpec, jpeg_quality: int | None = None) -> tuple[bytes, str]:
    """Encode a [0,1] grey image in the container described by ``spec``; returns (bytes, suffix).

    ``jpeg_quality`` forces a JPEG at that quality (augmentation / robustness) instead of the
    source tables.
    """
    if spec.kind == "dicom":
        return _encode_dicom(img, spec), ".dcm"
    pil = Image.fromarray(_to_uint8(img), "L")
    if spec.mode == "RGB":
        pil = pil.convert("RGB")
    buf = io.BytesIO()
    if jpeg_quality is not None:
        pil.save(buf, "JPEG", quality=int(jpeg_quality))
        return buf.getvalue(), ".jpg"
    if spec.kind == "jpeg":
        kw: dict[str, object] = {"qtables": spec.qtables}
        if spec.mode == "RGB" and spec.subsampling >= 0:
            kw["subsampling"] = spec.subsampling
        pil.save(buf, "JPEG", **kw)
        return buf.getvalue(), ".jpg"
    pil.save(buf, "PNG")
    return buf.getvalue(), ".png"


def _encode_dicom(img: np.ndarray, spec: ContainerSpec) -> bytes:
    """Write pixels into a copy of the source DICOM, uncompressed (Explicit VR LE), same depth.

    PS3.3 C.7.6.3.1.2: MONOCHROME1 stores inverted values, so invert back before storing.
    """
    ds = pydicom.dcmread(spec.dicom_path)
    full = (1 << spec.bits) - 1
    grey = np.clip(img, 0.0, 1.0)
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        grey = 1.0 - grey
    stored = np.round(grey * full).astype(np.uint16)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    ds["PixelData"].is_undefined_length = False
    for tag in ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if tag in ds:
            del ds[tag]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pad_to_tile(img: np.ndarray, tile: int) -> np.ndarray:
    """Symmetric padding of short axes, exactly as ``edge_agent.tiling.grid_tiles`` pads."""
    pad_y, pad_x = max(0, tile - img.shape[0]), max(0, tile - img.shape[1])
    while pad_y > 0 or pad_x > 0:
        sy, sx = min(pad_y, img.shape[0]), min(pad_x, img.shape[1])
        img = np.pad(img, ((0, sy), (0, sx)), mode="symmetric")
        pad_y, pad_x = pad_y - sy, pad_x - sx
    return img


_R = Image.Resampling
_RESAMPLE = {"nearest": _R.NEAREST, "bilinear": _R.BILINEAR, "bicubic": _R.BICUBIC,
             "lanczos": _R.LANCZOS, "box": _R.BOX}


def resize_float(img: np.ndarray, height: int, width: int, method: str = "bicubic") -> np.ndarray:
    """Resize a float image with Pillow's 32-bit float path (no 8-bit rounding)."""
    pil = Image.fromarray(img.astype(np.float32), "F")
    out = np.asarray(pil.resize((int(width), int(height)), _RESAMPLE[method]), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)
