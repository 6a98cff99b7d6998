"""Device-side transport: durable outbox -> MQTT 5 (QoS 1, mutual TLS) -> Mosquitto.

Modules, each readable alone: ``topics`` (names), ``backoff`` (reconnect delays), ``outbox``
(SQLite WAL queue + row-state table), ``tls`` (mutual TLS context), ``health`` (health message),
``publisher`` (the paho link), ``sink`` (the run loop's VerdictSink), ``device`` (assembly),
``broker_config`` (Mosquitto conf + ACL for a site).
"""

from .backoff import Backoff
from .broker_config import BrokerSite, write_broker_config
from .device import DeviceTransport
from .outbox import Outbox, OutboxLimits, OutboxStats, RowState
from .publisher import BrokerLink, Publisher
from .sink import MqttOutboxSink
from .tls import TlsFiles
from .topics import DeviceTopics, alerts_topic, parse_topic, shared_filters

__all__ = [
    "Backoff",
    "BrokerSite",
    "write_broker_config",
    "DeviceTransport",
    "Outbox",
    "OutboxLimits",
    "OutboxStats",
    "RowState",
    "BrokerLink",
    "Publisher",
    "MqttOutboxSink",
    "TlsFiles",
    "DeviceTopics",
    "alerts_topic",
    "parse_topic",
    "shared_filters",
]
