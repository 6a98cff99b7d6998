"""Run the real agent as a subprocess for end-to-end tests, and read what it wrote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

STORESCU = "/usr/bin/storescu"  # DCMTK's, not pynetdicom's app of the same name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, **sections: Any) -> Path:
    cfg = {"state_dir": str(directory / "state"), "logging": {"level": "INFO"}, **sections}
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def journal_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def records_for(path: Path, sha256: str) -> list[dict[str, Any]]:
    return [r for r in journal_records(path) if r["sha256"] == sha256]


class AgentProcess:
    """``python -m edge_agent.cli run --config ...`` with its log in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_socket: Path | None = None) -> "AgentProcess":
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_for(lambda: "agent starting -> running" in self.log_text() or self.proc.poll() is not None,  # type: ignore[union-attr]
                 what="the agent to start")
        assert self.proc.poll() is None, f"agent exited at start:\n{self.log_text()}"
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def run_cli(*args: object, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``edge-agent ARGS...`` in a child process (paths may be given as Path objects)."""
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
