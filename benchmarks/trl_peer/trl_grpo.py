"""The GRPO peer at the GPT-2-124M benchmark shape: Hugging Face TRL 1.16's GRPOTrainer on a checkpoint directory,
as `benchmarks/lm_throughput.py --algorithm grpo` runs this project's learner: 8 completions a step (one prompt's
group of 8), random 16-token prompts, 32-token completions, TRL's defaults otherwise (beta 0: no reference model,
loss_type dapo, one iteration per batch), a random reward. Prints the median seconds per step after one warm-up step
and the peak RSS of the process.

    python trl_grpo.py CHECKPOINT_DIR [--batch 8] [--steps 3]

Its environment: requirements-grpo.txt (TRL 1.16), apart from the project's.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

PROMPT, RESPONSE = 16, 32


class StepTimes(TrainerCallback):
    def __init__(self):
        self.seconds, self._start = [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint)
    prompts = [tokenizer.decode(rng.integers(0, len(tokenizer) - 1, PROMPT)) for _ in range(args.steps + 1)]
    times = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=lambda completions, **kwargs: rng.normal(size=len(completions)).tolist(),
            args=GRPOConfig(
                output_dir=out,
                num_generations=args.batch,
                per_device_train_batch_size=args.batch,
                max_completion_length=RESPONSE,
                max_steps=args.steps + 1,
                beta=0.0,
                temperature=1.0,
                bf16=False,
                gradient_checkpointing=False,
                use_cpu=True,
                report_to="none",
                save_strategy="no",
                logging_steps=1,
            ),
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            processing_class=tokenizer,
            callbacks=[times],
        )
        trainer.train()
    print(f"trl {__import__('trl').__version__}, torch {torch.__version__}: batch {args.batch} completions")
    print(f"seconds per GRPO step: {statistics.median(times.seconds[1:]):.3f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
