"""LM PPO on a tiny keras-hub GPT-2: exact start conditions, KV-cache sampling, and a task PPO must learn."""

from __future__ import annotations

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from export.lm_servable import core_op_cache_updates
from models import lm as lm_lib
from pipeline.lm.config import LMPPOConfig
from pipeline.lm.ppo import LMPPOLearner
from pipeline.lm.rewards import Scores
from tests.greedy import TIE_TOLERANCE, assert_near_greedy

SIZE = lm_lib.LMSize(
    vocabulary_size=16, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
)
TARGET = 5


def target_token_rate(rows, responses):
    return Scores.of((responses == TARGET).mean(axis=1), "target_token_rate")


def make(eos_id=None, precision="float32", **settings):
    """XLA off unless asked: compiling costs seconds per learner and the tests build several."""
    defaults = dict(
        max_new_tokens=8, learning_rate=3e-3, num_epochs=4, kl_coef=0.01, jit_generation=False, jit_update=False
    )
    return LMPPOLearner(
        lm_lib.build_causal_lm(SIZE, seed=0, precision=precision),
        LMPPOConfig(**{**defaults, **settings}),
        eos_id,
        seed=0,
    )


def prompts(rng, batch=32):
    return rng.integers(0, SIZE.vocabulary_size, size=(batch, 4))


@pytest.mark.parametrize(
    "jit, options",
    [
        (True, {}),
        (False, {}),
        (False, {"top_k": 4, "top_p": 0.8}),
        (False, {"value_model": "separate", "gradient_accumulation_steps": 2, "precision": "mixed_bfloat16"}),
    ],
)
def test_kl_is_zero_and_first_ratio_one_before_any_update(jit, options):
    learner = make(num_minibatches=4, jit_generation=jit, jit_update=jit, **options)
    stats, _, _ = learner.step(prompts(np.random.default_rng(0)), target_token_rate)
    # Policy and reference: one computation on equal weights, so equal bits.
    assert stats["objective/kl"] == 0.0
    assert stats["objective/non_score_reward"] == 0.0
    # The first step's log-probs come from a minibatch (another batch size, another kernel maybe): equal to
    # rounding, bfloat16's where it computes in bfloat16. A scoring distribution other than the sampling one
    # (temperature, filter) is off by far more.
    tolerance = 5e-2 if options.get("precision") == "mixed_bfloat16" else 1e-5
    assert stats["policy/first_ratio_max_deviation"] < tolerance


def test_ppo_learns_to_emit_the_rewarded_token():
    learner = make()
    rng = np.random.default_rng(0)
    rates = [learner.step(prompts(rng), target_token_rate)[0]["objective/scores"] for _ in range(30)]
    assert np.mean(rates[:3]) < 0.15  # about 1/16 at the start
    assert np.mean(rates[-5:]) > 0.6, rates
    stats, _, _ = learner.step(prompts(rng), target_token_rate)
    assert stats["objective/kl"] > 0.0  # the policy moved away from the frozen reference


def test_adaptive_kl_coefficient_moves_toward_its_target():
    learner = make(adaptive_kl_target=0.01, adaptive_kl_horizon=100)
    rng = np.random.default_rng(1)
    coefs = []
    for _ in range(6):
        stats, _, _ = learner.step(prompts(rng), target_token_rate)
        coefs.append(float(learner.kl_coef))
    # The KL grows past the small target as the policy learns, so the coefficient must rise.
    assert stats["objective/kl"] > 0.01 and coefs[-1] > 0.01 and coefs == sorted(coefs)


def tiny(backbone_cls, causal_lm_cls, **extra):
    """A tiny model of a family of models/checkpoints.py's SUPPORTED, from its constructor (rotary positions,
    grouped-query attention: 4 query heads over 2 key/value heads)."""

    def build(seed=3):
        keras.utils.set_random_seed(seed)
        backbone = backbone_cls(
            vocabulary_size=SIZE.vocabulary_size,
            num_layers=2,
            num_query_heads=4,
            num_key_value_heads=2,
            hidden_dim=32,
            intermediate_dim=64,
            **extra,
        )
        return causal_lm_cls(backbone=backbone, preprocessor=None)

    return build


