"""A small edit in a large image: the model's strongest CAM cell carries the verdict
(manifest aggregate ``mean_or_local``) where the mean over tiles would dilute it away."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_model import build_tiny_model

from edge_agent.detect import open_detector
from edge_agent.errors import ModelError
from edge_agent.pipeline import Pipeline


def _smooth_image_with_a_noisy_patch(y: int, x: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:1024, 0:1024].astype(np.float32)
    img = 0.3 + 0.4 * (yy + xx) / 2048
    img[y : y + size, x : x + size] += np.random.default_rng(0).uniform(-0.1, 0.1, (size, size)).astype(np.float32)
    return img


def _detector(tmp_path: Path, aggregate: str, local_offset: float | None = None):
    d = build_tiny_model(tmp_path / aggregate, scale=40.0, max_tiles=256, aggregate=aggregate, local_offset=local_offset)
    return open_detector(d, backend="onnxruntime", threads=1)


def test_a_lesion_sized_edit_is_flagged_and_located_where_the_tile_mean_misses_it(tmp_path: Path) -> None:
    img = _smooth_image_with_a_noisy_patch(600, 300)
    by_mean = _detector(tmp_path, "mean").score(img)
    by_local = _detector(tmp_path, "mean_or_local", local_offset=-2.0).score(img)
    assert by_mean.score < 0.5  # 1 region in 256 tiles: the mean calls it authentic
    assert by_local.score >= 0.9
    assert by_local.logit == pytest.approx(by_local.local_logit - 2.0)
    y, x = by_local.local_peak
    assert 600 <= y < 632 and 300 <= x < 332


def test_the_verdict_reason_points_at_the_edited_region(tmp_path: Path) -> None:
    img = _smooth_image_with_a_noisy_patch(96, 800)
    png = tmp_path / "edited.png"
    Image.fromarray(np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)).save(png)
    (verdict,) = Pipeline(_detector(tmp_path, "mean_or_local", local_offset=-2.0)).process(png)
    assert verdict.verdict == "synthetic"
    model = next(r for r in verdict.reasons if r.code == "model.above_threshold")
    y, x = (int(v) for v in re.search(r"around row (\d+), column (\d+)", model.message).groups())
    assert 96 <= y < 128 and 800 <= x < 832


def test_a_manifest_with_a_non_finite_local_offset_is_refused(tmp_path: Path) -> None:
    d = build_tiny_model(tmp_path / "m", aggregate="mean_or_local", local_offset=0.0)
    man = json.loads((d / "manifest.json").read_text())
    man["tiling"]["local_offset"] = "nan"
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ModelError, match="local_offset"):
        open_detector(d, backend="onnxruntime", threads=1)
