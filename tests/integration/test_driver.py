"""The driver's other commands on an existing run directory, and its exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, run_driver


def test_evaluate_an_existing_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = json.loads((run / "metrics.json").read_text())
    result = run_driver("evaluate", run)
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads((run / "metrics.json").read_text())
    # Same checkpoint, same evaluation seeds: the greedy evaluation is repeatable.
    assert after["eval.mean_return"] == before["eval.mean_return"]
    assert after["train.env_steps"] == before["train.env_steps"]
    assert "run directory:" in result.stdout


def test_commands_on_a_directory_that_is_not_a_run(tmp_path):
    for command in ("evaluate", "export"):
        result = run_driver(command, tmp_path / "nothing")
        assert result.returncode == 2 and "not a run directory" in result.stderr


def test_resuming_with_a_different_model_is_refused(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", "model.actor_layers=[32]")
    assert result.returncode == 2 and "model" in result.stderr and "new --run-dir" in result.stderr


def test_check_validates_and_prints_every_key_documented(tmp_path):
    from pipeline.core import config

    for name, overrides in (("cartpole.yaml", ["train.target_kl=0.02"]), ("lm_sentiment.yaml", ["ppo.top_k=20"])):
        sets = [arg for o in overrides for arg in ("--set", o)]
        result = run_driver("check", REPO / "configs" / name, *sets, cwd=tmp_path)  # `run` would write runs/ here
        assert result.returncode == 0, result.stderr[-3000:]
        # Valid YAML that loads back to the same resolved config; each key carries its documentation.
        assert config.from_dict(yaml.safe_load(result.stdout)) == config.load(REPO / "configs" / name, overrides)
        keys = [line for line in result.stdout.splitlines() if line.startswith("  ")]
        assert len(keys) > 20 and all("  # " in line for line in keys)
        assert not list(tmp_path.iterdir()), "check wrote files"
    assert "[one of constant, linear]" in run_driver("check", REPO / "configs" / "cartpole.yaml").stdout
    bad = run_driver("check", REPO / "configs" / "cartpole.yaml", "--set", "train.lr_schedule=cosine")
    assert bad.returncode == 2 and "train.lr_schedule" in bad.stderr and "constant, linear" in bad.stderr


def test_the_installed_package_runs_from_any_folder(tmp_path):
    """`make setup` installs the project into the venv: the module and the console command work without the
    repository on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command in ([sys.executable, "-m", "pipeline"], [str(Path(sys.executable).with_name("ppo-pipeline"))]):
        result = subprocess.run(
            [*command, "check", str(REPO / "configs" / "cartpole.yaml")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and result.stdout.startswith("task: gym"), (command, result.stderr[-2000:])


def test_tensorflow_logs_stay_off_the_console_unless_asked_for(tiny_run, tmp_path):
    """A successful command prints nothing that looks like an error (TensorFlow's start-up lines: `E0000 ...
    failed call to cuInit`, absl's `WARNING: All log messages before ...`); --verbose shows them again."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    quiet = run_driver("evaluate", run, env=env)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    tensorflow_lines = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)
    assert not tensorflow_lines.search(quiet.stderr), quiet.stderr[-3000:]
    assert not re.search(r"\b(ERROR|Error|error)\b", quiet.stderr), quiet.stderr[-3000:]
    assert "eval" not in quiet.stderr or "INFO" in quiet.stderr  # our own log lines still show
    loud = run_driver("evaluate", run, "--verbose", env=env)
    assert loud.returncode == 0 and tensorflow_lines.search(loud.stderr), loud.stderr[-3000:]
