"""The peer of `make lm-demo-grpo`: Hugging Face TRL 1.16's GRPOTrainer on the same arithmetic task, the same SFT
model shape, tokenizer, data split and settings, from configs/lm_arithmetic_grpo.yaml; prints held-out accuracy
before and after GRPO and the wall time of each phase as JSON.

SFT: a plain PyTorch loop with the config's epochs, batch size and learning rate (Adam), on the same noisy corpus,
each line + EOS. GRPO: GRPOTrainer with num_generations, the batch (completions per step), max_completion_length,
the learning rate (constant, no weight decay: Adam as ours), beta 0 and loss_type dapo (TRL's defaults, as ours),
gradient clipping at ppo.max_grad_norm, the config's iterations as steps. Held-out accuracy: one completion per
held-out prompt sampled at temperature 1, exact answer, as the project's evaluate stage scores it.

    python trl_grpo_arithmetic.py RUN_DIR DATA_DIR [--config configs/lm_arithmetic_grpo.yaml]

RUN_DIR: the project's run of the same config (its tokenizer/ is reused); DATA_DIR: what `python -m
pipeline.lm.arithmetic DATA_DIR` wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import ByteLevelBPETokenizer  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402


def exact_answer(completions, answer, **kwargs):
    return [float(text.strip() == str(a).strip()) for text, a in zip(completions, answer)]


def split(prompts_file: Path, seed: int, validation_fraction: float):
    """(train rows, held-out rows) as the project's data stage splits a prompt file."""
    rows = [json.loads(line) for line in prompts_file.read_text().splitlines() if line.strip()]
    rows = [rows[i] for i in np.random.default_rng(seed).permutation(len(rows))]
    held_out = max(1, int(len(rows) * validation_fraction))
    return rows[held_out:], rows[:held_out]


def sft(model, tokenizer, lines, cfg, seed):
    s, length = cfg["sft"], cfg["data"]["sequence_length"]
    eos = tokenizer.eos_token_id
    ids = np.full((len(lines), length), eos, np.int64)
    mask = np.zeros((len(lines), length), np.int64)
    for row, line in enumerate(lines):
        tokens = (tokenizer(line)["input_ids"])[: length - 1] + [eos]
        ids[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1
    optimizer = torch.optim.Adam(model.parameters(), lr=s["learning_rate"])
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(s["epochs"]):
        order = rng.permutation(len(lines))
        for start in range(0, len(order) - s["batch_size"] + 1, s["batch_size"]):
            batch = order[start : start + s["batch_size"]]
            x, m = torch.tensor(ids[batch]), torch.tensor(mask[batch])
            labels = x.masked_fill(m == 0, -100)
            loss = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model, tokenizer, rows, max_new_tokens: int, seed: int) -> float:
    """One completion per prompt, sampled at temperature 1 (prompts of one token length at a time: no padding)."""
    torch.manual_seed(seed)
    model.eval()
    by_length: dict[int, list] = {}
    for row in rows:
        by_length.setdefault(len(tokenizer(row["prompt"])["input_ids"]), []).append(row)
    correct = 0
    for group in by_length.values():
        x = torch.tensor([tokenizer(r["prompt"])["input_ids"] for r in group])
        out = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts = tokenizer.batch_decode(out[:, x.shape[1] :], skip_special_tokens=True)
        correct += sum(exact_answer(texts, [r["answer"] for r in group]))
    return correct / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[2] / "configs/lm_arithmetic_grpo.yaml")
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    d, m, p = cfg["data"], cfg["model"], cfg["ppo"]
    seed = d.get("seed", 0)
    torch.manual_seed(seed)
    bpe = ByteLevelBPETokenizer(
        str(args.run_dir / "tokenizer" / "vocab.json"), str(args.run_dir / "tokenizer" / "merges.txt")
    )  # the byte-level BPE the project trained (its GPT2Tokenizer reads the same two files)
    end = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token=end, bos_token=end, unk_token=end, pad_token=end
    )
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=m["max_sequence_length"],
            n_embd=m["hidden_dim"],
            n_layer=m["num_layers"],
            n_head=m["num_heads"],
            n_inner=m["intermediate_dim"],
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    train_rows, held_out = split(args.data_dir / "prompts.jsonl", seed, d["validation_fraction"])
    held_out = held_out[: cfg["evaluate"]["prompts"]]
    lines = [line for line in (args.data_dir / "corpus.txt").read_text().splitlines() if line.strip()]
    lines = [lines[i] for i in np.random.default_rng(seed).permutation(len(lines))]
    lines = lines[max(1, int(len(lines) * d.get("validation_fraction", 0.1))) :]  # the documents SFT trains on

    start = time.perf_counter()
    sft(model, tokenizer, lines, cfg, seed)
    sft_seconds = time.perf_counter() - start
    before = accuracy(model, tokenizer, held_out, p["max_new_tokens"], seed)

    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=exact_answer,
            args=GRPOConfig(
                output_dir=out,
                num_generations=p["num_generations"],
                per_device_train_batch_size=p["batch_size"],
                gradient_accumulation_steps=1,
                max_completion_length=p["max_new_tokens"],
                learning_rate=p["learning_rate"],
                lr_scheduler_type="constant",
                weight_decay=0.0,
                max_grad_norm=p.get("max_grad_norm", 1.0),
                max_steps=p["iterations"],
                beta=0.0,
                temperature=1.0,
                bf16=False,
                gradient_checkpointing=False,
                use_cpu=True,
                report_to="none",
                save_strategy="no",
                logging_steps=10,
                seed=seed,
            ),
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tokenizer,
        )
        start = time.perf_counter()
        trainer.train()
        grpo_seconds = time.perf_counter() - start
    after = accuracy(trainer.model, tokenizer, held_out, p["max_new_tokens"], seed)
    print(
        json.dumps(
            {
                "held_out_prompts": len(held_out),
                "sft_accuracy": before,
                "grpo_accuracy": after,
                "sft_seconds": round(sft_seconds, 1),
                "grpo_seconds": round(grpo_seconds, 1),
                "versions": {"trl": __import__("trl").__version__, "torch": torch.__version__},
            }
        )
    )


if __name__ == "__main__":
    main()
