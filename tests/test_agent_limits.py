"""The long-running agent stays within its bounds: a capped spool, C-STORE data received inside
the spool, and a rotated journal whose de-duplication memory is bounded by what it retains.

Real files, a real filesystem, DCMTK's storescu as the C-STORE peer, the real Unix socket and the
`edge-agent submit` command; limits are set small so that "full" is reached with a few images.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from pydicom.data import get_testdata_file

from agent_harness import STORESCU, free_port, run_cli, wait_for
from edge_agent.agent import Agent
from edge_agent.config import DicomConfig, load_config, parse_config
from edge_agent.dicom_scp import DicomReceiver
from edge_agent.errors import ConfigError, IngestError
from edge_agent.hook_socket import HookSocket
from edge_agent.hotfolder import HotFolder
from edge_agent.journal import Journal, JudgedImage
from edge_agent.pipeline import Pipeline
from edge_agent.spool import Spool, SpoolFullError
from edge_agent.verdict import Reason, Timings, Verdict
from edge_agent.worker import Worker

REPO = Path(__file__).resolve().parents[1]
CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))


def _png(directory: Path, seed: int, side: int = 96) -> Path:
    """A unique PNG (its bytes differ per seed); about side*side bytes, noise compresses badly."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray((rng.random((side, side)) * 255).astype(np.uint8)).save(buf, format="PNG")
    path = directory / f"image-{seed}.png"
    path.write_bytes(buf.getvalue())
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _capped_spool(tmp_path: Path, room_for: Path) -> Spool:
    """A spool with room for ``room_for`` (and its metadata) but not for a second image that size."""
    return Spool(tmp_path / "spool", max_pending_bytes=int(room_for.stat().st_size * 1.5), min_free_bytes=0)


# -- the spool cap -----------------------------------------------------------------------------


def test_image_that_would_cross_the_spool_cap_is_refused_with_the_figures_and_nothing_queued(tmp_path: Path) -> None:
    first, second = _png(tmp_path, 1), _png(tmp_path, 2)
    spool = _capped_spool(tmp_path, first)
    queued = spool.accept_file(first, source="hook")
    with pytest.raises(SpoolFullError) as refused:
        spool.accept_file(second, source="hook")
    message = str(refused.value)
    assert f"spool {tmp_path / 'spool'} is full" in message
    assert "spool.max_pending_bytes" in message and "KiB" in message and "nothing was queued" in message
    assert isinstance(refused.value, IngestError)  # every ingestion path already refuses on this
    assert [i.sha256 for i in spool.pending()] == [queued.sha256]
    assert list(spool.temp_dir.iterdir()) == []
    assert second.exists()  # the sender still has it


def test_full_spool_is_logged_once_and_its_clearing_when_the_worker_has_judged_the_queue(
    tmp_path: Path, tiny_pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _png(tmp_path, 1), _png(tmp_path, 2)
    spool = _capped_spool(tmp_path, first)
    worker = Worker(spool, tiny_pipeline, Journal(tmp_path / "verdicts.jsonl"), tmp_path / "quarantine")
    spool.accept_file(first, source="hot_folder")
    with caplog.at_level(logging.INFO, logger="edge_agent.spool"):
        for _ in range(5):  # a sender retrying, or a burst of images
            with pytest.raises(SpoolFullError):
                spool.accept_file(second, source="hot_folder")
        worker.drain_once()  # judges the first image and frees its room
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "is full" in errors[0].getMessage()
    cleared = [r.getMessage() for r in caplog.records if "has room again" in r.getMessage()]
    assert len(cleared) == 1 and "5 refused while it was full" in cleared[0]
    assert spool.accept_file(second, source="hot_folder").sha256 == _sha(second)


def test_disk_below_min_free_refuses_images_and_says_how_much_is_free(tmp_path: Path) -> None:
    disk = shutil.disk_usage(tmp_path)
    spool = Spool(tmp_path / "spool", min_free_bytes=disk.total + 1)  # more than the disk could ever have free
    with pytest.raises(SpoolFullError) as refused:
        spool.accept_file(CT_SMALL, source="hook")
    message = str(refused.value)
    assert "is nearly full" in message and "GiB free" in message and "spool.min_free_bytes" in message
    assert "nothing was queued" in message
    assert spool.pending() == [] and list(spool.temp_dir.iterdir()) == []


def test_image_larger_than_the_whole_cap_is_refused_as_never_fitting_not_as_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_pending_bytes=1000, min_free_bytes=0)
    with pytest.raises(IngestError) as refused:
        spool.accept_file(CT_SMALL, source="hook")
    assert not isinstance(refused.value, SpoolFullError)  # retrying would never help
    assert "can never be accepted unless spool.max_pending_bytes is raised" in str(refused.value)
    assert spool.pending() == []


