"""Speed of DICOM Digital Signatures (issue 4) on a real radiograph.

    python benchmarks/bench_dicom_signature.py [--repeat 15] [--file X.dcm]

Prints signs per second and verifies per second (medians of ``--repeat`` runs, the machines are
noisy) for pydicom-data's RG3_UNCR.dcm, a full 1760x1760 16-bit CR chest radiograph (6.2 MB):

* sign:   ``sign_dicom(bytes) -> bytes`` — parse, SHA-256 MAC over the Creator-profile attributes,
          RSA-2048 signature, write, and the re-read self-check of the output;
* verify: ``check_dicom_signatures(bytes, anchors)`` — parse, MAC, RSA, chain to the CA;
* the MAC stream alone (encoding + SHA-256), to show where the time goes;
* for reference, ``dcmsign --verify`` on the same file (a process per run, start-up included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _pki() -> tuple[object, object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench device")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .sign(ca_key, hashes.SHA256()))
    return key, cert, ca


def _median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--file", type=Path, help="DICOM file (default: pydicom-data RG3_UNCR.dcm)")
    args = parser.parse_args()

    import pydicom
    from cryptography.hazmat.primitives import serialization
    from pydicom.data import get_testdata_file

    from edge_agent.dicom_signature import DeviceSigner, check_dicom_signatures, creator_tags_present, sign_dicom
    from edge_agent.dicom_signature._mac_stream import mac_chunks

    path = args.file or Path(str(get_testdata_file("RG3_UNCR.dcm", download=False)))
    data = path.read_bytes()
    key, cert, ca = _pki()
    signer = DeviceSigner(key, cert)  # type: ignore[arg-type]
    signed = sign_dicom(data, signer)
    assert check_dicom_signatures(signed, [ca]).status == "valid"  # type: ignore[list-item]
    ds = pydicom.dcmread(io.BytesIO(signed))
    tags = creator_tags_present(ds)

    def mac_only() -> None:
        import hashlib

        h = hashlib.sha256()
        for chunk in mac_chunks(ds, tags):
            h.update(chunk)

    rows = [
        ("sign (sign_dicom)", _median_seconds(lambda: sign_dicom(data, signer), args.repeat)),
        ("verify (check_dicom_signatures)", _median_seconds(lambda: check_dicom_signatures(signed, [ca]), args.repeat)),  # type: ignore[list-item]
        ("MAC stream + SHA-256 only", _median_seconds(mac_only, args.repeat)),
    ]
    if shutil.which("dcmsign"):
        with tempfile.TemporaryDirectory() as tmp:
            signed_path, ca_path = Path(tmp) / "signed.dcm", Path(tmp) / "ca.pem"
            signed_path.write_bytes(signed)
            ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
            cmd = ["dcmsign", "--verify", "+rg", "+rc", "+cf", str(ca_path), str(signed_path)]
            rows.append(("dcmsign --verify (process incl.)", _median_seconds(
                lambda: subprocess.run(cmd, check=True, capture_output=True), max(3, args.repeat // 3))))

    print(f"{path.name}: {ds.Rows}x{ds.Columns}, {ds.BitsAllocated}-bit, {len(data) / 1e6:.1f} MB, "
          f"{len(tags)} attributes signed, RSA-2048 / SHA-256, median of {args.repeat}")
    for name, seconds in rows:
        print(f"  {name:34s} {seconds * 1e3:8.1f} ms   {1 / seconds:7.1f} per second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
