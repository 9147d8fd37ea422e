"""train.normalize_rewards (pipeline/gym/reward_scaling.py) against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline.gym.reward_scaling import CLIP, RewardScaler, discounted_returns


def test_discounted_returns_restart_after_an_episode_ends():
    rewards = tf.constant([[1.0, 1.0], [2.0, 0.0], [3.0, 5.0]])
    ends = tf.constant([[False, True], [True, False], [False, False]])
    returns = discounted_returns(rewards, ends, tf.constant([4.0, 8.0]), gamma=0.5)
    # env 0: 0.5*4 + 1 = 3; 0.5*3 + 2 = 3.5; ended: 0 + 3 = 3. env 1: 0.5*8 + 1 = 5; ended: 0 + 0 = 0; 0 + 5 = 5.
    np.testing.assert_allclose(returns.numpy(), [[3.0, 5.0], [3.5, 0.0], [3.0, 5.0]])


def test_the_scaler_divides_by_the_running_std_of_returns_and_keeps_its_state():
    scaler = RewardScaler(num_envs=1, gamma=0.5)
    scaler.returns.assign([4.0])
    rewards = tf.constant([[1.0], [2.0], [3.0]])
    scaled = scaler(rewards, tf.constant([[False], [True], [False]]))
    # Returns 3, 3.5, 3 (mean 19/6, population variance 1/18) merged into SB3's start (count 1e-4, mean 0, var 1).
    n, count = 3.0, 1e-4
    mean = 19 / 6
    m2 = 1.0 * count + (1 / 18) * n + mean**2 * count * n / (count + n)
    var = m2 / (count + n)
    assert np.isclose(float(scaler.var), var) and np.isclose(float(scaler.mean), mean * n / (count + n))
    expected = np.clip(rewards.numpy() / np.sqrt(var + 1e-8), -CLIP, CLIP)  # 3 / 0.236 = 12.7 -> 10
    np.testing.assert_allclose(scaled.numpy(), expected, rtol=1e-6)
    assert expected.max() == CLIP
    assert float(scaler.returns[0]) == 3.0  # carried into the next rollout (its episode goes on)
    scaler(tf.constant([[1.0]]), tf.constant([[True]]))
    assert float(scaler.returns[0]) == 0.0  # that episode ended: the next one's return starts at 0
