"""A scheduler's SIGTERM (preemption, time limit) stops training at the next step with a checkpoint and exit 143;
the same command then continues from it. (The LM PPO stage: tests/integration/test_lm_pipeline.py.)"""

from __future__ import annotations

import json
import signal

import tensorflow as tf

from pipeline.core.tb_reader import read_scalars
from tests.conftest import run_driver, signal_driver, write_config

BATCH = 4 * 32


def test_sigterm_checkpoints_exits_143_and_the_rerun_continues(tmp_path):
    # No periodic checkpoint within the budget: any checkpoint before the end can only come from SIGTERM.
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": 10_000_000, "checkpoint_every": 1_000_000}})
    started = lambda: any((run_dir / "tb" / "train").glob("events.out.tfevents.*"))  # noqa: E731
    returncode, stderr = signal_driver(["run", cfg, "--run-dir", run_dir], started, signal.SIGTERM, linger_s=2.0)
    assert returncode == 143, stderr[-3000:]
    checkpoint = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert checkpoint is not None, "SIGTERM must leave a checkpoint"
    stopped_at = int(checkpoint.rsplit("-", 1)[1])
    assert stopped_at > 0 and stopped_at % BATCH == 0
    assert f"stopped by SIGTERM in train at {stopped_at} env steps" in stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "export").exists()
    assert max(read_scalars(run_dir / "tb" / "train", "time/iterations")) == stopped_at  # the curve is on disk

    total = stopped_at + 2 * BATCH
    result = run_driver("run", cfg, "--run-dir", run_dir, "--set", f"train.total_env_steps={total}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {checkpoint}" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train.env_steps"] == total and metrics["train.iterations"] == total // BATCH
