"""GRPO and RLOO on the tiny GPT-2 of test_lm_ppo: what each holds in memory, their start conditions, and the task
PPO learns there (emit the rewarded token) learned from group-relative advantages alone."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lm.rewards import Scores
from tests.unit import test_lm_ppo
from tests.unit.test_lm_ppo import TARGET, prompts, target_token_rate

GROUP = 4


def make(**settings):
    """test_lm_ppo's tiny learner with the algorithm's own number of passes (one, TRL's default)."""
    return test_lm_ppo.make(**{"num_generations": GROUP, "num_epochs": None, **settings})


def grouped(rng, batch=32):
    """batch / GROUP prompts, each GROUP times in a row: what the PPO stage hands the learner."""
    return np.repeat(prompts(rng, batch // GROUP), GROUP, axis=0)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_grpo_and_rloo_learn_to_emit_the_rewarded_token(algorithm):
    learner = make(algorithm=algorithm)
    assert learner.settings.num_epochs == 1  # TRL's default number of passes (num_iterations)
    rng = np.random.default_rng(0)
    history = [learner.step(grouped(rng), target_token_rate)[0] for _ in range(30)]
    rates = [h["reward"] for h in history]
    assert np.mean(rates[:3]) < 0.15  # about 1/16 at the start
    assert np.mean(rates[-5:]) > 0.5, rates
    assert history[0]["policy/first_ratio_max_deviation"] < 1e-5  # one epoch, one minibatch: the ratio is 1
    assert all(h["clip_ratio/region_mean"] == 0.0 for h in history)  # ... so the clip never binds
    for name in ("reward_std", "frac_reward_zero_std", "entropy", "completions/mean_length", "loss/policy"):
        assert all(np.isfinite(h[name]) for h in history), name
    assert all(0.0 <= h["frac_reward_zero_std"] <= 1.0 for h in history)


def test_grpo_with_beta_0_holds_neither_a_reference_nor_a_value_model():
    learner = make(algorithm="grpo")
    net = learner.networks
    assert learner.settings.beta == 0.0 and net.reference is None and net.value_head is None
    assert len(learner.variables) == len(net.policy.trainable_variables)
    assert set(learner.checkpoint()._trackable_children()) >= {"policy", "optimizer"}
    assert "value_head" not in learner.checkpoint()._trackable_children()
    stats, _, _ = learner.step(grouped(np.random.default_rng(1)), target_token_rate)
    assert "kl" not in stats and "objective/kl" not in stats


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_with_beta_the_kl_to_the_reference_starts_at_zero_and_grows(algorithm):
    learner = make(algorithm=algorithm, beta=0.04, learning_rate=1e-2)
    assert learner.networks.reference is not None and learner.networks.value_head is None
    rng = np.random.default_rng(2)
    first, _, _ = learner.step(grouped(rng), target_token_rate)
    assert abs(first["kl"]) < 1e-5  # the same network until the first step
    for _ in range(4):
        stats, _, _ = learner.step(grouped(rng), target_token_rate)
    assert stats["kl"] > 1e-4


def test_masked_truncated_completions_leave_the_loss_but_not_the_rewards():
    learner = make(algorithm="grpo", eos_id=TARGET, mask_truncated_completions=True)
    seen = {}
    update = learner.update

    def spy(sequences, mask, scores, prompt_lengths, scored=None):
        seen.update(mask=np.asarray(mask), scores=np.asarray(scores))
        return update(sequences, mask, scores, prompt_lengths, scored)

    learner.update = spy
    stats, sequences, scores = learner.step(
        grouped(np.random.default_rng(3)), lambda rows, r: Scores.of(np.ones(len(r)), "one")
    )
    ended = (sequences[:, 4:] == TARGET).any(axis=1)
    assert 0 < ended.mean() < 1 and stats["completions/clipped_ratio"] == pytest.approx(1 - ended.mean())
    assert (seen["mask"][~ended] == 0).all() and (seen["mask"][ended].sum(axis=1) > 0).all()
    np.testing.assert_array_equal(seen["scores"], 1.0)  # every completion still rewarded


def test_a_grpo_checkpoint_resumes_to_the_step_the_run_would_have_taken(tmp_path):
    """What a GRPO checkpoint holds (the policy, Adam, the generator, the iteration; no value head) is all the
    next step depends on: a learner restored from it takes the step the original takes."""
    rng = np.random.default_rng(4)
    batches = [grouped(rng) for _ in range(3)]
    original = make(algorithm="grpo", beta=0.02)
    for batch in batches[:2]:
        original.step(batch, target_token_rate)
    path = original.checkpoint().write(str(tmp_path / "ckpt"))
    expected, _, _ = original.step(batches[2], target_token_rate)
    resumed = make(algorithm="grpo", beta=0.02)
    resumed.checkpoint().read(path).assert_consumed()
    got, _, _ = resumed.step(batches[2], target_token_rate)
    assert int(resumed.iteration) == 3
    for name in ("reward", "loss/policy", "kl", "entropy"):
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    for a, b in zip(original.variables, resumed.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
