"""Advantages over (time, env) rollouts with terminated and truncated kept apart.

GAE itself is TF-Agents' `value_ops.generalized_advantage_estimation`. What it cannot tell on its own is a
time limit from a real ending: it uses one discount both to bootstrap and to continue the lambda chain.
`rewards_and_discounts` resolves that before calling it:

- terminated: discount 0, no bootstrap (the episode really ended);
- truncated: discount 0 (the chain must not run into the next episode's first steps), and the bootstrap
  gamma * V(final observation) folded into the reward, so the TD error is r + gamma V(s_final) - V(s).

(TF-Agents' own `PPOAgent.compute_return_and_advantage` multiplies the discount by an episode mask that is 0
on every LAST step, so it treats a time limit as a termination.)
"""

from __future__ import annotations

import tensorflow as tf
from tf_agents.utils import value_ops


def rewards_and_discounts(rewards, terminated, truncated, final_values, gamma: float):
    """All arguments (T, N); final_values holds V(final observation) where an episode ended, else anything.

    Returns (rewards with truncation bootstraps folded in, per-step discounts for GAE).
    """
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    terminated = tf.cast(terminated, tf.bool)
    truncated = tf.logical_and(tf.cast(truncated, tf.bool), tf.logical_not(terminated))
    ended = tf.logical_or(terminated, truncated)
    bootstrap = tf.where(truncated, gamma * tf.convert_to_tensor(final_values, tf.float32), 0.0)
    discounts = tf.where(ended, 0.0, tf.cast(gamma, tf.float32))
    return rewards + bootstrap, discounts


def gae(values, next_value, rewards, terminated, truncated, final_values, gamma: float, gae_lambda: float):
    """(advantages, returns), each (T, N). `next_value` (N,) is V of the observation after the last step."""
    rewards, discounts = rewards_and_discounts(rewards, terminated, truncated, final_values, gamma)
    values = tf.convert_to_tensor(values, tf.float32)
    advantages = value_ops.generalized_advantage_estimation(
        values=values,
        final_value=tf.convert_to_tensor(next_value, tf.float32),
        discounts=discounts,
        rewards=rewards,
        td_lambda=gae_lambda,
        time_major=True,
    )
    return advantages, advantages + values


def explained_variance(predicted, target):
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant, NaN if Var[target]=0."""
    var_target = tf.math.reduce_variance(target)
    return tf.where(var_target > 0, 1.0 - tf.math.reduce_variance(target - predicted) / var_target, float("nan"))
