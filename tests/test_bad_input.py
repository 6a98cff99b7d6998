"""Bad input: every file the agent cannot read becomes an ``unreadable`` verdict with a specific
reason code, memory stays bounded whatever a header declares, and ``edge-agent scan`` carries on
with the next file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from edge_agent.decode import decode_path
from edge_agent.errors import UnreadableImage
from edge_agent.pipeline import Pipeline
from sample_images import (
    LOSSLESS,
    encode,
    new_image,
    paste_noise,
    png_with_absurd_size,
    radiograph_crop,
    save,
    smooth_image,
    to_uint,
    with_transfer_syntax,
)

# pydicom warns when encapsulated pixel data ends without its delimiter; the verdict says it.
pytestmark = pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")


def _cut(src: Path, dst: Path, length: int) -> Path:
    dst.write_bytes(src.read_bytes()[:length])
    return dst


def _declare_size(src: Path, dst: Path, rows: int, columns: int, frames: int | None = None) -> Path:
    """Copy ``src`` keeping its (small) pixel data but declaring another size."""
    ds = pydicom.dcmread(src)
    ds.Rows, ds.Columns = rows, columns
    if frames is not None:
        ds.NumberOfFrames = frames
    return save(ds, dst)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """name -> (file, the reason code its verdict must carry)."""
    d = tmp_path_factory.mktemp("bad")
    good = save(radiograph_crop("RG3_UNCR.dcm", size=256), d / "source" / "good.dcm")
    raw = good.read_bytes()
    ls = encode(good, d / "source" / "good.jpeg-ls.dcm", LOSSLESS["jpeg-ls-lossless"][0])
    deflated = encode(good, d / "source" / "good.deflated.dcm", LOSSLESS["deflated-explicit-vr-little-endian"][0])
    noisy = to_uint(paste_noise(smooth_image(256, 256), (0, 0, 256, 256)), 8)
    Image.fromarray(noisy).save(d / "source" / "good.png")
    Image.fromarray(noisy).save(d / "source" / "good.jpg", quality=90)
    png, jpg = (d / "source" / "good.png").read_bytes(), (d / "source" / "good.jpg").read_bytes()
    no_pixels = radiograph_crop("RG3_UNCR.dcm", size=256)
    del no_pixels.PixelData
    palette_without_lut = new_image(to_uint(smooth_image(64, 64), 8), "PALETTE COLOR", 8)
    files = {
        "truncated-in-pixel-data": (_cut(good, d / "cut_pixels.dcm", int(len(raw) * 0.6)), "truncated"),
        "truncated-in-compressed-pixel-data": (
            _cut(ls, d / "cut_jpeg_ls.dcm", int(ls.stat().st_size * 0.5)),
            "truncated",
        ),
        # three bytes into the value of Patient's Name, long before the pixel data
        "truncated-in-header": (_cut(good, d / "cut_header.dcm", raw.index(b"CompressedSamples^RG3") + 3), "truncated"),
        "truncated-in-file-meta": (_cut(good, d / "cut_meta.dcm", 150), "truncated"),
        "truncated-deflated": (_cut(deflated, d / "cut_deflated.dcm", deflated.stat().st_size // 2), "truncated"),
        "truncated-png": (_write(d / "cut.png", png[: len(png) // 2]), "truncated"),
        "truncated-jpeg": (_write(d / "cut.jpg", jpg[: len(jpg) // 2]), "truncated"),
        "empty": (_write(d / "empty.dcm", b""), "empty"),
        "text": (_write(d / "notes.txt", b"Patient positioned PA, 180 cm.\nRepeat exposure.\n" * 20), "not_an_image"),
        "no-pixel-data": (save(no_pixels, d / "no_pixels.dcm"), "no_pixel_data"),
        # a private Transfer Syntax UID nobody can decode
        "private-transfer-syntax": (
            with_transfer_syntax(ls, d / "private_ts.dcm", "1.3.6.1.4.1.99999.1.2.4.70"),
            "unsupported_encoding",
        ),
        # a real encoder's output that no installed plugin decodes: JPEG progressive (process 10+12)
        "jpeg-progressive": (encode(good, d / "progressive.dcm", ("dcmcjpeg", "+ep", "+sr")), "unsupported_encoding"),
        # US Rows/Columns top out at 65535: the largest frame a header can declare, 4.3 Gpixel
        "absurd-size": (_declare_size(good, d / "absurd.dcm", 65535, 65535), "too_large"),
        "absurd-size-compressed": (_declare_size(ls, d / "absurd_jpeg_ls.dcm", 65535, 65535), "too_large"),
        "absurd-frame-count": (_declare_size(good, d / "absurd_frames.dcm", 256, 256, frames=2_000_000_000), "too_large"),
        "absurd-png": (png_with_absurd_size(d / "absurd.png", 100_000, 100_000), "too_large"),
        "palette-without-lookup-table": (save(palette_without_lut, d / "palette_no_lut.dcm"), "bad_header"),
    }
    return files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CASES = [
    "truncated-in-pixel-data",
    "truncated-in-compressed-pixel-data",
    "truncated-in-header",
    "truncated-in-file-meta",
    "truncated-deflated",
    "truncated-png",
    "truncated-jpeg",
    "empty",
    "text",
    "no-pixel-data",
    "private-transfer-syntax",
    "jpeg-progressive",
    "absurd-size",
    "absurd-size-compressed",
    "absurd-frame-count",
    "absurd-png",
    "palette-without-lookup-table",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_gets_an_unreadable_verdict_with_a_specific_reason(
    case: str, bad_files: dict[str, tuple[Path, str]], tiny_pipeline: Pipeline
) -> None:
    path, code = bad_files[case]
    [verdict] = tiny_pipeline.process(path)
    assert (verdict.verdict, verdict.score, verdict.frame, verdict.model) == ("unreadable", None, None, None)
    [reason] = verdict.reasons
    assert reason.code == code, reason.message
    assert len(reason.message) > 10
    assert verdict.to_dict()["reasons"] == [{"code": code, "message": reason.message}]


def test_the_source_files_of_the_bad_ones_are_fine(bad_files: dict[str, tuple[Path, str]]) -> None:
    # Guards the cases above: each damage, not the source, makes the file unreadable.
    source = bad_files["truncated-in-pixel-data"][0].parent / "source"
    for name in ("good.dcm", "good.jpeg-ls.dcm", "good.deflated.dcm", "good.png", "good.jpg"):
        assert decode_path(source / name).frames[0].shape == (256, 256)


@pytest.mark.parametrize("case", ["absurd-size", "absurd-size-compressed", "absurd-frame-count", "absurd-png"])
def test_absurd_declared_size_is_rejected_before_any_big_allocation(
    case: str, bad_files: dict[str, tuple[Path, str]]
) -> None:
    path, _ = bad_files[case]
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(UnreadableImage) as err:
            decode_path(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.code == "too_large"
    assert peak < 32 * 2**20, f"decoding {case} peaked at {peak / 2**20:.0f} MiB"


def test_missing_file_gets_an_unreadable_verdict(tmp_path: Path, tiny_pipeline: Pipeline) -> None:
    [verdict] = tiny_pipeline.process(tmp_path / "gone.dcm")
    assert (verdict.verdict, verdict.reasons[0].code) == ("unreadable", "missing")


def test_an_unexpected_decoder_error_becomes_an_unreadable_verdict_not_a_crash(
    tmp_path: Path, tiny_pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_decoder(path: object, limits: object) -> None:
        raise IndexError("a bug in a decoder plugin")

    monkeypatch.setattr("edge_agent.pipeline.decode_path", broken_decoder)
    [verdict] = tiny_pipeline.process(tmp_path / "any.dcm")
    assert (verdict.verdict, verdict.reasons[0].code) == ("unreadable", "decode_failed")
    assert "a bug in a decoder plugin" in verdict.reasons[0].message


def test_a_truncated_file_with_intact_pixels_before_the_cut_still_reports_truncation(
    bad_files: dict[str, tuple[Path, str]],
) -> None:
    # The message tells the operator what happened and what to do.
    path, _ = bad_files["truncated-in-pixel-data"]
    with pytest.raises(UnreadableImage) as err:
        decode_path(path)
    assert "cut short" in str(err.value) and "send the image again" in str(err.value)


def test_scan_keeps_going_after_each_bad_file(
    bad_files: dict[str, tuple[Path, str]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    expected: dict[str, str] = {}
    for i, case in enumerate(CASES):  # interleave: bad, good, bad, good, ...
        path, code = bad_files[case]
        bad = folder / f"{i:02d}a_{path.name}"
        bad.write_bytes(path.read_bytes())
        expected[str(bad)] = code
        good = save(new_image(to_uint(smooth_image(128, 128), 8), "MONOCHROME2", 8), folder / f"{i:02d}b_good.dcm")
        expected[str(good)] = "authentic"
    missing = str(tmp_path / "not-there.dcm")
    expected[missing] = "missing"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "scan", "--jsonl", "--backend", "onnxruntime",
         "--model", str(tiny_model_dir), str(folder), missing],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 4, proc.stderr  # unreadable files present, nothing flagged
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == list(expected)  # every file, in walk order
    for line in lines:
        want = expected[line["path"]]
        if want == "authentic":
            assert line["verdict"] == "authentic" and 0.0 <= line["score"] <= 1.0
        else:
            assert (line["verdict"], line["score"], line["reasons"][0]["code"]) == ("unreadable", None, want)
