"""Blessing, as TFX's Evaluator does it: a candidate export is published only if it scores at least the version
now served, minus a tolerance (and above an optional floor), both scored now on the same work by the same code:
the exported SavedModels themselves, as a server would answer.

How a task scores a SavedModel is its own (`score` in pipeline/gym/stages/export.py, pipeline/lm/stages/export.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

MARKERS = ("BLESSED", "NOT_BLESSED")


@dataclasses.dataclass(frozen=True)
class Decision:
    blessed: bool
    candidate: float
    baseline: float | None  # None: nothing served yet
    reason: str

    def metrics(self) -> dict:
        return {
            "bless.blessed": self.blessed,
            "bless.candidate": self.candidate,
            "bless.baseline": self.baseline,
            "bless.reason": self.reason,
        }


def decide(candidate: float, baseline: float | None, tolerance: float | None, floor: float | None) -> Decision:
    if not np.isfinite(candidate):
        return Decision(False, candidate, baseline, f"the candidate's score is {candidate}")
    if floor is not None and candidate < floor:
        return Decision(False, candidate, baseline, f"{candidate:.4g} is below the floor {floor:.4g}")
    if baseline is None:
        return Decision(
            True,
            candidate,
            None,
            "nothing is served yet" + (f"; {candidate:.4g} >= the floor {floor:.4g}" if floor is not None else ""),
        )
    if tolerance is not None and candidate < baseline - tolerance:
        return Decision(
            False,
            candidate,
            baseline,
            f"{candidate:.4g} < the served version's {baseline:.4g} - tolerance {tolerance:.4g}",
        )
    return Decision(
        True,
        candidate,
        baseline,
        f"{candidate:.4g} >= the served version's {baseline:.4g}"
        + (f" - tolerance {tolerance:.4g}" if tolerance is not None else " (no tolerance set: floor only)"),
    )


def write_marker(folder: Path, decision: Decision) -> Path:
    """BLESSED or NOT_BLESSED beside the candidate, holding the decision as JSON (the other marker removed)."""
    import json

    for name in MARKERS:
        (folder / name).unlink(missing_ok=True)
    path = folder / MARKERS[0 if decision.blessed else 1]
    path.write_text(json.dumps(dataclasses.asdict(decision), indent=2, sort_keys=True) + "\n")
    return path
