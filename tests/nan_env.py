"""An environment that goes bad: CartPole whose reward turns NaN after a number of steps.

Named in configs as `tests.nan_env:NaNRewardCartPole-v0` (gymnasium imports the module, which registers it).
"""

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

BAD_AFTER_STEPS = 200  # per environment: with 4 environments x 32 steps, during the 7th iteration


class NaNRewardCartPole(CartPoleEnv):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = 0

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        return observation, float("nan") if self.steps > BAD_AFTER_STEPS else reward, terminated, truncated, info


gym.register("NaNRewardCartPole-v0", entry_point=NaNRewardCartPole, max_episode_steps=500)
