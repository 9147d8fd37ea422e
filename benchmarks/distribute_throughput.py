"""What tf.distribute costs and gives on CartPole: training env steps/s of one process without a strategy, under
MirroredStrategy with one replica (the strategy's own overhead), and of 2 workers on this host (the launcher).

Each variant is the driver's own run on configs/cartpole.yaml for a fixed budget (no early stop), timed by the
run's train.wall_seconds (training only: no imports, building or export); the variants alternate, --repeats
times. Threads: each worker gets --threads intra-op and inter-op threads (TF_NUM_INTRAOP_THREADS,
TF_NUM_INTEROP_THREADS), so 2 workers on 2 cores do not oversubscribe them; the single process gets 2 x that.

    python benchmarks/distribute_throughput.py [--env-steps 40000] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(args: list[str], threads: int, run_dir: Path) -> float:
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "pipeline", *args, "--run-dir", str(run_dir)], cwd=REPO, env=env,
                   check=True, capture_output=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["train.env_steps"] / metrics["train.wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-steps", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="per worker")
    args = parser.parse_args()
    config = str(REPO / "configs" / "cartpole.yaml")
    budget = f"train.total_env_steps={args.env_steps}"
    variants = {
        "one process, no strategy": (["run", config, "--set", budget, "--set", "distribute.strategy=none"],
                                     2 * args.threads),
        "one process, MirroredStrategy, 1 replica": (["run", config, "--set", budget, "--set",
                                                      "distribute.strategy=mirrored", "--set",
                                                      "distribute.cpu_replicas=1"], 2 * args.threads),
        "2 workers (launch), 1 replica each": (["launch", "--workers", "2", config, "--set", budget], args.threads),
    }
    results = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, (command, threads)) in enumerate(variants.items()):
                results[name].append(timed(command, threads, Path(tmp) / f"{repeat}-{i}"))
                print(f"{name}: {results[name][-1]:,.0f} env steps/s", flush=True)
    base = statistics.median(results["one process, no strategy"])
    print(f"\nmedians over {args.repeats} runs of {args.env_steps:,} env steps (configs/cartpole.yaml):")
    for name, values in results.items():
        print(f"  {name:<45} {statistics.median(values):>9,.0f} env steps/s  ({statistics.median(values) / base:.2f}x)")


if __name__ == "__main__":
    main()
