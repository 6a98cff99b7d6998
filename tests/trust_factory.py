"""Test builders for tests/test_trust_*.py: a fleet CA in a temp dir, devices with keys and
certificates at chosen times, and verdicts made from real DICOM files. Plain functions (no
fixtures) so each test says what world it builds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydicom.data import get_testdata_file

from edge_agent.decode import decode_path
from edge_agent.trust.csr import build_device_csr
from edge_agent.trust.fleet_ca import FleetCA
from edge_agent.trust.keys import PassphraseSource, SoftwareKey
from edge_agent.trust.payload import DeviceContext, build_verdict_payload
from edge_agent.verdict import ModelRef, Reason, Timings, Verdict

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
SITE_SECRET = b"s" * 32
BOOT_ID = "6f1c1a4e-8a4b-4b7e-9a55-0d6c3f1d2e11"


@dataclass(frozen=True)
class Device:
    device_id: str
    key: SoftwareKey
    cert: x509.Certificate


def new_fleet(directory: Path, name: str = "Test Fleet CA", now: dt.datetime = NOW - dt.timedelta(days=400)) -> FleetCA:
    ca = FleetCA(directory, PassphraseSource())
    ca.init(name, days=3650, now=now)
    return ca


def new_device(ca: FleetCA, device_id: str = "ct-0042", issued: dt.datetime = NOW - dt.timedelta(days=10),
               days: int = 365) -> Device:
    key = SoftwareKey(ec.generate_private_key(ec.SECP256R1()))
    cert = ca.issue_device(build_device_csr(device_id, key), days=days, now=issued)
    return Device(device_id, key, cert)


def dicom_path(name: str = "CT_small.dcm") -> Path:
    return Path(get_testdata_file(name))


def verdict_for(path: Path, label: str = "suspicious", score: float = 0.72) -> Verdict:
    facts = decode_path(path).facts
    return Verdict(
        path=str(path),
        frame=None,
        verdict=label,
        score=score,
        threshold=0.5,
        reasons=(Reason("score.above_threshold", f"{path}: score {score} is over 0.5"),),
        timings_ms=Timings(1.0, 1.0, 1.0, 3.0),
        model=ModelRef("tiny-test", "0.0.1", "ab" * 32, "onnxruntime", "fp32"),
        synthetic_threshold=0.9,
        facts=facts,
    )


def payload_for(device_id: str = "ct-0042", seq: int = 1, issued_at: dt.datetime = NOW, path: Path | None = None,
                boot_id: str = BOOT_ID) -> dict[str, object]:
    ctx = DeviceContext(device_id, boot_id, SITE_SECRET)
    return build_verdict_payload(verdict_for(path or dicom_path()), ctx, seq=seq, issued_at=issued_at, clock_synced=True)
