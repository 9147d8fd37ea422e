"""Reward functions the LM tests name in their configs, as a user names theirs (module:function)."""

_calls = {"nan_from_third_batch": 0}


def mentions_moon(prompts, completions):
    return [float("moon" in text) for text in completions]


def one_score_per_batch(prompts, completions):
    """A user's bug: one number for the whole batch instead of one per completion."""
    return [1.0]


def nan_from_third_batch(prompts, completions):
    """Good scores for two batches, then NaN (a scorer that divides by zero on some input)."""
    _calls["nan_from_third_batch"] += 1
    bad = _calls["nan_from_third_batch"] >= 3
    return [float("nan") if bad else float("moon" in text) for text in completions]


def the_same_for_all(prompts, completions):
    """A scorer that tells no two completions apart: no preference pair can be ranked with it."""
    return [0.5] * len(completions)
