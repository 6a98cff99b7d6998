"""The device side assembled: outbox + sink + publisher, started and stopped together.

    transport = DeviceTransport.open(site="s1", device="ct-01", state_dir=..., link=BrokerLink(...),
                                     sign=verdict_signer.sign)
    agent.add_sink(transport.sink)      # the run loop's VerdictSink
    transport.start()                   # the agent's sink.close() at shutdown stops it: offline
                                        # status, clean DISCONNECT, outbox closed
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..trust.clock import clock_synchronised
from .backoff import Backoff
from .outbox import Outbox, OutboxLimits
from .publisher import BrokerLink, Publisher
from .sink import MqttOutboxSink, Sign
from .tls import certificate_not_after
from .topics import DeviceTopics

__all__ = ["DeviceTransport"]


@dataclass
class DeviceTransport:
    outbox: Outbox
    sink: MqttOutboxSink
    publisher: Publisher
    _stopped: bool = False

    @classmethod
    def open(
        cls,
        *,
        site: str,
        device: str,
        state_dir: Path,
        link: BrokerLink,
        sign: Sign,
        limits: OutboxLimits = OutboxLimits(),
        backoff: Backoff | None = None,
    ) -> "DeviceTransport":
        topics = DeviceTopics(site, device)
        outbox = Outbox(Path(state_dir) / "outbox.sqlite3", limits)
        not_after: dt.datetime | None = certificate_not_after(link.tls.cert) if link.tls else None
        holder: list[Publisher] = []
        transports: list[DeviceTransport] = []
        sink = MqttOutboxSink(
            outbox,
            topics,
            sign,
            cert_not_after=not_after,
            clock_synchronised=clock_synchronised,
            connected_since=lambda: holder[0].connected_since if holder else None,
            on_close=lambda: transports[0].stop() if transports else None,
        )
        publisher = Publisher(link, topics, outbox, health=sink.health, backoff=backoff)
        holder.append(publisher)
        transports.append(cls(outbox, sink, publisher))
        return transports[0]

    def start(self) -> None:
        self.publisher.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Idempotent: the agent's ``sink.close()`` and an explicit stop may both call it."""
        if self._stopped:
            return
        self._stopped = True
        self.publisher.stop(timeout)
        self.outbox.close()
