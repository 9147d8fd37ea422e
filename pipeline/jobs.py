"""A job: the stages of a task, run in order on one run directory, for the command line and the Python API alike.

Stages talk through typed objects and the run directory; each stage's metrics are merged into metrics.json as
it ends, so a killed job keeps what finished. Re-running on a run directory resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path

from pipeline import config as config_lib
from pipeline import preemption
from pipeline.envs import check_environment
from pipeline.rundir import RunDir


def start(command: str, cfg, run_dir: RunDir) -> dict:
    """run: checks cfg before any work (`preflight`), records it in run_dir (refusing what its checkpoints cannot
    resume with) and runs every stage; evaluate or export: on the config run_dir recorded. Returns the metrics.
    Holds the run directory's lock throughout: rundir.RunLocked if another process works there."""
    from pipeline import distribute

    strategy = None
    if command == "run":
        preflight(cfg)
        strategy = distribute.strategy(cfg.distribute)  # before TensorFlow's first op; waits for every worker
        # Across workers, TensorFlow's coordination service installs a SIGTERM handler of its own (its preemption
        # notifier): ours again, which tells every worker through a collective (distribute.any_worker).
        preemption.reinstall()
        _check_split(cfg, strategy)
        if distribute.worker(strategy)[0] > 0:
            metrics = _worker(cfg, run_dir, strategy)
            distribute.barrier(strategy)  # until the chief has evaluated and exported
            return metrics
    else:
        cfg = run_dir.load_config()
    with run_dir.lock():  # one process per run directory (RunLocked otherwise)
        if command == "run":
            run_dir.save_config(cfg)
            if distribute.worker(strategy)[1] == 1:  # no other worker: a killed one's leftovers
                shutil.rmtree(run_dir.root / "workers", ignore_errors=True)
        metrics = run_stages(command, cfg, run_dir, strategy)
    distribute.barrier(strategy)
    return metrics


def preflight(cfg) -> None:
    """What the config names must exist: a wrong env.id or reward.function is a config error, found before work."""
    if cfg.task == "gym":
        check_environment(cfg.env)
        if cfg.train.warm_start is not None:
            from pipeline import warm_start
            warm_start.resolve(cfg.train.warm_start, cfg)
        return
    from pipeline.lm.rewards import load_reward_function
    try:
        load_reward_function(cfg.reward.function)
    except ValueError as e:
        raise config_lib.ConfigError(f"reward.function: {e}") from None
    if cfg.ppo.warm_start is not None:
        from pipeline import warm_start
        warm_start.resolve(cfg.ppo.warm_start, cfg)
    if cfg.data.prompts is not None and not Path(cfg.data.prompts).is_file():
        raise config_lib.ConfigError(f"data.prompts: {cfg.data.prompts!r} is not a file; expected a JSONL file of "
                                     f"prompts (one object per line, the text under data.prompt_field), or null")
    family = "GPT-2"  # from scratch
    if cfg.model.checkpoint is not None:
        from models import checkpoints
        try:
            info = checkpoints.inspect(cfg.model.checkpoint)
        except checkpoints.CheckpointError as e:
            raise config_lib.ConfigError(f"model.checkpoint: {e}") from None
        if info.max_sequence_length is not None and cfg.model.max_sequence_length > info.max_sequence_length:
            raise config_lib.ConfigError(
                f"model.max_sequence_length: {cfg.model.max_sequence_length} exceeds the {info.max_sequence_length} "
                f"positions of model.checkpoint {info.path}; allowed values: 2 to {info.max_sequence_length}")
        family = info.family
    if cfg.model.lora_rank is not None:
        from models import lora
        unavailable = lora.unavailable_targets(family, cfg.model.lora_targets)
        if unavailable:
            allowed = [t for t in lora.TARGETS if t not in unavailable]
            raise config_lib.ConfigError(f"model.lora_targets: {family} has no {', '.join(unavailable)}; allowed "
                                         f"values: {', '.join(allowed)}")
    if cfg.reward.preferences is not None:
        from pipeline.lm.preferences import PreferenceError, read_preferences
        try:
            read_preferences(cfg.reward.preferences)
        except PreferenceError as e:
            raise config_lib.ConfigError(f"reward.preferences: {e}") from None


def _check_split(cfg, strategy) -> None:
    """LM batch sizes that do not split over the workers and replicas: config errors before SFT starts (the gym
    learner checks its own before it trains)."""
    if cfg.task != "lm" or strategy is None:
        return
    from pipeline import distribute
    from pipeline.lm.ppo import check_split

    replicas = strategy.num_replicas_in_sync
    if cfg.sft.batch_size % replicas:
        raise config_lib.ConfigError(f"sft.batch_size: {cfg.sft.batch_size} documents do not split evenly over "
                                     f"{replicas} replicas; allowed: a multiple of the replica count")
    if cfg.reward.kind == "learned" and cfg.reward.batch_size % replicas:
        raise config_lib.ConfigError(f"reward.batch_size: {cfg.reward.batch_size} pairs do not split evenly over "
                                     f"{replicas} replicas; allowed: a multiple of the replica count")
    check_split(cfg.ppo, distribute.worker(strategy)[1], replicas)


