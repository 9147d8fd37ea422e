"""LM PPO stage: fine-tunes the SFT model against the reward, resuming from its last checkpoint."""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf

from pipeline import summaries
from pipeline.config import LMConfig
from pipeline.lm.ppo import LMPPOLearner
from pipeline.progress import Progress
from pipeline.rundir import RunDir
from pipeline.stages.lm_data import LMData

log = logging.getLogger(__name__)


def scorer(data: LMData, reward_fn):
    """Token ids -> the reward function's (prompts, completions) strings -> scores."""
    def score(prompt_ids, responses):
        return np.asarray(reward_fn(data.decode(prompt_ids), data.decode(responses)), np.float32)
    return score


def latest_checkpoint(run_dir: RunDir):
    return tf.train.latest_checkpoint(str(run_dir.checkpoints / "ppo"))


def run(cfg: LMConfig, run_dir: RunDir, data: LMData, sft_lm, reward_fn, train: bool = True
        ) -> tuple[LMPPOLearner, dict]:
    """Restores the latest PPO checkpoint, then (with train) runs the remaining iterations."""
    p = cfg.ppo
    learner = LMPPOLearner(sft_lm, p, eos_id=data.eos_id, seed=cfg.data.seed)
    manager = tf.train.CheckpointManager(learner.checkpoint(), str(run_dir.checkpoints / "ppo"), max_to_keep=2)
    if manager.latest_checkpoint:
        learner.checkpoint().restore(manager.latest_checkpoint).assert_consumed()
        log.info("ppo: resumed from %s (iteration %d)", manager.latest_checkpoint, int(learner.iteration))
    if not train:
        return learner, {}
    score = scorer(data, reward_fn)
    progress = Progress(p.iterations, int(learner.iteration), stage="ppo", unit="iterations", metric="mean score")
    with summaries.stage_writer(run_dir, "ppo") as writer:
        write = summaries.CompiledWriter(writer)
        while int(learner.iteration) < p.iterations:
            iteration = int(learner.iteration)
            # Prompts drawn by (seed, iteration): a resumed run sees the batches it would have seen.
            rng = np.random.default_rng([cfg.data.seed, iteration])
            prompts = data.train_prompts[rng.choice(len(data.train_prompts), p.batch_size,
                                                    replace=len(data.train_prompts) < p.batch_size)]
            start = time.perf_counter()
            stats, sequences = learner.step(prompts, score)
            seconds = time.perf_counter() - start
            stats.update({"time/seconds_per_iteration": seconds, "time/tokens_per_s": sequences.size / seconds})
            write(stats, {}, step=iteration + 1)
            progress.update(iteration + 1, stats["objective/scores"])
            if (iteration + 1) % p.checkpoint_every == 0:
                manager.save(checkpoint_number=iteration + 1)
        if (manager.latest_checkpoint is None
                             or not manager.latest_checkpoint.endswith(f"-{int(learner.iteration)}")):
            manager.save(checkpoint_number=int(learner.iteration))
    progress.close()
    return learner, {"ppo.iterations": int(learner.iteration), "ppo.kl_coef": float(learner.kl_coef)}
