"""Shared fixtures: tiny configs, and one tiny trained run directory reused by the read-only tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import pipeline  # noqa: F401  (TensorFlow's environment before any test imports it)

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "env": {"id": "CartPole-v1", "num_envs": 4, "seed": 0},
    "model": {"actor_layers": [16], "value_layers": [16]},
    "train": {
        "total_env_steps": 1024,
        "rollout_steps": 32,
        "num_epochs": 2,
        "num_minibatches": 2,
        "checkpoint_every": 4,
    },
    "evaluate": {"episodes": 3},
}


def write_config(path: Path, overrides: dict | None = None) -> Path:
    cfg = {section: dict(values) for section, values in TINY.items()}
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(cfg))
    return path


OBJECTS = ["the mat", "a ball", "the moon", "some bread", "a tree", "the car", "a hat", "the door"]


def write_corpus(path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    subjects, verbs = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "finds"]
    path.write_text("\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(OBJECTS)}." for _ in range(n)))


def lm_config(tmp_path, reward=None, **ppo):
    write_corpus(tmp_path / "corpus.txt")
    cfg = {
        "task": "lm",
        "data": {
            "corpus": str(tmp_path / "corpus.txt"),
            "format": "text",
            "vocabulary_size": 300,
            "sequence_length": 16,
            "prompt_tokens": 3,
        },
        "model": {"num_layers": 2, "num_heads": 2, "hidden_dim": 32, "intermediate_dim": 64},
        "sft": {"epochs": 10, "batch_size": 32, "learning_rate": 0.003},
        "reward": {"function": "tests.lm_rewards:mentions_moon", **(reward or {})},
        "ppo": {
            "iterations": 30,
            "batch_size": 32,
            "max_new_tokens": 8,
            "learning_rate": 0.001,
            "kl_coef": 0.01,
            "checkpoint_every": 10,
            "jit_generation": False,
            "jit_update": False,
            **ppo,
        },
        "evaluate": {"prompts": 48, "samples": 4},
    }
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_driver(*args, timeout=600, cwd=REPO, env=None, **kwargs) -> subprocess.CompletedProcess:
    """The driver exactly as a scheduled job runs it: a separate process, from the repository root (or cwd), in
    this process's environment (or `env`)."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def kill_after_checkpoint(args, checkpoint_dir: Path, linger_s: float = 0.0) -> str:
    """Starts the driver, SIGKILLs it once a checkpoint appears in checkpoint_dir (after linger_s more
    seconds of work to lose), and returns the latest checkpoint it left."""
    import signal

    import tensorflow as tf

    signal_driver(args, lambda: tf.train.latest_checkpoint(str(checkpoint_dir)) is not None, signal.SIGKILL, linger_s)
    return tf.train.latest_checkpoint(str(checkpoint_dir))


def signal_driver(args, ready, sig, linger_s: float = 0.0) -> tuple[int, str]:
    """Starts the driver, sends it `sig` once ready() holds and linger_s more seconds have passed; returns its
    exit code and stderr."""
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *map(str, args)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 300
            while not ready():
                assert proc.poll() is None, "the run ended before the signal"
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(linger_s)
            proc.send_signal(sig)
            returncode = proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.wait()
        stderr.seek(0)
        return returncode, stderr.read()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny CartPole run (train -> evaluate -> export), made once per session."""
    root = tmp_path_factory.mktemp("tiny")
    run_dir = root / "run"
    result = run_driver("run", write_config(root / "tiny.yaml"), "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory) -> Path:
    """A finished tiny `task: lm` run (data -> sft -> ppo -> evaluate -> export), made once per session."""
    root = tmp_path_factory.mktemp("lm")
    run_dir = root / "run"
    result = run_driver("run", lm_config(root), "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir
