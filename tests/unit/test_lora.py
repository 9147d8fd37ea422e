"""LoRA PPO (model.lora_rank): the reference is the base network with its adapters off, only the adapters and the
value head train, checkpoints hold the adapters apart from the base, and the export's merged copy answers as the
adapted policy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models import lm as lm_lib
from models import lora
from pipeline.lm.config import LMPPOConfig
from pipeline.lm.ppo import LMPPOLearner
from tests.greedy import assert_near_greedy
from tests.unit.test_lm_ppo import ARCHITECTURES, SIZE, prompts, target_token_rate

ADAPTERS = lora.Adapters(rank=4, alpha=4.0, targets=("query", "value"))
FOUR = np.full(8, 4)  # the prompt lengths of 8 sequences


def pretrained_like():
    """The tiny GPT-2 with its token embeddings scaled up, as a trained model's are: at initialisation (std 0.02)
    its logits span ~±0.6 whatever the attention layers do, so adapters on them could not move the policy far."""
    lm = lm_lib.build_causal_lm(SIZE, seed=0)
    embeddings = lm.backbone.token_embedding.embeddings
    embeddings.assign(embeddings * 20.0)
    return lm


def make(**settings):
    defaults = dict(
        max_new_tokens=8, learning_rate=1e-2, num_epochs=4, kl_coef=0.01, jit_generation=False, jit_update=False
    )
    return LMPPOLearner(
        pretrained_like(), LMPPOConfig(**{**defaults, **settings}), eos_id=None, seed=0, adapters=ADAPTERS
    )


def outputs(lm, ids):
    return lm_lib.forward(lm, tf.constant(ids, tf.int32))[0].numpy()


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_adapters_start_at_the_base_train_alone_and_merge_into_an_equal_copy(architecture):
    lm = ARCHITECTURES[architecture]()
    ids = prompts(np.random.default_rng(0), batch=3)
    base = outputs(lm, ids)
    layers = lora.enable(lm, lora.Adapters(rank=2, alpha=4.0, targets=("query", "value", "attention_output")))
    assert {layer.name for layer in layers} == {"query", "value", "attention_output"} and len(layers) == 6
    np.testing.assert_array_equal(outputs(lm, ids), base)  # B = 0: exactly the base
    # Only the adapter matrices train: not the adapted layers' biases (GPT-2's and Qwen 2's have them).
    assert {v.path for v in lm.trainable_variables} == set(lora.adapter_variables(lm)) != set()
    for layer in layers:
        layer.lora_b.assign(tf.random.normal(layer.lora_b.shape, seed=1))
    adapted = outputs(lm, ids)
    assert np.abs(adapted - base).max() > 1e-2
    with lora.adapters_off(lm):
        np.testing.assert_array_equal(outputs(lm, ids), base)
    merged = lm_lib.copy_lm(lm, trainable=False)
    assert not lora.adapted_layers(merged) and len(merged.weights) == len(ARCHITECTURES[architecture]().weights)
    np.testing.assert_allclose(outputs(merged, ids), adapted, atol=1e-5)


def test_adapters_have_peft_shapes_and_parameter_counts():
    """PEFT's LoRA on an nn.Linear(in, out): A [r, in] and B [out, r], r * (in + out) parameters. keras-hub's query
    kernel [hidden, heads, head_dim] is one such matrix of hidden x (heads * head_dim)."""
    lm = ARCHITECTURES["llama"]()  # grouped-query attention: key and value narrower than query
    backbone, rank = lm.backbone, 4
    layers = lora.enable(lm, lora.Adapters(rank, 8.0, targets=("query", "value", "feedforward_gate_dense")))
    hidden, head_dim = backbone.hidden_dim, backbone.hidden_dim // backbone.num_query_heads
    expected = {
        "query": (hidden, backbone.num_query_heads * head_dim),
        "value": (hidden, backbone.num_key_value_heads * head_dim),
        "feedforward_gate_dense": (hidden, backbone.intermediate_dim),
    }
    for layer in layers:
        fan_in, fan_out = expected[layer.name]
        assert tuple(layer.lora_a.shape) == (fan_in, rank) and tuple(layer.lora_b.shape) == (rank, fan_out)
    trainable = sum(int(np.prod(v.shape)) for v in lm.trainable_variables)
    per_layer = sum(rank * (fan_in + fan_out) for fan_in, fan_out in expected.values())
    assert trainable == backbone.num_layers * per_layer  # PEFT's formula, and nothing else trains
    # x.A.B beside x.W equals x.(W + alpha / r A.B): the merged copy's output, for each adapted layer's shape
    for layer in layers:
        layer.lora_b.assign(tf.random.normal(layer.lora_b.shape, seed=2))
    ids = prompts(np.random.default_rng(1), batch=2)
    np.testing.assert_allclose(outputs(lm_lib.copy_lm(lm, trainable=False), ids), outputs(lm, ids), atol=1e-4)


def test_lora_ppo_moves_only_adapters_and_value_head_keeps_the_reference_and_learns():
    learner = make()
    assert learner.reference is None  # no second copy of the weights
    frozen = {v.path: v.numpy() for v in learner.policy.weights if v.path not in lora.adapter_variables(learner.policy)}
    adapters_before = {path: v.numpy() for path, v in lora.adapter_variables(learner.policy).items()}
    head_before = [v.numpy() for v in learner.value_head.weights]
    fixed = np.random.default_rng(9).integers(0, SIZE.vocabulary_size, size=(8, 4 + 8))  # prompts + responses
    reference_before = learner.log_probs(fixed, FOUR)[1]
    rng = np.random.default_rng(0)
    stats = [learner.step(prompts(rng), target_token_rate)[0] for _ in range(30)]
    # Iteration 0: the policy is the reference exactly, and sampling and scoring use one distribution.
    assert stats[0]["objective/kl"] == 0.0 and stats[0]["policy/first_ratio_max_deviation"] < 1e-5
    # Adapters on query and value alone raise the rewarded token's rate from ~1/16.
    assert np.mean([s["objective/scores"] for s in stats[:3]]) < 0.2
    assert np.mean([s["objective/scores"] for s in stats[-5:]]) > 0.6, [s["objective/scores"] for s in stats]
    for path, value in frozen.items():
        np.testing.assert_array_equal(_variable(learner.policy, path), value)
    assert all(
        (v.numpy() != adapters_before[p]).any()
        for p, v in lora.adapter_variables(learner.policy).items()
        if p.endswith("lora_b")
    )
    assert any((v.numpy() != b).any() for v, b in zip(learner.value_head.weights, head_before))
    policy_after, reference_after = learner.log_probs(fixed, FOUR)
    np.testing.assert_array_equal(reference_after, reference_before)  # the reference did not train
    assert np.abs(policy_after - reference_after).max() > 0.1

    # The export's policy: adapters merged into the kernels, no adapters left, the adapted policy's answers.
    merged = learner.servable_policy()
    assert not lora.adapted_layers(merged)
    np.testing.assert_allclose(outputs(merged, fixed), outputs(learner.policy, fixed), atol=1e-4)
    greedy = lm_lib.sample(merged, tf.constant(fixed[:, :4]), 8, 0.0, tf.constant([0, 0], tf.int64)).numpy()
    for row, row_logits in zip(greedy, outputs(learner.policy, greedy)):
        assert_near_greedy(row_logits, row, start=4)


def _variable(lm, path: str) -> np.ndarray:
    return next(v for v in lm.weights if v.path == path).numpy()


@pytest.mark.parametrize("value_model", ["shared", "separate"])
def test_checkpoint_holds_adapters_apart_from_the_base_and_resumes_them(tmp_path, value_model):
    learner = make(value_model=value_model, num_epochs=2)
    rng = np.random.default_rng(3)
    learner.step(prompts(rng), target_token_rate)
    path = learner.checkpoint().save(str(tmp_path / "ckpt"))
    saved = dict(tf.train.list_variables(path))
    trunks = [name for name in saved if name.startswith(("policy/", "value_trunk/"))]
    assert all(".Slora_" in name for name in trunks), trunks  # no base weight
    assert len(trunks) == 8 * (2 if value_model == "separate" else 1)  # A and B of 2 layers x 2 targets, each trunk
    # Adapters and value head, Adam's two moments of each, a few counters: nothing of the base's size.
    trained = sum(np.prod(v.shape) for v in learner.variables)
    assert 3 * trained <= sum(np.prod(shape) for shape in saved.values()) < 3 * trained + 100

    resumed = make(value_model=value_model, num_epochs=2)  # a fresh base, as a resumed run loads it
    resumed.checkpoint().restore(path).assert_consumed()
    fixed = learner.generate(prompts(np.random.default_rng(4), batch=8))  # both draw: their generators stay equal
    np.testing.assert_array_equal(resumed.generate(prompts(np.random.default_rng(4), batch=8)), fixed)
    for ours, theirs in zip(learner.log_probs(fixed, FOUR), resumed.log_probs(fixed, FOUR)):
        np.testing.assert_array_equal(ours, theirs)
    # The same next iteration: same adapters, optimizer moments, value head, generator and KL coefficient.
    batch = prompts(rng)
    a, b = learner.step(batch, target_token_rate)[0], resumed.step(batch, target_token_rate)[0]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-6)
