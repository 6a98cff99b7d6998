"""`python -m models.train.tamper_evidence`: what pixel evidence each tampered image still carries,
measured against its untouched twin (small images made here; no training)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from models.train import tamper_evidence as te  # noqa: E402
from models.train.config import load_config  # noqa: E402
from models.train.fakes import run_fakes  # noqa: E402
from models.train.imaging import load_grey  # noqa: E402
from models.train.splits import INDEX_FIELDS  # noqa: E402
from models.train.tamper import tamper  # noqa: E402


def _radiograph(seed: int, size: int = 320) -> np.ndarray:
    """Smooth anatomy-like structure plus signal-dependent noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.standard_normal((size, size)), 24)
    base = 0.5 + 0.25 * base / (np.abs(base).max() + 1e-9)
    noise = rng.standard_normal((size, size)) * 0.02 * np.sqrt(base)
    return np.clip(base + noise, 0, 1).astype(np.float32)


def test_a_copied_region_repeats_elsewhere_and_its_twin_does_not() -> None:
    img = _radiograph(1)
    out, mask, kind = tamper(img, _radiograph(2), np.random.default_rng(5), kind="copy_move", touch_up=False)
    ev = te.edit_evidence(out, img, mask)
    assert kind == "copy_move"
    assert ev["dup"] > 0.9, ev
    assert ev["dup_twin"] < te.DUP_CORR, ev


def test_an_added_smooth_nodule_leaves_no_high_frequency_trace() -> None:
    img = _radiograph(3)
    out, mask, _ = tamper(img, img, np.random.default_rng(6), kind="nodule_add", touch_up=False)
    ev = te.edit_evidence(out, img, mask)
    assert np.abs(out - img)[mask > 0].mean() > 0.01  # the lesion is there to see ...
    assert ev["hf"] < te.HF_NONE, ev                   # ... but not in the residual
    assert ev["dup"] < te.DUP_CORR


def test_a_blurred_inpainting_stands_out_by_its_noise_level() -> None:
    img = _radiograph(4)
    out, mask, _ = tamper(img, img, np.random.default_rng(7), kind="inpaint_remove", touch_up=False)
    ev = te.edit_evidence(out, img, mask)
    assert ev["level_p"] < te.LEVEL_P, ev
    assert ev["level_p_twin"] > te.LEVEL_P, ev


def _tiny_work(tmp: Path) -> tuple[Path, Path]:
    rows = []
    for i in range(7):
        split = ("val", "val", "val", "test", "test", "test", "train")[i]
        path = tmp / f"real{i}.png"
        Image.fromarray((_radiograph(10 + i, 200) * 255).round().astype(np.uint8)).save(path)
        rows.append({"path": str(path), "split": split, "source": "hannover-png", "patient_id": f"p{i}",
                     "label": "real", "licence": "test", "origin": "made by the test"})
    work = tmp / "work"
    work.mkdir()
    with open(work / "index.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, INDEX_FIELDS)
        w.writeheader()
        w.writerows(rows)
    cfg = yaml.safe_load((ROOT / "models" / "train" / "config.yaml").read_text())
    cfg["fakes"]["per_family"] = {"train": 0, "val": 3, "test": 2}
    cfg["generators"]["samples_per_split"] = {"train": 0, "val": 0, "test": 0}
    cfg["augment"]["p_noise"] = cfg["augment"]["p_jpeg"] = 0.5
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    return work, cfg_path


def test_the_replay_rebuilds_exactly_the_images_the_fakes_stage_wrote(tmp_path: Path) -> None:
    work, cfg_path = _tiny_work(tmp_path)
    cfg = load_config(cfg_path)
    run_fakes(work, cfg, lambda m: None, families=("tamper",), workers=1)
    written = {r["id"]: r for r in csv.DictReader(open(work / "images.csv")) if r["family"] == "tamper"}
    replayed = list(te.replay(work, cfg, "val")) + list(te.replay(work, cfg, "test"))
    assert len(replayed) == len(written) == 5
    for row, tampered, twin, mask in replayed:
        w = written[row["id"]]
        np.testing.assert_array_equal(tampered, load_grey(w["path"]))
        np.testing.assert_array_equal(mask * 255, np.asarray(Image.open(w["mask"])))
        assert w["kind"] == "+".join([row["kind"]] + ([row["ops"]] if row["ops"] else []))
        assert tampered.shape == twin.shape
        assert np.abs(tampered - twin)[mask > 0].mean() > np.abs(tampered - twin)[mask == 0].mean()


def test_the_command_writes_its_tables_and_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work, cfg_path = _tiny_work(tmp_path)
    out = tmp_path / "evidence.md"
    assert te.main(["--work", str(work), "--config", str(cfg_path), "--split", "val", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| kind | n | median hf |" in text and "| source |" in text
    assert "| all | 3 |" in text
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 3 and {"hf", "level_p", "dup", "dup_twin", "kind", "source"} <= set(rows[0])


def test_a_work_folder_without_an_index_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert te.main(["--work", str(tmp_path)]) == 2
    assert "index.csv" in capsys.readouterr().err


def test_with_a_model_each_image_says_what_the_model_made_of_the_edit(tmp_path: Path, tiny_model_dir: Path) -> None:
    work, cfg_path = _tiny_work(tmp_path)
    out = tmp_path / "evidence.md"
    assert te.main(["--work", str(work), "--config", str(cfg_path), "--split", "test", "--model", str(tiny_model_dir),
                    "--out", str(out)]) == 0
    assert "model: above its twin | model: pointing |" in out.read_text()
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 2
    for r in rows:
        assert r["pointing"] in (0.0, 1.0)
        assert np.isfinite(r["logit"]) and np.isfinite(r["logit_twin"])