llama = tiny(keras_hub.models.Llama3Backbone, keras_hub.models.Llama3CausalLM)
ARCHITECTURES = {
    "gpt2": lambda: lm_lib.build_causal_lm(SIZE, seed=3),
    "llama": llama,
    "llama2": tiny(keras_hub.models.LlamaBackbone, keras_hub.models.LlamaCausalLM),
    "mistral": tiny(keras_hub.models.MistralBackbone, keras_hub.models.MistralCausalLM),
    "qwen2": tiny(keras_hub.models.QwenBackbone, keras_hub.models.QwenCausalLM),
    "qwen3": tiny(keras_hub.models.Qwen3Backbone, keras_hub.models.Qwen3CausalLM, head_dim=8),
}
# (architecture, keras-hub's generic cache path): GPT-2 both ways, the others through keras-hub's.
DECODERS = [("gpt2", False), ("gpt2", True), ("llama", False)]
ALL_DECODERS = DECODERS + [(name, False) for name in ("llama2", "mistral", "qwen2", "qwen3")]


def cached_logits(lm, sequences, prompt_length: int, generic: bool):
    """[B, R, V] logits of each response position through the sampler's KV-cache decoder, teacher-forced."""
    decoder = (
        lm_lib._KerasHubDecoder if generic or not isinstance(lm, keras_hub.models.GPT2CausalLM) else lm_lib._Gpt2Decoder
    )
    sequences = tf.constant(sequences, tf.int32)
    cache, logits = decoder.start(lm, sequences[:, :prompt_length], sequences, tf.constant(prompt_length))
    out = [logits]
    for index in range(prompt_length, sequences.shape[1] - 1):
        logits, cache = decoder.step(lm, sequences[:, index : index + 1], cache, tf.constant(index))
        out.append(logits)
    return tf.stack(out, axis=1).numpy()


@pytest.mark.parametrize("architecture, generic", ALL_DECODERS)
def test_kv_cache_sampling_matches_full_forward_decoding(architecture, generic):
    policy = ARCHITECTURES[architecture]()
    prompt = tf.constant(prompts(np.random.default_rng(2), batch=4), tf.int32)
    # Greedy (temperature 0) and a tiny temperature: every token is the best under full forward passes (to a
    # near-tie: the two paths run other kernels), and the cached decode's log-probs are the full forward's.
    for temperature in (0.0, 1e-6):
        cached = lm_lib.sample(
            policy, prompt, 8, temperature=temperature, seed=tf.constant([1, 2], tf.int64), generic_cache=generic
        ).numpy()
        logits = lm_lib.forward(policy, tf.constant(cached))[0].numpy()
        for row, row_logits in zip(cached, logits):
            assert_near_greedy(row_logits, row, start=4)
    np.testing.assert_allclose(
        tf.nn.log_softmax(cached_logits(policy, cached, 4, generic)).numpy(),
        tf.nn.log_softmax(logits[:, 3:-1]).numpy(),
        atol=1e-5,
    )
    # The learner's LM head (the token embedding's reverse, over the backbone's output) is the model's own.
    own = policy({"token_ids": tf.constant(cached), "padding_mask": tf.ones_like(cached)}).numpy()
    np.testing.assert_allclose(logits, own, atol=1e-5)
    # A stale cache position would fail that: the same decode with each step's logits one position late does.
    shifted = np.concatenate([logits[:, :1], logits[:, :-1]], axis=1)
    with pytest.raises(AssertionError):
        for row, row_logits in zip(cached, shifted):
            assert_near_greedy(row_logits, row, start=4)


