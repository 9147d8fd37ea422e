"""A run directory made before the code was reorganised into pipeline/core, gym and lm (issue 23) resumes,
evaluates and exports with today's code: tests/data/old_runs holds one of each task, written by the code of that
time (see its README.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import REPO, run_driver

OLD = REPO / "tests" / "data" / "old_runs"


def _copy(tmp_path: Path, name: str) -> Path:
    shutil.copytree(OLD / name, tmp_path / name)
    shutil.copy(OLD / "corpus.txt", tmp_path)  # the lm run's data.corpus, relative to where the run starts
    return tmp_path / name


def test_an_old_gym_run_resumes_trains_on_and_exports(tmp_path):
    run = _copy(tmp_path, "gym_run")
    result = run_driver(
        "run", run / "config.yaml", "--run-dir", run, "--set", "train.total_env_steps=1536", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stderr and "ckpt-1024" in result.stderr, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train.env_steps"] == 1536 and metrics["train.iterations"] == 12
    assert (Path(metrics["export.path"]) / "saved_model.pb").is_file() and metrics["export.version"] == 1
    evaluated = run_driver("evaluate", run, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]


def test_an_old_lm_run_resumes_trains_on_and_exports(tmp_path):
    run = _copy(tmp_path, "lm_run")
    result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", "ppo.iterations=6", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sft: restored" in result.stderr and "not training again" in result.stderr, result.stderr[-3000:]
    assert "ppo: resumed from" in result.stderr and "(iteration 4)" in result.stderr, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ppo.iterations"] == 6 and metrics["export.version"] == 1
    assert (Path(metrics["export.path"]) / "saved_model.pb").is_file()
    status = run_driver("status", run, "--json", cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["progress"] == {"iterations": 6, "of": 6}
