"""A training job killed with SIGKILL part-way resumes from its last checkpoint when re-run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import tensorflow as tf

from pipeline.core.tb_reader import read_scalars
from tests.conftest import kill_after_checkpoint, run_driver, write_config

TOTAL, BATCH = 16384, 4 * 32


def test_sigkill_then_rerun_continues(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": TOTAL, "checkpoint_every": 4}})
    run_dir = tmp_path / "run"
    # Killed a little after its first checkpoint, so there is work to lose and redo.
    killed_at = kill_after_checkpoint(["run", cfg, "--run-dir", run_dir], run_dir / "checkpoints", linger_s=0.3)
    saved_steps = int(killed_at.rsplit("-", 1)[1])
    assert 0 < saved_steps < TOTAL
    assert not (run_dir / "export").exists(), "a killed run must not have exported"
    restored = _restored_variables_match_checkpoint(run_dir, tmp_path)
    assert restored >= 39  # 8 network, 18 optimizer, 4 normaliser, 7 counter, RNG and train-step variables
    assert (run_dir / ".lock").exists()  # the killed run's lock file stays; its lock went with the process

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
    from pipeline.core.rundir import RunDir
    from pipeline.gym.stages import environment, model

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


def test_a_second_process_on_a_run_directory_exits_75_at_once_and_changes_nothing(tiny_run, tmp_path):
    import fcntl
    import os
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    with open(run / ".lock", "a+") as held:  # what a running job holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write(f"pid {os.getpid()} on this host")
        held.flush()
        for command in (["run", run / "config.yaml", "--run-dir", run], ["evaluate", run], ["export", run]):
            result = run_driver(*command)
            assert result.returncode == 75, (command, result.stderr[-2000:])
            assert f"pid {os.getpid()}" in result.stderr and "this run did nothing" in result.stderr
        assert f"state: running, pid {os.getpid()}" in run_driver("status", run).stdout
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == {
        p: t for p, t in before.items() if p.name != ".lock"
    }
    assert run_driver("evaluate", run).returncode == 0  # released: the next one runs


def test_a_truncated_latest_checkpoint_is_reported_and_the_one_before_resumes(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = next((run / "checkpoints").glob("ckpt-1024.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a copy cut short
    result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", "train.total_env_steps=1536")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint" in result.stderr and "ckpt-1024 cannot be read" in result.stderr
    assert f"resumed from {run / 'checkpoints' / 'ckpt-512'}" in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train.env_steps"] == 1536 and metrics["train.iterations"] == 1536 // BATCH
