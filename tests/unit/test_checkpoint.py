"""A checkpoint round trip restores every variable: networks, normaliser, optimizer slots, RNG, counters.

../shared/STACK.md: without TF_USE_LEGACY_KERAS=1, TF-Agents' checkpoints silently skipped hidden layers.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pipeline.core import config
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector
from pipeline.gym.spaces import spaces_of


def make(seed):
    cfg = config.from_dict(
        {
            "env": {"num_envs": 2, "seed": seed},
            "model": {"actor_layers": [8, 8], "value_layers": [8, 8]},
            "train": {"rollout_steps": 8, "num_minibatches": 2, "num_epochs": 2, "normalize_rewards": True},
        }
    )
    env = envs.make_vector_env(cfg.env)
    return env, PPOLearner(cfg, spaces_of(env))


def test_every_variable_is_saved_and_restored(tmp_path):
    env, learner = make(seed=0)
    # Several hidden layers per network: the trap was that hidden Dense layers went missing.
    assert len(learner.agent.actor_net.trainable_variables) == 6
    assert len(learner.variables_to_train) == 12
    learner.train_on_rollout(Collector(env, learner, 1.0, envs.episode_seeds(0, 2)).collect(8).arrays())
    learner.counters.env_steps.assign(16)
    path = learner.checkpoint().save(str(tmp_path / "ckpt"))

    _, fresh = make(seed=1)  # different initialisation: every value must come from the checkpoint
    fresh.checkpoint().restore(path).assert_consumed()

    # Every variable the learner holds comes back equal (same construction order, different init).
    before, after = _all_variables(learner), _all_variables(fresh)
    assert len(before) == len(after) > 12 + 4  # networks, normalisers, optimizer slots, RNG, counters
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new.numpy(), old.numpy(), err_msg=old.name)
    # ...and the checkpoint file holds exactly that state: re-saving the restored learner changes nothing.
    resaved = fresh.checkpoint().save(str(tmp_path / "again"))
    reader, reader2 = tf.train.load_checkpoint(path), tf.train.load_checkpoint(resaved)
    keys = {k for k in reader.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")}
    assert keys == {k for k in reader2.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")}
    assert len(keys) == len(before) + 1  # + the checkpoint's own save_counter
    for key in keys - {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"}:
        np.testing.assert_array_equal(reader.get_tensor(key), reader2.get_tensor(key), err_msg=key)
    for part in ("actor", "value", "optimizer", "generator", "counters", "normalizer", "reward_scaler"):
        assert any(part in k.lower() for k in keys), f"nothing of {part} in the checkpoint: {sorted(keys)}"


def _all_variables(learner) -> list:
    return (
        list(learner.agent.variables)
        + list(learner.optimizer.variables)
        + [learner.optimizer.learning_rate]
        + [learner.generator.state]
        + list(learner.counters.variables)
        + list(learner.reward_scaler.variables if learner.reward_scaler else [])
    )


def test_tally_round_trips_through_the_counters_and_keeps_the_last_window():
    _, learner = make(seed=0)
    tally = learner.counters.read()
    assert (tally.env_steps, tally.episodes, tally.solved) == (0, 0, False)
    assert np.isnan(tally.recent_mean(100))  # no episode yet
    tally.record_episodes(list(range(150)), [10] * 150)
    tally.env_steps, tally.solved = 4096, True
    assert tally.recent_mean(50) == np.mean(range(100, 150))
    assert np.isnan(tally.recent_mean(100, min_count=101))
    learner.counters.store(tally)
    again = learner.counters.read()
    assert (again.env_steps, again.episodes, again.solved) == (4096, 150, True)
    np.testing.assert_array_equal(again.recent_returns, np.arange(50, 150, dtype=np.float32))
    assert int(learner.counters.env_steps) == 4096


def test_a_dict_of_frames_vectors_and_a_mask_round_trips(tmp_path):
    """CNN kernels, the vector-only normaliser and the masked actor's variables all come back."""

    def make_masked(seed):
        cfg = config.from_dict(
            {
                "env": {"id": "tests.unit.test_checkpoint:FramesAndMask", "num_envs": 2, "seed": seed},
                "model": {"actor_layers": [8], "value_layers": [8], "cnn": [[4, 3, 2]], "cnn_dense": 8},
                "train": {"rollout_steps": 8, "num_minibatches": 2, "num_epochs": 1},
            }
        )
        env = envs.make_vector_env(cfg.env)
        return env, PPOLearner(cfg, spaces_of(env))

    env, learner = make_masked(seed=0)
    learner.train_on_rollout(Collector(env, learner, 1.0, envs.episode_seeds(0, 2)).collect(8).arrays())
    path = learner.checkpoint().save(str(tmp_path / "ckpt"))
    _, fresh = make_masked(seed=1)
    fresh.checkpoint().restore(path).assert_consumed()
    before, after = _all_variables(learner), _all_variables(fresh)
    assert any(len(v.shape) == 4 for v in before)  # a convolution kernel
    normaliser = {id(v) for v in tf.nest.flatten(learner.agent._observation_normalizer.variables)}
    assert normaliser and normaliser <= {id(v) for v in before}
    for old, new in zip(before, after):
        np.testing.assert_array_equal(new.numpy(), old.numpy(), err_msg=old.name)


class FramesAndMask(gym.Env):
    """A Dict of an 8x8 RGB frame, a vector and an action mask over 3 actions."""

    observation_space = gym.spaces.Dict(
        {
            "frame": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
            "x": gym.spaces.Box(-1, 1, (2,), np.float32),
            "action_mask": gym.spaces.MultiBinary(3),
        }
    )
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._observation(), {}

    def step(self, action):
        return self._observation(), float(action), bool(self.np_random.random() < 0.2), False, {}

    def _observation(self):
        obs = self.observation_space.sample()
        obs["action_mask"][0] = 1
        return obs
