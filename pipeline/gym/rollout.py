"""Collects fixed-length rollouts from a vector environment with the learner's sampling policy.

Kept apart from learning (as TF-Agents keeps actors apart from learners): the learner only sees the
(time, env) arrays this returns.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import tensorflow as tf

from pipeline.core.guards import NonFiniteError


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
    next_observations: np.ndarray  # (N, ...) the observations after the last step
    episode_returns: list  # raw (unscaled) returns of the episodes finished in this rollout
    episode_lengths: list

    def arrays(self) -> dict:
        """The tensors the learner trains on (everything but the episode lists)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("episode")}


def _env_actions(env, actions: np.ndarray) -> np.ndarray:
    """What the policy chose, as the environment accepts it: Box actions clipped to their bounds (a Gaussian
    policy's samples are unbounded), Discrete ones as they are."""
    space = env.single_action_space
    return np.clip(actions, space.low, space.high) if isinstance(space, gym.spaces.Box) else actions


def check_env_outputs(env, stage: str, observations, rewards=None) -> None:
    """Raises NonFiniteError, naming the environment, what it returned and where, if an observation or reward is
    NaN or infinite: the policy and the value targets must never see one."""
    for what, values in (("observation", observations), ("reward", rewards)):
        if values is None:
            continue
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

    def __init__(self, env, learner, reward_scale: float, seeds: list[int]):
        self.env, self.learner, self.reward_scale = env, learner, reward_scale
        self.discrete = learner.spaces.discrete
        observations, _ = env.reset(seed=seeds)
        check_env_outputs(env, "train", observations)
        self.observations = observations.astype(np.float32)
        self._obs_size = int(np.prod(self.observations.shape[1:]))
        self._returns = np.zeros(env.num_envs)
        self._lengths = np.zeros(env.num_envs, dtype=np.int64)
        self._finished_returns, self._finished_lengths = [], []
        self._compiled = {}  # rollout length -> concrete function

    def collect(self, steps: int) -> Rollout:
        if steps not in self._compiled:
            self._compiled[steps] = self._compile(steps)
        self._finished_returns, self._finished_lengths = [], []
        # The loop returns Rollout's per-step arrays in field order, then the observations after the last step.
        outputs = _run_reraising(self, self._compiled[steps], self.observations)
        *arrays, self.observations = (x.numpy() for x in outputs)
        return Rollout(*arrays, self.observations, self._finished_returns, self._finished_lengths)

    def _compile(self, steps: int):
        n = self.env.num_envs
        obs_shape, obs_size = self.observations.shape[1:], self._obs_size
        dtypes = (
            tf.float32,
            tf.int64 if self.discrete else tf.float32,
            tf.float32,
            tf.float32,
            tf.bool,
            tf.bool,
            tf.float32,
        )

        def rollout(observations):
            def step(t, observations, arrays):
                actions, log_probs = self.learner.sample(observations)
                # One packed output: each output of a numpy_function costs ~15 us of conversion in TF's Python.
                packed = tf.numpy_function(
                    _keeping_errors(self, self._env_step), [actions, log_probs], tf.float32, stateful=True
                )
                packed.set_shape([n, 2 * obs_size + 3])
                next_observations, final_observations, flags = tf.split(packed, [obs_size, obs_size, 3], axis=1)
                next_observations = tf.reshape(next_observations, observations.shape)
                final_observations = tf.reshape(final_observations, observations.shape)
                rewards, terminated, truncated = tf.unstack(flags, axis=1)
                values = (observations, actions, log_probs, rewards, terminated > 0, truncated > 0, final_observations)
                return t + 1, next_observations, tuple(a.write(t, v) for a, v in zip(arrays, values))

            arrays = tuple(tf.TensorArray(dtype, size=steps) for dtype in dtypes)
            _, last, arrays = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(0), observations, arrays))
            return tuple(a.stack() for a in arrays) + (last,)

        signature = tf.TensorSpec([n, *obs_shape], tf.float32)
        return tf.function(rollout, input_signature=[signature], autograph=False).get_concrete_function()

    def _env_step(self, actions: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
        """One environment step, called from inside the compiled loop; keeps the episode bookkeeping.

        Returns [next observation | final observation | reward x reward_scale, terminated, truncated] per
        environment, float32 (the final observation is the truncated episode's real last one, zeros elsewhere)."""
        if not np.isfinite(log_probs).all():  # NaN logits draw any index: never hand it to the environment
            raise NonFiniteError(
                "train: the policy's log-probabilities of its sampled actions are not finite "
                "(its weights or observation normaliser overflowed); stopped before stepping "
                "the environment: the latest checkpoint is the last good one"
            )
        observations, rewards, terminated, truncated, info = self.env.step(_env_actions(self.env, actions))
        check_env_outputs(self.env, "train", observations, rewards)
        self._returns += rewards
        self._lengths += 1
        n = self.env.num_envs
        packed = np.zeros((n, 2 * self._obs_size + 3), np.float32)
        packed[:, : self._obs_size] = observations.reshape(n, -1)
        packed[:, -3] = rewards * self.reward_scale
        packed[:, -2] = terminated
        packed[:, -1] = truncated
        for i in np.flatnonzero(terminated | truncated):
            self._finished_returns.append(float(self._returns[i]))
            self._finished_lengths.append(int(self._lengths[i]))
            self._returns[i], self._lengths[i] = 0.0, 0
            if truncated[i] and not terminated[i]:
                final = np.reshape(info["final_obs"][i], (1, -1))
                check_env_outputs(self.env, "train", final)  # the truncated episode's bootstrap observation
                packed[i, self._obs_size : -3] = final[0]
        return packed


class GreedyEpisodes:
    """Greedy episodes on N environments side by side, each until its first episode ends, as one compiled loop.

    Evaluation steps like collection: a Python call into TensorFlow per step costs more than stepping a cheap
    environment. The loop is traced on the first run; keep one object for repeated
    evaluations, one run at a time.
    """

    def __init__(self, greedy, num_envs: int):
        """greedy: float32 observations [num_envs, ...] -> actions, a TensorFlow function (the learner's greedy
        policy, or an exported SavedModel's)."""
        self.greedy, self.num_envs = greedy, num_envs
        self._loop = None

    def run(self, env, observations) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of each environment's first episode from `observations` (after env.reset)."""
        assert env.num_envs == self.num_envs, f"{env.num_envs} environments for a loop built for {self.num_envs}"
        if self._loop is None:
            self._obs_size = int(np.prod(np.shape(observations)[1:]))
            signature = tf.TensorSpec(np.shape(observations), tf.float32)
            self._loop = tf.function(
                self._episodes, input_signature=[signature], autograph=False
            ).get_concrete_function()
        self._env = env
        self._returns, self._lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, np.int64)
        self._running = np.ones(self.num_envs, bool)
        check_env_outputs(env, "evaluate", observations)
        try:
            _run_reraising(self, self._loop, np.asarray(observations, np.float32))
        finally:
            self._env = None
        return self._returns, self._lengths

    def _episodes(self, observations):
        def step(observations, running):
            packed = tf.numpy_function(
                _keeping_errors(self, self._env_step), [self.greedy(observations)], tf.float32, stateful=True
            )
            packed.set_shape([self.num_envs, self._obs_size + 1])
            return tf.reshape(packed[:, :-1], tf.shape(observations)), tf.reduce_any(packed[:, -1] > 0)

        return tf.while_loop(lambda observations, running: running, step, (observations, tf.constant(True)))[0]

    def _env_step(self, actions: np.ndarray) -> np.ndarray:
        """[next observation | still in its first episode] per environment."""
        observations, rewards, terminated, truncated, _ = self._env.step(_env_actions(self._env, actions))
        check_env_outputs(self._env, "evaluate", observations, rewards)
        self._returns += np.where(self._running, rewards, 0.0)
        self._lengths += self._running
        self._running &= ~(terminated | truncated)
        packed = np.empty((self.num_envs, self._obs_size + 1), np.float32)
        packed[:, :-1] = observations.reshape(self.num_envs, -1)
        packed[:, -1] = self._running
        return packed
