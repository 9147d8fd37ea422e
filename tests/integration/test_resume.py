"""A training job killed with SIGKILL part-way resumes from its last checkpoint when re-run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tests.conftest import REPO, run_driver, write_config
from pipeline.tb_reader import read_scalars

TOTAL, BATCH = 16384, 4 * 32


def test_sigkill_then_rerun_continues(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": TOTAL, "checkpoint_every": 4}})
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "pipeline", "run", str(cfg), "--run-dir", str(run_dir)]
    proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while tf.train.latest_checkpoint(str(run_dir / "checkpoints")) is None:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # let it train past the checkpoint, so there is work to lose and redo
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    saved_steps = int(killed_at.rsplit("-", 1)[1])
    assert 0 < saved_steps < TOTAL
    assert not (run_dir / "export").exists(), "a killed run must not have exported"
    restored = _restored_variables_match_checkpoint(run_dir, tmp_path)
    assert restored >= 39  # 8 network, 18 optimizer, 4 normaliser, 7 counter, RNG and train-step variables

    result = run_driver("run", cfg, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from {killed_at}" in result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train.env_steps"] == TOTAL
    assert metrics["train.iterations"] == TOTAL // BATCH, "the iteration counter must continue, not restart"
    # The TensorBoard curve continues from the checkpoint: the resumed writer's first step follows it.
    per_file = read_scalars(run_dir / "tb" / "train", "time/iterations", per_file=True)
    assert len(per_file) == 2
    first, second = per_file
    assert min(first) == BATCH and min(second) == saved_steps + BATCH and max(second) == TOTAL
    assert second[saved_steps + BATCH] == saved_steps // BATCH + 1

    # Safe to re-run a finished job: nothing is trained again and no second export version appears.
    again = run_driver("run", cfg, "--run-dir", run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train.env_steps"] == TOTAL
    assert [p.name for p in (run_dir / "export" / "cartpole_v1").iterdir()] == ["1"]


def _restored_variables_match_checkpoint(run_dir, tmp_path) -> int:
    """Rebuilds the learner from the run directory as the driver does and checks every saved value came back."""
    from pipeline.rundir import RunDir
    from pipeline.stages import environment, model

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    run = RunDir(copy)
    cfg = run.load_config()
    learner = model.run(cfg, run, environment.run(cfg, run))  # restore_latest asserts every object matched
    original = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(copy / "checkpoints")))
    resaved = tf.train.load_checkpoint(learner.checkpoint().save(str(tmp_path / "resaved" / "ckpt")))
    keys = [k for k in original.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE") and "save_counter" not in k]
    for key in keys:
        np.testing.assert_array_equal(resaved.get_tensor(key), original.get_tensor(key), err_msg=key)
    return len(keys)
