"""Epochs of shuffled minibatches over one rollout, as one graph loop: the update loop both learners share.

Each epoch draws a fresh permutation from the learner's generator (so a resumed run draws what it would have), cuts
it into equal minibatches, and hands each to the learner's step; the loop ends early at the first step that was
not taken (gym's target_kl) or not finite. Written for tf.function (autograph off): tf.while_loop and tf.cond.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf


def run(
    generator: tf.random.Generator,
    rows: dict,
    num_minibatches: int,
    num_epochs: int,
    step: Callable,
    num_stats: int,
):
    """rows: name -> tensor [batch, ...] or a dict of them (None passes through); step(minibatch) -> (stats
    [num_stats], taken, finite), stats zero when not taken. Returns (the mean stats of the steps taken, the first
    step's stats, whether every step was finite)."""
    batch = tf.shape(tf.nest.flatten([v for v in rows.values() if v is not None])[0])[0]
    size = batch // num_minibatches

    def body(index, order, totals, first, taken, more, finite):
        order = tf.cond(index % num_minibatches == 0, lambda: tf.argsort(generator.uniform([batch])), lambda: order)
        start = (index % num_minibatches) * size
        chosen = order[start : start + size]
        minibatch = {
            k: None if v is None else tf.nest.map_structure(lambda x: tf.gather(x, chosen), v) for k, v in rows.items()
        }
        stats, took, step_finite = step(minibatch)
        first = tf.where(index == 0, stats, first)
        return index + 1, order, totals + stats, first, taken + tf.cast(took, tf.int32), took, step_finite

    _, _, totals, first, taken, _, finite = tf.while_loop(
        lambda index, order, totals, first, taken, more, finite: (index < num_epochs * num_minibatches) & more & finite,
        body,
        (
            tf.constant(0),
            tf.range(batch),
            tf.zeros([num_stats]),
            tf.zeros([num_stats]),
            tf.constant(0),
            tf.constant(True),
            tf.constant(True),
        ),
        shape_invariants=(
            tf.TensorShape([]),
            tf.TensorShape([None]),
            tf.TensorShape([num_stats]),
            tf.TensorShape([num_stats]),
            tf.TensorShape([]),
            tf.TensorShape([]),
            tf.TensorShape([]),
        ),
    )
    return totals / tf.cast(tf.maximum(taken, 1), tf.float32), first, finite
