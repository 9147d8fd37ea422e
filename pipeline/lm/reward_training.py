"""Reward-model training on preference pairs: the Bradley-Terry loss, pair accuracy, a compiled trainer.

Bradley-Terry: P(chosen preferred) = sigmoid(r_chosen - r_rejected); the loss is its negative log-likelihood,
as in InstructGPT and TRL's RewardTrainer.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from models import reward_model as rm_lib
from pipeline import guards
from pipeline.lm.preferences import PreferencePairs


def bradley_terry_loss(chosen_rewards, rejected_rewards):
    """Mean of -log sigmoid(r_chosen - r_rejected), written as softplus so large margins do not overflow."""
    return tf.reduce_mean(tf.nn.softplus(-(tf.cast(chosen_rewards, tf.float32) - rejected_rewards)))


def pair_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Fraction of pairs the model ranks the right way round (a tie counts as wrong)."""
    return float(np.mean(np.asarray(chosen_rewards) > np.asarray(rejected_rewards)))


def preference_dataset(pairs: PreferencePairs, batch_size: int, seed: int):
    """tf.data of shuffled (chosen ids, chosen mask, rejected ids, rejected mask) batches; the last partial
    batch is dropped so the compiled step sees one shape."""
    return (tf.data.Dataset.from_tensor_slices(pairs.arrays()).shuffle(len(pairs), seed=seed)
            .batch(min(batch_size, len(pairs)), drop_remainder=True).prefetch(tf.data.AUTOTUNE))


def reward_function(model: rm_lib.RewardModel, jit_compile: bool = True, batch_size: int = 64):
    """rewards(ids, mask) -> float32 [N] normalised rewards, computed in compiled batches."""
    forward = tf.function(lambda ids, mask: rm_lib.rewards(model, ids, mask), autograph=False,
                          jit_compile=jit_compile)

    def rewards(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = [forward(tf.constant(ids[i:i + batch_size], tf.int32), tf.constant(mask[i:i + batch_size], tf.int32))
               for i in range(0, len(ids), batch_size)]
        return np.concatenate([o.numpy() for o in out]).astype(np.float32) if out else np.zeros([0], np.float32)
    return rewards


class RewardTrainer:
    def __init__(self, model: rm_lib.RewardModel, learning_rate: float, max_grad_norm: float = 1.0,
                 jit_compile: bool = True):
        self.model = model
        self.optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(model.trainable_variables)
        self._max_grad_norm = max_grad_norm
        self._steps = 0
        self.train_step = tf.function(self._train_step, autograph=False, jit_compile=jit_compile)
        self.rewards = reward_function(model, jit_compile)

    def _pair_rewards(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        """Chosen and rejected rewards from one forward pass over both halves."""
        raw = rm_lib.raw_rewards(self.model, tf.concat([chosen_ids, rejected_ids], 0),
                                 tf.concat([chosen_mask, rejected_mask], 0))
        return tf.split(raw, 2)

    def _train_step(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            chosen, rejected = self._pair_rewards(chosen_ids, chosen_mask, rejected_ids, rejected_mask)
            loss = bradley_terry_loss(chosen, rejected)
        grads, norm = tf.clip_by_global_norm(tape.gradient(loss, variables), self._max_grad_norm)
        self.optimizer.apply_gradients(zip(grads, variables))
        return loss, tf.math.is_finite(loss) & tf.math.is_finite(norm)

    def train_epoch(self, pairs: PreferencePairs, batch_size: int, seed: int) -> list[float]:
        """One pass over shuffled batches; returns each step's loss. Raises guards.NonFiniteError on a non-finite
        loss or gradient, and after the pass on a non-finite weight."""
        losses = []
        for batch in preference_dataset(pairs, batch_size, seed):
            loss, finite = self.train_step(*batch)
            self._steps += 1
            guards.check(finite, "reward", "loss or gradient", f"at step {self._steps}")
            losses.append(float(loss))
        guards.check(guards.all_finite(self.model.trainable_variables), "reward", "weight", f"after step {self._steps}")
        return losses

    def evaluate(self, pairs: PreferencePairs) -> tuple[float, float]:
        """(Bradley-Terry loss, pair accuracy) on pairs, e.g. the held-out split."""
        chosen = self.rewards(pairs.chosen_ids, pairs.chosen_mask)
        rejected = self.rewards(pairs.rejected_ids, pairs.rejected_mask)
        return float(bradley_terry_loss(chosen, rejected)), pair_accuracy(chosen, rejected)

    def normalise(self, ids: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
        """Sets the model's offset and scale so these sequences' rewards have mean 0 and std 1; returns them."""
        self.model.offset.assign(0.0)
        self.model.scale.assign(1.0)
        raw = self.rewards(ids, mask)
        offset, scale = float(raw.mean()), max(float(raw.std()), 1e-6)
        self.model.offset.assign(offset)
        self.model.scale.assign(scale)
        return offset, scale