def test_response_mask_and_missing_eos_penalty():
    mask = lm_lib.response_mask(tf.constant([[3, 1, 4, 1], [2, 2, 2, 2]]), eos_id=1).numpy()
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert lm_lib.response_mask(tf.constant([[1, 1]]), eos_id=None).numpy().tolist() == [[1, 1]]
    learner = make(eos_id=TARGET, missing_eos_penalty=1.0)
    rng = np.random.default_rng(0)
    stats, sequences, scores = learner.step(prompts(rng), lambda rows, r: Scores.of(np.arange(len(r)), "index"))
    responses = sequences[:, 4:]
    missing = (~(responses == TARGET).any(axis=1)).mean()
    assert 0 < missing < 1
    assert stats["objective/scores"] == pytest.approx(np.arange(len(responses)).mean() - missing)
    np.testing.assert_array_equal(scores.total, np.arange(len(responses)))  # what score_fn said, before the penalty


def test_sampling_logits_keep_the_top_k_and_the_top_p_nucleus():
    logits = tf.math.log(tf.constant([[0.05, 0.5, 0.15, 0.3]]))
    kept = lambda filtered: (filtered.numpy() > lm_lib.FILTERED_LOGIT).astype(int).tolist()  # noqa: E731
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_k=2)) == [[0, 1, 0, 1]]
    # Sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95 -> top_p 0.7 keeps the first two.
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.7)) == [[0, 1, 0, 1]]
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.85)) == [[0, 1, 1, 1]]
    assert kept(lm_lib.sampling_logits(logits, 1.0, top_p=0.3)) == [[0, 1, 0, 0]]  # never empty
    # Kept tokens renormalise: top-2 of (0.5, 0.3) -> 0.625, 0.375.
    both, tokens = tf.concat([logits, logits], 0), tf.constant([1, 3])
    kept = lm_lib.kept_tokens(both, tokens, 1.0, top_k=2)
    log_probs = lm_lib.token_log_probs(both, tokens, 1.0, kept=kept).numpy()
    np.testing.assert_allclose(np.exp(log_probs), [0.625, 0.375], rtol=1e-6)


def test_draw_follows_the_softmax_and_never_draws_a_filtered_token():
    probs = np.array([0.1, 0.0, 0.6, 0.0, 0.3])  # 0.0: filtered, as sampling_logits leaves them
    logits = tf.constant(
        np.where(probs > 0, np.log(np.maximum(probs, 1e-30)), lm_lib.FILTERED_LOGIT)[None].repeat(4000, axis=0),
        tf.float32,
    )
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
    # Each drawn token is among the 3 best under a full forward pass (to a near-tie at the 3rd: other kernels).
    third_best = tf.math.top_k(logits[:, 3:-1], k=3).values.numpy()[..., -1]
    drawn_logit = np.take_along_axis(logits[:, 3:-1].numpy(), drawn[:, 4:, None], axis=-1)[..., 0]
    assert (drawn_logit >= third_best - TIE_TOLERANCE).all()


@pytest.mark.parametrize("architecture, generic", DECODERS)
def test_right_padded_prompts_of_different_lengths_decode_as_if_alone(architecture, generic):
    policy = ARCHITECTURES[architecture]()
    rows = [[3, 1, 4, 1, 5], [9, 2], [6, 5, 3]]
    padded = tf.constant([row + [0] * (5 - len(row)) for row in rows], tf.int32)
    seed = tf.constant([0, 0], tf.int64)
    together = lm_lib.sample(
        policy, padded, 4, 0.0, seed, prompt_lengths=tf.constant([5, 2, 3]), generic_cache=generic
    ).numpy()
    for row, out in zip(rows, together):
        np.testing.assert_array_equal(out[: len(row)], row)  # each row keeps its own prompt
        assert not out[len(row) + 4 :].any()  # and gets 4 new tokens, not 4 past the longest prompt
        # Its continuation is its own prompt's greedy decode: the padding after a short prompt is not attended to.
        own = out[: len(row) + 4]
        assert_near_greedy(lm_lib.forward(policy, tf.constant([own]))[0].numpy()[0], own, start=len(row))


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


