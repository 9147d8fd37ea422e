"""Reward-model training on preference pairs: the Bradley-Terry loss, pair accuracy, a compiled trainer.

Bradley-Terry: P(chosen preferred) = sigmoid(r_chosen - r_rejected); the loss is its negative log-likelihood,
as in InstructGPT and TRL's RewardTrainer.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from models import reward_model as rm_lib
from pipeline.core import guards
from pipeline.lm.optimizer import SummedStep
from pipeline.lm.preferences import PreferencePairs


def bradley_terry_loss(chosen_rewards, rejected_rewards, count=None):
    """Mean of -log sigmoid(r_chosen - r_rejected), written as softplus so large margins do not overflow.
    count: divide by this instead (a larger batch's pair count: these pairs' share of its mean)."""
    losses = tf.nn.softplus(-(tf.cast(chosen_rewards, tf.float32) - tf.cast(rejected_rewards, tf.float32)))
    return tf.reduce_mean(losses) if count is None else tf.reduce_sum(losses) / tf.cast(count, tf.float32)


def pair_accuracy(chosen_rewards, rejected_rewards) -> float:
    """Fraction of pairs the model ranks the right way round (a tie counts as wrong)."""
    return float(np.mean(np.asarray(chosen_rewards) > np.asarray(rejected_rewards)))


def preference_dataset(pairs: PreferencePairs, batch_size: int, seed: int, replicas: int = 1):
    """tf.data of shuffled (chosen ids, chosen mask, rejected ids, rejected mask) batches; the last partial
    batch is dropped so the compiled step sees one shape. Batches are cut to a multiple of the replica count
    (fewer pairs than batch_size: one batch of them all)."""
    size = min(batch_size, len(pairs)) // replicas * replicas
    if size < 1:
        raise ValueError(f"{len(pairs)} training pairs do not split over {replicas} replicas")
    return (
        tf.data.Dataset.from_tensor_slices(pairs.arrays())
        .shuffle(len(pairs), seed=seed)
        .batch(size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def reward_function(model: rm_lib.RewardModel, jit_compile: bool = True, batch_size: int = 64):
    """rewards(ids, mask) -> float32 [N] normalised rewards, computed in compiled batches."""
    forward = tf.function(lambda ids, mask: rm_lib.rewards(model, ids, mask), autograph=False, jit_compile=jit_compile)

    def rewards(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = [
            forward(tf.constant(ids[i : i + batch_size], tf.int32), tf.constant(mask[i : i + batch_size], tf.int32))
            for i in range(0, len(ids), batch_size)
        ]
        return np.concatenate([o.numpy() for o in out]).astype(np.float32) if out else np.zeros([0], np.float32)

    return rewards


class RewardTrainer:
    """Adam on the Bradley-Terry loss: under a tf.distribute strategy (the one the model was built under) each
    replica takes an equal share of every batch's pairs (optimizer.SummedStep)."""

    def __init__(
        self,
        model: rm_lib.RewardModel,
        learning_rate: float,
        max_grad_norm: float = 1.0,
        jit_compile: bool = True,
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.model = model
        self.train_step = SummedStep(
            model.trainable_variables,
            self._loss,
            lambda chosen_ids, *_: tf.cast(tf.shape(chosen_ids)[0], tf.float32),  # the whole batch's pairs
            learning_rate,
            max_grad_norm,
            jit_compile,
            strategy,
        )
        self.optimizer, self.replicas = self.train_step.optimizer, self.train_step.replicas
        self._steps = 0
        self.rewards = reward_function(model, jit_compile)

    def _loss(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask, count):
        """These pairs' share of a batch of `count` pairs' loss; chosen and rejected in one forward pass."""
        raw = rm_lib.raw_rewards(
            self.model, tf.concat([chosen_ids, rejected_ids], 0), tf.concat([chosen_mask, rejected_mask], 0)
        )
        return bradley_terry_loss(*tf.split(raw, 2), count)

    def train_epoch(self, pairs: PreferencePairs, batch_size: int, seed: int) -> list[float]:
        """One pass over shuffled batches; returns each step's loss. Raises guards.NonFiniteError on a non-finite
        loss or gradient, and after the pass on a non-finite weight."""
        losses = []
        for batch in preference_dataset(pairs, batch_size, seed, self.replicas):
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
