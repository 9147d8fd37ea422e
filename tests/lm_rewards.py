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


# As TRL users write them: keyword arguments, the prompt file's columns by name or in **kwargs.


def exact_answer(completions, answer, **kwargs):
    """1 where the completion is the row's `answer` column, else 0."""
    return [float(text.strip() == str(a)) for text, a in zip(completions, answer)]


def only_questions(prompts, completions, **kwargs):
    """Applies to prompts ending in '?' only: None elsewhere, as TRL's reward functions say "does not apply"."""
    return [float(len(text)) if prompt.endswith("?") else None for prompt, text in zip(prompts, completions)]


def never_applies(completions, **kwargs):
    return [None] * len(completions)


def echo_columns(completions, completion_ids, **kwargs):
    """Records what it was given (for tests), scores 0."""
    echo_columns.seen = {"completion_ids": completion_ids, **kwargs}
    return [0.0] * len(completions)


def named_object(prompts, completions, answer, key):
    """1 where the completion names the row's `answer`. Each prompt row also holds its own prompt as `key`: a
    column given with another row's prompt (misaligned after a shuffle, a repeat or a split) raises."""
    for prompt, row_key in zip(prompts, key):
        if prompt != row_key:
            raise AssertionError(f"prompt {prompt!r} was given the columns of {row_key!r}")
    return [float(a in text) for text, a in zip(completions, answer)]
