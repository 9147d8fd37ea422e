"""Collects fixed-length rollouts from a vector environment with the learner's sampling policy.

Kept apart from learning (as TF-Agents keeps actors apart from learners): the learner only sees the
(time, env) arrays this returns.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from pipeline.core.guards import NonFiniteError
from pipeline.gym import envs, spaces


@dataclasses.dataclass
class Rollout:
    """(T, N, ...) arrays of real transitions. Values are not stored: the learner computes them for the
    whole rollout in one batched call, with the same parameters the policy had while collecting. An observation
    field is an array, or a dict of them for a Dict observation (pipeline/gym/spaces.py)."""

    observations: np.ndarray | dict
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_observations: np.ndarray | dict  # where truncated: the episode's real last observation (else zeros)
    next_observations: np.ndarray | dict  # (N, ...) the observations after the last step
    episode_returns: list  # raw (unscaled) returns of the episodes finished in this rollout
    episode_lengths: list

    def arrays(self) -> dict:
        """The tensors the learner trains on (everything but the episode lists)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("episode")}


def check_env_outputs(env, stage: str, observations: dict, rewards=None) -> None:
    """Raises NonFiniteError, naming the environment, what it returned and where, if an observation or reward is
    NaN or infinite: the policy and the value targets must never see one. observations: part name -> array."""
    checked = [(spaces.describe(k), v) for k, v in observations.items() if np.issubdtype(v.dtype, np.floating)]
    for what, values in checked + ([("reward", rewards)] if rewards is not None else []):
        values = np.asarray(values, np.float32).reshape(len(values), -1)  # float32: what the networks see
        finite = np.isfinite(values)
        if not finite.all():
            bad = np.argwhere(~finite)
            name = env.spec.id if env.spec is not None else type(env).__name__
            raise NonFiniteError(
                f"{stage}: environment {name} returned a non-finite {what} "
                f"({values[tuple(bad[0])]}) in its sub-environment {bad[0][0]}; stopped before "
                f"training on it: the latest checkpoint is the last good one"
            )


class Packer:
    """Named [n, ...] arrays of several dtypes through one output per dtype of a tf.numpy_function (each output
    costs ~15 us of conversion in TensorFlow's Python), and back into named tensors in the graph."""

    def __init__(self, fields: dict, n: int):
        """fields: name -> (shape, numpy dtype name)."""
        self.n, self.fields = n, fields
        self.groups: dict[str, list] = {}  # dtype -> [(name, start, width)]
        self.widths: dict[str, int] = {}
        for name, (shape, dtype) in fields.items():
            width = int(np.prod(shape))
            self.groups.setdefault(dtype, []).append((name, self.widths.get(dtype, 0), width))
            self.widths[dtype] = self.widths.get(dtype, 0) + width
        self.dtypes = [tf.as_dtype(d) for d in self.groups]

    def pack(self, values: dict) -> list:
        """values: name -> [n, ...] (a field not given is zeros). Fresh arrays every call: TensorFlow may keep a
        returned array's memory as its tensor's."""
        buffers = {d: np.zeros((self.n, w), d) for d, w in self.widths.items()}
        for dtype, entries in self.groups.items():
            for name, start, width in entries:
                if name in values:
                    buffers[dtype][:, start : start + width] = np.reshape(values[name], (self.n, width))
        return list(buffers.values())

    def unpack(self, tensors) -> dict:
        out = {}
        for tensor, (dtype, entries) in zip(tensors, self.groups.items()):
            tensor.set_shape([self.n, self.widths[dtype]])
            for name, start, width in entries:
                out[name] = tf.reshape(tensor[:, start : start + width], [self.n, *self.fields[name][0]])
        return out


def _keeping_errors(owner, env_step):
    """env_step as the compiled loop's tf.numpy_function calls it: a NonFiniteError it raises is kept on owner,
    for _run_reraising to raise once TensorFlow has wrapped it in an error of its own."""

    def call(*args):
        try:
            return env_step(*args)
        except NonFiniteError as e:
            owner._error = e
            raise

    return call


def _run_reraising(owner, fn, *args):
    """Calls a compiled loop whose numpy_function may fail; re-raises the original error, not TensorFlow's wrapper."""
    owner._error = None
    try:
        return fn(*args)
    except tf.errors.OpError:
        if owner._error is not None:
            raise owner._error from None
        raise


