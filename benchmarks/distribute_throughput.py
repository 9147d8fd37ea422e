"""What tf.distribute costs and gives: training throughput of one process without a strategy, under
MirroredStrategy with one replica (the strategy's own overhead), and of 2 workers on this host (the launcher).

gym (CartPole): the driver's own run on configs/cartpole.yaml for a fixed budget (no early stop), timed by the
run's train.wall_seconds (training only: no imports, building or export): env steps/s.
lm: the LM demo (configs/lm_sentiment.yaml) with one SFT epoch and --iterations PPO iterations: PPO tokens/s,
the median of the iterations' `time/tokens_per_s` in TensorBoard (sampled tokens of the whole batch over the
iteration's time: sampling, the reward function, scoring and the update), the first (tracing) left out.

The variants alternate, --repeats times. Threads: each worker gets --threads intra-op and inter-op threads
(TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS), so 2 workers on 2 cores do not oversubscribe them; the single
process gets 2 x that.

    python benchmarks/distribute_throughput.py [--task gym|lm] [--env-steps 40000] [--iterations 8] [--repeats 2]
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
sys.path.insert(0, str(REPO))


def timed(task: str, args: list[str], threads: int, run_dir: Path) -> float:
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": str(threads)}
    subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--run-dir", str(run_dir)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    if task == "lm":
        from pipeline.core.tb_reader import read_scalars

        per_iteration = read_scalars(run_dir / "tb" / "ppo", "time/tokens_per_s")
        return statistics.median(v for step, v in per_iteration.items() if step > 1)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["train.env_steps"] / metrics["train.wall_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=["gym", "lm"], default="gym")
    parser.add_argument("--env-steps", type=int, default=40_000, help="gym")
    parser.add_argument("--iterations", type=int, default=8, help="lm: PPO iterations")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="per worker")
    args = parser.parse_args()
    if args.task == "gym":
        config, unit = str(REPO / "configs" / "cartpole.yaml"), "env steps/s"
        budget = ["--set", f"train.total_env_steps={args.env_steps}"]
    else:
        config, unit = str(REPO / "configs" / "lm_sentiment.yaml"), "tokens/s"
        budget = [
            arg
            for value in (
                "sft.epochs=1",
                f"ppo.iterations={args.iterations}",
                "evaluate.prompts=16",
                "evaluate.samples=0",
            )
            for arg in ("--set", value)
        ]
    variants = {
        "one process, no strategy": (["run", config, *budget, "--set", "distribute.strategy=none"], 2 * args.threads),
        "one process, MirroredStrategy, 1 replica": (
            ["run", config, *budget, "--set", "distribute.strategy=mirrored", "--set", "distribute.cpu_replicas=1"],
            2 * args.threads,
        ),
        "2 workers (launch), 1 replica each": (["launch", "--workers", "2", config, *budget], args.threads),
    }
    results = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for i, (name, (command, threads)) in enumerate(variants.items()):
                results[name].append(timed(args.task, command, threads, Path(tmp) / f"{repeat}-{i}"))
                print(f"{name}: {results[name][-1]:,.0f} {unit}", flush=True)
    base = statistics.median(results["one process, no strategy"])
    print(f"\nmedians over {args.repeats} runs ({Path(config).name}):")
    for name, values in results.items():
        print(f"  {name:<45} {statistics.median(values):>9,.0f} {unit}  ({statistics.median(values) / base:.2f}x)")


if __name__ == "__main__":
    main()
