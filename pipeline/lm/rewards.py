"""Reward functions for LM PPO: a sentiment scorer that ships with its lexicon, or any user function.

A reward function takes the lists of prompts and completions (strings) and returns one float per completion,
as users write them for TRL. The config names one as `module:function`.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def vader_sentiment(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """VADER's compound sentiment of each completion, in [-1, 1] (vaderSentiment's lexicon ships in the wheel)."""
    return [_vader().polarity_scores(text)["compound"] for text in completions]


def load_reward_function(spec: str) -> RewardFn:
    """`module:function` -> the callable; errors name the spec and what went wrong."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"reward function {spec!r}: expected module:function, e.g. pipeline.lm.rewards:vader_sentiment")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"reward function {spec!r}: cannot import {module_name!r} ({e})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"reward function {spec!r}: {module_name} has no callable {attribute!r}")
    return function


_ANALYZER = None


def _vader():
    global _ANALYZER  # the lexicon takes ~0.1 s to load: once per process
    if _ANALYZER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        _ANALYZER = SentimentIntensityAnalyzer()
    return _ANALYZER
