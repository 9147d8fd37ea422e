"""Stops a run on numbers that must not be trained on or saved.

A reward function, an environment or an overflowing update can produce NaN or infinity; trained on, it spreads
to every weight, and a checkpoint or export of it looks like any other. Every learner (gym PPO, LM PPO, SFT, the
reward model) checks its loss, gradients and weights, and the environment and reward boundaries check what they
return, and raise before the next checkpoint or export is written: the last good checkpoint stays the latest,
and the driver exits 1 with the message.
"""

from __future__ import annotations


class RunError(RuntimeError):
    """The run cannot go on; the message says what went wrong and where (the driver prints it, exit 1)."""


class NonFiniteError(RunError):
    """A loss, gradient, weight, reward or observation is NaN or infinite."""


def all_finite(tensors):
    """Scalar bool tensor: every element of every tensor is finite. (Not a global norm: one of finite values can
    overflow.)"""
    import tensorflow as tf  # here: the driver reads configs (and this module) before loading TensorFlow

    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(t, tf.float32))) for t in tensors])


def check(finite, stage: str, what: str, where: str) -> None:
    """Raises NonFiniteError unless `finite`."""
    if not bool(finite):
        raise NonFiniteError(
            f"{stage}: non-finite {what} {where}; stopped before saving anything: the latest "
            f"checkpoint is the last good one (a learning rate too high for this model, or NaN "
            f"or infinite inputs, are the usual causes)"
        )
