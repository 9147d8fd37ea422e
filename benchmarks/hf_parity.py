"""Parity with transformers: the same Hugging Face checkpoint's logits through this project's loader (keras-hub's
converters) and through transformers, on the same token ids.

transformers and PyTorch live in the peer's environment (benchmarks/trl_peer/requirements.txt), not the project's:
this script runs the peer's hf_logits.py with that environment's Python and compares. Run by hand (README.md):

    python benchmarks/hf_parity.py --peer-python /path/to/peer/bin/python CHECKPOINT_DIR [CHECKPOINT_DIR ...]
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

from models import checkpoints

PEER = Path(__file__).resolve().parent / "trl_peer" / "hf_logits.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--peer-python", required=True, help="the peer environment's python")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    failed = False
    for directory in args.checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "logits.npz"
            subprocess.run([args.peer_python, str(PEER), directory, str(out)], check=True)
            peer = np.load(out)
            info = checkpoints.inspect(directory)
            lm = checkpoints.load_causal_lm(info)
            ids = peer["token_ids"]
            ours = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
        difference = np.abs(ours - peer["logits"])
        scale = np.abs(peer["logits"]).max()
        ok = difference.max() <= args.tolerance
        failed |= not ok
        print(
            f"{directory}: {info.family} ({type(lm).__name__}), logits {ids.shape} x {ours.shape[-1]}: max |ours - "
            f"transformers| {difference.max():.2e} (mean {difference.mean():.2e}, logits up to {scale:.2f}) "
            f"{'<=' if ok else '>'} {args.tolerance:g}; peer: {', '.join(peer['versions'])}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
