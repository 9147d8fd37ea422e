"""Reward stage: what PPO maximises (the proxy) and what evaluation calls the truth (the gold reward).

kind scorer: both are `reward.function`. kind learned: a reward model (the SFT backbone plus a scalar head) is
trained with the Bradley-Terry loss on preference pairs, read from `reward.preferences` or built by ranking two
SFT samples per training prompt with `reward.function`; PPO then maximises the model's score while
`reward.function` stays the gold reward, so evaluation can show the proxy rising while the gold one does not.
Checkpointed in the run directory: a re-run restores the model and trains nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import numpy as np
import tensorflow as tf

from models import lm as lm_lib
from models import reward_model as rm_lib
from pipeline.core import distribute, guards, preemption, resume, summaries
from pipeline.core.rundir import RunDir
from pipeline.core.schema import ConfigError
from pipeline.lm import data as data_lib
from pipeline.lm import preferences as prefs_lib
from pipeline.lm import sampling
from pipeline.lm.config import LMConfig
from pipeline.lm.data import LMData
from pipeline.lm.reward_training import RewardTrainer, reward_function
from pipeline.lm.rewards import RewardFunctions, Rewards, Scorer, function_scorer, model_scorer

log = logging.getLogger(__name__)


def run(
    cfg: LMConfig,
    run_dir: RunDir,
    data: LMData,
    sft_lm,
    reward_fn: RewardFunctions,
    strategy: tf.distribute.Strategy | None = None,
    restore_from: RunDir | None = None,
) -> tuple[Rewards, dict]:
    """strategy: the one sft_lm was built under; the reward model is built under it and trains data-parallel,
    on preference pairs the chief alone builds (or reads) and shares. restore_from: the run directory whose
    checkpoint to take, when not run_dir (a worker's scratch folder)."""
    gold = function_scorer(data, reward_fn)
    if cfg.reward.kind == "scorer":
        return Rewards(proxy=gold, gold=gold, learned=False), {}
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = rm_lib.from_sft(sft_lm, seed=cfg.data.seed)
    manager, restored = resume.trained_once(model.checkpoint(), run_dir, "reward", restore_from)
    if restored:
        proxy = model_scorer(reward_function(model, cfg.reward.jit_compile), data.eos_id)
        return Rewards(proxy=proxy, gold=gold, learned=True), {}
    trainer = RewardTrainer(model, cfg.reward.learning_rate, jit_compile=cfg.reward.jit_compile, strategy=strategy)
    with summaries.stage_writer(run_dir, "reward"):
        pairs, metrics = _chiefs_pairs(cfg, run_dir, data, sft_lm, gold, strategy)
        metrics.update(_train(cfg, trainer, pairs, strategy))
    manager.save()
    return Rewards(proxy=model_scorer(trainer.rewards, data.eos_id), gold=gold, learned=True), metrics


def _chiefs_pairs(cfg: LMConfig, run_dir: RunDir, data: LMData, sft_lm, gold: Scorer, strategy):
    """The preference pairs (and what to report), built or read by the chief alone and broadcast to the other
    workers. An error on the chief stops every worker, not only the chief (the others would wait for its pairs)."""
    if distribute.worker(strategy).count == 1:
        return _pairs(cfg, run_dir, data, sft_lm, gold)
    empty = prefs_lib.PreferencePairs(*(np.zeros([0, 0], np.int32) for _ in range(4)))
    pairs, metrics, error = empty, {}, None
    if distribute.worker(strategy).index == 0:
        try:
            pairs, metrics = _pairs(cfg, run_dir, data, sft_lm, gold)
        except Exception as e:  # noqa: BLE001 (raised again below, once every worker knows)
            error = e
    if distribute.any_worker(strategy, error is not None):
        if error is not None:
            raise error
        raise ConfigError("reward: the chief (worker 0) could not build or read the preference pairs; its log says why")
    shared = distribute.broadcast(strategy, dataclasses.asdict(pairs))
    return prefs_lib.PreferencePairs(**{k: v.astype(np.int32) for k, v in shared.items()}), metrics


def _train(cfg: LMConfig, trainer: RewardTrainer, pairs: prefs_lib.PreferencePairs, strategy) -> dict:
    """Epochs over the training split, held-out loss and pair accuracy after each, then the normalisation."""
    train, held_out = pairs.split(cfg.reward.validation_fraction, seed=cfg.data.seed)
    if len(train) < trainer.replicas:
        raise ConfigError(
            f"reward.pairs: {len(train)} training pairs (after reward.validation_fraction "
            f"{cfg.reward.validation_fraction}) cannot give each of {trainer.replicas} replicas one; "
            f"allowed: more pairs"
        )
    metrics = {
        "reward.train_pairs": len(train),
        "reward.held_out_pairs": len(held_out),
        "reward.pair_accuracy_init": trainer.evaluate(held_out)[1],
    }
    step = 0
    for epoch in range(cfg.reward.epochs):
        preemption.stop_if_requested("in reward (it is not checkpointed part-way: it restarts on re-run)", strategy)
        losses = trainer.train_epoch(train, cfg.reward.batch_size, seed=cfg.data.seed + epoch)
        for loss in losses:
            step += 1
            if step % 10 == 0:
                tf.summary.scalar("reward/train_loss", loss, step=step)
        val_loss, accuracy = trainer.evaluate(held_out)
        summaries.scalars({"reward/val_loss": val_loss, "reward/pair_accuracy": accuracy}, step=step)
        log.info(
            "reward: epoch %d, train loss %.3f, held-out loss %.3f, pair accuracy %.3f",
            epoch + 1,
            np.mean(losses),
            val_loss,
            accuracy,
        )
    # On the training pairs' sequences: the SFT model's samples when the pairs were built from them.
    offset, scale = trainer.normalise(
        np.concatenate([train.chosen_ids, train.rejected_ids]), np.concatenate([train.chosen_mask, train.rejected_mask])
    )
    # Finite weights can still overflow a forward pass: the model's outputs must be finite before it is saved.
    guards.check(
        np.isfinite([val_loss, offset, scale]).all(),
        "reward",
        "held-out loss or reward normalisation",
        f"after step {step}",
    )
    return {
        **metrics,
        "reward.pair_accuracy": accuracy,
        "reward.val_loss": val_loss,
        "reward.train_loss": float(np.mean(losses)),
        "reward.steps": step,
        "reward.offset": offset,
        "reward.scale": scale,
    }


def _pairs(cfg: LMConfig, run_dir: RunDir, data: LMData, sft_lm, gold: Scorer):
    """Preference pairs in token form, from reward.preferences or ranked SFT samples, with what to report."""
    r = cfg.reward
    if r.preferences is not None:
        try:
            preferences = prefs_lib.read_preferences(r.preferences)
        except prefs_lib.PreferenceError as e:
            raise ConfigError(f"reward.preferences: {e}") from None
        pairs = prefs_lib.encode(data.tokenizer, preferences, cfg.model.max_sequence_length, data.bos_id)
        return pairs, {"reward.pairs": len(preferences)}
    p = cfg.ppo  # sampled as PPO samples: the reward model learns to score what it will be asked to score
    sample = tf.function(
        lambda prompts, lengths, seed: sampling.sample(sft_lm, prompts, lengths, seed, p, data.eos_id),
        autograph=False,
        jit_compile=p.jit_generation,
    )

    def generate(prompt_ids: np.ndarray, round_: int) -> np.ndarray:
        seed = tf.constant([cfg.data.seed, round_], tf.int64)
        prompt_ids, lengths = data.prompt_batch(prompt_ids)
        sequences = sample(tf.constant(prompt_ids, tf.int32), tf.constant(lengths), seed)
        return lm_lib.responses(sequences, lengths, p.max_new_tokens).numpy()

    def score(rows: np.ndarray, responses: np.ndarray) -> np.ndarray:
        return gold(data.train_prompts[rows], responses, data_lib.columns_at(data.train_columns, rows)).total

    ranked = prefs_lib.sample_ranked(
        generate, score, data.train_prompts, r.pairs, r.batch_size, cfg.data.seed, max_prompts=8 * r.pairs
    )
    if len(ranked.prompts) < 2:
        raise ConfigError(
            f"reward.function: ranked the two SFT samples of {ranked.sampled} prompts and found fewer "
            f"than 2 untied pairs; building pairs needs a scorer that tells samples apart (or set "
            f"reward.preferences)"
        )
    if len(ranked.prompts) < r.pairs:
        log.warning(
            "reward: only %d untied pairs in %d sampled prompts (reward.pairs %d)",
            len(ranked.prompts),
            ranked.sampled,
            r.pairs,
        )
    preferences = ranked.preferences(data.decode)
    prefs_lib.write_preferences(
        run_dir.root / "reward" / "preferences.jsonl", preferences, ranked.chosen_scores, ranked.rejected_scores
    )
    rows = [
        (q.prompt, f"{q.chosen} ({c:.2f})", f"{q.rejected} ({x:.2f})")
        for q, c, x in zip(preferences[:16], ranked.chosen_scores, ranked.rejected_scores)
    ]
    summaries.text("reward/pairs", summaries.markdown_columns(["prompt", "chosen (score)", "rejected (score)"], rows))
    log.info(
        "reward: %d preference pairs from %d prompts sampled twice (ties dropped)", len(preferences), ranked.sampled
    )
    return ranked.token_pairs(data.eos_id), {"reward.pairs": len(preferences), "reward.sampled_prompts": ranked.sampled}
