"""The MAC byte stream (PS3.3 C.12.1.1.3.1.1) against an independent implementation: DCMTK's
``dcmsign --sign ... +d FILE`` dumps the exact bytes it feeds the MAC; ours must be identical."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_signature_pki import DCMSIGN, ct_small, dcmsign, make_ca, make_device_cert, pydicom_testfile, write_pki
from edge_agent.dicom_signature import mac_stream
from edge_agent.dicom_signature._mac_stream import SIGNATURE_ITEM_EXCLUDED, unsignable_reason

needs_dcmsign = pytest.mark.skipif(DCMSIGN is None, reason="DCMTK dcmsign not installed")


def _our_stream_for(signed_file: Path) -> bytes:
    """What we would feed the MAC for the last signature dcmsign put in ``signed_file``."""
    ds = pydicom.dcmread(signed_file)
    params, item = ds.MACParametersSequence[-1], ds.DigitalSignaturesSequence[-1]
    item_tags = [int(t) for t in item.keys() if int(t) not in SIGNATURE_ITEM_EXCLUDED]
    return mac_stream(ds, [int(t) for t in params.DataElementsSigned]) + mac_stream(item, item_tags)


def _nested_sequences() -> bytes:
    """CT_small plus sequences DCMTK must walk: nested, empty, and an empty item."""
    ds = pydicom.dcmread(io.BytesIO(ct_small()))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "T-D3000", "SRT", "Chest"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
    region.AnatomicRegionModifierSequence = Sequence([code])
    ds.AnatomicRegionSequence = Sequence([region, Dataset()])
    ds.ReferencedImageSequence = Sequence([])
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _inputs(name: str) -> bytes:
    if name == "nested_sequences":
        return _nested_sequences()
    return pydicom_testfile(name).read_bytes()


@needs_dcmsign
@pytest.mark.parametrize(
    ("name", "options"),
    [("CT_small.dcm", ()), ("SC_rgb_jpeg_dcmtk.dcm", ()), ("nested_sequences", ()),
     ("MR_small_implicit.dcm", ("+sp", "14"))],
)
def test_mac_stream_is_byte_identical_to_what_dcmsign_feeds_its_mac(tmp_path: Path, name: str, options: tuple[str, ...]) -> None:
    # CT_small: explicit VR with a sequence; the JPEG: encapsulated Pixel Data (fragments);
    # nested_sequences: sequences within items, an empty sequence and an empty item; the MR:
    # implicit VR (VRs from the dictionary) and a Digital Signature Purpose Code Sequence.
    pki = write_pki(tmp_path, make_ca(), make_device_cert(make_ca()))
    src, signed, dump = tmp_path / "in.dcm", tmp_path / "signed.dcm", tmp_path / "mac.bin"
    src.write_bytes(_inputs(name))
    result = dcmsign("--sign", pki.key_pem, pki.cert_pem, "-pw", "+m2", *options, "+d", dump, src, signed)
    assert result.returncode == 0, result.stderr
    assert _our_stream_for(signed) == dump.read_bytes()


def test_sequence_lengths_do_not_change_the_stream() -> None:
    # PS3.3 C.12.1.1.3.1.1: lengths of sequences and items are left out, so a PACS that rewrites
    # explicit lengths as undefined (or back) does not break a signature.
    ds = pydicom.dcmread(io.BytesIO(_nested_sequences()))
    tags = [0x00082218, 0x00081140]
    explicit = mac_stream(ds, tags)
    for tag in tags:
        ds[tag].is_undefined_length = not ds[tag].is_undefined_length
    out = io.BytesIO()
    ds.save_as(out)
    assert mac_stream(pydicom.dcmread(io.BytesIO(out.getvalue())), tags) == explicit
    # a sequence is tag, VR, reserved bytes, items as bare Item tags, and a closing E0DD tag
    empty_sequence = bytes.fromhex("08004011") + b"SQ\0\0" + bytes.fromhex("feffdde0")
    assert explicit.startswith(empty_sequence + bytes.fromhex("08001822") + b"SQ\0\0" + bytes.fromhex("feff00e0"))
    empty_item_then_end = bytes.fromhex("feff00e0") + bytes.fromhex("feffdde0")
    assert explicit.endswith(empty_item_then_end)


@pytest.mark.parametrize(
    ("tag", "why"),
    [(0x00080000, "group length"), (0x00080001, "Length to End"), (0x00020010, "below 0008"),
     (0xFFFAFFFA, "FFFA"), (0x4FFE0001, "MAC Parameters"), (0xFFFCFFFC, "Padding")],
)
def test_attributes_the_standard_forbids_are_never_signed(tag: int, why: str) -> None:
    ds = Dataset()
    assert why in (unsignable_reason(ds, tag) or "")


def test_un_elements_and_sequences_holding_them_are_not_signable() -> None:
    ds = Dataset()
    ds.add_new(0x00091010, "UN", b"\x01\x02")
    inner = Dataset()
    inner.add_new(0x00091010, "UN", b"\x01\x02")
    ds.add_new(0x00082218, "SQ", Sequence([inner]))
    assert "UN" in (unsignable_reason(ds, 0x00091010) or "")
    assert "UN" in (unsignable_reason(ds, 0x00082218) or "")
