"""User stories for the happy path: device outbox -> Mosquitto (mTLS, QoS 1) -> collector -> store."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from transport_support import (  # noqa: F401  (fixtures)
    SITE, Client, InProcessCollector, broker, collector_yaml, envelope, pki, wait_until,
)

from edge_agent.collector.sqlite_store import SqliteStore
from edge_agent.transport import BrokerLink, DeviceTransport, OutboxLimits


def test_a_verdict_signed_on_the_device_is_stored_once_by_the_collector_and_a_synthetic_one_alerts_the_analyst(tmp_path: Path, pki, broker) -> None:  # type: ignore[no-untyped-def]
    dev = pki.ids["ct-01"]
    col = InProcessCollector(collector_yaml(tmp_path, broker, pki.ids["collector"], pki, client_id="c-e2e",
                                            sqlite=tmp_path / "c.sqlite3"))
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(pki.ca_file),
         "--cert", str(pki.ids["analyst"].files.cert), "--key", str(pki.ids["analyst"].files.key),
         "-t", "edge/v1/alerts/#", "-q", "1", "-C", "1", "-W", "20"],
        stdout=subprocess.PIPE, text=True,
    )
    time.sleep(0.5)
    t = DeviceTransport.open(site=SITE, device="ct-01", state_dir=tmp_path / "agent",
                             link=BrokerLink(port=broker.port, tls=dev.files, health_interval_s=0.5),
                             sign=lambda v: b"", limits=OutboxLimits(synchronous="NORMAL"))
    t.start()
    try:
        t.sink.emit([envelope(dev, 1, "authentic"), envelope(dev, 2, "synthetic")])
        store = SqliteStore(tmp_path / "c.sqlite3", read_only=True)
        wait_until(lambda: store.count_verdicts() == 2, 15, "two stored verdicts")
        out, _ = sub.communicate(timeout=20)
        alert = json.loads(out.strip().splitlines()[0])
        assert alert["kind"] == "synthetic" and alert["device_id"] == "ct-01" and alert["site"] == SITE
        wait_until(lambda: t.outbox.stats().depth == 0, 5, "the outbox to empty after PUBACKs")
        wait_until(lambda: any(d["health"] and d["health"]["queue"]["depth"] == 0 for d in store.devices()), 5,
                   "a health message showing the empty queue")
        device = store.devices()[0]
        assert device["status"] == "online" and device["health"]["last_verdict_at"]
        assert device["health"]["certificate"]["days_left"] > 89
        t.stop()  # a clean shutdown says offline itself (and the broker drops the Will)
        wait_until(lambda: store.devices()[0]["status"] == "offline", 5, "the offline status")
        assert any(a["kind"] == "device_offline" and "clean shutdown" in a["message"] for a in store.alerts())
    finally:
        t.stop()
        col.stop()


def test_an_enrolled_agent_records_a_judged_image_and_a_revoked_device_is_refused_by_the_collector(tmp_path: Path) -> None:
    """The real parts together: the trust library's fleet CA, enrollment and VerdictSigner; the
    agent's JudgedImage through the sink; the collector verifying with the fleet CA and its CRL."""
    from cryptography.hazmat.primitives import serialization

    from edge_agent.journal import JudgedImage
    from edge_agent.transport.settings import open_device_transport, parse_mqtt_settings
    from edge_agent.trust.enrollment import DeviceState
    from edge_agent.trust.fleet_ca import FleetCA
    from edge_agent.verdict import ModelRef, Timings, Verdict
    from transport_support import Broker, Pki

    fleet = FleetCA(tmp_path / "fleet")
    fleet.init("Hospital Fleet CA")
    pki = Pki.from_fleet(fleet, tmp_path / "pki")
    for name in ("collector", "analyst"):
        pki.issue(name)
    identities = {}
    for device in ("dx-01", "dx-02"):
        state = DeviceState(tmp_path / device)
        cert = fleet.issue_device(state.init(device))
        state.install(cert.public_bytes(serialization.Encoding.PEM), fleet.cert_path.read_bytes())
        identities[device] = cert
    fleet.revoke(identities["dx-02"].serial_number)
    fleet.publish_crl()
    b = Broker(tmp_path / "broker", pki)
    b.start()
    col = InProcessCollector(collector_yaml(tmp_path, b, pki.ids["collector"], pki, client_id="c-fleet",
                                            sqlite=tmp_path / "c.sqlite3", extra={"trust": {"ca": str(fleet.cert_path),
                                                                                             "crls": [str(fleet.crl_path)]}}))
    model = ModelRef("tiny", "1", "0" * 64, "onnxruntime", "fp32")
    judged = JudgedImage(
        sha256="ab" * 32, source="hot_folder", name="img.dcm", accepted_at="2026-11-22T01:00:00Z",
        judged_at="2026-11-22T01:00:01Z",
        verdicts=tuple(Verdict("img.dcm", f, "synthetic" if f else "authentic", 0.9 if f else 0.1, 0.5, (), Timings(), model)
                       for f in (0, 1)),
    )
    transports = []
    try:
        for device in ("dx-01", "dx-02"):
            settings = parse_mqtt_settings({"host": "127.0.0.1", "port": b.port, "site": SITE, "identity": str(tmp_path / device),
                                            "outbox": {"synchronous": "NORMAL"}}, tmp_path)
            t = open_device_transport(settings, tmp_path / f"{device}-state")
            transports.append(t)
            t.start()
            t.sink.record(judged)  # two frames: two signed envelopes, one transaction
        store = col.store
        wait_until(lambda: store.count_verdicts() == 2 and len(store.rejections()) == 2, 15, "dx-01 stored, dx-02 refused")
        assert {v["device_id"] for v in store.verdicts(0)} == {"dx-01"}
        assert {r["reason"] for r in store.rejections()} == {"certificate_revoked"}
        assert sorted(v["label"] for v in store.verdicts(0)) == ["authentic", "synthetic"]
    finally:
        for t in transports:
            t.sink.close()  # what the agent does at shutdown
        col.stop()
        b.stop()
