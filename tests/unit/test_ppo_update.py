"""The epochs x minibatches loop: every step by default; target_kl stops it before the step that would exceed it."""

from __future__ import annotations

import numpy as np

from pipeline.core import config
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.rollout import Collector
from pipeline.gym.spaces import spaces_of


def update(target_kl, **train):
    cfg = config.from_dict(
        {
            "env": {"num_envs": 4},
            "model": {"actor_layers": [16], "value_layers": [16]},
            "train": {
                "rollout_steps": 16,
                "num_epochs": 5,
                "num_minibatches": 4,
                "learning_rate": 3e-3,
                "target_kl": target_kl,
                **train,
            },
        }
    )
    env = envs.make_vector_env(cfg.env)
    learner = PPOLearner(cfg, spaces_of(env))
    rollout = Collector(env, learner, 1.0, envs.episode_seeds(0, 4)).collect(16)
    stats, _ = learner.train_on_rollout(rollout.arrays())
    return {k: float(v) for k, v in stats.items()}, [v.numpy() for v in learner.variables_to_train]


def test_every_epoch_and_minibatch_runs_without_target_kl():
    stats, _ = update(target_kl=None)
    assert stats["n_updates"] == 5 * 4


def test_target_kl_stops_before_the_step_that_exceeds_it():
    # The first minibatch is scored with the rollout's own policy (KL 0): its step is taken; after one step at
    # lr 3e-3 the next minibatch's KL is far above 1.5e-12, so the loop stops there.
    stats, _ = update(target_kl=1e-12)
    assert stats["n_updates"] == 1
    assert stats["clip_fraction"] == 0.0  # the statistics are of that one step: every ratio was exactly 1
    assert stats["approx_kl"] > 1.5e-12


def test_a_target_kl_never_reached_changes_nothing():
    (stats, variables), (stats_off, variables_off) = update(target_kl=1e6), update(target_kl=None)
    assert stats["n_updates"] == stats_off["n_updates"] == 20
    for a, b in zip(variables, variables_off):
        np.testing.assert_array_equal(a, b)


def test_advantages_whitened_per_minibatch_have_zero_mean_in_each_minibatch():
    # target_kl stops the loop after the first step (above): its statistics are that minibatch's alone. Every ratio
    # is 1 there, so the policy-gradient loss is minus the minibatch's mean advantage: zero when each minibatch is
    # whitened (SB3, CleanRL), a 16-row share of the rollout's whitened advantages otherwise.
    per_minibatch, _ = update(target_kl=1e-12, advantage_whitening="minibatch")
    per_rollout, _ = update(target_kl=1e-12)
    assert per_minibatch["n_updates"] == per_rollout["n_updates"] == 1
    assert abs(per_minibatch["policy_gradient_loss"]) < 1e-5
    assert abs(per_rollout["policy_gradient_loss"]) > 1e-3
