"""A reward function the LM tests name in their configs, as a user names theirs (module:function)."""


def mentions_moon(prompts, completions):
    return [float("moon" in text) for text in completions]
