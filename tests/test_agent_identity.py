"""The agent signs with the enrolled device key: a key others can read stops it at start."""

from __future__ import annotations

import os
from pathlib import Path

from agent_harness import free_port, run_cli, write_config
from edge_agent.trust import DeviceState, FleetCA
from edge_agent.trust.keys import PassphraseSource


def _enrolled(tmp_path: Path) -> Path:
    ca = FleetCA(tmp_path / "fleet", PassphraseSource())
    ca.init("Test Fleet CA")
    state = DeviceState(tmp_path / "identity")
    csr = state.init("ct-0042")
    cert = ca.issue_device(csr)
    from cryptography.hazmat.primitives import serialization

    state.install(cert.public_bytes(serialization.Encoding.PEM), ca.cert_path.read_bytes())
    return state.directory


def test_agent_with_a_device_key_others_can_read_refuses_to_start_and_says_chmod(tmp_path: Path, tiny_model_dir: Path) -> None:
    identity = _enrolled(tmp_path)
    os.chmod(identity / "device.key", 0o644)
    config = write_config(tmp_path, model={"path": str(tiny_model_dir)},
                          mqtt={"host": "127.0.0.1", "port": free_port(), "site": "site-a", "identity": str(identity)})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "device.key" in result.stderr and "chmod" in result.stderr
    assert "BEGIN" not in result.stderr  # the key itself is never printed


def test_agent_with_a_missing_identity_folder_refuses_to_start_naming_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = write_config(tmp_path, model={"path": str(tiny_model_dir)},
                          mqtt={"host": "127.0.0.1", "port": free_port(), "site": "site-a", "identity": str(tmp_path / "nowhere")})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2
    assert "nowhere" in result.stderr
