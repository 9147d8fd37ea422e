"""PPO over generated tokens (RLHF): KL estimators, per-token rewards, whitening and the clipped losses.

Pure functions on (batch, response_tokens) tensors with a 0/1 `mask` of real response tokens (1 up to and
including EOS, 0 after). Names follow TRL's PPO trainer, whose users will read them.
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.core.advantages import gae
from pipeline.core.estimators import k3, masked_mean


def kl_per_token(logprobs, ref_logprobs, estimator: str = "k1"):
    """Per-token estimate of KL(policy || reference) from tokens sampled from the policy.

    k1 = log p - log q: unbiased, can be negative per token.
    k3 = (q/p - 1) - log(q/p): unbiased and never negative, lower variance (Schulman, "Approximating KL").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return k3(-log_ratio)
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

    The same GAE as the gymnasium path (pipeline.core.advantages, TF-Agents' value_ops), time-major.
    """
    mask = tf.cast(mask, values.dtype)
    next_mask = tf.concat([mask[:, 1:], tf.zeros_like(mask[:, :1])], axis=1)
    last_token = mask * (1.0 - next_mask)
    zeros = tf.zeros_like(values)
    advantages, returns = gae(
        tf.transpose(values * mask),
        tf.zeros_like(values[:, 0]),
        tf.transpose(rewards * mask),
        tf.transpose(last_token > 0),
        tf.transpose(zeros > 0),
        tf.transpose(zeros),
        gamma,
        lam,
    )
    return tf.transpose(advantages) * mask, tf.transpose(returns) * mask


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_ratio: float, count=None):
    """Clipped surrogate; returns (loss, clipfrac, approxkl, mean ratio), each a mean over the masked tokens
    (divided by `count` when given: see masked_mean). approxkl: k3 of KL(old || new), as the gym learner logs it
    (TRL logs 0.5 * mean (log ratio)^2, equal to second order)."""
    log_ratio = logprobs - old_logprobs
    ratio = tf.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * tf.clip_by_value(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = masked_mean(tf.maximum(unclipped, clipped), mask, count)
    clipfrac = masked_mean(tf.cast(clipped > unclipped, logprobs.dtype), mask, count)
    return loss, clipfrac, masked_mean(k3(log_ratio), mask, count), masked_mean(ratio, mask, count)


def value_loss(values, old_values, returns, mask, value_clip: float, count=None):
    """Mean of max((v - R)^2, (clip(v, v_old +- eps) - R)^2) over the masked tokens; returns (loss, vf_clipfrac).

    No 1/2: the gym learner's (TF-Agents', Stable-Baselines3's) convention, so value_coef weighs the same in both
    learners (TRL's loss has a 1/2: its vf_coef 0.1 is value_coef 0.05 here)."""
    clipped = old_values + tf.clip_by_value(values - old_values, -value_clip, value_clip)
    unclipped_error, clipped_error = tf.square(values - returns), tf.square(clipped - returns)
    loss = masked_mean(tf.maximum(unclipped_error, clipped_error), mask, count)
    return loss, masked_mean(tf.cast(clipped_error > unclipped_error, values.dtype), mask, count)


def adaptive_kl_coef(kl_coef: float, current_kl: float, target: float, horizon: float, n_steps: int) -> float:
    """Ziegler et al. (2019): move the coefficient so the KL approaches target; the error is clipped to 20%."""
    proportional_error = min(max(current_kl / target - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + proportional_error * n_steps / horizon)
