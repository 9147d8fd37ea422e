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

import pytest

from pipeline.core.launch import free_ports, tf_config
from tests.conftest import REPO, lm_config, run_driver, write_config
from tests.export.fresh_process import serve

# === Several workers (MultiWorkerMirroredStrategy on loopback) ===


def start_workers(config, run_dir, count: int, *overrides: str, logs: Path) -> list[subprocess.Popen]:
    """`count` processes of the same `run` command, each with its worker's TF_CONFIG: how a cluster manager
    starts them (one pod or Slurm task each); output to logs/worker<i>.log."""
    ports = free_ports(count)
    sets = [arg for value in ("distribute.strategy=multi_worker", *overrides) for arg in ("--set", value)]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", str(config), "--run-dir", str(run_dir), *sets],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CONFIG": tf_config(ports, i)},
            stdout=open(logs / f"worker{i}.log", "w"),
            stderr=subprocess.STDOUT,
        )
        for i in range(count)
    ]


def wait_for_checkpoint(checkpoints: Path, procs, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(checkpoints.glob("*.index")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no checkpoint appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_local_workers_solve_cartpole_and_export_a_servable_policy(tmp_path):
    run = tmp_path / "run"
    result = run_driver(
        "launch",
        "--workers",
        "2",
        REPO / "configs" / "cartpole.yaml",
        "--run-dir",
        run,
        "--set",
        "train.stop_at_return=475",
        "--set",
        "train.total_env_steps=150000",
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "[worker 0]" in result.stdout and "[worker 1]" in result.stdout
    assert "worker 1 of 2" in result.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train.solved"] and metrics["eval.mean_return"] >= 475, metrics
    assert not (run / "workers").exists()  # the other worker's scratch folder is gone
    report, (answer,) = serve(
        run / "export" / "cartpole_v1" / "1",
        [{"inputs": {"observations": [[0.0, 0.0, 0.05, 0.0], [0.0, 0.0, -0.05, 0.0]]}}],
        tmp_path,
    )
    assert list(answer["action"]) == [1, 0]  # a pole leaning right is pushed right, and left left


def test_sigterm_stops_every_worker_after_one_checkpoint_a_killed_worker_stops_the_other_and_reruns_continue(tmp_path):
    """A preempted pod (SIGTERM to one worker), then a lost one (kill -9), then the run finished by one process:
    resumed on another worker count, exported."""
    config = write_config(tmp_path / "c.yaml", {"train": {"total_env_steps": 10**6}})
    run = tmp_path / "run"
    procs = start_workers(config, run, 2, logs=tmp_path)
    wait_for_checkpoint(run / "checkpoints", procs)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=60) for p in procs] == [143, 143]
    stopped = [
        re.search(r"stopped by SIGTERM in train at (\d+) env steps", (tmp_path / f"worker{i}.log").read_text())
        for i in range(2)
    ]
    assert stopped[0] and stopped[1] and stopped[0].group(1) == stopped[1].group(1)  # the same step on both
    steps = int(stopped[0].group(1))
    assert (run / "checkpoints" / f"ckpt-{steps}.index").is_file()
    assert not (run / "export").exists()
    # The same commands again: both resume from that checkpoint; then worker 1 is killed outright.
    procs = start_workers(config, run, 2, logs=tmp_path)
    deadline = time.monotonic() + 120
    while len(list((run / "checkpoints").glob("*.index"))) < 2 or not list(
        p for p in (run / "checkpoints").glob("ckpt-*.index") if int(p.stem.split("-")[1]) > steps
    ):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "no new checkpoint appeared"
        time.sleep(0.1)
    assert f"({steps} env steps)" in (tmp_path / "worker1.log").read_text()  # resumed, not started over
    procs[1].kill()
    killed_at = time.monotonic()
    assert procs[0].wait(timeout=60) == 1
    assert time.monotonic() - killed_at < 30
    assert "another worker of this run stopped or cannot be reached" in (tmp_path / "worker0.log").read_text()
    assert not (run / "export").exists()
    # One process finishes the run from the last checkpoint the two workers wrote (another replica count).
    last = max(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("ckpt-*.index"))
    assert last > steps
    result = run_driver(
        "run",
        config,
        "--run-dir",
        run,
        "--set",
        "distribute.strategy=none",
        "--set",
        f"train.total_env_steps={last + 512}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"({last} env steps)" in result.stderr and "replicas" not in result.stderr
    assert json.loads((run / "metrics.json").read_text())["train.env_steps"] == last + 512
    assert (run / "export" / "cartpole_v1" / "1" / "saved_model.pb").is_file()
    assert not (run / "workers").exists()


def test_lm_on_two_workers_stops_together_on_sigterm_resumes_and_exports_a_servable_policy(tmp_path):
    """The LM demo against a learned reward model, shortened, on 2 workers: data-parallel SFT, reward model (on
    the pairs the chief ranked) and PPO, each worker sampling half the prompts; a preempted pod stops both after
    one checkpoint, the same launch resumes and exports, and one process takes the run on."""
    config = lm_config(
        tmp_path,
        reward={"kind": "learned", "pairs": 64, "epochs": 1, "jit_compile": False},
        iterations=8,
        checkpoint_every=2,
    )
    run = tmp_path / "run"
    sets = ("sft.epochs=2",)
    procs = start_workers(config, run, 2, *sets, logs=tmp_path)
    wait_for_checkpoint(run / "checkpoints" / "ppo", procs)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=60) for p in procs] == [143, 143]
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    stopped = [re.search(r"stopped by SIGTERM in ppo at iteration (\d+)", log) for log in logs]
    assert stopped[0] and stopped[1] and stopped[0].group(1) == stopped[1].group(1), logs[0][-3000:]
    iteration = int(stopped[0].group(1))
    assert iteration < 8 and (run / "checkpoints" / "ppo" / f"ckpt-{iteration}.index").is_file()
    assert "worker 1 of 2" in logs[1] and not (run / "export").exists()

    result = run_driver(
        "launch", "--workers", "2", config, "--run-dir", run, *(arg for value in sets for arg in ("--set", value))
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # Both workers took the SFT and reward models the first run saved, and resumed PPO where both stopped.
    assert result.stdout.count("sft: restored") == 2 and result.stdout.count("reward: restored") == 2
    assert result.stdout.count(f"(iteration {iteration})") == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ppo.iterations"] == 8 and metrics["reward.steps"] > 0 and 0 <= metrics["reward.pair_accuracy"] <= 1
    assert not (run / "workers").exists()
    report, (answer,) = serve(
        run / "export" / "lm_policy" / "1",
        [{"inputs": {"prompts": ["the cat", "a dog"], "temperature": 0.0}}],
        tmp_path,
    )
    assert len(answer["completions"]) == 2
    # One process (no strategy) takes the run on from the workers' checkpoints: SFT, reward model and PPO.
    result = run_driver(
        "run",
        config,
        "--run-dir",
        run,
        "--set",
        "distribute.strategy=none",
        "--set",
        "ppo.iterations=10",
        *(arg for value in sets for arg in ("--set", value)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sft: restored" in result.stderr and "reward: restored" in result.stderr
    assert "(iteration 8)" in result.stderr and "replicas" not in result.stderr
    assert json.loads((run / "metrics.json").read_text())["ppo.iterations"] == 10
    assert (run / "export" / "lm_policy" / "2" / "saved_model.pb").is_file()


def test_preference_pairs_the_chief_cannot_build_stop_every_worker_with_the_config_error(tmp_path):
    """Only the chief ranks SFT samples into pairs; a reward function that ties every pair stops both workers
    with the chief's config error (the other does not wait for pairs that never come)."""
    config = lm_config(
        tmp_path, reward={"kind": "learned", "pairs": 16, "function": "tests.lm_rewards:the_same_for_all"}
    )
    result = run_driver(
        "launch", "--workers", "2", config, "--run-dir", tmp_path / "run", "--set", "sft.epochs=1", timeout=300
    )
    assert result.returncode == 2, result.stdout[-3000:]
    assert "[worker 0]" in result.stdout and "fewer than 2 untied pairs" in result.stdout, result.stdout[-3000:]
    assert "the chief (worker 0) could not build or read the preference pairs" in result.stdout
    assert not (tmp_path / "run" / "checkpoints" / "reward").exists()
