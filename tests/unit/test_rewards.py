"""Reward functions: the shipped sentiment scorer, and loading a user's `module:function`."""

from __future__ import annotations

import pytest

from pipeline.lm import rewards


def test_vader_scores_sentiment_offline():
    scores = rewards.vader_sentiment(["", "", ""], ["What a wonderful, happy day!", "the table", "I hate this awful mess."])
    assert scores[0] > 0.5 and scores[1] == 0.0 and scores[2] < -0.5


def test_load_reward_function():
    assert rewards.load_reward_function("pipeline.lm.rewards:vader_sentiment") is rewards.vader_sentiment
    for spec, fragment in [("nocolon", "expected module:function"), ("no_such_module:f", "cannot import"),
                           ("pipeline.lm.rewards:missing", "no callable 'missing'")]:
        with pytest.raises(ValueError, match=fragment):
            rewards.load_reward_function(spec)
