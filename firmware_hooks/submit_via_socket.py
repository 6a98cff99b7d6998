#!/usr/bin/env python3
"""Hand one acquired image to a running edge-agent over its Unix socket (stdlib only).

    submit_via_socket.py [--socket PATH] FILE

Prints ``OK <sha256>`` and exits 0 once the agent has the image durably queued. Exit 1: the
agent refused the file (the reason is printed). Exit 4: the agent's spool is full; keep the image
and submit it again later. Exit 3: no agent is listening; fall back to
``edge-agent submit FILE``, which queues without a running agent. Protocol: see
``edge_agent/hook_socket.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

DEFAULT_SOCKET = os.environ.get("EDGE_AGENT_SOCKET", "/var/lib/edge-agent/hook.sock")
TIMEOUT_SECONDS = 120.0  # the agent answers after copying and fsyncing the file


def submit(path: str, socket_path: str = DEFAULT_SOCKET, timeout: float = TIMEOUT_SECONDS) -> str:
    """Return the agent's answer line (``OK <sha256>`` or ``ERR <code> <reason>``)."""
    request = os.path.abspath(path).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(request)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode("utf-8", "replace").strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help=f"agent socket (default {DEFAULT_SOCKET})")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    try:
        answer = submit(args.file, args.socket)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        print(f"no edge-agent listening on {args.socket} ({exc.strerror}); use `edge-agent submit FILE`",
              file=sys.stderr)
        return 3
    except OSError as exc:
        print(f"edge-agent socket {args.socket}: {exc}", file=sys.stderr)
        return 3
    print(answer)
    if answer.startswith("OK "):
        return 0
    return 4 if answer.startswith("ERR spool_full ") else 1


if __name__ == "__main__":
    sys.exit(main())
