"""Gymnasium vector environments, stepped together in one process.

Autoreset is SAME_STEP: the observation returned on the step that ends an episode is already the next
episode's first one, and the episode's real final observation is in `info["final_obs"]`. Every step in a
rollout is then a real transition, and a truncated episode can bootstrap from its own final observation.
"""

from __future__ import annotations

import dataclasses
import importlib

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from pipeline.core.schema import ConfigError
from pipeline.gym.config import EnvConfig


@dataclasses.dataclass(frozen=True)
class Spaces:
    """What the model stage needs to know about an environment, as plain data."""

    observation_shape: tuple
    observation_low: np.ndarray
    observation_high: np.ndarray
    discrete: bool
    num_actions: int | None  # Discrete
    action_shape: tuple  # Box (empty for Discrete)
    action_low: np.ndarray | None
    action_high: np.ndarray | None


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
    check_supported(env, cfg.id)
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


def check_supported(env: gym.vector.VectorEnv, env_id: str) -> None:
    obs, act = env.single_observation_space, env.single_action_space
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise ConfigError(f"env.id: {env_id!r} has observation space {obs}; allowed: a flat Box")
    if not isinstance(act, (gym.spaces.Discrete, gym.spaces.Box)) or (
        isinstance(act, gym.spaces.Box) and len(act.shape) != 1
    ):
        raise ConfigError(f"env.id: {env_id!r} has action space {act}; allowed: Discrete or a flat Box")


def spaces_of(env: gym.vector.VectorEnv) -> Spaces:
    obs, act = env.single_observation_space, env.single_action_space
    discrete = isinstance(act, gym.spaces.Discrete)
    return Spaces(
        observation_shape=tuple(obs.shape),
        observation_low=obs.low,
        observation_high=obs.high,
        discrete=discrete,
        num_actions=int(act.n) if discrete else None,
        action_shape=() if discrete else tuple(act.shape),
        action_low=None if discrete else act.low,
        action_high=None if discrete else act.high,
    )


def episode_seeds(base_seed: int, num_envs: int, salt: int = 0) -> list[int]:
    """Distinct, reproducible reset seeds per environment; `salt` (e.g. the iteration) varies them on resume."""
    return [int(s) for s in np.random.SeedSequence([base_seed, salt]).generate_state(num_envs)]


def tf_agents_specs(spaces: Spaces):
    """(observation_spec, action_spec) as TF-Agents tensor specs."""
    import tensorflow as tf
    from tf_agents.specs import tensor_spec

    obs_spec = tensor_spec.BoundedTensorSpec(
        spaces.observation_shape,
        tf.float32,
        minimum=np.maximum(spaces.observation_low, np.finfo(np.float32).min),
        maximum=np.minimum(spaces.observation_high, np.finfo(np.float32).max),
        name="observation",
    )
    if spaces.discrete:
        action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, spaces.num_actions - 1, name="action")
    else:
        action_spec = tensor_spec.BoundedTensorSpec(
            spaces.action_shape, tf.float32, spaces.action_low, spaces.action_high, name="action"
        )
    return obs_spec, action_spec
