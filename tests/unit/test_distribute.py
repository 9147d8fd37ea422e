"""Data parallelism: R replicas take the update steps one device takes (issue 14's equivalence)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline import config, distribute, envs
from pipeline.launch import free_ports, tf_config
from pipeline.ppo import PPOLearner
from pipeline.rollout import Collector
from tests.conftest import REPO
from tests.distributed_update import train

# Minibatches (shuffled), observation normalisation and a gradient clip that binds: the three places where
# replicas drift from one device unless statistics and norms are global (../shared/STACK.md).
SETTINGS = {"env": {"num_envs": 4, "seed": 3},
            "model": {"actor_layers": [16], "value_layers": [16]},
            "train": {"rollout_steps": 16, "num_epochs": 3, "num_minibatches": 2, "learning_rate": 3e-3,
                      "max_grad_norm": 0.05, "normalize_observations": True}}


def one_device_and_rollout(tmp_path):
    cfg = config.from_dict(SETTINGS)
    env = envs.make_vector_env(cfg.env)
    rollout = Collector(env, PPOLearner(cfg, envs.spaces_of(env)), 1.0, envs.episode_seeds(0, 4)).collect(16)
    np.savez(tmp_path / "rollout.npz", **rollout.arrays())
    return cfg, train(cfg, rollout.arrays(), updates=2)


def updated_elsewhere(tmp_path, distribute_settings: dict, workers: int = 1) -> list[dict]:
    """tests.distributed_update's results, from `workers` processes (a cluster on loopback when more than one)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**SETTINGS, "distribute": distribute_settings}))
    ports = free_ports(workers)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_update", str(tmp_path / "config.yaml"), str(tmp_path / "rollout.npz"),
         str(tmp_path / f"out{i}.npz"), "2"], cwd=REPO,
        env={**os.environ, **({"TF_CONFIG": tf_config(ports, i)} if workers > 1 else {})}) for i in range(workers)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [dict(np.load(tmp_path / f"out{i}.npz")) for i in range(workers)]


@pytest.mark.parametrize("workers, settings, replica_devices", [
    (1, {"strategy": "mirrored", "cpu_replicas": 2}, ["CPU:0", "CPU:1"]),  # one host: a copy on each replica
    (2, {"strategy": "multi_worker"}, ["CPU:0"]),                          # two workers on loopback, one CPU each
], ids=["mirrored-2-replicas", "multi-worker-2-workers"])
def test_replicas_take_the_steps_one_device_takes(tmp_path, workers, settings, replica_devices):
    cfg, one_device = one_device_and_rollout(tmp_path)
    results = updated_elsewhere(tmp_path, settings, workers)
    assert int(one_device.pop("replicas")) == 1 and list(one_device.pop("devices")) == ["CPU:0"]
    for replicated in results:
        assert int(replicated.pop("replicas")) == 2
        assert list(replicated.pop("devices")) == replica_devices
    replicated = results[0]
    assert replicated.keys() == one_device.keys()
    assert any(k.startswith("norm_") for k in one_device)
    assert one_device["stat_grad_norm"] > SETTINGS["train"]["max_grad_norm"]  # the clip bound every step
    assert one_device["stat_n_updates"] == 2 * 3 * 2
    moved = [np.abs(v - w).max() for v, w in zip(
        (one_device[k] for k in sorted(one_device) if k.startswith("var_")),
        PPOLearner(cfg, envs.spaces_of(envs.make_vector_env(cfg.env))).variables_to_train)]
    assert max(moved) > 1e-3  # the updates changed the weights: equal results are not both untouched
    for key, value in one_device.items():
        np.testing.assert_allclose(replicated[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    for other in results[1:]:  # every worker holds the same weights afterwards
        for key, value in replicated.items():
            np.testing.assert_array_equal(other[key], value, err_msg=key)


def test_auto_picks_one_device_without_a_cluster_or_gpus(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.chosen(config.DistributeConfig()) == "none"
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                    '"task": {"type": "worker", "index": 0}}')
    assert distribute.chosen(config.DistributeConfig()) == "multi_worker"
    assert distribute.chosen(config.DistributeConfig(strategy="none")) == "none"


def test_a_minibatch_that_does_not_split_over_the_replicas_is_a_config_error():
    cfg = config.from_dict({**SETTINGS, "train": {**SETTINGS["train"], "rollout_steps": 15, "num_minibatches": 4}})
    strategy = type("TwoReplicas", (), {"num_replicas_in_sync": 2})()
    with pytest.raises(config.ConfigError, match="train.num_minibatches: minibatches of 15 rows do not split"):
        PPOLearner(cfg, envs.spaces_of(envs.make_vector_env(cfg.env)), strategy)
