"""Evaluate stage: greedy episodes on environments seeded apart from training."""

from __future__ import annotations

import numpy as np

from pipeline.core import summaries
from pipeline.core.rundir import RunDir
from pipeline.gym import envs, video
from pipeline.gym.config import GymConfig
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import GreedyEpisodes


def greedy_episodes(cfg: GymConfig, runner: GreedyEpisodes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of `runner.num_envs` greedy episodes, run side by side."""
    env = envs.make_vector_env(cfg.env, num_envs=runner.num_envs, learning=False)
    obs, _ = env.reset(seed=envs.episode_seeds(seed, runner.num_envs))
    try:
        return runner.run(env, obs)
    finally:
        env.close()


def run(cfg: GymConfig, run_dir: RunDir, learner: PPOLearner) -> dict:
    returns, lengths = greedy_episodes(cfg, GreedyEpisodes(learner.greedy, cfg.evaluate.episodes), cfg.evaluate.seed)
    metrics = {
        "eval.mean_return": float(returns.mean()),
        "eval.std_return": float(returns.std()),
        "eval.min_return": float(returns.min()),
        "eval.max_return": float(returns.max()),
        "eval.mean_length": float(lengths.mean()),
        "eval.episodes": int(len(returns)),
    }
    step = int(learner.counters.env_steps)
    with summaries.stage_writer(run_dir, "evaluate"):
        summaries.write(
            {k.replace("eval.", "eval/"): v for k, v in metrics.items()}, {"eval/returns": returns}, step=step
        )
        frames = video.record(cfg, learner.greedy, learner.spaces) if cfg.evaluate.video_frames else None
        if frames:
            path = video.write(frames, run_dir.videos, f"eval_{step}", step, cfg.evaluate.video_fps)
            metrics["eval.video"] = str(path)
    return metrics
