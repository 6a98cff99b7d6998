"""``edge-agent sign-dicom`` and ``edge-agent verify-dicom``: DICOM Digital Signatures.

sign-dicom IN OUT --key KEY --cert CERT [--purpose 14]
  Adds a Creator RSA Digital Signature (PS3.15 C.2, SHA-256) made with the device's capture key.
  KEY is an unencrypted PEM RSA key that only its owner may read (mode 0600 or 0400); CERT is its
  PEM X.509 certificate. OUT is written atomically (it may be IN). Exit 0, or 2 with the reason.

verify-dicom FILE [--trust CA.pem] [--json]
  Verifies every signature of FILE and, with --trust, that the signer's certificate is one of, or
  is issued by one of, the certificates in CA.pem. Exit status:
    0  valid: a trusted Creator signature holds and no signature is broken
    1  invalid: signed attributes were altered, added or removed, or a signature is broken
    3  untrusted: intact, but the signer is unknown or its chain fails (or no --trust was given),
       or the signature covers too little to prove the image's origin
    4  unsigned
    2  the command could not run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from types import ModuleType
from typing import TYPE_CHECKING

from .errors import DicomSignatureError, SigningRefused
from .durable import write_atomically

if TYPE_CHECKING:  # pydicom and the signature library load only when a command runs: fast --help
    from .dicom_signature import SignatureReport

__all__ = ["add_parsers", "EXIT_CODES"]

EXIT_CODES = {"valid": 0, "invalid": 1, "untrusted": 3, "unsigned": 4}
_PROFILE_NAMES = {
    "Creator RSA": "Creator RSA Digital Signature Profile (PS3.15 C.2)",
    "Base RSA": "Base RSA Digital Signature Profile (PS3.15 C.1)",
}


def _lib() -> ModuleType:
    from . import dicom_signature

    return dicom_signature


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return str(keyword_for_tag(tag))


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    s = sub.add_parser("sign-dicom", help="sign a DICOM image at capture (PS3.15 C.2 Creator RSA)",
                       description=__doc__, formatter_class=fmt)
    s.add_argument("input", type=Path, metavar="IN", help="DICOM Part 10 file as acquired")
    s.add_argument("output", type=Path, metavar="OUT", help="where to write the signed file (may be IN)")
    s.add_argument("--key", type=Path, required=True, help="capture private key, PEM RSA, mode 0600")
    s.add_argument("--cert", type=Path, required=True, help="capture certificate, PEM X.509")
    s.add_argument("--purpose", type=int, choices=range(1, 19), metavar="1-18",
                   help="add a Digital Signature Purpose code (ASTM E1762; 14 = Source Signature)")
    s.set_defaults(func=run_sign)

    v = sub.add_parser("verify-dicom", help="verify a DICOM image's digital signatures",
                       description=__doc__, formatter_class=fmt)
    v.add_argument("file", type=Path, metavar="FILE")
    v.add_argument("--trust", type=Path, metavar="CA.pem", help="trusted CA / pinned signer certificates (PEM)")
    v.add_argument("--json", action="store_true", help="one JSON object on stdout instead of text")
    v.set_defaults(func=run_verify)


def run_sign(args: argparse.Namespace) -> int:
    signer = _lib().load_device_signer(args.key, args.cert)
    try:
        data = args.input.read_bytes()
    except OSError as exc:
        raise SigningRefused("input_unreadable", f"cannot read {args.input}: {exc.strerror}") from exc
    signed = _lib().sign_dicom(data, signer, purpose=args.purpose)
    try:
        write_atomically(args.output, signed)  # never half a signed image
    except OSError as exc:
        raise SigningRefused("output_unwritable", f"cannot write {args.output}: {exc.strerror}") from exc
    print(f"{args.output}: signed by {signer.certificate.subject.rfc4514_string()} "
          "(Creator RSA Digital Signature Profile, SHA256)")
    return 0


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {_keyword(tag) or 'private/unknown'}"


def _report_dict(report: SignatureReport) -> dict[str, Any]:
    return {
        "location": report.location or "main data set",
        "uid": report.uid,
        "status": "ok" if report.ok else report.problem.code if report.problem else "",
        "problem": str(report.problem) if report.problem else None,
        "signer": report.signer,
        "issuer": report.issuer,
        "trust_anchor": report.trust_anchor,
        "signed_at": report.signed_at.isoformat() if report.signed_at else None,
        "profile": report.profile,
        "purpose": report.purpose or None,
        "mac_algorithm": report.mac_algorithm,
        "signed_tags": [_tag(t) for t in report.signed_tags],
    }


def _print_text(path: Path, status: str, reports: tuple[SignatureReport, ...]) -> None:
    print(f"{path}: {status.upper()}")
    for n, report in enumerate(reports, 1):
        print(f"signature {n} of {len(reports)}: {report.uid} ({report.location or 'main data set'})")
        print(f"  result:   {'OK' if report.ok else f'{report.problem.code}: {report.problem}' if report.problem else ''}")
        print(f"  signer:   {report.signer or '?'}")
        print(f"  issuer:   {report.issuer or '?'}" + (f"  [trust anchor: {report.trust_anchor}]" if report.trust_anchor else ""))
        print(f"  time:     {report.signed_at.isoformat() if report.signed_at else '?'}")
        if report.purpose:
            print(f"  purpose:  {report.purpose}")
        print(f"  profile:  {_PROFILE_NAMES.get(report.profile, report.profile or '?')}, MAC {report.mac_algorithm or '?'}")
        print(f"  signed:   {len(report.signed_tags)} attributes")
        for tag in report.signed_tags:
            print(f"            {_tag(tag)}")


def run_verify(args: argparse.Namespace) -> int:
    anchors = _lib().load_trust_anchors(args.trust) if args.trust else ()
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise DicomSignatureError("input_unreadable", f"cannot read {args.file}: {exc.strerror}") from exc
    try:
        reports = _lib().inspect_dicom_signatures(data, anchors)
        result = _lib().provenance_from_reports(reports)
    except DicomSignatureError:  # unreadable input: let the never-raising check word it
        reports, result = (), _lib().check_dicom_signatures(data, anchors)
    if args.json:
        print(json.dumps({"file": str(args.file), "status": result.status, "code": result.code,
                          "reason": result.reason, "signatures": [_report_dict(r) for r in reports]}))
    else:
        _print_text(args.file, result.status, reports)
    if result.status != "valid":
        print(f"edge-agent: verify-dicom: {args.file}: {result.status} ({result.code}): {result.reason}", file=sys.stderr)
    return EXIT_CODES[result.status]
