"""The LM trainers' optimizer: Keras 3's Adam, fit for gradients already summed across tf.distribute replicas."""

from __future__ import annotations

import keras


class SummedGradientsAdam(keras.optimizers.Adam):
    """Keras 3's Adam for gradients already summed across replicas and clipped on their global norm. In replica
    context Keras sums the gradients it is given across replicas itself, and has no switch to skip it (tf.keras's
    skip_gradients_aggregation): they would be summed twice, and its clipping options act before its sum, per
    replica. With one device this is Keras' Adam."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return grads_and_vars
