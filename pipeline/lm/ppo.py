"""PPO fine-tuning of a causal LM (RLHF): policy + value head, frozen reference, per-token KL penalty.

One iteration, in TRL's order:
  1. sample responses with the KV cache;
  2. score them: policy and reference log-probs, values (one forward pass each);
  3. rewards: the scorer's score on the last real token, minus kl_coef * KL on every token;
  4. (optional) whiten rewards; 5. GAE over tokens; 6. whiten advantages (over the batch);
  7. epochs x minibatches of clipped policy and value losses, gradients clipped on their global norm;
  8. adapt the KL coefficient toward its target.
Scoring (2-6) and optimisation (7) are one tf.function each, traced once (TRL's rollout and update phases);
sampling is XLA-compiled by default. Under a strategy, sampling and step 2 run on the replicas first.

Under a strategy each replica samples and scores its share, the batch is gathered so every worker runs 3-6 on
all of it, and each replica takes its share of every minibatch (docs/distributed.md). With top-k / top-p the
policy is the filtered distribution, scored on the kept set fixed at step 2 (docs/lm.md).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from models import lora
from pipeline.core import distribute, estimators, guards, minibatches
from pipeline.core.schema import require_split
from pipeline.lm import losses
from pipeline.lm.config import LMPPOConfig
from pipeline.lm.networks import PolicyNetworks
from pipeline.lm.optimizer import SummedGradientsAdam
from pipeline.lm.sampling import Sampler, as_tensors, lengths_of

# Metric names as TRL's PPO trainer logs them.
STAT_NAMES = (
    "policy/approxkl",
    "policy/clipfrac",
    "loss/policy",
    "loss/value",
    "val/clipfrac",
    "val/ratio",
    "objective/entropy",
)


class LMPPOLearner:
    """PPO on a causal LM: the networks (pipeline/lm/networks.py), a sampler (pipeline/lm/sampling.py), the
    optimizer state, the KL coefficient and the iteration count; `step` is one iteration."""

    def __init__(
        self,
        policy_lm,
        settings: LMPPOConfig,
        eos_id: int | None,
        seed: int = 0,
        adapters: lora.Adapters | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ):
        """adapters: train LoRA adapters on policy_lm (and on a separate value trunk) instead of every weight; the
        reference is then policy_lm with its adapters off, not a copy. strategy: the one policy_lm was built under
        (None: one device)."""
        self.settings = s = settings
        self.eos_id = eos_id
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        self.worker, self.workers = distribute.worker(strategy)
        check_split(s, self.workers, self.replicas)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.networks = PolicyNetworks(policy_lm, s, adapters)
            self.optimizer = SummedGradientsAdam(learning_rate=s.learning_rate)
            # Eagerly, before any strategy.run traces a step (keras issue 23085).
            self.optimizer.build(self.networks.variables)
        net = self.networks
        self.policy, self.reference = net.policy, net.reference
        self.value_trunk, self.value_head = net.value_trunk, net.value_head
        self.adapters, self.variables = adapters, net.variables
        self.generator = tf.random.Generator.from_seed(seed)
        self.kl_coef = tf.Variable(s.kl_coef, dtype=tf.float32, trainable=False, name="kl_coef")
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name="iteration")
        # Every compiled function is self._compiled_<name>, of the method self._<name> (score: of the networks').
        # The scoring passes and each optimizer step are XLA clusters (jit_update); the loops around them are not:
        # XLA-compiling the whole update took minutes to compile and ran slower. Under a strategy the
        # gradients leave the cluster: the replicas' all-reduce cannot run inside one.
        self._compiled_score = tf.function(net.score, autograph=False, jit_compile=s.jit_update)
        self.sampler = Sampler(net, s, eos_id, self.generator, strategy, self._compiled_score)
        self._compiled_train_step = tf.function(self._train_step, autograph=False, jit_compile=s.jit_update)
        self._compiled_minibatch_gradients = tf.function(
            self._minibatch_gradients, autograph=False, jit_compile=s.jit_update
        )
        self._compiled_prepare = tf.function(self._prepare, autograph=False)
        self._compiled_optimize = tf.function(self._optimize, autograph=False)

    def checkpoint(self) -> tf.train.Checkpoint:
        """What PPO changes: with adapters, only they (apart from the base, which SFT's checkpoint or
        model.checkpoint holds), the value head and the optimizer's state."""
        return tf.train.Checkpoint(
            **self.networks.trained(),
            optimizer=self.optimizer,
            generator=self.generator,
            kl_coef=self.kl_coef,
            iteration=self.iteration,
        )

    def trained_parts(self) -> tf.train.Checkpoint:
        """The part of `checkpoint` a warm start takes: the policy (or its adapters) and the value model, not
        the optimizer, counters, RNG or KL coefficient."""
        return tf.train.Checkpoint(**self.networks.trained())

    def servable_policy(self):
        """The policy as one model for the export: with adapters, a copy with them merged into its kernels."""
        return self.networks.servable_policy()

    def generate(self, prompt_ids, use_reference: bool = False, prompt_lengths=None) -> np.ndarray:
        """[B, P + max_new_tokens] sampled sequences, from the policy or the frozen reference (Sampler.generate)."""
        return self.sampler.generate(prompt_ids, use_reference, prompt_lengths)

    def check_outputs(self, sequences, prompt_lengths) -> None:
        """Raises guards.NonFiniteError unless the policy's log-probs and values on these sequences are finite:
        before a checkpoint, as finite weights can still overflow a forward pass."""
        log_probs, values, _, _ = self._compiled_score(*as_tensors(sequences, prompt_lengths))
        guards.check(
            guards.all_finite([log_probs, values]),
            "ppo",
            "log-probs or values of the updated policy",
            f"after iteration {int(self.iteration)}",
        )

    def log_probs(self, sequences, prompt_lengths):
        """Response log-probs under the policy and under the reference (for evaluation)."""
        policy, _, reference, _ = self._compiled_score(*as_tensors(sequences, prompt_lengths))
        return policy.numpy(), reference.numpy()

    # === 2-8. One PPO iteration on a batch of sampled sequences ===

    def step(
        self, prompt_ids, score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], prompt_lengths=None
    ) -> tuple[dict, np.ndarray, np.ndarray]:
        """Samples, scores with score_fn(prompt_ids, responses) -> one float each, and updates.

        Returns the stats, the [B, P + R] sampled sequences (as `generate` lays them out) and score_fn's [B] scores
        (before the missing-EOS penalty and the KL term). Raises guards.NonFiniteError, before changing the KL
        coefficient or the iteration count, if a loss, gradient or weight is not finite."""
        s = self.settings
        prompt_ids, prompt_lengths = np.asarray(prompt_ids), np.asarray(lengths_of(prompt_ids, prompt_lengths))
        if self.strategy is None:
            sequences, scored = self.generate(prompt_ids, prompt_lengths=prompt_lengths), None
            raw_scores = np.asarray(
                score_fn(prompt_ids, lm_lib.responses(sequences, prompt_lengths, s.max_new_tokens).numpy()), np.float32
            )
        else:  # each replica's share sampled and scored, the reward function on each worker's: the whole batch
            sequences, raw_scores, scored = self.sampler.sampled_and_scored(prompt_ids, prompt_lengths, score_fn)
        responses = lm_lib.responses(sequences, prompt_lengths, s.max_new_tokens).numpy()
        mask = lm_lib.response_mask(tf.constant(responses), self.eos_id).numpy()
        scores = raw_scores
        # A response's own EOS, inside its mask: not a later EOS, nor the zeros `sample` leaves after a row stopped
        # (which read as EOS where its id is 0, as with the corpus tokenizer).
        ended = ((responses == self.eos_id) & (mask > 0)).any(axis=1) if self.eos_id is not None else None
        if s.missing_eos_penalty is not None and ended is not None:
            scores = (scores - s.missing_eos_penalty * ~ended).astype(np.float32)
        stats = self.update(sequences, mask, scores, prompt_lengths, scored)
        if s.adaptive_kl_target is not None:
            self.kl_coef.assign(
                losses.adaptive_kl_coef(
                    float(self.kl_coef),
                    stats["objective/kl"],
                    s.adaptive_kl_target,
                    s.adaptive_kl_horizon,
                    len(sequences),
                )
            )
        stats["val/num_eos_tokens"] = float(ended.sum()) if ended is not None else 0.0
        stats["objective/scores"] = float(scores.mean())
        self.iteration.assign_add(1)
        return stats, sequences, raw_scores

    def update(self, sequences, mask, scores, prompt_lengths, scored=None) -> dict:
        """Steps 2-7 on sampled [B, P + R] sequences, their [B, R] response mask and [B] scores: the stats.
        scored: step 2's (log-probs, values, reference log-probs, kept sets) of these sequences, when the replicas
        have scored them already."""
        sequences, prompt_lengths = as_tensors(sequences, prompt_lengths)
        mask, scores = tf.convert_to_tensor(mask, tf.float32), tf.convert_to_tensor(scores, tf.float32)
        prepared, stats = self._compiled_prepare(sequences, mask, scores, prompt_lengths, scored)
        stats.update(self._compiled_optimize(sequences, mask, *prepared, prompt_lengths))
        finite = bool(stats.pop("finite"))
        guards.check(finite, "ppo", "loss, gradient or weight", f"in iteration {int(self.iteration) + 1}")
        return {k: float(v) for k, v in stats.items()}

    def _loss_and_grads(
        self, sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept, count
    ):
        """Gradients and stats of this micro-batch's share of the minibatch loss: sums over its tokens divided by
        the minibatch's token count, so micro-batches (and replicas) add up to the minibatch's mean."""
        s = self.settings
        with tf.GradientTape() as tape:
            log_probs, values, entropy = self.networks.policy_outputs(sequences, prompt_lengths, kept)
            pg_loss, clipfrac, approxkl, ratio = losses.policy_loss(
                log_probs, old_log_probs, advantages, mask, s.clip_ratio, count
            )
            vf_loss, vf_clipfrac = losses.value_loss(values, old_values, returns, mask, s.value_clip, count)
            loss = pg_loss + s.value_coef * vf_loss
        grads = tape.gradient(loss, self.variables)
        # Sampling and scoring use one distribution, so before the first update every ratio is 1.
        deviation = tf.reduce_max(tf.abs(tf.exp(log_probs - old_log_probs) - 1.0) * mask)
        stats = tf.stack(
            [approxkl, clipfrac, pg_loss, vf_loss, vf_clipfrac, ratio, estimators.masked_mean(entropy, mask, count)]
        )
        return grads, stats, deviation

    def _minibatch_gradients(
        self, sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept, count
    ):
        """Micro-batch gradients summed (gradient accumulation) over these rows of a minibatch of `count` tokens:
        (gradients, their share of the minibatch's mean stats, the largest first-ratio deviation)."""
        s = self.settings
        micro = tf.shape(sequences)[0] // s.gradient_accumulation_steps
        grads, stats, deviation = None, 0.0, 0.0
        for k in range(s.gradient_accumulation_steps):
            part = functools.partial(_rows, start=k * micro, stop=(k + 1) * micro)
            micro_grads, micro_stats, micro_deviation = self._loss_and_grads(
                *(
                    part(x)
                    for x in (sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept)
                ),
                count,
            )
            # Embeddings' IndexedSlices do not add up: dense. None: a variable the loss does not reach (a separate
            # value trunk's LM head where the embeddings are untied, as in Llama), left out of the step.
            micro_grads = [None if g is None else tf.convert_to_tensor(g) for g in micro_grads]
            grads = micro_grads if grads is None else [None if a is None else a + b for a, b in zip(grads, micro_grads)]
            stats, deviation = stats + micro_stats, tf.maximum(deviation, micro_deviation)
        return grads, stats, deviation

    def _apply(self, grads, stats):
        """Clips the minibatch's gradients on their global norm and steps Adam; whether loss and gradients were
        finite."""
        grads, norm = tf.clip_by_global_norm(grads, self.settings.max_grad_norm)
        finite = tf.math.is_finite(norm) & tf.reduce_all(tf.math.is_finite(stats))
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.variables) if g is not None])
        return finite

    def _train_step(self, sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept):
        """One optimizer step on a minibatch, on one device. One XLA cluster: Keras' Adam alone is ~20 small ops
        per variable otherwise, and the gradients never leave the cluster. Returns the minibatch's mean stats, the
        largest first-ratio deviation and whether the loss and gradients were finite."""
        count = tf.maximum(tf.reduce_sum(mask), 1.0)  # every token of the minibatch weighs the same
        grads, stats, deviation = self._minibatch_gradients(
            sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept, count
        )
        return stats, deviation, self._apply(grads, stats)

    def _replica_train_step(
        self, sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept
    ):
        """`_train_step` on this replica's equal share of the minibatch's rows: gradients and stats summed across
        replicas (one collective), then clipped and applied as on one device; the same results on every replica."""
        context = tf.distribute.get_replica_context()
        count = tf.maximum(tf.reduce_sum(mask), 1.0)  # the whole minibatch's tokens
        minibatch = [sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept]
        grads, stats, deviation = distribute.summed_share(context, self._compiled_minibatch_gradients, minibatch, count)
        deviation = tf.reduce_max(context.all_gather(deviation[None], 0))
        return stats, deviation, self._apply(grads, stats)

    def _prepare(self, sequences, mask, scores, prompt_lengths, scored=None):
        """((old log-probs, old values, advantages, returns, kept sets), KL and reward stats), before any update."""
        s = self.settings
        # 2. Old log-probs, values and reference log-probs, before any update.
        if scored is None:
            scored = self._compiled_score(sequences, prompt_lengths)
        old_log_probs, old_values, ref_log_probs, kept = scored
        # 3. Rewards: the score at the last real token, the KL penalty on every token.
        kl = losses.kl_per_token(old_log_probs, ref_log_probs, s.kl_estimator) * mask
        rewards, non_score = losses.token_rewards(scores, kl, self.kl_coef, mask)
        # 4-6. Optional reward whitening, GAE over tokens, advantage whitening over the batch.
        if s.whiten_rewards:
            rewards = estimators.whiten(rewards, mask, shift_mean=False)
        advantages, returns = losses.token_gae(old_values, rewards, mask, s.gamma, s.gae_lambda)
        advantages = estimators.whiten(advantages, mask) * mask
        sequence_kl = tf.reduce_sum(kl, axis=1)
        stats = {
            "objective/kl": tf.reduce_mean(sequence_kl),
            "objective/kl_coef": self.kl_coef + 0.0,
            "objective/non_score_reward": tf.reduce_mean(tf.reduce_sum(non_score, axis=1)),
            "objective/rlhf_reward": tf.reduce_mean(scores - self.kl_coef * sequence_kl),
        }
        return (old_log_probs, old_values, advantages, returns, kept), stats

    def _optimize(self, sequences, mask, old_log_probs, old_values, advantages, returns, kept, prompt_lengths):
        """7. Epochs x minibatches of clipped policy and value losses; mean stats, and `finite`: every step's loss
        and gradients and the final weights were finite (the loop stops at the first step that was not)."""
        s = self.settings
        fields = ("sequences", "prompt_lengths", "old_log_probs", "advantages", "old_values", "returns", "mask", "kept")
        rollout = dict(
            zip(fields, (sequences, prompt_lengths, old_log_probs, advantages, old_values, returns, mask, kept))
        )

        def minibatch_step(minibatch):
            minibatch = list(minibatch.values())  # in _train_step's order
            if self.strategy is None:
                stats, deviation, finite = self._compiled_train_step(*minibatch)
            else:  # every replica returns the same values
                stats, deviation, finite = (
                    self.strategy.experimental_local_results(x)[0]
                    for x in self.strategy.run(lambda: self._replica_train_step(*minibatch))
                )
            return tf.concat([stats, deviation[None]], 0), tf.constant(True), finite

        means, first, finite = minibatches.run(
            self.generator, rollout, s.num_minibatches, s.num_epochs, minibatch_step, num_stats=len(STAT_NAMES) + 1
        )
        stats = dict(zip(STAT_NAMES, tf.unstack(means[:-1])))
        # Sampling and scoring agree: every ratio is 1 before the first step.
        stats["policy/first_ratio_max_deviation"] = first[-1]
        stats["finite"] = finite & guards.all_finite(self.variables)
        return stats


def check_split(s: LMPPOConfig, workers: int, replicas: int) -> None:
    """ConfigError unless each replica can sample an equal share of the prompts and take an equal share of every
    minibatch, cut into gradient_accumulation_steps micro-batches."""
    over = f"{replicas} replicas{f' on {workers} workers' if workers > 1 else ''}"
    require_split(
        "ppo.batch_size",
        what=f"{s.batch_size} prompts",
        count=s.batch_size,
        parts=replicas,
        over=over,
        allowed=f"a multiple of {replicas}",
    )
    minibatch, parts = s.batch_size // s.num_minibatches, replicas * s.gradient_accumulation_steps
    require_split(
        "ppo.num_minibatches",
        what=f"minibatches of {minibatch} sequences",
        count=minibatch,
        parts=parts,
        over=f"{replicas} replicas x {s.gradient_accumulation_steps} gradient_accumulation_steps",
        allowed=f"ppo.batch_size / ppo.num_minibatches a multiple of {parts}",
    )


def _rows(x, start, stop):
    """Rows start:stop of a micro-batch's tensor (None passes through: an absent kept set)."""
    return None if x is None else x[start:stop]
