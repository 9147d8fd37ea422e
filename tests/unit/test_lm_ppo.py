"""LM PPO on a tiny keras-hub GPT-2: exact start conditions, KV-cache sampling, and a task PPO must learn."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import lm as lm_lib
from pipeline.config import LMPPOConfig
from pipeline.lm.ppo import LMPPOLearner

SIZE = lm_lib.LMSize(vocabulary_size=16, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
                     max_sequence_length=16)
TARGET = 5


def target_token_rate(prompts, responses):
    return (responses == TARGET).mean(axis=1)


def make(eos_id=None, precision="float32", **settings):
    """XLA off unless asked: compiling costs seconds per learner and the tests build several."""
    defaults = dict(max_new_tokens=8, learning_rate=3e-3, num_epochs=4, kl_coef=0.01, jit_generation=False,
                    jit_update=False)
    return LMPPOLearner(lm_lib.build_causal_lm(SIZE, seed=0, precision=precision),
                        LMPPOConfig(**{**defaults, **settings}), eos_id, seed=0)


def prompts(rng, batch=32):
    return rng.integers(0, SIZE.vocabulary_size, size=(batch, 4))


@pytest.mark.parametrize("jit, options", [
    (True, {}), (False, {}), (False, {"top_k": 4, "top_p": 0.8}),
    (False, {"value_model": "separate", "gradient_accumulation_steps": 2, "precision": "mixed_bfloat16"})])
def test_kl_is_exactly_zero_and_first_ratio_exactly_one_before_any_update(jit, options):
    learner = make(num_minibatches=4, jit_generation=jit, jit_update=jit, **options)
    stats, _, _ = learner.step(prompts(np.random.default_rng(0)), target_token_rate)
    assert stats["objective/kl"] == 0.0
    assert stats["policy/first_ratio_max_deviation"] == 0.0
    assert stats["objective/non_score_reward"] == 0.0


def test_ppo_learns_to_emit_the_rewarded_token():
    learner = make()
    rng = np.random.default_rng(0)
    rates = [learner.step(prompts(rng), target_token_rate)[0]["objective/scores"] for _ in range(30)]
    assert np.mean(rates[:3]) < 0.15  # about 1/16 at the start
    assert np.mean(rates[-5:]) > 0.6, rates
    stats, _, _ = learner.step(prompts(rng), target_token_rate)
    assert stats["objective/kl"] > 0.0  # the policy moved away from the frozen reference


def test_adaptive_kl_coefficient_moves_toward_its_target():
    learner = make(kl_target=0.01, kl_horizon=100)
    rng = np.random.default_rng(1)
    coefs = []
    for _ in range(6):
        stats, _, _ = learner.step(prompts(rng), target_token_rate)
        coefs.append(float(learner.kl_coef))
    # The KL grows past the small target as the policy learns, so the coefficient must rise.
    assert stats["objective/kl"] > 0.01 and coefs[-1] > 0.01 and coefs == sorted(coefs)


def test_kv_cache_sampling_matches_full_forward_decoding():
    policy = lm_lib.build_causal_lm(SIZE, seed=3)
    prompt = tf.constant(prompts(np.random.default_rng(2), batch=4), tf.int32)
    # A tiny temperature makes sampling greedy; greedy decoding by full forward passes must agree.
    cached = lm_lib.sample(policy, prompt, 8, temperature=1e-6, seed=tf.constant([1, 2], tf.int64)).numpy()
    tokens = prompt.numpy()
    for _ in range(8):
        logits, _ = lm_lib.forward(policy, tf.constant(tokens))
        tokens = np.concatenate([tokens, np.argmax(logits[:, -1].numpy(), axis=-1)[:, None]], axis=1)
    np.testing.assert_array_equal(cached, tokens)


def test_response_mask_and_missing_eos_penalty():
    mask = lm_lib.response_mask(tf.constant([[3, 1, 4, 1], [2, 2, 2, 2]]), eos_id=1).numpy()
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert lm_lib.response_mask(tf.constant([[1, 1]]), eos_id=None).numpy().tolist() == [[1, 1]]
    learner = make(eos_id=TARGET, missing_eos_penalty=1.0)
    rng = np.random.default_rng(0)
    stats, sequences, scores = learner.step(prompts(rng), lambda p, r: np.arange(len(r), dtype=float))
    responses = sequences[:, 4:]
    missing = (~(responses == TARGET).any(axis=1)).mean()
    assert 0 < missing < 1
    assert stats["objective/scores"] == pytest.approx(np.arange(len(responses)).mean() - missing)
    np.testing.assert_array_equal(scores, np.arange(len(responses)))  # what score_fn said, before the penalty


def test_sampling_logits_keep_the_top_k_and_the_top_p_nucleus():
    logits = tf.math.log(tf.constant([[0.05, 0.5, 0.15, 0.3]]))
    kept = lambda filtered: (filtered.numpy() > lm_lib.FILTERED_LOGIT).astype(int).tolist()  # noqa: E731
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_k=2)) == [[0, 1, 0, 1]]
    # Sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95 -> top_p 0.7 keeps the first two.
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.7)) == [[0, 1, 0, 1]]
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.85)) == [[0, 1, 1, 1]]
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.3)) == [[0, 1, 0, 0]]  # never empty
    # Kept tokens renormalise: top-2 of (0.5, 0.3) -> 0.625, 0.375.
    log_probs = lm_lib.token_log_probs(tf.concat([logits, logits], 0), tf.constant([1, 3]), 1.0, top_k=2).numpy()
    np.testing.assert_allclose(np.exp(log_probs), [0.625, 0.375], rtol=1e-6)


def test_draw_follows_the_softmax_and_never_draws_a_filtered_token():
    probs = np.array([0.1, 0.0, 0.6, 0.0, 0.3])  # 0.0: filtered, as sampling_logits leaves them
    logits = tf.constant(np.where(probs > 0, np.log(np.maximum(probs, 1e-30)), lm_lib.FILTERED_LOGIT)[None].repeat(
        4000, axis=0), tf.float32)
    drawn = lm_lib.draw(logits, tf.constant([3, 4], tf.int64)).numpy()
    counts = np.bincount(drawn, minlength=5) / len(drawn)
    assert counts[1] == counts[3] == 0
    np.testing.assert_allclose(counts, probs, atol=0.03)  # 4000 draws: standard error <= 0.008
    # Filtered tokens at both ends of the vocabulary, where a CDF search would fall on them first.
    ends_filtered = tf.constant([[lm_lib.FILTERED_LOGIT, 0.0, lm_lib.FILTERED_LOGIT, 0.0, lm_lib.FILTERED_LOGIT]])
    drawn = [int(lm_lib.draw(ends_filtered, tf.constant([seed, 0], tf.int64))[0]) for seed in range(50)]
    assert set(drawn) == {1, 3}


def test_top_k_sampling_draws_only_kept_tokens_and_top_1_is_greedy():
    policy = lm_lib.build_causal_lm(SIZE, seed=3)
    prompt = tf.constant(prompts(np.random.default_rng(2), batch=8), tf.int32)
    seed = tf.constant([1, 2], tf.int64)
    greedy = lm_lib.sample(policy, prompt, 6, temperature=0.0, seed=seed).numpy()
    np.testing.assert_array_equal(lm_lib.sample(policy, prompt, 6, 1.0, seed, top_k=1).numpy(), greedy)
    drawn = lm_lib.sample(policy, prompt, 6, 1.0, seed, top_k=3).numpy()
    logits, _ = lm_lib.forward(policy, tf.constant(drawn))
    top3 = tf.math.top_k(logits[:, 3:-1], k=3).indices.numpy()
    assert (top3 == drawn[:, 4:, None]).any(axis=-1).all()


def test_right_padded_prompts_of_different_lengths_decode_as_if_alone():
    policy = lm_lib.build_causal_lm(SIZE, seed=3)
    rows = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3]]
    padded = tf.constant([row + [0] * (5 - len(row)) for row in rows], tf.int32)
    seed = tf.constant([0, 0], tf.int64)
    together = lm_lib.sample(policy, padded, 4, 0.0, seed, prompt_lengths=tf.constant([5, 2, 3])).numpy()
    for row, out in zip(rows, together):
        alone = lm_lib.sample(policy, tf.constant([row]), 4, 0.0, seed).numpy()[0]
        np.testing.assert_array_equal(out[:len(row) + 4], alone)


def test_gradient_accumulation_takes_the_same_step_as_the_whole_minibatch():
    rng_prompts = prompts(np.random.default_rng(4), batch=16)
    after = []
    for steps in (1, 2):
        learner = make(num_epochs=1, num_minibatches=2, gradient_accumulation_steps=steps)
        learner.step(rng_prompts, target_token_rate)  # no EOS: every micro-batch holds as many tokens
        after.append([v.numpy() for v in learner.variables])
    for whole, accumulated in zip(*after):
        np.testing.assert_allclose(accumulated, whole, rtol=1e-4, atol=1e-6)


def test_separate_value_model_trains_its_own_trunk_and_checkpoints_it(tmp_path):
    learner = make(value_model="separate", num_epochs=2)  # the zero-initialised head passes gradients from step 2
    trunk_before = [v.numpy() for v in learner.value_trunk.backbone.trainable_variables]
    policy_before = [v.numpy() for v in learner.policy.backbone.trainable_variables]
    learner.step(prompts(np.random.default_rng(5)), target_token_rate)
    assert any((v.numpy() != b).any() for v, b in zip(learner.value_trunk.backbone.trainable_variables, trunk_before))
    assert any((v.numpy() != b).any() for v, b in zip(learner.policy.backbone.trainable_variables, policy_before))
    path = learner.checkpoint().save(str(tmp_path / "ckpt"))
    fresh = make(value_model="separate", num_epochs=2)
    fresh.checkpoint().restore(path).assert_consumed()
    for a, b in zip(fresh.value_trunk.backbone.variables, learner.value_trunk.backbone.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_weights():
    learner = make(precision="mixed_bfloat16", num_epochs=1)
    logits, _ = lm_lib.forward(learner.policy, tf.constant(prompts(np.random.default_rng(0), batch=2)))
    assert logits.dtype == tf.bfloat16
    assert {tf.as_dtype(v.dtype) for v in learner.variables} == {tf.float32}
    stats, _, _ = learner.step(prompts(np.random.default_rng(6)), target_token_rate)
    assert np.isfinite(stats["loss/policy"]) and np.isfinite(stats["loss/value"])
