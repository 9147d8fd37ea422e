"""Peak memory after each stage, in metrics.json: what sizing a machine for a model needs.

Host: the process's peak resident set so far (the kernel's ru_maxrss; it never goes down, so a stage's figure is
the peak up to its end). GPU: each device's peak since the previous stage (TensorFlow's allocator statistics,
reset after reading), where there is one.
"""

from __future__ import annotations

import resource


def peaks(stage: str) -> dict:
    import tensorflow as tf

    metrics = {f"memory.{stage}.peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for device in tf.config.list_logical_devices("GPU"):
        name = device.name.split("device:")[-1].lower().replace(":", "")  # gpu0
        metrics[f"memory.{stage}.peak_{name}_mib"] = tf.config.experimental.get_memory_info(device.name)["peak"] / 2**20
        tf.config.experimental.reset_memory_stats(device.name)
    return metrics
