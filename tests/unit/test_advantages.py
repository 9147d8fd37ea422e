"""GAE with termination and truncation kept apart, checked against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from pipeline.core.advantages import explained_variance, gae, rewards_and_discounts

G, L = 0.9, 0.5


def reference_gae(values, next_value, rewards, terminated, truncated, final_values, gamma, lam):
    """A plain reversed loop, one env, written the obvious way for comparison."""
    T = len(rewards)
    adv = np.zeros(T)
    last = 0.0
    for t in reversed(range(T)):
        if terminated[t]:
            delta, cont = rewards[t] - values[t], 0.0
        elif truncated[t]:
            delta, cont = rewards[t] + gamma * final_values[t] - values[t], 0.0
        else:
            v_next = values[t + 1] if t + 1 < T else next_value
            delta, cont = rewards[t] + gamma * v_next - values[t], 1.0
        last = delta + gamma * lam * cont * last
        adv[t] = last
    return adv


def test_hand_computed_truncation_bootstraps_from_final_observation():
    # One env, 3 steps: the episode is truncated at t=1 (time limit); a new one starts at t=2.
    values = np.array([[1.0], [2.0], [10.0]])  # V(s0), V(s1), V(s0') of the next episode
    rewards = np.array([[1.0], [1.0], [1.0]])
    truncated = np.array([[False], [True], [False]])
    terminated = np.zeros_like(truncated)
    final_values = np.array([[0.0], [3.0], [0.0]])  # V(final observation of episode 1) = 3
    next_value = np.array([4.0])
    adv, ret = gae(values, next_value, rewards, terminated, truncated, final_values, G, L)
    # t=2: 1 + 0.9*4 - 10 = -5.4
    # t=1: 1 + 0.9*3 - 2 = 1.7 (bootstraps from V(final obs)=3, not from V(s0')=10; chain cut)
    # t=0: delta 1 + 0.9*2 - 1 = 1.8; plus 0.9*0.5*1.7 = 0.765 -> 2.565
    np.testing.assert_allclose(adv.numpy()[:, 0], [2.565, 1.7, -5.4], rtol=1e-6)
    np.testing.assert_allclose(ret.numpy(), adv.numpy() + values, rtol=1e-6)


def test_hand_computed_termination_does_not_bootstrap():
    values = np.array([[1.0], [2.0], [10.0]])
    rewards = np.array([[1.0], [1.0], [1.0]])
    terminated = np.array([[False], [True], [False]])
    final_values = np.array([[0.0], [3.0], [0.0]])  # must be ignored
    adv, _ = gae(values, np.array([4.0]), rewards, terminated, np.zeros_like(terminated), final_values, G, L)
    # t=1: 1 - 2 = -1; t=0: 1.8 + 0.45 * -1 = 1.35
    np.testing.assert_allclose(adv.numpy()[:, 0], [1.35, -1.0, -5.4], rtol=1e-6)


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (1.0, 1.0), (0.9, 0.0), (0.5, 0.7)])
def test_matches_plain_loop_on_random_rollouts(gamma, lam):
    rng = np.random.default_rng(0)
    T, N = 17, 5
    values, rewards, final_values = rng.normal(size=(T, N)), rng.normal(size=(T, N)), rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < 0.1
    truncated = rng.random((T, N)) < 0.1  # some steps are both: termination wins
    next_value = rng.normal(size=N)
    adv, _ = gae(values, next_value, rewards, terminated, truncated, final_values, gamma, lam)
    for n in range(N):
        expected = reference_gae(
            values[:, n],
            next_value[n],
            rewards[:, n],
            terminated[:, n],
            truncated[:, n] & ~terminated[:, n],
            final_values[:, n],
            gamma,
            lam,
        )
        np.testing.assert_allclose(adv.numpy()[:, n], expected, rtol=1e-5, atol=1e-5)


def test_tf_agents_own_advantages_treat_time_limits_as_terminations():
    """Why pipeline/core/advantages.py exists: PPOAgent's mask zeroes the bootstrap on every LAST step."""
    from tf_agents.agents.ppo import ppo_clip_agent
    from tf_agents.networks import actor_distribution_network, value_network
    from tf_agents.specs import tensor_spec

    obs_spec = tensor_spec.TensorSpec([1], tf.float32)
    action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1)
    agent = ppo_clip_agent.PPOClipAgent(
        ts.time_step_spec(obs_spec),
        action_spec,
        optimizer=tf.keras.optimizers.Adam(),
        actor_net=actor_distribution_network.ActorDistributionNetwork(obs_spec, action_spec, fc_layer_params=(4,)),
        value_net=value_network.ValueNetwork(obs_spec, fc_layer_params=(4,)),
        discount_factor=G,
        lambda_value=L,
        use_gae=True,
        normalize_rewards=False,
        normalize_observations=False,
    )
    # Batch-major, one trajectory of 2 steps; the second next step is LAST with discount 1 (a time limit).
    next_steps = ts.TimeStep(
        step_type=tf.constant([[1, 2]]),
        reward=tf.constant([[1.0, 1.0]]),
        discount=tf.constant([[1.0, 1.0]]),
        observation=tf.zeros([1, 2, 1]),
    )
    value_preds = tf.constant([[1.0, 2.0, 3.0]])  # V(s0), V(s1), V(final observation)
    _, tf_agents_adv = agent.compute_return_and_advantage(next_steps, value_preds)
    ours, _ = gae(
        tf.transpose(value_preds[:, :2]),
        [0.0],
        [[1.0], [1.0]],
        [[False], [False]],
        [[False], [True]],
        [[0.0], [3.0]],
        G,
        L,
    )
    np.testing.assert_allclose(tf_agents_adv.numpy()[0, 1], 1.0 - 2.0, rtol=1e-6)  # no bootstrap: r - V(s1)
    np.testing.assert_allclose(ours.numpy()[1, 0], 1.0 + G * 3.0 - 2.0, rtol=1e-6)  # r + g V(final) - V(s1)


def test_discounts_and_folded_rewards():
    rewards, discounts = rewards_and_discounts(
        [[1.0, 1.0, 1.0]], [[True, False, False]], [[True, True, False]], [[5.0, 5.0, 5.0]], 0.5
    )
    np.testing.assert_allclose(rewards.numpy(), [[1.0, 3.5, 1.0]])
    np.testing.assert_allclose(discounts.numpy(), [[0.0, 0.0, 0.5]])


def test_explained_variance():
    target = tf.constant([1.0, 2.0, 3.0, 4.0])
    assert float(explained_variance(target, target)) == pytest.approx(1.0)
    assert float(explained_variance(tf.fill([4], 2.5), target)) == pytest.approx(0.0)
    assert np.isnan(float(explained_variance(target, tf.ones([4]))))
