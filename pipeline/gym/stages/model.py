"""Model stage: builds the learner (networks, agent, optimizer) and restores the latest checkpoint if any."""

from __future__ import annotations

import logging

import tensorflow as tf

from models.actor_critic import parameter_count
from pipeline.core import distribute, summaries, warm_start
from pipeline.core.rundir import RunDir
from pipeline.gym.config import GymConfig
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.spaces import Spaces
from pipeline.gym.stages import train

log = logging.getLogger(__name__)


def run(
    cfg: GymConfig,
    run_dir: RunDir,
    spaces: Spaces,
    strategy: tf.distribute.Strategy | None = None,
    restore_from: RunDir | None = None,
) -> PPOLearner:
    """restore_from: the run directory whose checkpoints to resume from, when not run_dir (a worker's scratch)."""
    learner = PPOLearner(cfg, spaces, strategy)
    if strategy is not None:
        log.info("model: %s", distribute.describe(strategy))
    restored = train.restore_latest(restore_from or run_dir, learner)
    if restored:
        log.info("model: resumed from %s (%d env steps)", restored, int(learner.counters.env_steps))
    elif cfg.train.warm_start is not None:
        # The agent's variables (networks, normaliser, its optimizer's moments): counters and RNG start anew.
        restored = warm_start.resolve(cfg.train.warm_start, cfg)
        tf.train.Checkpoint(agent=learner.agent).restore(restored).expect_partial().assert_existing_objects_matched()
        log.info("model: warm start from %s", restored)
    actor, value = learner.agent.actor_net, learner.agent._value_net
    lines = []
    for net in (actor, value):
        lines.append(f"### {net.name}: {parameter_count(net):,} trainable parameters\n")
        lines += [f"    {v.name:<60} {str(v.shape.as_list()):>12}" for v in net.trainable_variables]
        lines.append("")
    with summaries.stage_writer(run_dir, "model"):
        summaries.text("model/architecture", "\n".join(lines))
        summaries.text(
            "model/parameters",
            summaries.markdown_table(
                {
                    "actor": parameter_count(actor),
                    "value": parameter_count(value),
                    "observation normaliser": cfg.train.normalize_observations,
                    "restored from": restored or "(new)",
                }
            ),
        )
    return learner
