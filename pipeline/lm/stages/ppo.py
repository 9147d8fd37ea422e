"""LM PPO stage: fine-tunes the SFT model against the proxy reward, resuming from its last checkpoint.

With a learned reward model the gold reward of every batch is logged beside the proxy one
(`objective/gold_scores` next to `objective/scores`): the two curves parting is reward over-optimisation.
"""

from __future__ import annotations

import logging
import shutil
import time

import numpy as np
import tensorflow as tf

from models import checkpoints, lora, peft
from models import lm as lm_lib
from pipeline.core import devices, distribute, resume, summaries, training, warm_start
from pipeline.core.progress import Progress
from pipeline.core.rundir import RunDir
from pipeline.core.schema import ConfigError
from pipeline.lm import data as data_lib
from pipeline.lm.config import LMConfig
from pipeline.lm.data import LMData
from pipeline.lm.ppo import LMPPOLearner
from pipeline.lm.rewards import Rewards

log = logging.getLogger(__name__)
SAMPLE_ROWS = 8  # rows of each ppo.sample_every table


def _checkpoint_dir(run_dir: RunDir) -> str:
    return str(run_dir.checkpoints / LMConfig.checkpoints)


def latest_checkpoint(run_dir: RunDir):
    return tf.train.latest_checkpoint(_checkpoint_dir(run_dir))


def adapters(cfg: LMConfig):
    m = cfg.model
    if m.lora_rank is None:
        return None
    return lora.Adapters(m.lora_rank, m.lora_alpha or float(m.lora_rank), tuple(m.lora_targets))


def run(
    cfg: LMConfig,
    run_dir: RunDir,
    data: LMData,
    sft_lm,
    rewards: Rewards,
    train: bool = True,
    strategy: tf.distribute.Strategy | None = None,
    restore_from: RunDir | None = None,
) -> tuple[LMPPOLearner, dict]:
    """Restores the latest PPO checkpoint, then (with train) runs the remaining iterations. strategy: the one
    sft_lm was built under; restore_from: the run directory whose checkpoints to resume from, when not run_dir
    (a worker's scratch folder)."""
    p = cfg.ppo
    learner = LMPPOLearner(sft_lm, p, eos_id=data.eos_id, seed=cfg.data.seed, adapters=adapters(cfg), strategy=strategy)
    if strategy is not None:
        log.info("ppo: %s", distribute.describe(strategy))
    manager = tf.train.CheckpointManager(learner.checkpoint(), _checkpoint_dir(run_dir), max_to_keep=2)
    source = (
        manager
        if restore_from is None
        else tf.train.CheckpointManager(learner.checkpoint(), _checkpoint_dir(restore_from), max_to_keep=2)
    )
    restored = resume.restore_newest_readable(learner.checkpoint(), source, "ppo")
    if restored:
        log.info("ppo: resumed from %s (iteration %d)", restored, int(learner.iteration))
    elif p.warm_start is not None and peft.is_adapter_folder(p.warm_start):
        try:
            peft.load(learner.policy, learner.adapters, _family(cfg), p.warm_start)
        except peft.PeftError as e:
            raise ConfigError(f"ppo.warm_start: {e}") from None
        log.info("ppo: warm start from the PEFT adapters in %s", p.warm_start)
    elif p.warm_start is not None:
        source = warm_start.resolve(p.warm_start, cfg)
        learner.trained_parts().restore(source).expect_partial().assert_existing_objects_matched()
        log.info("ppo: warm start from %s", source)
    if not train:
        return learner, {}
    log.info("ppo: %s", devices.describe(learner.variables))
    loop = _PPOLoop(cfg, learner, manager, data, rewards)
    try:
        training.run(loop, run_dir)
    finally:
        loop.progress.close()
    if learner.adapters is not None and restore_from is None and _adapts_a_hugging_face_checkpoint(cfg):
        _write_peft_adapter(cfg, run_dir, learner)
    metrics = {"ppo.iterations": int(learner.iteration)}
    if p.algorithm == "ppo":
        metrics["ppo.kl_coef"] = float(learner.kl_coef)
    return learner, metrics


