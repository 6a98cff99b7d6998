"""The agent's ``mqtt:`` section (validated), and the one call that builds the device transport.

    mqtt:
      host: broker.site-a.example      # the site's Mosquitto (edge-collector broker-config)
      port: 8883
      site: site-a
      identity: /var/lib/edge-agent/identity   # the enrollment state (edge-agent enroll ...):
                                               # device.pem, device.key, fleet-ca.pem, sequence
      window: 100                      # verdicts in flight (capped by the broker)
      health_interval_s: 60
      outbox: {max_rows: 100000, max_bytes: 536870912, max_age_s: 604800, max_attempts: 5,
               synchronous: FULL}

The device id is the certificate's (CN = device URN); the broker maps it to the MQTT username
and the ACL confines the device to ``edge/v1/{site}/{device}/#``. The outbox lives in the agent's
``state_dir``. Wiring, for the run loop::

    transport = open_device_transport(parse_mqtt_settings(raw["mqtt"], base_dir), cfg.state_dir)
    agent.add_sink(transport.sink); transport.start()   # the agent's sink.close() stops it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .outbox import OutboxLimits
from .publisher import BrokerLink
from .tls import TlsFiles, certificate_identity
from .topics import check_identifier

__all__ = ["MqttSettings", "parse_mqtt_settings", "open_device_transport"]


@dataclass(frozen=True)
class MqttSettings:
    host: str
    site: str
    identity: Path
    port: int = 8883
    window: int = 100
    health_interval_s: float = 60.0
    outbox: OutboxLimits = field(default_factory=OutboxLimits)

    def __post_init__(self) -> None:
        try:
            check_identifier(self.site, "mqtt.site")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"mqtt.host: expected a host name or address, found {self.host!r}")

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(self.identity / "fleet-ca.pem", self.identity / "device.pem", self.identity / "device.key")

    def link(self) -> BrokerLink:
        try:
            return BrokerLink(self.host, self.port, self.tls, window=self.window, health_interval_s=self.health_interval_s)
        except ValueError as exc:
            raise ConfigError(f"mqtt: {exc}") from None


def parse_mqtt_settings(data: object, base_dir: Path) -> MqttSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"mqtt: expected a mapping, found {type(data).__name__}")
    allowed = {"host", "port", "site", "identity", "window", "health_interval_s", "outbox"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"mqtt: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    identity = data.get("identity")
    if not isinstance(identity, str):
        raise ConfigError(f"mqtt.identity: expected the enrollment state folder, found {identity!r}")
    ident = Path(identity).expanduser()
    outbox: dict[str, Any] = data.get("outbox") or {}
    try:
        limits = OutboxLimits(**outbox)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"mqtt.outbox: {exc}") from None
    return MqttSettings(
        host=data.get("host"),  # type: ignore[arg-type]
        site=data.get("site"),  # type: ignore[arg-type]
        identity=ident if ident.is_absolute() else base_dir / ident,
        port=int(data.get("port", 8883)),
        window=int(data.get("window", 100)),
        health_interval_s=float(data.get("health_interval_s", 60.0)),
        outbox=limits,
    )


def open_device_transport(settings: MqttSettings, state_dir: Path):  # type: ignore[no-untyped-def]
    """The DeviceTransport for this agent, signing with the enrolled device key."""
    from ..trust.enrollment import DeviceState
    from .device import DeviceTransport

    link = settings.link()
    signer = DeviceState(settings.identity).open_signer()
    device = certificate_identity(settings.tls.cert)
    return DeviceTransport.open(site=settings.site, device=device, state_dir=state_dir, link=link,
                                sign=signer.sign, limits=settings.outbox)
