"""Train stage: the PPO iteration (`_TrainLoop.iterate`, read top to bottom) in the shared training loop. Resumes
from the run directory's last checkpoint."""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf

from pipeline.core import devices, distribute, resume, summaries, training
from pipeline.core.progress import Progress
from pipeline.core.rundir import RunDir
from pipeline.gym import envs
from pipeline.gym.config import GymConfig
from pipeline.gym.ppo import PPOLearner, Tally
from pipeline.gym.rollout import Collector, GreedyEpisodes
from pipeline.gym.stages import evaluate

log = logging.getLogger(__name__)
SOLVED_WINDOW = 50  # episodes averaged for train.stop_at_return (the usual "solved" criterion)


def checkpoint_manager(run: RunDir, learner: PPOLearner) -> tf.train.CheckpointManager:
    return tf.train.CheckpointManager(learner.checkpoint(), str(run.checkpoints / GymConfig.checkpoints), max_to_keep=3)


def restore_latest(run: RunDir, learner: PPOLearner) -> str | None:
    """Restores every variable of the newest readable checkpoint, or nothing if there is none; returns its path."""
    return resume.restore_newest_readable(learner.checkpoint(), checkpoint_manager(run, learner), "train")


def latest_checkpoint(run: RunDir) -> str | None:
    """The newest checkpoint's path; the learner already holds it (model stage restore, or the final save)."""
    return tf.train.latest_checkpoint(str(run.checkpoints / GymConfig.checkpoints))


def run(cfg: GymConfig, run_dir: RunDir, learner: PPOLearner) -> dict:
    t = cfg.train
    tally = learner.counters.read()
    manager = checkpoint_manager(run_dir, learner)
    if tally.env_steps >= t.total_env_steps or tally.solved:
        log.info(
            "train: nothing to do, the checkpoint already has %d env steps%s",
            tally.env_steps,
            " and was solved" if tally.solved else "",
        )
        return _metrics(tally)

    log.info("train: %s", devices.describe(learner.variables_to_train))
    loop = _TrainLoop(cfg, learner, manager, tally)
    try:
        training.run(loop, run_dir)
    finally:
        loop.close()
    return _metrics(tally)


class _TrainLoop(training.Loop):
    """The PPO iteration, read top to bottom in `iterate`; counters live in `tally` between checkpoints."""

    stage = "train"

    def __init__(self, cfg: GymConfig, learner: PPOLearner, manager: tf.train.CheckpointManager, tally: Tally):
        self.cfg, self.learner, self.manager, self.tally = cfg, learner, manager, tally
        self.checkpoint_every, self.strategy = cfg.train.checkpoint_every, learner.strategy
        # Each worker steps its share of env.num_envs, with the seeds those environments have on one host.
        share = cfg.env.num_envs // learner.workers
        self.env = envs.make_vector_env(cfg.env, num_envs=share)
        seeds = envs.episode_seeds(cfg.env.seed, cfg.env.num_envs, salt=tally.iteration)
        self.collector = Collector(
            self.env,
            learner,
            cfg.train.reward_scale,
            seeds=seeds[learner.worker * share :][:share],
            episodes_in_info=cfg.env.preprocessing == "atari",
        )
        self.evaluator = GreedyEpisodes(
            lambda o: learner.greedy(o), cfg.evaluate.episodes
        )  # stop_at_return; traced if used
        self.batch = cfg.env.num_envs * cfg.train.rollout_steps
        self.progress = Progress(cfg.train.total_env_steps, tally.env_steps)
        self.loop_start, self.wall_before = time.monotonic(), tally.wall_seconds

    def iterate(self) -> bool:
        t, tally, learner = self.cfg.train, self.tally, self.learner
        iter_start = time.monotonic()
        # 1. Learning-rate schedule, by the fraction of the budget already used.
        lr = t.learning_rate * (1.0 - tally.env_steps / t.total_env_steps if t.lr_schedule == "linear" else 1.0)
        learner.set_learning_rate(lr)
        # 2. Rollout with the sampling policy.
        rollout = self.collector.collect(t.rollout_steps)
        collect_s = time.monotonic() - iter_start
        # 3-4. GAE (truncated episodes bootstrap from their final observation), then epochs x minibatches.
        with tf.summary.record_if(False):  # TF-Agents' own loss summaries stay out of our logs
            stats, advantages = learner.train_on_rollout(learner.gather(rollout.arrays()))
        # 5. Counters and logs (every worker's episodes: the same tally, and the same stop decision, on each).
        tally.env_steps += self.batch
        tally.iteration += 1
        tally.record_episodes(*_episodes(learner, rollout))
        tally.wall_seconds = self.wall_before + time.monotonic() - self.loop_start
        if tally.iteration % t.log_every == 0:
            iter_s = time.monotonic() - iter_start
            summaries.write(
                *_summaries(stats, advantages, lr, self.batch, iter_s, collect_s, rollout, tally), step=tally.env_steps
            )
        self.progress.update(tally.env_steps, tally.recent_mean(100))
        # 6. Stop early once solved.
        if _solved(self.cfg, self.evaluator, tally):
            tally.solved = True
            log.info("train: solved (stop_at_return %.1f) at %d env steps", t.stop_at_return, tally.env_steps)
        return tally.solved

    def iterations(self) -> int:
        return self.tally.iteration

    def done(self) -> bool:
        return self.tally.env_steps >= self.cfg.train.total_env_steps

    def checkpoint_number(self) -> int:
        return self.tally.env_steps

    def save(self) -> None:
        self.learner.counters.store(self.tally)
        super().save()

    def position(self) -> str:
        return f"at {self.tally.env_steps} env steps"

    def close(self) -> None:
        self.progress.close()
        self.env.close()


