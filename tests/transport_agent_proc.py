"""A stand-in agent process for the fault tests: commits pre-signed envelopes to its outbox at a
steady rate while its publisher drains the outbox. Restarted, it continues from the number of
rows it ever committed (SQLite's AUTOINCREMENT counter, written in the same transaction).

    python transport_agent_proc.py ENVELOPES.jsonl STATE_DIR PORT CA CERT KEY RATE_PER_S
"""

from __future__ import annotations

import base64
import sqlite3
import sys
import time
from pathlib import Path

from edge_agent.transport import BrokerLink, DeviceTransport, OutboxLimits, TlsFiles


def main() -> None:
    env_file, state, port, ca, cert, key, rate = sys.argv[1:8]
    envelopes = [base64.b64decode(line) for line in Path(env_file).read_text().split()]
    t = DeviceTransport.open(site="site-a", device=Path(cert).stem, state_dir=Path(state),
                             link=BrokerLink(port=int(port), tls=TlsFiles(Path(ca), Path(cert), Path(key))),
                             sign=lambda v: b"", limits=OutboxLimits(synchronous="NORMAL"))
    db = sqlite3.connect(Path(state) / "outbox.sqlite3")
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    done = int(row[0]) if row else 0
    db.close()
    t.start()
    interval = 1.0 / float(rate)
    for env in envelopes[done:]:
        t.sink.emit([env])
        time.sleep(interval)
    while t.outbox.stats().depth:
        time.sleep(0.05)
    t.stop()
    print("drained", flush=True)


if __name__ == "__main__":
    main()
