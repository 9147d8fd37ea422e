"""Which device the training runs on, as users ask first ("is my job on the GPU?").

TensorFlow runs an op that reads a resource variable on that variable's device, so the devices holding the
learner's variables are the devices its compiled train steps run on.
"""

from __future__ import annotations

import tensorflow as tf


def variable_devices(variables) -> list[str]:
    """Sorted short device names ("CPU:0", "GPU:0") holding the given variables."""
    # Keras 3 variables (the LM's) hold their tf.Variable in `.value`; TF-Agents' (tf_keras) are tf.Variables.
    # A mirrored variable (tf.distribute) has a copy on each replica's device: `values`.
    unwrapped = (v.value if not hasattr(v, "device") else v for v in variables)
    copies = (c for v in unwrapped for c in getattr(v, "values", (v,)))
    specs = (tf.DeviceSpec.from_string(c.device) for c in copies)
    return sorted({f"{spec.device_type}:{spec.device_index}" for spec in specs})


def describe(variables) -> str:
    gpus = tf.config.list_physical_devices("GPU")
    return f"variables on {', '.join(variable_devices(variables))}; {len(gpus)} GPU(s) visible"
