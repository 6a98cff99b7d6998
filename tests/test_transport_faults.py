"""User stories for faults: the broker goes away, the agent is killed, a collector is killed.
Afterwards the collector holds every verdict exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from transport_support import (  # noqa: F401  (fixtures)
    SITE, InProcessCollector, Postgres, b64, broker, collector_yaml, envelope, pki, wait_until,
)

from edge_agent.collector.pg_store import PostgresStore
from edge_agent.collector.sqlite_store import SqliteStore
from edge_agent.transport import Backoff, BrokerLink, DeviceTransport, OutboxLimits

HERE = Path(__file__).parent
N = 1000


def _envelopes(pki, device: str, n: int = N) -> list[bytes]:  # type: ignore[no-untyped-def]
    ident = pki.ids[device]
    return [envelope(ident, seq) for seq in range(1, n + 1)]


def test_broker_stopped_for_ten_seconds_mid_stream_every_verdict_arrives_exactly_once(tmp_path: Path, pki, broker) -> None:  # type: ignore[no-untyped-def]
    envs = _envelopes(pki, "ct-01")
    col = InProcessCollector(collector_yaml(tmp_path, broker, pki.ids["collector"], pki, client_id="c-outage",
                                            sqlite=tmp_path / "c.sqlite3"))
    t = DeviceTransport.open(site=SITE, device="ct-01", state_dir=tmp_path / "agent",
                             link=BrokerLink(port=broker.port, tls=pki.ids["ct-01"].files),
                             sign=lambda v: b"", limits=OutboxLimits(synchronous="NORMAL"),
                             backoff=Backoff(base=0.2, cap=1.0))
    t.start()
    store = SqliteStore(tmp_path / "c.sqlite3", read_only=True)
    try:
        for e in envs[:300]:
            t.sink.emit([e])
        wait_until(lambda: store.count_verdicts() >= 100, 20, "the stream to start")
        broker.stop()
        outage_started = time.monotonic()
        for e in envs[300:]:  # the agent keeps judging during the outage: the outbox holds them
            t.sink.emit([e])
        assert t.outbox.stats().depth > 0
        time.sleep(max(0.0, 10.0 - (time.monotonic() - outage_started)))
        broker.start()
        wait_until(lambda: store.count_verdicts() >= N, 40, f"{N} stored verdicts after the outage")
        wait_until(lambda: t.outbox.stats().depth == 0, 10, "the outbox to drain")
    finally:
        t.stop()
        col.stop()
    ids = store.verdict_ids()
    assert len(ids) == len(set(ids)) == N
    assert t.publisher.connections >= 2
    assert col.classifier.counts["rejected.replay"] == 0


def test_agent_killed_with_sigkill_mid_stream_and_restarted_loses_and_duplicates_nothing(tmp_path: Path, pki, broker) -> None:  # type: ignore[no-untyped-def]
    envs = _envelopes(pki, "ct-02")
    env_file = tmp_path / "envelopes.b64"
    env_file.write_text("\n".join(b64(e) for e in envs))
    col = InProcessCollector(collector_yaml(tmp_path, broker, pki.ids["collector"], pki, client_id="c-kill-agent",
                                            sqlite=tmp_path / "c.sqlite3"))
    dev = pki.ids["ct-02"].files
    cmd = [sys.executable, str(HERE / "transport_agent_proc.py"), str(env_file), str(tmp_path / "agent"),
           str(broker.port), str(dev.ca), str(dev.cert), str(dev.key), "800"]
    store = SqliteStore(tmp_path / "c.sqlite3", read_only=True)
    try:
        agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        wait_until(lambda: store.count_verdicts() >= 250, 30, "the stream to start")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(5)
        killed_at = store.count_verdicts()
        # the kernel closes the socket, the broker publishes the Will (MQTT 5 §3.1.2.5)
        wait_until(lambda: any("Will" in a["message"] for a in store.alerts()), 10, "the Will's offline alert")
        assert killed_at < N, "the agent finished before it could be killed; slow it down"
        agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        out, _ = agent.communicate(timeout=60)
        assert "drained" in out
        wait_until(lambda: store.count_verdicts() >= N, 20, f"{N} stored verdicts")
        time.sleep(0.3)
    finally:
        col.stop()
    ids = store.verdict_ids()
    assert len(ids) == len(set(ids)) == N
    assert col.classifier.counts["rejected.replay"] == 0


def test_a_collector_killed_while_another_runs_loses_nothing_with_a_shared_postgresql_store(tmp_path: Path, pki, broker) -> None:  # type: ignore[no-untyped-def]
    pg = Postgres()
    pg.start()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str) -> None:
        cfg = collector_yaml(tmp_path, broker, pki.ids["collector"], pki, client_id=name, dsn=pg.dsn)
        with (logs / f"{name}.log").open("ab") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "edge_agent.collector_cli", "run", "--config", str(cfg)],
                                           stdout=log, stderr=subprocess.STDOUT)

    try:
        start("c-1")
        start("c-2")
        store = PostgresStore(pg.dsn)
        time.sleep(2.0)  # both subscribed (shared group "collectors")
        t = DeviceTransport.open(site=SITE, device="ct-01", state_dir=tmp_path / "agent",
                                 link=BrokerLink(port=broker.port, tls=pki.ids["ct-01"].files),
                                 sign=lambda v: b"", limits=OutboxLimits(synchronous="NORMAL"))
        envs = _envelopes(pki, "ct-01")
        t.start()
        for e in envs[:400]:
            t.sink.emit([e])
        wait_until(lambda: store.count_verdicts() >= 150, 30, "both collectors to store")
        procs["c-1"].kill()  # SIGKILL: no chance to commit or acknowledge its current batch
        procs["c-1"].wait(5)
        for e in envs[400:]:
            t.sink.emit([e])
        time.sleep(1.0)
        start("c-1")  # same client id: the broker resumes its session and redelivers (MQTT 5 §4.4)
        wait_until(lambda: store.count_verdicts() >= N, 60, f"{N} stored verdicts: " + (logs / "c-1.log").read_text()[-800:])
        t.stop()
        ids = store.verdict_ids()
        assert len(ids) == len(set(ids)) == N
        assert {v["device_id"] for v in store.verdicts(0, limit=N + 10)} == {"ct-01"}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
        pg.stop()
    text = (logs / "c-2.log").read_text()
    assert "Traceback" not in text, text[-2000:]
