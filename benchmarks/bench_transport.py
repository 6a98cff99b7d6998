"""Transport speed (issue 5): verdicts per second end to end, and the collector's cost per core.

    python benchmarks/bench_transport.py [--n 6000] [--skip-postgres]

Everything is real: a Mosquitto broker with the generated site config (mutual TLS, ACL,
persistence) on a free loopback port, envelopes signed by the trust library, the device outbox
(SQLite WAL) and publisher (paho, MQTT 5, QoS 1), and ``edge-collector run`` processes
(shared subscription, persistent session, batch commits, PUBACK after commit).

Printed figures:
  outbox commit       rows/s committed by ``Outbox.add`` one at a time (synchronous FULL / NORMAL)
  outbox -> broker    N pre-committed rows drained by the publisher: PUBACKed and deleted, per s
  end to end          the same N rows until every one is verified and stored by the collector(s)
  collector per core  Classifier.classify (verify) + one transaction per 500 (SQLite), in-process,
                      single thread: verified-and-stored per CPU-second
Envelope signing is not timed (the device signs each verdict once, far below these rates).
The machine is shared: run it twice and take the better figure; medians of 3 for the micro part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from transport_support import SITE, Broker, Pki, Postgres, collector_yaml, envelope  # noqa: E402

from edge_agent.collector.process import Classifier, Incoming, apply_batch  # noqa: E402
from edge_agent.collector.pg_store import PostgresStore  # noqa: E402
from edge_agent.collector.sqlite_store import SqliteStore  # noqa: E402
from edge_agent.collector.verify import FleetVerifier  # noqa: E402
from edge_agent.transport import BrokerLink, Outbox, OutboxLimits, Publisher  # noqa: E402
from edge_agent.transport.topics import DeviceTopics  # noqa: E402


def _outbox_commit_rate(d: Path, envs: list[bytes], sync: str, n: int) -> float:
    box = Outbox(d / f"commit-{sync}.sqlite3", OutboxLimits(synchronous=sync))
    t = time.perf_counter()
    for e in envs[:n]:
        box.add("edge/v1/s/d/verdict", e)
    rate = n / (time.perf_counter() - t)
    box.close()
    return rate


def _end_to_end(d: Path, broker: Broker, pki: Pki, envs: list[bytes], collectors: int, store: str, dsn: str | None) -> tuple[float, float, float, float]:
    run = d / f"run-{collectors}-{store}"
    run.mkdir()
    sqlite = run / "c.sqlite3" if store == "sqlite" else None
    procs = []
    for i in range(collectors):
        cfg = collector_yaml(run, broker, pki.ids["collector"], pki, client_id=f"bench-{collectors}-{store}-{i}",
                             sqlite=sqlite, dsn=dsn if store == "postgres" else None)
        procs.append(subprocess.Popen([sys.executable, "-m", "edge_agent.collector_cli", "-v", "run", "--leave", "--config", str(cfg)],
                                      stdout=subprocess.DEVNULL, stderr=open(run / f"c{i}.log", "wb")))
    reader = SqliteStore(sqlite) if sqlite else PostgresStore(dsn or "")
    for i in range(collectors):  # every collector has its SUBACK
        log = run / f"c{i}.log"
        t_end = time.monotonic() + 30
        while "subscribed:" not in log.read_text() and time.monotonic() < t_end:
            time.sleep(0.05)
    box = Outbox(run / "outbox.sqlite3", OutboxLimits(synchronous="NORMAL", max_rows=len(envs) + 10))
    box.add_many(DeviceTopics(SITE, "ct-01").verdict, envs)
    pub = Publisher(BrokerLink(port=broker.port, tls=pki.ids["ct-01"].files, window=200), DeviceTopics(SITE, "ct-01"), box)
    start = time.perf_counter()
    cpu0 = time.process_time()
    pub.start()
    drained = stored = None
    deadline = start + 300
    while time.perf_counter() < deadline and stored is None:
        now = time.perf_counter()
        if drained is None and box.stats().depth == 0:
            drained = now - start
        if reader.count_verdicts() >= len(envs):
            stored = now - start
        time.sleep(0.02)
    pub.stop()
    pub_cpu = time.process_time() - cpu0
    col_cpu = sum(_cpu_seconds(p.pid) for p in procs)
    for p in procs:
        p.terminate()
        p.wait(30)
    base = reader.count_verdicts()
    reader.close()
    box.close()
    if stored is None or drained is None:
        raise SystemExit(f"end-to-end run did not finish: {base} of {len(envs)} stored; see {run}")
    return len(envs) / drained, len(envs) / stored, len(envs) / pub_cpu, len(envs) / col_cpu


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _per_core(d: Path, pki: Pki, envs: list[bytes]) -> tuple[float, float]:
    verifier = FleetVerifier([pki.ca_cert])
    rates, verify_rates = [], []
    for k in range(3):
        store = SqliteStore(d / f"micro-{k}.sqlite3")
        classifier = Classifier(verifier)
        msgs = [Incoming(f"edge/v1/{SITE}/ct-01/verdict", e, time.time()) for e in envs]
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(0, len(msgs), 500):
            batch = [classifier.classify(m) for m in msgs[i:i + 500]]
            apply_batch(store, batch, classifier, time.time(), 30)
        cpu = time.process_time() - c0
        assert store.count_verdicts() == len(envs), classifier.counts
        rates.append(len(envs) / cpu)
        store.close()
        c0 = time.process_time()
        for e in envs:
            verifier.verify(e, site=SITE, topic_device="ct-01")
        verify_rates.append(len(envs) / (time.process_time() - c0))
        del t0
    return statistics.median(verify_rates), statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--skip-postgres", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki = Pki.create(d / "pki")
        for name in ("ct-01", "collector"):
            pki.issue(name)
        print(f"signing {args.n} envelopes (not timed)...", flush=True)
        envs = [envelope(pki.ids["ct-01"], i) for i in range(1, args.n + 1)]
        print(f"envelope size {len(envs[0])} bytes; cores {os.cpu_count()}; load average {os.getloadavg()[0]:.1f} "
              "(the machine is shared: CPU-second figures are the fairer ones)")
        for sync in ("FULL", "NORMAL"):
            print(f"outbox commit ({sync:6}):            {_outbox_commit_rate(d, envs, sync, min(2000, args.n)):8.0f} rows/s")
        v, vs = _per_core(d, pki, envs[: min(3000, args.n)])
        print(f"collector per core: verify only     {v:8.0f} /CPU-s")
        print(f"collector per core: verify + store  {vs:8.0f} /CPU-s  (SQLite, batches of 500)")
        broker = Broker(d / "broker", pki)
        broker.start()
        pg = None
        try:
            runs = [(1, "sqlite"), (2, "sqlite")]
            if not args.skip_postgres:
                pg = Postgres()
                pg.start()
                runs += [(1, "postgres"), (2, "postgres")]
            for k, (n_col, store) in enumerate(runs):
                dsn = None
                if store == "postgres" and pg:
                    import psycopg

                    with psycopg.connect(pg.dsn, autocommit=True) as conn:  # a fresh database per run
                        conn.execute(f"CREATE DATABASE bench{k}")
                    dsn = pg.dsn.replace("dbname=postgres", f"dbname=bench{k}")
                drain, e2e, pub_rate, col_rate = _end_to_end(d, broker, pki, envs, n_col, store, dsn)
                print(f"{n_col} collector process(es), {store:8}: outbox -> broker {drain:6.0f}/s  end to end {e2e:6.0f}/s"
                      f"  | publisher {pub_rate:6.0f}/CPU-s, collector(s) {col_rate:6.0f}/CPU-s", flush=True)
        finally:
            broker.stop()
            if pg:
                pg.stop()


if __name__ == "__main__":
    main()
