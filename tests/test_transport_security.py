"""User stories for hostile and broken input: the broker's ACL, forged / altered / replayed /
foreign envelopes, malformed payloads. Nothing crashes the collector; nothing bad is stored as a
valid verdict; every rejection is counted, stored and alerted (MQTT and CEF over syslog)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from transport_support import (  # noqa: F401  (fixtures)
    SITE, Client, InProcessCollector, Pki, broker, collector_yaml, envelope, payload, pki, wait_until,
)

from edge_agent.transport import BrokerLink, DeviceTransport, OutboxLimits
from edge_agent.trust.envelope import ENVELOPE_TYP
from edge_agent.trust.jws import b64url_decode, b64url_encode, jwk_thumbprint, sign_flattened
from edge_agent.trust.keys import SoftwareKey


class SyslogServer:
    """A SIEM stand-in: TCP, RFC 6587 octet-counted frames."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.frames: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            while b" " in buf:
                length, rest = buf.split(b" ", 1)
                n = int(length)
                if len(rest) < n:
                    break
                self.frames.append(rest[:n].decode())
                buf = rest[n:]


@pytest.fixture(scope="module")
def site_collector(tmp_path_factory, pki, broker):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("security")
    pki.issue("ct-03")  # enrolled with the fleet CA, but not listed for this site
    pki.issue("ct-04", days=10)  # a certificate about to expire
    siem = SyslogServer()
    cfg = collector_yaml(d, broker, pki.ids["collector"], pki, client_id="c-sec", sqlite=d / "c.sqlite3", extra={
        "known_devices": {SITE: ["ct-01", "ct-02", "ct-04"]},
        "alerts": {"syslog": {"host": "127.0.0.1", "port": siem.port}, "silent_after_s": 2, "cert_warn_days": 30},
    })
    col = InProcessCollector(cfg)
    analyst = Client(broker, pki.ids["analyst"])
    analyst.subscribe("edge/v1/alerts/#")
    yield col, analyst, siem, d
    analyst.close()
    col.stop()


def _alerts(analyst: Client) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(m.payload) for m in analyst.messages]


