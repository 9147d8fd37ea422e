"""GRPO and RLOO maths (pipeline/lm/losses.py) against numbers computed by hand, as TRL 1.16 defines them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from pipeline.lm import losses

# Two groups of 4 completions: one with a single success, one where every completion scored the same.
REWARDS = tf.constant([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])


def test_grpo_advantages_for_each_scaling():
    # Group 1: mean 0.25, centred (0.75, -0.25, -0.25, -0.25), Bessel std sqrt(0.75 / 3) = 0.5. Group 2: all 0.
    group, std = losses.grpo_advantages(REWARDS, 4, "group")
    np.testing.assert_allclose(std, [0.5] * 4 + [0.0] * 4, atol=1e-7)
    np.testing.assert_allclose(group, [0.75 / 0.5001] + [-0.25 / 0.5001] * 3 + [0.0] * 4, rtol=1e-6)
    # The batch's Bessel std: mean 1.125, squared deviations 6.875 over 7.
    batch, std = losses.grpo_advantages(REWARDS, 4, "batch")
    batch_std = math.sqrt(6.875 / 7)
    np.testing.assert_allclose(std, [batch_std] * 8, rtol=1e-6)
    np.testing.assert_allclose(
        batch, [0.75 / (batch_std + 1e-4)] + [-0.25 / (batch_std + 1e-4)] * 3 + [0] * 4, rtol=1e-6
    )
    none, std = losses.grpo_advantages(REWARDS, 4, "none")  # Dr. GRPO: centred only; the group std still reported
    np.testing.assert_allclose(none, [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0], atol=1e-7)
    np.testing.assert_allclose(std, [0.5] * 4 + [0.0] * 4, atol=1e-7)
    with pytest.raises(ValueError, match="group, batch, none"):
        losses.grpo_advantages(REWARDS, 4, "token")


def test_rloo_advantages_leave_one_out():
    # 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3; the uniform group: 0.
    np.testing.assert_allclose(
        losses.rloo_advantages(REWARDS, 4), [1.0, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(losses.rloo_advantages(tf.constant([3.0, 1.0]), 2), [2.0, -2.0])


def test_grpo_token_loss_clips_asymmetrically_and_adds_the_weighted_k3_kl():
    old = tf.zeros([1, 3])
    logprobs = tf.math.log(tf.constant([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    per_token, kl, ratio = losses.grpo_token_loss(logprobs, old, tf.constant([1.0]), clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(per_token, [[-1.28, -0.5, -1.1]], rtol=1e-6)  # 1.5 clipped to 1 + 0.28
    assert kl is None  # beta 0: no KL term
    per_token, _, _ = losses.grpo_token_loss(logprobs, old, tf.constant([-1.0]), clip_low=0.2, clip_high=0.28)
    np.testing.assert_allclose(per_token, [[1.5, 0.8, 1.1]], rtol=1e-6)  # 0.5 clipped to 1 - 0.2
    low, high = losses.clip_regions(ratio, tf.constant([[1.0], [-1.0]]), 0.2, 0.28)
    np.testing.assert_array_equal(high, [[1, 0, 0], [0, 0, 0]])  # above 1 + clip_high with A > 0
    np.testing.assert_array_equal(low, [[0, 0, 0], [0, 1, 0]])  # below 1 - clip_low with A < 0
    # KL to a reference half as likely: k3 = 0.5 - 1 + ln 2, times the ratio (1 here), times beta.
    same = tf.fill([1, 2], math.log(0.5))
    per_token, kl, _ = losses.grpo_token_loss(
        same, same, tf.constant([2.0]), 0.2, 0.2, ref_logprobs=tf.fill([1, 2], math.log(0.25)), beta=0.1
    )
    k3 = 0.5 - 1 + math.log(2)
    np.testing.assert_allclose(kl, [[k3, k3]], rtol=1e-5)
    np.testing.assert_allclose(per_token, [[-2.0 + 0.1 * k3] * 2], rtol=1e-5)


def test_loss_aggregations_by_hand_and_their_micro_batch_shares():
    per_token = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    expected = {"grpo": (1.5 + 4.0) / 2, "bnpo": 7 / 3, "dr_grpo": 7 / 6, "dapo": 7 / 3}
    for loss_type, value in expected.items():
        got = losses.aggregate(per_token, mask, loss_type, minibatch_rows=2, minibatch_tokens=3.0, max_tokens=3)
        assert float(got) == pytest.approx(value), loss_type
    # Row by row, as two micro-batches: grpo, dr_grpo and dapo add up to the minibatch's loss; bnpo is the mean
    # of the micro-batches' token means (TRL's local-batch normalisation).
    shares = {
        loss_type: sum(
            float(losses.aggregate(per_token[i : i + 1], mask[i : i + 1], loss_type, 2, 3.0, 3, parts=2))
            for i in range(2)
        )
        for loss_type in expected
    }
    assert shares == pytest.approx({"grpo": 2.75, "bnpo": (1.5 + 4.0) / 2, "dr_grpo": 7 / 6, "dapo": 7 / 3})
    with pytest.raises(ValueError, match="grpo, bnpo, dr_grpo, dapo"):
        losses.aggregate(per_token, mask, "token_mean", 2, 3.0, 3)


def test_rloo_loss_is_on_whole_sequences():
    old = tf.zeros([2, 3])
    logprobs = tf.math.log(tf.constant([[2.0, 1.5, 9.0], [0.9, 1.0, 1.0]]))  # the 9 is past the mask
    mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, ratio = losses.rloo_sequence_loss(logprobs, old, tf.constant([1.0, -2.0]), mask, 0.2, 0.2)
    np.testing.assert_allclose(ratio, [3.0, 0.9], rtol=1e-6)  # the product of the token ratios
    np.testing.assert_allclose(loss, [-1.2, 1.8], rtol=1e-6)  # 3 clipped to 1.2; 0.9 inside the clip
    kl = losses.sequence_kl(tf.math.log(tf.constant([[0.5, 0.5]])), tf.math.log(tf.constant([[0.25, 1.0]])), [[1, 1]])
    np.testing.assert_allclose(kl, [math.log(2) - math.log(2)], atol=1e-6)  # k1 per token, summed: can cancel
