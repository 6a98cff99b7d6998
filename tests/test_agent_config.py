"""agent.yaml: a minimal config works; a bad one names the key and the expected form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_config, parse_config
from edge_agent.errors import ConfigError
from tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def test_empty_config_works_and_keeps_everything_under_state_next_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("")
    cfg = load_config(tmp_path / "agent.yaml")
    state = tmp_path / "state"
    assert cfg.state_dir == state
    assert cfg.journal == state / "verdicts.jsonl" and cfg.quarantine_dir == state / "quarantine"
    assert cfg.hook.enabled and cfg.hook.socket == state / "hook.sock" and cfg.hook.socket_mode == 0o660
    assert not cfg.dicom.enabled and cfg.dicom.host == "127.0.0.1"
    assert cfg.hot_folder.path is None


def test_example_config_at_repo_root_is_valid() -> None:
    cfg = load_config(REPO / "agent.example.yaml")
    assert cfg.state_dir == Path("/var/lib/edge-agent")


def test_relative_paths_are_taken_relative_to_the_config_file(tmp_path: Path) -> None:
    build_tiny_model(tmp_path / "m")
    cfg = parse_config({"model": {"path": "m"}, "hot_folder": {"path": "hot"}, "state_dir": "s"}, tmp_path)
    assert cfg.model.path == tmp_path / "m" and cfg.hot_folder.path == tmp_path / "hot"
    assert cfg.model.cache_dir == tmp_path / "s" / "model-cache"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"dicom": {"prot": 104}}, "dicom.prot: unknown key (did you mean dicom.port?)"),
        ({"spool_dir": "x"}, "spool_dir: unknown key"),
        ({"dicom": {"port": "104"}}, "dicom.port: expected a TCP port from 1 to 65535, found '104' (str)"),
        ({"dicom": {"port": 70000}}, "dicom.port: expected a TCP port"),
        ({"dicom": {"enabled": "yes"}}, "dicom.enabled: expected true or false"),
        ({"dicom": {"ae_title": "A_TITLE_LONGER_THAN_16"}}, "dicom.ae_title: expected an AE title"),
        ({"dicom": {"accepted_calling_aes": "CT1"}}, "dicom.accepted_calling_aes: expected a list of AE titles"),
        ({"model": {"threads": True}}, "model.threads: expected an integer"),
        ({"model": {"backend": "tensorrt"}}, "model.backend: expected one of auto, openvino, onnxruntime"),
        ({"model": {"path": "missing"}}, "model.path: expected a model folder containing manifest.json"),
        ({"hot_folder": {"stable_seconds": "2s"}}, "hot_folder.stable_seconds: expected a number of seconds"),
        ({"hot_folder": ["hot"]}, "hot_folder: expected a mapping"),
        ({"logging": {"level": "LOUD"}}, "logging.level: expected one of DEBUG, INFO, WARNING, ERROR"),
        ({"journal": 5}, "journal: expected a path"),
    ],
)
def test_bad_config_names_the_key_and_the_expected_form(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    assert message in str(err.value)


def test_config_that_is_not_yaml_is_reported_with_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("dicom: [unclosed\n")
    with pytest.raises(ConfigError, match="agent.yaml is not valid YAML"):
        load_config(tmp_path / "agent.yaml")
