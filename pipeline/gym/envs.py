"""Gymnasium vector environments, stepped together in one process.

Autoreset is SAME_STEP: the observation returned on the step that ends an episode is already the next
episode's first one, and the episode's real final observation is in `info["final_obs"]`. Every step in a
rollout is then a real transition, and a truncated episode can bootstrap from its own final observation.
"""

from __future__ import annotations

import functools
import importlib

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from pipeline.core.schema import ConfigError
from pipeline.gym import atari, spaces
from pipeline.gym.config import EnvConfig


def make_vector_env(cfg: EnvConfig, num_envs: int | None = None, learning: bool = True) -> gym.vector.VectorEnv:
    """learning: the environments PPO learns on (under env.preprocessing: atari, a lost life ends an episode and
    rewards are clipped); False for evaluation, blessing and videos (whole games, raw scores)."""
    if cfg.preprocessing == "atari" or cfg.id.startswith("ALE/"):
        atari.register()
    kwargs = {**(atari.make_kwargs(cfg.id) if cfg.preprocessing == "atari" else {}), **cfg.kwargs}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    vector_kwargs = {"autoreset_mode": AutoresetMode.SAME_STEP}
    if cfg.vectorization == "async":
        # forkserver: the environments' processes start clean, not as forks of a process running TensorFlow's
        # threads (Stable-Baselines3's SubprocVecEnv default for the same reason).
        vector_kwargs.update(shared_memory=True, context="forkserver")
    spec = _spec(cfg.id)
    try:
        wrappers = [functools.partial(atari.wrap, learning=learning)] if cfg.preprocessing == "atari" else []
        if _mask_in_info(cfg, spec, kwargs):
            wrappers.append(InfoActionMask)
        env = gym.make_vec(
            spec,
            num_envs=num_envs or cfg.num_envs,
            vectorization_mode=cfg.vectorization,
            vector_kwargs=vector_kwargs,
            wrappers=wrappers or None,
            **kwargs,
        )
    except gym.error.Error as e:
        raise ConfigError(f"env.id: cannot make {cfg.id!r}: {e}") from None
    except TypeError as e:  # the constructor refused a keyword argument
        raise ConfigError(f"env.kwargs: {cfg.id!r} cannot take {cfg.kwargs}: {e}") from None
    try:
        spaces.spaces_of(env, env_id=cfg.id)  # ConfigError naming a space the pipeline cannot learn on
    except ConfigError:
        env.close()
        raise
    return env


class InfoActionMask(gym.Wrapper):
    """gymnasium's other action-mask convention, `info["action_mask"]` (Taxi, many board games), moved into the
    observation as its `action_mask` key: masks then travel with observations through rollouts and the export."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        inner = env.observation_space
        parts = dict(inner.spaces) if isinstance(inner, gym.spaces.Dict) else {spaces.SINGLE: inner}
        self.observation_space = gym.spaces.Dict({**parts, spaces.MASK_KEY: gym.spaces.MultiBinary(_flags(env))})

    def _with_mask(self, observation, info):
        parts = dict(observation) if isinstance(observation, dict) else {spaces.SINGLE: observation}
        return {**parts, spaces.MASK_KEY: np.asarray(info[spaces.MASK_KEY], np.int8)}

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return self._with_mask(observation, info), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._with_mask(observation, info), reward, terminated, truncated, info


def _flags(env: gym.Env) -> int:
    space = env.action_space
    return int(np.sum(space.nvec)) if isinstance(space, gym.spaces.MultiDiscrete) else int(getattr(space, "n", 0))


_MASK_IN_INFO: dict = {}  # (env id, kwargs) -> whether reset's info holds the mask: one probe per process


def _mask_in_info(cfg: EnvConfig, spec, kwargs: dict) -> bool:
    """Whether the environment gives its action mask in info rather than in a Dict observation (env.action_mask
    auto), found by making and resetting one environment once."""
    if cfg.action_mask != "auto":
        return cfg.action_mask == "info"
    key = (cfg.id, repr(sorted(kwargs.items())))
    if key not in _MASK_IN_INFO:
        env = gym.make(spec, **kwargs)
        try:
            observation, info = env.reset(seed=cfg.seed)
        finally:
            env.close()
        in_observation = isinstance(observation, dict) and spaces.MASK_KEY in observation
        _MASK_IN_INFO[key] = spaces.MASK_KEY in info and not in_observation
    return _MASK_IN_INFO[key]


def _spec(env_id: str) -> str | EnvSpec:
    """A registered id stays as it is. `module:Class` (or `module:factory`) names a constructor, used without
    registering it; otherwise gymnasium reads `module:Id-v0` itself (import module, which registers Id-v0)."""
    module, sep, name = env_id.partition(":")
    if not sep or env_id in gym.registry:
        return env_id
    try:
        target = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ConfigError(f"env.id: cannot import {module!r} for {env_id!r}: {e}") from None
    except AttributeError:
        return env_id  # gymnasium's own form, or its error
    if not callable(target):
        raise ConfigError(f"env.id: {env_id!r} is not a class or function that makes an environment")
    return EnvSpec(id=name, entry_point=target)


def check_environment(cfg: EnvConfig) -> None:
    make_vector_env(cfg, num_envs=1).close()


def env_actions(env, actions: np.ndarray) -> np.ndarray:
    """What the policy chose, as the environment accepts it: Box actions clipped to their bounds (a Gaussian
    policy's samples are unbounded), discrete ones from the space's first value in its dtype."""
    space = env.single_action_space
    if isinstance(space, gym.spaces.Box):
        return np.clip(actions, space.low, space.high)
    if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        actions = actions + space.start if np.any(space.start) else actions
    return actions.astype(space.dtype, copy=False)


def episode_seeds(base_seed: int, num_envs: int, salt: int = 0) -> list[int]:
    """Distinct, reproducible reset seeds per environment; `salt` (e.g. the iteration) varies them on resume."""
    return [int(s) for s in np.random.SeedSequence([base_seed, salt]).generate_state(num_envs)]
