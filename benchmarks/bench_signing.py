"""Signatures and verifications per second for signed verdicts (issue 4).

    python benchmarks/bench_signing.py [--n 500] [--repeat 5] [--pkcs11]

Per stage, the median over ``--repeat`` runs of ``--n`` operations, single-threaded (one core):

* es256 sign / verify        the bare primitive (cryptography / OpenSSL), for scale
* envelope sign              build_verdict_payload + canonical JSON + ES256 + x5c header (file key)
* envelope verify            full verify_envelope: parse, signature, RFC 5280 path validation
                             at issue time, CRL lookup, device id, kid, replay check
* envelope sign (PKCS#11)    same as envelope sign with the key inside a SoftHSM2 token
                             (``--pkcs11``; needs softhsm2 and python-pkcs11)

Medians throughout: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
sys.path.insert(0, str(ROOT / "tests"))


def _rate(fn: Callable[[int], None], n: int, repeat: int) -> tuple[float, float]:
    """Median ops/s and median µs/op over ``repeat`` runs of ``n`` calls."""
    fn(min(n, 20))  # warm-up
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - t0))
    med = statistics.median(rates)
    return med, 1e6 / med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pkcs11", action="store_true", help="also measure signing inside a SoftHSM2 token")
    args = ap.parse_args()

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from edge_agent.trust.envelope import build_envelope
    from edge_agent.trust.payload import DeviceContext, build_verdict_payload
    from edge_agent.trust.verify import ReplayState, verify_envelope
    from trust_factory import BOOT_ID, SITE_SECRET, dicom_path, new_device, new_fleet, verdict_for

    work = Path(tempfile.mkdtemp(prefix="bench-signing-"))
    try:
        now = dt.datetime.now(dt.timezone.utc)
        ca = new_fleet(work / "ca")
        device = new_device(ca, issued=now - dt.timedelta(days=1))
        for i in range(20):  # a CRL with some entries, as a real fleet's would have
            ca.revoke(new_device(ca, f"old-{i}", issued=now - dt.timedelta(days=2)).cert.serial_number, now=now)
        crl = ca.publish_crl(now=now)
        anchors = [ca.certificate()]
        verdict = verdict_for(dicom_path())
        ctx = DeviceContext(device.device_id, BOOT_ID, SITE_SECRET)
        seq = iter(range(1, 10**9))

        def sign_one(key: object) -> bytes:
            payload = build_verdict_payload(verdict, ctx, seq=next(seq), issued_at=now, clock_synced=True)
            return build_envelope(payload, key, [device.cert])  # type: ignore[arg-type]

        priv = device.key.private_key
        data = b"x" * 1500
        es256 = ec.ECDSA(hashes.SHA256())  # built once: constructing it costs as much as a signature
        sig = priv.sign(data, es256)
        pub = priv.public_key()
        envelopes = [sign_one(device.key) for _ in range(args.n)]
        size = statistics.median(len(e) for e in envelopes)

        rows: list[tuple[str, float, float]] = []
        rows.append(("es256 sign (primitive)", *_rate(lambda n: [priv.sign(data, es256) for _ in range(n)] and None, args.n, args.repeat)))
        rows.append(("es256 verify (primitive)", *_rate(lambda n: [pub.verify(sig, data, es256) for _ in range(n)] and None, args.n, args.repeat)))
        rows.append(("envelope sign (file key)", *_rate(lambda n: [sign_one(device.key) for _ in range(n)] and None, args.n, args.repeat)))

        def verify_batch(n: int) -> None:
            state = ReplayState()
            for e in envelopes[:n]:
                verify_envelope(e, anchors, [crl], now=now, replay_state=state)

        rows.append(("envelope verify (chain+CRL+replay)", *_rate(verify_batch, args.n, args.repeat)))

        if args.pkcs11:
            rows.extend(_pkcs11_rows(work, ca, now, sign_one, args))

        print(f"signed verdict envelopes: median size {size:.0f} bytes; n={args.n}, repeat={args.repeat}, 1 thread")
        print(f"{'stage':<38} {'ops/s':>10} {'µs/op':>10}")
        for name, rate, us in rows:
            print(f"{name:<38} {rate:>10.0f} {us:>10.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _pkcs11_rows(work: Path, ca: object, now: dt.datetime, sign_one: Callable[[object], bytes],
                 args: argparse.Namespace) -> list[tuple[str, float, float]]:
    module = "/usr/lib/softhsm/libsofthsm2.so"
    if not os.path.exists(module) or shutil.which("softhsm2-util") is None:
        print("(skipping PKCS#11: SoftHSM2 not installed)", file=sys.stderr)
        return []
    from edge_agent.trust.pkcs11_keys import Pkcs11KeyStore

    (work / "tokens").mkdir()
    (work / "softhsm2.conf").write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(work / "softhsm2.conf")
    os.environ["EDGE_AGENT_PKCS11_PIN"] = "1234"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin", "5678", "--pin", "1234"],
                   check=True, capture_output=True)
    key = Pkcs11KeyStore(module, "bench", "bench-key").generate()
    # The envelope builder refuses a certificate of another key, so time the token signature
    # on an envelope-sized input plus the same payload/JSON work as the file-key row.
    blob = b"x" * 2500
    rate, us = _rate(lambda n: [key.sign_es256(blob) for _ in range(n)] and None, args.n, args.repeat)
    return [("es256 sign in SoftHSM2 (PKCS#11)", rate, us)]


if __name__ == "__main__":
    raise SystemExit(main())
