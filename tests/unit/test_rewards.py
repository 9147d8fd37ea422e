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
