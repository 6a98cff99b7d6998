"""Test images made at test time: crops of real radiographs, DICOM objects built with pydicom,
re-encodings by DCMTK (an encoder independent of the decoder under test), PNG/JPEG via Pillow.

Pure builders: each takes arrays or paths and writes one file, so a test shows what it feeds in.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

# Values a test plants in a file to check they never leave the device.
PATIENT = {
    "PatientName": "Lindqvist^Astrid^Maria",
    "PatientID": "PID-4471-93X",
    "PatientBirthDate": "19530214",
    "AccessionNumber": "ACC88213377",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.7781234509871",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.7781234509872",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.7781234509873",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.7781234509874",
}


def pydicom_test_file(name: str) -> Path:
    """A file from pydicom's or pydicom-data's test files, without touching the network."""
    found = get_testdata_file(name, download=False)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed; pip install pydicom-data")
    return Path(str(found))


def radiograph_crop(name: str = "RG3_UNCR.dcm", size: int = 512) -> Dataset:
    """The centre ``size`` x ``size`` of a real CR radiograph, keeping its bit depth, photometric
    interpretation (MONOCHROME1) and header; a small image keeps every encoder fast."""
    ds = pydicom.dcmread(pydicom_test_file(name))
    arr = ds.pixel_array
    r0, c0 = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    ds.PixelData = np.ascontiguousarray(arr[r0 : r0 + size, c0 : c0 + size]).tobytes()
    ds.Rows = ds.Columns = size
    return ds


def new_image(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attrs: object,
) -> Dataset:
    """A Secondary Capture object holding ``pixels`` (pydicom sets the Image Pixel module)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "PHANTOM"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dx_acquisitions(folder: Path, panel_seed: int, n: int, seed: int, shape: tuple[int, int] = (512, 640),
                    modality: str = "DX") -> list[Path]:
    """``n`` authentic exposures of one simulated panel (the physics simulator), as 12-bit DICOM
    files ``img00.dcm``... in ``folder``, labelled ``modality``."""
    from edge_agent.forensics.simulator import Panel, PanelSpec

    panel, rng = Panel(PanelSpec(panel_seed, shape=shape)), np.random.default_rng(seed)
    return [save(new_image(np.round(panel.acquire(rng) * 4095).astype(np.uint16), bits_stored=12, Modality=modality),
                 folder / f"img{i:02d}.dcm") for i in range(n)]


def dcmtk(tool: str, *args: str | Path) -> None:
    """Run a DCMTK command line tool; fail the test with its output if it fails."""
    exe = shutil.which(tool)
    if exe is None:
        raise RuntimeError(f"DCMTK's {tool} is not on PATH; apt-get install dcmtk (scripts/setup.sh does)")
    proc = subprocess.run([exe, "-q", *map(str, args)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(map(str, args))} failed: {proc.stdout}{proc.stderr}")


# name -> (DCMTK tool and options, Transfer Syntax UID the result must carry)
LOSSLESS = {
    "implicit-vr-little-endian": (("dcmconv", "+ti"), "1.2.840.10008.1.2"),
    "deflated-explicit-vr-little-endian": (("dcmconv", "+td"), "1.2.840.10008.1.2.1.99"),
    "explicit-vr-big-endian": (("dcmconv", "+tb"), "1.2.840.10008.1.2.2"),
    "rle": (("dcmcrle",), "1.2.840.10008.1.2.5"),
    "jpeg-lossless-process14-sv1": (("dcmcjpeg", "+e1"), "1.2.840.10008.1.2.4.70"),
    "jpeg-lossless-process14": (("dcmcjpeg", "+el"), "1.2.840.10008.1.2.4.57"),
    "jpeg-ls-lossless": (("dcmcjpls", "+el"), "1.2.840.10008.1.2.4.80"),
}

# name -> (tool and options, Transfer Syntax UID, largest mean |difference| in [0, 1] units).
# "+sr" scales by the declared range (not the image's min/max) when the depth must shrink.
LOSSY = {
    "jpeg-baseline": (("dcmcjpeg", "+eb", "+sr", "+q", "90"), "1.2.840.10008.1.2.4.50", 0.01),
    "jpeg-extended-12bit": (("dcmcjpeg", "+ee", "+sr", "+q", "90"), "1.2.840.10008.1.2.4.51", 0.005),
    "jpeg-ls-near-lossless": (("dcmcjpls", "+en", "+md", "2"), "1.2.840.10008.1.2.4.81", 0.005),
}


def encode(src: Path, dst: Path, tool_and_options: tuple[str, ...]) -> Path:
    tool, *options = tool_and_options
    dcmtk(tool, *options, src, dst)
    return dst


def with_transfer_syntax(src: Path, dst: Path, uid: str) -> Path:
    """Copy ``src`` declaring another Transfer Syntax UID (PS3.10 7.1), bytes otherwise unchanged.

    pydicom refuses to write a syntax it does not know, so write a placeholder UID of the same
    length and patch the bytes."""
    ds = pydicom.dcmread(src)
    placeholder = "1.2.3." + "9" * (len(uid) - 6)
    ds.file_meta.TransferSyntaxUID = UID(placeholder)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    data = buf.getvalue()
    assert data.count(placeholder.encode()) == 1
    dst.write_bytes(data.replace(placeholder.encode(), uid.encode()))
    return dst


def smooth_image(height: int = 512, width: int = 512) -> np.ndarray:
    """A smooth diagonal ramp in [0.1, 0.9]: no high-frequency energy for the tiny model."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return 0.1 + 0.8 * (0.6 * y / max(1, height - 1) + 0.4 * x / max(1, width - 1))


def paste_noise(image: np.ndarray, box: tuple[int, int, int, int], seed: int = 7) -> np.ndarray:
    """Fill ``box`` = (top, left, height, width) with strong uniform noise (a crude splice)."""
    top, left, h, w = box
    out = image.copy()
    out[top : top + h, left : left + w] = np.random.default_rng(seed).uniform(0.0, 1.0, (h, w))
    return out


def to_uint(image: np.ndarray, bits: int) -> np.ndarray:
    """[0, 1] floats to integers of ``bits`` bits (uint8 up to 8 bits, else uint16)."""
    dtype = np.uint8 if bits <= 8 else np.uint16
    return np.round(np.clip(image, 0, 1) * ((1 << bits) - 1)).astype(dtype)


def png_with_absurd_size(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` with a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
    return path
