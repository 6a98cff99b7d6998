"""Decoding: every common transfer syntax, photometric interpretation, bit depth and container
reaches the model as the same grey MONOCHROME2 pixels (edge_agent/decode.py's output contract).

Encoded variants are made at test time by DCMTK from crops of real CR radiographs
(pydicom-data RG3: 10 bits stored, RG1: 15 bits stored, both MONOCHROME1), so the encoder is
independent of the decoder under test. JPEG 2000 comes from pydicom-data's own encodings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, convert_color_space

from edge_agent.decode import DecodedImage, decode_path
from edge_agent.pipeline import Pipeline
from sample_images import (
    LOSSLESS,
    LOSSY,
    dcmtk,
    encode,
    new_image,
    paste_noise,
    pydicom_test_file,
    radiograph_crop,
    save,
    smooth_image,
    to_uint,
)

SOURCES = {"cr-10bit": "RG3_UNCR.dcm", "cr-15bit": "RG1_UNCR.dcm"}


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("radiographs")
    return {key: save(radiograph_crop(name), d / f"{key}.dcm") for key, name in SOURCES.items()}


@pytest.fixture(scope="module")
def reencoded(radiographs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    d = tmp_path_factory.mktemp("reencoded")
    tools = {**{k: v[0] for k, v in LOSSLESS.items()}, **{k: v[0] for k, v in LOSSY.items()}}
    return {
        (source, variant): encode(src, d / f"{source}.{variant}.dcm", tool)
        for source, src in radiographs.items()
        for variant, tool in tools.items()
    }


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def _score(pipeline: Pipeline, path: Path) -> tuple[float, np.ndarray]:
    [(verdict, fs, _, _)] = pipeline.process_detailed(path)
    assert fs is not None and verdict.score is not None, verdict.reasons
    return verdict.score, fs.tile_logits


# --- transfer syntaxes ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(LOSSLESS))
@pytest.mark.parametrize("source", list(SOURCES))
def test_lossless_encoding_decodes_to_the_same_pixels_bit_for_bit(
    source: str, variant: str, radiographs: dict[str, Path], reencoded: dict[tuple[str, str], Path]
) -> None:
    ref = decode_path(radiographs[source])
    got = decode_path(reencoded[source, variant])
    assert got.facts.transfer_syntax_uid == LOSSLESS[variant][1], "DCMTK did not write the syntax under test"
    assert (got.facts.bits_stored, got.facts.photometric) == (ref.facts.bits_stored, "MONOCHROME1")
    assert len(got.frames) == 1 and got.frames[0].dtype == np.float32 and got.frames[0].shape == (512, 512)
    np.testing.assert_array_equal(got.frames[0], ref.frames[0])
    assert got.facts.pixel_sha256 == ref.facts.pixel_sha256


@pytest.mark.parametrize("variant", list(LOSSLESS))
def test_lossless_encoding_gives_the_same_score_as_uncompressed(
    variant: str,
    radiographs: dict[str, Path],
    reencoded: dict[tuple[str, str], Path],
    tiny_pipeline: Pipeline,
) -> None:
    for source in SOURCES:
        ref_score, ref_logits = _score(tiny_pipeline, radiographs[source])
        score, logits = _score(tiny_pipeline, reencoded[source, variant])
        assert 0.01 < ref_score < 0.99, "a saturated score would hide differences"
        assert score == ref_score
        np.testing.assert_array_equal(logits, ref_logits)


@pytest.mark.parametrize("variant", list(LOSSY))
@pytest.mark.parametrize("source", list(SOURCES))
def test_lossy_encoding_decodes_close_to_the_original(
    source: str, variant: str, radiographs: dict[str, Path], reencoded: dict[tuple[str, str], Path]
) -> None:
    _tool, uid, mean_tolerance = LOSSY[variant]
    ref = decode_path(radiographs[source]).frames[0]
    got = decode_path(reencoded[source, variant])
    assert got.facts.transfer_syntax_uid == uid
    diff = np.abs(got.frames[0].astype(np.float64) - ref)
    assert 0 < diff.mean() <= mean_tolerance
    if variant == "jpeg-ls-near-lossless":
        # NEAR=2: JPEG-LS bounds every sample's error by NEAR (ISO 14495-1), in stored units.
        full = (1 << got.facts.bits_stored) - 1
        assert diff.max() * full <= 2.01  # float32 rounding of the MONOCHROME1 flip


@pytest.fixture(scope="module")
def rg3_full_size() -> dict[str, DecodedImage]:
    return {v: decode_path(pydicom_test_file(f"RG3_{v}.dcm")) for v in ("UNCR", "J2KR", "J2KI", "UNCI")}


def test_jpeg_2000_lossless_from_another_encoder_gives_the_original_pixels_and_score(
    rg3_full_size: dict[str, DecodedImage], tiny_pipeline: Pipeline
) -> None:
    ref, j2k = rg3_full_size["UNCR"], rg3_full_size["J2KR"]
    assert j2k.facts.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
    np.testing.assert_array_equal(j2k.frames[0], ref.frames[0])
    assert j2k.facts.pixel_sha256 == ref.facts.pixel_sha256
    ref_score, ref_logits = _score(tiny_pipeline, pydicom_test_file("RG3_UNCR.dcm"))
    score, logits = _score(tiny_pipeline, pydicom_test_file("RG3_J2KR.dcm"))
    assert score == ref_score
    np.testing.assert_array_equal(logits, ref_logits)


def test_jpeg_2000_lossy_decodes_to_the_reference_decompression_and_close_to_the_original(
    rg3_full_size: dict[str, DecodedImage],
) -> None:
    ref, j2k, unci = rg3_full_size["UNCR"], rg3_full_size["J2KI"], rg3_full_size["UNCI"]
    assert j2k.facts.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"
    # pydicom-data ships the lossy image decompressed by another decoder (RG3_UNCI).
    np.testing.assert_array_equal(j2k.frames[0], unci.frames[0])
    diff = np.abs(j2k.frames[0].astype(np.float64) - ref.frames[0])
    assert 0 < diff.mean() < 0.002 and diff.max() < 0.02


# --- photometric interpretation, depth, sign, rescale ------------------------------------------


def test_monochrome1_is_inverted_to_monochrome2_polarity(tmp_path: Path) -> None:
    ds = radiograph_crop("RG3_UNCR.dcm", size=128)
    stored = ds.pixel_array
    m1 = decode_path(save(ds, tmp_path / "m1.dcm")).frames[0]
    ds.PhotometricInterpretation = "MONOCHROME2"
    m2 = decode_path(save(ds, tmp_path / "m2.dcm")).frames[0]
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    # In MONOCHROME1 the lowest stored value is white: it must come out brightest.
    assert m1[np.unravel_index(stored.argmin(), stored.shape)] == m1.max()
    np.testing.assert_allclose(m2, stored / 1023.0, atol=1e-6)


@pytest.mark.parametrize(
    "bits_stored, dtype", [(8, np.uint8), (8, np.uint16), (10, np.uint16), (12, np.uint16), (14, np.uint16), (16, np.uint16)]
)
def test_each_bit_depth_from_8_to_16_is_scaled_by_its_declared_range(bits_stored: int, dtype: type, tmp_path: Path) -> None:
    full = (1 << bits_stored) - 1
    values: np.ndarray = np.linspace(0, full, 64 * 64).round().astype(dtype).reshape(64, 64)
    got = decode_path(save(new_image(values, "MONOCHROME2", bits_stored), tmp_path / "d.dcm"))
    assert got.facts.bits_stored == bits_stored
    np.testing.assert_allclose(got.frames[0], values / full, atol=1e-6)
    assert got.frames[0].min() == 0.0 and got.frames[0].max() == 1.0


def _signed_ct_like(size: int = 256) -> pydicom.Dataset:
    """12-bit signed samples (-2048..2047) taken from a real radiograph, CT-style rescale."""
    stored = radiograph_crop("RG3_UNCR.dcm", size=size).pixel_array.astype(np.int32)
    signed = (stored * 4 - 2048).clip(-2048, 2047).astype(np.int16)
    return new_image(signed, "MONOCHROME2", 12, RescaleSlope=1, RescaleIntercept=-1024)


def test_signed_pixels_map_the_most_negative_value_to_black(tmp_path: Path) -> None:
    values = np.linspace(-2048, 2047, 64 * 64).round().astype(np.int16).reshape(64, 64)
    got = decode_path(save(new_image(values, "MONOCHROME2", 12), tmp_path / "s.dcm")).frames[0]
    np.testing.assert_allclose(got, (values.astype(np.float64) + 2048) / 4095, atol=1e-6)
    assert got[0, 0] == 0.0 and got[-1, -1] == 1.0


@pytest.mark.parametrize("variant", ["rle", "jpeg-lossless-process14-sv1", "jpeg-ls-lossless"])
def test_signed_pixels_survive_lossless_compression(variant: str, tmp_path: Path) -> None:
    src = save(_signed_ct_like(), tmp_path / "signed.dcm")
    ref = decode_path(src)
    got = decode_path(encode(src, tmp_path / f"signed.{variant}.dcm", LOSSLESS[variant][0]))
    assert got.facts.transfer_syntax_uid == LOSSLESS[variant][1]
    np.testing.assert_array_equal(got.frames[0], ref.frames[0])


def test_rescale_slope_and_intercept_keep_the_pixels_and_are_reported(tmp_path: Path) -> None:
    values = to_uint(smooth_image(64, 64), 12)
    plain = decode_path(save(new_image(values, "MONOCHROME2", 12), tmp_path / "plain.dcm"))
    rescaled = decode_path(
        save(new_image(values, "MONOCHROME2", 12, RescaleSlope="2.5", RescaleIntercept="-1024"), tmp_path / "r.dcm")
    )
    np.testing.assert_array_equal(rescaled.frames[0], plain.frames[0])
    assert (rescaled.facts.rescale_slope, rescaled.facts.rescale_intercept) == (2.5, -1024.0)


def test_negative_rescale_slope_flips_polarity(tmp_path: Path) -> None:
    values = to_uint(smooth_image(64, 64), 12)
    plain = decode_path(save(new_image(values, "MONOCHROME2", 12), tmp_path / "plain.dcm")).frames[0]
    flipped = decode_path(
        save(new_image(values, "MONOCHROME2", 12, RescaleSlope="-1", RescaleIntercept="4095"), tmp_path / "neg.dcm")
    ).frames[0]
    np.testing.assert_allclose(flipped, 1.0 - plain, atol=1e-6)
    # MONOCHROME1 and a negative slope cancel out.
    both = decode_path(
        save(new_image(values, "MONOCHROME1", 12, RescaleSlope="-1", RescaleIntercept="4095"), tmp_path / "m1neg.dcm")
    ).frames[0]
    np.testing.assert_array_equal(both, plain)


# --- multi-frame --------------------------------------------------------------------------------


def _three_frames() -> np.ndarray:
    smooth = smooth_image(256, 256)
    spliced = paste_noise(smooth, (96, 160, 64, 64))
    return np.stack([to_uint(smooth, 8), to_uint(spliced, 8), to_uint(smooth[::-1], 8)])


def test_multi_frame_object_gets_one_verdict_per_frame_with_its_index(tmp_path: Path, tiny_pipeline: Pipeline) -> None:
    frames = _three_frames()
    verdicts = tiny_pipeline.process(save(new_image(frames, "MONOCHROME2", 8), tmp_path / "mf.dcm"))
    assert [v.frame for v in verdicts] == [0, 1, 2]
    assert [v.verdict for v in verdicts] == ["authentic", "synthetic", "authentic"]
    for i, v in enumerate(verdicts):
        [single] = tiny_pipeline.process(save(new_image(frames[i], "MONOCHROME2", 8), tmp_path / f"f{i}.dcm"))
        assert single.frame is None  # a single-frame object has no frame index
        assert v.score == single.score
        assert v.to_dict()["frame"] == i


def test_multi_frame_object_decodes_the_same_after_lossless_compression(tmp_path: Path) -> None:
    src = save(new_image(_three_frames(), "MONOCHROME2", 8), tmp_path / "mf.dcm")
    ref = decode_path(src)
    for variant in ("rle", "jpeg-ls-lossless", "jpeg-lossless-process14-sv1"):
        got = decode_path(encode(src, tmp_path / f"mf.{variant}.dcm", LOSSLESS[variant][0]))
        assert got.facts.frames == 3 and len(got.frames) == 3
        for a, b in zip(got.frames, ref.frames):
            np.testing.assert_array_equal(a, b)


# --- colour -------------------------------------------------------------------------------------


def _colour_image(size: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    rgb = np.stack([0.2 + 0.7 * x, 0.9 - 0.6 * y, 0.5 + 0.4 * np.sin(6 * x * y)], axis=-1)
    return to_uint(rgb, 8)


def test_rgb_object_is_reduced_to_bt601_luma(tmp_path: Path) -> None:
    rgb = _colour_image()
    got = decode_path(save(new_image(rgb, "RGB", 8), tmp_path / "rgb.dcm")).frames[0]
    assert got.shape == rgb.shape[:2]
    np.testing.assert_allclose(got, _luma(rgb), atol=1e-5)


def test_ybr_full_object_decodes_to_the_luma_of_its_rgb_source(tmp_path: Path) -> None:
    rgb = _colour_image()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    got = decode_path(save(new_image(ybr, "YBR_FULL", 8), tmp_path / "ybr.dcm")).frames[0]
    np.testing.assert_allclose(got, _luma(rgb), atol=2.0 / 255)


def test_ybr_full_422_jpeg_baseline_made_by_dcmtk_decodes_to_the_luma_of_its_rgb_source(tmp_path: Path) -> None:
    rgb = _colour_image()
    src = save(new_image(rgb, "RGB", 8), tmp_path / "rgb.dcm")
    jpeg = encode(src, tmp_path / "ybr422.dcm", ("dcmcjpeg", "+eb", "+q", "95"))
    ds = pydicom.dcmread(jpeg, stop_before_pixels=True)
    assert (ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation) == ("1.2.840.10008.1.2.4.50", "YBR_FULL_422")
    got = decode_path(jpeg).frames[0]
    assert np.abs(got - _luma(rgb)).mean() < 0.005


def test_palette_color_object_is_converted_to_grey_through_its_lookup_table(tmp_path: Path) -> None:
    index = to_uint(smooth_image(64, 64), 8)
    entries = np.arange(256, dtype=np.uint16)
    ramps = {"Red": entries * 257, "Green": (255 - entries) * 257, "Blue": np.full(256, 128 * 257, np.uint16)}
    ds = new_image(index, "PALETTE COLOR", 8)
    for colour, lut in ramps.items():
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    got = decode_path(save(ds, tmp_path / "pal.dcm")).frames[0]
    rgb = np.stack([ramps[c][index] for c in ("Red", "Green", "Blue")], axis=-1) / 257.0
    np.testing.assert_allclose(got, _luma(rgb), atol=1e-5)


def test_real_palette_color_file_without_file_meta_decodes_to_the_luma_of_its_colours() -> None:
    # OT-PAL-8-face.dcm is a bare data set (no PS3.10 preamble or File Meta), implicit VR.
    path = pydicom_test_file("OT-PAL-8-face.dcm")
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    got = decode_path(path)
    assert got.facts.photometric == "PALETTE COLOR"
    depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
    expected = apply_color_lut(ds.pixel_array, ds).astype(np.float64) @ [0.299, 0.587, 0.114] / ((1 << depth) - 1)
    np.testing.assert_allclose(got.frames[0], expected, atol=1e-5)
    assert got.frames[0].std() > 0.05


# --- PNG and JPEG files -------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 16])
def test_greyscale_png_decodes_exactly(bits: int, tmp_path: Path) -> None:
    values = to_uint(smooth_image(96, 128), bits)
    path = tmp_path / f"grey{bits}.png"
    Image.fromarray(values).save(path)
    got = decode_path(path)
    assert (got.facts.container, got.facts.bits_stored, got.facts.rows, got.facts.columns) == ("png", bits, 96, 128)
    np.testing.assert_allclose(got.frames[0], values / ((1 << bits) - 1), atol=1e-6)


def test_16_bit_png_and_dicom_holding_the_same_pixels_get_the_same_score(tmp_path: Path, tiny_pipeline: Pipeline) -> None:
    values = to_uint(paste_noise(smooth_image(256, 256), (32, 32, 48, 48)), 16)
    Image.fromarray(values).save(tmp_path / "img.png")
    save(new_image(values, "MONOCHROME2", 16), tmp_path / "img.dcm")
    png, dcm = _score(tiny_pipeline, tmp_path / "img.png"), _score(tiny_pipeline, tmp_path / "img.dcm")
    assert png[0] == dcm[0]
    np.testing.assert_array_equal(png[1], dcm[1])


@pytest.mark.parametrize("suffix", [".webp", ".tif", ".bmp"])
def test_other_raster_formats_a_generator_or_viewer_writes_decode_losslessly(suffix: str, tmp_path: Path) -> None:
    """Generated images arrive as WebP or TIFF as often as PNG: they are judged, not turned away."""
    values = to_uint(smooth_image(96, 128), 8)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(values).save(path, **({"lossless": True} if suffix == ".webp" else {}))
    got = decode_path(path)
    assert (got.facts.rows, got.facts.columns) == (96, 128)
    np.testing.assert_allclose(got.frames[0], values / 255.0, atol=1e-6)


def test_a_text_file_is_unreadable_and_the_reason_names_what_would_be_read(tmp_path: Path) -> None:
    from edge_agent.decode import UnreadableImage

    (tmp_path / "notes.txt").write_text("acquisition notes, not an image")
    with pytest.raises(UnreadableImage) as err:
        decode_path(tmp_path / "notes.txt")
    assert err.value.code == "not_an_image" and "DICOM" in str(err.value) and "WebP" in str(err.value)


def test_greyscale_jpeg_file_decodes_close_to_its_source(tmp_path: Path) -> None:
    values = to_uint(smooth_image(128, 128), 8)
    Image.fromarray(values).save(tmp_path / "g.jpg", quality=95)
    got = decode_path(tmp_path / "g.jpg")
    assert got.facts.container == "jpeg"
    assert np.abs(got.frames[0] - values / 255.0).mean() < 0.005


def test_colour_jpeg_file_and_the_same_jpeg_wrapped_in_dicom_by_img2dcm_agree(tmp_path: Path) -> None:
    rgb = _colour_image()
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=92)
    dcmtk("img2dcm", tmp_path / "c.jpg", tmp_path / "c.dcm")
    as_jpeg, as_dicom = decode_path(tmp_path / "c.jpg"), decode_path(tmp_path / "c.dcm")
    assert as_dicom.facts.transfer_syntax_uid == "1.2.840.10008.1.2.4.50"
    assert as_dicom.facts.photometric.startswith("YBR_FULL")
    # The same JPEG stream through two decoders (Pillow's libjpeg, pylibjpeg's libjpeg).
    assert np.abs(as_jpeg.frames[0] - as_dicom.frames[0]).max() < 2.5 / 255
    assert np.abs(as_jpeg.frames[0] - _luma(rgb)).mean() < 0.01
