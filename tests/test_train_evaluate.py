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


def test_site_calibration_brings_an_unseen_sites_false_alarms_back_near_the_threshold_rate() -> None:
    from models.train.evaluate import thresholds_from_reals
    from models.train.loso import _calibration

    rng = np.random.default_rng(5)
    reference = rng.normal(0.0, 1.0, 2000)  # the sources the model saw
    thr = thresholds_from_reals(reference)["suspicious_logit"]
    site_val, site_test = rng.normal(1.5, 1.0, 300), rng.normal(1.5, 1.0, 2000)  # a site it never saw sits higher
    fakes = rng.normal(5.5, 1.0, 500)
    c = _calibration(site_val, reference, thr, site_test, fakes, [20, 0], draws=20, seed=1)
    assert c["global"]["fpr"] > 0.15  # the shipped threshold: many false alarms at this site
    assert c["nall"]["fpr_mean"] < 0.03 and c["nall"]["draws"] == 1  # its own percentiles put it back near 1 %
    assert c["n20"]["fpr_mean"] < 0.05 and c["n20"]["draws"] == 20
    assert c["n20"]["offset_median"] == pytest.approx(1.5, abs=0.4)
    assert c["nall"]["tpr_mean"] > 0.9  # the fakes stay far above the raised threshold
    # a site that scores LOWER keeps the shipped threshold (a median shift would lower it: more alarms)
    low_val, low_test = rng.normal(-1.0, 1.0, 300), rng.normal(-1.0, 1.0, 2000)
    c = _calibration(low_val, reference, thr, low_test, fakes, [20], draws=20, seed=1)
    assert c["n20"]["offset_median"] == 0.0 and c["n20"]["fpr_mean"] == pytest.approx(c["global"]["fpr"])
    assert c["n20"]["median_shift"]["fpr_mean"] > 2 * c["global"]["fpr"]
