"""Supervised fine-tuning: next-token cross-entropy on the corpus, validation perplexity."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from pipeline import guards


def next_token_loss(lm, token_ids, padding_mask):
    """Mean cross-entropy of each real next token (padding after the EOS does not count)."""
    logits, _ = lm_lib.forward(lm, token_ids, padding_mask)
    losses = tf.keras.losses.sparse_categorical_crossentropy(token_ids[:, 1:], tf.cast(logits[:, :-1], tf.float32),
                                                             from_logits=True)
    weights = tf.cast(padding_mask[:, 1:], tf.float32)
    return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0), tf.reduce_sum(weights)


class SFTTrainer:
    def __init__(self, lm, learning_rate: float, max_grad_norm: float = 1.0, jit_compile: bool = True):
        self.lm = lm
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(lm.trainable_variables)
        self._max_grad_norm = max_grad_norm
        self._steps = 0
        self._train_step = tf.function(self._step, autograph=False, jit_compile=jit_compile)
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

    def _step(self, token_ids, padding_mask):
        with tf.GradientTape() as tape:
            loss, _ = next_token_loss(self.lm, token_ids, padding_mask)
        grads = tape.gradient(loss, self.lm.trainable_variables)
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
