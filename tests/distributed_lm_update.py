"""LM PPO updates on saved samples under a tf.distribute strategy, in a process of their own (as
tests.distributed_update for the gym learner):

    python -m tests.distributed_lm_update CONFIG.yaml SAMPLES.npz OUT.npz UPDATES

CONFIG.yaml is an lm config: its model section sizes a from-scratch GPT-2 (built under the strategy, as the SFT
stage builds it), its ppo section the learner, its distribute section the strategy. SAMPLES.npz holds sampled
sequences, their response mask, scores and prompt lengths. With several replicas a `step` is taken first (and
undone); with several workers each takes its share of the samples and gathers them back. OUT.npz holds the trained
variables (var_*), the optimizer's (opt_*), the last update's statistics (stat_*), the replica count, the devices
holding the variables and optimizer slots, and with several replicas the step's sequences, scores, weights
(step_var_*) and KL coefficient. Then a reward model trains one epoch on seeded preference pairs that only the chief
holds and broadcasts, as the reward stage does: its variables (rm_var_*), Adam's (rm_opt_*), its losses (rm_loss),
how far its variables moved (rm_moved) and the pairs each worker trained on (rm_pairs).
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

import pipeline  # noqa: F401  (TensorFlow's environment first)

VOCABULARY = 16


def new_lm(cfg, strategy=None):
    """A from-scratch GPT-2 the config's model section sizes, built under the strategy as the SFT stage builds it."""
    from models import lm as lm_lib

    m = cfg.model
    size = lm_lib.LMSize(
        vocabulary_size=VOCABULARY,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        hidden_dim=m.hidden_dim,
        intermediate_dim=m.intermediate_dim,
        max_sequence_length=m.max_sequence_length,
    )
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return lm_lib.build_causal_lm(size, seed=0)


def learner_for(cfg, strategy=None):
    from pipeline.lm.ppo import LMPPOLearner
    from pipeline.lm.stages.ppo import adapters

    lm = new_lm(cfg, strategy)
    return LMPPOLearner(lm, cfg.ppo, eos_id=VOCABULARY - 1, seed=0, adapters=adapters(cfg), strategy=strategy)


def train(cfg, samples: dict, updates: int, strategy=None, scratch: str = "") -> dict:
    """With several replicas, first one `step` on the new weights (each replica sampling and scoring its share),
    then its changes undone from a checkpoint (scratch: where), then the updates on the samples."""
    from pipeline.core import devices, distribute
    from pipeline.lm.rewards import Scores

    learner = learner_for(cfg, strategy)
    out = {}
    if learner.replicas > 1:
        before = learner.checkpoint().write(f"{scratch}-{learner.worker}")
        prompts = samples["sequences"][:, : int(samples["prompt_lengths"].min())]
        step_stats, sequences, scores = learner.step(prompts, lambda rows, r: Scores.of((r == 5).mean(axis=1), "fives"))
        out.update(
            step_sequences=sequences,
            step_scores=scores.total,
            kl_coef=np.asarray(float(learner.kl_coef)),
            **{f"step_var_{i}": v.numpy() for i, v in enumerate(learner.variables)},
        )
        learner.checkpoint().read(before).assert_existing_objects_matched()
    if learner.workers > 1:  # this worker's share of the samples, gathered back into the whole batch
        share = len(samples["sequences"]) // learner.workers
        mine = {k: v[learner.worker * share : (learner.worker + 1) * share] for k, v in samples.items()}
        gathered = distribute.gather(strategy, mine, {k: 0 for k in mine})
        for k, v in samples.items():
            np.testing.assert_array_equal(gathered[k], v, err_msg=k)
    for _ in range(updates):
        stats = learner.update(samples["sequences"], samples["mask"], samples["scores"], samples["prompt_lengths"])
    return {
        **out,
        **{f"var_{i}": v.numpy() for i, v in enumerate(learner.variables)},
        **{f"opt_{i}": v.numpy() for i, v in enumerate(learner.optimizer.variables)},
        **{f"stat_{k.replace('/', ':')}": np.asarray(v) for k, v in stats.items()},
        "replicas": np.asarray(learner.replicas),
        "devices": np.asarray(devices.variable_devices(learner.variables + learner.optimizer.variables)),
    }


def reward_pairs():
    """Eight seeded pairs of ten tokens, their masks of different lengths."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(4, 11, size=8)
    mask = (np.arange(10)[None, :] < lengths[:, None]).astype(np.int32)
    return {
        "chosen_ids": rng.integers(0, VOCABULARY, (8, 10)).astype(np.int32),
        "chosen_mask": mask,
        "rejected_ids": rng.integers(0, VOCABULARY, (8, 10)).astype(np.int32),
        "rejected_mask": mask[::-1].copy(),
    }


def train_reward(cfg, strategy=None) -> dict:
    """One epoch of 2 steps (batch 4, a clip that binds) of a reward model copied from a new GPT-2."""
    from models import reward_model as rm_lib
    from pipeline.core import distribute
    from pipeline.lm.preferences import PreferencePairs
    from pipeline.lm.reward_training import RewardTrainer

    lm = new_lm(cfg, strategy)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = rm_lib.from_sft(lm, seed=0)
    trainer = RewardTrainer(model, learning_rate=3e-3, max_grad_norm=0.05, jit_compile=True, strategy=strategy)
    chief = distribute.worker(strategy).index == 0
    mine = reward_pairs() if chief else {k: np.zeros([0, 0], np.int32) for k in reward_pairs()}
    pairs = distribute.broadcast(strategy, mine)
    initial = [v.numpy() for v in model.trainable_variables]
    losses = trainer.train_epoch(PreferencePairs(**pairs), batch_size=4, seed=0)
    return {
        **{f"rm_var_{i}": v.numpy() for i, v in enumerate(model.trainable_variables)},
        **{f"rm_opt_{i}": v.numpy() for i, v in enumerate(trainer.optimizer.variables)},
        "rm_loss": np.asarray(losses),
        "rm_moved": np.asarray(max(np.abs(v.numpy() - w).max() for v, w in zip(model.trainable_variables, initial))),
        "rm_pairs": np.stack([pairs[k] for k in sorted(pairs)]),
    }


def main(config_path: str, samples_path: str, out_path: str, updates: str) -> None:
    from pipeline.core import config, distribute

    cfg = config.load(config_path)
    strategy = distribute.strategy(cfg.distribute)  # before TensorFlow's first op
    np.savez(
        out_path,
        **train(cfg, dict(np.load(samples_path)), int(updates), strategy, scratch=out_path + ".ckpt"),
        **train_reward(cfg, strategy),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
