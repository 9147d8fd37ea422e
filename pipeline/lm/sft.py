"""Supervised fine-tuning: next-token cross-entropy on the corpus, validation perplexity."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from pipeline.core import estimators, guards
from pipeline.lm.optimizer import SummedStep


def next_token_loss(lm, token_ids, padding_mask, count=None):
    """Mean cross-entropy of each real next token (padding after the EOS does not count), and their count.
    count: divide by this instead (a larger batch's count: these rows' share of its mean)."""
    logits, _ = lm_lib.forward(lm, token_ids, padding_mask)
    losses = tf.keras.losses.sparse_categorical_crossentropy(
        token_ids[:, 1:], tf.cast(logits[:, :-1], tf.float32), from_logits=True
    )
    weights = tf.cast(padding_mask[:, 1:], tf.float32)
    return estimators.masked_mean(losses, weights, count), tf.reduce_sum(weights)


class SFTTrainer:
    """Adam on the next-token loss: under a tf.distribute strategy (the one lm was built under) each replica takes
    an equal share of every batch's rows (optimizer.SummedStep)."""

    def __init__(
        self,
        lm,
        learning_rate: float,
        max_grad_norm: float = 1.0,
        jit_compile: bool = True,
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.lm = lm
        self._step = SummedStep(
            lm.trainable_variables,
            lambda ids, mask, count: next_token_loss(lm, ids, mask, count)[0],
            lambda ids, mask: tf.maximum(tf.reduce_sum(tf.cast(mask[:, 1:], tf.float32)), 1.0),  # the batch's tokens
            learning_rate,
            max_grad_norm,
            jit_compile,
            strategy,
        )
        self._steps = 0
        self._loss = tf.function(
            lambda ids, mask: next_token_loss(self.lm, ids, mask), autograph=False, jit_compile=jit_compile
        )

    def train_step(self, token_ids, padding_mask) -> float:
        """One optimizer step; returns the loss. Raises guards.NonFiniteError on a non-finite loss or gradient."""
        loss, finite = self._step(token_ids, padding_mask)
        self._steps += 1
        guards.check(finite, "sft", "loss or gradient", f"at step {self._steps}")
        return float(loss)

    def check_weights(self) -> None:
        """Before a checkpoint: every weight finite."""
        guards.check(guards.all_finite(self.lm.trainable_variables), "sft", "weight", f"after step {self._steps}")

    def perplexity(self, ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> float:
        total, count = 0.0, 0.0
        for start in range(0, len(ids), batch_size):
            loss, n = self._loss(
                tf.constant(ids[start : start + batch_size]), tf.constant(mask[start : start + batch_size])
            )
            total += float(loss) * float(n)
            count += float(n)
        return math.exp(total / max(count, 1.0))
