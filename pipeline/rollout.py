"""Collects fixed-length rollouts from a vector environment with the learner's sampling policy.

Kept apart from learning (as TF-Agents keeps actors apart from learners): the learner only sees the
(time, env) arrays this returns.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Rollout:
    """(T, N, ...) arrays of real transitions. Values are not stored: the learner computes them for the
    whole rollout in one batched call, with the same parameters the policy had while collecting."""
    observations: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_observations: np.ndarray  # where truncated: the episode's real last observation (else zeros)
    next_observations: np.ndarray   # (N, ...) the observations after the last step
    episode_returns: list           # raw (unscaled) returns of the episodes finished in this rollout
    episode_lengths: list

    def arrays(self) -> dict:
        """The tensors the learner trains on (everything but the episode lists)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("episode")}


class Collector:
    def __init__(self, env, learner, reward_scale: float, seeds: list[int]):
        self.env, self.learner, self.reward_scale = env, learner, reward_scale
        self.discrete = learner.spaces.discrete
        self.observations, _ = env.reset(seed=seeds)
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)

    def collect(self, steps: int) -> Rollout:
        n, obs_shape = self.env.num_envs, self.observations.shape[1:]
        observations = np.zeros((steps, n, *obs_shape), np.float32)
        actions = np.zeros((steps, n, *self.learner.spaces.action_shape),
                           np.int64 if self.discrete else np.float32)
        log_probs, rewards = np.zeros((steps, n), np.float32), np.zeros((steps, n), np.float32)
        terminated, truncated = np.zeros((steps, n), bool), np.zeros((steps, n), bool)
        final_observations = np.zeros_like(observations)
        finished_returns, finished_lengths = [], []
        for t in range(steps):
            observations[t] = self.observations
            action, log_prob = (x.numpy() for x in self.learner.act(self.observations))
            actions[t], log_probs[t] = action, log_prob
            if not self.discrete:
                action = np.clip(action, self.env.single_action_space.low, self.env.single_action_space.high)
            self.observations, reward, terminated[t], truncated[t], info = self.env.step(action)
            rewards[t] = reward * self.reward_scale
            self._returns += reward
            self._lengths += 1
            for i in np.flatnonzero(terminated[t] | truncated[t]):
                finished_returns.append(float(self._returns[i]))
                finished_lengths.append(int(self._lengths[i]))
                self._returns[i], self._lengths[i] = 0.0, 0
                if truncated[t, i] and not terminated[t, i]:
                    final_observations[t, i] = info["final_obs"][i]
        return Rollout(observations, actions, log_probs, rewards, terminated, truncated, final_observations,
                       self.observations.astype(np.float32), finished_returns, finished_lengths)
