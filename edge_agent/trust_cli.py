"""``edge-agent ca|enroll|sign-verdicts|verify|model``: fleet CA, device enrollment, signed
verdicts and signed models (see docs/trust.md for a walk-through).

Exit status: 0 success / valid; 1 ``verify``: at least one envelope rejected, ``enroll status``:
WARNING; 2 an error (``enroll status``: ERROR health).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import EnrollmentError

__all__ = ["add_parsers"]

MODEL_KEY_PASSPHRASE_ENV = "EDGE_AGENT_MODEL_KEY_PASSPHRASE"

def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    _add_ca(sub)
    _add_enroll(sub)
    p = sub.add_parser("sign-verdicts", help="sign `scan --jsonl` verdicts from stdin as JWS envelopes (JSON lines)")
    p.add_argument("--dir", type=Path, required=True, metavar="STATE", help="enrolled device state directory")
    p.add_argument("--in", dest="input", default="-", metavar="FILE", help="scan JSON lines (default: stdin)")
    p.add_argument("--out", default="-", metavar="FILE", help="envelopes, one per line (default: stdout; appended)")
    p.set_defaults(func=_sign_verdicts)

    p = sub.add_parser("verify", help="verify signed verdict envelopes with the fleet CA certificate")
    p.add_argument("envelopes", nargs="+", metavar="ENVELOPE", help="file with one envelope or one per line ('-' = stdin)")
    p.add_argument("--trust", type=Path, required=True, action="append", metavar="FLEET_CA.pem")
    p.add_argument("--crl", type=Path, action="append", default=[], metavar="CRL.pem")
    p.add_argument("--state", type=Path, metavar="STATE.json", help="replay state: seen (device, boot, seq) are rejected")
    p.add_argument("--json", action="store_true", help="print each verified payload as JSON")
    p.set_defaults(func=_verify)

    m = sub.add_parser("model", help="sign and verify shipped models").add_subparsers(dest="model_cmd", required=True, metavar="ACTION")
    p = m.add_parser("sign", help="write DIR/manifest.sig.json with the vendor model-signing key")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--key", type=Path, required=True, metavar="VENDOR_KEY")
    p.add_argument("--cert", type=Path, required=True, metavar="VENDOR_CERT", help="signing certificate (+ intermediates)")
    p.add_argument("--passphrase-file", type=Path, help=f"key passphrase (else ${MODEL_KEY_PASSPHRASE_ENV} if the key is encrypted)")
    p.set_defaults(func=_model_sign)
    p = m.add_parser("verify", help="check a model's signature and file hashes")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.add_argument("--trust", type=Path, required=True, metavar="VENDOR_CA.pem")
    p.set_defaults(func=_model_verify)


# -- ca -----------------------------------------------------------------------------------------
def _add_ca(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ca = sub.add_parser("ca", help="run a fleet CA (vendor or site)").add_subparsers(dest="ca_cmd", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, positional: bool = False) -> None:
        if positional:
            p.add_argument("ca", type=Path, metavar="DIR")
        else:
            p.add_argument("--ca", type=Path, required=True, metavar="DIR")
        p.add_argument("--passphrase-file", type=Path, help="CA key passphrase (else $EDGE_AGENT_CA_PASSPHRASE, else unencrypted)")

    p = ca.add_parser("init", help="create the CA key (0600) and certificate")
    common(p, positional=True)
    p.add_argument("--name", default="edge-agent Fleet CA", help="CA common name")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(func=_ca_init)
    p = ca.add_parser("issue", help="issue a device certificate from a CSR")
    common(p)
    p.add_argument("csr", type=Path, metavar="CSR")
    p.add_argument("--out", type=Path, required=True, metavar="CERT")
    p.add_argument("--days", type=int, default=365, help="validity, at most 365")
    p.add_argument("--dns-suffix", help="also add DNS SAN <device-id>.<suffix>")
    p.set_defaults(func=_ca_issue)
    p = ca.add_parser("issue-model-signer", help="create a vendor model-signing key + certificate (EKU codeSigning)")
    common(p)
    p.add_argument("--name", required=True)
    p.add_argument("--out-key", type=Path, required=True)
    p.add_argument("--out-cert", type=Path, required=True)
    p.add_argument("--days", type=int, default=3 * 365)
    p.set_defaults(func=_ca_issue_model_signer)
    p = ca.add_parser("issue-server", help="create a TLS server key + certificate for the site's MQTT broker (EKU serverAuth)")
    common(p)
    p.add_argument("--name", required=True, help="subject CN, e.g. broker.site-a")
    p.add_argument("--dns", action="append", default=[], metavar="HOST", help="DNS SAN clients dial; repeatable")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR", help="IP SAN clients dial; repeatable")
    p.add_argument("--out-key", type=Path, required=True, help="new P-256 key, written 0600, unencrypted (Mosquitto reads it)")
    p.add_argument("--out-cert", type=Path, required=True)
    p.add_argument("--days", type=int, default=365, help="validity, at most 365")
    p.set_defaults(func=_ca_issue_server)
    p = ca.add_parser("revoke", help="revoke a certificate (then publish a CRL)")
    common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("cert", type=Path, nargs="?", metavar="CERT")
    g.add_argument("--serial", help="hex serial number")
    p.set_defaults(func=_ca_revoke)
    p = ca.add_parser("crl", help="publish a CRL of every revoked certificate")
    common(p)
    p.add_argument("--out", type=Path, required=True, metavar="CRL.pem")
    p.add_argument("--days", type=int, default=7, help="nextUpdate in days")
    p.set_defaults(func=_ca_crl)


def _fleet_ca(args: argparse.Namespace) -> Any:
    from .trust.fleet_ca import CA_PASSPHRASE_ENV, FleetCA
    from .trust.keys import PassphraseSource

    src = PassphraseSource(file=args.passphrase_file) if args.passphrase_file else PassphraseSource(env=CA_PASSPHRASE_ENV)
    return FleetCA(args.ca, src)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca_init(args: argparse.Namespace) -> int:
    ca = _fleet_ca(args)
    cert = ca.init(args.name, args.days)
    print(f"fleet CA created: {ca.cert_path} (give this to devices and verifiers); key {ca.key_path} (mode 0600)")
    print(f"subject {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def _ca_issue(args: argparse.Namespace) -> int:
    cert = _fleet_ca(args).issue_device(args.csr.read_bytes(), args.days, args.dns_suffix)
    args.out.write_bytes(_pem(cert))
    print(f"issued {cert.subject.rfc4514_string()} serial {cert.serial_number:x} valid until "
          f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ} -> {args.out}")
    return 0


def _ca_issue_model_signer(args: argparse.Namespace) -> int:
    cert = _fleet_ca(args).issue_model_signer(args.out_key, args.name, args.days)
    args.out_cert.write_bytes(_pem(cert))
    print(f"model signer {cert.subject.rfc4514_string()}: key {args.out_key} (0600), certificate {args.out_cert}")
    return 0


def _ca_issue_server(args: argparse.Namespace) -> int:
    from .trust.keys import FileKeyStore

    dns, ips = args.dns, args.ip
    if not dns and not ips:
        dns, ips = ["localhost"], ["127.0.0.1", "::1"]  # this machine's loopback only
    ca = _fleet_ca(args)
    ca.certificate()  # no CA here: say so before a key file is made
    key = FileKeyStore(args.out_key).generate()
    cert = ca.issue_server(key.public_key(), args.name, dns, ips, args.days)
    args.out_cert.write_bytes(_pem(cert))
    names = ", ".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    print(f"server {cert.subject.rfc4514_string()} ({names}) valid until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}: "
          f"key {args.out_key} (0600), certificate {args.out_cert}")
    return 0


def _ca_revoke(args: argparse.Namespace) -> int:
    serial = int(args.serial, 16) if args.serial else x509.load_pem_x509_certificate(args.cert.read_bytes()).serial_number
    _fleet_ca(args).revoke(serial)
    print(f"revoked serial {serial:x}; publish a new CRL: edge-agent ca crl --ca {args.ca} --out crl.pem")
    return 0


def _ca_crl(args: argparse.Namespace) -> int:
    crl = _fleet_ca(args).publish_crl(args.days)
    args.out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    print(f"CRL with {len(list(crl))} revoked certificate(s), next update {crl.next_update_utc:%Y-%m-%dT%H:%M:%SZ} -> {args.out}")
    return 0


# -- enroll ---------------------------------------------------------------------------------------
def _add_enroll(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    en = sub.add_parser("enroll", help="device identity: key, CSR, certificate").add_subparsers(
        dest="enroll_cmd", required=True, metavar="ACTION")
    p = en.add_parser("init", help="generate the device key (never leaves the device) and a CSR")
    p.add_argument("--device-id", required=True)
    p.add_argument("--dir", type=Path, required=True, metavar="STATE")
    p.add_argument("--passphrase-file", type=Path, help="encrypt the key with the first line of this 0600 file")
    p.add_argument("--passphrase-env", metavar="VAR", help="encrypt the key with the passphrase in $VAR")
    p.add_argument("--site-secret", type=Path, metavar="FILE", help="site HMAC secret to install (default: random)")
    p.add_argument("--dns-suffix", help="request DNS SAN <device-id>.<suffix>")
    p.add_argument("--pkcs11-module", metavar="SO", help="generate the key in a PKCS#11 token instead of a file")
    p.add_argument("--token-label")
    p.add_argument("--key-label", help="label of the key in the token (default: edge-agent-<device-id>)")
    p.add_argument("--pin-file", type=Path, help="token user PIN file (0600); else $EDGE_AGENT_PKCS11_PIN")
    p.set_defaults(func=_enroll_init)
    p = en.add_parser("install", help="install the issued certificate after checking it")
    p.add_argument("cert", type=Path, metavar="CERT")
    p.add_argument("--dir", type=Path, required=True, metavar="STATE")
    p.add_argument("--fleet-ca", type=Path, required=True, metavar="FLEET_CA.pem")
    p.set_defaults(func=_enroll_install)
    p = en.add_parser("renew", help="new key pair + CSR; the old key signs until the new cert is installed")
    p.add_argument("--dir", type=Path, required=True, metavar="STATE")
    p.set_defaults(func=_enroll_renew)
    p = en.add_parser("status", help="certificate health (exit 0 OK, 1 WARNING, 2 ERROR)")
    p.add_argument("--dir", type=Path, required=True, metavar="STATE")
    p.set_defaults(func=_enroll_status)


def _enroll_init(args: argparse.Namespace) -> int:
    from .trust.enrollment import DeviceState
    from .trust.keys import PassphraseSource

    store = None
    if args.pkcs11_module:
        from .trust.pkcs11_keys import Pkcs11KeyStore

        if not args.token_label:
            raise EnrollmentError("--pkcs11-module needs --token-label")
        store = Pkcs11KeyStore(args.pkcs11_module, args.token_label, args.key_label or f"edge-agent-{args.device_id}",
                               pin_file=args.pin_file)
    state = DeviceState(args.dir)
    secret = args.site_secret.read_bytes() if args.site_secret else None
    state.init(args.device_id, store, PassphraseSource(args.passphrase_file, args.passphrase_env), secret, args.dns_suffix)
    where = "in the PKCS#11 token" if store else f"in {args.dir / 'device.key'} (mode 0600)"
    print(f"device {args.device_id}: key generated {where}; CSR {state.csr_path} -> take it to the fleet CA")
    return 0


def _enroll_install(args: argparse.Namespace) -> int:
    from .trust.enrollment import DeviceState

    cert = DeviceState(args.dir).install(args.cert.read_bytes(), args.fleet_ca.read_bytes())
    print(f"installed certificate serial {cert.serial_number:x} for {cert.subject.rfc4514_string()}, "
          f"valid until {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    return 0


def _enroll_renew(args: argparse.Namespace) -> int:
    from .trust.enrollment import DeviceState

    state = DeviceState(args.dir)
    state.renew()
    print(f"new key pair generated; CSR {state.csr_path} -> take it to the fleet CA, then `enroll install`")
    return 0


def _enroll_status(args: argparse.Namespace) -> int:
    from .trust.enrollment import DeviceState

    health = DeviceState(args.dir).health()
    print(json.dumps(health.to_dict()))
    return {"OK": 0, "WARNING": 1, "ERROR": 2}[health.level]


# -- sign / verify --------------------------------------------------------------------------------
def _sign_verdicts(args: argparse.Namespace) -> int:
    from .trust.enrollment import DeviceState
    from .trust.scan_records import ScanRecordError, read_sop_instance_uid, verdict_from_record

    state = DeviceState(args.dir)
    health = state.health()
    if health.level != "OK":
        print(f"edge-agent: {health.level}: {health.message}", file=sys.stderr)
    signer = state.open_signer()
    sequence = signer.sequence
    src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    out = sys.stdout if args.out == "-" else open(args.out, "a", encoding="utf-8")
    failed = signed = 0
    try:
        for n, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                image = rec.get("image") or {}
                uid = ""
                if image.get("container") == "dicom":
                    uid = read_sop_instance_uid(Path(rec["path"]), image["file_sha256"])
                envelope = signer.sign(verdict_from_record(rec, uid))
            except (ScanRecordError, ValueError, KeyError, TypeError, AttributeError) as exc:
                failed += 1
                print(f"edge-agent: line {n} not signed: {exc}", file=sys.stderr)
                continue
            out.write(envelope.decode("utf-8") + "\n")
            out.flush()
            signed += 1
    finally:
        sequence.close()
        if src is not sys.stdin:
            src.close()
        if out is not sys.stdout:
            out.close()
    print(f"signed {signed} verdict(s) as {signer.device.device_id}" + (f"; {failed} line(s) not signed" if failed else ""),
          file=sys.stderr)
    return 2 if failed else 0


def _read_envelopes(name: str) -> list[bytes]:
    data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    lines = [ln for ln in data.splitlines() if ln.strip()]
    if len(lines) > 1 and all(ln.lstrip().startswith(b"{") for ln in lines):
        return lines
    return [data]


def _verify(args: argparse.Namespace) -> int:
    from .trust.certs import load_certificates
    from .trust.verify import ReplayState, Verifier, load_crls

    anchors = [c for t in args.trust for c in load_certificates(t.read_bytes())]
    crls = [c for p in args.crl for c in load_crls(p.read_bytes())]
    replay = ReplayState.load(args.state) if args.state else None
    verifier = Verifier(anchors, crls, replay)
    for name in args.envelopes:
        for i, env in enumerate(_read_envelopes(name), 1):
            outcome = verifier.verify(env)
            where = f"{name}:{i}"
            if outcome.ok and outcome.verdict is not None:
                print(json.dumps(outcome.verdict.payload, sort_keys=True) if args.json else f"{where}: {outcome.message}")
                for w in outcome.verdict.warnings:
                    print(f"{where}: warning: {w}", file=sys.stderr)
            else:
                print(f"{where}: REJECTED {outcome.reason}: {outcome.message}")
    if replay is not None and args.state is not None:
        replay.save(args.state)
    print("summary: " + json.dumps(dict(sorted(verifier.stats.items()))), file=sys.stderr)
    rejected = sum(n for k, n in verifier.stats.items() if k != "valid")
    return 1 if rejected or not verifier.stats else 0


# -- model ----------------------------------------------------------------------------------------
def _model_sign(args: argparse.Namespace) -> int:
    from .manifest import load_manifest
    from .trust.certs import load_certificates, utcnow
    from .trust.keys import FileKeyStore, PassphraseSource
    from .trust.model_signing import SIGNATURE_NAME, sign_manifest

    manifest_path = args.dir / "manifest.json"
    load_manifest(args.dir).verify_files()  # never sign a manifest whose files already differ
    src = PassphraseSource(file=args.passphrase_file) if args.passphrase_file else PassphraseSource(env=MODEL_KEY_PASSPHRASE_ENV)
    key = FileKeyStore(args.key, src).load()
    sig = sign_manifest(manifest_path.read_bytes(), key, load_certificates(args.cert.read_bytes()), utcnow())
    (args.dir / SIGNATURE_NAME).write_bytes(sig + b"\n")
    print(f"signed {manifest_path} -> {args.dir / SIGNATURE_NAME}")
    return 0


def _model_verify(args: argparse.Namespace) -> int:
    from .trust.model_signing import verify_signed_model

    verify_signed_model(args.dir, args.trust.read_bytes())
    print(f"model {args.dir}: signature and every file hash verify")
    return 0

