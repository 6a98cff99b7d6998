"""The long-running agent: three ingestion paths feed the spool, one worker judges it.

Lifecycle (a table, like pynetdicom's association FSM; any other event is a bug and raises):

==========  ================  ==========  ===================================================
state       event             next        what happens
==========  ================  ==========  ===================================================
starting    started           running     model loaded, every listener bound, worker running
starting    start_failed      stopped     whatever was opened is closed again; exit status 2
starting    stop_requested    draining    a signal during start: stop as soon as started
running     stop_requested    draining    SIGTERM / SIGINT: listeners close, no new images
draining    stop_requested    draining    a second signal changes nothing
draining    drained           stopped     the current image is finished; exit status 0
==========  ================  ==========  ===================================================

Everything is opened before ``running``: a bad model, a port in use or a socket in use stops
the start with one error, so the agent never runs half-configured. Images still in the spool
at shutdown are judged after the next start.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from .config import AgentConfig
from .dicom_scp import DicomReceiver
from .errors import IngestError
from .hook_socket import HookSocket
from .hotfolder import HotFolder
from .journal import Journal, VerdictSink
from .pipeline import open_pipeline
from .spool import Spool
from .worker import Judge, Worker

__all__ = ["Agent", "State", "next_state"]

log = logging.getLogger(__name__)


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.STARTING, "started"): State.RUNNING,
    (State.STARTING, "start_failed"): State.STOPPED,
    (State.STARTING, "stop_requested"): State.DRAINING,
    (State.RUNNING, "stop_requested"): State.DRAINING,
    (State.DRAINING, "stop_requested"): State.DRAINING,
    (State.DRAINING, "drained"): State.STOPPED,
    (State.DRAINING, "started"): State.DRAINING,
}


def next_state(state: State, event: str) -> State:
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise RuntimeError(f"agent lifecycle: event {event!r} is not valid in state {state.value!r}") from None


class _Ingestor(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class Agent:
    def __init__(self, config: AgentConfig, judge_factory: Callable[[], Judge] | None = None) -> None:
        self.config = config
        self.state = State.STARTING
        self._judge_factory = judge_factory or self._open_pipeline
        self._judge: Judge | None = None
        self._state_lock = threading.Lock()
        self._stop = threading.Event()
        self._ingestors: list[_Ingestor] = []
        self._worker_thread: threading.Thread | None = None
        self._journal: Journal | None = None
        self._spool: Spool | None = None
        self._sinks: list[VerdictSink] = []
        self._lock_fd: int | None = None

    def _fire(self, event: str) -> State:
        with self._state_lock:
            before, self.state = self.state, next_state(self.state, event)
        if before is not self.state:
            log.info("agent %s -> %s (%s)", before.value, self.state.value, event)
        return self.state

    def _open_pipeline(self) -> Judge:
        m = self.config.model
        return open_pipeline(m.path, m.backend, m.precision, m.threads, m.cache_dir, m.trust_anchor, self.config.forensics,
                             refine=True)

    def add_sink(self, sink: VerdictSink) -> None:
        """Send every verdict to ``sink`` too (before the journal). Call before :meth:`start`;
        the agent calls ``sink.close()`` at shutdown, after the last verdict."""
        if self.state is not State.STARTING or self._worker_thread is not None:
            raise RuntimeError(f"agent lifecycle: add_sink is only valid before start, not in state {self.state.value!r}")
        self._sinks.append(sink)

    def request_stop(self) -> None:
        """Stop accepting images, finish the current one, then stop. Safe from a signal handler."""
        self._stop.set()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, drain; returns the exit status."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self._stop.wait()
            self.shutdown()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        self.request_stop()

    def start(self) -> None:
        """Open everything or nothing; raises the first error after closing what was opened."""
        try:
            self._start()
        except BaseException:
            self._fire("start_failed")
            self._close()
            raise
        if self._stop.is_set():
            self._fire("stop_requested")
        self._fire("started")

    def _start(self) -> None:
        cfg = self.config
        self._lock_state_dir()
        spool = self._spool = Spool(cfg.spool_dir, cfg.spool.max_pending_bytes, cfg.spool.min_free_bytes)
        spool.clean_stale()
        try:
            cfg.quarantine_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IngestError(f"quarantine_dir: {cfg.quarantine_path} cannot be created ({exc.strerror})") from None
        judge = self._judge = self._judge_factory()  # the slow part (model load and hash check), before any listener
        self._journal = Journal(cfg.journal_path, cfg.journal_rotation.max_bytes, cfg.journal_rotation.keep)
        if cfg.mqtt is not None:
            # Opens the device key (a key others can read stops the start here) and the outbox.
            from .transport.settings import open_device_transport

            transport = open_device_transport(cfg.mqtt, cfg.state_dir)
            self._sinks.append(transport.sink)
            transport.start()
        worker = Worker(spool, judge, self._journal, cfg.quarantine_path, self._sinks)
        if cfg.hook.enabled:
            assert cfg.hook.socket is not None
            self._add(HookSocket(cfg.hook.socket, spool, cfg.hook.socket_mode))
        if cfg.dicom.enabled:
            self._add(DicomReceiver(cfg.dicom, spool))
        if cfg.hot_folder.path is not None:
            hf = cfg.hot_folder
            self._add(HotFolder(hf.path, spool, hf.stable_seconds, hf.poll_seconds))  # type: ignore[arg-type]
        self._worker_thread = threading.Thread(target=worker.run, args=(self._stop,), name="worker")
        self._worker_thread.start()
        log.info("edge-agent running: %d queued image(s) to judge first", len(spool.pending()))

    def _add(self, ingestor: _Ingestor) -> None:
        ingestor.start()
        self._ingestors.append(ingestor)

    def _lock_state_dir(self) -> None:
        d = self.config.state_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd = os.open(d / "agent.lock", os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise IngestError(f"state_dir: {d} cannot be created or written ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise IngestError(f"state_dir: {d} is in use by another running agent; stop it first") from None
        self._lock_fd = fd

    def shutdown(self) -> None:
        self._stop.set()
        self._fire("stop_requested")
        self._close()
        self._fire("drained")

    def _close(self) -> None:
        for ingestor in reversed(self._ingestors):
            try:
                ingestor.stop()
            except Exception:
                log.exception("closing %s failed", type(ingestor).__name__)
        self._ingestors.clear()
        if self._worker_thread is not None:
            self._stop.set()
            if self._spool is not None:
                self._spool.arrived.set()  # wake an idle worker now
            self._worker_thread.join()  # finishes the image it is judging
            self._worker_thread = None
        close = getattr(self._judge, "close", None)  # the pipeline saves what its layers learned
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing the pipeline failed")
        self._judge = None
        for sink in self._sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing verdict sink %s failed", type(sink).__name__)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
