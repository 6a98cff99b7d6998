"""``collector.yaml``: validated completely before the collector connects.

    broker:   {host: 127.0.0.1, port: 8883, ca: fleet-ca.pem, cert: collector.pem, key: collector.key}
    client_id: collector-1          # one per process; the broker keeps its session across restarts
    share_group: collectors         # processes in one group split the load (MQTT 5 §4.8.2)
    sites: [site-a]                 # [] = every site
    session_expiry_s: 604800        # how long the broker queues for a collector that is down
    store: {sqlite: collector.sqlite3}   # or {postgres: "host=... dbname=... user=..."}
    trust: {ca: fleet-ca.pem, crls: [fleet.crl.pem], max_age_s: 1209600}
    known_devices: {}               # {site: [device, ...]}; empty = any device the fleet CA vouches for
    alerts: {mqtt: true, syslog: null, silent_after_s: 900, cert_warn_days: 30}
    batch: {max: 500, wait_ms: 20}

Relative paths are taken relative to the file's folder. Unknown keys are errors (a typo must
not silently turn a check off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..transport.tls import TlsFiles
from ..transport.topics import check_identifier

__all__ = ["CollectorConfig", "load_collector_config", "parse_collector_config"]


@dataclass(frozen=True)
class CollectorConfig:
    host: str
    port: int
    tls: TlsFiles
    client_id: str
    trust_ca: Path
    sqlite: Path | None = None
    postgres: str | None = None
    crls: tuple[Path, ...] = ()
    share_group: str = "collectors"
    sites: tuple[str, ...] = ()
    session_expiry_s: int = 7 * 86400
    max_age_s: float = 14 * 86400.0
    known_devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    alerts_mqtt: bool = True
    syslog: tuple[str, int] | None = None
    silent_after_s: float = 900.0
    cert_warn_days: float = 30.0
    batch_max: int = 500
    batch_wait_ms: int = 20
    max_payload: int = 256 * 1024

    def __post_init__(self) -> None:
        if (self.sqlite is None) == (self.postgres is None):
            raise ConfigError("store: expected exactly one of sqlite (a path) or postgres (a DSN)")
        if not 0 < self.port < 65536:
            raise ConfigError(f"broker.port: expected 1-65535, found {self.port!r}")
        try:
            check_identifier(self.share_group, "share_group")
            for s in self.sites:
                check_identifier(s, "sites[]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 1 <= self.batch_max <= 1000:
            raise ConfigError(f"batch.max: expected 1-1000 (the broker's in-flight window), found {self.batch_max}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ConfigError(f"batch.wait_ms: expected 0-1000, found {self.batch_wait_ms}")
        if self.session_expiry_s < 60:
            raise ConfigError(f"session_expiry_s: expected >= 60 (a restarted collector must find its session), found {self.session_expiry_s}")


def _take(d: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = d.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, found {type(value).__name__}")
    unknown = set(value) - allowed
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return value


def parse_collector_config(data: object, base: Path) -> CollectorConfig:
    if not isinstance(data, dict):
        raise ConfigError("collector.yaml: expected a mapping at the top level")
    top = {"broker", "client_id", "share_group", "sites", "session_expiry_s", "store", "trust", "known_devices", "alerts", "batch"}
    unknown = set(data) - top
    if unknown:
        raise ConfigError(f"collector.yaml: unknown key(s) {sorted(unknown)}; allowed: {sorted(top)}")

    def path(v: object, key: str) -> Path:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{key}: expected a path, found {v!r}")
        p = Path(v).expanduser()
        return p if p.is_absolute() else base / p

    broker = _take(data, "broker", {"host", "port", "ca", "cert", "key"})
    store = _take(data, "store", {"sqlite", "postgres"})
    trust = _take(data, "trust", {"ca", "crls", "max_age_s"})
    alerts = _take(data, "alerts", {"mqtt", "syslog", "silent_after_s", "cert_warn_days"})
    batch = _take(data, "batch", {"max", "wait_ms"})
    syslog = alerts.get("syslog")
    if syslog is not None:
        if not isinstance(syslog, dict) or set(syslog) - {"host", "port"} or not isinstance(syslog.get("port"), int):
            raise ConfigError("alerts.syslog: expected {host: ..., port: ...} or null")
        syslog = (str(syslog.get("host", "127.0.0.1")), int(syslog["port"]))
    known = data.get("known_devices") or {}
    if not isinstance(known, dict) or not all(isinstance(v, list) for v in known.values()):
        raise ConfigError("known_devices: expected {site: [device, ...]}")
    tls = TlsFiles(path(broker.get("ca"), "broker.ca"), path(broker.get("cert"), "broker.cert"), path(broker.get("key"), "broker.key"))
    return CollectorConfig(
        host=str(broker.get("host", "127.0.0.1")),
        port=int(broker.get("port", 8883)),
        tls=tls,
        client_id=str(data.get("client_id") or "collector-1"),
        trust_ca=path(trust.get("ca") or broker.get("ca"), "trust.ca"),
        crls=tuple(path(c, "trust.crls[]") for c in trust.get("crls") or ()),
        max_age_s=float(trust.get("max_age_s", 14 * 86400)),
        sqlite=path(store["sqlite"], "store.sqlite") if "sqlite" in store else None,
        postgres=str(store["postgres"]) if "postgres" in store else None,
        share_group=str(data.get("share_group", "collectors")),
        sites=tuple(data.get("sites") or ()),
        session_expiry_s=int(data.get("session_expiry_s", 7 * 86400)),
        known_devices={str(k): tuple(str(d) for d in v) for k, v in known.items()},
        alerts_mqtt=bool(alerts.get("mqtt", True)),
        syslog=syslog,
        silent_after_s=float(alerts.get("silent_after_s", 900)),
        cert_warn_days=float(alerts.get("cert_warn_days", 30)),
        batch_max=int(batch.get("max", 500)),
        batch_wait_ms=int(batch.get("wait_ms", 20)),
    )


def load_collector_config(path: str | Path) -> CollectorConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{p}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    return parse_collector_config(data, p.parent.resolve())
