"""Shared fixtures: tiny configs, and one tiny trained run directory reused by the read-only tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pipeline  # noqa: F401  (TensorFlow's environment before any test imports it)
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "env": {"id": "CartPole-v1", "num_envs": 4, "seed": 0},
    "model": {"actor_layers": [16], "value_layers": [16]},
    "train": {"total_env_steps": 1024, "rollout_steps": 32, "num_epochs": 2, "num_minibatches": 2,
              "checkpoint_every": 4},
    "evaluate": {"episodes": 3},
}


def write_config(path: Path, overrides: dict | None = None) -> Path:
    cfg = {section: dict(values) for section, values in TINY.items()}
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_driver(*args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    """The driver exactly as a scheduled job runs it: a separate process, from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def kill_after_checkpoint(args, checkpoint_dir: Path, linger_s: float = 0.0) -> str:
    """Starts the driver, SIGKILLs it once a checkpoint appears in checkpoint_dir (after linger_s more
    seconds of work to lose), and returns the latest checkpoint it left."""
    import signal
    import time

    import tensorflow as tf

    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while tf.train.latest_checkpoint(str(checkpoint_dir)) is None:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(linger_s)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    return tf.train.latest_checkpoint(str(checkpoint_dir))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny CartPole run (train -> evaluate -> export), made once per session."""
    root = tmp_path_factory.mktemp("tiny")
    run_dir = root / "run"
    result = run_driver("run", write_config(root / "tiny.yaml"), "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
