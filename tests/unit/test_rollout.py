"""Collection on a real gymnasium environment: truncated episodes keep their own final observation."""

from __future__ import annotations

import numpy as np

from pipeline import config, envs
from pipeline.ppo import PPOLearner
from pipeline.rollout import Collector


def make(max_episode_steps=None, num_envs=3):
    cfg = config.from_dict({"env": {"num_envs": num_envs, "max_episode_steps": max_episode_steps},
                            "model": {"actor_layers": [8], "value_layers": [8]},
                            "train": {"rollout_steps": 12, "num_minibatches": 2}})
    env = envs.make_vector_env(cfg.env)
    return cfg, env, PPOLearner(cfg, envs.spaces_of(env))


def test_truncation_stores_value_of_final_observation_not_next_episode():
    cfg, env, learner = make(max_episode_steps=5)
    collector = Collector(env, learner, 1.0, envs.episode_seeds(0, 3))
    rollout = collector.collect(12)
    truncated = rollout.truncated & ~rollout.terminated
    assert truncated.sum() >= 3, "the 5-step time limit must truncate episodes in 12 steps"
    assert rollout.episode_lengths and max(rollout.episode_lengths) <= 5
    # Replay the same seeds to recover the real final observations independently.
    replay = envs.make_vector_env(cfg.env)
    obs, _ = replay.reset(seed=envs.episode_seeds(0, 3))
    for t in range(12):
        np.testing.assert_allclose(obs, rollout.observations[t], rtol=1e-6)
        obs, _, _, trunc, info = replay.step(rollout.actions[t])
        for i in np.flatnonzero(trunc & ~rollout.terminated[t]):
            final = info["final_obs"][i][None].astype(np.float32)
            assert not np.allclose(final, obs[i]), "the next observation already belongs to a new episode"
            np.testing.assert_allclose(rollout.final_values[t, i], learner.value(final).numpy()[0], rtol=1e-5)
            assert abs(rollout.final_values[t, i] - learner.value(obs[i][None]).numpy()[0]) > 1e-7


def test_seeded_collection_is_repeatable():
    results = []
    for _ in range(2):
        _, env, learner = make()
        rollout = Collector(env, learner, 1.0, envs.episode_seeds(7, 3)).collect(12)
        results.append((rollout.actions, rollout.observations, rollout.log_probs))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
