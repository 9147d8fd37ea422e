"""LM evaluate stage: the SFT model and the trained policy on the same held-out prompts.

Proxy reward = what PPO maximised (the learned reward model, or reward.function itself); gold reward =
reward.function. KL is the summed per-token log-ratio to the frozen SFT reference on the policy's own samples.
"""

from __future__ import annotations

import numpy as np

from models import lm as lm_lib
from pipeline.core import summaries
from pipeline.core.rundir import RunDir
from pipeline.lm.config import LMConfig
from pipeline.lm.data import LMData, columns_at
from pipeline.lm.ppo import LMPPOLearner
from pipeline.lm.rewards import Rewards


def run(cfg: LMConfig, run_dir: RunDir, data: LMData, learner: LMPPOLearner, rewards: Rewards) -> dict:
    net = learner.networks
    if net.reference is None and net.adapters is None:  # trained without one (beta 0): the SFT model, now
        from pipeline.lm.stages import sft

        precision = None if cfg.ppo.reference_precision == "policy" else cfg.ppo.reference_precision
        net.attach_reference(sft.load(cfg, run_dir, data, precision))
    prompts, lengths = data.prompt_batch(data.eval_prompts[: cfg.evaluate.prompts])
    columns = columns_at(data.eval_columns, np.arange(len(prompts)))
    prompt_texts = data.decode(prompts)
    metrics, completions = {}, {}
    for name, use_reference in (("sft", True), ("ppo", False)):
        sequences = learner.generate(prompts, use_reference=use_reference, prompt_lengths=lengths)
        responses = lm_lib.responses(sequences, lengths, cfg.ppo.max_new_tokens).numpy()
        mask = lm_lib.response_mask(responses, data.eos_id).numpy()
        completions[name] = data.decode(responses)
        metrics.update(
            {
                f"eval.{name}.gold_reward": float(np.mean(rewards.gold(prompts, responses, columns).total)),
                f"eval.{name}.proxy_reward": float(np.mean(rewards.proxy(prompts, responses, columns).total)),
                f"eval.{name}.mean_response_tokens": float(mask.sum(axis=1).mean()),
            }
        )
        if not use_reference:
            policy_lp, reference_lp = learner.log_probs(sequences, lengths)
            metrics["eval.ppo.kl"] = float(((policy_lp - reference_lp) * mask).sum(axis=1).mean())
    step = int(learner.iteration)
    with summaries.stage_writer(run_dir, "evaluate"):
        summaries.scalars({k.replace("eval.", "eval/"): v for k, v in metrics.items()}, step=step)
        rows = list(zip(prompt_texts, completions["sft"], completions["ppo"]))[: cfg.evaluate.samples]
        summaries.text("eval/samples", summaries.markdown_columns(["prompt", "SFT", "PPO"], rows), step=step)
    return metrics
