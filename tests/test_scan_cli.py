"""``edge-agent scan``, run as a user runs it (``python -m edge_agent.cli`` in a subprocess):
folders walked, JSON lines, the table, heat maps, exit status, no patient data in the output,
and the two runtimes agreeing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from sample_images import (
    LOSSLESS,
    PATIENT,
    encode,
    new_image,
    paste_noise,
    radiograph_crop,
    save,
    smooth_image,
    to_uint,
)

# Where the noise is pasted into the smooth image: (top, left, height, width), off the tile grid.
SPLICE = (300, 140, 72, 72)


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines()]


def scan(*args: str | Path, cwd: Path) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "scan", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``incoming/`` as a device would collect it; the CLI runs from here with relative paths.

    incoming/clean/      radiograph.dcm (real CR crop), smooth16.png, nested/smooth.jpeg-ls.dcm
    incoming/multi/      three-frames.dcm (smooth, spliced, smooth)
    incoming/patient/    known.dcm (planted patient data), known-cut.dcm (the same, truncated)
    incoming/spliced/    spliced.dcm (noise pasted into a smooth image)
    """
    root = tmp_path_factory.mktemp("scan")
    inc = root / "incoming"
    # Dark: the tiny model zero-pads its Laplacian, so bright tile edges look like edges to it;
    # in a dark image only the pasted noise carries evidence, which is what the heat map must show.
    smooth = 0.25 * smooth_image(512, 512)
    save(radiograph_crop("RG3_UNCR.dcm", size=512), inc / "clean" / "radiograph.dcm")
    Image.fromarray(to_uint(smooth, 16)).save(inc / "clean" / "smooth16.png")
    plain = save(new_image(to_uint(smooth, 8), "MONOCHROME2", 8), root / "smooth.dcm")
    (inc / "clean" / "nested").mkdir()
    encode(plain, inc / "clean" / "nested" / "smooth.jpeg-ls.dcm", LOSSLESS["jpeg-ls-lossless"][0])
    frames = np.stack([to_uint(smooth, 8), to_uint(paste_noise(smooth, SPLICE), 8), to_uint(smooth[::-1], 8)])
    save(new_image(frames, "MONOCHROME2", 8), inc / "multi" / "three-frames.dcm")
    known = save(new_image(to_uint(smooth.T, 8), "MONOCHROME2", 8, **PATIENT), inc / "patient" / "known.dcm")
    (inc / "patient" / "known-cut.dcm").write_bytes(known.read_bytes()[:2000])
    save(new_image(to_uint(paste_noise(smooth, SPLICE), 8), "MONOCHROME2", 8), inc / "spliced" / "spliced.dcm")
    (inc / "clean" / ".hidden-temp").write_bytes(b"partial upload")  # hidden files are skipped
    return root


@pytest.fixture(scope="module")
def jsonl_run(workdir: Path, tiny_model_dir: Path) -> Run:
    heatmaps = workdir / "heatmaps"
    return scan("--jsonl", "--heatmaps", heatmaps, "--backend", "onnxruntime", "--model", tiny_model_dir,
                "incoming", cwd=workdir)


@pytest.fixture(scope="module")
def table_run(workdir: Path, tiny_model_dir: Path) -> Run:
    return scan("--backend", "onnxruntime", "--model", tiny_model_dir, "incoming", cwd=workdir)


EXPECTED = [  # (path as printed, frame, verdict), in walk order
    ("incoming/clean/radiograph.dcm", None, "authentic"),
    ("incoming/clean/smooth16.png", None, "authentic"),
    ("incoming/clean/nested/smooth.jpeg-ls.dcm", None, "authentic"),
    ("incoming/multi/three-frames.dcm", 0, "authentic"),
    ("incoming/multi/three-frames.dcm", 1, "synthetic"),
    ("incoming/multi/three-frames.dcm", 2, "authentic"),
    ("incoming/patient/known-cut.dcm", None, "unreadable"),
    ("incoming/patient/known.dcm", None, "authentic"),
    ("incoming/spliced/spliced.dcm", None, "synthetic"),
]


def test_scan_walks_folders_and_prints_one_json_object_per_verdict(jsonl_run: Run) -> None:
    assert jsonl_run.status == 5, jsonl_run.stderr  # flagged (1) + unreadable (4)
    lines = jsonl_run.lines
    assert [(d["path"], d["frame"], d["verdict"]) for d in lines] == EXPECTED
    assert all(line.startswith("{") and line.endswith("}") for line in jsonl_run.stdout.splitlines())


