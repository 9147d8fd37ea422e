"""Token-level PPO maths (pipeline/lm/losses.py) against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from pipeline.core import estimators
from pipeline.lm import losses

MASK = tf.constant([[1.0, 1.0, 1.0, 0.0]])


def test_kl_estimators():
    logp, ref = tf.constant([math.log(0.5)]), tf.constant([math.log(0.25)])
    assert float(losses.kl_per_token(logp, ref, "k1")[0]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(losses.kl_per_token(logp, ref, "k3")[0]) == pytest.approx(0.5 - 1 + math.log(2), rel=1e-5)
    same = losses.kl_per_token(logp, logp, "k3")
    assert float(same[0]) == 0.0
    # k3 is never negative, k1 is where the reference is more likely than the policy.
    assert float(losses.kl_per_token(ref, logp, "k1")[0]) < 0 <= float(losses.kl_per_token(ref, logp, "k3")[0])
    with pytest.raises(ValueError, match="k1, k3"):
        losses.kl_per_token(logp, ref, "k2")


def test_token_rewards_put_the_score_on_the_last_real_token():
    rewards, non_score = losses.token_rewards(tf.constant([2.0]), tf.constant([[0.1, 0.2, 0.3, 0.7]]), 0.5, MASK)
    np.testing.assert_allclose(non_score.numpy(), [[-0.05, -0.1, -0.15, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(rewards.numpy(), [[-0.05, -0.1, 1.85, 0.0]], rtol=1e-6)


def test_token_gae_by_hand():
    values = tf.constant([[1.0, 2.0, 3.0, 9.0]])
    rewards = tf.constant([[0.0, 0.0, 1.0, 5.0]])  # the padding token's reward and value must not count
    advantages, returns = losses.token_gae(values, rewards, MASK, gamma=1.0, lam=0.5)
    # t=2: 1 - 3 = -2; t=1: (3 - 2) + 0.5 * -2 = 0; t=0: (2 - 1) + 0.5 * 0 = 1
    np.testing.assert_allclose(advantages.numpy(), [[1.0, 0.0, -2.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(returns.numpy(), [[2.0, 2.0, 1.0, 0.0]], atol=1e-6)


def test_policy_loss_by_hand():
    logprobs = tf.constant([[math.log(1.5), math.log(0.5), 0.0]])
    loss, clipfrac, approxkl, ratio = losses.policy_loss(
        logprobs, tf.zeros([1, 3]), tf.constant([[1.0, 1.0, -1.0]]), tf.ones([1, 3]), clip_ratio=0.2
    )
    assert float(loss) == pytest.approx((-1.2 - 0.5 + 1.0) / 3, rel=1e-5)
    assert float(clipfrac) == pytest.approx(1 / 3, rel=1e-6)
    # k3 of each log ratio: (r - 1) - log r.
    assert float(approxkl) == pytest.approx(((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 3, rel=1e-5)
    assert float(ratio) == pytest.approx((1.5 + 0.5 + 1.0) / 3, rel=1e-6)


def test_ratio_is_exactly_one_and_loss_is_minus_mean_advantage_before_any_update():
    logprobs = tf.constant([[-1.3, -0.2, -4.0, -9.0]])
    advantages = tf.constant([[0.5, -1.0, 2.0, 100.0]])
    loss, clipfrac, approxkl, ratio = losses.policy_loss(logprobs, logprobs, advantages, MASK, 0.2)
    assert float(ratio) == 1.0 and float(clipfrac) == 0.0 and float(approxkl) == 0.0
    assert float(loss) == pytest.approx(-(0.5 - 1.0 + 2.0) / 3, rel=1e-6)


def test_value_loss_by_hand():
    # v = 2, v_old = 1, R = 3: clipped to 1.5, errors 1 and 2.25 -> 2.25; v = 0, v_old = 1, R = 0: clipped to
    # 0.5, errors 0 and 0.25 -> 0.25. Mean, with no 1/2 (train.value_coef's convention).
    loss, clipfrac = losses.value_loss(
        tf.constant([[2.0, 0.0]]), tf.constant([[1.0, 1.0]]), tf.constant([[3.0, 0.0]]), tf.ones([1, 2]), value_clip=0.5
    )
    assert float(loss) == pytest.approx((2.25 + 0.25) / 2, rel=1e-6)
    assert float(clipfrac) == 1.0


def test_masked_whiten():
    x = tf.constant([[1.0, 2.0, 3.0, 100.0]])
    white = estimators.whiten(x, MASK)
    np.testing.assert_allclose(white.numpy()[0, :3], [-1.2247449, 0.0, 1.2247449], rtol=1e-5)
    shifted = estimators.whiten(x, MASK, shift_mean=False)
    np.testing.assert_allclose(shifted.numpy()[0, :3], [0.7752551, 2.0, 3.2247449], rtol=1e-5)
    np.testing.assert_allclose(estimators.whiten(x[:, :3]).numpy(), white.numpy()[:, :3], rtol=1e-6)  # no mask


def test_losses_over_micro_batches_add_up_to_the_minibatch_mean():
    """Micro-batches hold different token counts (rows end at their EOS): each part divided by the minibatch's
    count adds up to the minibatch's mean; the mean of the parts' own means does not."""
    logprobs, old = (
        tf.constant([[-1.0, -2.0, -0.5], [-0.3, -1.1, -2.2]]),
        tf.constant([[-1.2, -1.9, -0.7], [-0.2, -1.0, -2.5]]),
    )
    advantages, mask = (
        tf.constant([[1.0, -0.5, 2.0], [0.3, 0.7, -1.0]]),
        tf.constant([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
    )
    whole = losses.policy_loss(logprobs, old, advantages, mask, 0.2)
    count = tf.reduce_sum(mask)
    parts = [
        losses.policy_loss(logprobs[i : i + 1], old[i : i + 1], advantages[i : i + 1], mask[i : i + 1], 0.2, count)
        for i in range(2)
    ]
    for k in range(4):
        assert float(parts[0][k] + parts[1][k]) == pytest.approx(float(whole[k]), rel=1e-6)
    own_means = [
        losses.policy_loss(logprobs[i : i + 1], old[i : i + 1], advantages[i : i + 1], mask[i : i + 1], 0.2)[0]
        for i in range(2)
    ]
    assert float(own_means[0] + own_means[1]) / 2 != pytest.approx(float(whole[0]), rel=1e-3)


def test_adaptive_kl_coefficient_moves_toward_target():
    assert losses.adaptive_kl_coef(0.1, 12.0, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    assert losses.adaptive_kl_coef(0.1, 3.0, 6.0, 10_000, 256) < 0.1
    # A toy system whose KL falls as the coefficient rises settles near the target.
    coef = 0.01
    for _ in range(3000):
        kl = 0.6 / coef**0.5 * 0.1
        coef = losses.adaptive_kl_coef(coef, kl, 0.3, 1000, 64)
    assert 0.6 / coef**0.5 * 0.1 == pytest.approx(0.3, rel=0.05)
