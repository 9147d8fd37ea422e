"""How far a bfloat16 reference moves the KL PPO penalises (ppo.reference_precision), on a finished LM run.

Restores the run's PPO policy twice, once with a float32 reference and once with a bfloat16 one, samples responses
to the held-out prompts from the policy, and compares the per-sequence KL (summed per-token log-ratio, as
evaluation reports it) and the per-token reference log-probs. Usage:
    python benchmarks/reference_precision.py [RUN_DIR]   (default runs/lm, which `make lm-demo` writes)
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pipeline  # noqa: F401  (sets TensorFlow's environment first)


def main() -> None:
    import numpy as np

    from models import lm as lm_lib
    from pipeline.core.rundir import RunDir
    from pipeline.lm.rewards import load_reward_function
    from pipeline.lm.stages import data as lm_data
    from pipeline.lm.stages import ppo as lm_ppo
    from pipeline.lm.stages import sft

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", nargs="?", default="runs/lm")
    args = parser.parse_args()
    run = RunDir(Path(args.run_dir))
    cfg = run.load_config()
    data = lm_data.run(cfg, run)
    learners = {}
    for precision in ("policy", "bfloat16"):  # each from a fresh SFT model: the reference copies the SFT weights
        variant = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, reference_precision=precision))
        learners[precision], _ = lm_ppo.run(
            variant, run, data, sft.run(variant, run, data)[0], load_reward_function(cfg.reward.function), train=False
        )
    prompts, lengths = data.prompt_batch(data.eval_prompts[: cfg.evaluate.prompts])
    sequences = learners["policy"].generate(prompts, prompt_lengths=lengths)
    mask = lm_lib.response_mask(lm_lib.responses(sequences, lengths, cfg.ppo.max_new_tokens), data.eos_id).numpy()
    policy, reference = learners["policy"].log_probs(sequences, lengths)
    _, reference_bf16 = learners["bfloat16"].log_probs(sequences, lengths)
    kl = ((policy - reference) * mask).sum(axis=1)
    kl_bf16 = ((policy - reference_bf16) * mask).sum(axis=1)
    weights = {p: sum(v.numpy().nbytes for v in learner.reference.weights) for p, learner in learners.items()}
    print(
        f"run {run.root}: {len(sequences)} held-out prompts, {int(mask.sum())} response tokens, "
        f"{learners['policy'].iteration.numpy()} PPO iterations"
    )
    print(
        f"reference weights: {weights['policy'] / 2**20:.1f} MiB ({cfg.model.precision}) -> "
        f"{weights['bfloat16'] / 2**20:.1f} MiB (bfloat16)"
    )
    print(
        f"mean KL per sequence: float32 reference {kl.mean():.4f}, bfloat16 reference {kl_bf16.mean():.4f} "
        f"(relative difference {abs(kl_bf16.mean() - kl.mean()) / abs(kl.mean()):.2%})"
    )
    print(f"per-sequence KL |difference|: mean {np.abs(kl_bf16 - kl).mean():.4f}, max {np.abs(kl_bf16 - kl).max():.4f}")
    print(
        f"per-token reference log-prob |difference|: mean {np.abs(reference_bf16 - reference)[mask > 0].mean():.4f}, "
        f"max {np.abs(reference_bf16 - reference)[mask > 0].max():.4f}"
    )


if __name__ == "__main__":
    main()
