"""LM PPO throughput at the settings of the PyTorch reference measured on this machine (TRL 1.12, README).

Random-init GPT-2 (or --checkpoint: a local keras-hub or Hugging Face checkpoint, e.g. the GPT-2-124M one
benchmarks/trl_peer/write_checkpoint.py writes), random 16-token prompts, 32-token responses sampled to full
length (no EOS), 4 PPO epochs with one optimizer step each (num_minibatches=1). Prints generation tokens/s,
update tokens/s and seconds per PPO iteration (medians over --iterations after one warm-up iteration), and compile
times.
The phases are TRL's: generation; scoring (policy, reference and value forward passes, rewards, GAE: TRL
does these in its rollout phase, after generating); update (the PPO epochs).
The value model is separate by default, as in the reference (--value-model shared: a head on the policy).
--lora-rank R trains LoRA adapters on every attention and feed-forward projection (and the separate value
trunk's own) instead of every weight. --algorithm grpo: GRPO at TRL's defaults (no value model, beta 0: no
reference, one epoch), the batch one prompt's group of completions (benchmarks/trl_peer/trl_grpo.py is its peer).
Prints the process's peak RSS at the end.

    python benchmarks/lm_throughput.py [--size tiny|small | --checkpoint DIR] [--batch 16] [--iterations 3]
                                       [--no-jit] [--no-jit-update] [--value-model separate|shared] [--lora-rank R]
                                       [--algorithm ppo|grpo] [--precision float32|mixed_bfloat16]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: F401  (TensorFlow's environment first)

# isort: split

import numpy as np
import tensorflow as tf

from models import checkpoints, lora
from models import lm as lm_lib
from pipeline.core import devices
from pipeline.lm.config import LMPPOConfig
from pipeline.lm.ppo import LMPPOLearner

SIZES = {
    "tiny": lm_lib.LMSize(
        vocabulary_size=512, num_layers=2, num_heads=2, hidden_dim=64, intermediate_dim=256, max_sequence_length=128
    ),
    "small": lm_lib.LMSize(
        vocabulary_size=2048, num_layers=4, num_heads=4, hidden_dim=256, intermediate_dim=1024, max_sequence_length=256
    ),
}
PROMPT, RESPONSE, EPOCHS = 16, 32, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--no-jit", dest="jit", action="store_false", help="sampling without XLA")
    parser.add_argument(
        "--no-jit-update",
        dest="jit_update",
        action="store_false",
        help="scoring and optimizer steps without XLA (ppo.jit_update: false)",
    )
    parser.add_argument("--value-model", choices=["separate", "shared"], default="separate")
    parser.add_argument("--checkpoint", help="a local checkpoint directory instead of --size")
    parser.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning")
    parser.add_argument("--algorithm", choices=["ppo", "grpo"], default="ppo")
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32", help="model.precision")
    args = parser.parse_args()
    if args.checkpoint:
        info = checkpoints.inspect(args.checkpoint)
        lm, family, args.size = checkpoints.load_causal_lm(info, args.precision), info.family, args.checkpoint
    else:
        lm, family = lm_lib.build_causal_lm(SIZES[args.size], precision=args.precision), "GPT-2"
    vocabulary_size = lm.backbone.vocabulary_size
    unavailable = lora.unavailable_targets(family, lora.TARGETS)
    adapters = (
        lora.Adapters(args.lora_rank, float(args.lora_rank), tuple(t for t in lora.TARGETS if t not in unavailable))
        if args.lora_rank
        else None
    )
    learner = LMPPOLearner(
        lm,
        LMPPOConfig(
            max_new_tokens=RESPONSE,
            num_minibatches=1,
            jit_generation=args.jit,
            jit_update=args.jit_update,
            value_model=args.value_model,
            **(
                dict(algorithm="ppo", num_epochs=EPOCHS)
                if args.algorithm == "ppo"
                else dict(algorithm="grpo", num_generations=args.batch, batch_size=args.batch)
            ),
        ),
        eos_id=None,
        seed=0,
        adapters=adapters,
    )
    rng = np.random.default_rng(0)
    score = lambda prompts, responses: rng.normal(size=len(responses))  # noqa: E731
    generation, scoring, update, total = [], [], [], []
    for i in range(args.iterations + 1):
        prompts = rng.integers(0, vocabulary_size, size=(args.batch, PROMPT)).astype(np.int32)
        start = time.perf_counter()
        sequences = tf.constant(learner.generate(prompts))
        generated = time.perf_counter()
        mask, scores = tf.ones([args.batch, RESPONSE]), tf.constant(score(prompts, sequences), tf.float32)
        lengths = tf.fill([args.batch], PROMPT)
        prepared, _ = learner._compiled_prepare(sequences, mask, scores, lengths)
        prepared[0].numpy()
        scored = time.perf_counter()
        learner._compiled_optimize(sequences, mask, *prepared, lengths)["loss/policy"].numpy()
        done = time.perf_counter()
        if i == 0:
            print(
                f"compile (first call, incl. tracing): generation {generated - start:.2f} s, "
                f"scoring {scored - generated:.2f} s, update {done - scored:.2f} s",
                flush=True,
            )
            continue
        generation.append(generated - start)
        scoring.append(scored - generated)
        update.append(done - scored)
        total.append(done - start)
    gen_s, score_s, upd_s, it_s = (statistics.median(x) for x in (generation, scoring, update, total))
    print(
        f"size={args.size} batch={args.batch} jit={args.jit} jit_update={args.jit_update} "
        f"value_model={args.value_model} algorithm={args.algorithm} prompt={PROMPT} "
        f"response={RESPONSE} epochs={learner.settings.num_epochs} lora_rank={args.lora_rank} "
        f"precision={args.precision}; "
        f"{devices.describe(learner.variables)}; "
        f"trainable parameters {sum(int(np.prod(v.shape)) for v in learner.variables):,}"
    )
    print(f"generation tokens/s: {args.batch * RESPONSE / gen_s:,.0f}")
    update_tokens = args.batch * (PROMPT + RESPONSE) * learner.settings.num_epochs
    print(
        f"update tokens/s:     {update_tokens / upd_s:,.0f}  (batch x (prompt + response) x epochs / seconds "
        f"of the epochs; with scoring: {update_tokens / (upd_s + score_s):,.0f})"
    )
    print(f"seconds per PPO iteration: {it_s:.3f} (generation {gen_s:.3f}, scoring {score_s:.3f}, update {upd_s:.3f})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
