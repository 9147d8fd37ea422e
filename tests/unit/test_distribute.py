"""Data parallelism: R replicas take the update steps one device takes (issue 14's equivalence)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.core import config, distribute
from pipeline.core.launch import free_ports, tf_config
from pipeline.core.sections import DistributeConfig
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner, check_split
from pipeline.gym.rollout import Collector
from pipeline.gym.spaces import spaces_of
from tests.conftest import REPO
from tests.distributed_update import train

# Minibatches (shuffled), observation and reward normalisation and a gradient clip that binds: the places where
# replicas drift from one device unless statistics and norms are global (../shared/STACK.md).
SETTINGS = {
    "env": {"num_envs": 4, "seed": 3},
    "model": {"actor_layers": [16], "value_layers": [16]},
    "train": {
        "rollout_steps": 16,
        "num_epochs": 3,
        "num_minibatches": 2,
        "learning_rate": 3e-3,
        "max_grad_norm": 0.05,
        "normalize_observations": True,
        "normalize_rewards": True,
    },
}


# The same on 12x12 RGB frames through a small CNN (no normaliser: pixels are never normalised).
PIXELS = {
    **SETTINGS,
    "env": {**SETTINGS["env"], "id": "tests.corridor:Corridor", "kwargs": {"observation": "pixels"}},
    "model": {**SETTINGS["model"], "cnn": [[8, 4, 2], [8, 3, 1]], "cnn_dense": 16},
}


def one_device_and_rollout(tmp_path, settings=SETTINGS):
    cfg = config.from_dict(settings)
    env = envs.make_vector_env(cfg.env)
    rollout = Collector(env, PPOLearner(cfg, spaces_of(env)), 1.0, envs.episode_seeds(0, 4)).collect(16)
    np.savez(tmp_path / "rollout.npz", **rollout.arrays())
    return cfg, train(cfg, rollout.arrays(), updates=2)


def updated_elsewhere(tmp_path, distribute_settings: dict, workers: int = 1, settings=SETTINGS) -> list[dict]:
    """tests.distributed_update's results, from `workers` processes (a cluster on loopback when more than one)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**settings, "distribute": distribute_settings}))
    ports = free_ports(workers)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distributed_update",
                str(tmp_path / "config.yaml"),
                str(tmp_path / "rollout.npz"),
                str(tmp_path / f"out{i}.npz"),
                "2",
            ],
            cwd=REPO,
            env={**os.environ, **({"TF_CONFIG": tf_config(ports, i)} if workers > 1 else {})},
        )
        for i in range(workers)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [dict(np.load(tmp_path / f"out{i}.npz")) for i in range(workers)]


