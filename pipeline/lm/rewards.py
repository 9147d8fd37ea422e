"""Reward functions for LM RL: a sentiment scorer that ships with its lexicon, or any user functions.

A reward function is called as TRL calls one: `f(prompts=..., completions=..., completion_ids=..., **columns)`,
the prompt file's other columns (e.g. `answer`) as lists aligned with the completions, and returns one float per
completion, or None where it does not apply. It takes what it names: a function with `**kwargs` gets every column,
one naming `answer` gets that column (and every row must have it), and a function of two positional parameters
with other names, (prompts, completions) as this pipeline called them before, is called with those two. The config
names one (`reward.function`) or several with weights (`reward.functions`, `reward.weights`) as `module:function`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.core.guards import NonFiniteError, RunError

RewardFn = Callable[..., Sequence[float | None]]
# What every call gives by name; any other parameter a function names is a prompt-file column.
GIVEN = ("prompts", "completions", "completion_ids")
# What TRL's trainer also passes, given here as stand-ins: no trainer state; log_metric and log_extra accept and drop.
TRL_EXTRAS = {"trainer_state": None, "log_metric": lambda name, value: None, "log_extra": lambda column, values: None}


def vader_sentiment(prompts: Sequence[str], completions: Sequence[str], **kwargs) -> list[float]:
    """VADER's compound sentiment of each completion, in [-1, 1] (vaderSentiment's lexicon ships in the wheel)."""
    return [_vader().polarity_scores(text)["compound"] for text in completions]


def exact_answer(completions: Sequence[str], answer: Sequence[str], **kwargs) -> list[float]:
    """1 where a completion is the row's `answer` column (both stripped of surrounding spaces), else 0: a
    verifiable reward, as in DeepSeekMath's and TRL's examples."""
    return [float(text.strip() == str(expected).strip()) for text, expected in zip(completions, answer)]


class RewardError(RunError):
    """A reward function returned something other than one finite number per completion."""


class NonFiniteRewardError(RewardError, NonFiniteError):
    pass


def checked_scores(spec: str, scores, count: int, allow_none: bool = False) -> np.ndarray:
    """float32 [count] scores, or an error naming the function and what is wrong: the count, the shape, or the
    first score that is not a finite number. Called on every batch, before the scores reach an update.
    allow_none: a None score (the function does not apply to that completion, as in TRL) becomes nan."""
    rule = f"it must return one finite number{' or None' if allow_none else ''} per completion ({count} here)"
    if scores is None:
        raise RewardError(f"reward function {spec} returned None for {count} completions; {rule}")
    none = None
    if allow_none and isinstance(scores, (list, tuple)):
        none = np.array([score is None for score in scores], bool)
        scores = [0.0 if score is None else score for score in scores]
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
    if none is not None:
        scores[none] = np.nan
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


@dataclasses.dataclass(frozen=True)
class RewardFunction:
    """One configured reward function and how to call it."""

    spec: str  # module:function
    name: str  # its __name__, as TRL logs it: rewards/<name>/mean
    function: RewardFn
    weight: float
    by_keyword: bool  # False: called with (prompts, completions) alone, positionally
    takes_all: bool  # it has **kwargs: every column
    parameters: tuple[str, ...]  # the names it takes (of GIVEN, and columns)
    required: tuple[str, ...]  # the columns it names without a default: every prompt row must have them

    @classmethod
    def load(cls, spec: str, weight: float = 1.0) -> RewardFunction:
        function = load_reward_function(spec)
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # a builtin or extension callable: called as (prompts, completions)
            parameters = []
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters)
        by_keyword = takes_all or "completions" in names
        required = tuple(
            p.name
            for p in parameters
            if by_keyword
            and p.name in names
            and p.name not in (*GIVEN, *TRL_EXTRAS)
            and p.default is inspect.Parameter.empty
        )
        name = getattr(function, "__name__", spec.partition(":")[2])
        return cls(spec, name, function, weight, by_keyword, takes_all, tuple(names), required)

    def __call__(self, prompts: list[str], completions: list[str], completion_ids: list, columns: dict) -> np.ndarray:
        """float32 [B] scores, nan where the function returned None."""
        if not self.by_keyword:
            return checked_scores(self.spec, self.function(prompts, completions), len(completions), True)
        missing = [c for c in self.required if c not in columns]
        if missing:
            raise RewardError(
                f"reward function {self.spec} takes the column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}, which these prompts do not have (data.prompts: a JSONL file whose rows hold "
                f"them)"
            )
        given = {**columns, **TRL_EXTRAS, **dict(zip(GIVEN, (prompts, completions, completion_ids)))}
        kwargs = given if self.takes_all else {k: v for k, v in given.items() if k in self.parameters}
        return checked_scores(self.spec, self.function(**kwargs), len(completions), True)


@dataclasses.dataclass(frozen=True)
class Scores:
    """A batch's rewards: the weighted sum RL maximises, and each function's own scores (nan: None, "does not
    apply"), logged as rewards/<name>/mean and /std as TRL logs them."""

    total: np.ndarray  # float32 [B]
    parts: dict[str, np.ndarray]  # name -> float32 [B]

    @classmethod
    def of(cls, scores, name: str) -> Scores:
        """One scorer's scores."""
        total = np.asarray(scores, np.float32)
        return cls(total, {name: total})

    def stats(self) -> dict[str, float]:
        stats = {}
        for name, scores in self.parts.items():
            applied = scores[~np.isnan(scores)]
            stats[f"rewards/{name}/mean"] = float(applied.mean()) if applied.size else float("nan")
            stats[f"rewards/{name}/std"] = float(applied.std(ddof=1)) if applied.size > 1 else float("nan")
        return stats


@dataclasses.dataclass(frozen=True)
class RewardFunctions:
    """reward.function, or reward.functions with reward.weights: the weighted sum of their scores, each None left
    out of its completion's sum (TRL's nansum); a completion no function applies to is an error."""

    functions: tuple[RewardFunction, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The prompt-file columns some function requires."""
        return tuple(dict.fromkeys(c for f in self.functions for c in f.required))

    def __call__(self, prompts, completions, completion_ids, columns: dict) -> Scores:
        scores = [f(prompts, completions, completion_ids, columns) for f in self.functions]
        stacked = np.stack(scores, axis=1)  # [B, functions]
        names = [f.name for f in self.functions]
        names = [n if names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(names)]  # one column each
        parts = dict(zip(names, scores))
        unscored = np.flatnonzero(np.isnan(stacked).all(axis=1))
        if unscored.size:
            specs = ", ".join(f.spec for f in self.functions)
            raise RewardError(
                f"reward functions {specs} all returned None for completion {unscored[0]} ({unscored.size} of "
                f"{len(completions)}): at least one must score every completion"
            )
        weights = np.array([f.weight for f in self.functions], np.float32)
        return Scores(np.nansum(stacked * weights, axis=1).astype(np.float32), parts)


def load_reward_functions(reward_config) -> RewardFunctions:
    """The reward section's functions: reward.functions (with reward.weights, default 1 each), else
    reward.function. ValueError naming the spec that does not load."""
    specs = reward_config.specs
    weights = reward_config.weights or [1.0] * len(specs)
    return RewardFunctions(tuple(RewardFunction.load(spec, w) for spec, w in zip(specs, weights)))


# (prompt_ids [B, P] right-padded with EOS, responses [B, R], the prompts' columns: name -> [B] values) -> Scores
Scorer = Callable[..., Scores]


@dataclasses.dataclass(frozen=True)
class Rewards:
    """What the reward stage hands RL and evaluation."""

    proxy: Scorer  # what RL maximises
    gold: Scorer  # the reward functions, what evaluation reports as the truth
    learned: bool  # False: proxy is gold


def function_scorer(data, functions: RewardFunctions) -> Scorer:
    """Token ids -> the reward functions' prompts, completions and completion ids -> Scores, checked (one finite
    number or None per completion) before anything trains on them. data: the data stage's LMData, which decodes."""

    def score(prompt_ids, responses, columns=None) -> Scores:
        completion_ids = [row[: _end(row, data.eos_id) + 1].tolist() for row in np.asarray(responses)]
        return functions(data.decode(prompt_ids), data.decode(responses), completion_ids, columns or {})

    return score


def model_scorer(model_rewards, eos_id: int | None) -> Scorer:
    """The reward model's score of prompt + response, read at the response's EOS (or its last token)."""
    from pipeline.lm import preferences as prefs_lib

    def score(prompt_ids, responses, columns=None) -> Scores:
        total = checked_scores(
            "(the learned reward model)", model_rewards(*prefs_lib.join(prompt_ids, responses, eos_id)), len(responses)
        )
        return Scores.of(total, "reward_model")

    return score


def _end(row: np.ndarray, eos_id: int | None) -> int:
    """The index of a response's last token: its first EOS (kept, as TRL keeps it), or its last position."""
    ends = np.flatnonzero(row == eos_id) if eos_id is not None else []
    return int(ends[0]) if len(ends) else len(row) - 1