def test_each_json_verdict_has_the_documented_fields(jsonl_run: Run, tiny_model_dir: Path) -> None:
    onnx_sha = hashlib.sha256((tiny_model_dir / "model-fp32.onnx").read_bytes()).hexdigest()
    for d in jsonl_run.lines:
        assert d["verdict"] in ("authentic", "suspicious", "synthetic", "unreadable")
        assert isinstance(d["reasons"], list) and d["reasons"]
        assert all(set(r) == {"code", "message"} and r["code"] and r["message"] for r in d["reasons"])
        t = d["timings_ms"]
        assert set(t) >= {"decode", "preprocess", "infer", "total"}
        assert all(isinstance(v, (int, float)) and v >= 0 for v in t.values())
        if d["verdict"] == "unreadable":
            assert (d["score"], d["threshold"], d["reasons"][0]["code"]) == (None, None, "truncated")
            continue
        assert 0.0 <= d["score"] <= 1.0
        assert d["threshold"] == 0.5
        assert (d["verdict"] == "authentic") == (d["score"] < d["threshold"])
        assert {k: d["model"][k] for k in ("name", "version", "sha256")} == {
            "name": "tiny-test", "version": "0.0.1", "sha256": onnx_sha,
        }
        assert t["infer"] > 0 and t["total"] >= t["preprocess"] + t["infer"] - 0.01  # rounded to 1 µs


def test_scan_output_carries_no_patient_data(jsonl_run: Run, table_run: Run, workdir: Path) -> None:
    heatmap_names = " ".join(p.name for p in (workdir / "heatmaps").iterdir())
    everything = "\n".join([jsonl_run.stdout, jsonl_run.stderr, table_run.stdout, table_run.stderr, heatmap_names])
    planted = pydicom.dcmread(workdir / "incoming" / "patient" / "known.dcm")
    assert all(str(planted.data_element(k).value) == v for k, v in PATIENT.items())
    assert planted.file_meta.MediaStorageSOPInstanceUID == PATIENT["SOPInstanceUID"]
    assert "incoming/patient/known.dcm" in everything  # the file was scanned...
    for keyword, value in PATIENT.items():  # ...but nothing identifying came out
        for part in {value, *value.split("^")}:
            assert part not in everything, f"{keyword} value {part!r} leaked into the scan output"


