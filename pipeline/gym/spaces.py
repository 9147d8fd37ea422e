"""An environment's observation and action spaces as plain data: what the networks, rollouts and export are built from.

An observation is one part (a Box, Discrete or MultiBinary space) or a dict of named parts (a Dict space). Every part
keeps one dtype from the environment to the export: uint8 frames stay uint8 (scaled inside the network), vectors and
bits are float32, a Discrete observation an int64 index, an action mask int32 flags (TensorFlow's random ops, which
TF-Agents builds networks with, take no int8). A Dict's `action_mask` key is gymnasium's action mask: it
reaches the policy's distribution, never its encoder.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np

from export import tf_serving
from pipeline.core.schema import ConfigError

VECTOR, IMAGE, DISCRETE, BINARY, MASK = "vector", "image", "discrete", "binary", "mask"
MASK_KEY = "action_mask"
SINGLE = tf_serving.OBSERVATIONS  # the one part's name when the observation is not a Dict (its serving input)


@dataclasses.dataclass(frozen=True)
class Part:
    """One named observation input."""

    name: str
    kind: str  # VECTOR, IMAGE, DISCRETE, BINARY or MASK
    shape: tuple
    dtype: str  # numpy's name for it
    low: np.ndarray | None = None  # VECTOR: the space's bounds
    high: np.ndarray | None = None
    n: int | None = None  # DISCRETE: how many values
    channels_first: bool = False  # IMAGE: stored [C, H, W]


@dataclasses.dataclass(frozen=True)
class Spaces:
    parts: tuple[Part, ...]
    is_dict: bool  # the observation is a dict of the parts (else the one part itself)
    action_kind: str  # "discrete", "multi_discrete", "binary" or "box"
    action_shape: tuple  # () for Discrete
    action_nvec: tuple | None = None  # discrete kinds: how many values each action dimension has
    action_start: np.ndarray | None = None  # discrete kinds: the value index 0 stands for
    action_low: np.ndarray | None = None  # box
    action_high: np.ndarray | None = None

    @property
    def discrete(self) -> bool:
        """Integer actions (a categorical policy), as opposed to a Box's Gaussian one."""
        return self.action_kind != "box"

    @property
    def flat_box(self) -> bool:
        """One float vector: the observation TF-Agents' own normaliser covers, as runs before spaces had parts."""
        return not self.is_dict and self.parts[0].kind == VECTOR and len(self.parts[0].shape) == 1

    @property
    def mask(self) -> Part | None:
        return next((p for p in self.parts if p.kind == MASK), None)

    @property
    def vector_keys(self) -> list[str]:
        """The parts the observation normaliser covers: float vectors, never pixels, indices, bits or masks."""
        return [p.name for p in self.parts if p.kind == VECTOR]


def spaces_of(env: gym.vector.VectorEnv, image_channels: str = "auto", env_id: str | None = None) -> Spaces:
    """ConfigError naming the space if the pipeline cannot learn on it."""
    env_id = env_id or (env.spec.id if env.spec is not None else type(env).__name__)
    obs, act = env.single_observation_space, env.single_action_space
    if isinstance(obs, gym.spaces.Dict):
        parts = tuple(_part(key, space, image_channels, env_id) for key, space in obs.spaces.items())
        is_dict = True
    else:
        parts, is_dict = (_part(SINGLE, obs, image_channels, env_id),), False
    spaces = Spaces(parts, is_dict, **_action(act, env_id))
    _check_mask(spaces, env_id)
    return spaces


def _part(name: str, space: gym.Space, image_channels: str, env_id: str) -> Part:
    where = f"env.id: {env_id!r} has observation space {space}" + (f" under {name!r}" if name != SINGLE else "")
    if name == MASK_KEY:
        if not isinstance(space, (gym.spaces.MultiBinary, gym.spaces.Box)) or len(space.shape) != 1:
            raise ConfigError(f"{where}; allowed for an action mask: a flat MultiBinary or Box of 0/1")
        return Part(name, MASK, tuple(space.shape), "int32")
    if isinstance(space, gym.spaces.Discrete):
        return Part(name, DISCRETE, (), "int64", n=int(space.n))
    if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        return Part(name, BINARY, tuple(space.shape), "float32")
    if isinstance(space, gym.spaces.Box):
        if space.dtype == np.uint8 and len(space.shape) in (2, 3):
            return Part(name, IMAGE, tuple(space.shape), "uint8", channels_first=_channels_first(space, image_channels))
        if len(space.shape) == 1:
            return Part(name, VECTOR, tuple(space.shape), "float32", low=space.low, high=space.high)
    raise ConfigError(
        f"{where}; allowed: a flat Box, an image (a uint8 Box [H, W], [H, W, C] or [C, H, W]), Discrete, "
        f"a flat MultiBinary, or a Dict of those (and an {MASK_KEY!r} key)"
    )


def _channels_first(space: gym.spaces.Box, image_channels: str) -> bool:
    if len(space.shape) == 2 or image_channels == "last":
        return False
    if image_channels == "first":
        return True
    # auto: [C, H, W] when the first axis looks like channels (gray, RGB, RGBA or stacked frames) and the last does not
    return space.shape[0] in (1, 2, 3, 4) and space.shape[-1] not in (1, 2, 3, 4)


