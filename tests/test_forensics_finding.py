"""The value every forensic layer hands to fusion (edge_agent.forensics.finding)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.forensics import LayerFinding
from edge_agent.verdict import Reason


def test_a_finding_carries_score_reasons_and_a_read_only_tile_heat_map():
    heat = np.zeros((4, 8, 8), np.float32)
    f = LayerFinding("fingerprint", 0.25, (Reason("fingerprint.absent", "x"),), heat)
    assert f.flagged_codes == ("fingerprint.absent",)
    with pytest.raises(ValueError):
        f.heat[0, 0, 0] = 1.0  # frozen all the way down: fusion cannot alter a layer's map


@pytest.mark.parametrize("kwargs", [
    {"layer": "model", "score": 0.1},
    {"layer": "physics", "score": 1.5},
    {"layer": "physics", "score": float("nan")},
    {"layer": "physics", "score": 0.1, "heat": np.full((1, 2, 2), 2.0)},
    {"layer": "physics", "score": 0.1, "heat": np.zeros((2, 2))},
])
def test_malformed_findings_are_refused_at_construction(kwargs):
    with pytest.raises(ValueError):
        LayerFinding(reasons=(), **kwargs)


def test_a_layer_that_cannot_judge_says_so_with_no_score():
    f = LayerFinding("metadata", None, (Reason("physics.no_profile", "no profile for MR"),))
    assert f.score is None