def test_a_bfloat16_reference_holds_half_the_bytes_and_gives_a_near_zero_kl_at_the_start():
    learner = make(reference_precision="bfloat16", num_epochs=1)
    assert {tf.as_dtype(v.dtype) for v in learner.reference.weights} == {tf.bfloat16}
    assert sum(v.numpy().nbytes for v in learner.reference.weights) * 2 == sum(
        v.numpy().nbytes for v in learner.policy.weights
    )
    stats, _, _ = learner.step(prompts(np.random.default_rng(0)), target_token_rate)
    # The policy is the reference rounded to bfloat16: not 0 (the float32 reference's), but small.
    assert 0.0 < abs(stats["objective/kl"]) < 0.05 and stats["policy/first_ratio_max_deviation"] < 1e-5


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_weights():
    learner = make(precision="mixed_bfloat16", num_epochs=1)
    logits, _ = lm_lib.forward(learner.policy, tf.constant(prompts(np.random.default_rng(0), batch=2)))
    assert logits.dtype == tf.bfloat16
    assert {tf.as_dtype(v.dtype) for v in learner.variables} == {tf.float32}
    stats, _, _ = learner.step(prompts(np.random.default_rng(6)), target_token_rate)
    assert np.isfinite(stats["loss/policy"]) and np.isfinite(stats["loss/value"])


# === Filtered sampling (top-k / top-p) over many updates ===


def test_reference_is_scored_on_the_policys_kept_set_by_hand():
    """Policy logits [3, 2, 1, 0], reference [3, 0, 2, 1], top-k 2, token 1 sampled: the kept set is the policy's
    {0, 1}; log p = 2 - log(e^3 + e^2), log q = 0 - log(e^3 + e^0), so k1 = 1.7353 (the reference's own top-2,
    {0, 2}, does not hold token 1: scored under its own filter it would be ~1e9)."""
    from pipeline.lm import losses

    policy, reference, token = (
        tf.constant([[3.0, 2.0, 1.0, 0.0]]),
        tf.constant([[3.0, 0.0, 2.0, 1.0]]),
        tf.constant([1]),
    )
    kept = lm_lib.kept_tokens(policy, token, temperature=1.0, top_k=2)
    np.testing.assert_array_equal(kept.numpy(), [[True, True, False, False]])
    log_p = lm_lib.token_log_probs(policy, token, kept=kept)
    log_q = lm_lib.token_log_probs(reference, token, kept=kept)
    expected = (2 - np.log(np.exp(3) + np.exp(2))) - (0 - np.log(np.exp(3) + 1))
    assert float(losses.kl_per_token(log_p, log_q, "k1")[0]) == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(1.7353, abs=1e-4)
    # The sampled token always belongs to the kept set, even where rounding put it just outside the filter.
    kept = lm_lib.kept_tokens(policy, tf.constant([3]), temperature=1.0, top_k=2)
    np.testing.assert_array_equal(kept.numpy(), [[True, True, False, True]])


@pytest.mark.parametrize("filters", [{"top_k": 3}, {"top_p": 0.7}, {"top_k": 4, "top_p": 0.8}])
def test_kl_and_policy_stats_stay_finite_over_many_updates_with_top_k_and_top_p(filters):
    """The policy drifts from the reference and from its own earlier kept sets: every statistic stays finite and
    of the size of the policy's actual change (before the fix: objective/kl ~1e9 once a kept token left the
    reference's own filter, policy/approxkl ~1e16 once a sampled token left the updated policy's)."""
    learner = make(learning_rate=1e-2, **filters)
    rng = np.random.default_rng(7)
    history = [learner.step(prompts(rng), target_token_rate)[0] for _ in range(25)]
    for stats in history:
        assert all(np.isfinite(v) for v in stats.values()), stats
        assert abs(stats["objective/kl"]) < 100 and stats["policy/approxkl"] < 10, stats
    assert history[-1]["objective/scores"] > 0.3  # it learnt: the statistics are of a policy that moved
    assert max(s["objective/kl"] for s in history) > 0.1


# === Token counts: gradient accumulation with EOS, EOS statistics ===


