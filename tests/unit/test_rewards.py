"""Reward functions: the shipped sentiment scorer, and loading a user's `module:function`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.lm import rewards


def test_vader_scores_sentiment_offline():
    scores = rewards.vader_sentiment(
        ["", "", ""], ["What a wonderful, happy day!", "the table", "I hate this awful mess."]
    )
    assert scores[0] > 0.5 and scores[1] == 0.0 and scores[2] < -0.5


def test_load_reward_function():
    assert rewards.load_reward_function("pipeline.lm.rewards:vader_sentiment") is rewards.vader_sentiment
    for spec, fragment in [
        ("nocolon", "expected module:function"),
        ("no_such_module:f", "cannot import"),
        ("pipeline.lm.rewards:missing", "no callable 'missing'"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            rewards.load_reward_function(spec)


def test_scores_are_one_finite_number_per_completion_or_a_clear_error():
    spec = "tests.lm_rewards:user_scorer"
    np.testing.assert_array_equal(rewards.checked_scores(spec, [1, 0.5, -2], 3), [1.0, 0.5, -2.0])
    assert rewards.checked_scores(spec, np.array([0.25, 1.0]), 2).dtype == np.float32
    for scores, fragment in [
        ([1.0], "returned 1 score for 3 completions"),
        (0.5, "returned a single number for 3 completions"),
        ([[1.0], [2.0], [3.0]], "shape (3, 1)"),
        ([1.0, float("nan"), 2.0], "nan for completion 1"),
        ([1.0, 2.0, float("-inf")], "-inf for completion 2"),
        (["good", "bad", "ugly"], "not numbers"),
        (None, "returned None"),
    ]:
        with pytest.raises(rewards.RewardError, match=re.escape(fragment)) as err:
            rewards.checked_scores(spec, scores, 3)
        assert spec in str(err.value)


def _functions(*specs, weights=None):
    from pipeline.lm.config import RewardConfig

    return rewards.load_reward_functions(RewardConfig(functions=list(specs), weights=weights))


def test_reward_functions_get_what_they_name_and_columns_as_trl_passes_them():
    prompts, completions = ["a?", "b.", "c?"], ["x", "yy", "zzz"]
    ids = [[1], [2, 2], [3, 3, 3]]
    columns = {"answer": ["x", "y", "zzz"], "level": [1, 2, 3]}
    both = _functions("tests.lm_rewards:exact_answer", "tests.lm_rewards:only_questions", weights=[2.0, 0.5])
    assert both.columns == ("answer",)  # named without a default: every prompt row must have it
    scores = both(prompts, completions, ids, columns)
    np.testing.assert_array_equal(scores.parts["exact_answer"], [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(scores.parts["only_questions"], [1.0, np.nan, 3.0])  # None: does not apply
    np.testing.assert_allclose(scores.total, [2.0 + 0.5, 0.0, 2.0 + 1.5])  # the None left out of its row's sum
    stats = scores.stats()
    assert stats["rewards/exact_answer/mean"] == pytest.approx(2 / 3)
    assert stats["rewards/only_questions/mean"] == pytest.approx(2.0)  # over the completions it applies to
    assert stats["rewards/only_questions/std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    echo = _functions("tests.lm_rewards:echo_columns")
    echo(prompts, completions, ids, columns)
    from tests.lm_rewards import echo_columns

    seen = echo_columns.seen  # **kwargs: everything, and TRL's extras as stand-ins
    assert {k: v for k, v in seen.items() if k not in rewards.TRL_EXTRAS} == {
        "completion_ids": ids,
        "prompts": prompts,
        **columns,
    }
    assert seen["trainer_state"] is None and seen["log_metric"]("x", 1.0) is None
    twice = _functions(
        "tests.lm_rewards:exact_answer", "tests.lm_rewards:exact_answer", "tests.lm_rewards:exact_answer"
    )
    assert set(twice(prompts, completions, ids, columns).parts) == {
        "exact_answer_0",
        "exact_answer_1",
        "exact_answer_2",
    }
    old_style = _functions("tests.lm_rewards:mentions_moon")  # (prompts, completions), positionally
    np.testing.assert_array_equal(old_style(["p"], ["the moon"], [[1]], columns).total, [1.0])


def test_reward_functions_errors_name_the_function():
    with pytest.raises(rewards.RewardError, match=r"all returned None for completion 0 \(2 of 2\)"):
        _functions("tests.lm_rewards:never_applies")(["p", "q"], ["a", "b"], [[], []], {})
    with pytest.raises(rewards.RewardError, match="exact_answer takes the column answer"):
        _functions("tests.lm_rewards:exact_answer")(["p"], ["a"], [[]], {})
    with pytest.raises(rewards.RewardError, match="nan for completion 0"):  # NaN is not None
        rewards.checked_scores("f", [float("nan"), None], 2, allow_none=True)


def test_the_arithmetic_demo_data_and_its_exact_answer_reward(tmp_path):
    import json

    from pipeline.lm import arithmetic

    arithmetic.write(tmp_path, largest=4, copies=20, noise=0.5, seed=1)
    rows = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert len(rows) == 25 and all(eval(r["prompt"][:-1]) == int(r["answer"]) for r in rows)  # noqa: S307
    sums = (tmp_path / "corpus.txt").read_text().splitlines()
    assert len(sums) == 500 and all(eval(s.split()[0].replace("=", "==")) for s in sums)  # noqa: S307
    assert 0.4 < np.mean([" " in s for s in sums]) < 0.6  # a stray number after about half the answers
    assert rewards.exact_answer(["7", " 7 ", "7 12", "8"], ["7", "7", "7", "7"]) == [1.0, 1.0, 0.0, 0.0]
