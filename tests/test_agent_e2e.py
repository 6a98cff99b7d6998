"""The agent as a real process, with real peers: DCMTK storescu, the firmware socket client,
`edge-agent submit`, files written into the hot folder, SIGTERM and kill -9."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from agent_harness import STORESCU, AgentProcess, free_port, journal_records, records_for, run_cli, wait_for, write_config
from tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
HOOK_CLIENT = REPO / "firmware_hooks" / "submit_via_socket.py"
CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))
RG3_UNCR = Path(str(get_testdata_file("RG3_UNCR.dcm")))  # a real CR from pydicom-data


def _unique_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((96, 96)) * 40 + 100).astype(np.uint8)  # unique bytes per seed
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Any:
    """One agent with all three ingestion paths, shared by the tests that do not stop it."""
    d = tmp_path_factory.mktemp("agent")
    port = free_port()
    cfg = write_config(
        d,
        model={"path": str(model_dir), "backend": "onnxruntime", "threads": 1},
        dicom={"enabled": True, "port": port, "ae_title": "EDGE_AGENT"},
        hot_folder={"path": str(d / "hot"), "stable_seconds": 1.5, "poll_seconds": 0.1},
    )
    proc = AgentProcess(cfg, d / "agent.log").start()
    proc.dir, proc.port = d, port  # type: ignore[attr-defined]
    proc.journal = d / "state" / "verdicts.jsonl"  # type: ignore[attr-defined]
    yield proc
    assert proc.stop() == 0, proc.log_text()


def test_storescu_sends_cr_and_ct_and_each_verdict_is_journaled_from_intact_pixels(agent: Any) -> None:
    run = subprocess.run(
        [STORESCU, "-aet", "MODALITY", "-aec", "EDGE_AGENT", "127.0.0.1", str(agent.port), str(RG3_UNCR), str(CT_SMALL)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr  # storescu got Success for both C-STOREs

    for original in (RG3_UNCR, CT_SMALL):
        pixels = np.ascontiguousarray(pydicom.dcmread(original).pixel_array).tobytes()
        want = hashlib.sha256(pixels).hexdigest()

        def record() -> Any:
            return [r for r in journal_records(agent.journal) if r["source"] == "dicom"
                    and r["verdicts"][0].get("image", {}).get("pixel_sha256") == want]

        (rec,) = wait_for(record, what=f"the verdict for {original.name}")
        assert rec["name"] == "dicom:MODALITY"
        assert rec["verdicts"][0]["verdict"] in ("authentic", "suspicious", "synthetic")
        assert rec["verdicts"][0]["image"]["modality"] == pydicom.dcmread(original).Modality
    wait_for(lambda: not list((agent.dir / "state" / "spool").glob("*.dcm")), what="the spool to empty")


def test_truncated_dicom_in_hot_folder_is_quarantined_and_the_next_image_is_still_judged(agent: Any) -> None:
    hot = agent.dir / "hot"
    data = CT_SMALL.read_bytes()
    truncated = data[: len(data) // 2]
    good = _unique_png(1)
    # Rename into place, as a well-behaved writer does.
    (hot / ".trunc.dcm").write_bytes(truncated)
    os.rename(hot / ".trunc.dcm", hot / "trunc.dcm")
    (hot / "next.png.part").write_bytes(good)
    os.rename(hot / "next.png.part", hot / "next.png")

    (bad,) = wait_for(lambda: records_for(agent.journal, _sha(truncated)), what="the truncated file's verdict")
    (nxt,) = wait_for(lambda: records_for(agent.journal, _sha(good)), what="the next image's verdict")

    assert [v["verdict"] for v in bad["verdicts"]] == ["unreadable"]
    assert bad["verdicts"][0]["reasons"][0]["code"]  # a machine-readable reason
    assert bad["quarantined"] and Path(bad["quarantined"]).read_bytes() == truncated
    assert nxt["verdicts"][0]["verdict"] != "unreadable" and nxt["quarantined"] is None
    assert not (hot / "trunc.dcm").exists() and not (hot / "next.png").exists()
    assert agent.proc.poll() is None  # still running


def test_half_written_file_in_hot_folder_is_not_picked_up_until_complete(agent: Any) -> None:
    hot = agent.dir / "hot"
    data = _unique_png(2) + b"\0" * 30_000  # trailing bytes keep it a valid PNG
    target = hot / "slow.png"
    with target.open("wb") as f:  # a writer that appends in bursts, never pausing 1.5 s
        for i in range(0, len(data), 3_000):
            f.write(data[i : i + 3_000])
            f.flush()
            time.sleep(0.15)
            assert target.exists(), "taken while still being written"
    assert not any(r["name"] == "slow.png" for r in journal_records(agent.journal))

    (rec,) = wait_for(lambda: records_for(agent.journal, _sha(data)), what="the completed file's verdict")
    assert rec["verdicts"][0]["verdict"] != "unreadable"
    assert [r for r in journal_records(agent.journal) if r["name"] == "slow.png"] == [rec]


def test_submitting_the_same_file_twice_is_harmless_one_verdict(agent: Any) -> None:
    image = agent.dir / "acq-0001.png"
    image.write_bytes(_unique_png(3))
    sock = agent.dir / "state" / "hook.sock"
    answers = [
        subprocess.run([sys.executable, str(HOOK_CLIENT), "--socket", str(sock), str(image)],
                       capture_output=True, text=True, timeout=30)
        for _ in range(2)
    ]
    cli = run_cli("submit", "--config", str(agent.config), str(image))  # and a retry without the socket

    sha = _sha(image.read_bytes())
    assert [a.stdout.strip() for a in answers] == [f"OK {sha}"] * 2
    assert cli.returncode == 0 and cli.stdout.split()[:2] == ["OK", sha]
    wait_for(lambda: records_for(agent.journal, sha), what="the verdict")
    wait_for(lambda: not list((agent.dir / "state" / "spool").glob(f"{sha}.*")), what="the repeats to be dropped")
    assert len(records_for(agent.journal, sha)) == 1


def test_image_submitted_before_kill_9_is_judged_once_after_restart(tmp_path: Path, model_dir: Path) -> None:
    cfg = write_config(tmp_path, model={"path": str(model_dir), "backend": "onnxruntime", "threads": 1})
    journal = tmp_path / "state" / "verdicts.jsonl"
    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    image = tmp_path / "acq.png"
    image.write_bytes(_unique_png(4))
    sha = _sha(image.read_bytes())

    agent.signal(signal.SIGSTOP)  # the agent cannot touch the image before it is killed
    submitted = run_cli("submit", "--config", str(cfg), str(image))
    assert submitted.returncode == 0, submitted.stderr
    agent.kill9()
    assert records_for(journal, sha) == []
    assert list((tmp_path / "state" / "spool").glob(f"{sha}.png"))  # durably queued

    agent = AgentProcess(cfg, tmp_path / "agent.log").start()
    wait_for(lambda: records_for(journal, sha), what="the verdict after restart")
    wait_for(lambda: not list((tmp_path / "state" / "spool").glob(f"{sha}.*")), what="the spool to empty")
    assert agent.stop() == 0  # SIGTERM: finish, exit 0
    assert len(records_for(journal, sha)) == 1


@pytest.mark.parametrize(
    "section, key_in_message",
    [
        ({"dicom": {"prot": 104}}, "dicom.prot"),
        ({"dicom": {"port": "eleven"}}, "dicom.port"),
        ({"model": {"path": "no/such/model"}}, "model.path"),
    ],
    ids=["unknown_key", "wrong_type", "missing_model_path"],
)
def test_agent_with_a_bad_config_does_not_start_and_names_the_key(
    tmp_path: Path, section: dict[str, Any], key_in_message: str
) -> None:
    cfg = write_config(tmp_path, **section)
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert key_in_message in result.stderr
    assert "expected" in result.stderr or "unknown key" in result.stderr
    assert not (tmp_path / "state").exists()  # nothing half-started
