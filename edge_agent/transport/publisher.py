"""The broker link: drains the outbox into Mosquitto over MQTT 5, QoS 1, mutual TLS.

One thread owns one paho client per connection (a fresh client each time, so no message is
half-remembered by paho across reconnects: the outbox alone decides what is resent). Per
connection:

1. CONNECT with Clean Start (MQTT 5 §3.1.2.4) and a Will: ``status`` = ``offline``, retained,
   QoS 1 (§3.1.2.5-§3.1.2.7), so the collector learns of a crash or a cut cable.
2. On CONNACK, honour the server's Receive Maximum (§3.2.2.3.3) and Maximum Packet Size
   (§3.2.2.3.6); publish ``online`` (retained).
3. Keep at most ``window`` outbox rows in flight; a PUBACK (§3.4) with a reason code < 0x80
   deletes the row, >= 0x80 (e.g. 0x87 Not authorized) counts a failure (quarantine at N).
   0x10 *No matching subscribers* (§3.4.2.1) is not a delivery: no collector would ever see the
   verdict. The row stays, and publishing pauses (0.5 s doubling to 10 s) before it is resent.
   This closes a real gap: Mosquitto 2.0.11 does not restore *shared* subscriptions from its
   persistence file, so right after a broker restart, until the collectors resubscribe, the
   broker would accept verdicts and drop them.
4. Every ``health_interval_s``, publish the health message.
5. On ``stop()``: publish ``offline`` (retained) and DISCONNECT with reason 0x00, which tells the
   broker to discard the Will (§3.14.4).

A lost connection makes every in-flight row pending again; reconnects wait a capped
exponential delay with full jitter (``backoff.py``).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import TransportError
from .backoff import Backoff
from .outbox import Outbox
from .tls import TlsFiles, client_context
from .topics import DeviceTopics

__all__ = ["BrokerLink", "Publisher"]

log = logging.getLogger(__name__)

_PUBLISH_OVERHEAD = 64  # fixed header + packet id + properties; topic length added per message


@dataclass(frozen=True)
class BrokerLink:
    host: str = "127.0.0.1"
    port: int = 8883
    tls: TlsFiles | None = None  # None only for tests of the logic; a device always uses TLS
    keepalive: int = 30
    window: int = 100  # rows in flight at once (capped by the broker's Receive Maximum)
    connect_timeout_s: float = 10.0
    health_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"broker port must be 1-65535, found {self.port!r}")
        if not 1 <= self.window <= 65535:
            raise ValueError(f"window must be 1-65535 (MQTT 5 §3.2.2.3.3), found {self.window!r}")
        if self.keepalive < 5 or self.health_interval_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("keepalive >= 5 s, health_interval_s > 0 and connect_timeout_s > 0 are required")


class Publisher:
    def __init__(
        self,
        link: BrokerLink,
        topics: DeviceTopics,
        outbox: Outbox,
        health: Callable[[], dict[str, Any]] = dict,
        backoff: Backoff | None = None,
        client_id: str | None = None,
    ) -> None:
        self.link = link
        self.topics = topics
        self.outbox = outbox
        self._health = health
        self._backoff = backoff or Backoff()
        self._client_id = client_id or f"{topics.site}.{topics.device}"
        self._tls = client_context(link.tls) if link.tls is not None else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.connected_since: float | None = None
        self.connections = 0  # successful CONNACKs, for tests and health
        # per-connection state, touched only by the publisher thread
        self._mids: dict[int, int] = {}
        self._acked: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._unheard: list[int] = []  # PUBACK 0x10: nobody subscribed
        self._pause_until = 0.0
        self._pause = 0.0
        self.unheard = 0  # how many PUBACK 0x10 so far (tests, health)
        self._connack: tuple[ReasonCode, Properties | None] | None = None
        self._lost = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise TransportError("the publisher is already started; create a new one per agent run")
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``offline``, disconnect cleanly and join; unsent rows stay in the outbox."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            client = self._new_client()
            try:
                self._session(client)
            except (OSError, ssl.SSLError, TransportError) as exc:
                log.warning("broker %s:%d: %s", self.link.host, self.link.port, exc)
            except Exception:  # a bug must not end the link for good: log it and reconnect
                log.exception("broker link failed unexpectedly")
            finally:
                self.connected.clear()
                self.connected_since = None
                self.outbox.connection_lost()
                self._mids.clear()
                self._acked.clear()
                self._failed.clear()
                self._unheard.clear()
                try:
                    client.socket() and client.socket().close()  # type: ignore[union-attr]
                except OSError:
                    pass
            if self._stop.is_set():
                break
            delay = self._backoff.next_delay()
            log.info("reconnecting to %s:%d in %.2f s", self.link.host, self.link.port, delay)
            self._stop.wait(delay)

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if self._tls is not None:
            client.tls_set_context(self._tls)
        will = Properties(PacketTypes.WILLMESSAGE)
        will.UserProperty = [("reason", "connection_lost")]  # §3.1.3.2.8: tells a Will from a goodbye
        client.will_set(self.topics.status, b"offline", qos=1, retain=True, properties=will)
        client.max_inflight_messages_set(self.link.window)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._connack = None
        self._lost = False
        return client

    def _session(self, client: mqtt.Client) -> None:
        sock_timeout = socket.getdefaulttimeout()
        client.connect(self.link.host, self.link.port, keepalive=self.link.keepalive, clean_start=True)
        deadline = time.monotonic() + self.link.connect_timeout_s
        while self._connack is None:
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                raise TransportError(f"no CONNACK within {self.link.connect_timeout_s} s (socket timeout {sock_timeout})")
        reason, props = self._connack
        if reason.is_failure:
            raise TransportError(f"the broker refused the connection: {reason} (MQTT 5 §3.2.2.2)")
        window = min(self.link.window, int(getattr(props, "ReceiveMaximum", 65535) or 65535))
        max_packet = int(getattr(props, "MaximumPacketSize", 0) or 0)
        self._backoff.reset()
        self.connections += 1
        self.connected_since = time.time()
        self.connected.set()
        log.info("connected to %s:%d (window %d)", self.link.host, self.link.port, window)
        client.publish(self.topics.status, b"online", qos=1, retain=True)
        next_health = 0.0
        while not self._stop.is_set() and not self._lost:
            self._settle()
            paused = time.monotonic() < self._pause_until
            sent = 0 if paused else self._pump(client, window - len(self._mids), max_packet)
            now = time.monotonic()
            if now >= next_health:
                next_health = now + self.link.health_interval_s
                self._publish_health(client)
            if client.loop(timeout=0.0 if sent else 0.02) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._stop.is_set() and not self._lost:
            self._say_goodbye(client)

    def _pump(self, client: mqtt.Client, room: int, max_packet: int) -> int:
        sent = 0
        for row in self.outbox.next_batch(room):
            if max_packet and len(row.payload) + len(row.topic) + _PUBLISH_OVERHEAD > max_packet:
                self.outbox.failed(row.id, f"payload of {len(row.payload)} bytes exceeds the broker's maximum packet size {max_packet}")
                continue
            info = client.publish(row.topic, row.payload, qos=1)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                self._mids[info.mid] = row.id
                sent += 1
            elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._lost = True
                break
            else:
                self.outbox.failed(row.id, f"publish refused locally: {mqtt.error_string(info.rc)}")
        return sent

    def _settle(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.acked(acked)
        if self._unheard:
            unheard, self._unheard = self._unheard, []
            self.outbox.not_delivered(unheard)
            self._pause = min(10.0, max(0.5, self._pause * 2))
            self._pause_until = time.monotonic() + self._pause
            log.warning("the broker has no subscriber for %d verdict(s) (PUBACK 0x10): is a collector running? "
                        "holding them, next try in %.1f s", len(unheard), self._pause)
        if self._failed:
            failed, self._failed = self._failed, []
            for row_id, why in failed:
                self.outbox.failed(row_id, why)

    def _publish_health(self, client: mqtt.Client) -> None:
        try:
            body = json.dumps(self._health(), separators=(",", ":"), allow_nan=False)
        except Exception:
            log.exception("the health message could not be built")
            return
        client.publish(self.topics.health, body.encode(), qos=1)

    def _say_goodbye(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("reason", "shutdown")]
        info = client.publish(self.topics.status, b"offline", qos=1, retain=True, properties=props)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline and not self._lost:
            if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self._settle()
        client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0))
        client.loop(timeout=0.1)

    # -- paho callbacks (run inside client.loop, on this thread) ----------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Properties | None) -> None:
        self._connack = (reason, props)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Properties | None) -> None:
        self._lost = True
        if not self._stop.is_set():
            log.warning("disconnected from the broker: %s", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Properties | None) -> None:
        row_id = self._mids.pop(mid, None)
        if row_id is None:
            return  # status / health, not an outbox row
        if reason.is_failure:
            self._failed.append((row_id, f"PUBACK {reason.value:#04x} {reason}"))
        elif reason.value == 0x10:
            self.unheard += 1
            self._unheard.append(row_id)
        else:
            self._pause = 0.0
            self._acked.append(row_id)
