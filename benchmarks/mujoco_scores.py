"""Greedy evaluation returns of MuJoCo configs over several seeds, beside the RL Zoo's published figures: each run
through the driver in its own process, one after another (never two trainings at once), into OUT/<config>_s<seed>.
Safe to re-run: a finished run directory is read, not trained again; a killed one resumes from its checkpoint.

    .venv/bin/python benchmarks/mujoco_scores.py configs/mujoco_hopper.yaml configs/mujoco_halfcheetah.yaml \
        configs/mujoco_walker2d.yaml --seeds 0 1 2 --out runs/mujoco
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

# Stable-Baselines3 RL Zoo benchmark.md, PPO, 1M env steps, one run each.
RL_ZOO = {"Hopper": 2410, "HalfCheetah": 5819, "Walker2d": 3479}


def run(config: Path, seed: int, out: Path) -> dict:
    run_dir = out / f"{config.stem}_s{seed}"
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "pipeline", "run", str(config), "--run-dir", str(run_dir)]
        subprocess.run([*cmd, "--set", f"env.seed={seed}"], check=True)
    return json.loads(metrics.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/mujoco"))
    args = parser.parse_args()
    rows = []
    for config in args.configs:
        results = [run(config, seed, args.out) for seed in args.seeds]
        greedy = [r["eval.mean_return"] for r in results]
        env = next((name for name in RL_ZOO if name.lower() in config.stem), "?")
        rows.append(
            {
                "config": config.name,
                "greedy_returns": [round(g) for g in greedy],
                "median": round(statistics.median(greedy)),
                "last_training_episodes": [round(r["train.ep_rew_mean"]) for r in results],
                "env_steps_per_s": [round(r["train.env_steps"] / r["train.wall_seconds"]) for r in results],
                "rl_zoo": RL_ZOO.get(env),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "scores.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
