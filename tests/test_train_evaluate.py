"""The detector report breaks each fake family down by the recipe that made it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `models` is a namespace package run from the repo root
    sys.path.insert(0, str(ROOT))

from models.train.evaluate import _kind_table, sub_kind  # noqa: E402


@pytest.mark.parametrize(("family", "kind", "recipe"), [
    ("tamper", "copy_move+touchup+jpeg85", "copy_move+touchup"),
    ("tamper", "splice+noise0.004", "splice"),
    ("processing", "upsample2.3-bicubic+resize0.95", "upsample"),
    ("processing", "smooth1.5+awgn0.010", "smooth"),
    ("grain", "uniform_grain0.020c0.5+jpeg80", "uniform_grain"),
    ("grain", "oversmooth1.2", "oversmooth"),
    ("gan", "upscaled256+jpeg80", "upscaled256"),
    ("vae", "native64", "native64"),
])
def test_a_fake_is_filed_under_its_recipe_without_its_random_parameters(family: str, kind: str, recipe: str) -> None:
    assert sub_kind({"family": family, "kind": kind, "label": "1"}) == recipe


def test_each_recipe_is_measured_against_every_real_image() -> None:
    rows = ([{"family": "real", "kind": "variant", "label": "0"}] * 4
            + [{"family": "tamper", "kind": "splice", "label": "1"}] * 2
            + [{"family": "tamper", "kind": "splice+touchup", "label": "1"}] * 2)
    scores = np.array([0.0, 0.1, 0.2, 0.3, 5.0, 6.0, 0.05, 0.15])
    table = _kind_table(rows, scores, {"suspicious_logit": 1.0, "synthetic_logit": 4.0})
    assert set(table) == {"tamper:splice", "tamper:splice+touchup"}
    assert table["tamper:splice"]["auc"] == 1.0 and table["tamper:splice"]["n_real"] == 4
    assert table["tamper:splice+touchup"]["auc"] == pytest.approx(0.375)
    assert table["tamper:splice+touchup"]["tpr_at_1pct_fpr_valthr"] == 0.0
