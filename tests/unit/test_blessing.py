"""Blessing's decision, by hand: publish a candidate only at >= the served score minus the tolerance and >= the
floor; with nothing served, the floor alone decides."""

from __future__ import annotations

import json
import math

import pytest

from pipeline.core.blessing import decide, write_marker


@pytest.mark.parametrize(
    "candidate, baseline, tolerance, floor, blessed, reason",
    [
        (100.0, None, 5.0, None, True, "nothing is served yet"),
        (100.0, None, 5.0, 150.0, False, "below the floor 150"),
        (96.0, 100.0, 5.0, None, True, ">= the served version's 100 - tolerance 5"),
        (95.0, 100.0, 5.0, None, True, ">= the served version's 100"),  # exactly at the tolerance
        (94.9, 100.0, 5.0, None, False, "94.9 < the served version's 100 - tolerance 5"),
        (120.0, 100.0, 0.0, 130.0, False, "below the floor 130"),  # better than served, under the floor
        (20.0, 500.0, None, 10.0, True, "floor only"),  # no tolerance: the floor alone
        (math.nan, 100.0, 5.0, None, False, "score is nan"),
    ],
)
def test_decide(candidate, baseline, tolerance, floor, blessed, reason):
    decision = decide(candidate, baseline, tolerance, floor)
    assert decision.blessed is blessed and reason in decision.reason, decision


def test_the_marker_beside_the_candidate_holds_the_decision_and_replaces_the_other(tmp_path):
    write_marker(tmp_path, decide(1.0, 2.0, 0.5, None))
    assert json.loads((tmp_path / "NOT_BLESSED").read_text())["baseline"] == 2.0
    write_marker(tmp_path, decide(2.0, 2.0, 0.5, None))
    assert (tmp_path / "BLESSED").exists() and not (tmp_path / "NOT_BLESSED").exists()
