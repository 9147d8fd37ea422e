"""Driver: `python -m pipeline run CONFIG [--run-dir DIR] [--set key.path=value ...]`.

`check CONFIG [--set ...]` validates and prints the resolved config, every key documented; `evaluate RUN_DIR`
and `export RUN_DIR` work on an existing run. Stages run in order (environment -> model -> train -> evaluate ->
export), talking through typed objects and the run directory. Re-running on a run directory resumes from its
last checkpoint.
Exit codes: 0 success, 2 usage or config error (before any work starts), 1 any other failure (among them a
reward function or environment returning bad numbers, or a non-finite loss: stopped before the next checkpoint
or export), 143 stopped by SIGTERM (after a checkpoint where the stage has them; re-run to continue).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import pipeline  # noqa: F401  (sets TensorFlow's environment first)
from pipeline import config as config_lib
from pipeline import guards, preemption
from pipeline.envs import check_environment
from pipeline.rundir import RunDir

log = logging.getLogger("pipeline")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train, evaluate and export from a config file")
    run_p.add_argument("config", help="YAML config, e.g. configs/cartpole.yaml")
    run_p.add_argument("--run-dir", help="output directory (default: runs/<config name>)")
    run_p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides",
                       help="override one config value; repeatable")
    check_p = sub.add_parser("check", help="validate a config (exit 0 or 2) and print it resolved, every key "
                                           "documented; runs nothing")
    check_p.add_argument("config")
    check_p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", dest="overrides")
    for name, text in (("evaluate", "evaluate the latest checkpoint of a run directory"),
                       ("export", "export the latest checkpoint of a run directory for TF Serving")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir")
    args = parser.parse_args(argv)
    # Our stages log at INFO; libraries only warnings (TensorFlow's checkpoint and SavedModel code log at INFO).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    preemption.install()
    try:
        if args.command in ("check", "run"):
            cfg = config_lib.load(args.config, args.overrides)
            _preflight(cfg)
        if args.command == "check":
            print(config_lib.annotated_yaml(cfg), end="")
            return 0
        if args.command == "run":
            run_dir = RunDir(Path(args.run_dir or Path("runs") / Path(args.config).stem))
            run_dir.save_config(cfg)
        else:
            run_dir = RunDir(Path(args.run_dir))
            cfg = run_dir.load_config()
        metrics = _run_stages(args.command, cfg, run_dir)
    except config_lib.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except guards.RunError as e:  # bad numbers from a reward function, an environment or an update: no traceback
        log.error("%s failed: %s", args.command, e)
        return 1
    except preemption.Preempted as e:
        log.warning("%s: %s; re-run the same command to continue", args.command, e)
        return preemption.EXIT_CODE
    except Exception:  # a failed batch job must say why, then exit non-zero
        log.exception("%s failed", args.command)
        return 1
    print(f"run directory: {run_dir.root}\n"
          f"tensorboard:   tensorboard --logdir {run_dir.root / 'tb'}\n"
          f"metrics:       {run_dir.metrics_path}")
    if "export.path" in metrics:
        print(f"export:        {metrics['export.path']}\nmodels.config: {metrics['export.models_config']}")
    return 0


def _preflight(cfg) -> None:
    """What the config names must exist: a wrong env.id or reward.function is a config error, found before work."""
    if cfg.task == "gym":
        check_environment(cfg.env)
        return
    from pipeline.lm.rewards import load_reward_function
    try:
        load_reward_function(cfg.reward.function)
    except ValueError as e:
        raise config_lib.ConfigError(f"reward.function: {e}") from None
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


def _run_stages(command: str, cfg, run_dir: RunDir) -> dict:
    # Imported here so that `--help` and config errors answer without loading TensorFlow.
    from pipeline import summaries

    metrics = (_run_lm_stages if cfg.task == "lm" else _run_gym_stages)(command, cfg, run_dir)
    summaries.write_hparams(run_dir, cfg, metrics)
    return metrics


def _run_gym_stages(command: str, cfg, run_dir: RunDir) -> dict:
    from pipeline.stages import environment, evaluate, export, model, train

    spaces = environment.run(cfg, run_dir)
    learner = model.run(cfg, run_dir, spaces)
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


def _run_lm_stages(command: str, cfg, run_dir: RunDir) -> dict:
    from pipeline.lm.rewards import load_reward_function
    from pipeline.memory import peaks
    from pipeline.stages import export, lm_data, lm_evaluate, lm_ppo, reward, sft

    if command != "run" and lm_ppo.latest_checkpoint(run_dir) is None:
        raise config_lib.ConfigError(f"{run_dir.root}: no PPO checkpoint to {command}; "
                                     f"run `python -m pipeline run` first")
    reward_fn = load_reward_function(cfg.reward.function)  # checked by _preflight
    data = lm_data.run(cfg, run_dir)
    lm, sft_metrics = sft.run(cfg, run_dir, data)
    metrics = _save(run_dir, {**sft_metrics, **peaks("sft")})
    rewards, reward_metrics = reward.run(cfg, run_dir, data, lm, reward_fn)  # before PPO changes lm
    metrics = _save(run_dir, {**reward_metrics, **peaks("reward")})
    learner, ppo_metrics = lm_ppo.run(cfg, run_dir, data, lm, rewards, train=command == "run")
    if command == "run":
        metrics = _save(run_dir, {**ppo_metrics, **peaks("ppo")})
    if command in ("run", "evaluate"):
        metrics = _save(run_dir, {**lm_evaluate.run(cfg, run_dir, data, learner, rewards), **peaks("evaluate")})
    if command in ("run", "export"):
        metrics = _save(run_dir, {**export.run_lm(cfg, run_dir, learner, data, lm_ppo.latest_checkpoint(run_dir)),
                                  **peaks("export")})
    return metrics


def _save(run_dir: RunDir, values: dict) -> dict:
    """NaN (e.g. no episode finished yet) is stored as null: metrics.json stays strict JSON."""
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
    return run_dir.update_metrics(clean)


if __name__ == "__main__":
    sys.exit(main())
