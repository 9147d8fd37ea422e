"""PPO training pipeline on TensorFlow: config in, run directory out.

TensorFlow must see these settings before its first import anywhere in the process (../BUILD.md):
without TF_USE_LEGACY_KERAS=1, TF-Agents networks are built with Keras 3 and its Checkpointer silently
skips their hidden layers. keras-hub keeps using Keras 3 (`import keras`) in the same process.
"""

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "import pipeline before tensorflow: TF_USE_LEGACY_KERAS=1 must be set before TensorFlow "
        "loads, or TF-Agents checkpoints silently miss layers (see BUILD.md)"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow's C++ log level: tf_logs notes the user's own, if any, before the default below (for a notebook);
# the command line chooses its own.
from pipeline.core import tf_logs  # noqa: E402,F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A pooling (BFC) allocator for host memory: TensorFlow's default CPU allocator hands large buffers back to the
# OS and page-faults them in again every step (LM PPO update faster, results unchanged: benchmarks/README.md).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
# One inter-op thread: an RL step is a chain of small ops, and handing them between the threads of an inter-op pool
# costs more than they take to run; big ops (convolutions, an LM's matmuls) still spread over the intra-op threads
# (measured: benchmarks/README.md, "One inter-op thread").
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# Rendering for videos of the agent (pipeline/gym/video.py) on machines with no display: pygame's SDL draws
# offscreen unless told otherwise.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

# The Python API (pipeline/api.py) and the errors it raises: imported after the settings above; TensorFlow loads
# only when a job runs.
from pipeline.api import evaluate, export, load_config, load_policy, run  # noqa: E402,F401
from pipeline.core.guards import RunError  # noqa: E402,F401
from pipeline.core.preemption import Preempted  # noqa: E402,F401
from pipeline.core.rundir import RunLocked  # noqa: E402,F401
from pipeline.core.schema import ConfigError  # noqa: E402,F401
