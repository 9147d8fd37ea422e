"""tf.distribute for the learners: which strategy a run trains under, and the sums that make R replicas compute
what one device computes.

Why sums: a mean taken per replica and then averaged equals the global mean only when every replica holds the
same number of items; a masked mean (LM tokens) or a count that differs per worker does not. Every statistic
here is a sum and a count reduced across replicas, divided once.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from pipeline.config import DistributeConfig


def chosen(settings: DistributeConfig) -> str:
    """"none", "mirrored" or "multi_worker": what `auto` means on this host."""
    if settings.strategy != "auto":
        return settings.strategy
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for tasks in cluster.values()) > 1:
        return "multi_worker"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"


def strategy(settings: DistributeConfig) -> tf.distribute.Strategy | None:
    """The strategy a learner builds its variables under; None for one device. Must run before TensorFlow's
    first op: splitting the CPU into logical devices, and collective ops across workers, are fixed when the
    runtime starts."""
    kind = chosen(settings)
    if kind == "none":
        return None
    if kind == "mirrored":
        if tf.config.list_physical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        _split_cpu(settings.cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(settings.cpu_replicas)])
    raise NotImplementedError("distribute.strategy multi_worker is not built yet")


def _split_cpu(count: int) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already started in this process (a second run through the Python API)
        have = len(tf.config.list_logical_devices("CPU"))
        if have < count:
            raise RuntimeError(f"distribute.cpu_replicas: {count} logical CPUs asked for, but TensorFlow already "
                               f"started in this process with {have}; run in a new process") from None


