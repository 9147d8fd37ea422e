"""Parity with transformers: the same Hugging Face checkpoint's logits through this project's loader (keras-hub's
converters) and through transformers, on the same token ids. With --lora-rank, parity with PEFT too: adapters of
that rank on every projection the family has (B drawn at random: at initialisation B is 0 and any loader would
agree), written in PEFT's layout by models/peft.py and loaded onto the checkpoint by transformers + PEFT.

transformers, PEFT and PyTorch live in the peer's environment (benchmarks/trl_peer/requirements*.txt), not the
project's: this script runs the peer's hf_logits.py with that environment's Python and compares. Run by hand
(README.md):

    python benchmarks/hf_parity.py --peer-python /path/to/peer/bin/python [--lora-rank 4] CHECKPOINT_DIR [...]
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
    parser.add_argument("--lora-rank", type=int, help="compare with PEFT adapters of this rank")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    failed = False
    for directory in args.checkpoints:
        info = checkpoints.inspect(directory)
        lm = checkpoints.load_causal_lm(info)
        with tempfile.TemporaryDirectory() as tmp:
            command = [args.peer_python, str(PEER), directory, str(Path(tmp) / "logits.npz")]
            if args.lora_rank:
                targets = tuple(t for t in lora.TARGETS if t not in lora.unavailable_targets(info.family, lora.TARGETS))
                adapters = lora.Adapters(rank=args.lora_rank, alpha=2.0 * args.lora_rank, targets=targets)
                for i, layer in enumerate(lora.enable(lm, adapters)):
                    layer.lora_b.assign(tf.random.normal(layer.lora_b.shape, stddev=0.02, seed=i))
                peft.save(lm, adapters, info.family, Path(tmp) / "adapter", base_model=str(info.path))
                command += ["--adapter", str(Path(tmp) / "adapter")]
            subprocess.run(command, check=True)
            peer = dict(np.load(Path(tmp) / "logits.npz"))
        ids = peer["token_ids"]
        ours = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
        difference = np.abs(ours - peer["logits"])
        scale = np.abs(peer["logits"]).max()
        ok = difference.max() <= args.tolerance
        failed |= not ok
        what = (
            f"rank-{args.lora_rank} PEFT adapters on {len(lora.adapted_layers(lm))} layers, " if args.lora_rank else ""
        )
        print(
            f"{directory}: {info.family} ({type(lm).__name__}), {what}logits {ids.shape} x {ours.shape[-1]}: max |ours "
            f"- transformers| {difference.max():.2e} (mean {difference.mean():.2e}, logits up to {scale:.2f}) "
            f"{'<=' if ok else '>'} {args.tolerance:g}; peer: {', '.join(peer['versions'])}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
