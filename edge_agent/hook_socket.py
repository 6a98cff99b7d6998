"""The firmware hook's local Unix socket: scanner firmware hands over a file path after each
acquisition and is answered only once the image is durably spooled.

Protocol (one request per connection, UTF-8 lines ending in ``\\n``):

==========================  ==========================================================
client sends                agent answers
==========================  ==========================================================
``<absolute path>\\n``        ``OK <sha256>\\n``  the image is durably queued (or already was)
                            ``ERR bad_request <why>\\n``  not one absolute path line
                            ``ERR spool_full <why>\\n``   the spool is at its limit: retry later
                            ``ERR not_queued <why>\\n``   the file cannot be taken (unreadable, ...)
==========================  ==========================================================

``spool_full`` (``spool.max_pending_bytes`` / ``spool.min_free_bytes``) is temporary: the reason
names the limit and the figures, the agent keeps serving, and the firmware should keep the image
and submit it again later. ``not_queued`` is about the file itself: resubmitting the same path
gives the same answer until the file is fixed.

The agent reads the file with its own permissions; the socket is created with mode
``hook.socket_mode`` (0660 by default) so only the agent's user and group may submit.
``firmware_hooks/submit_via_socket.py`` is a stdlib-only client.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import threading
from pathlib import Path

from .errors import IngestError
from .spool import Spool, SpoolFullError

__all__ = ["HookSocket", "answer_request", "MAX_REQUEST_BYTES"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096  # PATH_MAX on Linux
_CLIENT_TIMEOUT_SECONDS = 10.0  # a silent client cannot hold up shutdown for longer


def answer_request(raw: bytes, spool: Spool) -> bytes:
    """The reply to one request line (pure apart from the spool)."""
    if not raw.endswith(b"\n"):
        return b"ERR bad_request expected one line ending in a newline, at most 4096 bytes\n"
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError:
        return b"ERR bad_request the path is not UTF-8\n"
    path = Path(text)
    if not text or "\n" in text or "\0" in text or not path.is_absolute():
        return b"ERR bad_request expected an absolute file path\n"
    try:
        item = spool.accept_file(path, source="hook")
    except IngestError as exc:
        message = str(exc).replace("\n", " ")
        code = "spool_full" if isinstance(exc, SpoolFullError) else "not_queued"
        return f"ERR {code} {message}\n".encode()
    return f"OK {item.sha256}\n".encode()


class _Handler(socketserver.StreamRequestHandler):
    timeout = _CLIENT_TIMEOUT_SECONDS
    server: "_Server"

    def handle(self) -> None:
        try:
            raw = self.rfile.readline(MAX_REQUEST_BYTES + 1)
        except OSError:
            return
        reply = answer_request(raw, self.server.spool)
        log.debug("hook request %r -> %r", raw[:200], reply)
        try:
            self.wfile.write(reply)
        except OSError:
            # The client went away; the image (if OK) is queued all the same.
            log.warning("hook client left before the answer %r", reply.strip())


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    # At shutdown a request being served still gets its answer (joined in server_close).
    daemon_threads = False
    block_on_close = True
    spool: Spool


class HookSocket:
    def __init__(self, path: Path, spool: Spool, mode: int) -> None:
        self.path = path
        self.spool = spool
        self.mode = mode
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._remove_stale()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            old_umask = os.umask(0o777 & ~self.mode)  # never world-connectable, even for an instant
            try:
                server = _Server(str(self.path), _Handler)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, self.mode)
        except OSError as exc:
            raise IngestError(f"hook.socket: cannot listen on {self.path} ({exc.strerror})") from None
        server.spool = self.spool
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.2,), name="hook-socket", daemon=True)
        self._thread.start()
        log.info("firmware hook listening on %s", self.path)

    def _remove_stale(self) -> None:
        if not self.path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left by an agent that was killed
            return
        finally:
            probe.close()
        raise IngestError(f"hook.socket: {self.path} is in use; is another agent running with this state_dir?")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.path.unlink(missing_ok=True)
