"""transformers' logits for fixed token ids on a checkpoint directory, saved for benchmarks/hf_parity.py.

python hf_logits.py CHECKPOINT_DIR OUT.npz [--batch 4] [--length 32] [--seed 0] [--adapter PEFT_DIR]

--adapter: a PEFT LoRA adapter folder loaded onto the checkpoint (PeftModel.from_pretrained) first.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", help="a PEFT adapter folder to load onto the checkpoint")
    args = parser.parse_args()
    model = transformers.AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    versions = [f"transformers {transformers.__version__}", f"torch {torch.__version__}"]
    if args.adapter:
        import peft

        model = peft.PeftModel.from_pretrained(model, args.adapter).eval()
        versions.append(f"peft {peft.__version__}")
    ids = np.random.default_rng(args.seed).integers(0, model.config.vocab_size, (args.batch, args.length))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids)).logits.numpy()
    np.savez(
        args.out,
        token_ids=ids.astype(np.int32),
        logits=logits,
        versions=np.array(versions),
    )


if __name__ == "__main__":
    main()
