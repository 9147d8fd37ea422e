"""PPO over generated tokens (RLHF): KL estimators, per-token rewards, whitening and the clipped losses.

Pure functions on (batch, response_tokens) tensors with a 0/1 `mask` of real response tokens (1 up to and
including EOS, 0 after). Names follow TRL's PPO trainer, whose users will read them.
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.rl.advantages import gae


def masked_mean(x, mask, axis=None):
    mask = tf.cast(mask, x.dtype)
    return tf.reduce_sum(x * mask, axis=axis) / tf.maximum(tf.reduce_sum(mask, axis=axis), 1.0)


def masked_whiten(x, mask, shift_mean: bool = True):
    """(x - mean) / std over the masked entries; with shift_mean=False the mean is added back (TRL's rewards)."""
    mean = masked_mean(x, mask)
    var = masked_mean(tf.square(x - mean), mask)
    whitened = (x - mean) * tf.math.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_per_token(logprobs, ref_logprobs, estimator: str = "k1"):
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy.

    k1 = log p - log q: unbiased, can be negative per token.
    k3 = (q/p - 1) - log(q/p): unbiased and never negative, lower variance (Schulman, "Approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return tf.exp(-log_ratio) - 1.0 + log_ratio
    raise ValueError(f"estimator {estimator!r}: allowed k1, k3")


def token_rewards(scores, kl, kl_coef, mask):
    """-kl_coef * KL on every response token, plus the sequence score on its last real token (the EOS)."""
    mask = tf.cast(mask, kl.dtype)
    non_score = -kl_coef * kl * mask
    last = tf.maximum(tf.cast(tf.reduce_sum(mask, axis=1), tf.int32) - 1, 0)
    score_at_end = tf.one_hot(last, tf.shape(kl)[1], dtype=kl.dtype) * scores[:, None]
    return non_score + score_at_end * mask, non_score


def token_gae(values, rewards, mask, gamma: float, lam: float):
    """(advantages, returns) over each response, as an episode that terminates at its last real token.

    The same GAE as the gymnasium path (pipeline.rl.advantages, TF-Agents' value_ops), time-major.
    """
    mask = tf.cast(mask, values.dtype)
    next_mask = tf.concat([mask[:, 1:], tf.zeros_like(mask[:, :1])], axis=1)
    last_token = mask * (1.0 - next_mask)
    zeros = tf.zeros_like(values)
    advantages, returns = gae(tf.transpose(values * mask), tf.zeros_like(values[:, 0]),
                              tf.transpose(rewards * mask), tf.transpose(last_token > 0),
                              tf.transpose(zeros > 0), tf.transpose(zeros), gamma, lam)
    return tf.transpose(advantages) * mask, tf.transpose(returns) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_ratio: float):
    """Clipped surrogate; returns (loss, clipfrac, approxkl) with approxkl = mean of 0.5 (log ratio)^2 (TRL)."""
    log_ratio = logprobs - old_logprobs
    ratio = tf.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = masked_mean(tf.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean(tf.cast(clipped > unclipped, logprobs.dtype), mask)
    approxkl = 0.5 * masked_mean(tf.square(log_ratio), mask)
    return loss, clipfrac, approxkl, masked_mean(ratio, mask)


def value_loss(values, old_values, returns, mask, clip_value: float):
    """0.5 * max((v - R)^2, (clip(v, v_old +- eps) - R)^2); returns (loss, vf_clipfrac)."""
    clipped = old_values + tf.clip_by_value(values - old_values, -clip_value, clip_value)
    unclipped_error, clipped_error = tf.square(values - returns), tf.square(clipped - returns)
    loss = 0.5 * masked_mean(tf.maximum(unclipped_error, clipped_error), mask)
    return loss, masked_mean(tf.cast(clipped_error > unclipped_error, values.dtype), mask)


def adaptive_kl_coef(kl_coef: float, current_kl: float, target: float, horizon: float, n_steps: int) -> float:
    """Ziegler et al. (2019): move the coefficient so the KL approaches target; the error is clipped to 20%."""
    proportional_error = min(max(current_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + proportional_error * n_steps / horizon)
