"""Rewards scaled by a running standard deviation of the discounted return (train.normalize_rewards), as
Stable-Baselines3's VecNormalize and CleanRL's NormalizeReward scale them: each environment's return
R_t = gamma * R_{t-1} + r_t (restarting after an episode ends) feeds a running variance, and r_t / sqrt(var + eps),
clipped, is what GAE sees. Rewards are not centred (that would change which episodes are better).

Applied by the learner to the whole rollout (with several workers, gathered from all of them), so replicas and
workers keep one set of statistics; updated with the rollout's returns before its rewards are scaled (the wrappers
update a step at a time). Saved in checkpoints; not part of the exported policy, which never sees a reward.
"""

from __future__ import annotations

import tensorflow as tf

CLIP, EPSILON = 10.0, 1e-8  # SB3's and CleanRL's


class RewardScaler(tf.Module):
    def __init__(self, num_envs: int, gamma: float):
        super().__init__(name="reward_scaler")
        self.gamma = gamma
        self.returns = tf.Variable(tf.zeros([num_envs]), trainable=False, name="returns")  # each env's R so far
        # RunningMeanStd as SB3 starts it: a tiny count, mean 0, variance 1.
        self.count = tf.Variable(1e-4, dtype=tf.float64, trainable=False, name="count")
        self.mean = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="mean")
        self.var = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="var")

    def __call__(self, rewards, ends):
        """rewards, ends [time, envs] (ends: terminated or truncated) -> the scaled rewards; updates the state."""
        returns = discounted_returns(rewards, ends, self.returns, self.gamma)
        self.returns.assign(tf.where(ends[-1], 0.0, returns[-1]))
        self._update(tf.reshape(returns, [-1]))
        return scale(rewards, self.var)

    def _update(self, values):
        """Chan et al.'s parallel combination of the running moments with a batch's, as SB3's RunningMeanStd."""
        values = tf.cast(values, tf.float64)
        n = tf.cast(tf.size(values), tf.float64)
        mean, var = tf.reduce_mean(values), tf.math.reduce_variance(values)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean.assign(self.mean + delta * n / total)
        self.var.assign(m2 / total)
        self.count.assign(total)


def discounted_returns(rewards, ends, start, gamma):
    """[time, envs] R_t = gamma * R_{t-1} + r_t from R_{-1} = start, R restarting at 0 after a step that ends."""

    def step(previous, inputs):
        reward, ended_before = inputs
        return gamma * tf.where(ended_before, 0.0, previous) + reward

    ended_before = tf.concat([tf.zeros_like(ends[:1]), ends[:-1]], 0)
    return tf.scan(step, (rewards, ended_before), initializer=start)


def scale(rewards, var):
    return tf.clip_by_value(rewards / tf.cast(tf.sqrt(var + EPSILON), rewards.dtype), -CLIP, CLIP)
