"""RL fine-tuning of a causal LM: PPO (RLHF: policy + value head, frozen reference, per-token KL penalty), GRPO
or RLOO (groups of completions per prompt, no value model; steps 3-6 are then group-relative advantages).

One PPO iteration, in TRL's order:
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
from pipeline.lm.rewards import Scores
from pipeline.lm.sampling import Sampler, as_tensors, lengths_of

# The update's metrics, named as TRL's trainer for each algorithm logs them.
STAT_NAMES = {
    "ppo": (
        "policy/approxkl",
        "policy/clipfrac",
        "loss/policy",
        "loss/value",
        "val/clipfrac",
        "val/ratio",
        "objective/entropy",
    ),
    "grpo": ("loss/policy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy", "kl"),
    "rloo": ("loss/policy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "entropy"),
}


class LMPPOLearner:
    """PPO, GRPO or RLOO (ppo.algorithm) on a causal LM: the networks (pipeline/lm/networks.py), a sampler
    (pipeline/lm/sampling.py), the optimizer state, the KL coefficient and the iteration count; `step` is one
    iteration. The three share sampling, scoring, minibatches, gradient accumulation, clipping and the optimizer;
    they differ in their advantages (`_prepare`) and losses (`_loss_and_grads`)."""

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
        self.algorithm, self.stat_names = s.algorithm, STAT_NAMES[s.algorithm]
        self.clip_high = s.clip_ratio if s.clip_ratio_high is None else s.clip_ratio_high
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
        self.policy = net.policy
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
        self._compiled_reference_log_probs = None  # for evaluation without a reference in training
        self._compiled_optimize = tf.function(self._optimize, autograph=False)

    @property
    def reference(self):
        """The frozen reference's own copy (None with adapters, or with no reference)."""
        return self.networks.reference

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
        """Response log-probs under the policy and under the reference (for evaluation; without a reference in
        training, after networks.attach_reference)."""
        sequences, prompt_lengths = as_tensors(sequences, prompt_lengths)
        policy, _, reference, kept = self._compiled_score(sequences, prompt_lengths)
        if not self.networks.has_reference:  # an attached one, compiled once it is there
            if self._compiled_reference_log_probs is None:
                self._compiled_reference_log_probs = tf.function(self.networks.reference_log_probs, autograph=False)
            reference = self._compiled_reference_log_probs(sequences, prompt_lengths, kept)
        return policy.numpy(), reference.numpy()

    # === 2-8. One PPO iteration on a batch of sampled sequences ===

    def step(
        self, prompt_ids, score_fn: Callable[[np.ndarray, np.ndarray], Scores], prompt_lengths=None
    ) -> tuple[dict, np.ndarray, Scores]:
        """Samples, scores with score_fn(rows of prompt_ids, their responses) -> Scores, and updates.

        Returns the stats, the [B, P + R] sampled sequences (as `generate` lays them out) and score_fn's Scores
        (before the missing-EOS penalty and the KL term). Raises guards.NonFiniteError, before changing the KL
        coefficient or the iteration count, if a loss, gradient or weight is not finite."""
        s = self.settings
        prompt_ids, prompt_lengths = np.asarray(prompt_ids), np.asarray(lengths_of(prompt_ids, prompt_lengths))
        if self.strategy is None:
            sequences, scored = self.generate(prompt_ids, prompt_lengths=prompt_lengths), None
            responses = lm_lib.responses(sequences, prompt_lengths, s.max_new_tokens).numpy()
            raw = score_fn(np.arange(len(prompt_ids)), responses)
        else:  # each replica's share sampled and scored, the reward function on each worker's: the whole batch
            sequences, raw, scored = self.sampler.sampled_and_scored(prompt_ids, prompt_lengths, score_fn)
            responses = lm_lib.responses(sequences, prompt_lengths, s.max_new_tokens).numpy()
        mask = lm_lib.response_mask(tf.constant(responses), self.eos_id).numpy()
        scores = raw.total
        # A response's own EOS, inside its mask: not a later EOS, nor the zeros `sample` leaves after a row stopped
        # (which read as EOS where its id is 0, as with the corpus tokenizer).
        ended = ((responses == self.eos_id) & (mask > 0)).any(axis=1) if self.eos_id is not None else None
        if s.missing_eos_penalty is not None and ended is not None:
            scores = (scores - s.missing_eos_penalty * ~ended).astype(np.float32)
        completion_stats = completions_stats(mask, ended)
        if s.algorithm != "ppo":  # TRL's reward: the functions' own, before the missing-EOS penalty
            completion_stats.update(reward=float(raw.total.mean()), reward_std=float(np.std(raw.total, ddof=1)))
        if s.algorithm != "ppo" and s.mask_truncated_completions and ended is not None:
            mask = mask * ended[:, None].astype(mask.dtype)  # out of the loss; still in their group's statistics
        stats = self.update(sequences, mask, scores, prompt_lengths, scored)
        stats.update(completion_stats)
        if s.algorithm == "ppo" and s.adaptive_kl_target is not None:
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
        stats.update(raw.stats())
        self.iteration.assign_add(1)
        return stats, sequences, raw

    def update(self, sequences, mask, scores, prompt_lengths, scored=None) -> dict:
        """Steps 2-7 on sampled [B, P + R] sequences, their [B, R] response mask and [B] scores: the stats.
        scored: step 2's (log-probs, values, reference log-probs, kept sets) of these sequences, when the replicas
        have scored them already."""
        sequences, prompt_lengths = as_tensors(sequences, prompt_lengths)
        mask, scores = tf.convert_to_tensor(mask, tf.float32), tf.convert_to_tensor(scores, tf.float32)
        prepared, stats = self._compiled_prepare(sequences, mask, scores, prompt_lengths, scored)
        stats.update(self._compiled_optimize(sequences, prompt_lengths, *prepared))
        finite = bool(stats.pop("finite"))
        guards.check(finite, "ppo", "loss, gradient or weight", f"in iteration {int(self.iteration) + 1}")
        return {k: float(v) for k, v in stats.items()}

    def _loss_and_grads(
        self,
        sequences,
        prompt_lengths,
        old_log_probs,
        advantages,
        old_values,
        returns,
        mask,
        kept,
        ref_log_probs,
        count,
    ):
        """Gradients and stats of this micro-batch's share of the minibatch loss: sums over its tokens (or rows)
        divided by the minibatch's token (or row) count, count = [tokens, rows], so micro-batches (and replicas)
        add up to the minibatch's loss and mean stats."""
        with tf.GradientTape() as tape:
            log_probs, values, entropy = self.networks.policy_outputs(sequences, prompt_lengths, kept)
            loss, stats = getattr(self, f"_{self.algorithm}_loss")(
                log_probs, old_log_probs, advantages, values, old_values, returns, mask, ref_log_probs, count
            )
        grads = tape.gradient(loss, self.variables)
        # Sampling and scoring use one distribution, so before the first update every ratio is 1.
        deviation = tf.reduce_max(tf.abs(tf.exp(log_probs - old_log_probs) - 1.0) * mask)
        entropy_name = "objective/entropy" if self.algorithm == "ppo" else "entropy"
        stats[entropy_name] = estimators.masked_mean(entropy, mask, count[0])
        return grads, tf.stack([stats[name] for name in self.stat_names]), deviation

    def _ppo_loss(self, log_probs, old_log_probs, advantages, values, old_values, returns, mask, _, count):
        s = self.settings
        pg_loss, clipfrac, approxkl, ratio = losses.policy_loss(
            log_probs, old_log_probs, advantages, mask, s.clip_ratio, count[0]
        )
        vf_loss, vf_clipfrac = losses.value_loss(values, old_values, returns, mask, s.value_clip, count[0])
        stats = (approxkl, clipfrac, pg_loss, vf_loss, vf_clipfrac, ratio)
        return pg_loss + s.value_coef * vf_loss, dict(zip(self.stat_names, stats))

    def _grpo_loss(self, log_probs, old_log_probs, advantages, values, old_values, returns, mask, ref_log_probs, count):
        s = self.settings
        reference = ref_log_probs if self.networks.has_reference else None
        per_token, kl, ratio = losses.grpo_token_loss(
            log_probs, old_log_probs, advantages, s.clip_ratio, self.clip_high, reference, s.beta
        )
        parts = self.replicas * s.gradient_accumulation_steps
        loss = losses.aggregate(per_token, mask, s.loss_type, count[1], count[0], s.max_new_tokens, parts)
        low, high = losses.clip_regions(ratio, advantages[:, None], s.clip_ratio, self.clip_high)
        token_mean = functools.partial(estimators.masked_mean, mask=mask, count=count[0])
        kl = tf.zeros([]) if kl is None else token_mean(kl)
        return loss, {"loss/policy": loss, **_clip_stats(low, high, token_mean), "kl": kl}

    def _rloo_loss(self, log_probs, old_log_probs, advantages, values, old_values, returns, mask, _, count):
        s = self.settings
        per_row, ratio = losses.rloo_sequence_loss(
            log_probs, old_log_probs, advantages, mask, s.clip_ratio, self.clip_high
        )
        loss = tf.reduce_sum(per_row) / count[1]
        low, high = losses.clip_regions(ratio, advantages, s.clip_ratio, self.clip_high)
        return loss, {"loss/policy": loss, **_clip_stats(low, high, lambda x: tf.reduce_sum(x) / count[1])}

    def _minibatch_gradients(self, *minibatch_and_count):
        """Micro-batch gradients summed (gradient accumulation) over these rows of a minibatch (ROLLOUT's fields,
        then count = [its tokens, its rows]): (gradients, their share of the minibatch's mean stats, the largest
        first-ratio deviation)."""
        *minibatch, count = minibatch_and_count
        s = self.settings
        micro = tf.shape(minibatch[0])[0] // s.gradient_accumulation_steps
        grads, stats, deviation = None, 0.0, 0.0
        for k in range(s.gradient_accumulation_steps):
            part = functools.partial(_rows, start=k * micro, stop=(k + 1) * micro)
            micro_grads, micro_stats, micro_deviation = self._loss_and_grads(*(part(x) for x in minibatch), count)
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

    def _train_step(self, *minibatch):
        """One optimizer step on a minibatch (ROLLOUT's fields), on one device. One XLA cluster: Keras' Adam alone
        is ~20 small ops per variable otherwise, and the gradients never leave the cluster. Returns the
        minibatch's mean stats, the largest first-ratio deviation and whether the loss and gradients were finite."""
        grads, stats, deviation = self._minibatch_gradients(*minibatch, _count(minibatch))
        return stats, deviation, self._apply(grads, stats)

    def _replica_train_step(self, *minibatch):
        """`_train_step` on this replica's equal share of the minibatch's rows: gradients and stats summed across
        replicas (one collective), then clipped and applied as on one device; the same results on every replica."""
        context = tf.distribute.get_replica_context()
        count = _count(minibatch)  # the whole minibatch's
        grads, stats, deviation = distribute.summed_share(
            context, self._compiled_minibatch_gradients, list(minibatch), count
        )
        deviation = tf.reduce_max(context.all_gather(deviation[None], 0))
        return stats, deviation, self._apply(grads, stats)

    def _prepare(self, sequences, mask, scores, prompt_lengths, scored=None):
        """(ROLLOUT's fields after sequences and prompt_lengths, before any update; the reward and KL stats)."""
        # 2. Old log-probs, values and reference log-probs, before any update.
        if scored is None:
            scored = self._compiled_score(sequences, prompt_lengths)
        old_log_probs, old_values, ref_log_probs, kept = scored
        if self.algorithm == "ppo":
            advantages, returns, stats = self._ppo_advantages(old_log_probs, old_values, ref_log_probs, mask, scores)
            return (old_log_probs, advantages, old_values, returns, mask, kept, None), stats
        return self._group_advantages(old_log_probs, ref_log_probs, mask, scores, kept)

    def _ppo_advantages(self, old_log_probs, old_values, ref_log_probs, mask, scores):
        s = self.settings
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
        return advantages, returns, stats

    def _group_advantages(self, old_log_probs, ref_log_probs, mask, scores, kept):
        """GRPO's and RLOO's [B] advantages, relative to the other completions of each prompt, and TRL's
        frac_reward_zero_std (completions whose advantage was scaled by a zero std). `step` adds reward and
        reward_std: the reward functions' own, before the missing-EOS penalty."""
        s, rewards, stats = self.settings, scores, {}
        if self.algorithm == "rloo" and self.networks.has_reference:  # the KL (k1) taken from the reward
            rewards = scores - s.beta * losses.sequence_kl(old_log_probs, ref_log_probs, mask)
            stats["kl"] = estimators.masked_mean(old_log_probs - ref_log_probs, mask)
        if self.algorithm == "grpo":
            advantages, std = losses.grpo_advantages(rewards, s.num_generations, s.scale_rewards)
        else:
            advantages, std = (
                losses.rloo_advantages(rewards, s.num_generations),
                losses.group_std(rewards, s.num_generations),
            )
        stats["frac_reward_zero_std"] = tf.reduce_mean(tf.cast(std <= 1e-8, tf.float32))
        reference = ref_log_probs if self.algorithm == "grpo" and self.networks.has_reference else None
        return (old_log_probs, advantages, None, None, mask, kept, reference), stats

    def _optimize(self, sequences, prompt_lengths, *prepared):
        """7. Epochs x minibatches of the algorithm's losses; mean stats, and `finite`: every step's loss
        and gradients and the final weights were finite (the loop stops at the first step that was not)."""
        s = self.settings
        rollout = dict(zip(ROLLOUT, (sequences, prompt_lengths, *prepared)))

        def minibatch_step(minibatch):
            minibatch = list(minibatch.values())  # in ROLLOUT's order
            if self.strategy is None:
                stats, deviation, finite = self._compiled_train_step(*minibatch)
            else:  # every replica returns the same values
                stats, deviation, finite = (
                    self.strategy.experimental_local_results(x)[0]
                    for x in self.strategy.run(lambda: self._replica_train_step(*minibatch))
                )
            return tf.concat([stats, deviation[None]], 0), tf.constant(True), finite

        means, first, finite = minibatches.run(
            self.generator, rollout, s.num_minibatches, s.num_epochs, minibatch_step, num_stats=len(self.stat_names) + 1
        )
        stats = dict(zip(self.stat_names, tf.unstack(means[:-1])))
        if self.algorithm == "grpo" and not self.networks.has_reference:
            del stats["kl"]  # beta 0: no reference to be far from
        # Sampling and scoring agree: every ratio is 1 before the first step.
        stats["policy/first_ratio_max_deviation"] = first[-1]
        stats["finite"] = finite & guards.all_finite(self.variables)
        return stats