def _wait_alert(analyst: Client, kind: str, device: str | None = None, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    def found() -> bool:
        return any(a["kind"] == kind and (device is None or a["device_id"] == device) for a in _alerts(analyst))
    wait_until(found, timeout, f"an alert {kind} for {device}")
    return next(a for a in _alerts(analyst) if a["kind"] == kind and (device is None or a["device_id"] == device))


def test_a_device_cannot_publish_under_another_devices_topic_nor_listen_to_anything(pki, broker) -> None:  # type: ignore[no-untyped-def]
    intruder = Client(broker, pki.ids["ct-02"])
    try:
        rc = intruder.publish(f"edge/v1/{SITE}/ct-01/verdict", envelope(pki.ids["ct-02"], 1))
        assert rc.value == 0x87, f"expected PUBACK 0x87 Not authorized (MQTT 5 §3.4.2.1), got {rc}"
        assert intruder.publish(f"edge/v1/{SITE}/ct-01/status", b"offline").value == 0x87
        assert intruder.publish(f"edge/v1/alerts/{SITE}", b"{}").value == 0x87
        granted: list = []  # type: ignore[type-arg]
        intruder.c.on_subscribe = lambda c, u, mid, rcs, p: granted.extend(rcs)
        intruder.c.subscribe("edge/v1/#", qos=1)
        wait_until(lambda: granted, 5, "SUBACK")
        intruder.c.publish(f"edge/v1/{SITE}/ct-02/health", b"{}", qos=1)
        time.sleep(0.5)
        assert granted[0].value == 0x87 or not intruder.messages  # refused, or at least nothing readable
        assert not intruder.messages
    finally:
        intruder.close()


def test_an_outbox_whose_messages_the_broker_refuses_quarantines_them_instead_of_blocking(tmp_path: Path, pki, broker) -> None:  # type: ignore[no-untyped-def]
    # ct-02's certificate, ct-01's topics: every PUBACK is 0x87.
    t = DeviceTransport.open(site=SITE, device="ct-01", state_dir=tmp_path, link=BrokerLink(port=broker.port, tls=pki.ids["ct-02"].files),
                             sign=lambda v: b"", limits=OutboxLimits(max_attempts=3, synchronous="NORMAL"))
    t.start()
    try:
        t.sink.emit([b"a", b"b"])
        wait_until(lambda: t.outbox.stats().quarantined == 2, 10, "both rows quarantined")
        stats = t.outbox.stats()
        assert stats.depth == 0
        assert all(r[2] == 3 and "0x87" in (r[3] or "") for r in t.outbox.quarantined_rows())
    finally:
        t.stop()


def _forge(ident, p: dict, key: ec.EllipticCurvePrivateKey) -> bytes:  # type: ignore[no-untyped-def,type-arg]
    from cryptography.hazmat.primitives import serialization

    header = {"alg": "ES256", "typ": ENVELOPE_TYP, "kid": jwk_thumbprint(ident.cert.public_key()),
              "x5c": [base64.b64encode(ident.cert.public_bytes(serialization.Encoding.DER)).decode()]}
    body = json.dumps(p, sort_keys=True, separators=(",", ":")).encode()
    return sign_flattened(header, body, SoftwareKey(key))


def test_forged_altered_replayed_and_foreign_envelopes_are_rejected_counted_and_alerted_never_stored(pki, broker, site_collector, tmp_path) -> None:  # type: ignore[no-untyped-def]
    col, analyst, siem, d = site_collector
    dev, other = pki.ids["ct-01"], pki.ids["ct-02"]
    foreign = Pki.create(tmp_path / "foreign", "Evil CA").issue("ct-01")
    valid = envelope(dev, 1, "synthetic", boot="11111111-1111-4111-8111-111111111111")
    outer = json.loads(valid)
    body = json.loads(b64url_decode(outer["payload"]))
    body["verdict"]["label"] = "authentic"  # hide a synthetic image
    outer["payload"] = b64url_encode(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    altered = json.dumps(outer).encode()
    forged = _forge(dev, payload("ct-01", 7, "authentic"), ec.generate_private_key(ec.SECP256R1()))
    resigned = envelope(dev, 1, "authentic", boot="11111111-1111-4111-8111-111111111111")  # same boot+seq, new msg_id
    veteran = pki.issue("ct-01", since_days=100)  # the same device, a certificate valid since 100 days
    stale = envelope(veteran, 9, issued_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40))
    alien = envelope(foreign, 3)
    attacker = Client(broker, dev)  # a stolen device identity: the ACL lets it use ct-01's topic
    thief = Client(broker, other)
    store = col.store
    try:
        assert attacker.publish(f"edge/v1/{SITE}/ct-01/verdict", valid).value == 0
        wait_until(lambda: store.count_verdicts() == 1, 10, "the valid verdict")
        for data in (altered, forged, resigned, stale, alien, valid):  # valid again: an honest resend
            attacker.publish(f"edge/v1/{SITE}/ct-01/verdict", data)
        thief.publish(f"edge/v1/{SITE}/ct-02/verdict", valid)  # ct-01's envelope from ct-02
        wait_until(lambda: len(store.rejections()) >= 6, 10, "six rejections")
        time.sleep(0.3)
        reasons = sorted(r["reason"] for r in store.rejections())
        assert reasons == sorted(["bad_signature", "bad_signature", "replay", "replay", "untrusted_chain", "device_mismatch"])
        assert store.count_verdicts() == 1  # the original only; the honest resend was a duplicate
        assert col.classifier.counts["duplicate"] + col.classifier.counts["verdict.duplicate"] == 1
        for kind in ("bad_signature", "replay", "untrusted_chain", "device_mismatch", "synthetic"):
            _wait_alert(analyst, kind)
        wait_until(lambda: any("|replay|" in f for f in siem.frames), 5, "CEF replay event on syslog")
        frame = next(f for f in siem.frames if "|bad_signature|" in f)
        assert frame.startswith("<106>1 ") and "CEF:0|edge-agent|edge-collector|" in frame and "cs1=site-a" in frame
    finally:
        attacker.close()
        thief.close()


def test_malformed_payloads_never_crash_the_collector(pki, broker, site_collector) -> None:  # type: ignore[no-untyped-def]
    col, analyst, siem, d = site_collector
    dev = pki.ids["ct-02"]
    c = Client(broker, dev)
    store = col.store
    before = len(store.rejections())
    try:
        topic = f"edge/v1/{SITE}/ct-02/verdict"
        garbage = [b"not json", b"", b"\xff\xfe\x00binary", b"[1,2,3]", b'{"protected": 1}', b"{" * 100_000,
                   b"x" * 600_000,  # larger than any envelope: refused before parsing
                   json.dumps({"protected": "e30", "payload": "e30", "signature": "AA"}).encode()]
        wrong_schema = _forge(dev, {"schema": 99, "type": "something-else"}, dev.key)
        for g in garbage + [wrong_schema]:
            c.publish(topic, g)
        c.publish(f"edge/v1/{SITE}/ct-02/health", b"{not json")
        c.publish(f"edge/v1/{SITE}/ct-02/status", b"\x00" * 10)
        wait_until(lambda: len(store.rejections()) - before >= 10, 15, "every malformed message rejected")
        assert col.thread.is_alive()
        assert c.publish(topic, envelope(dev, 1)).value == 0
        wait_until(lambda: any(v["device_id"] == "ct-02" for v in store.verdicts(0)), 10, "a valid verdict afterwards")
        assert {r["reason"] for r in store.rejections()} >= {"bad_format", "bad_payload"}
    finally:
        c.close()


def test_unknown_devices_silent_devices_full_outboxes_and_expiring_certificates_raise_alerts(pki, broker, site_collector) -> None:  # type: ignore[no-untyped-def]
    col, analyst, siem, d = site_collector
    unknown, quiet, expiring = Client(broker, pki.ids["ct-03"]), Client(broker, pki.ids["ct-02"]), Client(broker, pki.ids["ct-04"])
    try:
        unknown.publish(f"edge/v1/{SITE}/ct-03/verdict", envelope(pki.ids["ct-03"], 1))
        _wait_alert(analyst, "unknown_device", "ct-03")
        expiring.publish(f"edge/v1/{SITE}/ct-04/verdict", envelope(pki.ids["ct-04"], 1))
        alert = _wait_alert(analyst, "certificate_expiring", "ct-04")
        assert "renew" in alert["message"]
        quiet.publish(f"edge/v1/{SITE}/ct-02/status", b"online")
        quiet.publish(f"edge/v1/{SITE}/ct-02/health", json.dumps(
            {"queue": {"depth": 100000, "alarm": "outbox full: it holds 100000 rows"}}).encode())  # ...then nothing more
        assert "outbox full" in _wait_alert(analyst, "device_outbox_alarm", "ct-02")["message"]
        _wait_alert(analyst, "device_silent", "ct-02", timeout=15)
        assert not any(v["device_id"] == "ct-03" for v in col.store.verdicts(0))
    finally:
        for c in (unknown, quiet, expiring):
            c.close()


def test_a_verdict_too_large_for_the_broker_is_quarantined_without_dropping_the_connection(tmp_path: Path, pki, broker, site_collector) -> None:  # type: ignore[no-untyped-def]
    col = site_collector[0]
    t = DeviceTransport.open(site=SITE, device="ct-02", state_dir=tmp_path, link=BrokerLink(port=broker.port, tls=pki.ids["ct-02"].files),
                             sign=lambda v: b"", limits=OutboxLimits(max_attempts=2, synchronous="NORMAL"))
    t.start()
    try:
        t.sink.emit([b"x" * (2 * 1024 * 1024), envelope(pki.ids["ct-02"], 500)])  # 2 MiB > max_packet_size 1 MiB
        wait_until(lambda: t.outbox.stats().quarantined == 1 and t.outbox.stats().depth == 0, 10, "one quarantined, one sent")
        assert "maximum packet size" in (t.outbox.quarantined_rows()[0][3] or "")
        assert t.publisher.connections == 1  # never disconnected by the broker
        wait_until(lambda: any(v["seq"] == 500 for v in col.store.verdicts(0)), 10, "the normal verdict stored")
    finally:
        t.stop()
