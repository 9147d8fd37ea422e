"""Reward functions for LM PPO: a sentiment scorer that ships with its lexicon, or any user function.

A reward function takes the lists of prompts and completions (strings) and returns one float per completion,
as users write them for TRL. The config names one as `module:function`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.core.guards import NonFiniteError, RunError

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def vader_sentiment(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """VADER's compound sentiment of each completion, in [-1, 1] (vaderSentiment's lexicon ships in the wheel)."""
    return [_vader().polarity_scores(text)["compound"] for text in completions]


class RewardError(RunError):
    """A reward function returned something other than one finite number per completion."""


class NonFiniteRewardError(RewardError, NonFiniteError):
    pass


def checked_scores(spec: str, scores, count: int) -> np.ndarray:
    """float32 [count] scores, or an error naming the function and what is wrong: the count, the shape, or the
    first score that is not a finite number. Called on every batch, before the scores reach an update."""
    rule = f"it must return one finite number per completion ({count} here)"
    if scores is None:
        raise RewardError(f"reward function {spec} returned None for {count} completions; {rule}")
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise RewardError(
            f"reward function {spec} returned {type(scores).__name__} values that are not numbers "
            f"(first: {_first(scores)!r}); {rule}"
        ) from None
    if array.ndim == 0:
        raise RewardError(f"reward function {spec} returned a single number for {count} completions; {rule}")
    if array.ndim != 1:
        raise RewardError(
            f"reward function {spec} returned an array of shape {array.shape} for {count} "
            f"completions; {rule}, shape ({count},)"
        )
    if len(array) != count:
        raise RewardError(
            f"reward function {spec} returned {len(array)} score{'s' if len(array) != 1 else ''} for "
            f"{count} completions; {rule}"
        )
    scores = array.astype(np.float32)  # checked as float32: 1e39 is finite in float64, not in what trains on it
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise NonFiniteRewardError(
            f"reward function {spec} returned {array[bad[0]]} for completion {bad[0]} "
            f"({bad.size} of {count} scores not finite as float32); {rule}"
        )
    return scores


def _first(values):
    try:
        return next(iter(values))
    except TypeError:
        return values


def load_reward_function(spec: str) -> RewardFn:
    """`module:function` -> the callable; errors name the spec and what went wrong."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"reward function {spec!r}: expected module:function, e.g. pipeline.lm.rewards:vader_sentiment"
        )
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
    global _ANALYZER  # the lexicon is loaded once per process
    if _ANALYZER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _ANALYZER = SentimentIntensityAnalyzer()
    return _ANALYZER


# (prompt_ids [B, P] right-padded with EOS, responses [B, R]) -> float32 [B]
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rewards:
    """What the reward stage hands PPO and evaluation."""

    proxy: Scorer  # what PPO maximises
    gold: Scorer  # reward.function, what evaluation reports as the truth
    learned: bool  # False: proxy is gold


def function_scorer(data, reward_fn, spec: str) -> Scorer:
    """Token ids -> the reward function's (prompts, completions) strings -> scores, checked (one finite number
    per completion) before anything trains on them. data: the data stage's LMData, which decodes ids to text."""

    def score(prompt_ids, responses):
        return checked_scores(spec, reward_fn(data.decode(prompt_ids), data.decode(responses)), len(responses))

    return score


def model_scorer(model_rewards, eos_id: int | None) -> Scorer:
    """The reward model's score of prompt + response, read at the response's EOS (or its last token)."""
    from pipeline.lm import preferences as prefs_lib

    return lambda prompt_ids, responses: checked_scores(
        "(the learned reward model)", model_rewards(*prefs_lib.join(prompt_ids, responses, eos_id)), len(responses)
    )
