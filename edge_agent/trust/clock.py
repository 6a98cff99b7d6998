"""Is the system clock synchronised (NTP/PTP)? Recorded in each signed verdict so a collector can
tell a trustworthy issue time from a free-running device clock.

Linux: ``adjtimex(2)`` with ``modes = 0`` only reads the kernel's NTP state and needs no privilege;
its return value ``TIME_ERROR`` (5) or the ``STA_UNSYNC`` status bit means "not synchronised".
Fallback: ``timedatectl show -p NTPSynchronized``. Anything else degrades to ``None`` (unknown),
never an exception: a missing answer must not stop signing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import sys

__all__ = ["clock_synchronised"]

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> (glibc, 64-bit): the fields we read come first; the tail
    # is padding big enough for the rest.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def _adjtimex() -> bool | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return not (state == _TIME_ERROR or tx.status & _STA_UNSYNC)


def _timedatectl() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=2)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)


def clock_synchronised() -> bool | None:
    """True / False when the OS knows, None when it cannot tell."""
    result = _adjtimex()
    return result if result is not None else _timedatectl()
