"""Turn ``edge-agent scan --jsonl`` records back into :class:`~edge_agent.verdict.Verdict` values
so ``edge-agent sign-verdicts`` can sign them in a pipe.

The scan record deliberately omits the SOP Instance UID; the signer reads it again from the file
named in the record, *only* after checking the file still has the SHA-256 the scan saw — a verdict
is never signed for bytes it was not made from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..decode import ImageFacts
from ..errors import EdgeAgentError
from ..verdict import ModelRef, Reason, Timings, Verdict

__all__ = ["verdict_from_record", "read_sop_instance_uid", "ScanRecordError"]


class ScanRecordError(EdgeAgentError):
    """A scan record cannot be signed (malformed, or the file changed since the scan)."""


def verdict_from_record(rec: dict[str, Any], sop_instance_uid: str = "") -> Verdict:
    """Pure: the inverse of ``Verdict.to_dict()`` plus the UID that ``to_dict`` leaves out."""
    try:
        model = rec.get("model")
        image = rec.get("image")
        thresholds = rec.get("thresholds") or {}
        facts = None
        if image:
            facts = ImageFacts(
                container=str(image["container"]),
                file_sha256=str(image["file_sha256"]),
                pixel_sha256=str(image["pixel_sha256"]),
                rows=int(image["rows"]),
                columns=int(image["columns"]),
                frames=int(image["frames"]),
                bits_stored=int(image["bits_stored"]),
                photometric="",
                modality=str(image.get("modality") or ""),
                sop_class_uid=str(image.get("sop_class_uid") or ""),
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=str(image.get("transfer_syntax_uid") or ""),
            )
        return Verdict(
            path=str(rec["path"]),
            frame=rec.get("frame"),
            verdict=str(rec["verdict"]),
            score=rec.get("score"),
            threshold=rec.get("threshold"),
            reasons=tuple(Reason(str(r["code"]), str(r["message"])) for r in rec.get("reasons") or ()),
            timings_ms=Timings(**{k: float(v) for k, v in (rec.get("timings_ms") or {}).items()}),
            model=None if not model else ModelRef(
                str(model["name"]), str(model["version"]), str(model["sha256"]),
                str(model.get("backend", "")), str(model.get("precision", "")),
            ),
            synthetic_threshold=thresholds.get("synthetic"),
            facts=facts,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ScanRecordError(f"not an `edge-agent scan --jsonl` record: {exc!r}") from None


def read_sop_instance_uid(path: Path, expected_sha256: str) -> str:
    """The file's SOP Instance UID (0008,0018), after checking its SHA-256 is unchanged."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanRecordError(f"{path}: cannot re-read the scanned file ({exc.strerror})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise ScanRecordError(f"{path} changed since it was scanned (sha256 differs); scan it again")
    import io

    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
    except Exception as exc:  # pydicom raises many types on damaged files
        raise ScanRecordError(f"{path}: cannot read the SOP Instance UID: {exc}") from None
    return str(getattr(ds, "SOPInstanceUID", "") or "")
