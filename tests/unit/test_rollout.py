"""Collection on a real gymnasium environment: truncated episodes keep their own final observation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import config
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector, GreedyEpisodes
from pipeline.gym.spaces import spaces_of


def make(max_episode_steps=None, num_envs=3):
    cfg = config.from_dict(
        {
            "env": {"num_envs": num_envs, "max_episode_steps": max_episode_steps},
            "model": {"actor_layers": [8], "value_layers": [8]},
            "train": {"rollout_steps": 12, "num_minibatches": 2},
        }
    )
    env = envs.make_vector_env(cfg.env)
    return cfg, env, PPOLearner(cfg, spaces_of(env))


def test_truncation_bootstraps_from_the_final_observation_not_the_next_episode():
    cfg, env, learner = make(max_episode_steps=5)
    rollout = Collector(env, learner, 0.5, envs.episode_seeds(0, 3)).collect(12)
    truncated = rollout.truncated & ~rollout.terminated
    assert truncated.sum() >= 3, "the 5-step time limit must truncate episodes in 12 steps"
    assert rollout.episode_lengths and max(rollout.episode_lengths) <= 5
    # Replay the same seeds to recover the real final observations independently.
    replay = envs.make_vector_env(cfg.env)
    obs, _ = replay.reset(seed=envs.episode_seeds(0, 3))
    for t in range(12):
        np.testing.assert_allclose(obs, rollout.observations[t], rtol=1e-6)
        obs, reward, term, trunc, info = replay.step(rollout.actions[t])
        np.testing.assert_array_equal(rollout.rewards[t], (reward * 0.5).astype(np.float32))  # reward_scale
        np.testing.assert_array_equal(rollout.terminated[t], term)
        np.testing.assert_array_equal(rollout.truncated[t], trunc)
        for i in range(3):
            if truncated[t, i]:
                np.testing.assert_allclose(rollout.final_observations[t, i], info["final_obs"][i], rtol=1e-6)
                assert not np.allclose(info["final_obs"][i], obs[i]), "next observation is a new episode's"
            else:
                assert not rollout.final_observations[t, i].any()
    np.testing.assert_allclose(rollout.next_observations, obs, rtol=1e-6)

    # The learner's advantage at a truncated step is exactly r + gamma V(final obs) - V(s): chain cut there.
    def v(x):
        return learner.value(np.asarray(x, np.float32).reshape(-1, 4)).numpy().reshape(np.shape(x)[:-1])

    values, final_values = v(rollout.observations), v(rollout.final_observations)
    _, advantages = learner.train_on_rollout(rollout.arrays())
    advantages = advantages.numpy().reshape(12, 3)
    gamma = cfg.train.gamma
    for t, i in zip(*np.nonzero(truncated)):
        expected = rollout.rewards[t, i] + gamma * final_values[t, i] - values[t, i]
        np.testing.assert_allclose(advantages[t, i], expected, rtol=1e-4, atol=1e-5)
        wrong = rollout.rewards[t, i] + gamma * values[t + 1, i] - values[t, i] if t + 1 < 12 else None
        if wrong is not None:
            assert abs(advantages[t, i] - wrong) > 1e-6


def test_seeded_collection_is_repeatable():
    results = []
    for _ in range(2):
        _, env, learner = make()
        rollout = Collector(env, learner, 1.0, envs.episode_seeds(7, 3)).collect(12)
        results.append((rollout.actions, rollout.observations, rollout.log_probs, rollout.final_observations))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_compiled_greedy_episodes_match_a_step_by_step_loop(env_id):
    """Each environment's first episode only: returns and lengths equal a plain Python loop's, run after run
    (the train loop reuses one object), with episodes of different lengths (an untrained CartPole policy fails
    at different steps) and Box actions."""
    cfg = config.from_dict(
        {
            "env": {"id": env_id, "num_envs": 4, "max_episode_steps": 30},
            "model": {"actor_layers": [8], "value_layers": [8]},
        }
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    runner = GreedyEpisodes(learner.greedy, 4)  # traced inside its loop first, as in training
    compiled = []
    for seed in (3, 4, 3):
        obs, _ = env.reset(seed=envs.episode_seeds(seed, 4))
        compiled.append(runner.run(env, obs))

    for seed, (returns, lengths) in zip((3, 4, 3), compiled):
        expected_returns, expected_lengths = np.zeros(4), np.zeros(4, np.int64)
        obs, _ = env.reset(seed=envs.episode_seeds(seed, 4))
        running = np.ones(4, bool)
        while running.any():
            obs, reward, terminated, truncated, _ = env.step(learner.greedy(obs).numpy())
            expected_returns += np.where(running, reward, 0.0)
            expected_lengths += running
            running &= ~(terminated | truncated)
        np.testing.assert_array_equal(returns, expected_returns)
        np.testing.assert_array_equal(lengths, expected_lengths)
        assert lengths.max() <= 30 and (env_id != "CartPole-v1" or len(set(lengths)) > 1)


def test_async_environments_collect_what_sync_ones_do():
    """Each environment in a process of its own: the same steps, same-step autoreset and truncated episodes' final
    observations as stepping them in this process."""
    rollouts = []
    for mode in ("sync", "async"):
        cfg = config.from_dict({"env": {"num_envs": 3, "max_episode_steps": 15, "vectorization": mode}})
        env = envs.make_vector_env(cfg.env)
        try:
            rollouts.append(Collector(env, PPOLearner(cfg, spaces_of(env)), 1.0, envs.episode_seeds(0, 3)).collect(40))
        finally:
            env.close()
    sync, asynchronous = rollouts
    assert sync.truncated.any() and sync.terminated.any()
    for key, value in sync.arrays().items():
        np.testing.assert_array_equal(getattr(asynchronous, key), value, err_msg=key)
    assert sync.episode_returns == asynchronous.episode_returns


@pytest.mark.parametrize("squash_mean", [True, False])
def test_a_gaussian_mean_past_the_bounds_is_kept_unsquashed_and_greedy_actions_are_clipped(squash_mean):
    """model.squash_mean: false leaves the mean unbounded (SB3, CleanRL); greedy actions, which the evaluation and
    the export return, stay within the action bounds either way."""
    cfg = config.from_dict(
        {
            "env": {"id": "Pendulum-v1", "num_envs": 2},
            "model": {"actor_layers": [8], "value_layers": [8], "squash_mean": squash_mean},
            "train": {"rollout_steps": 8, "num_minibatches": 2},
        }
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    projection = learner.agent.actor_net._projection_networks
    mean_layer = projection._means_projection_layer
    mean_layer.kernel.assign(np.zeros(mean_layer.kernel.shape, np.float32))
    mean_layer.bias.assign(np.full(mean_layer.bias.shape, 5.0, np.float32))  # Pendulum's torque bound is 2
    observations = np.zeros((2, 3), np.float32)
    mean = learner.distribution(observations).mean().numpy()
    if squash_mean:
        assert np.all(np.abs(mean) < 2.0)
    else:
        np.testing.assert_allclose(mean, 5.0, rtol=1e-5)
    np.testing.assert_allclose(learner.greedy(observations).numpy(), np.minimum(mean, 2.0), rtol=1e-5)


def test_statistics_updated_each_step_are_those_the_policy_saw_and_the_update_starts_from_them():
    """train.observation_stats: step (SB3's VecNormalize): after a rollout the normaliser holds the statistics of
    exactly the observations the policy acted on, each taken in before its action; the update recomputes the old
    log-probabilities with them (the stored ones, under each step's statistics, differ) and adds nothing more."""
    cfg = config.from_dict(
        {
            "env": {"id": "Pendulum-v1", "num_envs": 3},
            "model": {"actor_layers": [8], "value_layers": [8]},
            "train": {
                "rollout_steps": 12,
                "num_minibatches": 2,
                "num_epochs": 1,
                "learning_rate": 1e-12,
                "observation_stats": "step",
            },
        }
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    rollout = Collector(env, learner, 1.0, envs.episode_seeds(0, 3)).collect(12)

    def statistics():
        count, mean, m2, _ = (v.numpy() for v in learner.agent._observation_normalizer.variables)
        return count, mean, m2 / count

    seen = rollout.observations.reshape(-1, 3)
    count, mean, var = statistics()
    np.testing.assert_allclose(count, 36, rtol=1e-6)
    np.testing.assert_allclose(mean, seen.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, seen.var(0), rtol=1e-3, atol=1e-5)
    now = learner.distribution(seen).log_prob(rollout.actions.reshape(-1, 1)).numpy()
    assert np.abs(now - rollout.log_probs.reshape(-1)).max() > 1e-3, "each step's statistics differ from the last"
    stats, _ = learner.train_on_rollout(rollout.arrays())
    assert float(stats["approx_kl"]) < 1e-7 and float(stats["clip_fraction"]) == 0.0  # ratios start at 1
    np.testing.assert_allclose(statistics()[0], 36, rtol=1e-6)
