"""Export stage (gym): the policy's servable, observations in, greedy action, value and distribution out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.core import publish
from pipeline.core.rundir import RunDir
from pipeline.gym import envs
from pipeline.gym.config import GymConfig


def model_name(cfg: GymConfig) -> str:
    return cfg.export.model_name or re.sub(r"[^a-z0-9_]+", "_", cfg.env.id.lower()).strip("_")


def run(cfg: GymConfig, run_dir: RunDir, learner, checkpoint: str) -> dict:
    from export.gym_servable import PolicyServingModule

    def build():
        return PolicyServingModule(
            learner.agent.policy,
            learner.agent.collect_policy,
            learner.spaces.observation_shape,
            learner.spaces.discrete,
        ).save

    info = {"env_steps": int(learner.counters.env_steps), "env_id": cfg.env.id}
    return publish.publish(
        cfg.export, run_dir, model_name(cfg), checkpoint, build, info, score=lambda version_dir: score(version_dir, cfg)
    )


def score(version_dir: Path, cfg: GymConfig) -> float:
    """Blessing's score: the mean greedy return of the SavedModel over the evaluation episodes (one per
    environment, the evaluation stage's seeds)."""
    from export.policies import load_policy

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
