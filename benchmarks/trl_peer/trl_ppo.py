"""The peer: Hugging Face TRL's PPOTrainer on a checkpoint directory, timed by phase as
benchmarks/lm_throughput.py times this project's learner, at the same settings.

Random prompts of 16 tokens, 32-token responses sampled to full length (no stop token), 4 PPO epochs of one
minibatch, a separate value model loaded from the same checkpoint (TRL's layout). The reward model is a
one-layer GPT-2 classifier, a stand-in for the project side's free random scores (its forward pass is ~1% of
the policy's). Phases as TRL runs them: generation (batch_generation), scoring (log-probs, reference, values,
rewards, GAE: until the first forward pass with gradients) and update (the epochs, until on_step_end).
Medians over --iterations after one warm-up iteration; peak RSS of the process at the end.

    python trl_ppo.py CHECKPOINT_DIR [--batch 8] [--iterations 3] [--lora-rank 16] [--bf16]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time

import numpy as np
import torch
import transformers
from datasets import Dataset
from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer

PROMPT, RESPONSE, EPOCHS = 16, 32, 4
LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]  # GPT-2's query/key/value (fused), attention and both MLP projections


class PhaseClock(transformers.TrainerCallback):
    """Marks each iteration's phase boundaries through TRL's own module functions and callbacks."""

    def __init__(self):
        self.marks: list[dict] = []

    def install(self) -> None:
        generate, forward = ppo_trainer.batch_generation, ppo_trainer.forward

        def timed_generation(*args, **kwargs):
            mark = {"start": time.perf_counter()}
            self.marks.append(mark)
            result = generate(*args, **kwargs)
            mark["generated"] = time.perf_counter()
            return result

        def timed_forward(*args, **kwargs):
            if torch.is_grad_enabled() and "scored" not in self.marks[-1]:
                self.marks[-1]["scored"] = time.perf_counter()
            return forward(*args, **kwargs)

        ppo_trainer.batch_generation, ppo_trainer.forward = timed_generation, timed_forward

    def on_step_end(self, args, state, control, **kwargs):
        self.marks[-1]["done"] = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning")
    parser.add_argument("--bf16", action="store_true", help="TRL's bf16: autocast to bfloat16, float32 weights")
    args = parser.parse_args()
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.checkpoint)
    tokenizer.pad_token = tokenizer.eos_token
    policy = transformers.AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32)
    value = transformers.AutoModelForSequenceClassification.from_pretrained(
        args.checkpoint, num_labels=1, dtype=torch.float32
    )
    reward = transformers.GPT2ForSequenceClassification(
        transformers.GPT2Config(
            vocab_size=policy.config.vocab_size,
            n_layer=1,
            n_head=1,
            n_embd=64,
            num_labels=1,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    for model in (policy, value, reward):
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = None
    if args.lora_rank:
        import peft

        peft_config = peft.LoraConfig(
            r=args.lora_rank,
            lora_alpha=args.lora_rank,
            target_modules=LORA_TARGETS,
            lora_dropout=0.0,
            bias="none",
            fan_in_fan_out=True,
        )
        value = peft.get_peft_model(
            value,
            peft.LoraConfig(
                r=args.lora_rank,
                lora_alpha=args.lora_rank,
                target_modules=LORA_TARGETS,
                lora_dropout=0.0,
                bias="none",
                fan_in_fan_out=True,
                task_type="SEQ_CLS",
            ),
        )  # its own adapters, as the project's
    rng = np.random.default_rng(0)
    prompts = rng.integers(0, tokenizer.pad_token_id, size=(args.batch * (args.iterations + 1), PROMPT))
    dataset = Dataset.from_dict({"input_ids": prompts.tolist()})
    with tempfile.TemporaryDirectory() as output_dir:
        config = PPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=1,
            num_mini_batches=1,
            num_ppo_epochs=EPOCHS,
            local_rollout_forward_batch_size=args.batch,
            response_length=RESPONSE,
            stop_token=None,
            missing_eos_penalty=None,
            total_episodes=args.batch * (args.iterations + 1),
            num_sample_generations=0,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            seed=0,
            use_cpu=True,
            bf16=args.bf16,
            disable_tqdm=True,
            learning_rate=1e-6,
        )
        clock = PhaseClock()
        clock.install()
        trainer = PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=None,
            reward_model=reward,
            train_dataset=dataset,
            value_model=value,
            eval_dataset=dataset,
            callbacks=[clock],
            peft_config=peft_config,
        )
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        trainer.train()
    first, steady = clock.marks[0], clock.marks[1:]
    phases = {
        name: statistics.median(m[end] - m[start] for m in steady)
        for name, start, end in (
            ("generation", "start", "generated"),
            ("scoring", "generated", "scored"),
            ("update", "scored", "done"),
            ("iteration", "start", "done"),
        )
    }
    print(
        f"first iteration: generation {first['generated'] - first['start']:.2f} s, scoring "
        f"{first['scored'] - first['generated']:.2f} s, update {first['done'] - first['scored']:.2f} s"
    )
    print(
        f"TRL {__import__('trl').__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"batch={args.batch} prompt={PROMPT} response={RESPONSE} epochs={EPOCHS} lora_rank={args.lora_rank}; "
        f"trainable parameters {trainable:,}"
    )
    print(f"generation tokens/s: {args.batch * RESPONSE / phases['generation']:,.0f}")
    update_tokens = args.batch * (PROMPT + RESPONSE) * EPOCHS
    print(
        f"update tokens/s:     {update_tokens / phases['update']:,.0f}  (with scoring: "
        f"{update_tokens / (phases['update'] + phases['scoring']):,.0f})"
    )
    print(
        f"seconds per PPO iteration: {phases['iteration']:.3f} (generation {phases['generation']:.3f}, "
        f"scoring {phases['scoring']:.3f}, update {phases['update']:.3f})"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
