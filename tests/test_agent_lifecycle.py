"""The agent's lifecycle: a transition table, all-or-nothing start, one agent per state_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.agent import Agent, State, next_state
from edge_agent.config import parse_config
from edge_agent.errors import IngestError
from edge_agent.verdict import Verdict


class NoJudge:
    def process(self, path: str | Path, display: str | None = None) -> list[Verdict]:
        raise AssertionError("nothing is queued in these tests")


def test_agent_lifecycle_is_a_table_and_rejects_an_impossible_event() -> None:
    s = next_state(State.STARTING, "started")
    s = next_state(s, "stop_requested")
    assert next_state(s, "drained") is State.STOPPED
    with pytest.raises(RuntimeError, match="event 'drained' is not valid in state 'running'"):
        next_state(State.RUNNING, "drained")


def test_second_agent_on_the_same_state_dir_refuses_to_start_and_the_first_keeps_running(tmp_path: Path) -> None:
    cfg = parse_config({"hot_folder": {"path": "hot"}}, tmp_path)
    first = Agent(cfg, judge_factory=NoJudge)
    first.start()
    try:
        second = Agent(cfg, judge_factory=NoJudge)
        with pytest.raises(IngestError, match="state_dir: .* is in use by another running agent"):
            second.start()
        assert second.state is State.STOPPED
        assert first.state is State.RUNNING and cfg.hook.socket is not None and cfg.hook.socket.exists()
    finally:
        first.shutdown()
    assert first.state is State.STOPPED and not cfg.hook.socket.exists()


def test_a_listener_that_cannot_open_stops_the_start_and_closes_what_was_opened(tmp_path: Path) -> None:
    (tmp_path / "hot").write_text("a file where the hot folder should be")
    cfg = parse_config({"hot_folder": {"path": "hot"}}, tmp_path)
    agent = Agent(cfg, judge_factory=NoJudge)
    with pytest.raises(IngestError, match="hot_folder.path"):
        agent.start()
    assert agent.state is State.STOPPED
    assert cfg.hook.socket is not None and not cfg.hook.socket.exists()  # the hook socket was closed again
    again = Agent(parse_config({}, tmp_path), judge_factory=NoJudge)  # the state_dir lock was released
    again.start()
    again.shutdown()
