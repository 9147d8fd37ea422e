"""task: gym. PPO on gymnasium environments with TF-Agents' PPOClipAgent."""
