"""The loop behind ``edge-agent demo``: the whole product on one machine, loopback only.

    fleet CA  ->  broker server certificate, device identity, collector identity   (edge_agent.trust)
    mosquitto -c broker/mosquitto.conf             TLS on 127.0.0.1:<free port>, client certs, the ACL
    edge-collector run --config collector.yaml     verify -> dedup -> SQLite store -> alerts
    edge-agent run --config agent.yaml             hot folder -> judge -> sign -> outbox -> MQTT
    images renamed into the hot folder  ->  wait for one verified verdict per image in the store
    print the verdicts and the alerts the collector raised
    SIGTERM agent, collector, broker (reverse order); each must exit 0

Every step has a name. When one fails, whatever was started is stopped (reverse order) and a
:class:`~edge_agent.errors.DemoError` names the step and the log to read. The three processes are
the real commands, started with this interpreter, so the demo runs exactly what a site runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .collector.report import table
from .collector.sqlite_store import SqliteStore
from .errors import DemoError, EdgeAgentError
from .transport.broker_config import BrokerSite, write_broker_config
from .trust.enrollment import DeviceState
from .trust.fleet_ca import FleetCA
from .trust.keys import PassphraseSource, write_private_file

__all__ = ["LoopResult", "run_loop", "SITE", "DEVICE_ID"]

SITE = "demo-site"
DEVICE_ID = "demo-xray-01"
COLLECTOR_ID = "collector"  # the identity the generated ACL lets read verdicts (BrokerSite.collector)
LOOPBACK = "127.0.0.1"
_STOP_TIMEOUT_S = 30.0  # the agent finishes the image it is judging before it exits


@dataclass
class _Service:
    """One child process of the loop and its log file."""

    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches the demo only, which then stops
            # the processes one by one in the right order instead of all at once.
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"{self.name} exited with status {self.proc.returncode}; its log {self.log} ends:\n{self.tail()}")

    def log_has(self, text: str) -> bool:
        try:
            return text in self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return "    (no log)"
        return "\n".join("    " + ln for ln in text[-lines:])

    def stop(self) -> str | None:
        """SIGTERM and wait; SIGKILL if it hangs. Returns None on a clean exit (status 0), else why not."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return f"{self.name} did not stop within {_STOP_TIMEOUT_S:.0f} s of SIGTERM and was killed"
        status = self.proc.returncode
        return None if status == 0 else f"{self.name} exited with status {status} (log {self.log})"


