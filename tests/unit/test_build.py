"""The install resolution BUILD.md describes: TF-Agents' stale pins are its only conflict, and the
environment the package sets before TensorFlow loads."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

from tests.conftest import REPO


def test_pip_check_only_reports_tf_agents_stale_pins():
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    complaints = [line for line in result.stdout.splitlines() if line.strip()]
    assert complaints, "pip check found nothing: BUILD.md's explanation would be out of date"
    assert all(line.startswith("tf-agents 0.19.0 ") for line in complaints), complaints


def test_installed_versions_match_the_pins():
    for file in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (REPO / file).read_text().splitlines():
            if line and not line.startswith("#"):
                name, version = line.split("==")
                assert importlib.metadata.version(name) == version, f"{name} in {file}"


def test_package_sets_tensorflow_environment_first():
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1" and os.environ["KERAS_BACKEND"] == "tensorflow"
    import tensorflow as tf

    assert "tf_keras" in tf.keras.__file__, "TF-Agents networks must be built with tf-keras"
    probe = "import tensorflow, pipeline"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"},
    )
    assert result.returncode != 0 and "import pipeline before tensorflow" in result.stderr


def test_keras3_and_keras_hub_still_work_beside_tf_keras():
    import keras
    import keras_hub  # noqa: F401

    assert keras.__version__.startswith("3.") and keras.backend.backend() == "tensorflow"


def test_one_inter_op_thread_unless_the_user_sets_another():
    """TensorFlow reads TF_NUM_INTEROP_THREADS once, when its runtime starts: `import pipeline` must set it before
    that, and keep a user's own value. Its inter-op pool's threads are named tf_Compute."""
    probe = (
        "import pipeline, os, tensorflow as tf; tf.function(lambda x: x + 1)(tf.constant(1)); "
        "print(sum(open(f'/proc/self/task/{t}/comm').read().strip() == 'tf_Compute' "
        "for t in os.listdir('/proc/self/task')))"
    )
    counts = []
    for own in (None, "3"):
        env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
        if own:
            env["TF_NUM_INTEROP_THREADS"] = own
        result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        counts.append(int(result.stdout.split()[-1]))
    assert counts == [1, 3]
