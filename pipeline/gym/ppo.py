"""PPO learner around TF-Agents' PPOClipAgent: its networks, normaliser, policies and losses; our epochs loop.

Why not `agent.train`: it runs its epochs as a Python `for` loop, so under `tf.function` every epoch is
traced into the graph again (tracing time grows with num_epochs), it has no minibatches, and its advantage
computation treats a time limit as a termination (see pipeline/core/advantages.py). Here one `tf.function`
holds epochs x minibatches as graph loops around `agent.get_loss`, the clipped-surrogate, value and entropy
losses TF-Agents already has, so it is traced once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import numpy as np
import tensorflow as tf
from tf_agents.agents.ppo import ppo_clip_agent
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common, tensor_normalizer

from models.actor_critic import build_actor_and_value, unique
from pipeline.core import distribute, guards, minibatches
from pipeline.core.advantages import explained_variance, gae
from pipeline.core.estimators import k3, whiten
from pipeline.core.schema import ConfigError, require_split
from pipeline.gym import spaces as spaces_lib
from pipeline.gym.config import GymConfig
from pipeline.gym.reward_scaling import RewardScaler
from pipeline.gym.spaces import Spaces

# Statistics `update` returns, averaged over the minibatch steps taken (entropy and KL: the final policy), and
# n_updates.
UPDATE_STATS = ("policy_gradient_loss", "value_loss", "clip_fraction", "grad_norm", "entropy", "approx_kl")


class TrainCounters(tf.Module):
    """Counters saved with every checkpoint so a resumed run continues its curves instead of restarting them."""

    def __init__(self, window: int = 100):
        super().__init__(name="counters")
        self.env_steps = tf.Variable(0, dtype=tf.int64, name="env_steps")
        self.iteration = tf.Variable(0, dtype=tf.int64, name="iteration")
        self.episodes = tf.Variable(0, dtype=tf.int64, name="episodes")
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, name="wall_seconds")
        self.solved = tf.Variable(False, name="solved")  # train.stop_at_return was met
        # The most recent finished episodes, oldest first (NaN = empty slot).
        self.recent_returns = tf.Variable(tf.fill([window], float("nan")), name="recent_returns")
        self.recent_lengths = tf.Variable(tf.fill([window], float("nan")), name="recent_lengths")

    def read(self) -> Tally:
        return Tally(**{f.name: getattr(self, f.name).numpy() for f in dataclasses.fields(Tally)})

    def store(self, tally: Tally) -> None:
        for f in dataclasses.fields(Tally):
            getattr(self, f.name).assign(getattr(tally, f.name))


@dataclasses.dataclass
class Tally:
    """TrainCounters' values as plain Python: the train loop updates these every iteration and stores them into
    the variables before each checkpoint (not a TensorFlow op per counter read or write every iteration)."""

    env_steps: int
    iteration: int
    episodes: int
    wall_seconds: float
    solved: bool
    recent_returns: np.ndarray
    recent_lengths: np.ndarray

    def __post_init__(self):
        self.env_steps, self.iteration, self.episodes = int(self.env_steps), int(self.iteration), int(self.episodes)
        self.wall_seconds, self.solved = float(self.wall_seconds), bool(self.solved)
        self.recent_returns = np.array(self.recent_returns, np.float32)
        self.recent_lengths = np.array(self.recent_lengths, np.float32)

    def record_episodes(self, returns: list, lengths: list) -> None:
        if not returns:
            return
        window = len(self.recent_returns)
        self.recent_returns = np.concatenate([self.recent_returns, np.asarray(returns, np.float32)])[-window:]
        self.recent_lengths = np.concatenate([self.recent_lengths, np.asarray(lengths, np.float32)])[-window:]
        self.episodes += len(returns)

    def recent_mean(self, n: int, lengths: bool = False, min_count: int = 1) -> float:
        """Mean of the last n finished episodes; NaN until min_count of them exist."""
        values = (self.recent_lengths if lengths else self.recent_returns)[-n:]
        values = values[~np.isnan(values)]
        return float(values.mean()) if len(values) >= min_count else float("nan")


class PPOLearner(tf.Module):
    """Everything a checkpoint must hold, and the compiled functions that act and learn.

    Under a tf.distribute strategy (pipeline/core/distribute.py) the networks, normaliser and optimizer are mirrored
    and each gradient step runs on every replica's equal share of the minibatch: TF-Agents' losses divide by the
    global count, the gradients are summed across replicas before they are clipped on their global norm, and the
    advantages are whitened and the normaliser updated over the whole rollout, so R replicas take the steps one
    device takes. GAE and the statistics run in cross-replica context, once per worker, on the whole rollout (with
    several workers, gathered from each worker's share of the environments: `gather`)."""

    def __init__(self, cfg: GymConfig, spaces: Spaces, strategy: tf.distribute.Strategy | None = None):
        super().__init__(name="ppo")
        self.spaces = spaces
        self.strategy = strategy  # None: one device
        self.replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        self.worker, self.workers = distribute.worker(strategy)
        check_split(cfg, self.workers, self.replicas)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self._build(cfg, spaces)
        self.generator = tf.random.Generator.from_seed(cfg.env.seed)  # action sampling and minibatch shuffles
        self.counters = TrainCounters()
        # autograph=False: converting TF-Agents' library code costs seconds of tracing; our loops are explicit.
        self._compiled_train = tf.function(self._train_on_rollout, autograph=False)

    def _build(self, cfg: GymConfig, spaces: Spaces) -> None:
        t = cfg.train
        self._epochs, self._minibatches = t.num_epochs, t.num_minibatches
        self._max_grad_norm = t.max_grad_norm
        self._whitening = t.advantage_whitening if t.normalize_advantages else None  # rollout, minibatch or None
        self._target_kl = t.target_kl
        self._value_coef = t.value_coef
        self._gamma, self._gae_lambda = t.gamma, t.gae_lambda
        tf.keras.utils.set_random_seed(cfg.env.seed)
        obs_spec, self.action_spec = spaces_lib.tf_agents_specs(spaces)
        self.time_step_spec = ts.time_step_spec(obs_spec)
        parts = None if spaces.flat_box else [dataclasses.asdict(p) for p in spaces.parts]
        actor, value = build_actor_and_value(
            cfg.model,
            obs_spec,
            self.action_spec,
            seed=cfg.env.seed,
            parts=parts,
            is_dict=spaces.is_dict,
            mask_key=spaces.mask.name if spaces.mask else None,
            values=spaces_lib.value_mask(spaces),
        )
        self.optimizer = tf.keras.optimizers.Adam(learning_rate=t.learning_rate, epsilon=t.adam_epsilon)
        self.agent = ppo_clip_agent.PPOClipAgent(
            self.time_step_spec,
            self.action_spec,
            optimizer=self.optimizer,
            actor_net=actor,
            value_net=value,
            greedy_eval=True,
            importance_ratio_clipping=t.clip_ratio,
            lambda_value=t.gae_lambda,
            discount_factor=t.gamma,
            entropy_regularization=t.entropy_coef,
            value_pred_loss_coef=t.value_coef,
            num_epochs=t.num_epochs,
            use_gae=True,
            normalize_rewards=False,
            normalize_observations=False,  # ours, installed below: TF-Agents' clip is fixed and covers pixels too
            gradient_clipping=t.max_grad_norm,
            value_clipping=t.value_clip,
            compute_value_and_advantage_in_train=True,
            update_normalizers_in_train=False,
            # Its own counter: TF-Agents' default is the process-wide global step, shared by every learner.
            train_step_counter=tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step"),
        )
        self._normalizer = None  # where nothing is normalised: off, or no vector part to cover
        if t.normalize_observations and (spaces.flat_box or spaces.vector_keys):
            keys = None if spaces.flat_box else spaces.vector_keys
            self._normalizer = ObservationNormalizer(obs_spec, keys, t.observation_clip)
            install_normalizer(self.agent, self._normalizer)
        self._stats_each_step = self._normalizer is not None and t.observation_stats == "step"
        self.agent.initialize()
        self.reward_scaler = RewardScaler(cfg.env.num_envs, t.gamma) if t.normalize_rewards else None
        self.variables_to_train = unique(actor.trainable_variables + value.trainable_variables)
        self.optimizer.build(self.variables_to_train)  # slots exist before the graph loops run (and, under a
        # strategy, before the first strategy.run: Keras cannot create them while tracing one)

    @property
    def observation_signature(self):
        """A batch of observations as the policy takes it: a TensorSpec, or a dict of them (built afresh: a dict
        kept on a tf.Module becomes a tracked wrapper, which tf.function signatures refuse)."""
        obs_spec, _ = spaces_lib.tf_agents_specs(self.spaces)
        return tf.nest.map_structure(
            lambda spec: tf.TensorSpec([None, *spec.shape], spec.dtype, name=spec.name), obs_spec
        )

    # Traced on first use: training itself needs neither.
    @functools.cached_property
    def greedy(self):
        """The greedy action for each of a batch of observations (the evaluation and serving policy)."""
        return _concrete(self._greedy, self.observation_signature)

    @functools.cached_property
    def value(self):
        """The value estimate for each of a batch of observations."""
        return _concrete(self._value, self.observation_signature)

    # === Acting ===

    def _time_steps(self, observations):
        batch = _batch_size(observations)
        return ts.TimeStep(
            step_type=tf.fill([batch], ts.StepType.MID),
            reward=tf.zeros([batch]),
            discount=tf.ones([batch]),
            observation=observations,
        )

    def distribution(self, observations):
        """The policy's action distribution, observation normalisation applied (TF-Agents' collect policy)."""
        return self.agent.collect_policy.distribution(self._time_steps(observations)).action

    def _value(self, observations):
        values, _ = self.agent.collect_policy.apply_value_network(
            observations, tf.fill([_batch_size(observations)], ts.StepType.MID), value_state=()
        )
        return values

    def observe(self, observations) -> list:
        """The ops taking a step's observations into the normaliser's statistics, to run before the policy acts on
        them (train.observation_stats: step; else none: the update takes the whole rollout)."""
        if not self._stats_each_step:
            return []
        return [self._normalizer.update(observations)]

    def sample(self, observations):
        """A sampled action and its log-probability: what a rollout stores (traced into the collector's loop)."""
        dist = self.distribution(observations)
        seed = tf.cast(self.generator.make_seeds(1)[:, 0], tf.int32)
        if self.worker:  # every worker's generator is in the same state (its shuffles must agree): a stream each
            seed = tf.random.experimental.stateless_fold_in(seed, self.worker)
        actions = dist.sample(seed=seed)
        return actions, common.log_probability(dist, actions, self.action_spec)

    def _greedy(self, observations):
        action = self.agent.policy.action(self._time_steps(observations)).action
        if self.action_spec.dtype.is_floating:  # an unsquashed mean (model.squash_mean: false) can pass the bounds
            action = tf.clip_by_value(action, self.action_spec.minimum, self.action_spec.maximum)
        return action

    # === Learning ===

    def gather(self, rollout: dict) -> dict:
        """With several workers, every worker's rollout side by side along the env axis (each then trains on the
        whole rollout: the same GAE, whitening, normaliser update and minibatches everywhere); else `rollout`."""
        if self.workers == 1:
            return rollout
        leaves = {}  # observation dicts' parts as entries of their own ("observations/image")
        for k, v in rollout.items():
            leaves.update({f"{k}/{part}": x for part, x in v.items()} if isinstance(v, dict) else {k: v})
        gathered = distribute.gather(
            self.strategy, leaves, {k: 0 if k.startswith("next_observations") else 1 for k in leaves}
        )
        return {
            k: {part: gathered[f"{k}/{part}"] for part in v} if isinstance(v, dict) else gathered[k]
            for k, v in rollout.items()
        }

    def train_on_rollout(self, rollout: dict) -> tuple[dict, tf.Tensor]:
        """GAE over the (time, env) rollout, then epochs x minibatches of clipped-surrogate steps.

        `rollout` is a dict of the pipeline.gym.rollout.Rollout arrays. Returns the update statistics (tensors) plus
        explained_variance, and the advantages (for a histogram). Raises guards.NonFiniteError if a loss, gradient
        or weight was not finite (the update stops at that step; nothing is saved).
        """
        stats, advantages = self._compiled_train(rollout)
        finite = stats.pop("finite")
        guards.check(
            finite,
            "train",
            "loss, gradient or weight",
            f"at gradient step {int(self.agent.train_step_counter.numpy())}",
        )
        return stats, advantages

    def _train_on_rollout(self, rollout):
        def merge_time_and_env(x):
            return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))

        flat = {
            k: tf.nest.map_structure(merge_time_and_env, v)
            for k, v in rollout.items()
            if k in ("observations", "actions", "log_probs", "final_observations")
        }
        time_env = tf.shape(rollout["rewards"])
        # Values with the parameters and normaliser the rollout was collected with (nothing changed since; with
        # statistics updated each step, those at the rollout's end), in one pass over every step's observation, the
        # final observations and the observations after the last step.
        steps, envs = _batch_size(flat["observations"]), _batch_size(rollout["next_observations"])
        every = tf.nest.map_structure(
            lambda *x: tf.concat(x, 0), flat["observations"], flat["final_observations"], rollout["next_observations"]
        )
        flat["values"], final_values, next_values = tf.split(self._value(every), [steps, steps, envs])
        rewards = rollout["rewards"]
        if self.reward_scaler is not None:  # every env's rewards, once per worker (cross-replica context)
            rewards = self.reward_scaler(rewards, rollout["terminated"] | rollout["truncated"])
        advantages, returns = gae(
            tf.reshape(flat["values"], time_env),
            next_values,
            rewards,
            rollout["terminated"],
            rollout["truncated"],
            tf.reshape(final_values, time_env),
            self._gamma,
            self._gae_lambda,
        )
        advantages, returns = tf.reshape(advantages, [-1]), tf.reshape(returns, [-1])
        if self._stats_each_step:
            # The ratio's old policy is the one the update starts from: the statistics at the rollout's end.
            dist = self.distribution(flat["observations"])
            flat["log_probs"] = common.log_probability(dist, flat["actions"], self.action_spec)
        stats = self._update(
            flat["observations"], flat["actions"], flat["log_probs"], advantages, returns, flat["values"]
        )
        stats["explained_variance"] = explained_variance(flat["values"], returns)
        if self.reward_scaler is not None:  # what rewards are divided by (SB3's VecNormalize ret_rms)
            stats["reward_scale_std"] = tf.cast(tf.sqrt(self.reward_scaler.var), tf.float32)
        return stats, advantages

    def _update(self, observations, actions, old_log_probs, advantages, returns, old_values):
        """Epochs x minibatches of clipped-surrogate steps on one flattened rollout (fewer with target_kl, or at a
        non-finite loss or gradient)."""
        if self._whitening == "rollout":
            advantages = whiten(advantages)

        def gradient_step(mb):
            if self._whitening == "minibatch":  # the whole minibatch's statistics, before any replica takes its share
                mb = {**mb, "advantages": whiten(mb["advantages"])}
            # [policy loss, value loss, clip fraction, grad norm, non-finite].
            if self.strategy is None:  # one device: the same step, without the strategy's wrapper to trace
                stats = self._replica_step(mb)
            else:  # every replica returns the same values
                stats = self.strategy.experimental_local_results(self.strategy.run(self._replica_step, (mb,)))[0]
            self.agent.train_step_counter.assign_add(1)
            return stats[:4], tf.constant(True), tf.equal(stats[4], 0.0)

        def minibatch_step(mb):
            if self._target_kl is None:
                return gradient_step(mb)
            # SB3's early stop: no step once a minibatch's KL to the rollout's policy passes 1.5 x target_kl.
            _, kl = self._entropy_and_kl(mb["observations"], mb["actions"], mb["old_log_probs"])
            return tf.cond(
                kl > 1.5 * self._target_kl,
                lambda: (tf.zeros([4]), tf.constant(False), tf.constant(True)),
                lambda: gradient_step(mb),
            )

        rollout = dict(
            observations=observations,
            actions=actions,
            old_log_probs=old_log_probs,
            advantages=advantages,
            returns=returns,
            old_values=old_values,
        )
        means, _, finite = minibatches.run(
            self.generator, rollout, self._minibatches, self._epochs, minibatch_step, num_stats=4
        )
        entropy, approx_kl = self._entropy_and_kl(observations, actions, old_log_probs)
        with tf.control_dependencies([entropy, approx_kl]):
            # After the epochs: the stored log-probs were computed with the old statistics.
            if self._normalizer is not None and not self._stats_each_step:
                self._normalizer.update(observations)
        stats = dict(zip(UPDATE_STATS, tf.unstack(means) + [entropy, approx_kl]))
        stats["n_updates"] = self.agent.train_step_counter.read_value()  # SB3's name: gradient steps so far
        # The entropy and KL above are a forward pass of the updated policy over the rollout: finite weights can
        # still overflow one. The normaliser's statistics are checked with the weights.
        stats["finite"] = (
            finite & tf.math.is_finite(entropy) & tf.math.is_finite(approx_kl) & guards.all_finite(self.agent.variables)
        )  # networks, normaliser, counter
        return stats

    def _replica_step(self, minibatch):
        """One gradient step on the minibatch: on one device all of it, under a strategy this replica's share, the
        gradients summed across replicas, then clipped on their global norm as one device clips. Returns [policy
        loss, value loss, clip fraction, grad norm, non-finite], the same on every replica."""
        context = tf.distribute.get_replica_context()
        grads, stats = distribute.summed_share(
            context, self._share_gradients, list(minibatch.values()), context.num_replicas_in_sync
        )
        grad_norm = tf.linalg.global_norm(grads)
        if self._max_grad_norm is not None:
            grads, _ = tf.clip_by_global_norm(grads, self._max_grad_norm, use_norm=grad_norm)
        self.optimizer.apply_gradients(zip(grads, self.variables_to_train), skip_gradients_aggregation=True)
        finite = tf.math.is_finite(stats[3]) & tf.math.is_finite(grad_norm)
        return tf.concat([stats[:3], [grad_norm, 1.0 - tf.cast(finite, tf.float32)]], 0)

    def _share_gradients(self, observations, actions, old_log_probs, advantages, returns, old_values, replicas):
        """Gradients and [policy loss, value loss, clip fraction, loss] of this replica's share of a minibatch,
        each a share of the minibatch's value: summed across replicas, the minibatch's."""
        with tf.GradientTape() as tape:
            # TF-Agents' losses divide by this share's size x the replica count: summed across replicas, the
            # minibatch mean.
            loss = self.agent.get_loss(
                self._time_steps(observations),
                actions,
                old_log_probs,
                returns,
                advantages,
                action_distribution_parameters=(),
                weights=tf.ones_like(returns),
                train_step=self.agent.train_step_counter,
                debug_summaries=False,
                old_value_predictions=old_values,
                training=True,
            )
        grads = tape.gradient(loss.loss, self.variables_to_train)
        # TF-Agents' value_estimation_loss is weighted by value_coef; logged unweighted, as SB3 and TRL log it.
        # The clip fraction is this share's mean: divided by the replica count, the sum is the minibatch's.
        stats = tf.stack(
            [
                loss.extra.policy_gradient_loss,
                loss.extra.value_estimation_loss / self._value_coef,
                loss.extra.clip_fraction / tf.cast(replicas, tf.float32),
                loss.loss,
            ]
        )
        return grads, stats

    def _entropy_and_kl(self, observations, actions, old_log_probs):
        """Entropy and approx KL (old -> new, the k3 estimator SB3 and CleanRL log) of the current policy."""
        dist = self.distribution(observations)
        log_ratio = common.log_probability(dist, actions, self.action_spec) - old_log_probs
        approx_kl = tf.reduce_mean(k3(log_ratio))
        entropy = tf.reduce_mean(common.entropy(dist, self.action_spec))
        return entropy, approx_kl

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)

    def checkpoint(self) -> tf.train.Checkpoint:
        """Networks, normaliser, optimizer slots, RNG state, counters and the reward scaler's statistics: all a
        resumed run needs."""
        parts = dict(agent=self.agent, optimizer=self.optimizer, generator=self.generator, counters=self.counters)
        if self.reward_scaler is not None:
            parts["reward_scaler"] = self.reward_scaler
        return tf.train.Checkpoint(**parts)


