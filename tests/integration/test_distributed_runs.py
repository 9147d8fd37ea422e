"""Data-parallel runs through the driver (issue 14): the same command, a distribute section in the config."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import run_driver, write_config
from tests.export.fresh_process import serve


def test_a_mirrored_run_exports_a_servable_policy_and_resumes_on_one_device(tmp_path):
    config = write_config(tmp_path / "mirrored.yaml", {"distribute": {"strategy": "mirrored", "cpu_replicas": 2},
                                                        "train": {"total_env_steps": 512}})
    run = tmp_path / "run"
    result = run_driver("run", config, "--run-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy, 2 replicas" in result.stderr
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
