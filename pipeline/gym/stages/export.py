"""Export stage (gym): the policy's servable, observations in, greedy action, value and distribution out."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.core import publish
from pipeline.core.guards import NonFiniteError
from pipeline.core.rundir import RunDir
from pipeline.gym.config import GymConfig
from pipeline.gym.rollout import GreedyEpisodes
from pipeline.gym.stages import evaluate


def model_name(cfg: GymConfig) -> str:
    return cfg.export.model_name or re.sub(r"[^a-z0-9_]+", "_", cfg.env.id.lower()).strip("_")


def run(cfg: GymConfig, run_dir: RunDir, learner, checkpoint: str) -> dict:
    from export.gym_servable import PolicyServingModule

    def build():
        return PolicyServingModule(
            learner.agent.policy,
            learner.agent.collect_policy,
            learner.observation_signature,
            learner.spaces.discrete,
        ).save

    info = {"env_steps": int(learner.counters.env_steps), "env_id": cfg.env.id}
    return publish.publish(
        cfg.export, run_dir, model_name(cfg), checkpoint, build, info, score=lambda version_dir: score(version_dir, cfg)
    )


def score(version_dir: Path, cfg: GymConfig) -> float:
    """Blessing's score: the mean greedy return of the SavedModel over the evaluation episodes, run as the
    evaluate stage runs the learner's (its environments, seeds and episode runner)."""
    from export.policies import load_policy

    policy = load_policy(version_dir)
    runner = GreedyEpisodes(
        lambda observations: policy.signature(**policy.named(observations))["action"], cfg.evaluate.episodes
    )
    try:
        returns, _ = evaluate.greedy_episodes(cfg, runner, cfg.evaluate.seed)
    except NonFiniteError:  # a model that drives the environment to NaN scores NaN: never blessed, never fatal
        return float("nan")
    return float(returns.mean())