class Collector:
    """The whole rollout is one compiled call: a graph loop that samples actions and steps the Python
    environment through `tf.numpy_function` (TF-Agents' drivers do the same). A call per step from Python
    would pay TensorFlow's function-call overhead every step, as much as stepping many cheap environments."""

    FLAGS = ("reward", "terminated", "truncated")

    def __init__(self, env, learner, reward_scale: float, seeds: list[int], episodes_in_info: bool = False):
        """episodes_in_info: report the episodes the environment's RecordEpisodeStatistics counts (whole Atari
        games, raw scores, lengths in frames) rather than those this loop sees end (a life, clipped rewards)."""
        self.env, self.learner, self.reward_scale = env, learner, reward_scale
        self.episodes_in_info = episodes_in_info
        self.spaces = learner.spaces
        observations, _ = env.reset(seed=seeds)
        self.observations = spaces.observation_parts(self.spaces, observations)  # part name -> [N, ...]
        check_env_outputs(env, "train", self.observations)
        fields = {}
        for prefix in ("next", "final"):
            fields.update({f"{prefix}/{p.name}": (p.shape, p.dtype) for p in self.spaces.parts})
        fields.update({name: ((), "float32") for name in self.FLAGS})
        self._packer = Packer(fields, env.num_envs)
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)
        self._finished_returns, self._finished_lengths = [], []
        self._compiled = {}  # rollout length -> concrete function

    def collect(self, steps: int) -> Rollout:
        if steps not in self._compiled:
            self._compiled[steps] = self._compile(steps)
        self._finished_returns, self._finished_lengths = [], []
        outputs = _run_reraising(self, self._compiled[steps], self.observations)
        arrays = {k: v.numpy() for k, v in outputs.items()}
        names = [p.name for p in self.spaces.parts]

        def observations(prefix):
            return spaces.as_nest(self.spaces, {name: arrays[f"{prefix}/{name}"] for name in names})

        self.observations = {name: arrays[f"last/{name}"] for name in names}
        return Rollout(
            observations=observations("observations"),
            actions=arrays["actions"],
            log_probs=arrays["log_probs"],
            rewards=arrays["rewards"],
            terminated=arrays["terminated"],
            truncated=arrays["truncated"],
            final_observations=observations("final_observations"),
            next_observations=spaces.as_nest(self.spaces, self.observations),
            episode_returns=self._finished_returns,
            episode_lengths=self._finished_lengths,
        )

    def _compile(self, steps: int):
        n, parts = self.env.num_envs, self.spaces.parts
        action_dtype = tf.int64 if self.spaces.discrete else tf.float32
        dtypes = {
            **{f"observations/{p.name}": tf.as_dtype(p.dtype) for p in parts},
            "actions": action_dtype,
            "log_probs": tf.float32,
            "rewards": tf.float32,
            "terminated": tf.bool,
            "truncated": tf.bool,
            **{f"final_observations/{p.name}": tf.as_dtype(p.dtype) for p in parts},
        }

        def rollout(observations):
            def step(t, observations, arrays):
                nest = spaces.as_nest(self.spaces, observations)
                with tf.control_dependencies(self.learner.observe(nest)):
                    actions, log_probs = self.learner.sample(nest)
                out = self._packer.unpack(
                    tf.numpy_function(
                        _keeping_errors(self, self._env_step),
                        [actions, log_probs],
                        self._packer.dtypes,
                        stateful=True,
                    )
                )
                values = {
                    **{f"observations/{p.name}": observations[p.name] for p in parts},
                    "actions": actions,
                    "log_probs": log_probs,
                    "rewards": out["reward"],
                    "terminated": out["terminated"] > 0,
                    "truncated": out["truncated"] > 0,
                    **{f"final_observations/{p.name}": out[f"final/{p.name}"] for p in parts},
                }
                next_observations = {p.name: out[f"next/{p.name}"] for p in parts}
                return t + 1, next_observations, {k: a.write(t, values[k]) for k, a in arrays.items()}

            arrays = {k: tf.TensorArray(dtype, size=steps) for k, dtype in dtypes.items()}
            _, last, arrays = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(0), observations, arrays))
            return {**{k: a.stack() for k, a in arrays.items()}, **{f"last/{k}": v for k, v in last.items()}}

        signature = {p.name: tf.TensorSpec([n, *p.shape], p.dtype) for p in parts}
        return tf.function(rollout, input_signature=[signature], autograph=False).get_concrete_function()

    def _env_step(self, actions: np.ndarray, log_probs: np.ndarray) -> list:
        """One environment step, called from inside the compiled loop; keeps the episode bookkeeping.

        Returns the packed next observation, final observation (the truncated episode's real last one, zeros
        elsewhere), reward x reward_scale, terminated and truncated of every environment."""
        if not np.isfinite(log_probs).all():  # NaN logits draw any index: never hand it to the environment
            raise NonFiniteError(
                "train: the policy's log-probabilities of its sampled actions are not finite "
                "(its weights or observation normaliser overflowed); stopped before stepping "
                "the environment: the latest checkpoint is the last good one"
            )
        observations, rewards, terminated, truncated, info = self.env.step(envs.env_actions(self.env, actions))
        observations = spaces.observation_parts(self.spaces, observations)
        check_env_outputs(self.env, "train", observations, rewards)
        self._returns += rewards
        self._lengths += 1
        values = {f"next/{k}": v for k, v in observations.items()}
        values.update(reward=rewards * self.reward_scale, terminated=terminated, truncated=truncated)
        bootstraps = np.flatnonzero(truncated & ~terminated)
        if len(bootstraps):  # else the final observations stay zeros
            last = spaces.observation_parts(self.spaces, _select(info["final_obs"], bootstraps))
            check_env_outputs(self.env, "train", last)  # the truncated episodes' bootstrap observations
            for k, v in last.items():
                final = np.zeros((self.env.num_envs, *v.shape[1:]), v.dtype)
                final[bootstraps] = v
                values[f"final/{k}"] = final
        if self.episodes_in_info:
            final_info = info.get("final_info", {})
            for i in np.flatnonzero(final_info.get("_episode", [])):
                self._finished_returns.append(float(final_info["episode"]["r"][i]))
                self._finished_lengths.append(int(final_info["episode"]["l"][i]))
        else:
            for i in np.flatnonzero(terminated | truncated):
                self._finished_returns.append(float(self._returns[i]))
                self._finished_lengths.append(int(self._lengths[i]))
                self._returns[i], self._lengths[i] = 0.0, 0
        return self._packer.pack(values)


