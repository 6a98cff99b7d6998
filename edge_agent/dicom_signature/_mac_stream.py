"""The byte stream a DICOM Digital Signature's MAC is computed over.

PS3.3 C.12.1.1.3 (Digital Signatures Macro) and C.12.1.1.3.1.1 (Data Elements Signed) define it;
PS3.15 Annex C (C.1 Base RSA, C.2 Creator RSA) uses it. The rules, as implemented here:

1. The Data Elements listed in Data Elements Signed (0400,0020) are encoded one after another in
   the MAC Calculation Transfer Syntax (0400,0010), which PS3.3 Table C.12-6 restricts to explicit
   VR little endian ones: tag, VR, then for OB/OD/OF/OL/OV/OW/SV/UC/UN/UR/UT/UV two reserved bytes
   and a 4-byte Value Length, otherwise a 2-byte Value Length, then the (even-length) value.
2. A Sequence (VR SQ) is tag, ``SQ``, two reserved bytes, **no Value Length**; each Item is its
   Item tag (FFFE,E000) **without Item Length**, then its elements; Item Delimitation Items are
   left out ("since the Data Element Tags that identify a Sequence and the start of each Item are
   included ... there is no need to include the Item Delimitation Item Tags"); the Sequence ends
   with the Sequence Delimitation Item tag (FFFE,E0DD), again without its length. So explicit- and
   undefined-length encodings of the same content give the same stream: a PACS that rewrites
   sequence lengths does not break the signature.
3. Encapsulated Pixel Data (PS3.5 A.4) is treated as a sequence of fragments: tag, VR, reserved
   bytes, each fragment as Item tag + bytes (no length), then FFFE,E0DD. The fragmentation is
   signed, which is why PS3.3 warns that re-fragmenting invalidates such signatures.
4. Never signed (C.12.1.1.3.1.1): Length to End (0008,0001) and group lengths (gggg,0000), groups
   below 0008, VR UN, sequences that contain UN at any depth, group FFFA, MAC Parameters Sequence
   (4FFE,0001), Data Set Trailing Padding (FFFC,FFFC), and the delimitation items.

The length rules in 2 and 3 are where the text leaves room; they are fixed here the way DCMTK's
``dcmsign`` does it, and ``tests/test_dicom_signature_mac_stream.py`` compares this encoder byte
for byte with the stream ``dcmsign --sign ... +d FILE`` dumps.

Values are taken as they were read (pydicom keeps unconverted raw bytes), so a verifier hashes
exactly the bytes in the file, not a re-encoding of them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element
from pydicom.sequence import Sequence

__all__ = ["unsignable_reason", "mac_chunks", "mac_stream", "SIGNATURE_ITEM_EXCLUDED"]

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_SEQ_DELIM = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)
_UNDEFINED = 0xFFFFFFFF
_AMBIGUOUS_VRS = frozenset({"US or SS", "OB or OW", "US or SS or OW", "US or OW"})
_LENGTH_TO_END = 0x00080001
_MAC_PARAMETERS_SEQUENCE = 0x4FFE0001
_TRAILING_PADDING = 0xFFFCFFFC

#: Digital Signatures Sequence item attributes that are *not* fed to the MAC after the signed data
#: elements: the Certificate of Signer, the Signature itself and the Certified Timestamp (Type),
#: which is made over the signature. The item's other attributes (MAC ID Number, Digital
#: Signature UID and DateTime, Certificate Type, Purpose Code Sequence) follow the signed data
#: elements in the stream, so the signature also binds who-when-why. This split is DCMTK
#: ``dcmsign``'s (SiMACConstructor::encodeDigitalSignatureItem); the golden-vector tests pin it.
SIGNATURE_ITEM_EXCLUDED = frozenset({0x04000115, 0x04000120, 0x04000305, 0x04000310})


def _excluded_tag(tag: int) -> str | None:
    group, element = tag >> 16, tag & 0xFFFF
    if element == 0x0000:
        return "group lengths change when unsigned elements change"
    if tag == _LENGTH_TO_END:
        return "Length to End changes when unsigned elements change"
    if group < 0x0008:
        return "groups below 0008 (file meta, command) are not part of the Data Set"
    if group == 0xFFFA:
        return "group FFFA holds the signatures themselves"
    if tag == _MAC_PARAMETERS_SEQUENCE:
        return "the MAC Parameters Sequence describes the signature"
    if tag == _TRAILING_PADDING:
        return "Data Set Trailing Padding is not content"
    if group == 0xFFFE:
        return "delimitation items are structure, not content"
    return None


def _vr(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and raw.VR is not None:
        return str(raw.VR)
    return str(ds[tag].VR)  # implicit VR: the dictionary's (pydicom resolves US/SS, OB/OW on write)


def _contains_un(seq: Sequence) -> bool:
    for item in seq:
        for tag in item.keys():
            vr = _vr(item, int(tag))
            if vr == "UN":
                return True
            if vr == "SQ" and _contains_un(item[tag].value):
                return True
    return False


def unsignable_reason(ds: Dataset, tag: int) -> str | None:
    """Why ``tag`` of ``ds`` may not be listed in Data Elements Signed, or None if it may."""
    reason = _excluded_tag(tag)
    if reason:
        return reason
    vr = _vr(ds, tag)
    if vr == "UN":
        return "its VR is UN: its encoding is not known, so it cannot be signed (PS3.3 C.12.1.1.3.1.1)"
    if vr == "SQ" and _contains_un(ds[tag].value):
        return "the sequence contains an element with VR UN (PS3.3 C.12.1.1.3.1.1)"
    return None


def _header(tag: int, vr: str, length: int | None) -> bytes:
    tag_bytes = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if vr in _LONG_VRS:
        return tag_bytes + vr.encode("ascii") + b"\0\0" + (b"" if length is None else struct.pack("<I", length))
    assert length is not None
    return tag_bytes + vr.encode("ascii") + struct.pack("<H", length)


def _fragments(encapsulated: bytes) -> Iterator[bytes]:
    """Item values of an encapsulated Pixel Data value (PS3.5 A.4), Basic Offset Table first."""
    view = memoryview(encapsulated)
    offset = 0
    while offset + 8 <= len(view):
        tag, length = struct.unpack_from("<4sI", view, offset)
        if tag == _SEQ_DELIM:
            return
        if tag != _ITEM or length == _UNDEFINED or offset + 8 + length > len(view):
            raise ValueError(f"encapsulated Pixel Data is malformed at byte {offset} of its value")
        yield view[offset + 8 : offset + 8 + length].tobytes()
        offset += 8 + length
    if offset != len(view):
        raise ValueError("encapsulated Pixel Data ends inside an item header")


def _leaf(ds: Dataset, tag: int) -> tuple[str, bytes]:
    """(VR, value bytes) of a non-sequence element, in explicit VR little endian."""
    raw = ds.get_item(tag)
    elem: DataElement | RawDataElement | None = None
    vr = raw.VR if isinstance(raw, RawDataElement) else None
    if vr is None or vr in _AMBIGUOUS_VRS:  # implicit VR input: the dictionary VR, disambiguated
        elem = ds[tag]
        if elem.VR in _AMBIGUOUS_VRS:
            elem = correct_ambiguous_vr_element(elem, ds, True)
        vr = elem.VR
    if isinstance(raw, RawDataElement) and raw.is_little_endian:
        return str(vr), bytes(raw.value or b"")  # as read: little endian values are VR-independent
    elem = elem or ds[tag]
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem)
    encoded = fp.getvalue()
    return str(vr), encoded[12:] if vr in _LONG_VRS else encoded[8:]


def _is_undefined_length(ds: Dataset, tag: int) -> bool:
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement):
        return bool(raw.length == _UNDEFINED)
    return bool(isinstance(raw, DataElement) and raw.is_undefined_length)


def _element_chunks(ds: Dataset, tag: int) -> Iterator[bytes]:
    vr = _vr(ds, tag)
    if vr == "SQ":
        yield _header(tag, "SQ", None)
        for item in ds[tag].value:
            yield _ITEM
            for inner in sorted(int(t) for t in item.keys()):
                if _excluded_tag(inner) is None:
                    yield from _element_chunks(item, inner)
        yield _SEQ_DELIM
    elif vr in ("OB", "OW", "OB or OW") and _is_undefined_length(ds, tag):
        _, value = _leaf(ds, tag)
        yield _header(tag, "OB", None)  # encapsulated is always OB (PS3.5 A.4)
        for fragment in _fragments(value):
            yield _ITEM
            yield fragment
        yield _SEQ_DELIM
    else:
        vr, value = _leaf(ds, tag)
        yield _header(tag, vr, len(value))
        yield value


def mac_chunks(ds: Dataset, tags: Iterable[int]) -> Iterator[bytes]:
    """The MAC byte stream of ``tags`` of ``ds``, in chunks (pixel data is not copied).

    ``tags`` are encoded in ascending order, the order of the Data Set (C.12.1.1.3.1.1); each must
    be present and signable (see :func:`unsignable_reason`), else ``KeyError``/``ValueError``.
    """
    for tag in sorted(set(tags)):
        if tag not in ds:
            raise KeyError(tag)
        reason = unsignable_reason(ds, tag)
        if reason:
            raise ValueError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) cannot be signed: {reason}")
        yield from _element_chunks(ds, tag)


def mac_stream(ds: Dataset, tags: Iterable[int]) -> bytes:
    """:func:`mac_chunks` joined (for tests and small data sets)."""
    return b"".join(mac_chunks(ds, tags))
