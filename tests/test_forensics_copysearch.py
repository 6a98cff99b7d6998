"""The copy search (edge_agent/forensics/copysearch.py) on a real CR radiograph of pydicom-data:
a region copied from elsewhere in the same image, or real noise pasted onto a smoothed edit, is
found and mapped; the untouched radiograph is not flagged; ``edge-agent scan --copy-search`` and
``forensics.copy_search`` switch it on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from edge_agent.config import load_config
from edge_agent.decode import decode_path
from edge_agent.errors import ConfigError
from edge_agent.forensics.copysearch import CopySearch, copy_map

from sample_images import radiograph_crop, save

SIZE = 768
CENTRE, RADIUS, SHIFT = (300, 420), 40, (180, -230)   # the pasted disk, and where its pixels come from


def _mask() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    d = np.hypot(yy - CENTRE[0], xx - CENTRE[1]) / RADIUS
    return np.clip((1.15 - d) / 0.3, 0.0, 1.0)        # soft edge, as editing tools blend


def _forged(kind: str) -> np.ndarray:
    px = radiograph_crop("RG3_UNCR.dcm", SIZE).pixel_array.astype(np.float64)
    m = _mask()
    source = np.roll(px, SHIFT, axis=(0, 1))
    if kind == "copy":          # copy-move: content and noise from another place
        out = px * (1 - m) + source * m
    elif kind == "touch-up":    # the edit smoothed, then real noise from another place pasted on it
        smooth = ndimage.gaussian_filter(px, 3.0)
        out = px * (1 - m) + (smooth + source - ndimage.gaussian_filter(source, 1.5)) * m
    else:
        out = px
    return np.clip(np.round(out), 0, 1023).astype(np.uint16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("copy") / "incoming"
    out = {}
    for kind in ("clean", "copy", "touch-up"):
        ds = radiograph_crop("RG3_UNCR.dcm", SIZE)
        ds.PixelData = _forged(kind).tobytes()
        out[kind] = save(ds, root / f"{kind}.dcm")
    return out


@pytest.fixture(scope="module")
def judged(files: dict[str, Path]) -> dict:
    search = CopySearch()
    return {k: search.measure(decode_path(p).frames[0]) for k, p in files.items()}


@pytest.mark.parametrize("kind", ["copy", "touch-up"])
def test_a_region_whose_noise_was_copied_from_elsewhere_is_found_at_the_right_shift(judged: dict, kind: str) -> None:
    peak, r = judged[kind]
    clean, _ = judged["clean"]
    assert peak is not None and clean is not None
    assert peak.lead > CopySearch().centre > clean.lead, (peak, clean)
    # the block shift points from one end of the copy to the other (either direction)
    shift = ((peak.dy + SIZE // 2) % SIZE - SIZE // 2, (peak.dx + SIZE // 2) % SIZE - SIZE // 2)
    assert shift in {SHIFT, (-SHIFT[0], -SHIFT[1])}, shift
    # and the map marks the pasted disk, not the rest of the image
    m = copy_map(r, peak.dy, peak.dx)
    inside = _mask() > 0.5
    source = np.roll(inside, (-SHIFT[0], -SHIFT[1]), axis=(0, 1))
    assert np.median(m[inside]) > 0.3
    assert np.median(m[~(inside | source)]) < 0.1


def test_the_untouched_radiograph_is_not_flagged(files: dict[str, Path]) -> None:
    finding = CopySearch().check(decode_path(files["clean"]).frames[0])
    assert finding.layer == "copy" and finding.score is not None and finding.score < 0.5
    assert finding.reasons == ()


def test_the_reason_says_where_the_region_is_and_where_it_repeats(files: dict[str, Path]) -> None:
    frame = decode_path(files["copy"]).frames[0]
    tiles = np.zeros((9, 256, 256), np.float32)
    origins = [(y, x) for y in (0, 256, 512) for x in (0, 256, 512)]
    finding = CopySearch().check(frame, tiles, origins)
    assert finding.score is not None and finding.score > 0.9
    (reason,) = finding.reasons
    assert reason.code == "copy.duplicated_region" and "repeats at" in reason.message
    assert finding.heat is not None and finding.heat.shape == (9, 32, 32)
    tile_of_disk = origins.index((256, 256))   # the disk (300, 420) lies in the centre tile
    assert finding.heat[tile_of_disk].max() > 0.5


def test_a_copy_moved_across_more_than_half_the_image_is_reported_with_its_true_shift() -> None:
    import re

    px = radiograph_crop("RG3_UNCR.dcm", SIZE).pixel_array.astype(np.float64)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    disk = np.clip((1.15 - np.hypot(yy - 620, xx - 600) / RADIUS) / 0.3, 0.0, 1.0)
    far = np.roll(px, (520, 480), axis=(0, 1))  # the disk at (620, 600) holds the pixels of (100, 120)
    frame = np.clip(np.round(px * (1 - disk) + far * disk), 0, 1023).astype(np.float32) / 1023
    (reason,) = CopySearch().check(frame).reasons
    x, y, sx, sy, dx, dy = (int(v) for v in re.search(
        r"at x=(\d+), y=(\d+) repeats at x=(\d+), y=(\d+) \(shift ([+-]\d+), ([+-]\d+) px", reason.message).groups())
    assert (sx - x, sy - y) == (dx, dy), reason.message
    assert abs(dx) > SIZE // 2 and abs(dy) > SIZE // 2, reason.message  # read modulo the image, it came out under half


@pytest.mark.parametrize("frame", [np.random.default_rng(0).random((100, 300), dtype=np.float32),  # too small
                                   np.full((300, 300), 0.4, dtype=np.float32)],                   # no noise at all
                         ids=["too-small", "flat"])
def test_an_image_the_search_cannot_judge_says_so_instead_of_guessing(frame: np.ndarray) -> None:
    finding = CopySearch().check(frame)
    assert finding.score is None
    assert [r.code for r in finding.reasons] == ["copy.not_judged"]


def _scan(*args: str | Path, cwd: Path) -> list[dict]:
    run = subprocess.run([sys.executable, "-m", "edge_agent.cli", "scan", "--jsonl", "--backend", "onnxruntime",
                          *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_scan_with_copy_search_names_the_copied_region_and_flags_it(files: dict[str, Path], tiny_model_dir: Path) -> None:
    folder = files["copy"].parent
    with_search = {Path(v["path"]).name: v for v in _scan("--copy-search", "--model", tiny_model_dir, folder, cwd=folder.parent)}
    without = {Path(v["path"]).name: v for v in _scan("--model", tiny_model_dir, folder, cwd=folder.parent)}
    codes = {name: {r["code"] for r in v["reasons"]} for name, v in with_search.items()}
    assert "copy.duplicated_region" in codes["copy.dcm"] and "copy.duplicated_region" in codes["touch-up.dcm"]
    assert "copy.duplicated_region" not in codes["clean.dcm"]
    assert with_search["copy.dcm"]["verdict"] != "authentic"
    assert all("copy." not in r["code"] for v in without.values() for r in v["reasons"])  # off by default


def test_the_config_key_switches_the_search_on_and_rejects_a_wrong_value(tmp_path: Path) -> None:
    on = tmp_path / "on.yaml"
    on.write_text("forensics:\n  copy_search: true\n")
    assert load_config(on).forensics.copy_search is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("forensics:\n  copy_search: sometimes\n")
    with pytest.raises(ConfigError, match="copy_search"):
        load_config(bad)
