"""PPO updates on a saved rollout under a tf.distribute strategy, in a process of their own: splitting the CPU into
logical devices is fixed when TensorFlow starts, so the replicas cannot share the test process.

    python -m tests.distributed_update CONFIG.yaml ROLLOUT.npz OUT.npz UPDATES

The config's distribute section picks the strategy; with TF_CONFIG naming a cluster, each worker takes its share
of the rollout's environments and gathers the whole rollout back, as the train stage does. OUT.npz holds the
trained variables (var_0, var_1, ...), the observation normaliser's variables (norm_0, ...), the last update's
statistics (stat_<name>), the replica count and the devices holding the variables and optimizer slots.
"""

from __future__ import annotations

import sys

import numpy as np

import pipeline  # noqa: F401  (TensorFlow's environment first)


def train(cfg, rollout: dict, updates: int, strategy=None) -> dict:
    """What the updates leave behind, as OUT.npz's arrays."""
    from pipeline.core import devices
    from pipeline.gym import envs
    from pipeline.gym.ppo import PPOLearner
    from pipeline.gym.spaces import spaces_of

    learner = PPOLearner(cfg, spaces_of(envs.make_vector_env(cfg.env)), strategy)
    if learner.workers > 1:  # this worker's environments, gathered back into the whole rollout
        share = cfg.env.num_envs // learner.workers
        mine = {
            k: np.take(
                v,
                range(learner.worker * share, (learner.worker + 1) * share),
                axis=0 if k == "next_observations" else 1,
            )
            for k, v in rollout.items()
        }
        gathered = learner.gather(mine)
        for k, v in rollout.items():
            np.testing.assert_array_equal(gathered[k], v, err_msg=k)
    for _ in range(updates):
        stats, _ = learner.train_on_rollout(rollout)
    normaliser = learner.agent._observation_normalizer
    return {
        **{f"var_{i}": v.numpy() for i, v in enumerate(learner.variables_to_train)},
        **{f"norm_{i}": v.numpy() for i, v in enumerate(normaliser.variables if normaliser else [])},
        **{f"stat_{k}": np.asarray(v) for k, v in stats.items()},
        **{
            f"scaler_{i}": v.numpy()
            for i, v in enumerate(learner.reward_scaler.variables if learner.reward_scaler else [])
        },
        "replicas": np.asarray(learner.replicas),
        "devices": np.asarray(devices.variable_devices(learner.variables_to_train + learner.optimizer.variables)),
    }


def main(config_path: str, rollout_path: str, out_path: str, updates: str) -> None:
    from pipeline.core import config, distribute

    cfg = config.load(config_path)
    strategy = distribute.strategy(cfg.distribute)  # before TensorFlow's first op
    rollout = dict(np.load(rollout_path))
    np.savez(out_path, **train(cfg, rollout, int(updates), strategy))


if __name__ == "__main__":
    main(*sys.argv[1:])
