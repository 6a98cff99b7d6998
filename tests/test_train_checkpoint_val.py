"""`python -m models.train.checkpoint_val`: a candidate's checkpoint scored on the validation split
without exporting it (a tiny work folder and an untrained network; no training)."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from models.train.detector import NPRDetector  # noqa: E402

FIELDS = ["id", "path", "split", "label", "family", "kind", "source", "source_path", "mask", "container"]


def _work(tmp: Path) -> Path:
    rng = np.random.default_rng(3)
    rows = []

    def add(i: int, label: int, family: str, split: str = "val", mask: bool = False) -> None:
        img = (np.clip(0.5 + 0.1 * rng.standard_normal((300, 300)), 0, 1) * 255).astype(np.uint8)
        path = tmp / f"{i}.png"
        Image.fromarray(img).save(path)
        mpath = ""
        if mask:
            m = np.zeros((300, 300), np.uint8)
            m[100:160, 120:200] = 255
            mpath = str(tmp / f"{i}_mask.png")
            Image.fromarray(m).save(mpath)
        rows.append({"id": f"img{i}", "path": str(path), "split": split, "label": str(label), "family": family,
                     "kind": family, "source": "test", "source_path": "", "mask": mpath, "container": "png"})

    for i in range(4):
        add(i, 0, "real")
    add(4, 1, "gan")
    add(5, 1, "tamper", mask=True)
    add(6, 1, "tamper", mask=True)
    add(7, 1, "tamper", split="test", mask=True)  # not validation: must not count
    with open(tmp / "images.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    return tmp


def test_a_candidate_checkpoint_gets_its_validation_figures_and_pointing_game(tmp_path: Path) -> None:
    work = _work(tmp_path)
    torch.manual_seed(0)
    width = [8, 16, 24, 32]
    ck = tmp_path / "detector-x-last.pt"
    torch.save({"model": NPRDetector(tuple(width)).eval().state_dict(), "width": width}, ck)
    same = tmp_path / "detector-y-last.pt"
    shutil.copy(ck, same)
    run = subprocess.run([sys.executable, "-m", "models.train.checkpoint_val", "--work", str(work), str(ck), str(same)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["detector-x-last.pt", "detector-y-last.pt"]
    assert lines[0].split(":", 1)[1] == lines[1].split(":", 1)[1]  # the same weights, the same figures
    figures = lines[0]
    assert re.search(r"AUC \d\.\d{4}; TPR@1% \d+\.\d %; real FPR \d+\.\d %", figures)
    assert re.search(r"gan \d\.\d{3} / \d+ %; tamper \d\.\d{3} / \d+ %", figures)
    assert re.search(r"pointing [012]/2$", figures)  # the two validation tamper images, the test image left out


def test_a_shipped_model_stands_beside_checkpoints_and_jpeg_shows_what_compression_does(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    work = _work(tmp_path)
    run = subprocess.run([sys.executable, "-m", "models.train.checkpoint_val", "--work", str(work), "--jpeg", "60",
                          "--jpeg", "95", str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    assert line.startswith(f"{tiny_model_dir.name}: AUC ")
    q60 = re.search(r"JPEG q60: real flagged (\d+\.\d) %, TPR (\d+\.\d) %, AUC (\d\.\d{4})", line)
    q95 = re.search(r"JPEG q95: real flagged (\d+\.\d) %, TPR (\d+\.\d) %, AUC (\d\.\d{4})", line)
    assert q60 and q95
    # the tiny |Laplacian| model reads JPEG's block edges as texture: harder compression, more flagged reals
    assert float(q60.group(1)) >= float(q95.group(1))


def test_the_test_split_is_reported_at_the_validation_thresholds_only_when_asked(tmp_path: Path, tiny_model_dir: Path) -> None:
    work = _work(tmp_path)
    run = subprocess.run([sys.executable, "-m", "models.train.checkpoint_val", "--work", str(work), "--split", "test",
                          "--jpeg", "75", str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip()
    # the one test image is a tampered one: no test reals, so no AUC; its pointing game counts alone
    assert re.search(r"pointing [01]/1; JPEG q75", line), line


def test_a_shipped_model_is_judged_with_its_own_aggregate_unless_told_otherwise(tmp_path: Path, tiny_model_dir: Path) -> None:
    work = _work(tmp_path)

    def figures(*extra: str) -> str:
        run = subprocess.run([sys.executable, "-m", "models.train.checkpoint_val", "--work", str(work), *extra,
                              str(tiny_model_dir)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip()

    own = figures()  # the tiny model ships with the `max` aggregate
    assert own == figures("--aggregate", "max")
    assert own != figures("--aggregate", "mean")