def test_temporaries_left_by_a_dead_writer_are_swept_and_stop_counting_against_the_cap(tmp_path: Path) -> None:
    image = _png(tmp_path, 1)
    spool = _capped_spool(tmp_path, image)
    orphan = spool.temp_dir / "cstore-aborted.dcm"  # an association aborted mid-transfer
    orphan.write_bytes(b"\0" * image.stat().st_size)
    hour_ago = time.time() - 3600
    os.utime(orphan, (hour_ago, hour_ago))
    spool.accept_file(image, source="hook")  # would not fit beside the orphan
    assert not orphan.exists() and len(spool.pending()) == 1


def test_hot_folder_leaves_files_in_place_while_the_spool_is_full_and_takes_them_once_there_is_room(
    tmp_path: Path,
) -> None:
    hot = tmp_path / "hot"
    hot.mkdir()
    first, second = _png(hot, 1), _png(hot, 2)
    first_sha, second_sha = _sha(first), _sha(second)
    spool = _capped_spool(tmp_path, first)
    now = [0.0]
    hf = HotFolder(hot, spool, stable_seconds=2.0, poll_seconds=0.1, clock=lambda: now[0])
    hf.poll_once()
    now[0] += 2.0
    assert hf.poll_once() == [first_sha]  # one fits; the other is refused and stays
    assert sorted(p.name for p in hot.iterdir()) == ["image-2.png"]
    for _ in range(3):  # retried on every poll, not only once the file changes
        now[0] += 1.0
        assert hf.poll_once() == [] and second.exists()
    (item,) = spool.pending()
    spool.remove(item)  # the worker judged it
    now[0] += 1.0
    assert hf.poll_once() == [second_sha] and not second.exists()  # unchanged file, taken all the same


def _ask_hook(sock_path: Path, file: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock_path))
        s.sendall(str(file).encode() + b"\n")
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return answer.decode()


def test_hook_socket_answers_spool_full_while_the_spool_is_full_and_keeps_serving(tmp_path: Path) -> None:
    first, second = _png(tmp_path, 1), _png(tmp_path, 2)
    spool = _capped_spool(tmp_path, first)
    short = Path(tempfile.mkdtemp(prefix="hk", dir="/tmp"))  # sun_path holds 108 bytes
    hook = HookSocket(short / "hook.sock", spool, 0o600)
    hook.start()
    try:
        assert _ask_hook(hook.path, first) == f"OK {_sha(first)}\n"
        refused = _ask_hook(hook.path, second)
        assert refused.startswith("ERR spool_full spool ") and "is full" in refused and refused.endswith("\n")
        assert "nothing was queued" in refused
        client = subprocess.run([sys.executable, str(REPO / "firmware_hooks" / "submit_via_socket.py"),
                                 "--socket", str(hook.path), str(second)], capture_output=True, text=True, timeout=60)
        assert client.returncode == 4 and client.stdout.startswith("ERR spool_full ")  # "retry later"
        spool.remove(spool.pending()[0])
        assert _ask_hook(hook.path, second) == f"OK {_sha(second)}\n"  # the same socket, still serving
    finally:
        hook.stop()
        shutil.rmtree(short)


