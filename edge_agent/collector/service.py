"""The collector process: MQTT 5 shared subscription -> classify -> one transaction -> PUBACK.

* **Shared subscription** ``$share/{group}/edge/v1/{site}/+/{kind}`` (MQTT 5 §4.8.2): several
  collector processes with the same group split the messages.
* **Persistent session**: Clean Start = 0 and a Session Expiry Interval (§3.1.2.4, §3.1.2.11),
  a stable client id per process: while a collector is down the broker queues its share, and on
  reconnect it resends every unacknowledged message (§4.4).
* **Acknowledge after commit**: paho's ``manual_ack``; a PUBACK (§3.4) is sent only once the
  batch containing the message is committed. A collector killed mid-batch loses nothing: the
  broker redelivers, and the store's idempotent inserts make the redelivery harmless.
* **Flow control**: Receive Maximum (§3.3.4) = the batch size, so the broker never has more
  unacknowledged messages out to us than one batch.

Alerts are published (QoS 1) on ``edge/v1/alerts/{site}`` after the commit, and sent to syslog.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from ..errors import StoreError
from ..transport.backoff import Backoff
from ..transport.tls import client_context
from ..transport.topics import alerts_topic, shared_filters
from .alerts import SyslogSender
from .config import CollectorConfig
from .process import Classifier, Incoming, apply_batch
from .records import Alert
from .store import Store

__all__ = ["Collector"]

log = logging.getLogger(__name__)


class Collector:
    def __init__(self, cfg: CollectorConfig, store: Store, classifier: Classifier, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.store = store
        self.classifier = classifier
        self._clock = clock
        # One thread does everything (network via client.loop, verify, store, ack): no queue
        # hand-off between threads per message, and acks never race a reconnect.
        self._pending: list[tuple[int, int, int, Incoming]] = []
        self._first_at = 0.0
        self._stop = threading.Event()
        self._leave = False
        self._gen = 0  # connection generation: a mid is only meaningful on the connection it came on
        self.subscribed = threading.Event()
        self.syslog = SyslogSender(*cfg.syslog) if cfg.syslog else None
        self.alerts_sent = 0
        self.client = self._new_client()

    def _new_client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                        protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        c.tls_set_context(client_context(self.cfg.tls))
        c.max_inflight_messages_set(200)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        return c

    # -- paho callbacks (inside client.loop, on the run() thread) -------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Properties | None) -> None:
        if reason.is_failure:
            log.error("the broker refused the collector: %s", reason)
            return
        self._gen += 1
        log.info("connected (session present: %s)", getattr(flags, "session_present", None))
        # Subscribing again is harmless with a present session, and needed without one (and after a
        # Mosquitto 2.0 restart, which forgets shared subscriptions).
        topics = [(f, mqtt.SubscribeOptions(qos=1)) for f in shared_filters(self.cfg.share_group, self.cfg.sites)]
        client.subscribe(topics)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("the broker refused %d subscription(s): %s; check the ACL for %s", len(refused), refused, self.cfg.client_id)
            return
        log.info("subscribed: %d filters in share group %r", len(reasons), self.cfg.share_group)
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Properties | None) -> None:
        self.subscribed.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting, the session keeps our messages", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        reason = None
        props = getattr(msg, "properties", None)
        for key, value in getattr(props, "UserProperty", None) or ():
            if key == "reason":
                reason = str(value)[:40]
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append((self._gen, msg.mid, msg.qos, Incoming(msg.topic, bytes(msg.payload), self._clock(), reason)))

    # -- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        """Connect and process until ``stop()``; returns after the last batch is committed."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.batch_max
        backoff = Backoff(base=0.5, cap=10.0)
        connected = first = False
        next_watch = 0.0
        wait = self.cfg.batch_wait_ms / 1000.0
        try:
            while not self._stop.is_set():
                if not connected:
                    try:
                        if first:
                            self.client.reconnect()
                        else:
                            self.client.connect(self.cfg.host, self.cfg.port, keepalive=30, clean_start=False, properties=props)
                            first = True
                        connected = True
                    except (OSError, ssl.SSLError) as exc:
                        delay = backoff.next_delay()
                        log.warning("broker %s:%d: %s; retrying in %.1f s", self.cfg.host, self.cfg.port, exc, delay)
                        self._stop.wait(delay)
                        continue
                if self.client.loop(timeout=0.005 if self._pending else 0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    connected = False
                    self.subscribed.clear()
                    self._flush()  # store what arrived (idempotent); the broker redelivers it anyway
                    self._stop.wait(backoff.next_delay())
                    continue
                if self.subscribed.is_set():
                    backoff.reset()
                if self._pending and (len(self._pending) >= self.cfg.batch_max or time.monotonic() - self._first_at >= wait):
                    self._flush()
                if time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + min(5.0, self.cfg.silent_after_s / 2)
                    self._watch()
            self._flush()
            if self._leave and connected:  # take what the broker still queues for us, then end the session
                idle_until = time.monotonic() + 1.0
                while time.monotonic() < idle_until:
                    if self.client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                    if self._pending:
                        idle_until = time.monotonic() + 1.0
                        if len(self._pending) >= self.cfg.batch_max or time.monotonic() - self._first_at >= wait:
                            self._flush()
                self._flush()
        finally:
            if self._leave:
                props = Properties(PacketTypes.DISCONNECT)
                props.SessionExpiryInterval = 0  # MQTT 5 §3.14.2.2.2: the broker drops our session
                self.client.disconnect(properties=props)
            else:
                self.client.disconnect()  # reason 0: the session (and our queue) stays on the broker
            self.client.loop(timeout=0.05)
            if self.syslog:
                self.syslog.close()

    def stop(self, leave: bool = False) -> None:
        """Stop after the current batch (thread- and signal-safe). ``leave``: this process leaves
        the share group for good — it first drains what the broker queued for it, then ends its
        session, so no message is left queued for a collector that will never come back
        (Mosquitto does not hand a dead session's share to the other members)."""
        self._leave = leave
        self._stop.set()

    # -- processing ---------------------------------------------------------------------
    def _flush(self) -> int:
        items, self._pending = self._pending, []
        if not items:
            return 0
        classified = [self.classifier.classify(inc) for _, _, _, inc in items]
        delay = 0.5
        while True:  # a store outage (PostgreSQL restarting, disk full) holds the batch, unacknowledged
            try:
                new_alerts = apply_batch(self.store, classified, self.classifier, self._clock(), self.cfg.cert_warn_days)
                break
            except StoreError as exc:
                if self._stop.is_set():
                    log.error("%s; stopping without acknowledging %d message(s): the broker redelivers them", exc, len(items))
                    return len(items)
                log.error("%s; retrying in %.1f s (nothing acknowledged, nothing lost)", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        for gen, mid, qos, _ in items:  # PUBACK only after the commit, on the connection it came on
            if qos > 0 and gen == self._gen and self.client.is_connected():
                self.client.ack(mid, qos)
        self._send_alerts(new_alerts)
        return len(items)

    def _watch(self) -> None:
        now = self._clock()
        try:
            silent = self.store.silent_devices(now - self.cfg.silent_after_s)
            if not silent:
                return
            alerts = []
            with self.store.batch() as tx:
                for d in silent:
                    tx.mark_silent(d["site"], d["device_id"])
                    alerts.append(Alert("device_silent", d["site"], d["device_id"],
                                        f"{d['device_id']} has sent nothing for {now - d['last_seen']:.0f} s "
                                        f"(silent_after_s {self.cfg.silent_after_s:.0f}) but never said offline",
                                        now, f"{d['last_seen']:.3f}"))
                new = tx.insert_alerts(alerts)
            self._send_alerts(new)
        except Exception:
            log.exception("the silent-device check failed; it runs again in 5 s")

    def _send_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            log.warning("ALERT %s %s/%s: %s", a.kind, a.site, a.device_id, a.message)
            if self.cfg.alerts_mqtt:
                self.client.publish(alerts_topic(a.site) if a.site != "unknown" else "edge/v1/alerts/unknown",
                                    a.to_json(), qos=1)
            if self.syslog:
                self.syslog.send(a)
            self.alerts_sent += 1
