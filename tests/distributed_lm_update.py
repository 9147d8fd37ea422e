"""LM PPO updates on saved samples under a tf.distribute strategy, in a process of their own (as
tests.distributed_update for the gym learner):

    python -m tests.distributed_lm_update CONFIG.yaml SAMPLES.npz OUT.npz UPDATES

CONFIG.yaml is an lm config: its model section sizes a from-scratch GPT-2 (built under the strategy, as the SFT
stage builds it), its ppo section the learner, its distribute section the strategy. SAMPLES.npz holds sampled
sequences, their response mask, scores and prompt lengths. With several workers each takes its share of the
samples and gathers them back, as `LMPPOLearner.step` does, and after the updates takes one `step` of its own.
OUT.npz holds the trained variables (var_*), the optimizer's (opt_*), the last update's statistics (stat_*), the
KL coefficient, the replica count, the devices holding the variables and optimizer slots, and with several workers the step's gathered sequences.
"""

from __future__ import annotations

import contextlib
import sys

import pipeline  # noqa: F401  (TensorFlow's environment first)
import numpy as np

VOCABULARY = 16


def learner_for(cfg, strategy=None):
    from models import lm as lm_lib
    from pipeline.lm.ppo import LMPPOLearner
    from pipeline.stages.lm_ppo import adapters

    m = cfg.model
    size = lm_lib.LMSize(vocabulary_size=VOCABULARY, num_layers=m.num_layers, num_heads=m.num_heads,
                         hidden_dim=m.hidden_dim, intermediate_dim=m.intermediate_dim,
                         max_sequence_length=m.max_sequence_length)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        lm = lm_lib.build_causal_lm(size, seed=0)
    return LMPPOLearner(lm, cfg.ppo, eos_id=VOCABULARY - 1, seed=0, adapters=adapters(cfg), strategy=strategy)


def train(cfg, samples: dict, updates: int, strategy=None) -> dict:
    from pipeline import devices, distribute

    learner = learner_for(cfg, strategy)
    if learner.workers > 1:  # this worker's share of the samples, gathered back into the whole batch
        share = len(samples["sequences"]) // learner.workers
        mine = {k: v[learner.worker * share:(learner.worker + 1) * share] for k, v in samples.items()}
        gathered = distribute.gather(strategy, mine, {k: 0 for k in mine})
        for k, v in samples.items():
            np.testing.assert_array_equal(gathered[k], v, err_msg=k)
    for _ in range(updates):
        stats = learner.update(samples["sequences"], samples["mask"], samples["scores"], samples["prompt_lengths"])
    out = {**{f"var_{i}": v.numpy() for i, v in enumerate(learner.variables)},
           **{f"opt_{i}": v.numpy() for i, v in enumerate(learner.optimizer.variables)},
           **{f"stat_{k.replace('/', ':')}": np.asarray(v) for k, v in stats.items()},
           "replicas": np.asarray(learner.replicas),
           "devices": np.asarray(devices.variable_devices(learner.variables + learner.optimizer.variables))}
    if learner.workers > 1:
        prompts = samples["sequences"][:, :int(samples["prompt_lengths"].min())]
        step_stats, sequences, _ = learner.step(prompts, lambda p, r: (r == 5).mean(axis=1))
        out.update(step_sequences=sequences, kl_coef=np.asarray(float(learner.kl_coef)),
                   **{f"step_var_{i}": v.numpy() for i, v in enumerate(learner.variables)})
    return out


def main(config_path: str, samples_path: str, out_path: str, updates: str) -> None:
    from pipeline import config, distribute

    cfg = config.load(config_path)
    strategy = distribute.strategy(cfg.distribute)  # before TensorFlow's first op
    np.savez(out_path, **train(cfg, dict(np.load(samples_path)), int(updates), strategy))


if __name__ == "__main__":
    main(*sys.argv[1:])
