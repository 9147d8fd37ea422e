"""TensorFlow's own console output for the command line: quiet unless asked for.

On a CPU machine TensorFlow opens with lines of C++ logging, some at error level (`failed call to cuInit` where
there is no GPU; a oneDNN notice printed on the very CPUs it names) and some written by its libraries as they
load, before any log level is read. None is a fault of the run. The driver sets TF_CPP_MIN_LOG_LEVEL to 3 (only
fatal errors) unless the user set it or passed --verbose, and at level 3 imports TensorFlow with the process's
stderr held aside, letting through only what is not one of those start-up notices. Failures still show: they
reach Python as exceptions, which the driver reports.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

LEVEL = "TF_CPP_MIN_LOG_LEVEL"
USER_LEVEL = os.environ.get(LEVEL)  # as the user set it (None: not set); imported before the package's default
# Start-up notices TensorFlow's libraries write as they load and probe for GPUs (absl's prefix: I/W/E + date).
STARTUP_NOTICES = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    r"STDERR|[IWE]\d{4} .*\b(port|cudart_stub|cpu_feature_guard|cuda_platform|cuda_executor|"
    r"cuda_dnn|cuda_fft|cuda_blas)\.cc:\d+\]|To enable the following instructions:.*"
    r"rebuild TensorFlow with the appropriate compiler flags\.)"
)


def configure(verbose: bool) -> None:
    """Before TensorFlow loads: TensorFlow's log level for this process and the workers it starts."""
    if USER_LEVEL is not None:
        os.environ[LEVEL] = USER_LEVEL
    else:
        os.environ[LEVEL] = "0" if verbose else "3"


def import_tensorflow() -> None:
    """Imports TensorFlow and looks for GPUs; at level 3 their start-up notices are kept off the console."""
    quiet = os.environ.get(LEVEL) == "3" and "tensorflow" not in sys.modules
    with tempfile.TemporaryFile("w+b") as held:
        try:
            with _stderr_to(held) if quiet else contextlib.nullcontext():
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")
        finally:  # what TensorFlow wrote, also when its import failed: all but the start-up notices
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines():
                if not STARTUP_NOTICES.match(line):
                    print(line, file=sys.stderr)


@contextlib.contextmanager
def _stderr_to(file):
    """File descriptor 2 itself redirected: TensorFlow's C++ code writes there, not to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
