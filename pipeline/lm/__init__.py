"""Language-model RLHF pieces: corpus and tokenizer, supervised fine-tuning, PPO on tokens."""
