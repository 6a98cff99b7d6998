"""`python -m models.train.data_check`: a rebuilt work folder is checked against the data hashes a
shipped model's manifest recorded (tiny work folder, no training)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from edge_agent.manifest import sha256_file  # noqa: E402
from models.train.data_check import images_content_sha256, main  # noqa: E402

FIELDS = ["id", "path", "split", "label", "family", "kind", "source", "source_path", "mask", "container"]


def _work(tmp: Path) -> Path:
    tmp.mkdir()
    rng = np.random.default_rng(4)
    rows = []
    for i in range(3):
        path = tmp / f"{i}.png"
        Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(path)
        mask = ""
        if i == 2:
            mask = str(tmp / "2_mask.png")
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(mask)
        rows.append({"id": f"img{i}", "path": str(path), "split": "train", "label": str(i % 2), "family": "real",
                     "kind": "original", "source": "t", "source_path": "", "mask": mask, "container": "png"})
    with open(tmp / "images.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        w.writerows(rows)
    (tmp / "index.csv").write_text("path,split\n")
    return tmp


def test_a_rebuilt_folder_with_the_same_images_matches_and_one_changed_byte_does_not(tmp_path: Path, capsys) -> None:
    work = _work(tmp_path / "work")
    model = tmp_path / "model"
    model.mkdir()
    recorded = {"manifest_sha256": sha256_file(work / "index.csv"), "images_csv_sha256": sha256_file(work / "images.csv"),
                "images_content_sha256": images_content_sha256(work)}
    (model / "manifest.json").write_text(json.dumps({"training_data": recorded}))
    assert main(["--work", str(work), "--model", str(model)]) == 0
    assert "images_content_sha256: match" in capsys.readouterr().out

    mask = work / "2_mask.png"  # a tamper mask redrawn: the lists stay the same, the content does not
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(mask)
    assert main(["--work", str(work), "--model", str(model)]) == 1
    out = capsys.readouterr().out
    assert "images_csv_sha256: match" in out and "images_content_sha256: differs" in out


def test_a_manifest_from_before_content_hashes_says_not_recorded_and_prints_the_folders_own(tmp_path: Path, capsys) -> None:
    work = _work(tmp_path / "work")
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"training_data": {"images_csv_sha256": sha256_file(work / "images.csv")}}))
    assert main(["--work", str(work), "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "images_content_sha256: not recorded" in out and images_content_sha256(work) in out


def test_a_listed_file_that_is_gone_is_reported_not_a_traceback(tmp_path: Path, capsys) -> None:
    work = _work(tmp_path / "work")
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"training_data": {"images_content_sha256": images_content_sha256(work)}}))
    (work / "1.png").unlink()
    assert main(["--work", str(work), "--model", str(model)]) == 1
    out = capsys.readouterr().out
    assert "images_content_sha256: differs" in out and "1.png" in out and "img1" in out
