"""LM evaluate stage: the SFT model and the PPO policy on the same held-out prompts.

Gold reward = the configured reward function (there is no learned proxy yet, so proxy == gold); KL is the
summed per-token log-ratio to the frozen SFT reference on the policy's own samples.
"""

from __future__ import annotations

import numpy as np

from models import lm as lm_lib
from pipeline import summaries
from pipeline.config import LMConfig
from pipeline.lm.ppo import LMPPOLearner
from pipeline.rundir import RunDir
from pipeline.stages.lm_data import LMData


def run(cfg: LMConfig, run_dir: RunDir, data: LMData, learner: LMPPOLearner, reward_fn) -> dict:
    prompts = data.eval_prompts[:cfg.evaluate.prompts]
    prompt_length = prompts.shape[1]
    prompt_texts = data.decode(prompts)
    metrics, completions = {}, {}
    for name, use_reference in (("sft", True), ("ppo", False)):
        sequences = learner.generate(prompts, use_reference=use_reference)
        responses = sequences[:, prompt_length:]
        mask = lm_lib.response_mask(responses, data.eos_id).numpy()
        completions[name] = data.decode(responses)
        gold = float(np.mean(reward_fn(prompt_texts, completions[name])))
        metrics.update({f"eval.{name}.gold_reward": gold, f"eval.{name}.proxy_reward": gold,
                        f"eval.{name}.mean_response_tokens": float(mask.sum(axis=1).mean())})
        if not use_reference:
            policy_lp, reference_lp = learner.log_probs(sequences, prompt_length)
            metrics["eval.ppo.kl"] = float(((policy_lp - reference_lp) * mask).sum(axis=1).mean())
    step = int(learner.iteration)
    with summaries.stage_writer(run_dir, "evaluate"):
        summaries.scalars({k.replace("eval.", "eval/"): v for k, v in metrics.items()}, step=step)
        rows = "\n".join(f"| {_cell(p)} | {_cell(s)} | {_cell(q)} |" for p, s, q in
                         list(zip(prompt_texts, completions["sft"], completions["ppo"]))[:cfg.evaluate.samples])
        summaries.text("eval/samples", f"| prompt | SFT | PPO |\n|---|---|---|\n{rows}", step=step)
    return metrics


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
