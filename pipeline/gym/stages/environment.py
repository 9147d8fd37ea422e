"""Environment stage: checks the environment id and spaces, and describes them in TensorBoard."""

from __future__ import annotations

import numpy as np

from pipeline.core import summaries
from pipeline.core.rundir import RunDir
from pipeline.gym import envs
from pipeline.gym.config import GymConfig

SAMPLE_STEPS = 200  # random-action steps per environment for the observation statistics


def run(cfg: GymConfig, run_dir: RunDir) -> envs.Spaces:
    env = envs.make_vector_env(cfg.env)
    spaces = envs.spaces_of(env)
    obs, _ = env.reset(seed=envs.episode_seeds(cfg.env.seed, cfg.env.num_envs, salt=-1 % 2**32))
    env.action_space.seed(cfg.env.seed)
    samples, rewards = [obs], []
    for _ in range(SAMPLE_STEPS):
        obs, reward, *_ = env.step(env.action_space.sample())
        samples.append(obs)
        rewards.append(reward)
    samples, rewards = np.concatenate(samples), np.concatenate(rewards)
    with summaries.stage_writer(run_dir, "environment"):
        summaries.text(
            "environment/spaces",
            summaries.markdown_table(
                {
                    "id": cfg.env.id,
                    "num_envs": cfg.env.num_envs,
                    "observation_space": str(env.single_observation_space),
                    "action_space": str(env.single_action_space),
                    "max_episode_steps": env.spec.max_episode_steps if env.spec else None,
                }
            ),
        )
        summaries.text(
            "environment/random_policy_statistics",
            summaries.markdown_table(
                {
                    "observation mean": np.array2string(samples.mean(0), precision=3),
                    "observation std": np.array2string(samples.std(0), precision=3),
                    "reward per step (mean, std)": f"{rewards.mean():.3f}, {rewards.std():.3f}",
                }
            ),
        )
    env.close()
    return spaces
