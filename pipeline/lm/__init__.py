"""task: lm. RLHF-style PPO fine-tuning of keras-hub causal language models: corpus and tokenizer, SFT, rewards,
PPO on tokens."""
