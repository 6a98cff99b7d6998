"""Real parts for the transport tests: a fleet PKI made with ``cryptography``, a Mosquitto broker
on a free loopback port with the generated site config (mutual TLS + ACL), signed envelopes from
the trust library, a PostgreSQL server, and small MQTT clients."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_agent.transport.broker_config import BrokerSite, write_broker_config
from edge_agent.transport.tls import TlsFiles, client_context
from edge_agent.trust.envelope import build_envelope
from edge_agent.trust.keys import SoftwareKey

SITE = "site-a"
BOOT = "6f1c1f0e-8a3b-4c39-9f7e-0d6f7b1e2a11"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Any, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# -- PKI --------------------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class Identity:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    files: TlsFiles

    @property
    def signer(self) -> SoftwareKey:
        return SoftwareKey(self.key)


@dataclass
class Pki:
    dir: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    ca_file: Path
    ids: dict[str, Identity] = field(default_factory=dict)

    @classmethod
    def create(cls, d: Path, name: str = "Fleet CA") -> "Pki":
        d.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=365))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        ca_file = d / "ca.pem"
        ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(d, key, cert, ca_file)

    @classmethod
    def from_fleet(cls, fleet: Any, d: Path) -> "Pki":
        """Issue test identities (broker, collector...) from a trust ``FleetCA`` (unencrypted key)."""
        d.mkdir(parents=True, exist_ok=True)
        key = serialization.load_pem_private_key(fleet.key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(d, key, fleet.certificate(), fleet.cert_path)

    def issue(self, cn: str, server: bool = False, days: float = 90, since_days: float = 0) -> Identity:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        sans: list[x509.GeneralName]
        if server:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            eku = [ExtendedKeyUsageOID.SERVER_AUTH]
        else:
            sans = [x509.UniformResourceIdentifier(f"urn:edge-agent:device:{cn}")]
            eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
        ca_ski = self.ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=since_days, minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_file, key_file = self.dir / f"{cn}.pem", self.dir / f"{cn}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        os.chmod(key_file, 0o600)
        ident = Identity(cn, key, cert, TlsFiles(self.ca_file, cert_file, key_file))
        self.ids[cn] = ident
        return ident


# -- envelopes ---------------------------------------------------------------------------------
def payload(device: str, seq: int, label: str = "authentic", *, boot: str = BOOT, msg_id: str | None = None,
            issued_at: dt.datetime | None = None) -> dict[str, Any]:
    t = issued_at or dt.datetime.now(dt.timezone.utc)
    score = {"authentic": 0.02, "suspicious": 0.6, "synthetic": 0.97}.get(label)
    return {
        "schema": 1, "type": "edge-agent.verdict", "msg_id": msg_id or str(uuid.uuid4()), "device_id": device,
        "boot_id": boot, "seq": seq, "issued_at": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
        "clock_synced": True,
        "image": {"container": "dicom", "file_sha256": f"{seq:064x}", "pixel_sha256": f"{seq:064x}", "modality": "DX",
                  "sop_class_uid": "1.2.840.10008.5.1.4.1.1.1.1", "sop_instance_uid_hmac": None, "frame": None},
        "model": {"name": "tiny", "version": "1", "sha256": "0" * 64, "backend": "onnxruntime", "precision": "fp32"},
        "verdict": {"label": label, "score": score, "threshold": 0.5, "thresholds": None, "reasons": []},
    }


def envelope(ident: Identity, seq: int, label: str = "authentic", **kw: Any) -> bytes:
    return build_envelope(payload(ident.name, seq, label, **kw), ident.signer, [ident.cert])


# -- Mosquitto ---------------------------------------------------------------------------------
class Broker:
    def __init__(self, d: Path, pki: Pki) -> None:
        self.dir = d
        self.port = free_port()
        server = pki.issue("broker.local", server=True)
        self.conf = write_broker_config(BrokerSite(SITE, pki.ca_file, server.files.cert, server.files.key, d,
                                                   port=self.port, bind="127.0.0.1",
                                                   run_as="root" if os.geteuid() == 0 else None))
        self.log = d / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(up, 10, "mosquitto to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop saves the persistence file
            self.proc.wait(10)
        self.proc = None


# -- MQTT clients ------------------------------------------------------------------------------
class Client:
    """A small synchronous-ish paho client for tests (publish, subscribe, collect)."""

    def __init__(self, broker: Broker, ident: Identity, client_id: str | None = None) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, Any] = {}
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
                             protocol=MQTTProtocolVersion.MQTTv5)
        self.c.tls_set_context(client_context(ident.files))
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set() if not rc.is_failure else None
        self.c.on_message = lambda c, u, m: self.messages.append(m)
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.c.connect("127.0.0.1", broker.port, clean_start=True)
        self.c.loop_start()
        assert self.connected.wait(10), "test client could not connect"

    def publish(self, topic: str, data: bytes, timeout: float = 5.0) -> Any:
        info = self.c.publish(topic, data, qos=1)
        wait_until(lambda: info.mid in self.acks, timeout, f"PUBACK on {topic}")
        return self.acks[info.mid]

    def subscribe(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)
        time.sleep(0.2)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


# -- PostgreSQL --------------------------------------------------------------------------------
class Postgres:
    """A throw-away PostgreSQL server in a temp dir on a free loopback port. As root it runs as
    the ``postgres`` system user (initdb refuses root). Fails loudly if it cannot start."""

    def __init__(self) -> None:
        import tempfile

        # Not under pytest's tmp_path: its folders are 0700 root, which the postgres user cannot enter.
        d = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        bindir = Path("/usr/lib/postgresql")
        candidates = sorted(bindir.glob("*/bin/initdb")) if bindir.exists() else []
        initdb = str(candidates[-1]) if candidates else shutil.which("initdb")
        if not initdb:
            raise AssertionError("PostgreSQL is not installed: run scripts/setup.sh (apt-get install postgresql)")
        self.bin = Path(initdb).parent
        self.dir = d
        self.port = free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise AssertionError("running as root, initdb needs the 'postgres' system user "
                                     "(Debian's postgresql package creates it: scripts/setup.sh)") from None
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(d, "postgres")
        self.dsn = f"host=127.0.0.1 port={self.port} user=edge dbname=postgres"

    def _run(self, *args: str) -> None:
        r = subprocess.run(self.prefix + list(args), capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"{args[0]} failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")

    def start(self) -> None:
        data = self.dir / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "edge", "--no-sync", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"), "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def collector_yaml(d: Path, broker: Broker, ident: Identity, pki: Pki, *, client_id: str, sqlite: Path | None = None,
                   dsn: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    cfg: dict[str, Any] = {
        "broker": {"host": "127.0.0.1", "port": broker.port, "ca": str(pki.ca_file), "cert": str(ident.files.cert),
                   "key": str(ident.files.key)},
        "client_id": client_id,
        "store": {"sqlite": str(sqlite)} if sqlite else {"postgres": dsn},
        "trust": {"ca": str(pki.ca_file)},
        "batch": {"max": 500, "wait_ms": 10},
    }
    cfg.update(extra or {})
    path = d / f"{client_id}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- fixtures (imported by the transport test modules) ------------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki.create(tmp_path_factory.mktemp("pki"))
    for name in ("ct-01", "ct-02", "collector", "analyst"):
        p.issue(name)
    return p


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki):  # type: ignore[no-untyped-def]
    b = Broker(tmp_path_factory.mktemp("broker"), pki)
    b.start()
    yield b
    b.stop()


class InProcessCollector:
    """The real Collector on a thread (the kill tests use the ``edge-collector`` process)."""

    def __init__(self, cfg_path: Path) -> None:
        from edge_agent.collector.config import load_collector_config
        from edge_agent.collector.process import Classifier
        from edge_agent.collector.service import Collector
        from edge_agent.collector.sqlite_store import SqliteStore
        from edge_agent.collector.pg_store import PostgresStore
        from edge_agent.collector.verify import FleetVerifier

        self.cfg = load_collector_config(cfg_path)
        self.store = SqliteStore(self.cfg.sqlite) if self.cfg.sqlite else PostgresStore(self.cfg.postgres or "")
        self.classifier = Classifier(FleetVerifier.from_files(self.cfg.trust_ca, self.cfg.crls), self.cfg.known_devices)
        self.collector = Collector(self.cfg, self.store, self.classifier)
        self.thread = threading.Thread(target=self.collector.run, daemon=True)
        self.thread.start()
        assert self.collector.subscribed.wait(10), "the collector did not subscribe"
        time.sleep(0.2)  # SUBACK

    def stop(self) -> None:
        self.collector.stop(leave=True)  # tests share a broker: leave no session behind in the group
        self.thread.join(15)
        self.store.close()
