"""``edge-collector``: the central side (MQTT subscriber, verifier, store, alerts) and its tools.

    edge-collector run --config collector.yaml
    edge-collector broker-config --site S --ca CA.pem --cert broker.pem --key broker.key --out DIR
    edge-collector verdicts --config collector.yaml --since 1h [--json]
    edge-collector devices  --config collector.yaml [--json]
    edge-collector alerts   --config collector.yaml --since 1d [--json]
    edge-collector rejections --config collector.yaml --since 1d [--json]

Exit status: 0 done, 2 could not run (bad configuration, store or broker files).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from . import __version__
from .cli_dispatch import dispatch

__all__ = ["main", "build_parser"]


def _open_store(args: argparse.Namespace, read_only: bool = False):  # type: ignore[no-untyped-def]
    from .collector.config import load_collector_config
    from .collector.pg_store import PostgresStore
    from .collector.sqlite_store import SqliteStore

    if getattr(args, "db", None):
        return SqliteStore(Path(args.db), read_only=read_only)
    if getattr(args, "dsn", None):
        return PostgresStore(args.dsn)
    cfg = load_collector_config(args.config)
    return SqliteStore(cfg.sqlite, read_only=read_only) if cfg.sqlite else PostgresStore(cfg.postgres or "")


def _run(args: argparse.Namespace) -> int:
    import datetime as dt

    from .collector.config import load_collector_config
    from .collector.process import Classifier
    from .collector.service import Collector
    from .collector.verify import FleetVerifier

    cfg = load_collector_config(args.config)
    verifier = FleetVerifier.from_files(cfg.trust_ca, cfg.crls, max_age=dt.timedelta(seconds=cfg.max_age_s))
    store = _open_store(args)
    collector = Collector(cfg, store, Classifier(verifier, cfg.known_devices, cfg.max_payload))
    signal.signal(signal.SIGTERM, lambda *_: collector.stop(leave=args.leave))
    signal.signal(signal.SIGINT, lambda *_: collector.stop(leave=args.leave))
    logging.getLogger(__name__).warning("collector %s: subscribing as group %r", cfg.client_id, cfg.share_group)
    try:
        collector.run()
    finally:
        logging.getLogger(__name__).warning("collector %s stopped: %s", cfg.client_id, dict(collector.classifier.counts))
        store.close()
    return 0


def _broker_config(args: argparse.Namespace) -> int:
    from .transport.broker_config import BrokerSite, write_broker_config

    try:
        site = BrokerSite(site=args.site, ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key), out_dir=Path(args.out),
                          port=args.port, bind=args.bind, collector=args.collector, analysts=tuple(args.analyst or ("analyst",)),
                          crl=Path(args.crl) if args.crl else None)
    except ValueError as exc:
        print(f"edge-collector: error: {exc}", file=sys.stderr)
        return 2
    conf = write_broker_config(site)
    print(f"wrote {conf} and {conf.parent / 'acl'}; start the broker with: mosquitto -c {conf}")
    return 0


def _report(kind: str):  # type: ignore[no-untyped-def]
    from .collector.report import as_json, parse_since, table

    columns = {
        "verdicts": ["received_at", "site", "device_id", "seq", "label", "score", "model", "msg_id"],
        "devices": ["site", "device_id", "status", "last_seen", "last_verdict_at", "cert_not_after", "health"],
        "alerts": ["at", "site", "device_id", "kind", "severity", "message"],
        "rejections": ["received_at", "site", "device_id", "reason", "size", "detail"],
    }[kind]

    def handler(args: argparse.Namespace) -> int:
        store = _open_store(args, read_only=bool(getattr(args, "db", None)))
        try:
            since = time.time() - parse_since(args.since) if getattr(args, "since", None) else 0.0
            if kind == "verdicts":
                rows = store.verdicts(since, limit=args.limit, device=args.device)
            elif kind == "devices":
                rows = store.devices()
            elif kind == "alerts":
                rows = store.alerts(since)
            else:
                rows = store.rejections(since)
        except ValueError as exc:
            print(f"edge-collector: error: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
        print(as_json(rows) if args.json else table(rows, columns))
        return 0

    return handler


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-collector", description="Central collector for signed edge-agent verdicts.")
    p.add_argument("--version", action="version", version=f"edge-collector {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="subscribe, verify, store and alert until SIGTERM")
    r.add_argument("--config", required=True)
    r.add_argument("--leave", action="store_true",
                   help="on SIGTERM, drain and end the broker session: this collector is decommissioned "
                        "(without it the broker keeps queueing this collector's share for its restart)")
    r.set_defaults(func=_run)
    b = sub.add_parser("broker-config", help="write mosquitto.conf + ACL for a site")
    b.add_argument("--site", required=True)
    b.add_argument("--ca", required=True, help="fleet CA certificate (PEM)")
    b.add_argument("--cert", required=True, help="the broker's certificate (PEM)")
    b.add_argument("--key", required=True, help="the broker's private key (PEM)")
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--port", type=int, default=8883)
    b.add_argument("--bind", default="0.0.0.0")
    b.add_argument("--collector", default="collector", help="the collector certificate's CN")
    b.add_argument("--analyst", action="append", help="an analyst certificate's CN (read alerts only); repeatable")
    b.add_argument("--crl", help="the fleet CA's CRL (PEM): revoked devices cannot connect")
    b.set_defaults(func=_broker_config)
    for kind, helptext in (("verdicts", "stored verdicts"), ("devices", "devices and their last status/health"),
                           ("alerts", "raised alerts"), ("rejections", "rejected messages and why")):
        s = sub.add_parser(kind, help=helptext)
        src = s.add_mutually_exclusive_group(required=True)
        src.add_argument("--config", help="collector.yaml (its store)")
        src.add_argument("--db", help="a SQLite store file")
        src.add_argument("--dsn", help="a PostgreSQL DSN")
        if kind != "devices":
            s.add_argument("--since", default="1d" if kind != "verdicts" else "1h", help="e.g. 15m, 1h, 7d")
        if kind == "verdicts":
            s.add_argument("--device")
            s.add_argument("--limit", type=int, default=1000)
        s.add_argument("--json", action="store_true", help="one JSON object per line")
        s.set_defaults(func=_report(kind))
    return p


def main(argv: list[str] | None = None) -> int:
    return dispatch("edge-collector", build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
