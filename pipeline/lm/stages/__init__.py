"""The lm stages, in the order a run takes them: data -> sft -> reward -> ppo -> evaluate -> export."""
