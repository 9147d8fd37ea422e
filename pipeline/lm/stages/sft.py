"""SFT stage: the model (a checkpoint's, or a GPT-2 built from the config), trained on the corpus; skipped when its
checkpoint exists. A trained model is also written as a keras-hub preset (RUN_DIR/preset: weights, tokenizer and its
start-token convention), which another run's model.checkpoint can start from."""

from __future__ import annotations

import contextlib
import logging
import math

import tensorflow as tf

from models import checkpoints
from models import lm as lm_lib
from pipeline.core import guards, preemption, resume, summaries
from pipeline.core.rundir import RunDir
from pipeline.lm import data as data_lib
from pipeline.lm.config import LMConfig
from pipeline.lm.data import LMData
from pipeline.lm.sft import SFTTrainer

log = logging.getLogger(__name__)


def build_model(cfg: LMConfig, data: LMData):
    if cfg.model.checkpoint is not None:
        return checkpoints.load_causal_lm(checkpoints.inspect(cfg.model.checkpoint), cfg.model.precision)
    size = lm_lib.LMSize(
        vocabulary_size=data.tokenizer.vocabulary_size(),
        num_layers=cfg.model.num_layers,
        num_heads=cfg.model.num_heads,
        hidden_dim=cfg.model.hidden_dim,
        intermediate_dim=cfg.model.intermediate_dim,
        max_sequence_length=cfg.model.max_sequence_length,
    )
    return lm_lib.build_causal_lm(size, seed=cfg.data.seed, precision=cfg.model.precision)


def run(
    cfg: LMConfig,
    run_dir: RunDir,
    data: LMData,
    strategy: tf.distribute.Strategy | None = None,
    restore_from: RunDir | None = None,
) -> tuple[object, dict]:
    """strategy: the model is built under it and trained data-parallel. restore_from: the run directory whose
    checkpoint to take, when not run_dir (a worker's scratch folder: it gets no preset)."""
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        lm = build_model(cfg, data)
    manager, restored = resume.trained_once(tf.train.Checkpoint(lm=lm), run_dir, "sft", restore_from)
    if restored:
        if _trained(cfg) and restore_from is None and not (run_dir.root / "preset").exists():  # a run directory
            _save_preset(cfg, run_dir, data, lm)  # from before presets
        return lm, {}
    trainer = SFTTrainer(lm, cfg.sft.learning_rate, strategy=strategy)
    metrics = {"sft.val_perplexity_init": trainer.perplexity(data.val_ids, data.val_mask)}
    step = 0
    with summaries.stage_writer(run_dir, "sft"):
        for epoch in range(cfg.sft.epochs):
            for ids, mask in data_lib.language_model_dataset(
                data.train_ids, data.train_mask, cfg.sft.batch_size, seed=cfg.data.seed + epoch
            ):
                preemption.stop_if_requested(
                    "in sft (it is not checkpointed part-way: it restarts on re-run)", strategy
                )
                loss = trainer.train_step(ids, mask)
                step += 1
                if step % 20 == 0:
                    tf.summary.scalar("sft/loss", loss, step=step)
            perplexity = trainer.perplexity(data.val_ids, data.val_mask)
            tf.summary.scalar("sft/val_perplexity", perplexity, step=step)
            log.info("sft: epoch %d, validation perplexity %.2f", epoch + 1, perplexity)
    metrics.update({"sft.val_perplexity": trainer.perplexity(data.val_ids, data.val_mask), "sft.steps": step})
    trainer.check_weights()
    # Finite weights can still overflow a forward pass (a learning rate far too high): the model's own outputs,
    # here its validation loss, must be finite too before it is saved, or every re-run restores it.
    guards.check(math.isfinite(metrics["sft.val_perplexity"]), "sft", "validation loss", f"after step {step}")
    if _trained(cfg):  # untrained, model.checkpoint holds it already: no copy of a large model in the run
        if restore_from is None:
            _save_preset(cfg, run_dir, data, lm)
        manager.save()
    return lm, metrics


def load(cfg: LMConfig, run_dir: RunDir, data: LMData, precision: str | None = None):
    """The SFT model as SFT left it, trained nothing, on this process alone (no strategy): what evaluation compares
    with when training held no reference. precision: a dtype policy for it (None: model.precision)."""
    lm = build_model(cfg, data)
    if _trained(cfg):
        resume.trained_once(tf.train.Checkpoint(lm=lm), run_dir, "sft")
    return lm if precision is None else lm_lib.copy_lm(lm, trainable=False, precision=precision)


def _trained(cfg: LMConfig) -> bool:
    """Whether the SFT model differs from what model.checkpoint already holds (from scratch, it always does)."""
    return cfg.model.checkpoint is None or cfg.sft.epochs > 0


def _save_preset(cfg: LMConfig, run_dir: RunDir, data: LMData, lm) -> None:
    path = checkpoints.save_preset(
        lm,
        data.tokenizer,
        run_dir.root / "preset",
        add_start_token=data.bos_id is not None,
        sequence_length=cfg.model.max_sequence_length,
    )
    log.info("sft: wrote the SFT model as a keras-hub preset, %s (a model.checkpoint for other runs)", path)
