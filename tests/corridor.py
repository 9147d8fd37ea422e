"""A five-cell corridor whose goal end (left or right, drawn at random each episode) only the observation shows, in
the shapes PPO users bring: pixels, a Dict, MultiDiscrete actions, masked actions. The agent starts in the middle;
the time limit leaves no step to waste, so only a policy that reads the goal from the observation always scores the
optimum, and one that ignores it scores half of it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

CELLS, START = 5, 2


class Corridor(gym.Env):
    """observation: pixels (a 12x12 RGB frame: the agent red, the goal green), dict (position: Discrete, goal side:
    Box) or masked (dict plus gymnasium's action_mask). actions: discrete (left, right), multi_discrete ([move
    left / right, a code 0-2 that earns 0.5 each step it equals the goal side's code]) or, with masked
    observations, [left, right, claim (allowed only at the goal), cheat (never allowed: raises if taken)].

    Optimal returns: 1.0 (discrete and masked), 2.0 (multi_discrete)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, observation: str = "pixels", actions: str = "discrete", render_mode: str | None = None):
        self.kind, self.actions, self.render_mode = observation, actions, render_mode
        if observation == "pixels":
            self.observation_space = gym.spaces.Box(0, 255, (12, 12, 3), np.uint8)
        else:
            parts = {"position": gym.spaces.Discrete(CELLS), "goal": gym.spaces.Box(-1.0, 1.0, (1,), np.float32)}
            if observation == "masked":
                parts["action_mask"] = gym.spaces.MultiBinary(4)
            self.observation_space = gym.spaces.Dict(parts)
        if observation == "masked":
            self.action_space = gym.spaces.Discrete(4)
        elif actions == "multi_discrete":
            self.action_space = gym.spaces.MultiDiscrete([2, 3])
        else:
            self.action_space = gym.spaces.Discrete(2)
        # Moves to the goal, plus the claim when masked.
        self.limit = CELLS // 2 + (observation == "masked")

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.steps = START, 0
        self.goal = 0 if self.np_random.random() < 0.5 else CELLS - 1
        return self._observation(), {}

    def step(self, action):
        self.steps += 1
        reward, terminated = 0.0, False
        if self.kind == "masked":
            if not self._mask()[action]:
                raise RuntimeError(f"masked action {action} taken at {self.position}")
            if action == 2:  # claim
                reward, terminated = 1.0, True
            else:
                self.position = int(np.clip(self.position + (1 if action == 1 else -1), 0, CELLS - 1))
        else:
            if self.actions == "multi_discrete":
                move, code = 2 * int(action[0]) - 1, int(action[1])
                reward += 0.5 * (code == (2 if self.goal else 0))
            else:
                move = 1 if int(action) == 1 else -1
            self.position = int(np.clip(self.position + move, 0, CELLS - 1))
            if self.position == self.goal:
                reward, terminated = reward + 1.0, True
        # Out of time ends the task (terminated, no bootstrap): the clock is not in the observation, so a value
        # bootstrapped from the last cell would credit walking away from the goal.
        return self._observation(), reward, terminated or self.steps >= self.limit, False, {}

    def _mask(self) -> np.ndarray:
        return np.array([1, 1, self.position == self.goal, 0], np.int8)

    def _observation(self):
        if self.kind == "pixels":
            return self.render()
        obs = {"position": self.position, "goal": np.array([1.0 if self.goal else -1.0], np.float32)}
        if self.kind == "masked":
            obs["action_mask"] = self._mask()
        return obs

    def render(self):
        frame = np.zeros((12, 12, 3), np.uint8)
        frame[4:8, 2 * self.goal + 1 : 2 * self.goal + 3, 1] = 255
        frame[5:7, 2 * self.position + 1 : 2 * self.position + 3, 0] = 255
        return frame
