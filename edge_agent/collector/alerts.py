"""Alerts out: plain JSON on MQTT (built by ``Alert.to_json``) and, optionally, CEF over syslog.

CEF (ArcSight Common Event Format, rev. 25): ``CEF:Version|Vendor|Product|Version|SignatureID|
Name|Severity|Extension``; ``|`` and ``\\`` are escaped in header fields, ``=``, ``\\`` and line
breaks in extension values.

Syslog: RFC 5424 §6 message (``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG``) over TCP with
octet-counting framing, RFC 6587 §3.4.1 (``MSG-LEN SP SYSLOG-MSG``), so a CEF line that contains
a newline cannot split into two events. Facility 13 (log audit, RFC 5424 §6.2.1).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time

from .. import __version__
from .records import Alert

__all__ = ["cef_line", "syslog_frame", "SyslogSender"]

log = logging.getLogger(__name__)

_FACILITY = 13


def _hdr(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _ext(text: str) -> str:
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def cef_line(alert: Alert) -> str:
    ext = {
        "rt": str(int(alert.at * 1000)),
        "dvchost": alert.device_id or "",
        "cs1Label": "site",
        "cs1": alert.site,
        "cs2Label": "ref",
        "cs2": alert.ref,
        "externalId": alert.id,
        "msg": alert.message,
    }
    extension = " ".join(f"{k}={_ext(v)}" for k, v in ext.items())
    return (
        f"CEF:0|edge-agent|edge-collector|{_hdr(__version__)}|{_hdr(alert.kind)}|"
        f"{_hdr(alert.message[:128])}|{alert.severity}|{extension}"
    )


def _syslog_severity(cef_severity: int) -> int:
    # RFC 5424 §6.2.1: 2 critical, 3 error, 4 warning, 5 notice
    return 2 if cef_severity >= 9 else 3 if cef_severity >= 7 else 4 if cef_severity >= 4 else 5


def syslog_frame(alert: Alert, hostname: str | None = None, app: str = "edge-collector") -> bytes:
    pri = _FACILITY * 8 + _syslog_severity(alert.severity)
    ts = dt.datetime.fromtimestamp(alert.at, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = (hostname or socket.gethostname() or "-")[:255]
    msg = f"<{pri}>1 {ts} {host} {app} {os.getpid()} {alert.kind[:32]} - {cef_line(alert)}".encode("utf-8")
    return str(len(msg)).encode() + b" " + msg


class SyslogSender:
    """A TCP syslog client that never blocks the collector for long and never raises."""

    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self._down_until = 0.0

    def send(self, alert: Alert) -> None:
        frame = syslog_frame(alert)
        with self._lock:
            if time.monotonic() < self._down_until:  # the SIEM is down: don't stall the collector per alert
                self.failed += 1
                return
            for _ in range(2):  # one reconnect: the SIEM may have closed an idle connection
                try:
                    if self._sock is None:
                        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
                    self._sock.sendall(frame)
                    self.sent += 1
                    return
                except OSError as exc:
                    self._close()
                    last = exc
            self.failed += 1
            self._down_until = time.monotonic() + 30.0
            log.error("syslog %s:%d: alert %s not sent (%s); it is still stored and on MQTT; "
                      "not trying again for 30 s", self.host, self.port, alert.id, last)

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def close(self) -> None:
        with self._lock:
            self._close()
