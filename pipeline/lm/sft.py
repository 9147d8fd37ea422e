"""Supervised fine-tuning: next-token cross-entropy on the corpus, validation perplexity."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from pipeline import distribute, guards
from pipeline.lm.optimizer import SummedGradientsAdam
from pipeline.rl import estimators


def next_token_loss(lm, token_ids, padding_mask, count=None):
    """Mean cross-entropy of each real next token (padding after the EOS does not count), and their count.
    count: divide by this instead (a larger batch's count: these rows' share of its mean)."""
    logits, _ = lm_lib.forward(lm, token_ids, padding_mask)
    losses = tf.keras.losses.sparse_categorical_crossentropy(token_ids[:, 1:], tf.cast(logits[:, :-1], tf.float32),
                                                             from_logits=True)
    weights = tf.cast(padding_mask[:, 1:], tf.float32)
    return estimators.masked_mean(losses, weights, count), tf.reduce_sum(weights)


class SFTTrainer:
    """Adam on the next-token loss. Under a tf.distribute strategy (the one lm was built under) each replica takes
    an equal share of every batch's rows; their gradients of the batch's mean are summed, clipped on the global
    norm and applied on every replica, as pipeline/lm/ppo.py's steps."""

    def __init__(self, lm, learning_rate: float, max_grad_norm: float = 1.0, jit_compile: bool = True,
                 strategy: tf.distribute.Strategy | None = None):
        self.lm = lm
        self.strategy = strategy
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.optimizer = SummedGradientsAdam(learning_rate=learning_rate)
            self.optimizer.build(lm.trainable_variables)
        self._max_grad_norm = max_grad_norm
        self._steps = 0
        # One device: the whole step one XLA cluster. Under a strategy the gradients leave it for the all-reduce.
        self._train_step = tf.function(self._step, autograph=False, jit_compile=jit_compile and strategy is None)
        self._gradients = tf.function(self._share_gradients, autograph=False, jit_compile=jit_compile)
        self._loss = tf.function(lambda ids, mask: next_token_loss(self.lm, ids, mask), autograph=False,
                                 jit_compile=jit_compile)

    def train_step(self, token_ids, padding_mask) -> float:
        """One optimizer step; returns the loss. Raises guards.NonFiniteError on a non-finite loss or gradient."""
        loss, finite = self._train_step(token_ids, padding_mask)
        self._steps += 1
        guards.check(finite, "sft", "loss or gradient", f"at step {self._steps}")
        return float(loss)

    def check_weights(self) -> None:
        """Before a checkpoint: every weight finite."""
        guards.check(guards.all_finite(self.lm.trainable_variables), "sft", "weight", f"after step {self._steps}")

    def _share_gradients(self, token_ids, padding_mask, count):
        with tf.GradientTape() as tape:
            loss, _ = next_token_loss(self.lm, token_ids, padding_mask, count)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, self.lm.trainable_variables)], loss

    def _step(self, token_ids, padding_mask):
        count = tf.maximum(tf.reduce_sum(tf.cast(padding_mask[:, 1:], tf.float32)), 1.0)  # the whole batch's
        if self.strategy is None:
            return self._apply(*self._share_gradients(token_ids, padding_mask, count))
        per_replica = self.strategy.run(lambda: self._replica_step(token_ids, padding_mask, count))
        return tuple(self.strategy.experimental_local_results(x)[0] for x in per_replica)

    def _replica_step(self, token_ids, padding_mask, count):
        context = tf.distribute.get_replica_context()
        grads, loss = self._gradients(distribute.replica_share(token_ids, context),
                                      distribute.replica_share(padding_mask, context), count)
        *grads, loss = distribute.all_reduce_sum(context, grads + [loss])
        return self._apply(grads, loss)

    def _apply(self, grads, loss):
        grads, norm = tf.clip_by_global_norm(grads, self._max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, self.lm.trainable_variables))
        return loss, tf.math.is_finite(loss) & tf.math.is_finite(norm)

    def perplexity(self, ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> float:
        total, count = 0.0, 0.0
        for start in range(0, len(ids), batch_size):
            loss, n = self._loss(tf.constant(ids[start:start + batch_size]), tf.constant(mask[start:start + batch_size]))
            total += float(loss) * float(n)
            count += float(n)
        return math.exp(total / max(count, 1.0))