class _PPOLoop(training.Loop):
    """An iteration: a batch of prompts sampled, scored and learned from (LMPPOLearner.step), then logged."""

    stage = "ppo"

    def __init__(self, cfg: LMConfig, learner: LMPPOLearner, manager, data: LMData, rewards: Rewards):
        self.cfg, self.learner, self.manager, self.data, self.rewards = cfg, learner, manager, data, rewards
        self.checkpoint_every, self.strategy = cfg.ppo.checkpoint_every, learner.strategy
        self.progress = Progress(
            cfg.ppo.iterations, int(learner.iteration), stage="ppo", unit="iterations", metric="mean score"
        )
        self.last_batch = None  # (sequences, prompt lengths): what a checkpoint's outputs are checked on

    def iterate(self) -> bool:
        p, data, iteration = self.cfg.ppo, self.data, int(self.learner.iteration)
        # Prompts drawn by (seed, iteration): a resumed run sees the batches it would have seen.
        rng = np.random.default_rng([self.cfg.data.seed, iteration])
        count = p.batch_size // p.num_generations  # prompts, each sampled num_generations times, in a row
        rows = np.repeat(
            rng.choice(len(data.train_prompts), count, replace=len(data.train_prompts) < count), p.num_generations
        )
        prompts, lengths = data.prompt_batch(data.train_prompts[rows])
        columns = data_lib.columns_at(data.train_columns, rows)

        def score(batch_rows, responses):  # the reward of these rows of the batch, with their prompts' columns
            return self.rewards.proxy(
                prompts[batch_rows], responses, data_lib.columns_at(data.train_columns, rows[batch_rows])
            )

        start = time.perf_counter()
        stats, sequences, scores = self.learner.step(prompts, score, lengths)
        seconds = time.perf_counter() - start
        self.last_batch = sequences, lengths
        responses = lm_lib.responses(sequences, lengths, p.max_new_tokens).numpy()
        if self.rewards.learned:
            stats["objective/gold_scores"] = float(np.mean(self.rewards.gold(prompts, responses, columns).total))
        stats.update({"time/seconds_per_iteration": seconds, "time/tokens_per_s": sequences.size / seconds})
        summaries.scalars(stats, step=iteration + 1)
        if p.sample_every and iteration % p.sample_every == 0:
            rows = slice(0, SAMPLE_ROWS * p.num_generations, p.num_generations)  # one completion per prompt
            _sample_table(data, prompts[rows], responses[rows], scores.total[rows], step=iteration + 1)
        self.progress.update(iteration + 1, stats["objective/scores"])
        return False

    def iterations(self) -> int:
        return int(self.learner.iteration)

    def done(self) -> bool:
        return int(self.learner.iteration) >= self.cfg.ppo.iterations

    def checkpoint_number(self) -> int:
        return int(self.learner.iteration)  # 0: the SFT model as it is (ppo.iterations 0)

    def save(self) -> None:
        if self.last_batch is not None:  # finite weights can still overflow a forward pass
            self.learner.check_outputs(*self.last_batch)
        super().save()

    def position(self) -> str:
        return f"at iteration {int(self.learner.iteration)}"


def _sample_table(data: LMData, prompts, responses, scores, step: int) -> None:
    """What the policy writes now, as TRL's trainer shows it every num_sample_generations: prompt | response |
    reward (the proxy reward PPO was given, before the missing-EOS penalty and the KL term)."""
    rows = [
        (prompt, response, f"{score:.3f}")
        for prompt, response, score in zip(data.decode(prompts), data.decode(responses), scores)
    ]
    summaries.text("samples", summaries.markdown_columns(["prompt", "response", "reward"], rows), step=step)


def _family(cfg: LMConfig) -> str:
    return checkpoints.inspect(cfg.model.checkpoint).family if cfg.model.checkpoint else "GPT-2"


def _adapts_a_hugging_face_checkpoint(cfg: LMConfig) -> bool:
    """Whether the adapters sit on a Hugging Face checkpoint as it is (no SFT changed it): what a PEFT adapter
    folder can be loaded onto."""
    m = cfg.model
    return (
        m.checkpoint is not None and cfg.sft.epochs == 0 and checkpoints.inspect(m.checkpoint).layout == "huggingface"
    )


def _write_peft_adapter(cfg: LMConfig, run_dir: RunDir, learner: LMPPOLearner) -> None:
    """RUN_DIR/peft_adapter: the trained adapters in PEFT's layout (transformers + PEFT load them onto
    model.checkpoint), replaced whole, never half-written."""
    final, partial = run_dir.root / "peft_adapter", run_dir.root / ".peft_adapter.partial"
    shutil.rmtree(partial, ignore_errors=True)
    peft.save(learner.policy, learner.adapters, _family(cfg), partial, base_model=cfg.model.checkpoint)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    log.info("ppo: wrote the adapters in PEFT's layout, %s", final)
