"""User stories for the transport's pure parts: outbox states and bounds, backoff, topics, the
broker's ACL text, alert formats, CLI tables. No broker needed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.collector.alerts import cef_line, syslog_frame
from edge_agent.collector.records import Alert
from edge_agent.collector.report import parse_since, table
from edge_agent.errors import OutboxFullError, OutboxStateError
from edge_agent.transport.backoff import Backoff
from edge_agent.transport.broker_config import BrokerSite, acl_file, mosquitto_conf
from edge_agent.transport.outbox import Outbox, OutboxLimits, RowState, next_state
from edge_agent.transport.topics import DeviceTopics, parse_topic, shared_filters


def test_outbox_rows_survive_a_restart_and_are_resent_until_acknowledged(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3")
    ids = box.add_many("t", [b"one", b"two", b"three"])
    sent = box.next_batch(10)
    assert [r.payload for r in sent] == [b"one", b"two", b"three"]
    assert box.next_batch(10) == []  # all in flight
    box.acked([ids[0]])
    box.close()
    box = Outbox(tmp_path / "o.sqlite3")  # a crash or restart: in-flight rows are pending again
    assert [r.payload for r in box.next_batch(10)] == [b"two", b"three"]
    box.connection_lost()
    assert [r.payload for r in box.next_batch(1)] == [b"two"]
    assert box.stats().depth == 2 and box.stats().inflight == 1


def test_outbox_refuses_loudly_when_full_and_never_drops_what_it_holds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.sqlite3", OutboxLimits(max_rows=2, synchronous="NORMAL"))
    box.add("t", b"a")
    box.add("t", b"b")
    with pytest.raises(OutboxFullError, match="Nothing was dropped"):
        box.add("t", b"c")
    assert "outbox full" in caplog.text and box.stats().alarm and box.stats().depth == 2
    box.acked([r.id for r in box.next_batch(1)])
    assert box.stats().alarm is None
    box.add("t", b"c")
    with pytest.raises(OutboxFullError):
        Outbox(tmp_path / "p.sqlite3", OutboxLimits(max_bytes=10)).add("t", b"x" * 11)


def test_a_stale_outbox_raises_an_alarm_but_keeps_accepting(tmp_path: Path) -> None:
    now = [1000.0]
    box = Outbox(tmp_path / "o.sqlite3", OutboxLimits(max_age_s=60), clock=lambda: now[0])
    box.add("t", b"a")
    now[0] += 61
    assert "stale" in (box.stats().alarm or "")
    box.add("t", b"b")


def test_a_message_that_keeps_failing_is_quarantined_and_the_queue_moves_on(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite3", OutboxLimits(max_attempts=2))
    bad, good = box.add_many("t", [b"bad", b"good"])
    box.next_batch(2)
    assert box.failed(bad, "PUBACK 0x87") is RowState.PENDING
    assert [r.id for r in box.next_batch(5)] == [bad]
    assert box.failed(bad, "PUBACK 0x87") is RowState.QUARANTINED
    box.acked([good])
    assert box.stats().depth == 0 and box.stats().quarantined == 1
    assert box.quarantined_rows()[0][:3] == (bad, "t", 2)


def test_outbox_state_table_rejects_impossible_events_by_name() -> None:
    assert next_state(RowState.PENDING, "send") is RowState.INFLIGHT
    with pytest.raises(OutboxStateError, match="'pending' cannot take event 'ack'"):
        next_state(RowState.PENDING, "ack")
    with pytest.raises(OutboxStateError):
        next_state(RowState.QUARANTINED, "send")


def test_reconnect_delays_grow_with_full_jitter_and_reset_after_success() -> None:
    b = Backoff(base=1, cap=8, floor=0.1, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(5)] == [1, 2, 4, 8, 8]
    b.reset()
    assert b.next_delay() == 1
    assert Backoff(rand=lambda: 0.0).next_delay() == 0.05  # the floor: never a busy loop


def test_topics_are_one_level_per_site_and_device_and_reject_wildcards() -> None:
    t = DeviceTopics("site-a", "ct-01")
    assert (t.verdict, t.status, t.health) == ("edge/v1/site-a/ct-01/verdict", "edge/v1/site-a/ct-01/status", "edge/v1/site-a/ct-01/health")
    for bad in ("a/b", "+", "#", "$sys", "", "alerts", "x" * 65):
        with pytest.raises(ValueError):
            DeviceTopics(bad, "ct-01")
    assert parse_topic("edge/v1/site-a/ct-01/verdict").device == "ct-01"  # type: ignore[union-attr]
    assert parse_topic("edge/v1/site-a/ct-01/other") is None and parse_topic("edge/v1/alerts/site-a") is None
    assert shared_filters("collectors", ("site-a",))[0] == "$share/collectors/edge/v1/site-a/+/verdict"


def test_broker_config_confines_each_device_to_its_own_prefix(tmp_path: Path) -> None:
    cfg = BrokerSite("site-a", tmp_path / "ca.pem", tmp_path / "b.pem", tmp_path / "b.key", tmp_path / "out")
    acl = acl_file(cfg)
    assert "pattern write edge/v1/site-a/%u/#" in acl
    assert "pattern read" not in acl  # devices read nothing
    assert "user collector\ntopic read edge/v1/site-a/+/verdict" in acl and "topic write edge/v1/alerts/site-a" in acl
    conf = mosquitto_conf(cfg)
    for line in ("require_certificate true", "use_identity_as_username true", "persistence true", "allow_anonymous false"):
        assert line in conf


def test_alerts_become_cef_lines_in_octet_counted_rfc5424_frames() -> None:
    a = Alert("replay", "site-a", "ct-01", "msg|with=odd\nchars", 1_700_000_000.0, "ref")
    line = cef_line(a)
    assert line.startswith("CEF:0|edge-agent|edge-collector|") and "|replay|msg\\|with=odd chars|9|" in line
    assert "msg=msg|with\\=odd\\nchars" in line
    frame = syslog_frame(a, hostname="h")
    length, msg = frame.split(b" ", 1)
    assert int(length) == len(msg) and msg.startswith(b"<106>1 2023-11-14T22:13:20.000Z h edge-collector ")


def test_cli_reads_since_as_durations_and_prints_readable_tables() -> None:
    assert parse_since("1h") == 3600 and parse_since("15m") == 900 and parse_since("7d") == 7 * 86400
    with pytest.raises(ValueError, match="e.g. 1h"):
        parse_since("yesterday")
    out = table([{"device_id": "ct-01", "at": time.time(), "score": 0.5}], ["device_id", "at", "score"])
    assert out.splitlines()[0].split() == ["DEVICE_ID", "AT", "SCORE"] and "(1 row)" in out


def test_a_crl_republished_on_disk_revokes_a_device_without_restarting_the_collector(tmp_path: Path) -> None:
    import os

    from cryptography.hazmat.primitives import serialization

    from edge_agent.collector.verify import FleetVerifier
    from edge_agent.errors import CertificateRevokedError
    from edge_agent.trust.enrollment import DeviceState
    from edge_agent.trust.envelope import build_envelope
    from edge_agent.trust.fleet_ca import FleetCA
    from transport_support import payload

    fleet = FleetCA(tmp_path / "fleet")
    fleet.init("Fleet")
    fleet.publish_crl()
    state = DeviceState(tmp_path / "dev")
    cert = fleet.issue_device(state.init("dx-09"))
    state.install(cert.public_bytes(serialization.Encoding.PEM), fleet.cert_path.read_bytes())
    signer = state.open_signer()

    def env(seq: int) -> bytes:
        return build_envelope(payload("dx-09", seq, boot=signer.device.boot_id), signer.key, signer.chain)

    v = FleetVerifier.from_files(fleet.cert_path, [fleet.crl_path])
    assert v.verify(env(1), site="s", topic_device="dx-09").device_id == "dx-09"
    fleet.revoke(cert.serial_number)
    fleet.publish_crl()
    os.utime(fleet.crl_path, (time.time() + 5, time.time() + 5))
    v._crl_checked -= 61  # a minute later
    with pytest.raises(CertificateRevokedError):
        v.verify(env(2), site="s", topic_device="dx-09")