def run_stages(command: str, cfg, run_dir: RunDir, strategy=None) -> dict:
    # Imported here so that `--help` and config errors answer without loading TensorFlow.
    from pipeline import summaries

    if cfg.task == "lm":
        metrics = _lm_stages(command, cfg, run_dir, strategy)
    else:
        metrics = _gym_stages(command, cfg, run_dir, strategy)
    summaries.write_hparams(run_dir, cfg, metrics)
    return metrics


def _worker(cfg, run_dir: RunDir, strategy) -> dict:
    """A worker other than the chief: it trains beside the chief, restoring what the chief's checkpoints hold
    (the run directory on a shared filesystem, or the same host), and writes only into a scratch folder of its
    own under RUN_DIR/workers, removed when it ends; the chief alone evaluates, exports and writes the run."""
    from pipeline import distribute

    index = distribute.worker(strategy)[0]
    scratch = RunDir(run_dir.root / "workers" / str(index))
    try:
        if cfg.task == "gym":
            from pipeline.stages import environment, model, train
            spaces = environment.run(cfg, scratch)
            train.run(cfg, scratch, model.run(cfg, scratch, spaces, strategy, restore_from=run_dir))
        else:
            from pipeline.lm.rewards import load_reward_function
            from pipeline.stages import lm_data, lm_ppo, reward, sft
            data = lm_data.run(cfg, scratch)  # the same tokenizer as the chief's: trained on the same documents
            lm, _ = sft.run(cfg, scratch, data, strategy, restore_from=run_dir)
            rewards, _ = reward.run(cfg, scratch, data, lm, load_reward_function(cfg.reward.function), strategy,
                                    restore_from=run_dir)
            lm_ppo.run(cfg, scratch, data, lm, rewards, strategy=strategy, restore_from=run_dir)
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last worker out removes the folder
            scratch.root.parent.rmdir()
    return {"distribute.worker": index}


def _gym_stages(command: str, cfg, run_dir: RunDir, strategy=None) -> dict:
    from pipeline.stages import environment, evaluate, export, model, train

    spaces = environment.run(cfg, run_dir)
    learner = model.run(cfg, run_dir, spaces, strategy)
    if command == "run":
        metrics = _save(run_dir, train.run(cfg, run_dir, learner))
    else:
        metrics = run_dir.read_metrics()
    checkpoint = train.latest_checkpoint(run_dir)
    if checkpoint is None:
        raise config_lib.ConfigError(f"{run_dir.root}: no checkpoint to {command}; run `python -m pipeline run` first")
    if command in ("run", "evaluate"):
        metrics = _save(run_dir, evaluate.run(cfg, run_dir, learner))
    if command in ("run", "export"):
        metrics = _save(run_dir, export.run_gym(cfg, run_dir, learner, checkpoint))
    return metrics


def _lm_stages(command: str, cfg, run_dir: RunDir, strategy=None) -> dict:
    from pipeline.lm.rewards import load_reward_function
    from pipeline.memory import peaks
    from pipeline.stages import export, lm_data, lm_evaluate, lm_ppo, reward, sft

    if command != "run" and lm_ppo.latest_checkpoint(run_dir) is None:
        raise config_lib.ConfigError(f"{run_dir.root}: no PPO checkpoint to {command}; "
                                     f"run `python -m pipeline run` first")
    reward_fn = load_reward_function(cfg.reward.function)  # checked by preflight
    data = lm_data.run(cfg, run_dir)
    lm, sft_metrics = sft.run(cfg, run_dir, data, strategy)
    metrics = _save(run_dir, {**sft_metrics, **peaks("sft")})
    rewards, reward_metrics = reward.run(cfg, run_dir, data, lm, reward_fn, strategy)  # before PPO changes lm
    metrics = _save(run_dir, {**reward_metrics, **peaks("reward")})
    learner, ppo_metrics = lm_ppo.run(cfg, run_dir, data, lm, rewards, train=command == "run", strategy=strategy)
    if command == "run":
        metrics = _save(run_dir, {**ppo_metrics, **peaks("ppo")})
    if command in ("run", "evaluate"):
        metrics = _save(run_dir, {**lm_evaluate.run(cfg, run_dir, data, learner, rewards), **peaks("evaluate")})
    if command in ("run", "export"):
        metrics = _save(run_dir, {**export.run_lm(cfg, run_dir, learner, data, lm_ppo.latest_checkpoint(run_dir),
                                                reward_fn),
                                  **peaks("export")})
    return metrics


def _save(run_dir: RunDir, values: dict) -> dict:
    """NaN (e.g. no episode finished yet) is stored as null: metrics.json stays strict JSON."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
    return run_dir.update_metrics(clean)
