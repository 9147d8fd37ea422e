"""The Python API: configs from YAML, dicts or objects with the command line's checks; runs in this process (an
environment class defined here, not registered; two runs one after the other); the exported policy loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline.core import config as config_lib
from pipeline.gym.config import GymConfig, TrainConfig
from tests.conftest import REPO, TINY, run_driver, write_config
from tests.integration.test_custom_env import WalkToTheGoal


def test_configs_from_a_path_a_dict_or_objects_are_checked_as_the_command_line_checks(tmp_path):
    from_yaml = pipeline.load_config(REPO / "configs" / "cartpole.yaml", {"train.total_env_steps": 5000})
    assert from_yaml.train.total_env_steps == 5000 and from_yaml.env.id == "CartPole-v1"
    assert pipeline.load_config(from_yaml.to_dict()) == from_yaml == pipeline.load_config(from_yaml)
    assert pipeline.load_config().env.id == "CartPole-v1"
    built = GymConfig(train=TrainConfig(num_epochs=0))  # a dataclass skips the checks
    for source, overrides, expected in (
        (built, None, "train.num_epochs: 0 is out of range"),
        ({"train": {"total_steps": 1}}, None, "unknown key train.total_steps"),
        (None, {"train.lr_schedule": "cosine"}, "allowed values: constant, linear"),
        (None, {"total_env_steps": 1}, "section.key"),
        ({"task": "lm"}, {"ppo.top_k": -1}, "ppo.top_k"),
    ):
        with pytest.raises(config_lib.ConfigError, match=expected):
            pipeline.load_config(source, overrides)


def test_a_custom_environment_class_trains_in_this_process_and_its_policy_acts(tmp_path):
    cfg = pipeline.load_config(
        TINY,
        {
            "env.kwargs": {"length": 4},
            "env.max_episode_steps": 40,
            "train.total_env_steps": 30_000,
            "train.learning_rate": 0.003,
            "train.stop_at_return": -4.0,
        },
    )
    metrics = pipeline.run(cfg, tmp_path / "walk", env=WalkToTheGoal)
    assert metrics["eval.mean_return"] == -4.0  # only length 4 (env.kwargs) allows it; the default 10 does not
    # The run directory records how the environment is made: `evaluate` makes it again.
    assert (
        pipeline.load_config(tmp_path / "walk" / "config.yaml").env.id
        == "tests.integration.test_custom_env:WalkToTheGoal"
    )
    assert pipeline.evaluate(tmp_path / "walk")["eval.mean_return"] == -4.0
    policy = pipeline.load_policy(tmp_path / "walk")
    observations = np.array([[p / 4] for p in range(4)], np.float32)
    assert policy(observations).tolist() == [1, 1, 1, 1]  # walk right, from everywhere
    assert policy(observations[0]) == 1 and set(policy.outputs(observations)) >= {"action", "value", "logits"}


def test_an_environment_instance_is_run_from_its_spec_with_its_arguments(tmp_path):
    import gymnasium as gym

    instance = gym.make("CartPole-v1", sutton_barto_reward=True)  # reward 0 per step, -1 at the end
    metrics = pipeline.run(pipeline.load_config(TINY), tmp_path / "run", env=instance)
    recorded = pipeline.load_config(tmp_path / "run" / "config.yaml").env
    assert recorded.id == "CartPole-v1" and recorded.kwargs == {"sutton_barto_reward": True}
    assert metrics["eval.mean_return"] == -1.0  # the argument reached the environment (CartPole's own: > 0)
    with pytest.raises(TypeError, match="pass its class"):
        pipeline.run(pipeline.load_config(TINY), tmp_path / "other", env=WalkToTheGoal())


def test_two_runs_in_one_process_are_their_own_and_equal_the_command_lines(tmp_path):
    results = []
    for seed in (1, 2):
        cfg = pipeline.load_config(TINY, {"env.seed": seed})
        results.append(pipeline.run(cfg, tmp_path / f"seed{seed}"))
    cli = run_driver("run", write_config(tmp_path / "cli.yaml", {"env": {"seed": 2}}), "--run-dir", tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr[-3000:]
    from_cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    learned = [
        k
        for k in from_cli
        if k.startswith(("train.", "eval.")) and "seconds" not in k and "per_s" not in k and k != "eval.video"
    ]
    assert learned and {k: results[1][k] for k in learned} == {k: from_cli[k] for k in learned}
    assert Path(results[1]["eval.video"]).read_bytes() == Path(from_cli["eval.video"]).read_bytes()  # its own run's
    assert {k: results[0][k] for k in learned} != {k: results[1][k] for k in learned}


def test_the_old_config_module_still_answers():
    """Notebooks written before the reorganisation catch pipeline.config.ConfigError and build Config()."""
    import pipeline.config as old

    assert old.ConfigError is pipeline.ConfigError and old.Config is GymConfig
    with pytest.raises(pipeline.ConfigError, match="train.num_epochs"):
        old.from_dict({"train": {"num_epochs": 0}})