# What a minibatch holds, in the order the train steps take it (None: a field the algorithm has no use for).
ROLLOUT = (
    "sequences",
    "prompt_lengths",
    "old_log_probs",
    "advantages",  # ppo: [B, R] per token; grpo, rloo: [B] per sequence
    "old_values",
    "returns",
    "mask",
    "kept",
    "ref_log_probs",  # grpo with beta > 0: its KL is a loss term
)


def completions_stats(mask: np.ndarray, ended: np.ndarray | None) -> dict:
    """TRL's completion-length metrics: lengths in tokens (up to and including the EOS), the fraction cut off at
    max_new_tokens without one, and the lengths of those that ended."""
    lengths = mask.sum(axis=1)
    ended = np.ones(len(lengths), bool) if ended is None else ended
    terminated = lengths[ended]
    return {
        "completions/mean_length": float(lengths.mean()),
        "completions/min_length": float(lengths.min()),
        "completions/max_length": float(lengths.max()),
        "completions/clipped_ratio": float(1.0 - ended.mean()),
        "completions/mean_terminated_length": float(terminated.mean()) if terminated.size else 0.0,
    }


def _clip_stats(low, high, mean) -> dict:
    """TRL's clip_ratio/* stats of 0/1 tensors where the clip binds below and above, each the given mean."""
    return {
        "clip_ratio/low_mean": mean(low),
        "clip_ratio/high_mean": mean(high),
        "clip_ratio/region_mean": mean(low + high),
    }


def _count(minibatch) -> tf.Tensor:
    """[tokens, rows] of a minibatch (ROLLOUT's fields): what its loss and stats are means over."""
    mask = minibatch[ROLLOUT.index("mask")]
    return tf.stack([tf.maximum(tf.reduce_sum(mask), 1.0), tf.cast(tf.shape(mask)[0], tf.float32)])


def check_split(s: LMPPOConfig, workers: int, replicas: int) -> None:
    """ConfigError unless each replica can sample an equal share of the prompts and take an equal share of every
    minibatch, cut into gradient_accumulation_steps micro-batches."""
    over = f"{replicas} replicas{f' on {workers} workers' if workers > 1 else ''}"
    require_split(
        "ppo.batch_size",
        what=f"{s.batch_size} completions",
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
