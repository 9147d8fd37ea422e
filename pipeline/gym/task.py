"""task: gym, as the job runner sees it: environment -> model -> train -> evaluate -> export."""

from __future__ import annotations

from pipeline.core.schema import ConfigError
from pipeline.core.task import Task
from pipeline.gym.config import GymConfig


class GymTask(Task):
    config = GymConfig
    warm_start_key = "train.warm_start"
    warm_start_shared = ("env.id", "env.kwargs", "model", "train.normalize_observations")
    stages = (("train", "train."), ("evaluate", "eval."), ("export", "export."))

    def preflight(self, cfg: GymConfig) -> None:
        from pipeline.gym.envs import check_environment

        check_environment(cfg.env)

    def check_split(self, cfg: GymConfig, strategy) -> None:
        from pipeline.core import distribute
        from pipeline.gym.ppo import check_split

        check_split(cfg, distribute.worker(strategy).count, strategy.num_replicas_in_sync)

    def run_stages(self, command: str, cfg: GymConfig, run_dir, strategy=None) -> dict:
        from pipeline.gym.stages import environment, evaluate, export, model, train

        spaces = environment.run(cfg, run_dir)
        learner = model.run(cfg, run_dir, spaces, strategy)
        if command == "run":
            metrics = run_dir.update_metrics(train.run(cfg, run_dir, learner))
        else:
            metrics = run_dir.read_metrics()
        checkpoint = train.latest_checkpoint(run_dir)
        if checkpoint is None:
            raise ConfigError(f"{run_dir.root}: no checkpoint to {command}; run `python -m pipeline run` first")
        if command in ("run", "evaluate"):
            metrics = run_dir.update_metrics(evaluate.run(cfg, run_dir, learner))
        if command in ("run", "export"):
            metrics = run_dir.update_metrics(export.run(cfg, run_dir, learner, checkpoint))
        return metrics

    def run_worker(self, cfg: GymConfig, scratch, run_dir, strategy) -> None:
        from pipeline.gym.stages import environment, model, train

        spaces = environment.run(cfg, scratch)
        train.run(cfg, scratch, model.run(cfg, scratch, spaces, strategy, restore_from=run_dir))

    def progress(self, cfg: GymConfig, metrics: dict) -> dict:
        return {"env_steps": metrics.get("train.env_steps", 0), "of": cfg.train.total_env_steps}

    def subject(self, cfg: GymConfig) -> str:
        return cfg.env.id


TASK = GymTask()