def _episodes(learner: PPOLearner, rollout) -> tuple[list, list]:
    """The returns and lengths of the episodes that ended in this rollout, on every worker."""
    if learner.workers == 1:
        return rollout.episode_returns, rollout.episode_lengths
    room = rollout.rewards.size  # at most one episode ends per env step; NaN pads each worker's list to it
    padded = np.full([2, room], np.nan, np.float32)
    padded[:, : len(rollout.episode_returns)] = rollout.episode_returns, rollout.episode_lengths
    gathered = distribute.gather(learner.strategy, {"episodes": padded}, {"episodes": 1})["episodes"]
    ended = ~np.isnan(gathered[0])
    return list(gathered[0][ended]), [int(n) for n in gathered[1][ended]]


def _summaries(stats, advantages, lr, batch, iter_s, collect_s, rollout, tally: Tally) -> tuple[dict, dict]:
    """SB3's tag names: rollout/ep_rew_mean, train/approx_kl, time/fps, ..."""
    scalar_values = {f"train/{k}": float(v) for k, v in stats.items() if k != "entropy"}
    scalar_values.update(
        {
            "train/entropy_loss": -float(stats["entropy"]),
            "train/learning_rate": lr,
            "time/fps": batch / iter_s,
            "time/collect_fps": batch / max(collect_s, 1e-9),
            "time/update_seconds": iter_s - collect_s,
            "time/iterations": tally.iteration,
            "rollout/ep_rew_mean": tally.recent_mean(100),  # NaN (not written) before the first episode
            "rollout/ep_len_mean": tally.recent_mean(100, lengths=True),
        }
    )
    histogram_values = {
        "train/advantages": advantages,
        "rollout/actions": rollout.actions,
        "rollout/episode_returns": np.asarray(rollout.episode_returns, np.float32),
    }
    return scalar_values, histogram_values


def _solved(cfg: GymConfig, evaluator: GreedyEpisodes, tally: Tally) -> bool:
    """The usual criterion: the last 50 training episodes average stop_at_return, and so does a greedy
    evaluation (evaluate.episodes); the evaluation only runs once the training window passes."""
    threshold = cfg.train.stop_at_return
    if threshold is None or not tally.recent_mean(SOLVED_WINDOW, min_count=SOLVED_WINDOW) >= threshold:
        return False
    returns, _ = evaluate.greedy_episodes(cfg, evaluator, cfg.evaluate.seed)
    return float(returns.mean()) >= threshold


def _metrics(tally: Tally) -> dict:
    return {
        "train.env_steps": tally.env_steps,
        "train.iterations": tally.iteration,
        "train.episodes": tally.episodes,
        "train.wall_seconds": round(tally.wall_seconds, 3),
        "train.solved": tally.solved,
        "train.ep_rew_mean": tally.recent_mean(100),
    }
