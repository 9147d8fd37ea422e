"""task: lm, as the job runner sees it: data -> sft -> reward -> ppo -> evaluate -> export."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.schema import ConfigError, require_split
from pipeline.core.task import Task
from pipeline.lm.config import LMConfig


class LMTask(Task):
    config = LMConfig
    warm_start_key = "ppo.warm_start"
    warm_start_shared = ("data", "model", "ppo.value_model", "ppo.algorithm")
    stages = (("sft", "sft."), ("reward", "reward."), ("ppo", "ppo."), ("evaluate", "eval."), ("export", "export."))

    def preflight(self, cfg: LMConfig) -> None:
        from pipeline.lm.rewards import load_reward_functions

        key = "reward.functions" if cfg.reward.functions else "reward.function"
        try:
            functions = load_reward_functions(cfg.reward)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
        if functions.columns and cfg.data.prompts is None:
            raise ConfigError(
                f"{key}: takes the prompt column(s) {', '.join(functions.columns)}, but data.prompts is null "
                f"(prompts cut from the corpus have no columns); set data.prompts to a JSONL file whose rows hold them"
            )
        if cfg.data.prompts is not None and not Path(cfg.data.prompts).is_file():
            raise ConfigError(
                f"data.prompts: {cfg.data.prompts!r} is not a file; expected a JSONL file of "
                f"prompts (one object per line, the text under data.prompt_field), or null"
            )
        family = "GPT-2"  # from scratch
        if cfg.model.checkpoint is not None:
            from models import checkpoints

            try:
                info = checkpoints.inspect(cfg.model.checkpoint)
            except checkpoints.CheckpointError as e:
                raise ConfigError(f"model.checkpoint: {e}") from None
            if info.max_sequence_length is not None and cfg.model.max_sequence_length > info.max_sequence_length:
                raise ConfigError(
                    f"model.max_sequence_length: {cfg.model.max_sequence_length} exceeds the "
                    f"{info.max_sequence_length} positions of model.checkpoint {info.path}; allowed values: 2 to "
                    f"{info.max_sequence_length}"
                )
            family = info.family
        if cfg.model.lora_rank is not None:
            from models import lora

            unavailable = lora.unavailable_targets(family, cfg.model.lora_targets)
            if unavailable:
                allowed = [t for t in lora.TARGETS if t not in unavailable]
                raise ConfigError(
                    f"model.lora_targets: {family} has no {', '.join(unavailable)}; allowed values: "
                    f"{', '.join(allowed)}"
                )
        if cfg.reward.preferences is not None:
            from pipeline.lm.preferences import PreferenceError, read_preferences

            try:
                read_preferences(cfg.reward.preferences)
            except PreferenceError as e:
                raise ConfigError(f"reward.preferences: {e}") from None

    def check_warm_start(self, cfg: LMConfig, source: str) -> None:
        """Besides a run's checkpoint: a PEFT LoRA adapter folder, for a LoRA run on the checkpoint it adapts."""
        from models import peft

        if not peft.is_adapter_folder(source):
            return super().check_warm_start(cfg, source)
        if cfg.model.lora_rank is None or cfg.model.checkpoint is None:
            raise ConfigError(
                f"ppo.warm_start: {source} is a PEFT adapter folder; it starts the adapters of a LoRA run "
                f"(model.lora_rank) on the checkpoint it adapts (model.checkpoint)"
            )

    def check_split(self, cfg: LMConfig, strategy) -> None:
        from pipeline.core import distribute
        from pipeline.lm.ppo import check_split

        replicas, allowed = strategy.num_replicas_in_sync, "a multiple of the replica count"
        require_split(
            "sft.batch_size",
            what=f"{cfg.sft.batch_size} documents",
            count=cfg.sft.batch_size,
            parts=replicas,
            over=f"{replicas} replicas",
            allowed=allowed,
        )
        if cfg.reward.kind == "learned":
            require_split(
                "reward.batch_size",
                what=f"{cfg.reward.batch_size} pairs",
                count=cfg.reward.batch_size,
                parts=replicas,
                over=f"{replicas} replicas",
                allowed=allowed,
            )
        check_split(cfg.ppo, distribute.worker(strategy).count, replicas)

    def run_stages(self, command: str, cfg: LMConfig, run_dir, strategy=None) -> dict:
        from pipeline.core.memory import peaks
        from pipeline.lm.rewards import load_reward_functions
        from pipeline.lm.stages import data as data_stage
        from pipeline.lm.stages import evaluate, export, ppo, reward, sft

        if command != "run" and ppo.latest_checkpoint(run_dir) is None:
            raise ConfigError(f"{run_dir.root}: no PPO checkpoint to {command}; run `python -m pipeline run` first")
        reward_fn = load_reward_functions(cfg.reward)  # checked by preflight
        data = data_stage.run(cfg, run_dir)
        lm, sft_metrics = sft.run(cfg, run_dir, data, strategy)
        metrics = run_dir.update_metrics({**sft_metrics, **peaks("sft")})
        rewards, reward_metrics = reward.run(cfg, run_dir, data, lm, reward_fn, strategy)  # before PPO changes lm
        metrics = run_dir.update_metrics({**reward_metrics, **peaks("reward")})
        learner, ppo_metrics = ppo.run(cfg, run_dir, data, lm, rewards, train=command == "run", strategy=strategy)
        if command == "run":
            metrics = run_dir.update_metrics({**ppo_metrics, **peaks("ppo")})
        if command in ("run", "evaluate"):
            metrics = run_dir.update_metrics(
                {**evaluate.run(cfg, run_dir, data, learner, rewards), **peaks("evaluate")}
            )
        if command in ("run", "export"):
            metrics = run_dir.update_metrics(
                {
                    **export.run(cfg, run_dir, learner, data, ppo.latest_checkpoint(run_dir), reward_fn),
                    **peaks("export"),
                }
            )
        return metrics

    def run_worker(self, cfg: LMConfig, scratch, run_dir, strategy) -> None:
        from pipeline.lm.rewards import load_reward_functions
        from pipeline.lm.stages import data as data_stage
        from pipeline.lm.stages import ppo, reward, sft

        data = data_stage.run(cfg, scratch)  # the same tokenizer as the chief's: trained on the same documents
        lm, _ = sft.run(cfg, scratch, data, strategy, restore_from=run_dir)
        rewards, _ = reward.run(
            cfg, scratch, data, lm, load_reward_functions(cfg.reward), strategy, restore_from=run_dir
        )
        ppo.run(cfg, scratch, data, lm, rewards, strategy=strategy, restore_from=run_dir)

    def progress(self, cfg: LMConfig, metrics: dict) -> dict:
        return {"iterations": metrics.get("ppo.iterations", 0), "of": cfg.ppo.iterations}

    def subject(self, cfg: LMConfig) -> str:
        return cfg.model.checkpoint or "GPT-2 from scratch"


TASK = LMTask()
