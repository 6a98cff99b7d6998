"""The README's main-job command, run as a new user runs it: ``edge-agent demo`` scans the bundled
samples, then runs the whole loop on loopback (fleet CA, Mosquitto with TLS and the ACL, the
collector on SQLite, the agent's hot folder) and stops everything it started.

The first test runs the shipped model, as the README's command does (the demo device's forensic
layers read the model's 256-px tiles); the failure test uses the tiny test detector, whose model
does not matter there."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _demo(out: Path, model: Path | None, *extra: str) -> subprocess.CompletedProcess[str]:
    chosen = ["--model", str(model)] if model is not None else []
    return subprocess.run([sys.executable, "-m", "edge_agent.cli", "demo", "--out", str(out), *chosen, *extra],
                          capture_output=True, text=True, timeout=240)


def _assert_nothing_left_running(stdout: str) -> None:
    pids = [int(p) for p in re.findall(r"^\s+pid (\d+), log ", stdout, re.M)]
    assert len(pids) == 3, stdout  # broker, collector, agent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    port = int(re.search(r"Mosquitto on 127\.0\.0\.1:(\d+)", stdout).group(1))  # type: ignore[union-attr]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on the demo broker's port {port}"


def _section_rows(stdout: str, command: str) -> int:
    section = stdout.split(f"$ edge-collector {command} --config collector.yaml\n", 1)[1]
    return int(re.search(r"^\((\d+) rows?\)$", section, re.M).group(1))  # type: ignore[union-attr]


def test_new_user_runs_the_demo_and_sees_every_image_verified_by_the_collector_and_the_alerts(tmp_path: Path) -> None:
    out = tmp_path / "demo-out"
    proc = _demo(out, None, "--keep")  # the shipped model, as the README's command runs it
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    images = sorted(p for p in (out / "images").rglob("*") if p.is_file())
    assert len(images) >= 13  # bundled samples, the copy-move forgery, the demo device's five images
    # The demo device learned its noise profile and fingerprint; its layers name what they found
    # (reasons are printed under every flagged row of the scan table).
    scan_table = proc.stdout.split("demo: the whole loop", 1)[0]
    rows = {line.split()[-1].rsplit("/", 1)[-1]: line for line in scan_table.splitlines()
            if "/images/this-device/" in line}
    assert set(rows) == {"authentic.dcm", "authentic-mirrored-cropped.dcm", "other-detector.dcm", "spliced-region.dcm",
                         "generated-uniform-grain.dcm"}, scan_table
    for name in ("authentic.dcm", "authentic-mirrored-cropped.dcm"):  # a view the console turned and cropped passes too
        assert rows[name].split()[0] == "authentic", scan_table
    assert "does not carry this detector's fingerprint" in scan_table.split("other-detector.dcm", 1)[1].split("\n")[1]
    assert "fingerprint is missing around" in scan_table.split("spliced-region.dcm", 1)[1].split("\n")[1]
    assert "noise does not rise with signal" in scan_table.split("generated-uniform-grain.dcm", 1)[1].split("\n")[1]
    assert _section_rows(proc.stdout, "verdicts") == len(images)
    assert _section_rows(proc.stdout, "alerts") >= 1
    assert "Clean shutdown." in proc.stdout

    # The kept store holds one verified verdict per image, matched by the file's SHA-256.
    collector_yaml = out / "loop" / "collector.yaml"
    stored = subprocess.run([sys.executable, "-m", "edge_agent.collector_cli", "verdicts", "--config", str(collector_yaml),
                             "--json"], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [json.loads(line) for line in stored.splitlines() if line.strip()]
    assert sorted(r["file_sha256"] for r in rows) == sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in images)
    assert {r["device_id"] for r in rows} == {"demo-xray-01"}

    _assert_nothing_left_running(proc.stdout)
    assert len(list((out / "heatmaps").glob("*.png"))) == len(images)


def test_a_loop_step_that_fails_is_named_with_its_logs_and_nothing_is_left_running(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    proc = _demo(tmp_path / "demo-out", tiny_model_dir, "--timeout", "0.2")
    assert proc.returncode == 2
    assert "step 'waiting for one verified verdict per image" in proc.stderr
    assert "timed out after 0.2 s" in proc.stderr
    logs = re.search(r"logs: (\S+)", proc.stderr).group(1)  # type: ignore[union-attr]
    assert (Path(logs) / "agent.log").is_file() and (Path(logs) / "mosquitto.log").is_file()
    _assert_nothing_left_running(proc.stdout)