def test_submit_exits_2_naming_the_spool_limit_and_keeps_the_files_before_it_queued(tmp_path: Path) -> None:
    first, second = _png(tmp_path, 1, side=1200), _png(tmp_path, 2, side=1200)  # about 1.4 MB each
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"spool": {"max_pending_bytes": "2 MiB", "min_free_bytes": 0}}))
    run = run_cli("submit", "--config", str(config), str(first), str(second))
    assert run.returncode == 2, run.stderr
    assert run.stdout == f"OK {_sha(first)} {first}\n"
    assert "is full" in run.stderr and "spool.max_pending_bytes (2.0 MiB)" in run.stderr
    assert "nothing was queued" in run.stderr
    assert [p.name for p in (tmp_path / "state" / "spool").glob("*.png")] == [f"{_sha(first)}.png"]


# -- C-STORE into the spool ----------------------------------------------------------------------


def _storescu(port: int, file: Path) -> subprocess.CompletedProcess[str]:
    command = [STORESCU, "-v", "-aet", "CT_SCANNER", "-aec", "EDGE_AGENT", "127.0.0.1", str(port), str(file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_cstore_while_the_spool_is_full_is_refused_out_of_resources_and_the_scp_keeps_receiving(
    tmp_path: Path,
) -> None:
    filler = tmp_path / "filler.bin"
    filler.write_bytes(os.urandom(CT_SMALL.stat().st_size))
    spool = Spool(tmp_path / "spool", max_pending_bytes=int(filler.stat().st_size * 1.5), min_free_bytes=0)
    spool.accept_file(filler, source="hook")
    rx = DicomReceiver(DicomConfig(enabled=True, port=free_port()), spool)
    rx.start()
    try:
        refused = _storescu(rx.config.port, CT_SMALL)
        assert "Received Store Response (Refused: OutOfResources)" in refused.stdout + refused.stderr
        assert [i.name for i in spool.pending()] == ["filler.bin"]
        assert list(spool.temp_dir.iterdir()) == []  # the received data was not left behind
        spool.remove(spool.pending()[0])
        stored = _storescu(rx.config.port, CT_SMALL)
        assert stored.returncode == 0 and "Received Store Response (Success)" in stored.stdout + stored.stderr
        (item,) = spool.pending()
        assert item.source == "dicom" and item.path.stat().st_mode & 0o777 == 0o640
        # The spool is full again, but a resend of the queued image (its answer was lost) is Success.
        resent = _storescu(rx.config.port, CT_SMALL)
        assert resent.returncode == 0 and spool.pending() == [item]
        assert list(spool.temp_dir.iterdir()) == []
    finally:
        rx.stop()


def test_cstore_is_received_into_the_spool_even_when_the_system_temp_folder_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A modality PC's /tmp may be a small tmpfs, full, or on another disk; before, a received
    # dataset went there first and was then copied into the spool.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-system-temp"))
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    rx = DicomReceiver(DicomConfig(enabled=True, port=free_port()), spool)
    rx.start()
    try:
        run = _storescu(rx.config.port, CT_SMALL)
        assert run.returncode == 0, run.stdout + run.stderr
    finally:
        rx.stop()
    (item,) = spool.pending()
    assert item.sha256 == hashlib.sha256(item.path.read_bytes()).hexdigest()
    assert item.path.read_bytes()[128:132] == b"DICM"
    assert list(spool.temp_dir.iterdir()) == [] and not (tmp_path / "no-such-system-temp").exists()


# -- the journal ---------------------------------------------------------------------------------


def _judged(seed: int) -> JudgedImage:
    verdict = Verdict(path=f"image-{seed}.png", frame=None, verdict="unreadable", score=None, threshold=None,
                      reasons=(Reason("empty", "the file is empty"),), timings_ms=Timings())
    return JudgedImage(sha256=hashlib.sha256(str(seed).encode()).hexdigest(), source="hook",
                       name=f"image-{seed}.png", accepted_at="2026-01-01T00:00:00Z",
                       judged_at="2026-01-01T00:00:01Z", verdicts=(verdict,))


def _shas(path: Path) -> list[str]:
    return [json.loads(line)["sha256"] for line in path.read_text().splitlines()]


def _line_bytes() -> int:
    return len(json.dumps(_judged(0).to_dict(), separators=(",", ":"))) + 1


def test_journal_rotates_at_its_size_limit_and_keeps_only_the_configured_number_of_files(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    journal = Journal(path, max_bytes=3 * _line_bytes(), keep=2)  # three lines per file
    for seed in range(10):
        journal.record(_judged(seed))
    journal.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verdicts.jsonl", "verdicts.jsonl.1", "verdicts.jsonl.2"]
    expected = [_judged(s).sha256 for s in range(10)]
    assert _shas(tmp_path / "verdicts.jsonl.2") == expected[3:6]  # the oldest retained
    assert _shas(tmp_path / "verdicts.jsonl.1") == expected[6:9]
    assert _shas(path) == expected[9:]
    assert all(p.stat().st_size <= 3 * _line_bytes() for p in tmp_path.iterdir())


def test_repeat_within_the_retained_journal_is_dropped_and_one_older_than_it_is_judged_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "verdicts.jsonl"
    journal = Journal(path, max_bytes=3 * _line_bytes(), keep=1)
    for seed in range(7):  # files: .1 = 3..5, active = 6; 0..2 rotated away
        journal.record(_judged(seed))
    journal.close()
    restarted = Journal(path, max_bytes=3 * _line_bytes(), keep=1)  # memory rebuilt from the retained files
    assert [restarted.judged(_judged(s).sha256) for s in range(7)] == [False] * 3 + [True] * 4
    restarted.record(_judged(0))  # an old image submitted again gets a fresh verdict line
    assert restarted.judged(_judged(0).sha256)
    restarted.close()


def test_torn_last_line_is_still_repaired_in_the_active_file_with_rotated_files_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    journal = Journal(path, max_bytes=3 * _line_bytes(), keep=2)
    for seed in range(4):
        journal.record(_judged(seed))
    journal.close()
    rotated = (tmp_path / "verdicts.jsonl.1").read_bytes()
    with path.open("ab") as f:
        f.write(b'{"schema":1,"sha256":"' + _judged(4).sha256.encode() + b'","verd')  # power cut mid-append
    restarted = Journal(path, max_bytes=3 * _line_bytes(), keep=2)
    assert not restarted.judged(_judged(4).sha256) and restarted.judged(_judged(3).sha256)
    assert path.read_text().endswith("\n") and _shas(path) == [_judged(3).sha256]
    assert (tmp_path / "verdicts.jsonl.1").read_bytes() == rotated  # rotated files are never rewritten
    restarted.close()


def test_rotation_cut_short_by_a_crash_loses_no_verdict_and_the_next_one_completes(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    journal = Journal(path, max_bytes=3 * _line_bytes(), keep=3)
    for seed in range(6):  # .1 = 0..2, active = 3..5
        journal.record(_judged(seed))
    journal.close()
    # The crash came after ".1 -> .2" and before "active -> .1": a gap in the numbering.
    os.replace(tmp_path / "verdicts.jsonl.1", tmp_path / "verdicts.jsonl.2")
    restarted = Journal(path, max_bytes=3 * _line_bytes(), keep=3)
    assert all(restarted.judged(_judged(s).sha256) for s in range(6))
    restarted.record(_judged(6))
    restarted.close()
    assert _shas(tmp_path / "verdicts.jsonl.3") == [_judged(s).sha256 for s in range(3)]
    assert _shas(tmp_path / "verdicts.jsonl.1") == [_judged(s).sha256 for s in range(3, 6)]
    assert _shas(path) == [_judged(6).sha256]


# -- configuration and the running agent ------------------------------------------------------------


def test_limits_have_documented_defaults_and_take_sizes_as_operators_write_them(tmp_path: Path) -> None:
    defaults = parse_config({}, tmp_path)
    assert defaults.spool.max_pending_bytes == 2 << 30 and defaults.spool.min_free_bytes == 1 << 30
    assert defaults.journal_rotation.max_bytes == 32 << 20 and defaults.journal_rotation.keep == 4
    cfg = parse_config({"spool": {"max_pending_bytes": "512 MiB", "min_free_bytes": 0},
                        "journal_rotation": {"max_bytes": "1.5 GiB", "keep": 9}}, tmp_path)
    assert cfg.spool.max_pending_bytes == 512 << 20 and cfg.spool.min_free_bytes == 0
    assert cfg.journal_rotation.max_bytes == 3 << 29 and cfg.journal_rotation.keep == 9
    example = load_config(REPO / "agent.example.yaml")  # documents every key with its default
    assert example.spool == defaults.spool and example.journal_rotation == defaults.journal_rotation


@pytest.mark.parametrize(
    "data, message",
    [
        ({"spool": {"max_pending_bytes": "2 GB"}}, "spool.max_pending_bytes: expected a size from 1 MiB to 64 TiB"),
        ({"spool": {"max_pending_bytes": 1000}}, "spool.max_pending_bytes: expected a size from 1 MiB"),
        ({"spool": {"min_free_bytes": -1}}, "spool.min_free_bytes: expected a size from 0 to 64 TiB"),
        ({"spool": {"min_free_bytes": True}}, "spool.min_free_bytes: expected a size"),
        ({"spool": {"max_pending": 5}}, "spool.max_pending: unknown key (did you mean spool.max_pending_bytes?)"),
        ({"journal_rotation": {"max_bytes": "lots"}}, "journal_rotation.max_bytes: expected a size from 64 KiB"),
        ({"journal_rotation": {"keep": 0}}, "journal_rotation.keep: expected a number of rotated files from 1 to 1000"),
        ({"journal_rotation": {"keep": "4"}}, "journal_rotation.keep: expected a number of rotated files"),
    ],
)
def test_bad_limit_names_the_key_and_the_expected_form(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path)
    assert message in str(err.value)


def test_running_agent_applies_the_spool_and_journal_limits_from_its_config(
    tmp_path: Path, tiny_pipeline: Pipeline
) -> None:
    cfg = parse_config({"hook": {"enabled": False},
                        "spool": {"max_pending_bytes": "1 MiB", "min_free_bytes": 0},
                        "journal_rotation": {"max_bytes": "64 KiB", "keep": 1}}, tmp_path)
    agent = Agent(cfg, judge_factory=lambda: tiny_pipeline)
    agent.start()
    try:
        spool = agent._spool
        assert spool is not None
        big = _png(tmp_path, 99, side=1100)  # about 1.2 MB: more than the whole spool may hold
        with pytest.raises(IngestError, match=r"spool.max_pending_bytes = 1.0 MiB"):
            spool.accept_file(big, source="hook")
        journal = cfg.journal_path
        seed = 0
        while not journal.with_name("verdicts.jsonl.1").exists():  # about 60 verdicts fill 64 KiB
            seed += 1
            spool.accept_file(_png(tmp_path, seed, side=16), source="hook")
            wait_for(lambda: not spool.pending(), what="the worker to judge the image")
            assert seed < 500, "the journal never rotated"
    finally:
        agent.shutdown()
    assert journal.stat().st_size <= 64 << 10 and journal.with_name("verdicts.jsonl.1").stat().st_size <= 64 << 10