def _select(final_observations, rows):
    """The rows of info["final_obs"] (an object array of each environment's observation, None where none ended)
    stacked into the batch layout observations come in (an array, or a dict of arrays)."""
    items = [final_observations[i] for i in rows]
    if isinstance(items[0], dict):
        return {k: np.stack([item[k] for item in items]) for k in items[0]}
    return np.stack(items)


class GreedyEpisodes:
    """Greedy episodes on N environments side by side, each until its first episode ends, as one compiled loop.

    Evaluation steps like collection: a Python call into TensorFlow per step costs more than stepping a cheap
    environment. The loop is traced on the first run; keep one object for repeated
    evaluations, one run at a time.
    """

    def __init__(self, greedy, num_envs: int):
        """greedy: a batch of observations [num_envs, ...] (an array, or a dict of them, in each part's dtype) ->
        actions, a TensorFlow function (the learner's greedy policy, or an exported SavedModel's)."""
        self.greedy, self.num_envs = greedy, num_envs
        self._loop = None

    def run(self, env, observations) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of each environment's first episode from `observations` (after env.reset)."""
        assert env.num_envs == self.num_envs, f"{env.num_envs} environments for a loop built for {self.num_envs}"
        if self._loop is None:
            self._spaces = spaces.spaces_of(env)
            fields = {p.name: (p.shape, p.dtype) for p in self._spaces.parts}
            self._packer = Packer({**fields, "running": ((), "float32")}, self.num_envs)
            signature = {p.name: tf.TensorSpec([self.num_envs, *p.shape], p.dtype) for p in self._spaces.parts}
            self._loop = tf.function(
                self._episodes, input_signature=[signature], autograph=False
            ).get_concrete_function()
        self._env = env
        self._returns, self._lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, np.int64)
        self._running = np.ones(self.num_envs, bool)
        observations = spaces.observation_parts(self._spaces, observations)
        check_env_outputs(env, "evaluate", observations)
        try:
            _run_reraising(self, self._loop, observations)
        finally:
            self._env = None
        return self._returns, self._lengths

    def _episodes(self, observations):
        def step(observations, running):
            actions = self.greedy(spaces.as_nest(self._spaces, observations))
            out = self._packer.unpack(
                tf.numpy_function(_keeping_errors(self, self._env_step), [actions], self._packer.dtypes, stateful=True)
            )
            return {k: out[k] for k in observations}, tf.reduce_any(out["running"] > 0)

        return tf.while_loop(lambda observations, running: running, step, (observations, tf.constant(True)))[0]

    def _env_step(self, actions: np.ndarray) -> list:
        """The packed next observation and 'still in its first episode' of every environment."""
        observations, rewards, terminated, truncated, info = self._env.step(envs.env_actions(self._env, actions))
        observations = spaces.observation_parts(self._spaces, observations)
        check_env_outputs(self._env, "evaluate", observations, rewards)
        self._returns += np.where(self._running, rewards, 0.0)
        self._lengths += self._running
        # Where the environment counts its own episodes (RecordEpisodeStatistics: Atari's whole games, their
        # frames and the points scored during the no-ops at reset), its count is the one reported, as in training.
        final_info = info.get("final_info", {})
        for i in np.flatnonzero(final_info.get("_episode", np.zeros(self.num_envs, bool)) & self._running):
            self._returns[i], self._lengths[i] = final_info["episode"]["r"][i], final_info["episode"]["l"][i]
        self._running &= ~(terminated | truncated)
        return self._packer.pack({**observations, "running": self._running})