def _action(space: gym.Space, env_id: str) -> dict:
    if isinstance(space, gym.spaces.Discrete):
        return dict(action_kind="discrete", action_shape=(), action_nvec=(int(space.n),), action_start=space.start)
    if isinstance(space, gym.spaces.MultiDiscrete) and len(space.shape) == 1:
        return dict(
            action_kind="multi_discrete",
            action_shape=tuple(space.shape),
            action_nvec=tuple(int(n) for n in space.nvec),
            action_start=space.start,
        )
    if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        return dict(action_kind="binary", action_shape=tuple(space.shape), action_nvec=(2,) * int(space.shape[0]))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return dict(action_kind="box", action_shape=tuple(space.shape), action_low=space.low, action_high=space.high)
    raise ConfigError(
        f"env.id: {env_id!r} has action space {space}; allowed: Discrete, a flat MultiDiscrete, a flat MultiBinary "
        f"or a flat Box"
    )


def _check_mask(spaces: Spaces, env_id: str) -> None:
    mask = spaces.mask
    if mask is None:
        return
    if spaces.action_kind not in ("discrete", "multi_discrete"):
        raise ConfigError(
            f"env.id: {env_id!r} has an {MASK_KEY!r} for {spaces.action_kind} actions; allowed: masks of Discrete "
            f"or MultiDiscrete actions"
        )
    if mask.shape != (sum(spaces.action_nvec),):
        raise ConfigError(
            f"env.id: {env_id!r} has an {MASK_KEY!r} of shape {mask.shape}; allowed: one flag per action value, "
            f"({sum(spaces.action_nvec)},) (MultiDiscrete: each dimension's flags in turn)"
        )


def describe(name: str) -> str:
    """How messages name an observation part: the observation itself, or its Dict key."""
    return "observation" if name == SINGLE else f"observation {name!r}"


def observation_parts(spaces: Spaces, observation) -> dict[str, np.ndarray]:
    """A batch of observations as the environment returns it -> name -> array in the part's dtype."""
    values = observation if spaces.is_dict else {SINGLE: observation}
    return {p.name: np.asarray(values[p.name]).astype(p.dtype, copy=False) for p in spaces.parts}


def random_actions(spaces: Spaces, env: gym.vector.VectorEnv, parts: dict) -> np.ndarray:
    """A uniformly random allowed action per environment (parts: this step's observation_parts)."""
    if spaces.mask is None:
        return env.action_space.sample()
    space, masks = env.single_action_space, parts[spaces.mask.name].astype(np.int8)
    if spaces.action_kind == "discrete":
        return np.array([space.sample(mask=m) for m in masks])
    splits = np.cumsum(spaces.action_nvec)[:-1]
    return np.stack([space.sample(mask=tuple(np.split(m, splits))) for m in masks])


def as_nest(spaces: Spaces, parts: dict):
    """name -> array or tensor (any batch shape) -> the observation as the networks take it."""
    return dict(parts) if spaces.is_dict else parts[SINGLE]


def tf_agents_specs(spaces: Spaces):
    """(observation_spec, action_spec) as TF-Agents tensor specs. MultiDiscrete actions of unequal sizes share the
    largest size (TF-Agents' categorical head takes one); the values past a dimension's own size are masked."""
    import tensorflow as tf
    from tf_agents.specs import tensor_spec

    def spec(part: Part):
        if part.kind == VECTOR:
            low = np.maximum(part.low, np.finfo(np.float32).min)
            high = np.minimum(part.high, np.finfo(np.float32).max)
            return tensor_spec.BoundedTensorSpec(part.shape, tf.float32, low, high, name=part.name)
        if part.kind == DISCRETE:
            return tensor_spec.BoundedTensorSpec((), tf.int64, 0, part.n - 1, name=part.name)
        # Bits and mask flags; pixels to 254: TF-Agents samples a bounded spec (to build a network's variables) up to
        # maximum + 1 in the spec's dtype, and under numpy 2 a uint8 255 + 1 wraps to 0.
        high = 254 if part.kind == IMAGE else 1
        return tensor_spec.BoundedTensorSpec(part.shape, tf.as_dtype(part.dtype), 0, high, name=part.name)

    specs = {p.name: spec(p) for p in spaces.parts}
    obs_spec = specs if spaces.is_dict else specs[SINGLE]
    if spaces.action_kind == "box":
        action_spec = tensor_spec.BoundedTensorSpec(
            spaces.action_shape, tf.float32, spaces.action_low, spaces.action_high, name="action"
        )
    else:
        action_spec = tensor_spec.BoundedTensorSpec(
            spaces.action_shape, tf.int64, 0, max(spaces.action_nvec) - 1, name="action"
        )
    return obs_spec, action_spec


def value_mask(spaces: Spaces) -> np.ndarray | None:
    """MultiDiscrete: [dims, largest size], True where a dimension has that value (all True when the sizes are
    equal: the layout a flat action mask is read into); None for other actions."""
    if spaces.action_kind != "multi_discrete":
        return None
    width = max(spaces.action_nvec)
    return np.arange(width)[None, :] < np.array(spaces.action_nvec)[:, None]
