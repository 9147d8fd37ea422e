"""Parity with PEFT: LoRA adapters this project writes in PEFT's layout (models/peft.py), loaded onto the same
Hugging Face checkpoint by transformers + PEFT, give the logits our adapted model gives, on the same token ids.

Adapters of rank 4 on every projection the family has, B drawn at random (at initialisation B is 0 and any
loader would agree). transformers, PEFT and PyTorch live in the peer's environment (benchmarks/trl_peer/
requirements-grpo.txt plus peft), not the project's. Run by hand:

    python benchmarks/peft_parity.py --peer-python /path/to/peer/bin/python CHECKPOINT_DIR [CHECKPOINT_DIR ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: F401  (TensorFlow's environment first)

# isort: split

import numpy as np
import tensorflow as tf

from models import checkpoints, lora, peft

PEER = Path(__file__).resolve().parent / "trl_peer" / "hf_logits.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--peer-python", required=True, help="the peer environment's python")
    parser.add_argument("--tolerance", type=float, default=1e-3)
    args = parser.parse_args()
    failed = False
    for directory in args.checkpoints:
        info = checkpoints.inspect(directory)
        lm = checkpoints.load_causal_lm(info)
        targets = tuple(t for t in lora.TARGETS if t not in lora.unavailable_targets(info.family, lora.TARGETS))
        adapters = lora.Adapters(rank=4, alpha=8.0, targets=targets)
        for i, layer in enumerate(lora.enable(lm, adapters)):
            layer.lora_b.assign(tf.random.normal(layer.lora_b.shape, stddev=0.02, seed=i))
        with tempfile.TemporaryDirectory() as tmp:
            peft.save(lm, adapters, info.family, Path(tmp) / "adapter", base_model=str(info.path))
            out = Path(tmp) / "logits.npz"
            subprocess.run(
                [args.peer_python, str(PEER), directory, str(out), "--adapter", str(Path(tmp) / "adapter")], check=True
            )
            peer = np.load(out)
        ids = peer["token_ids"]
        ours = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
        with lora.adapters_off(lm):
            base = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
        difference = np.abs(ours - peer["logits"])
        ok = difference.max() <= args.tolerance
        failed |= not ok
        print(
            f"{directory}: {info.family}, adapters on {', '.join(targets)}: max |ours - PEFT| {difference.max():.2e} "
            f"{'<=' if ok else '>'} {args.tolerance:g} (the adapters move the logits by up to "
            f"{np.abs(ours - base).max():.2e}); peer: {', '.join(peer['versions'])}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
