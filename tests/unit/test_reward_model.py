"""Reward model: the Bradley-Terry loss on hand-computed numbers, reading at the last real token, pair accuracy
well above chance on a separable synthetic set, pairs ranked from samples, and preference-file errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from models import lm as lm_lib
from models import reward_model as rm_lib
from pipeline.lm import preferences as prefs_lib
from pipeline.lm.reward_training import RewardTrainer, bradley_terry_loss, pair_accuracy

SIZE = lm_lib.LMSize(
    vocabulary_size=16, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=16
)
MARKER = 7


def test_bradley_terry_loss_on_hand_computed_numbers():
    # margins 1, 0, 3: -log sigmoid(m) = log(1 + e^-m) = 0.3132617, 0.6931472, 0.0485874
    loss = bradley_terry_loss(tf.constant([1.0, 0.0, 2.0]), tf.constant([0.0, 0.0, -1.0]))
    assert float(loss) == pytest.approx((0.3132617 + 0.6931472 + 0.0485874) / 3, abs=1e-6)
    share = bradley_terry_loss(tf.constant([1.0, 0.0]), tf.constant([0.0, 0.0]), count=3.0)  # a replica's share
    assert float(share) == pytest.approx((0.3132617 + 0.6931472) / 3, abs=1e-6)
    assert float(bradley_terry_loss(tf.constant([50.0]), tf.constant([-50.0]))) == pytest.approx(0.0, abs=1e-12)
    assert float(bradley_terry_loss(tf.constant([-50.0]), tf.constant([50.0]))) == pytest.approx(100.0)  # no inf
    assert pair_accuracy([1.0, 0.0, 2.0], [0.0, 0.0, -1.0]) == pytest.approx(2 / 3)  # a tie counts as wrong


def test_reward_is_read_at_the_last_real_token_of_a_copy_of_the_sft_backbone():
    sft = lm_lib.build_causal_lm(SIZE, seed=0)
    model = rm_lib.from_sft(sft)
    for mine, theirs in zip(model.backbone.get_weights(), sft.backbone.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert model.backbone.trainable_variables[0] is not sft.backbone.trainable_variables[0]  # a copy, not shared
    mask = tf.constant([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(rm_lib.last_token_index(mask).numpy(), [1, 3, 0])
    ids = tf.constant([[3, 4, 5, 6], [3, 4, 5, 6]])
    after_the_end = tf.constant([[3, 4, 9, 9], [3, 9, 5, 6]])  # row 0: changed past its last real token
    short = tf.constant([[1, 1, 0, 0], [1, 1, 1, 1]])
    before, after = rm_lib.rewards(model, ids, short).numpy(), rm_lib.rewards(model, after_the_end, short).numpy()
    assert before[0] == pytest.approx(after[0], abs=1e-6) and abs(before[1] - after[1]) > 1e-6


def synthetic_pairs(n: int, seed: int, length: int = 10) -> prefs_lib.PreferencePairs:
    """Separable: the chosen sequence holds a marker token somewhere, the rejected one does not."""
    rng = np.random.default_rng(seed)
    tokens = [t for t in range(1, SIZE.vocabulary_size) if t != MARKER]
    chosen, rejected = rng.choice(tokens, (n, length)), rng.choice(tokens, (n, length))
    lengths = rng.integers(4, length + 1, n)
    chosen[np.arange(n), rng.integers(0, lengths)] = MARKER
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    return prefs_lib.PreferencePairs(chosen.astype(np.int32), mask, rejected.astype(np.int32), mask.copy())


def test_pair_accuracy_well_above_chance_on_a_separable_set():
    train, held_out = synthetic_pairs(640, seed=0).split(0.2, seed=0)
    trainer = RewardTrainer(
        rm_lib.from_sft(lm_lib.build_causal_lm(SIZE, seed=0)), learning_rate=3e-3, jit_compile=False
    )
    loss_before, _ = trainer.evaluate(held_out)
    losses = [loss for epoch in range(4) for loss in trainer.train_epoch(train, batch_size=32, seed=epoch)]
    loss_after, accuracy = trainer.evaluate(held_out)
    assert accuracy >= 0.9, (accuracy, losses[::8])
    assert loss_after < loss_before and np.mean(losses[-5:]) < np.mean(losses[:5])
    # Normalising shifts and scales every reward alike: the ranking (and so the accuracy) is unchanged.
    ids, mask = (
        np.concatenate([train.chosen_ids, train.rejected_ids]),
        np.concatenate([train.chosen_mask, train.rejected_mask]),
    )
    trainer.normalise(ids, mask)
    normalised = trainer.rewards(ids, mask)
    assert abs(normalised.mean()) < 1e-4 and normalised.std() == pytest.approx(1.0, abs=1e-3)
    assert trainer.evaluate(held_out)[1] == accuracy


def test_a_reward_model_on_a_llama_backbone_leaves_its_untied_lm_head_alone_and_trains():
    """Llama's LM head is not tied to its embeddings: the reward (read from the hidden states) never reaches it."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=SIZE.vocabulary_size,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
    )
    model = rm_lib.from_sft(keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None))
    head = model.backbone.token_embedding.reverse_embeddings
    assert any(v is head for v in model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]
    losses = RewardTrainer(model, learning_rate=3e-3, jit_compile=False).train_epoch(
        synthetic_pairs(16, seed=0), batch_size=8, seed=0
    )
    assert len(losses) == 2 and np.isfinite(losses).all()
    np.testing.assert_array_equal(head.numpy(), before[[v is head for v in model.trainable_variables].index(True)])
    assert max(np.abs(v.numpy() - b).max() for v, b in zip(model.trainable_variables, before)) > 1e-4