@pytest.mark.parametrize(
    "workers, settings, replica_devices, task",
    [
        # one host: a copy on each replica
        (1, {"strategy": "mirrored", "cpu_replicas": 2}, ["CPU:0", "CPU:1"], SETTINGS),
        (2, {"strategy": "multi_worker"}, ["CPU:0"], SETTINGS),  # two workers on loopback, one CPU each
        (1, {"strategy": "mirrored", "cpu_replicas": 2}, ["CPU:0", "CPU:1"], PIXELS),
    ],
    ids=["mirrored-2-replicas", "multi-worker-2-workers", "mirrored-2-replicas-pixels"],
)
def test_replicas_take_the_steps_one_device_takes(tmp_path, workers, settings, replica_devices, task):
    cfg, one_device = one_device_and_rollout(tmp_path, task)
    results = updated_elsewhere(tmp_path, settings, workers, task)
    assert int(one_device.pop("replicas")) == 1 and list(one_device.pop("devices")) == ["CPU:0"]
    for replicated in results:
        assert int(replicated.pop("replicas")) == 2
        assert list(replicated.pop("devices")) == replica_devices
    replicated = results[0]
    assert replicated.keys() == one_device.keys()
    assert any(k.startswith("norm_") for k in one_device) is (task is SETTINGS)
    assert one_device["stat_grad_norm"] > SETTINGS["train"]["max_grad_norm"]  # the clip bound every step
    assert one_device["stat_n_updates"] == 2 * 3 * 2
    moved = [
        np.abs(v - w).max()
        for v, w in zip(
            (one_device[f"var_{i}"] for i in range(sum(k.startswith("var_") for k in one_device))),
            PPOLearner(cfg, spaces_of(envs.make_vector_env(cfg.env))).variables_to_train,
        )
    ]
    assert max(moved) > 1e-3  # the updates changed the weights: equal results are not both untouched
    for key, value in one_device.items():
        np.testing.assert_allclose(replicated[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    for other in results[1:]:  # every worker holds the same weights afterwards
        for key, value in replicated.items():
            np.testing.assert_array_equal(other[key], value, err_msg=key)


def test_auto_picks_one_device_without_a_cluster_or_gpus(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.chosen(DistributeConfig()) == "none"
    monkeypatch.setenv(
        "TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}'
    )
    assert distribute.chosen(DistributeConfig()) == "multi_worker"
    assert distribute.chosen(DistributeConfig(strategy="none")) == "none"


def test_a_minibatch_that_does_not_split_over_the_replicas_is_a_config_error():
    cfg = config.from_dict({**SETTINGS, "train": {**SETTINGS["train"], "rollout_steps": 15, "num_minibatches": 4}})
    strategy = type("TwoReplicas", (), {"num_replicas_in_sync": 2})()
    with pytest.raises(config.ConfigError, match="train.num_minibatches: minibatches of 15 rows do not split"):
        PPOLearner(cfg, spaces_of(envs.make_vector_env(cfg.env)), strategy)


def test_observation_statistics_updated_each_step_on_several_workers_is_a_config_error():
    """Each worker steps its own environments: per-step statistics would part the workers' normalisers."""
    cfg = config.from_dict({**SETTINGS, "train": {**SETTINGS["train"], "observation_stats": "step"}})
    check_split(cfg, workers=1, replicas=2)
    with pytest.raises(config.ConfigError, match="train.observation_stats: step would update 2 workers'"):
        check_split(cfg, workers=2, replicas=1)


# LM PPO: two minibatches, each cut into micro-batches per replica; whitened rewards, the adaptive KL coefficient,
# a clip that binds; top-k sampling (its kept sets ride along with the rollout); LoRA adapters on the policy and
# on a separate value model (made under the strategy's scope), XLA-compiled gradients. Then a reward model's epoch
# on pairs only the chief holds (tests.distributed_lm_update).
LM_SETTINGS = {
    "task": "lm",
    "data": {"sequence_length": 16, "prompt_tokens": 4},
    "model": {
        "num_layers": 2,
        "num_heads": 2,
        "hidden_dim": 32,
        "intermediate_dim": 64,
        "max_sequence_length": 16,
        "lora_rank": 2,
    },
    "ppo": {
        "batch_size": 8,
        "max_new_tokens": 6,
        "num_epochs": 2,
        "num_minibatches": 2,
        "top_k": 8,
        "gradient_accumulation_steps": 2,
        "learning_rate": 3e-3,
        "max_grad_norm": 0.05,
        "whiten_rewards": True,
        "adaptive_kl_target": 0.01,
        "value_model": "separate",
        "jit_generation": False,
        "jit_update": True,
    },
}


# GRPO with a KL term (its reference scored on the replicas) and clip-higher; loss_type grpo, whose means are per
# completion (bnpo's, per micro-batch, depend on how a minibatch is cut, as TRL's per-process means do).
GRPO_SETTINGS = {
    **LM_SETTINGS,
    "model": {k: v for k, v in LM_SETTINGS["model"].items() if k != "lora_rank"},
    "ppo": {
        **{
            k: v
            for k, v in LM_SETTINGS["ppo"].items()
            if k not in ("whiten_rewards", "adaptive_kl_target", "value_model")
        },
        "algorithm": "grpo",
        "jit_update": False,  # XLA under replicas: the PPO case above
        "num_generations": 4,
        "beta": 0.04,
        "clip_ratio_high": 0.28,
        "loss_type": "grpo",
    },
}


@pytest.fixture(scope="module")
def lm_one_device(tmp_path_factory):
    """(samples file, the updates' results on one device), made once for both strategies."""
    return one_device_lm_updates(tmp_path_factory, LM_SETTINGS)


def one_device_lm_updates(tmp_path_factory, settings: dict):
    from models import lm as lm_lib
    from tests.distributed_lm_update import VOCABULARY, learner_for, train_reward
    from tests.distributed_lm_update import train as train_lm

    cfg = config.from_dict(settings)
    rng = np.random.default_rng(0)
    prompt_lengths = np.array([4, 3, 4, 2, 4, 4, 3, 4], np.int32)
    prompts = rng.integers(0, VOCABULARY - 1, size=(8, 4)).astype(np.int32)
    learner = learner_for(cfg)
    sequences = learner.generate(prompts, prompt_lengths=prompt_lengths)
    responses = lm_lib.responses(sequences, prompt_lengths, cfg.ppo.max_new_tokens)
    samples = {
        "sequences": sequences,
        "mask": lm_lib.response_mask(responses, VOCABULARY - 1).numpy(),
        "scores": rng.normal(size=8).astype(np.float32),
        "prompt_lengths": prompt_lengths,
    }
    assert 0 < samples["mask"].sum() < samples["mask"].size  # some responses ended early: masks matter
    path = tmp_path_factory.mktemp("lm_samples") / "samples.npz"
    np.savez(path, **samples)
    initial = [v.numpy() for v in learner.variables]
    return path, {**train_lm(cfg, samples, updates=2), **train_reward(cfg)}, initial


def lm_updated_elsewhere(tmp_path, samples_path, settings: dict, workers: int, lm_settings=LM_SETTINGS) -> list[dict]:
    """tests.distributed_lm_update's results, from `workers` processes (a cluster on loopback when more than one)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**lm_settings, "distribute": settings}))
    ports = free_ports(workers)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.distributed_lm_update",
                str(tmp_path / "config.yaml"),
                str(samples_path),
                str(tmp_path / f"out{i}.npz"),
                "2",
            ],
            cwd=REPO,
            env={**os.environ, **({"TF_CONFIG": tf_config(ports, i)} if workers > 1 else {})},
        )
        for i in range(workers)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    return [dict(np.load(tmp_path / f"out{i}.npz")) for i in range(workers)]


def test_lm_replicas_take_the_steps_one_device_takes_and_each_samples_its_share(tmp_path, lm_one_device):
    """On 2 replicas of one host and on 2 workers on loopback (each run in processes of its own)."""
    samples_path, one_device, initial = lm_one_device
    one_device = dict(one_device)
    assert int(one_device.pop("replicas")) == 1 and list(one_device.pop("devices")) == ["CPU:0"]
    assert len(initial) == len([k for k in one_device if k.startswith("var_")])
    assert max(np.abs(one_device[f"var_{i}"] - v).max() for i, v in enumerate(initial)) > 1e-3  # the updates
    # changed the weights: equal results are not both untouched
    assert any(k.startswith("opt_") and np.abs(v).max() > 0 for k, v in one_device.items())  # Adam's moments:
    # they scale with the gradient, so a sum taken twice would show there even where Adam's step hides it
    # The reward model: both steps moved it (the pairs each worker trained on are the chief's, broadcast).
    assert one_device["rm_moved"] > 1e-3 and len(one_device["rm_loss"]) == 2
    steps = []
    for workers, settings, replica_devices in (
        (1, {"strategy": "mirrored", "cpu_replicas": 2}, ["CPU:0", "CPU:1"]),
        (2, {"strategy": "multi_worker"}, ["CPU:0"]),
    ):
        (tmp_path / str(workers)).mkdir()
        results = lm_updated_elsewhere(tmp_path / str(workers), samples_path, settings, workers)
        for replicated in results:
            assert int(replicated.pop("replicas")) == 2
            assert list(replicated.pop("devices")) == replica_devices
        replicated = results[0]
        for key, value in one_device.items():
            np.testing.assert_allclose(replicated[key], value, rtol=1e-5, atol=1e-5, err_msg=f"{settings}: {key}")
        for other in results[1:]:  # every worker holds the same batch and weights after a step of its own
            for key in (
                "step_sequences",
                "step_scores",
                "kl_coef",
                "rm_pairs",
                *(k for k in replicated if k.startswith(("step_var_", "rm_var_"))),
            ):
                np.testing.assert_array_equal(other[key], replicated[key], err_msg=key)
        assert len(replicated["step_sequences"]) == 8
        steps.append(replicated)
    # The step, on the new weights: replica r sampled and scored rows 4r..4r+3 on a stream of its own, the same on
    # one host's 2 replicas as on 2 workers (one replica sampling the whole batch would differ in the second half).
    mirrored, workers_ = steps
    np.testing.assert_array_equal(mirrored["step_sequences"], workers_["step_sequences"])
    np.testing.assert_array_equal(mirrored["step_scores"], workers_["step_scores"])
    for key in (k for k in mirrored if k.startswith("step_var_")):
        np.testing.assert_allclose(mirrored[key], workers_[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_grpo_on_two_replicas_takes_the_steps_one_device_takes(tmp_path, tmp_path_factory):
    samples_path, one_device, _ = one_device_lm_updates(tmp_path_factory, GRPO_SETTINGS)
    assert one_device["stat_kl"] > 0 and "stat_loss:value" not in one_device  # a KL term, no value model
    (replicated,) = lm_updated_elsewhere(
        tmp_path, samples_path, {"strategy": "mirrored", "cpu_replicas": 2}, 1, GRPO_SETTINGS
    )
    assert int(replicated.pop("replicas")) == 2
    for key, value in one_device.items():
        if key not in ("replicas", "devices"):
            np.testing.assert_allclose(replicated[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
