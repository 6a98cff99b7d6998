"""The hot folder takes only complete files, with a controlled clock so no test sleeps."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from edge_agent.hotfolder import HotFolder
from edge_agent.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _hot(tmp_path: Path, clock: Clock) -> HotFolder:
    hot = tmp_path / "hot"
    hot.mkdir(exist_ok=True)
    return HotFolder(hot, Spool(tmp_path / "spool"), stable_seconds=2.0, poll_seconds=0.1, clock=clock)


def test_growing_file_is_taken_only_after_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock()
    hf = _hot(tmp_path, clock)
    f = hf.path / "scan.dcm"
    with f.open("wb") as out:
        for i in range(5):
            out.write(b"x" * 1000)
            out.flush()
            assert hf.poll_once() == []
            clock.t += 1.5  # each burst lands within stable_seconds of the previous
    assert hf.poll_once() == []  # unchanged, but only just noticed as final
    clock.t += 2.0
    assert hf.poll_once() == [hashlib.sha256(b"x" * 5000).hexdigest()]
    assert not f.exists()


def test_files_still_being_renamed_into_place_are_never_taken(tmp_path: Path) -> None:
    clock = Clock()
    hf = _hot(tmp_path, clock)
    for name in (".scan.dcm", "scan.dcm.part", "scan.dcm.tmp", "img.partial"):
        (hf.path / name).write_bytes(b"data")
    hf.poll_once()
    clock.t += 60
    assert hf.poll_once() == []
    (hf.path / "scan.dcm.part").rename(hf.path / "scan.dcm")
    hf.poll_once()
    clock.t += 2
    assert len(hf.poll_once()) == 1


def test_vanished_hot_folder_is_logged_and_watched_until_it_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    hf = _hot(tmp_path, clock)
    hf.path.rmdir()
    with caplog.at_level(logging.WARNING):
        assert hf.poll_once() == [] and hf.poll_once() == []
    assert sum("cannot be read" in r.message for r in caplog.records) == 1  # logged once, not per poll
    hf.path.mkdir()
    (hf.path / "late.png").write_bytes(b"late")
    hf.poll_once()
    clock.t += 2
    assert len(hf.poll_once()) == 1
    assert any("is back" in r.message for r in caplog.records)
