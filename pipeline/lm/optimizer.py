"""The LM trainers' optimizer step: Keras 3's Adam, fit for gradients already summed across tf.distribute replicas,
and the data-parallel step SFT and the reward model take with it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import tensorflow as tf

from pipeline.core import distribute


class SummedGradientsAdam(keras.optimizers.Adam):
    """Keras 3's Adam for gradients already summed across replicas and clipped on their global norm. In replica
    context Keras sums the gradients it is given across replicas itself, and has no switch to skip it (tf.keras's
    skip_gradients_aggregation): they would be summed twice, and its clipping options act before its sum, per
    replica. With one device this is Keras' Adam."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self._scalars_by_dtype = {}  # this step's (traced) scalars, shared by every variable of a dtype
        super()._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        """Keras' Adam update as TensorFlow's one fused kernel (the same formula, epsilon outside the square root):
        Keras writes it as ~20 graph ops per variable, each a temporary the size of the variable, and on a model of
        hundreds of variables the update's graph is then mostly optimizer (benchmarks/README.md)."""
        dtype = variable.dtype
        if dtype not in self._scalars_by_dtype:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            self._scalars_by_dtype[dtype] = dict(
                beta1_power=tf.pow(beta_1, step),
                beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype),
                beta1=beta_1,
                beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype),
            )
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            grad=tf.cast(gradient, dtype),
            **self._scalars_by_dtype[dtype],
        )


class SummedStep:
    """One Adam step on a batch's loss, a sum over its rows divided by a count the whole batch fixes (its tokens,
    its pairs). On one device the whole step is one XLA cluster. Under a tf.distribute strategy (the one the
    variables were built under) each replica takes an equal share of the batch's rows, the loss over the whole
    batch's count: gradients and loss summed across replicas in one collective, clipped on their global norm,
    applied on every replica. So R replicas take the step one device takes.

    loss_fn(*rows, count) -> that share's loss; count_fn(*batch) -> the whole batch's count. A variable the loss
    does not reach (None gradient) is left out of the step."""

    def __init__(
        self,
        variables: list,
        loss_fn: Callable,
        count_fn: Callable,
        learning_rate: float,
        max_grad_norm: float,
        jit_compile: bool,
        strategy: tf.distribute.Strategy | None,
    ):
        self.variables = variables
        self.strategy = strategy
        self._loss_fn, self._count_fn, self._max_grad_norm = loss_fn, count_fn, max_grad_norm
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.optimizer = SummedGradientsAdam(learning_rate=learning_rate)
            self.optimizer.build(variables)  # eagerly, before any strategy.run traces a step (keras issue 23085)
        # Under a strategy the gradients leave the XLA cluster for the all-reduce.
        self._step = tf.function(self._whole_step, autograph=False, jit_compile=jit_compile and strategy is None)
        self._gradients = tf.function(self._share_gradients, autograph=False, jit_compile=jit_compile)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def __call__(self, *batch):
        """(the batch's loss, whether it and the gradients were finite)."""
        return self._step(*batch)

    def _share_gradients(self, *rows_and_count):
        with tf.GradientTape() as tape:
            loss = self._loss_fn(*rows_and_count)
        grads = tape.gradient(loss, self.variables)
        return [None if g is None else tf.convert_to_tensor(g) for g in grads], loss

    def _whole_step(self, *batch):
        count = self._count_fn(*batch)
        if self.strategy is None:
            return self._apply(*self._share_gradients(*batch, count))
        per_replica = self.strategy.run(lambda: self._replica_step(batch, count))
        return tuple(self.strategy.experimental_local_results(x)[0] for x in per_replica)

    def _replica_step(self, batch, count):
        grads, loss = distribute.summed_share(tf.distribute.get_replica_context(), self._gradients, list(batch), count)
        return self._apply(grads, loss)

    def _apply(self, grads, loss):
        grads, norm = tf.clip_by_global_norm(grads, self._max_grad_norm)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.variables) if g is not None])
        return loss, tf.math.is_finite(loss) & tf.math.is_finite(norm)
