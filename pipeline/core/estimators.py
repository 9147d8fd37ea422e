"""Estimators both PPO learners (gym and LM) share, written once: masked means, whitening, the k3 KL estimate.

Conventions (one per quantity, the same in both learners):
- whitening: over the whole batch the update trains on (a rollout, a batch of sequences), before it is cut into
  minibatches, as TF-Agents and TRL do (Stable-Baselines3 and CleanRL whiten each minibatch); the statistics then
  do not depend on the minibatch or micro-batch size, or on how a data-parallel batch is split.
- approximate KL between the rollout's policy and the updated one: k3 (Stable-Baselines3, CleanRL).
"""

from __future__ import annotations

import tensorflow as tf


def masked_mean(x, mask=None, count=None, axis=None):
    """Mean of x over the entries where mask is 1. `count` (default: the mask's sum) is the denominator: pass a
    larger batch's count to get this part's share of that batch's mean (micro-batches add up to it)."""
    if mask is None:
        return tf.reduce_mean(x, axis=axis)
    mask = tf.cast(mask, x.dtype)
    if count is None:
        count = tf.maximum(tf.reduce_sum(mask, axis=axis), 1.0)
    return tf.reduce_sum(x * mask, axis=axis) / tf.cast(count, x.dtype)


def whiten(x, mask=None, shift_mean: bool = True):
    """(x - mean) / std over the (masked) entries; with shift_mean=False the mean is added back (TRL's rewards)."""
    mean = masked_mean(x, mask)
    var = masked_mean(tf.square(x - mean), mask)
    whitened = (x - mean) * tf.math.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def k3(log_ratio):
    """Per-sample estimate of KL(p || q) from x ~ p, with log_ratio = log q(x) - log p(x): (r - 1) - log r, r = q/p.

    Unbiased, never negative, lower variance than -log_ratio (Schulman, "Approximating KL divergence").
    """
    return tf.math.expm1(log_ratio) - log_ratio
