"""The durable core: spool, journal and the judging worker, in-process with the tiny model."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from edge_agent.detect import open_detector
from edge_agent.hook_socket import answer_request
from edge_agent.errors import IngestError
from edge_agent.journal import Journal, JudgedImage
from edge_agent.pipeline import Pipeline
from edge_agent.spool import Spool
from edge_agent.verdict import Verdict
from edge_agent.worker import MAX_ATTEMPTS, RETRY_SECONDS, Worker
from tiny_model import build_tiny_model

CT_SMALL = Path(str(get_testdata_file("CT_small.dcm")))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    model = build_tiny_model(tmp_path_factory.mktemp("model"))
    return Pipeline(open_detector(model, "onnxruntime", "fp32", 1))


class CountingJudge:
    def __init__(self, inner: Pipeline | None = None, fail: bool = False) -> None:
        self.inner, self.fail, self.calls = inner, fail, 0

    def process(self, path: str | Path, display: str | None = None) -> list[Verdict]:
        self.calls += 1
        if self.fail or self.inner is None:
            raise RuntimeError("runtime exploded")
        return self.inner.process(path, display)


def _worker(tmp_path: Path, judge: object) -> Worker:
    return Worker(Spool(tmp_path / "spool"), judge, Journal(tmp_path / "verdicts.jsonl"), tmp_path / "quarantine")  # type: ignore[arg-type]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_same_bytes_submitted_twice_are_one_queued_item(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    a = spool.accept_file(CT_SMALL, source="hook")
    copy = tmp_path / "renamed.DCM"
    copy.write_bytes(CT_SMALL.read_bytes())
    b = spool.accept_file(copy, source="hot_folder")
    assert a.sha256 == b.sha256 == hashlib.sha256(CT_SMALL.read_bytes()).hexdigest()
    assert [i.path for i in spool.pending()] == [a.path]
    assert a.path.read_bytes() == CT_SMALL.read_bytes()
    assert list((tmp_path / "spool" / ".tmp").iterdir()) == []  # no temporaries left behind


def test_unreadable_submission_is_refused_with_a_reason_and_nothing_queued(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert answer_request(b"relative/path.dcm\n", spool).startswith(b"ERR bad_request")
    assert answer_request(b"/no/such/file.dcm", spool).startswith(b"ERR bad_request")  # no newline
    assert answer_request(b"/no/such/file.dcm\n", spool).startswith(b"ERR not_queued /no/such/file.dcm: cannot be read")
    assert answer_request(b"/dev/zero\n", spool).startswith(b"ERR not_queued /dev/zero: not a regular file")
    assert spool.pending() == []
    ok = answer_request(str(CT_SMALL).encode() + b"\n", spool)
    assert ok == f"OK {hashlib.sha256(CT_SMALL.read_bytes()).hexdigest()}\n".encode()


def test_queued_image_is_judged_recorded_once_and_removed_from_the_spool(tmp_path: Path, pipeline: Pipeline) -> None:
    worker = _worker(tmp_path, pipeline)
    item = worker.spool.accept_file(CT_SMALL, source="hook")
    worker.drain_once()
    (rec,) = _lines(tmp_path / "verdicts.jsonl")
    assert rec["sha256"] == item.sha256 and rec["source"] == "hook" and rec["name"] == "CT_small.dcm"
    assert rec["verdicts"][0]["verdict"] in ("authentic", "suspicious", "synthetic")
    assert worker.spool.pending() == [] and list((tmp_path / "spool").glob(f"{item.sha256}*")) == []


def test_image_judged_just_before_a_crash_is_not_judged_again_after_restart(tmp_path: Path, pipeline: Pipeline) -> None:
    first = _worker(tmp_path, pipeline)
    item = first.spool.accept_file(CT_SMALL, source="hook")
    judged = first._judge(item)
    first.journal.record(judged)  # crash here: recorded, spool item not yet deleted
    first.journal.close()

    judge = CountingJudge(pipeline)
    restarted = _worker(tmp_path, judge)
    restarted.drain_once()
    assert judge.calls == 0
    assert len(_lines(tmp_path / "verdicts.jsonl")) == 1 and restarted.spool.pending() == []


def test_journal_line_torn_by_a_crash_is_dropped_and_the_image_judged_again(tmp_path: Path, pipeline: Pipeline) -> None:
    worker = _worker(tmp_path, pipeline)
    item = worker.spool.accept_file(CT_SMALL, source="hook")
    worker.journal.close()
    with (tmp_path / "verdicts.jsonl").open("ab") as f:
        f.write(b'{"schema":1,"sha256":"' + item.sha256.encode() + b'","verd')  # power cut mid-append

    restarted = _worker(tmp_path, pipeline)
    assert not restarted.journal.judged(item.sha256)
    restarted.drain_once()
    (rec,) = _lines(tmp_path / "verdicts.jsonl")
    assert rec["sha256"] == item.sha256


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (file, expected reason code or None for "any")."""
    data = CT_SMALL.read_bytes()
    out: dict[str, tuple[Path, str | None]] = {}

    def put(name: str, content: bytes, code: str | None) -> None:
        (tmp_path / name).write_bytes(content)
        out[name] = (tmp_path / name, code)

    put("cut.dcm", data[:3000], None)
    put("empty.dcm", b"", "empty")
    put("notes.txt", b"not an image at all\n" * 10, None)
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    out["nopix.dcm"] = (tmp_path / "nopix.dcm", "no_pixel_data")
    ds = pydicom.dcmread(CT_SMALL)
    ds.Rows = ds.Columns = 65000  # declares 4 Gpixel: refused before any allocation
    ds.save_as(tmp_path / "huge.dcm")
    out["huge.dcm"] = (tmp_path / "huge.dcm", "too_large")
    return out