def test_rank_keeps_the_higher_score_as_chosen_and_drops_ties():
    prompts, first, second = np.array([[1], [2], [3]]), np.array([[5, 5], [6, 6], [7, 7]]), np.array([[8, 8]] * 3)
    ranked = prefs_lib.rank(prompts, first, second, [0.9, 0.2, 0.4], [0.1, 0.2, 0.8])
    np.testing.assert_array_equal(ranked.prompts, [[1], [3]])
    np.testing.assert_array_equal(ranked.chosen, [[5, 5], [8, 8]])
    np.testing.assert_array_equal(ranked.rejected, [[8, 8], [7, 7]])
    np.testing.assert_allclose(ranked.chosen_scores, [0.9, 0.8])
    np.testing.assert_allclose(ranked.rejected_scores, [0.1, 0.4])
    assert ranked.sampled == 3
    ids, mask = prefs_lib.join(np.array([[1, 2]]), np.array([[3, 0, 4]]), eos_id=0)  # mask ends at the EOS
    np.testing.assert_array_equal(ids, [[1, 2, 3, 0, 4]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0]])
    # A shorter prompt (right-padded with EOS): its response follows it at once, as the policy sampled it.
    ids, mask = prefs_lib.join(np.array([[1, 2], [7, 0]]), np.array([[3, 4, 5], [8, 0, 9]]), eos_id=0)
    np.testing.assert_array_equal(ids, [[1, 2, 3, 4, 5], [7, 8, 0, 9, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def test_sample_ranked_collects_untied_pairs_repeatably():
    def generate(prompt_ids, round_):  # stands in for the SFT model: repeatable per round
        return np.random.default_rng(round_).integers(0, 4, (len(prompt_ids), 3))

    def marker_count(prompt_ids, responses):
        return (responses == 1).sum(axis=1).astype(np.float32)

    prompts = np.arange(20).reshape(10, 2)
    ranked = prefs_lib.sample_ranked(generate, marker_count, prompts, wanted=12, batch_size=8, seed=0, max_prompts=100)
    assert len(ranked.prompts) == 12 and ranked.sampled >= 16 and ranked.sampled % 8 == 0
    assert (ranked.chosen_scores > ranked.rejected_scores).all()
    np.testing.assert_array_equal(marker_count(None, ranked.chosen), ranked.chosen_scores)
    again = prefs_lib.sample_ranked(generate, marker_count, prompts, wanted=12, batch_size=8, seed=0, max_prompts=100)
    np.testing.assert_array_equal(again.chosen, ranked.chosen)
    capped = prefs_lib.sample_ranked(generate, marker_count, prompts, wanted=1000, batch_size=8, seed=0, max_prompts=24)
    assert capped.sampled == 24 and len(capped.prompts) <= 24
    pairs = ranked.token_pairs(eos_id=0)
    assert pairs.chosen_ids.shape == (12, 5) and pairs.rejected_mask.shape == (12, 5)


def test_preference_file_round_trips_and_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = [prefs_lib.Preference("The day", " was lovely.", " was awful."), prefs_lib.Preference("A", " b", " c")]
    prefs_lib.write_preferences(path, good, [0.9, 0.1], [-0.5, 0.0])
    assert prefs_lib.read_preferences(path) == good  # the scores written beside them are ignored
    assert json.loads(path.read_text().splitlines()[0])["chosen_score"] == pytest.approx(0.9)
    for text, fragment in [
        (
            '{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "a", "chosen": "b"}\n',
            r"prefs.jsonl:3: missing key 'rejected'",
        ),
        ('{"prompt": "a", "chosen": "b", "rejected": "c"}\nnot json\n', r"prefs.jsonl:2: not JSON"),
        ('{"prompt": "a", "chosen": 1, "rejected": "c"}\n', r"prefs.jsonl:1: 'chosen' must be a string"),
        ('["a", "b", "c"]\n', r"prefs.jsonl:1: expected a JSON object"),
        ("\n\n", "no preference pairs"),
    ]:
        path.write_text(text)
        with pytest.raises(prefs_lib.PreferenceError, match=fragment):
            prefs_lib.read_preferences(path)
    with pytest.raises(prefs_lib.PreferenceError, match="missing.jsonl: no such file"):
        prefs_lib.read_preferences(tmp_path / "missing.jsonl")


def test_preferences_encode_to_equal_length_token_pairs(tmp_path):
    from pipeline.lm import data as data_lib

    tokenizer = data_lib.train_tokenizer(["the cat sees the moon."] * 50, vocabulary_size=300, out_dir=tmp_path)
    pairs = prefs_lib.encode(tokenizer, [prefs_lib.Preference("the cat", " sees the moon.", " sees")], 12)
    assert pairs.chosen_ids.shape == pairs.rejected_ids.shape == (1, 12)
    assert pairs.chosen_mask.sum() > pairs.rejected_mask.sum()
    assert tokenizer.detokenize(pairs.chosen_ids[0, : pairs.chosen_mask.sum() - 1]) == "the cat sees the moon."


def test_reward_stage_trains_on_a_preference_file_then_restores_instead_of_training(tmp_path):
    from pipeline.core import config
    from pipeline.core.rundir import RunDir
    from pipeline.lm import data as data_lib
    from pipeline.lm.data import LMData
    from pipeline.lm.rewards import load_reward_functions
    from pipeline.lm.stages import reward as reward_stage

    subjects, objects = ["the cat sees", "a dog likes", "my friend finds"], [" the moon.", " the mat.", " a ball."]
    tokenizer = data_lib.train_tokenizer([s + o for s in subjects for o in objects] * 20, 300, tmp_path / "tok")
    ids, mask = data_lib.encode_documents(tokenizer, subjects, 12)
    data = LMData(tokenizer, ids, mask, ids, mask, ids[:, :2], ids[:, :2])
    prefs = [prefs_lib.Preference(s, " the moon.", o) for s in subjects for o in objects[1:]] * 16
    prefs_lib.write_preferences(tmp_path / "prefs.jsonl", prefs, [1.0] * len(prefs), [0.0] * len(prefs))
    cfg = config.from_dict(
        {
            "task": "lm",
            "data": {"sequence_length": 12, "prompt_tokens": 2},
            "model": {"max_sequence_length": 12},
            "ppo": {"max_new_tokens": 8},
            "reward": {
                "function": "tests.lm_rewards:mentions_moon",
                "kind": "learned",
                "preferences": str(tmp_path / "prefs.jsonl"),
                "learning_rate": 3e-3,
                "batch_size": 16,
                "validation_fraction": 0.25,
                "jit_compile": False,
            },
        }
    )
    sft_lm = lm_lib.build_causal_lm(
        lm_lib.LMSize(
            vocabulary_size=tokenizer.vocabulary_size(),
            num_layers=1,
            num_heads=2,
            hidden_dim=32,
            intermediate_dim=64,
            max_sequence_length=12,
        )
    )
    run_dir = RunDir(tmp_path / "run")
    rewards, metrics = reward_stage.run(cfg, run_dir, data, sft_lm, load_reward_functions(cfg.reward))
    assert metrics["reward.pairs"] == len(prefs) and metrics["reward.pair_accuracy"] >= 0.9, metrics

    prompt = np.array([tokenizer("a dog likes")] * 2, np.int32)
    responses, _ = data_lib.encode_documents(tokenizer, [" the moon.", " a ball."], 5)
    proxy = rewards.proxy(prompt, responses).total
    assert proxy[0] > proxy[1] and proxy.dtype == np.float32
    np.testing.assert_array_equal(rewards.gold(prompt, responses).total, [1.0, 0.0])

    restored, metrics = reward_stage.run(cfg, run_dir, data, sft_lm, load_reward_functions(cfg.reward))
    assert metrics == {}  # nothing trained again
    np.testing.assert_allclose(restored.proxy(prompt, responses).total, proxy, atol=1e-5)  # normalisation restored too


def test_reward_model_training_stops_on_a_non_finite_loss_or_gradient():
    from pipeline.core.guards import NonFiniteError
    from pipeline.lm.reward_training import RewardTrainer

    lm = lm_lib.build_causal_lm(
        lm_lib.LMSize(
            vocabulary_size=32, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=6
        )
    )
    trainer = RewardTrainer(rm_lib.from_sft(lm), learning_rate=1e30, jit_compile=False)
    ids = np.arange(48, dtype=np.int32).reshape(8, 6) % 32
    pairs = prefs_lib.PreferencePairs(ids, np.ones_like(ids), ids[::-1].copy(), np.ones_like(ids))
    with pytest.raises(NonFiniteError, match="reward"):
        for epoch in range(5):
            trainer.train_epoch(pairs, batch_size=4, seed=epoch)
