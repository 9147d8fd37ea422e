"""Gymnasium vector environments, stepped together in one process.

Autoreset is SAME_STEP: the observation returned on the step that ends an episode is already the next
episode's first one, and the episode's real final observation is in `info["final_obs"]`. Every step in a
rollout is then a real transition, and a truncated episode can bootstrap from its own final observation.
"""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from pipeline.core.schema import ConfigError
from pipeline.gym import spaces
from pipeline.gym.config import EnvConfig


def make_vector_env(cfg: EnvConfig, num_envs: int | None = None) -> gym.vector.VectorEnv:
    kwargs = dict(cfg.kwargs)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        env = gym.make_vec(
            _spec(cfg.id),
            num_envs=num_envs or cfg.num_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
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


def episode_seeds(base_seed: int, num_envs: int, salt: int = 0) -> list[int]:
    """Distinct, reproducible reset seeds per environment; `salt` (e.g. the iteration) varies them on resume."""
    return [int(s) for s in np.random.SeedSequence([base_seed, salt]).generate_state(num_envs)]
