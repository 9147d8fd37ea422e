"""Export stage (lm): the policy's servable, with the tokenizer and the KV-cache sampling loop in the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core import publish
from pipeline.core.rundir import RunDir
from pipeline.lm.config import LMConfig
from pipeline.lm.data import columns_at
from pipeline.lm.rewards import RewardFunctions


def run(cfg: LMConfig, run_dir: RunDir, learner, data, checkpoint: str, reward_fn) -> dict:
    from export import lm_servable

    p = cfg.ppo

    def build():
        archive = lm_servable.build_archive(
            learner.servable_policy(),
            data.tokenizer,
            data.eos_id,
            lm_servable.GenerationDefaults(
                max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p
            ),
            max_length=cfg.model.max_sequence_length,
            bos_id=data.bos_id,
        )
        return lambda path: lm_servable.save(archive, path)

    info = {"ppo_iterations": int(learner.iteration)}
    prompt_ids = data.eval_prompts[: cfg.evaluate.prompts]
    prompts, columns = data.decode(prompt_ids), columns_at(data.eval_columns, np.arange(len(prompt_ids)))
    return publish.publish(
        cfg.export,
        run_dir,
        cfg.export.model_name or "lm_policy",
        checkpoint,
        build,
        info,
        score=lambda version_dir: score(version_dir, prompts, columns, reward_fn, data.tokenizer, cfg.data.seed),
    )


def score(version_dir: Path, prompts: list[str], columns: dict, reward_fn: RewardFunctions, tokenizer, seed: int):
    """Blessing's score: the mean reward of the SavedModel's completions of the prompts, sampled with its own
    settings and `seed`."""
    from export.policies import load_policy

    completions = load_policy(version_dir)(prompts, seed=seed)
    completion_ids = [np.asarray(tokenizer(text)).tolist() for text in completions]
    return float(np.mean(reward_fn(prompts, completions, completion_ids, columns).total, dtype=np.float64))
