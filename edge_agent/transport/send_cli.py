"""Send already-signed envelopes through the device transport, by hand (until ``edge-agent run``
carries verdicts itself, and later to re-send envelopes saved elsewhere).

    edge-agent sign-verdicts --dir STATE --in scan.jsonl \\
      | python -m edge_agent.transport.send_cli --host 127.0.0.1 --port 8883 --site site-a \\
            --identity STATE --state-dir agent-state

Each input line is one envelope (a flattened JWS). They are committed to the outbox first
(one transaction), then published (QoS 1, mutual TLS); the command returns when the outbox is
empty, or after ``--timeout`` with the rest still in the outbox (exit status 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..errors import EdgeAgentError
from .device import DeviceTransport
from .outbox import OutboxLimits
from .publisher import BrokerLink
from .settings import MqttSettings
from .tls import certificate_identity

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_agent.transport.send_cli", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8883)
    ap.add_argument("--site", required=True)
    ap.add_argument("--identity", required=True, help="enrolled device state (device.pem, device.key, fleet-ca.pem)")
    ap.add_argument("--state-dir", required=True, help="where the outbox lives")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = MqttSettings(host=args.host, site=args.site, identity=Path(args.identity), port=args.port)
        envelopes = [line.strip().encode() for line in sys.stdin if line.strip()]
        t = DeviceTransport.open(site=settings.site, device=certificate_identity(settings.tls.cert),
                                 state_dir=Path(args.state_dir), link=BrokerLink(args.host, args.port, settings.tls),
                                 sign=lambda v: b"", limits=OutboxLimits())
        if envelopes:
            t.sink.emit(envelopes)
        t.start()
        deadline = time.monotonic() + args.timeout
        while t.outbox.stats().depth and time.monotonic() < deadline:
            time.sleep(0.1)
        left = t.outbox.stats().depth
        t.stop()
    except EdgeAgentError as exc:
        print(f"send: error: {exc}", file=sys.stderr)
        return 2
    print(f"sent {len(envelopes)} envelope(s); {left} still in the outbox", file=sys.stderr)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(main())
