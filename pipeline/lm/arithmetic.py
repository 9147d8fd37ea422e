"""A generated task with exact answers, for GRPO's demo (`make lm-demo-grpo`): additions `a+b=` whose answer a
reward function checks. The SFT corpus is noisy: a share of its lines carry a stray number after the answer
("3+4=7 12"), so SFT samples the bare answer only part of the time and RL, rewarded for the exact answer alone,
has to find where to stop. Held-out prompts are sums RL never trained on (SFT saw them, noisy like the rest):
what RL teaches there is the habit, not the sums.

    python -m pipeline.lm.arithmetic OUT_DIR   # writes OUT_DIR/corpus.txt and OUT_DIR/prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def write(out_dir: str | Path, largest: int = 19, copies: int = 10, noise: float = 0.5, seed: int = 0) -> Path:
    """corpus.txt: every sum a+b (a, b <= largest) `copies` times, a stray number after its answer with probability
    `noise`; prompts.jsonl: each sum once, as {"prompt": "a+b=", "answer": "c"}. Returns out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(largest + 1) for b in range(largest + 1)]
    lines = []
    for a, b in pairs * copies:
        stray = f" {rng.integers(0, 2 * largest + 1)}" if rng.random() < noise else ""
        lines.append(f"{a}+{b}={a + b}{stray}")
    rng.shuffle(lines)
    (out / "corpus.txt").write_text("\n".join(lines) + "\n")
    rows = [json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) for a, b in pairs]
    (out / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument(
        "--noise", type=float, default=0.5, help="share of SFT lines with a stray number after the answer"
    )
    args = parser.parse_args()
    print(write(args.out_dir, noise=args.noise))


if __name__ == "__main__":
    main()
