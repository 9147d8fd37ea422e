"""Data-parallel runs through the driver (issue 14): the same command, a distribute section in the config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.launch import free_ports, tf_config
from tests.conftest import REPO, run_driver, write_config
from tests.export.fresh_process import serve


def test_a_mirrored_run_exports_a_servable_policy_and_resumes_on_one_device(tmp_path):
    config = write_config(tmp_path / "mirrored.yaml", {"distribute": {"strategy": "mirrored", "cpu_replicas": 2},
                                                        "train": {"total_env_steps": 512}})
    run = tmp_path / "run"
    result = run_driver("run", config, "--run-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model: 2 replicas" in result.stderr
    assert "variables on CPU:0, CPU:1" in result.stderr  # a copy on each replica's device
    assert json.loads((run / "metrics.json").read_text())["train.env_steps"] == 512
    version = run / "export" / "cartpole_v1" / "1"
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    report, (answer,) = serve(version, [{"inputs": {"observations": observations.tolist()}}], tmp_path)
    assert set(answer) >= {"action", "value"} and answer["action"].shape == (5,)
    assert set(np.unique(answer["action"])) <= {0, 1}
    # The checkpoint a 2-replica run wrote resumes on one device (another replica count): it continues the
    # counters instead of starting over.
    result = run_driver("run", config, "--run-dir", run, "--set", "distribute.strategy=none",
                        "--set", "train.total_env_steps=1024")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "512 env steps" in result.stderr
    assert "replicas" not in result.stderr
    assert json.loads((run / "metrics.json").read_text())["train.env_steps"] == 1024


# === Several workers (MultiWorkerMirroredStrategy on loopback) ===

def start_workers(config, run_dir, count: int, *overrides: str, logs: Path) -> list[subprocess.Popen]:
    """`count` processes of the same `run` command, each with its worker's TF_CONFIG: how a cluster manager
    starts them (one pod or Slurm task each); output to logs/worker<i>.log."""
    ports = free_ports(count)
    sets = [arg for value in ("distribute.strategy=multi_worker", *overrides) for arg in ("--set", value)]
    return [subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(config), "--run-dir", str(run_dir), *sets],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "TF_CONFIG": tf_config(ports, i)},
                             stdout=open(logs / f"worker{i}.log", "w"), stderr=subprocess.STDOUT)
            for i in range(count)]


def wait_for_checkpoint(run_dir: Path, procs, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list((run_dir / "checkpoints").glob("*.index")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_local_workers_solve_cartpole_and_export_a_servable_policy(tmp_path):
    run = tmp_path / "run"
    result = run_driver("launch", "--workers", "2", REPO / "configs" / "cartpole.yaml", "--run-dir", run,
                        "--set", "train.stop_at_return=475", "--set", "train.total_env_steps=150000")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[worker 0]" in result.stdout and "[worker 1]" in result.stdout
    assert "worker 1 of 2" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train.solved"] and metrics["eval.mean_return"] >= 475, metrics
    assert not (run / "workers").exists()  # the other worker's scratch folder is gone
    report, (answer,) = serve(run / "export" / "cartpole_v1" / "1",
                              [{"inputs": {"observations": [[0.0, 0.0, 0.05, 0.0], [0.0, 0.0, -0.05, 0.0]]}}],
                              tmp_path)
    assert list(answer["action"]) == [1, 0]  # a pole leaning right is pushed right, and left left


def test_sigterm_to_one_worker_stops_every_worker_after_one_checkpoint_and_the_rerun_continues(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": 10**6}})
    run = tmp_path / "run"
    procs = start_workers(config, run, 2, logs=tmp_path)
    wait_for_checkpoint(run, procs)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=60) for p in procs] == [143, 143]
    stopped = [re.search(r"stopped by SIGTERM in train at (\d+) env steps",
                         (tmp_path / f"worker{i}.log").read_text()) for i in range(2)]
    assert stopped[0] and stopped[1] and stopped[0].group(1) == stopped[1].group(1)  # the same step on both
    steps = int(stopped[0].group(1))
    assert (run / "checkpoints" / f"ckpt-{steps}.index").is_file()
    assert not (run / "export").exists()
    procs = start_workers(config, run, 2, f"train.total_env_steps={steps + 512}", logs=tmp_path)
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert f"({steps} env steps)" in (tmp_path / "worker1.log").read_text()  # resumed, not started over
    assert json.loads((run / "metrics.json").read_text())["train.env_steps"] == steps + 512


def test_a_killed_worker_stops_the_other_within_seconds_and_the_rerun_continues(tmp_path):
    config = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": 10**6}})
    run = tmp_path / "run"
    procs = start_workers(config, run, 2, logs=tmp_path)
    wait_for_checkpoint(run, procs)
    procs[1].kill()
    killed_at = time.monotonic()
    assert procs[0].wait(timeout=60) == 1
    assert time.monotonic() - killed_at < 30
    assert "another worker of this run stopped or cannot be reached" in (tmp_path / "worker0.log").read_text()
    assert not (run / "export").exists()
    last = max(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    result = run_driver("launch", "--workers", "2", config, "--run-dir", run,
                        "--set", f"train.total_env_steps={last + 512}")
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"({last} env steps)" in result.stdout
    assert (run / "export" / "cartpole_v1" / "1" / "saved_model.pb").is_file()
