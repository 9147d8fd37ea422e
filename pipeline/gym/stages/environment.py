"""Environment stage: checks the environment id and spaces, and describes them in TensorBoard."""

from __future__ import annotations

import numpy as np

from pipeline.core import summaries
from pipeline.core.rundir import RunDir
from pipeline.gym import envs
from pipeline.gym.config import GymConfig
from pipeline.gym.spaces import BINARY, VECTOR, Spaces, describe, observation_parts, random_actions, spaces_of

SAMPLE_STEPS = 200  # random-action steps per environment for the observation statistics


def run(cfg: GymConfig, run_dir: RunDir) -> Spaces:
    env = envs.make_vector_env(cfg.env)
    spaces = spaces_of(env, cfg.model.image_channels, cfg.env.id)
    obs, _ = env.reset(seed=envs.episode_seeds(cfg.env.seed, cfg.env.num_envs, salt=-1 % 2**32))
    env.action_space.seed(cfg.env.seed)
    env.single_action_space.seed(cfg.env.seed)
    samples, rewards = [observation_parts(spaces, obs)], []
    for _ in range(SAMPLE_STEPS):
        obs, reward, *_ = env.step(random_actions(spaces, env, samples[-1]))
        samples.append(observation_parts(spaces, obs))
        rewards.append(reward)
    rewards = np.concatenate(rewards)
    statistics = {}
    for part in spaces.parts:
        values = np.concatenate([sample[part.name] for sample in samples]).astype(np.float32)
        name = describe(part.name)
        if part.kind in (VECTOR, BINARY):
            statistics[f"{name} mean"] = np.array2string(values.mean(0), precision=3)
            statistics[f"{name} std"] = np.array2string(values.std(0), precision=3)
        else:
            statistics[f"{name} ({part.kind} {part.shape}, {part.dtype}) mean, std"] = (
                f"{values.mean():.3f}, {values.std():.3f}"
            )
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
                {**statistics, "reward per step (mean, std)": f"{rewards.mean():.3f}, {rewards.std():.3f}"}
            ),
        )
    env.close()
    return spaces