def check_split(cfg: GymConfig, workers: int, replicas: int) -> None:
    """ConfigError unless each worker can step an equal share of the environments and each replica take an equal
    share of every minibatch, and the observation statistics are updated where every worker sees the same."""
    if cfg.train.normalize_observations and cfg.train.observation_stats == "step" and workers > 1:
        raise ConfigError(
            f"train.observation_stats: step would update {workers} workers' normalisers each from its own "
            f"environments, parting them; allowed with several workers: rollout (every worker takes the gathered "
            f"rollout)"
        )
    require_split(
        "env.num_envs",
        what=f"{cfg.env.num_envs} environments",
        count=cfg.env.num_envs,
        parts=workers,
        over=f"{workers} workers",
        allowed="a multiple of the worker count",
    )
    minibatch = cfg.env.num_envs * cfg.train.rollout_steps // cfg.train.num_minibatches
    require_split(
        "train.num_minibatches",
        what=f"minibatches of {minibatch} rows",
        count=minibatch,
        parts=replicas,
        over=f"{replicas} replicas",
        allowed="env.num_envs * train.rollout_steps / train.num_minibatches a multiple of the replica count",
    )


class ObservationNormalizer(tensor_normalizer.StreamingTensorNormalizer):
    """TF-Agents' running mean and variance normaliser (its variables, so checkpoints read as before) with the clip
    the config chooses, over a flat observation (keys None) or a dict observation's float vectors only: pixels,
    indices, bits and action masks pass as they are."""

    def __init__(self, observation_spec, keys: list[str] | None, clip: float):
        self._keys, self._clip = (None if keys is None else list(keys)), clip
        super().__init__(self._covered(observation_spec), scope="normalize_observations")

    def _covered(self, tensor):
        return tensor if self._keys is None else {k: tensor[k] for k in self._keys}

    def update(self, tensor, outer_dims=(0,)):
        return super().update(self._covered(tensor), outer_dims)

    def normalize(self, tensor, center_mean=True, variance_epsilon=1e-3):
        normalized = super().normalize(self._covered(tensor), self._clip, center_mean, variance_epsilon)
        return normalized if self._keys is None else {**tensor, **normalized}


def install_normalizer(agent, normalizer) -> None:
    """Gives the agent and its two policies `normalizer`. PPOAgent builds its normaliser over the whole observation
    in its constructor and hands it to the policies there; this is the one place that reaches inside it."""
    agent._observation_normalizer = normalizer
    agent._collect_policy._observation_normalizer = normalizer
    policy = agent._policy
    getattr(policy, "wrapped_policy", policy)._observation_normalizer = normalizer


def _batch_size(observations):
    return tf.shape(tf.nest.flatten(observations)[0])[0]


def _concrete(fn, signature):
    return tf.function(fn, input_signature=[signature], autograph=False).get_concrete_function()