def test_gradient_accumulation_with_eos_takes_the_same_step_as_the_whole_minibatch():
    """Rows end at their EOS, so micro-batches hold different numbers of tokens: each token must weigh the same
    (sum over the minibatch's tokens / its token count), whatever the micro-batch it falls in.

    Compared through plain SGD steps, which are linear in the gradient: Adam's first steps are ~lr * sign(g), so
    a gradient component near 0 turns rounding into a full step either way."""
    rng_prompts = prompts(np.random.default_rng(4), batch=16)
    moved, lengths = [], None
    for steps in (1, 4):
        learner = make(eos_id=3, num_epochs=2, num_minibatches=1, gradient_accumulation_steps=steps)
        learner.optimizer = keras.optimizers.SGD(learning_rate=0.1)  # traced on the first step: this one is used
        learner.optimizer.build(learner.variables)
        before = [v.numpy() for v in learner.variables]
        stats, sequences, _ = learner.step(rng_prompts, target_token_rate)
        mask = lm_lib.response_mask(tf.constant(sequences[:, 4:]), 3).numpy()
        lengths = mask.sum(axis=1) if lengths is None else lengths
        np.testing.assert_array_equal(mask.sum(axis=1), lengths)  # the same samples each time
        moved.append(([v.numpy() - b for v, b in zip(learner.variables, before)], stats))
    assert len(set(lengths.tolist())) > 2, lengths  # responses of several lengths: the test means something
    (whole, whole_stats), (accumulated, stats) = moved
    assert any(np.abs(d).max() > 1e-4 for d in whole)  # the steps moved the weights
    for a, b in zip(accumulated, whole):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7)
    for key in ("loss/policy", "loss/value", "policy/approxkl", "objective/entropy"):
        assert stats[key] == pytest.approx(whole_stats[key], rel=1e-4, abs=1e-7), key


