"""Bring your own environment: a class defined in this file, not registered with gymnasium, named in the config as
`module:Class` with constructor arguments in `env.kwargs`, trained through the driver; and the errors a wrong one
gets before any work."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np

from tests.conftest import run_driver, write_config


class WalkToTheGoal(gym.Env):
    """Start at 0, step left or right; the goal is `length` steps to the right. -1 per step: the best return is
    -length, and a policy that does not move right every time does worse."""

    def __init__(self, length: int = 10):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def _observation(self):
        return np.array([self.position / self.length], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        return self._observation(), -1.0, self.position == self.length, False, {}


def test_a_custom_environment_class_with_constructor_arguments_learns(tmp_path):
    cfg = write_config(
        tmp_path / "walk.yaml",
        {
            "env": {
                "id": "tests.integration.test_custom_env:WalkToTheGoal",
                "kwargs": {"length": 4},
                "max_episode_steps": 40,
            },
            "train": {
                "total_env_steps": 30_000,
                "learning_rate": 0.003,
                "stop_at_return": -4.0,
                "checkpoint_every": 10,
            },
            "evaluate": {"episodes": 3},
        },
    )
    run = tmp_path / "run"
    result = run_driver("run", cfg, "--run-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "eval.video" not in metrics and not (run / "videos").exists()  # it cannot render: no video, no error
    # -4 is only reachable with length 4 (the constructor's default, 10, would give -10 at best): kwargs arrived.
    assert metrics["eval.mean_return"] == -4.0, metrics
    again = run_driver("evaluate", run)  # the run directory remembers how to make it
    assert again.returncode == 0 and json.loads((run / "metrics.json").read_text())["eval.mean_return"] == -4.0


class TupleActions(WalkToTheGoal):
    """A Tuple action space: not one the pipeline learns on."""

    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.Tuple([gym.spaces.Discrete(2)] * 2)


def test_a_wrong_environment_is_a_config_error_before_work(tmp_path):
    for env, expected in (
        ({"id": "tests.integration.test_custom_env:NoSuchEnv"}, "env.id: cannot make"),
        ({"id": "tests.nowhere:WalkToTheGoal"}, "env.id: cannot import 'tests.nowhere'"),
        ({"id": "CartPole-v1", "kwargs": {"lenght": 3}}, "env.kwargs: 'CartPole-v1' cannot take {'lenght': 3}"),
        ({"id": "tests.integration.test_custom_env:WalkToTheGoal", "kwargs": [3]}, "env.kwargs: expected a mapping"),
        ({"id": "tests.integration.test_custom_env:TupleActions"}, "has action space Tuple(Discrete(2), Discrete(2))"),
    ):
        result = run_driver("check", write_config(tmp_path / "bad.yaml", {"env": env}))
        assert result.returncode == 2 and expected in result.stderr, (env, result.stderr[-2000:])