def test_without_jsonl_scan_prints_a_readable_table(table_run: Run, jsonl_run: Run) -> None:
    assert table_run.status == 5
    out = table_run.stdout.splitlines()
    assert out[0].split() == ["VERDICT", "SCORE", "FRAME", "MS", "PATH", "/", "REASON"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(out[1])
    rows = [line.split() for line in out[1:-1] if not line.startswith(" ")]
    assert [(r[0], r[2], r[-1]) for r in rows] == [
        (verdict, "-" if frame is None else str(frame), path) for path, frame, verdict in EXPECTED
    ]
    scores = {(d["path"], d["frame"]): d["score"] for d in jsonl_run.lines}
    for r, (path, frame, verdict) in zip(rows, EXPECTED):
        assert r[1] == ("-" if verdict == "unreadable" else f"{scores[path, frame]:.3f}")
    # A reason line, indented, under every row that is not authentic.
    cut = out.index(next(line for line in out if line.endswith("incoming/patient/known-cut.dcm")))
    assert out[cut + 1].startswith(" ") and "cut short" in out[cut + 1]
    assert out[-1] == "6 authentic, 0 suspicious, 2 synthetic, 1 unreadable (7 files)"


def _redness(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int32)
    return rgb[..., 0] - rgb[..., 1]  # grey and the yellow label have R == G; evidence is red


def test_heatmaps_mark_the_spliced_region(jsonl_run: Run, workdir: Path) -> None:
    pngs = sorted((workdir / "heatmaps").glob("*.png"))
    scored = [d for d in jsonl_run.lines if d["verdict"] != "unreadable"]
    assert len(pngs) == len(scored)  # one per scored image (per frame), none for unreadable files
    for png in pngs:
        with Image.open(png) as im:
            assert (im.format, im.size) == ("PNG", (512, 512))
    [spliced] = [p for p in pngs if "spliced" in p.name]
    [frame1] = [p for p in pngs if "three-frames" in p.name and "frame1" in p.name]
    for png in (spliced, frame1):
        red = _redness(png)
        top, left, h, w = SPLICE
        inside = np.zeros(red.shape, bool)
        inside[top + 8 : top + h - 8, left + 8 : left + w - 8] = True
        near = np.zeros(red.shape, bool)
        near[max(0, top - 16) : top + h + 16, max(0, left - 16) : left + w + 16] = True
        assert red[inside].mean() > 80, f"{png.name}: the pasted noise is not marked"
        assert red[~near].max() < 30, f"{png.name}: evidence drawn away from the pasted noise"
        ys, xs = np.nonzero(red > 60)
        assert top <= ys.mean() <= top + h and left <= xs.mean() <= left + w


def test_heatmap_of_a_smooth_authentic_image_shows_no_evidence(workdir: Path, jsonl_run: Run) -> None:
    [png] = [p for p in (workdir / "heatmaps").glob("*.png") if "smooth16" in p.name]
    assert _redness(png).max() < 30


@pytest.mark.parametrize(
    "paths, status",
    [
        (["incoming/clean"], 0),
        (["incoming/clean", "incoming/patient/known-cut.dcm"], 4),
    ],
    ids=["all-authentic-0", "unreadable-4"],  # 1: test_flagged_image..., 5: the jsonl run above
)
def test_exit_status_says_what_was_found(paths: list[str], status: int, workdir: Path, tiny_model_dir: Path) -> None:
    run = scan("--jsonl", "--backend", "onnxruntime", "--model", tiny_model_dir, *paths, cwd=workdir)
    assert run.status == status, run.stderr
    assert run.lines and all(d["path"].startswith(tuple(paths)) for d in run.lines)


def test_flagged_image_gives_status_1_and_heatmaps_named_after_the_path_as_given(
    workdir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    given = ["./incoming/spliced", f"../{workdir.name}/incoming/multi/three-frames.dcm"]
    run = scan("--jsonl", "--heatmaps", tmp_path, "--backend", "onnxruntime", "--model", tiny_model_dir, *given,
               cwd=workdir)
    assert run.status == 1, run.stderr
    assert [d["path"] for d in run.lines] == ["./incoming/spliced/spliced.dcm"] + [given[1]] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "incoming__spliced__spliced.dcm.heatmap.png",  # not ".__incoming__...", a hidden file
        *(f"up__{workdir.name}__incoming__multi__three-frames.dcm.frame{i}.heatmap.png" for i in range(3)),
    ]


@pytest.mark.parametrize(
    "altered, backend",
    [("model-fp32.onnx", "onnxruntime"), ("openvino/model-fp32.bin", "openvino")],
)
def test_altered_model_file_stops_the_scan_naming_the_file_and_the_hash_mismatch(
    altered: str, backend: str, tiny_model_dir: Path, workdir: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    target = model / altered
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    target.write_bytes(bytes(data))
    manifest = json.loads((model / "manifest.json").read_text())
    [listed] = [f["sha256"] for f in manifest["files"] if f["path"] == altered]
    run = scan("--jsonl", "--backend", backend, "--model", model, "incoming/clean", cwd=workdir)
    assert run.status == 2
    assert run.stdout == ""  # no verdicts from an untrusted model
    assert str(target) in run.stderr
    assert "sha256" in run.stderr and listed in run.stderr
    assert hashlib.sha256(bytes(data)).hexdigest() in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_model_stops_the_scan_with_status_2(workdir: Path, tmp_path: Path) -> None:
    run = scan("--jsonl", "--model", tmp_path / "no-such-model", "incoming/clean", cwd=workdir)
    assert run.status == 2
    assert "no model manifest" in run.stderr and str(tmp_path / "no-such-model") in run.stderr
    assert "Traceback" not in run.stderr


def test_openvino_and_onnxruntime_give_the_same_scores(jsonl_run: Run, workdir: Path, tiny_model_dir: Path) -> None:
    ov = scan("--jsonl", "--backend", "openvino", "--model", tiny_model_dir, "incoming", cwd=workdir)
    assert ov.status == jsonl_run.status, ov.stderr
    ort_scores = {(d["path"], d["frame"]): d["score"] for d in jsonl_run.lines}
    ov_scores = {(d["path"], d["frame"]): d["score"] for d in ov.lines}
    assert ov_scores.keys() == ort_scores.keys()
    scored = [k for k, s in ort_scores.items() if s is not None]
    assert any(0.01 < ort_scores[k] < 0.99 for k in scored), "only saturated scores: the comparison means nothing"
    for key in scored:
        assert abs(ov_scores[key] - ort_scores[key]) <= 1e-4, key
    assert {d["model"]["backend"] for d in ov.lines if d["model"]} == {"openvino"}
    assert {d["model"]["backend"] for d in jsonl_run.lines if d["model"]} == {"onnxruntime"}