def test_bad_inputs_are_unreadable_quarantined_and_the_next_image_is_still_judged(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    worker = _worker(tmp_path, pipeline)
    bad = _bad_inputs(tmp_path)
    for f, _ in bad.values():
        worker.spool.accept_file(f, source="hot_folder")
    worker.spool.accept_file(CT_SMALL, source="hot_folder")
    worker.drain_once()

    by_name = {r["name"]: r for r in _lines(tmp_path / "verdicts.jsonl")}
    for name, (src, code) in bad.items():
        (v,) = by_name[name]["verdicts"]
        assert v["verdict"] == "unreadable" and v["reasons"][0]["code"], name
        assert code is None or v["reasons"][0]["code"] == code, (name, v["reasons"])
        assert Path(by_name[name]["quarantined"]).read_bytes() == src.read_bytes()
    assert by_name["CT_small.dcm"]["verdicts"][0]["verdict"] != "unreadable"
    assert worker.spool.pending() == []


def test_pipeline_failure_is_an_unreadable_verdict_not_a_stopped_agent(tmp_path: Path) -> None:
    worker = _worker(tmp_path, CountingJudge(fail=True))
    worker.spool.accept_file(CT_SMALL, source="hook")
    stop = threading.Event()
    worker.drain_once(stop)
    (rec,) = _lines(tmp_path / "verdicts.jsonl")
    assert rec["verdicts"][0]["reasons"][0]["code"] == "internal_error" and rec["quarantined"]


def test_file_that_keeps_crashing_the_agent_is_quarantined_without_another_attempt(tmp_path: Path) -> None:
    judge = CountingJudge(fail=True)
    worker = _worker(tmp_path, judge)
    item = worker.spool.accept_file(CT_SMALL, source="hook")
    for _ in range(MAX_ATTEMPTS):  # three starts that died inside the decoder
        worker.spool.count_attempt(item)
    worker.drain_once()
    assert judge.calls == 0
    (rec,) = _lines(tmp_path / "verdicts.jsonl")
    assert rec["verdicts"][0]["reasons"][0]["code"] == "crashed_agent"


def test_unreadable_file_that_cannot_be_quarantined_is_kept_and_the_agent_goes_on(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    (tmp_path / "not-a-folder").write_text("")
    worker = Worker(Spool(tmp_path / "spool"), pipeline, Journal(tmp_path / "verdicts.jsonl"),
                    tmp_path / "not-a-folder" / "quarantine")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    item = worker.spool.accept_file(empty, source="hook")
    worker.spool.accept_file(CT_SMALL, source="hook")
    worker.drain_once()

    by_name = {r["name"]: r for r in _lines(tmp_path / "verdicts.jsonl")}
    bad, good = by_name["empty.dcm"], by_name["CT_small.dcm"]
    assert bad["verdicts"][0]["verdict"] == "unreadable" and bad["quarantined"] is None
    assert item.path.with_name(item.path.name + ".unquarantined").exists()  # evidence kept
    assert good["verdicts"][0]["verdict"] != "unreadable"
    assert worker.spool.pending() == []


class RefusingSink:
    """A later sink (e.g. an MQTT outbox) that is full for a while."""

    def __init__(self) -> None:
        self.full, self.got = True, []  # type: ignore[var-annotated]

    def record(self, judged: JudgedImage) -> None:
        if self.full:
            raise IngestError("outbox full")
        self.got.append(judged.sha256)

    def close(self) -> None:
        pass


def test_verdict_a_sink_refuses_stays_spooled_and_is_recorded_once_when_it_accepts(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    now = [0.0]
    judge, sink = CountingJudge(pipeline), RefusingSink()
    worker = Worker(Spool(tmp_path / "spool"), judge, Journal(tmp_path / "verdicts.jsonl"), tmp_path / "q",
                    sinks=[sink], clock=lambda: now[0])
    item = worker.spool.accept_file(CT_SMALL, source="hook")
    worker.drain_once()
    assert (tmp_path / "verdicts.jsonl").read_text() == "" and worker.spool.pending() == [item]
    worker.drain_once()  # too early: not retried yet
    sink.full = False
    now[0] += RETRY_SECONDS
    worker.drain_once()
    assert sink.got == [item.sha256] and len(_lines(tmp_path / "verdicts.jsonl")) == 1
    assert judge.calls == 1 and worker.spool.pending() == []  # judged once, not per retry


def test_a_sink_that_took_a_verdict_is_not_given_it_again_when_a_later_sink_refused(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """The MQTT sink signs each verdict it takes: a second offer would be a second message id."""
    now = [0.0]
    first, later = RefusingSink(), RefusingSink()
    first.full = False
    worker = Worker(Spool(tmp_path / "spool"), CountingJudge(pipeline), Journal(tmp_path / "verdicts.jsonl"),
                    tmp_path / "q", sinks=[first, later], clock=lambda: now[0])
    item = worker.spool.accept_file(CT_SMALL, source="hook")
    worker.drain_once()
    assert first.got == [item.sha256] and later.got == [] and worker.spool.pending() == [item]
    later.full = False
    now[0] += RETRY_SECONDS
    worker.drain_once()
    assert first.got == [item.sha256] and later.got == [item.sha256]
    assert len(_lines(tmp_path / "verdicts.jsonl")) == 1 and worker.spool.pending() == []
