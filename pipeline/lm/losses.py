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


# === GRPO and RLOO (TRL 1.16's GRPOTrainer and RLOOTrainer): a group of num_generations completions per prompt,
# consecutive rows of the batch; no value model. ===

GROUP_SCALINGS = ("group", "batch", "none")
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
STD_EPSILON = 1e-4  # TRL's, added to the standard deviation


def _groups(rewards, num_generations: int):
    return tf.reshape(rewards, [-1, num_generations])


def unbiased_std(x, axis=None):
    """Bessel-corrected standard deviation (torch.std's and TRL's nanstd's)."""
    n = tf.cast(tf.size(x) if axis is None else tf.shape(x)[axis], x.dtype)
    mean = tf.reduce_mean(x, axis=axis, keepdims=True)
    return tf.sqrt(tf.reduce_sum(tf.square(x - mean), axis=axis) / tf.maximum(n - 1.0, 1.0))


def group_std(rewards, num_generations: int):
    """[B] the Bessel-corrected standard deviation of each row's group."""
    return tf.repeat(unbiased_std(_groups(rewards, num_generations), axis=1), num_generations)


def grpo_advantages(rewards, num_generations: int, scale_rewards: str = "group"):
    """(advantages [B], the standard deviation each row was scaled by [B]): each reward minus its group's mean,
    divided by (std + 1e-4) where std is the group's (scale_rewards group) or the whole batch's (batch), or not
    divided (none: Dr. GRPO). Standard deviations are Bessel-corrected, as TRL's."""
    groups = _groups(rewards, num_generations)
    centred = tf.reshape(groups - tf.reduce_mean(groups, axis=1, keepdims=True), [-1])
    if scale_rewards == "group":
        std = group_std(rewards, num_generations)
    elif scale_rewards == "batch":
        std = tf.fill(tf.shape(rewards), unbiased_std(rewards))
    elif scale_rewards == "none":
        return centred, group_std(rewards, num_generations)
    else:
        raise ValueError(f"scale_rewards {scale_rewards!r}: allowed {', '.join(GROUP_SCALINGS)}")
    return centred / (std + STD_EPSILON), std


def rloo_advantages(rewards, num_generations: int):
    """Each reward minus the mean of the other num_generations - 1 rewards of its group (the leave-one-out
    baseline): num_generations / (num_generations - 1) times the reward's distance from its group's mean."""
    groups = _groups(rewards, num_generations)
    baseline = (tf.reduce_sum(groups, axis=1, keepdims=True) - groups) / (num_generations - 1)
    return tf.reshape(groups - baseline, [-1])


def clip_regions(ratio, advantages, clip_low: float, clip_high: float):
    """(low, high) 0/1 tensors where the clip binds (TRL's clip_ratio/low and /high): a ratio below 1 - clip_low
    with a negative advantage, above 1 + clip_high with a positive one."""
    low = tf.cast((ratio < 1.0 - clip_low) & (advantages < 0.0), ratio.dtype)
    high = tf.cast((ratio > 1.0 + clip_high) & (advantages > 0.0), ratio.dtype)
    return low, high


def clipped_objective(ratio, advantages, clip_low: float, clip_high: float):
    """-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A): PPO's surrogate, clipped asymmetrically when
    clip_high differs (DAPO's clip-higher)."""
    return -tf.minimum(ratio * advantages, tf.clip_by_value(ratio, 1.0 - clip_low, 1.0 + clip_high) * advantages)


def grpo_token_loss(logprobs, old_logprobs, advantages, clip_low: float, clip_high: float, ref_logprobs=None, beta=0.0):
    """(per-token loss, per-token KL or None, ratio): the clipped surrogate of each token with its sequence's
    advantage [B], plus beta times k3 KL(policy || reference) multiplied by the ratio (TRL's default bias
    correction: the KL of tokens sampled from the old policy, importance-weighted to the current one)."""
    ratio = tf.exp(logprobs - old_logprobs)
    per_token = clipped_objective(ratio, advantages[:, None], clip_low, clip_high)
    if ref_logprobs is None or not beta:
        return per_token, None, ratio
    kl = k3(ref_logprobs - logprobs) * ratio
    return per_token + beta * kl, kl, ratio


def aggregate(per_token, mask, loss_type: str, minibatch_rows, minibatch_tokens, max_tokens: int, parts: int = 1):
    """This micro-batch's share of the minibatch's loss under TRL's loss_type (shares sum to the minibatch's loss):
    grpo: the mean over sequences of each sequence's token mean (length-biased: TRL's docs);
    bnpo: the token mean of each micro-batch (of `parts` per minibatch: micro-batches x replicas), averaged;
    dr_grpo: the token sum over minibatch_rows x max_tokens (a constant: Dr. GRPO);
    dapo: the token mean over the minibatch's tokens (DAPO; TRL's default)."""
    mask = tf.cast(mask, per_token.dtype)
    summed = per_token * mask
    if loss_type == "grpo":
        lengths = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        return tf.reduce_sum(tf.reduce_sum(summed, axis=1) / lengths) / tf.cast(minibatch_rows, per_token.dtype)
    if loss_type == "bnpo":
        return tf.reduce_sum(summed) / tf.maximum(tf.reduce_sum(mask), 1.0) / parts
    if loss_type == "dr_grpo":
        return tf.reduce_sum(summed) / tf.cast(minibatch_rows * max_tokens, per_token.dtype)
    if loss_type == "dapo":
        return tf.reduce_sum(summed) / tf.maximum(tf.cast(minibatch_tokens, per_token.dtype), 1.0)
    raise ValueError(f"loss_type {loss_type!r}: allowed {', '.join(LOSS_TYPES)}")


def rloo_sequence_loss(logprobs, old_logprobs, advantages, mask, clip_low: float, clip_high: float):
    """(per-sequence loss [B], ratio [B]): RLOO's clipped surrogate on whole sequences, the ratio of their summed
    token log-probs (TRL's RLOOTrainer)."""
    mask = tf.cast(mask, logprobs.dtype)
    ratio = tf.exp(tf.reduce_sum((logprobs - old_logprobs) * mask, axis=1))
    return clipped_objective(ratio, advantages, clip_low, clip_high), ratio


def sequence_kl(logprobs, ref_logprobs, mask):
    """[B] per-token log-ratios log p - log q (k1) summed over each response: RLOO's KL penalty, taken from the
    reward."""
    return tf.reduce_sum((logprobs - ref_logprobs) * tf.cast(mask, logprobs.dtype), axis=1)
