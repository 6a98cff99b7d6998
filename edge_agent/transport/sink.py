"""``MqttOutboxSink``: the run loop's verdict sink that signs and commits to the outbox.

It implements ``journal.VerdictSink`` (``record(judged)`` / ``close()``): ``record`` signs one
envelope per frame verdict (``sign`` is injected: the trust code's ``VerdictSigner.sign``, which
adds msg_id, boot id, sequence and time) and commits all of them to the SQLite outbox in one
transaction before it returns; publishing happens later, on the publisher's thread. The outbox
keeps the *signed bytes*, so every resend is byte-identical and the collector can tell an honest
redelivery (same bytes: a duplicate) from a replay (same msg_id or sequence, other bytes).

``health()`` is the periodic health message the publisher sends.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from ..journal import JudgedImage
from ..verdict import Verdict
from .health import health_message
from .outbox import Outbox
from .topics import DeviceTopics

__all__ = ["MqttOutboxSink"]

Sign = Callable[[Verdict], bytes]


class MqttOutboxSink:
    def __init__(
        self,
        outbox: Outbox,
        topics: DeviceTopics,
        sign: Sign,
        *,
        cert_not_after: dt.datetime | None = None,
        clock_synchronised: Callable[[], bool | None] = lambda: None,
        connected_since: Callable[[], float | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.outbox = outbox
        self._on_close = on_close
        self.topics = topics
        self._sign = sign
        self._cert_not_after = cert_not_after
        self._clock_synchronised = clock_synchronised
        self._connected_since = connected_since
        self._clock = clock
        self._lock = threading.Lock()
        self._last_verdict_at: float | None = None
        self._model: dict[str, Any] | None = None

    def record(self, judged: JudgedImage) -> None:
        """Sign every frame's verdict and commit them together; raises OutboxFullError or
        TransportError (an EdgeAgentError: the worker keeps the image spooled and retries)."""
        self.emit([self._sign(v) for v in judged.verdicts])
        model = next((v.model for v in judged.verdicts if v.model is not None), None)
        if model is not None:
            with self._lock:
                self._model = model.to_dict()

    def emit(self, envelopes: list[bytes]) -> list[int]:
        """Commit already-signed envelopes (one transaction); returns their outbox row ids."""
        ids = self.outbox.add_many(self.topics.verdict, envelopes)
        with self._lock:
            self._last_verdict_at = self._clock()
        return ids

    def health(self) -> dict[str, Any]:
        with self._lock:
            last, model = self._last_verdict_at, self._model
        return health_message(
            now=self._clock(),
            outbox=self.outbox.stats(),
            last_verdict_at=last,
            model=model,
            cert_not_after=self._cert_not_after,
            clock_synchronised=self._clock_synchronised(),
            connected_since=self._connected_since(),
        )

    def close(self) -> None:
        """The agent calls this after its last verdict: the DeviceTransport stops (``offline``,
        clean DISCONNECT) and closes the outbox. Unsent rows stay for the next start."""
        self._on_close()