@dataclass
class LoopResult:
    work: Path
    port: int
    verdicts: list[dict[str, object]]
    alerts: list[dict[str, object]]


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait(pred: Callable[[], bool], timeout: float, what: str, services: Sequence[_Service]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        for s in services:
            s.check_running()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def _enroll(ca: FleetCA, directory: Path, name: str) -> Path:
    """Enroll ``name`` exactly as a device is enrolled: key and CSR here, certificate from the CA."""
    state = DeviceState(directory)
    cert = ca.issue_device(state.init(name))
    state.install(cert.public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    return directory


def _make_pki(work: Path) -> tuple[Path, Path, Path, Path, Path]:
    """Fleet CA, broker server key + certificate, device and collector identities."""
    ca = FleetCA(work / "fleet-ca", PassphraseSource())  # a throw-away CA: its key is not encrypted
    ca.init("edge-agent demo fleet CA")
    key = ec.generate_private_key(ec.SECP256R1())
    broker_key, broker_cert = work / "broker" / "broker.key", work / "broker" / "broker.pem"
    broker_key.parent.mkdir(parents=True)
    write_private_file(broker_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    broker_cert.write_bytes(ca.issue_server(key.public_key(), "broker.demo").public_bytes(serialization.Encoding.PEM))
    device = _enroll(ca, work / "device-identity", DEVICE_ID)
    collector = _enroll(ca, work / "collector-identity", COLLECTOR_ID)
    return ca.cert_path, broker_key, broker_cert, device, collector


def _write_configs(work: Path, port: int, ca_pem: Path, broker_key: Path, broker_cert: Path, device: Path,
                   collector: Path, model: Path | None, forensics: dict[str, str] | None = None) -> tuple[Path, Path, Path]:
    conf = write_broker_config(BrokerSite(SITE, ca_pem, broker_cert, broker_key, work / "broker", port=port, bind=LOOPBACK,
                                          collector=COLLECTOR_ID, run_as="root" if os.geteuid() == 0 else None))
    collector_yaml = work / "collector.yaml"
    collector_yaml.write_text(json.dumps({  # JSON is YAML
        "broker": {"host": LOOPBACK, "port": port, "ca": str(ca_pem), "cert": str(collector / "device.pem"),
                   "key": str(collector / "device.key")},
        "client_id": "demo-collector", "sites": [SITE],
        "store": {"sqlite": str(work / "collector.sqlite3")},
        "trust": {"ca": str(ca_pem)},
        "batch": {"max": 100, "wait_ms": 20},
    }, indent=2) + "\n")
    agent_yaml = work / "agent.yaml"
    agent_yaml.write_text(json.dumps({
        "state_dir": str(work / "agent-state"),
        "model": {"path": str(model) if model else None, "threads": 2},
        "hook": {"enabled": False},
        "hot_folder": {"path": str(work / "hot"), "stable_seconds": 0.5, "poll_seconds": 0.2},
        "logging": {"level": "INFO"},
        "mqtt": {"host": LOOPBACK, "port": port, "site": SITE, "identity": str(device), "health_interval_s": 30},
        **({"forensics": forensics} if forensics else {}),
    }, indent=2) + "\n")
    return conf, collector_yaml, agent_yaml


def _drop_into_hot_folder(images: Sequence[Path], hot: Path) -> dict[str, str]:
    """Copy each image in by rename-into-place (never half a file); returns sha256 -> shown name."""
    expected: dict[str, str] = {}
    for i, src in enumerate(images):
        name = f"{i:02d}-{src.parent.name}-{src.name}"
        part = hot / f".{name}.part"
        shutil.copyfile(src, part)
        os.replace(part, hot / name)
        expected.setdefault(hashlib.sha256(src.read_bytes()).hexdigest(), f"{src.parent.name}/{src.name}")
    return expected


class _Steps:
    """Runs named steps; a failure becomes one DemoError naming the step and the logs."""

    def __init__(self, logs: Path, say: Callable[[str], None]) -> None:
        self.logs, self.say = logs, say

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.say(f"demo: {name}")
        try:
            yield
        except DemoError as exc:
            raise DemoError(f"step '{name}' failed: {exc}\n  logs: {self.logs}") from None
        except (EdgeAgentError, OSError, ValueError, sqlite3.Error, subprocess.SubprocessError) as exc:
            raise DemoError(f"step '{name}' failed: {type(exc).__name__}: {exc}\n  logs: {self.logs}") from None


def _wait_for_verdicts(store_path: Path, expected: dict[str, str], timeout: float, services: Sequence[_Service],
                       say: Callable[[str], None]) -> dict[str, dict[str, object]]:
    """Poll the collector's store until every image has a verified verdict; fail fast on a rejection."""
    seen: dict[str, dict[str, object]] = {}
    shown = [-1, 0.0]  # the count last printed, and when (one progress line every 2 s at most)

    def delivered() -> bool:
        with contextlib.closing(SqliteStore(store_path, read_only=True)) as store:
            rejected = store.rejections()
            if rejected:
                raise DemoError(f"the collector rejected a message: {rejected[0]['reason']}: {rejected[0]['detail']}")
            for row in store.verdicts(0.0, limit=10_000, device=DEVICE_ID):
                if row.get("file_sha256") in expected:
                    seen.setdefault(str(row["file_sha256"]), row)
        now = time.monotonic()
        if len(seen) != shown[0] and (now - shown[1] >= 2.0 or len(seen) == len(expected)):
            shown[0], shown[1] = len(seen), now
            say(f"      {len(seen)}/{len(expected)} verified and stored")
        return len(seen) == len(expected)

    try:
        _wait(delivered, timeout, f"{len(expected)} verified verdicts in {store_path}", services)
    except DemoError as exc:
        missing = [name for digest, name in expected.items() if digest not in seen]
        raise DemoError(f"{exc}; {len(missing)} image(s) without a stored verdict: {', '.join(missing[:5])}") from None
    return seen


def _collector_table(kind: str, collector_yaml: Path) -> str:
    """What ``edge-collector verdicts|alerts`` prints: the collector's own view, not ours."""
    r = subprocess.run([sys.executable, "-m", "edge_agent.collector_cli", kind, "--config", str(collector_yaml),
                        "--since", "1d"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise DemoError(f"edge-collector {kind} exited with status {r.returncode}: {r.stderr.strip()[-500:]}")
    return r.stdout.rstrip()


def run_loop(images: Sequence[Path], work: Path, model: Path | None, timeout: float,
             say: Callable[[str], None] = print, forensics: dict[str, str] | None = None) -> LoopResult:
    """Run the loop in ``work`` (created; must not exist yet) and print what the collector stored.
    Raises :class:`DemoError` naming the failed step, after stopping everything it started."""
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if mosquitto is None:
        raise DemoError("mosquitto is not installed; run `bash scripts/setup.sh` (it installs Debian's mosquitto)")
    work.mkdir(parents=True)
    os.chmod(work, 0o700)  # it holds the demo CA's and the identities' private keys
    logs = work / "logs"
    logs.mkdir()
    steps = _Steps(logs, say)
    services: list[_Service] = []
    py = [sys.executable, "-m"]
    port = free_loopback_port()
    try:
        with steps.step("fleet CA, broker server certificate, device and collector enrolled"):
            ca_pem, broker_key, broker_cert, device, collector = _make_pki(work)
            conf, collector_yaml, agent_yaml = _write_configs(work, port, ca_pem, broker_key, broker_cert, device,
                                                              collector, model, forensics)
        broker = _Service("mosquitto", [mosquitto, "-c", str(conf)], logs / "mosquitto.log")
        coll = _Service("edge-collector", py + ["edge_agent.collector_cli", "-v", "run", "--config", str(collector_yaml)],
                        logs / "collector.log")
        agent = _Service("edge-agent", py + ["edge_agent.cli", "run", "--config", str(agent_yaml)], logs / "agent.log")
        with steps.step(f"Mosquitto on {LOOPBACK}:{port} (TLS, client certificates, generated ACL)"):
            services.append(broker)
            broker.start()
            say(f"      pid {broker.pid}, log {broker.log}")
            _wait(lambda: _listening(port), 15, f"mosquitto to listen on {LOOPBACK}:{port}", services)
        with steps.step("edge-collector (SQLite store) subscribed"):
            services.append(coll)
            coll.start()
            say(f"      pid {coll.pid}, log {coll.log}")
            _wait(lambda: coll.log_has("subscribed:"), 30, "the collector to subscribe", services)
        with steps.step("edge-agent running (hot folder in, signed verdicts out over MQTT)"):
            services.append(agent)
            agent.start()
            say(f"      pid {agent.pid}, log {agent.log}")
            _wait(lambda: agent.log_has("edge-agent running"), 60, "the agent to load its model and start", services)
        with steps.step(f"{len(images)} images renamed into the hot folder {work / 'hot'}"):
            expected = _drop_into_hot_folder(images, work / "hot")
        with steps.step(f"waiting for one verified verdict per image (at most {timeout:g} s)"):
            seen = _wait_for_verdicts(work / "collector.sqlite3", expected, timeout, services, say)
        with steps.step("the collector's view"):
            verdicts = [{**seen[digest], "image": name} for digest, name in expected.items()]
            say("\nverified by the collector, per image:\n" + table(verdicts, ["image", "label", "score", "seq"]))
            say("\n$ edge-collector verdicts --config collector.yaml\n" + _collector_table("verdicts", collector_yaml))
            say("\n$ edge-collector alerts --config collector.yaml\n" + _collector_table("alerts", collector_yaml) + "\n")
            with contextlib.closing(SqliteStore(work / "collector.sqlite3", read_only=True)) as store:
                alerts = store.alerts(0.0)
    except BaseException as exc:
        for s in reversed(services):
            with contextlib.suppress(Exception):
                s.stop()
        if isinstance(exc, KeyboardInterrupt):
            say(f"demo: interrupted; stopped everything it had started (logs: {logs})")
        raise
    with steps.step("shutdown: SIGTERM to the agent, then the collector, then the broker"):
        problems = [p for p in (s.stop() for s in reversed(services)) if p]
        if problems:
            raise DemoError("; ".join(problems))
        if _listening(port):
            raise DemoError(f"something still listens on {LOOPBACK}:{port} after the broker stopped")
    return LoopResult(work, port, verdicts, alerts)
