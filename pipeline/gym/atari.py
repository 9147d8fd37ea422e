"""Atari games (ale-py, whose wheel ships the ROMs) with the standard preprocessing, as CleanRL's ppo_atari.py and
Stable-Baselines3's AtariWrapper apply it: gymnasium's own wrappers where it has them.

Learning sees: 30 random no-ops at reset, every 4th frame (the max of the last two: Atari sprites flicker), 84x84
grayscale, the 4 latest frames stacked, FIRE pressed where a game needs it to start, a lost life as the end of an
episode, and rewards clipped to their sign. Evaluation, blessing and every reported return see whole games and the
raw score: the lost life and the clipped reward are for learning only (Machado et al. 2018's recommendation).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

FRAMES, SCREEN, NOOP_MAX, FRAME_SKIP = 4, 84, 30, 4


def register() -> None:
    """Makes ale-py's ids (ALE/Breakout-v5, BreakoutNoFrameskip-v4, ...) known to gymnasium."""
    import ale_py

    gym.register_envs(ale_py)


def make_kwargs(env_id: str) -> dict:
    """What the raw game needs under this preprocessing: one frame per step (the skip happens here)."""
    return {"frameskip": 1} if env_id.startswith("ALE/") else {}


def wrap(env: gym.Env, learning: bool) -> gym.Env:
    env = gym.wrappers.RecordEpisodeStatistics(env)  # whole games, raw score: what the train stage reports
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=NOOP_MAX, frame_skip=FRAME_SKIP, screen_size=SCREEN, terminal_on_life_loss=False
    )
    if learning:
        env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    if learning:
        env = gym.wrappers.TransformReward(env, np.sign)
    return gym.wrappers.FrameStackObservation(env, FRAMES)


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode for learning (terminated: no value after it), while the game goes on: the reset
    that follows continues it with a no-op, unless the game is over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        terminated = terminated or 0 < lives < self.lives
        self.lives = lives
        return observation, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            observation, info = self.env.reset(**kwargs)
        else:
            observation, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                observation, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return observation, info


class FireReset(gym.Wrapper):
    """Presses FIRE after a reset, for games that wait for it (Breakout's ball)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        observation, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            observation, info = self.env.reset(**kwargs)
        return observation, info
