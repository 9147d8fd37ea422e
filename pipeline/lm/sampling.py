"""Step 1 of an LM RL iteration: responses sampled with the KV cache, from the policy or the frozen reference.

Under a tf.distribute strategy each replica samples its equal share of the prompts (a random stream of its own) and
scores it (step 2), and each worker calls the reward function on its replicas' rows; all of it is gathered so every
worker holds the whole batch.
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from pipeline.core import distribute
from pipeline.lm.config import LMPPOConfig
from pipeline.lm.networks import PolicyNetworks
from pipeline.lm.rewards import Scores


def sample(lm, prompt_ids, prompt_lengths, seed, settings: LMPPOConfig, eos_id: int | None):
    """[B, P + max_new_tokens] sequences sampled as PPO samples (its length, temperature, top-k and top-p): the
    rollout's, and the SFT samples a learned reward model is trained to rank (what it will be asked to score)."""
    return lm_lib.sample(
        lm,
        prompt_ids,
        settings.max_new_tokens,
        settings.temperature,
        seed,
        settings.top_k,
        settings.top_p,
        prompt_lengths=prompt_lengths,
        eos_id=eos_id,
    )


class Sampler:
    def __init__(
        self,
        networks: PolicyNetworks,
        settings: LMPPOConfig,
        eos_id: int | None,
        generator: tf.random.Generator,
        strategy: tf.distribute.Strategy | None,
        score,
    ):
        """score: the compiled scoring pass (PolicyNetworks.score), shared with the learner."""
        self.networks, self.settings, self.eos_id = networks, settings, eos_id
        self.generator, self.strategy, self._score = generator, strategy, score
        self.worker, self.workers = distribute.worker(strategy)
        self._compiled_sample = tf.function(self._sample, autograph=False, jit_compile=settings.jit_generation)
        self._compiled_rollout = tf.function(
            lambda prompt_ids, prompt_lengths: strategy.run(
                self._replica_rollout, (prompt_ids, prompt_lengths, self.generator.make_seeds(1)[:, 0])
            ),
            autograph=False,
        )

    def _sample(self, prompt_ids, prompt_lengths, seed, use_reference: bool = False):
        with self.networks.as_reference() if use_reference else contextlib.nullcontext(self.networks.policy) as lm:
            return sample(lm, prompt_ids, prompt_lengths, seed, self.settings, self.eos_id)

    def generate(self, prompt_ids, use_reference: bool = False, prompt_lengths=None) -> np.ndarray:
        """[B, P + max_new_tokens] sampled sequences, from the policy or the frozen reference (the SFT model).

        prompt_lengths [B]: where each right-padded prompt ends (None: every row is P long). Each row holds its
        prompt, its max_new_tokens response right after it, then padding: `lm_lib.responses` cuts responses out."""
        return self._compiled_sample(
            *as_tensors(prompt_ids, lengths_of(prompt_ids, prompt_lengths)),
            self.generator.make_seeds(1)[:, 0],
            use_reference,
        ).numpy()

    def _replica_rollout(self, prompt_ids, prompt_lengths, seed):
        """This replica's equal share of the prompts, sampled and scored (step 2): {sequences[, log_probs, values,
        ref_log_probs[, kept]]}. seed: one draw of the generator, the same on every worker (their generators
        agree: so must their minibatch shuffles); replica r > 0 samples from it folded with r, its global replica
        id. So replica 0 draws what one device draws, and 2 replicas draw alike on one host or as 2 workers."""
        context = tf.distribute.get_replica_context()
        replica = tf.cast(context.replica_id_in_sync_group, tf.int64)
        seed = tf.where(replica > 0, tf.random.experimental.stateless_fold_in(seed, replica), seed)
        prompt_ids, prompt_lengths = (distribute.replica_share(x, context) for x in (prompt_ids, prompt_lengths))
        sequences = self._compiled_sample(prompt_ids, prompt_lengths, seed)
        if self.networks.filtered and self.workers > 1:  # scored on the gathered batch: see sampled_and_scored
            return {"sequences": sequences}
        log_probs, values, ref_log_probs, kept = self._score(sequences, prompt_lengths)
        scored = {"sequences": sequences, "log_probs": log_probs, "values": values, "ref_log_probs": ref_log_probs}
        return scored if kept is None else {**scored, "kept": kept}

    def sampled_and_scored(self, prompt_ids, prompt_lengths, score_fn) -> tuple:
        """Under a strategy: every replica's rollout share and score_fn(this worker's rows, their responses)'s
        Scores, gathered from every worker: the whole batch's (sequences, Scores, step 2's (log-probs, values,
        reference log-probs, kept sets) or None), the same on every worker.

        Filtered sampling on several workers: the kept sets, [B, R, vocabulary] booleans, would cross between
        workers as a float64 each (GPT-2: ~150 MB a batch); every worker scores the gathered batch instead."""
        per_replica = self._compiled_rollout(*as_tensors(prompt_ids, prompt_lengths))
        local = tf.nest.map_structure(self.strategy.experimental_local_results, per_replica)
        mine = {k: np.concatenate([part.numpy() for part in parts]) for k, parts in local.items()}
        rows = np.arange(self.worker * len(mine["sequences"]), (self.worker + 1) * len(mine["sequences"]))
        responses = lm_lib.responses(mine["sequences"], prompt_lengths[rows], self.settings.max_new_tokens).numpy()
        scores = score_fn(rows, responses)
        mine.update({"scores": scores.total, **{f"scores/{name}": v for name, v in scores.parts.items()}})
        batch = distribute.gather(self.strategy, mine, {k: 0 for k in mine})
        scored = (
            tuple(batch.get(k) for k in ("log_probs", "values", "ref_log_probs", "kept"))
            if "log_probs" in batch
            else None
        )
        parts = {name: batch[f"scores/{name}"] for name in scores.parts}
        return batch["sequences"], Scores(batch["scores"], parts), scored


def lengths_of(prompt_ids, prompt_lengths):
    """Each prompt's length: given, or every row's full width."""
    if prompt_lengths is not None:
        return prompt_lengths
    return np.full([np.shape(prompt_ids)[0]], np.shape(prompt_ids)[1], np.int32)


def as_tensors(token_ids, prompt_lengths):
    return tf.convert_to_tensor(token_ids, tf.int32), tf.convert_to_tensor(prompt_lengths, tf.int32)
