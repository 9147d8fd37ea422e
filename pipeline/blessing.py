"""Blessing, as TFX's Evaluator does it: a candidate export is published only if it scores at least the version
now served, minus a tolerance (and above an optional floor), both scored now on the same work by the same code:
the exported SavedModels themselves, as a server would answer.

Gym: the greedy mean return over evaluate.episodes episodes on the evaluation seeds. LM: the mean of
reward.function over the held-out evaluation prompts, sampled with the run's sampling settings and one fixed seed.
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
        return {"bless.blessed": self.blessed, "bless.candidate": self.candidate, "bless.baseline": self.baseline,
                "bless.reason": self.reason}


def decide(candidate: float, baseline: float | None, tolerance: float | None, floor: float | None) -> Decision:
    if not np.isfinite(candidate):
        return Decision(False, candidate, baseline, f"the candidate's score is {candidate}")
    if floor is not None and candidate < floor:
        return Decision(False, candidate, baseline, f"{candidate:.4g} is below the floor {floor:.4g}")
    if baseline is None:
        return Decision(True, candidate, None, "nothing is served yet" + (f"; {candidate:.4g} >= the floor "
                                                                           f"{floor:.4g}" if floor is not None else ""))
    if tolerance is not None and candidate < baseline - tolerance:
        return Decision(False, candidate, baseline, f"{candidate:.4g} < the served version's {baseline:.4g} - "
                                                    f"tolerance {tolerance:.4g}")
    return Decision(True, candidate, baseline, f"{candidate:.4g} >= the served version's {baseline:.4g}"
                    + (f" - tolerance {tolerance:.4g}" if tolerance is not None else " (no tolerance set: floor only)"))


def write_marker(folder: Path, decision: Decision) -> Path:
    """BLESSED or NOT_BLESSED beside the candidate, holding the decision as JSON (the other marker removed)."""
    import json

    for name in MARKERS:
        (folder / name).unlink(missing_ok=True)
    path = folder / MARKERS[0 if decision.blessed else 1]
    path.write_text(json.dumps(dataclasses.asdict(decision), indent=2, sort_keys=True) + "\n")
    return path


def gym_score(version_dir: Path, cfg) -> float:
    """Mean greedy return of the SavedModel over the evaluation episodes (one per environment, the evaluation
    stage's seeds)."""
    from pipeline import envs
    from pipeline.api import load_policy

    policy = load_policy(version_dir)
    count = cfg.evaluate.episodes
    env = envs.make_vector_env(cfg.env, num_envs=count)
    try:
        obs, _ = env.reset(seed=envs.episode_seeds(cfg.evaluate.seed, count))
        returns, running = np.zeros(count), np.ones(count, bool)
        while running.any():
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            returns += reward * running
            running &= ~(terminated | truncated)
        return float(returns.mean())
    finally:
        env.close()


def lm_score(version_dir: Path, prompts: list[str], reward_fn, seed: int) -> float:
    """Mean reward of the SavedModel's completions of the prompts, sampled with its own settings and `seed`."""
    from pipeline.api import load_policy

    completions = load_policy(version_dir)(prompts, seed=seed)
    return float(np.mean(np.asarray(reward_fn(prompts, completions), np.float64)))