def test_eos_statistics_count_real_eos_tokens_not_the_fill_after_them():
    """`sample` stops once every row has its EOS and leaves zeros after; with EOS id 0 those zeros are not EOS
    tokens, and neither is an EOS a row sampled after its first."""
    learner = make(eos_id=0)
    sampled = np.array(
        [
            [1, 2, 3, 4, 6, 0, 7, 0, 0, 0, 0, 0],  # EOS, then a token and an EOS after it
            [1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # EOS first, then the fill
            [1, 2, 3, 4, 6, 7, 8, 9, 0, 0, 0, 0],
        ]
    )
    learner.generate = lambda prompt_ids, use_reference=False, prompt_lengths=None: sampled
    stats, _, _ = learner.step(sampled[:, :4], lambda rows, r: Scores.of(np.zeros(len(r)), "zero"))
    assert stats["val/num_eos_tokens"] == 3


def test_prompts_of_different_lengths_are_sampled_and_scored_each_as_if_alone():
    """A prompt file's prompts differ in length: right-padded in one batch, each row's response follows its own
    prompt (no gap: positions as the model was trained on) and is scored as that row alone, unpadded."""
    learner = make(eos_id=None, top_k=6)
    rng = np.random.default_rng(7)
    lengths = np.array([4, 1, 3, 2, 4, 2, 1, 3])
    padded = prompts(rng, batch=8) * (np.arange(4) < lengths[:, None])  # zeros after each prompt
    stats, sequences, _ = learner.step(padded, target_token_rate, lengths)
    assert stats["objective/kl"] == 0.0 and stats["policy/first_ratio_max_deviation"] < 1e-5
    sequences = learner.generate(padded, prompt_lengths=lengths)
    assert sequences.shape == (8, 4 + 8)
    policy, reference = learner.log_probs(sequences, lengths)
    responses = lm_lib.responses(sequences, lengths, 8).numpy()
    for row, length in enumerate(lengths):
        np.testing.assert_array_equal(sequences[row, :length], padded[row, :length])
        alone = sequences[row : row + 1, : length + 8]
        np.testing.assert_array_equal(responses[row], alone[0, length:])
        own_policy, own_reference = learner.log_probs(alone, [length])
        np.testing.assert_allclose(policy[row], own_policy[0], atol=1e-5)
        np.testing.assert_allclose(reference[row], own_reference[0], atol=1e-5)
    # Scoring the rows as if every prompt were 4 long (a gap after the short ones) gives other numbers.
    assert np.abs(learner.log_probs(sequences, np.full(8, 4))[0] - policy).max() > 1e-3


# === Non-finite numbers stop training before anything is saved ===


def test_a_non_finite_update_raises_instead_of_training_on():
    from pipeline.core.guards import NonFiniteError

    learner = make(learning_rate=1e30, num_epochs=2)
    rng = np.random.default_rng(0)
    with pytest.raises(NonFiniteError, match="ppo"):
        for _ in range(3):
            learner.step(prompts(rng), target_token_rate)


# === Other architectures (keras-hub's own cache path) ===


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_ppo_on_a_llama_policy_starts_at_the_reference_and_updates(value_model):
    learner = LMPPOLearner(
        llama(),
        LMPPOConfig(
            max_new_tokens=8,
            learning_rate=3e-3,
            num_epochs=2,
            num_minibatches=2,
            top_k=6,
            value_model=value_model,
            jit_generation=False,
            jit_update=False,
        ),
        eos_id=None,
        seed=0,
    )
    before = [v.numpy() for v in learner.policy.trainable_variables]
    stats, _, _ = learner.step(prompts(np.random.default_rng(0)), target_token_rate)
    assert stats["objective/kl"] == 0.0 and stats["policy/first_ratio_max_deviation"] < 1e-5
    assert any((v.numpy() != b).any() for v, b in zip(learner.policy.trainable_variables, before))
    assert all(np.isfinite(v) for v in learner.step(prompts(np.random.default_rng(1)), target_token_rate)[0].values())


@pytest.mark.parametrize("architecture, generic", DECODERS)
def test_cache_writes_traced_for_serving_use_stock_ops_only(architecture, generic):
    """TF Serving runs with XLA disabled: the sampling loop traced for an export must hold no Xla* op."""
    policy = ARCHITECTURES[architecture]()

    def serve(prompt_ids):
        return lm_lib.sample(policy, prompt_ids, 4, 0.0, tf.constant([0, 0], tf.int64), generic_cache=generic)

    signature = [tf.TensorSpec([None, None], tf.int32)]
    with core_op_cache_updates():
        graph = tf.function(serve, input_signature=signature, autograph=False).get_concrete_function().graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        ops |= {node.op for node in function.node_def}
    assert not {op for op in ops if op.startswith("Xla")}, ops
    # Without the substitute, keras' cache writes are XlaDynamicUpdateSlice: the check can fail.
    graph = tf.function(serve, input_signature=signature, autograph=False).get_concrete_function().graph
    library = {node.op for function in graph.as_graph_def().library.function for node in function.node_def}
    assert "XlaDynamicUpdateSlice" in {op.type for op in graph.get_operations()} | library


@pytest.mark.parametrize("compiled", [False, True])
def test_the_fused_adam_step_equals_keras_adam(compiled):
    from pipeline.lm.optimizer import SummedGradientsAdam

    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype(np.float32) for shape in ((3, 4), (5,))]
    grads = [[rng.normal(size=x.shape).astype(np.float32) for x in start] for _ in range(3)]
    results = []
    for optimizer in (keras.optimizers.Adam(1e-2), SummedGradientsAdam(1e-2)):
        variables = [tf.Variable(x) for x in start]
        optimizer.build(variables)

        def step(gs, optimizer=optimizer, variables=variables):
            optimizer.apply_gradients(zip(gs, variables))

        step = tf.function(step, jit_compile=True) if compiled else step
        for gs in grads:
            step([tf.constant(g) for g in gs])
        results.append([v.numpy() for v in variables] + [m.numpy() for m in optimizer.variables[2:]])
    assert not np.allclose(results[0][0], start[0], atol=1e-3)  # the steps moved the weights
    for keras_value, fused_value in zip(*results):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=1e-6)
