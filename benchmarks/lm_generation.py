"""KV-cache generation: GPT-2's own decoder (per-layer caches written in place) against keras-hub's generic cache
path (`call_with_cache`, any architecture), XLA-compiled as PPO samples; a Llama of the same width for scale.

Interleaved calls in one process (A, B, A, B, ...), so both see the same machine load; prints the median seconds
per call and tokens/s of each, and their ratio. Asserts nothing.

    python benchmarks/lm_generation.py [--size tiny|small] [--batch 16 32 64] [--calls 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: F401  (TensorFlow's environment first)

# isort: split

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from benchmarks.lm_throughput import PROMPT, RESPONSE, SIZES
from models import lm as lm_lib


def llama_like(size: lm_lib.LMSize):
    """A Llama 3 of GPT-2 `size`'s width and depth (grouped-query attention: half as many key/value heads)."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=size.vocabulary_size,
        num_layers=size.num_layers,
        num_query_heads=size.num_heads,
        num_key_value_heads=max(1, size.num_heads // 2),
        hidden_dim=size.hidden_dim,
        intermediate_dim=size.intermediate_dim,
    )
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    size = SIZES[args.size]
    gpt2, llama = lm_lib.build_causal_lm(size), llama_like(size)
    paths = {
        "gpt2 own decoder": (gpt2, False),
        "gpt2 keras-hub cache": (gpt2, True),
        "llama keras-hub cache": (llama, False),
    }
    compiled = {
        name: tf.function(
            lambda prompts, seed, lm=lm, generic=generic: lm_lib.sample(
                lm, prompts, RESPONSE, 1.0, seed, generic_cache=generic
            ),
            jit_compile=True,
            autograph=False,
        )
        for name, (lm, generic) in paths.items()
    }
    rng = np.random.default_rng(0)
    print(f"size={args.size} prompt={PROMPT} response={RESPONSE} calls={args.calls} (medians, interleaved)")
    for batch in args.batch:
        prompts = tf.constant(rng.integers(0, size.vocabulary_size, size=(batch, PROMPT)), tf.int32)
        times = {name: [] for name in compiled}
        for fn in compiled.values():  # compile
            fn(prompts, tf.constant([0, 0], tf.int64)).numpy()
        for call in range(args.calls):
            for name, fn in compiled.items():
                start = time.perf_counter()
                fn(prompts, tf.constant([call, 1], tf.int64)).numpy()
                times[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(t) for name, t in times.items()}
        base = medians["gpt2 keras-hub cache"]
        for name, seconds in medians.items():
            print(
                f"batch {batch:>3} {name:<22} {seconds * 1000:8.1f} ms  {batch * RESPONSE / seconds:>9,.0f} tokens/s"
                f"  x{base / seconds:.2f} vs gpt2 keras-hub cache",
                flush=True,
            )


if __name__ == "__main__":
    main()
