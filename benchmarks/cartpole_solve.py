"""CartPole-v1 time-to-solved over seeds, with where the time goes. Prints figures; asserts nothing.

"Solved": the last 50 training episodes average >= 475 and a greedy 10-episode evaluation >= 475 (the
trainer's `stop_at_return`). Wall time excludes process start-up and imports, includes building the
networks, tracing, collection, updates, checkpoints, TensorBoard writes and the solved-check evaluations.

    python benchmarks/cartpole_solve.py [--seeds 0 1 2 3 4] [--config configs/cartpole.yaml] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: F401  (TensorFlow's environment first)

# isort: split

from pipeline.core import config, devices
from pipeline.core.rundir import RunDir
from pipeline.core.tb_reader import read_scalars
from pipeline.gym import envs
from pipeline.gym.ppo import PPOLearner
from pipeline.gym.spaces import spaces_of
from pipeline.gym.stages import train


def one_seed(config_path: str, seed: int, overrides: list[str]) -> dict:
    cfg = config.load(config_path, [f"env.seed={seed}", "train.stop_at_return=475", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(Path(tmp))
        start = time.monotonic()
        env = envs.make_vector_env(cfg.env)
        learner = PPOLearner(cfg, spaces_of(env))
        env.close()
        build_s = time.monotonic() - start
        metrics = train.run(cfg, run_dir, learner)
        wall = time.monotonic() - start
        update_s = list(read_scalars(run_dir.tb("train"), "time/update_seconds").values())
        collect_fps = list(read_scalars(run_dir.tb("train"), "time/collect_fps").values())
    rest = statistics.median(update_s[1:]) if len(update_s) > 1 else 0.0
    batch = cfg.env.num_envs * cfg.train.rollout_steps
    collect_total = sum(batch / fps for fps in collect_fps)
    return {
        "device": devices.describe(learner.variables_to_train),
        "seed": seed,
        "solved": metrics["train.solved"],
        "env_steps": metrics["train.env_steps"],
        "wall_s": wall,
        "build_s": build_s,
        "first_update_s": update_s[0],
        "trace_s": update_s[0] - rest,
        "update_s": rest,
        "collect_fps": statistics.median(collect_fps),
        "iterations": len(update_s),
        "collect_total_s": collect_total,
        "update_total_s": sum(update_s),
        "other_s": wall - build_s - collect_total - sum(update_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/cartpole.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    rows = []
    print(
        f"{'seed':>4} {'solved':>6} {'env_steps':>9} {'wall_s':>7} {'build_s':>7} {'trace_s':>7} "
        f"{'update_ms':>9} {'collect_steps/s':>15} {'iters':>5} {'collect_s':>9} {'update_s':>8} {'other_s':>7}",
        flush=True,
    )
    for seed in args.seeds:
        r = one_seed(args.config, seed, args.overrides)
        rows.append(r)
        print(
            f"{r['seed']:>4} {str(r['solved']):>6} {r['env_steps']:>9} {r['wall_s']:>7.2f} {r['build_s']:>7.2f} "
            f"{r['trace_s']:>7.2f} {1000 * r['update_s']:>9.1f} {r['collect_fps']:>15,.0f} {r['iterations']:>5} "
            f"{r['collect_total_s']:>9.2f} {r['update_total_s']:>8.2f} {r['other_s']:>7.2f}",
            flush=True,
        )
    print(rows[0]["device"])
    solved = [r for r in rows if r["solved"]]
    print(f"solved {len(solved)}/{len(rows)} seeds")
    if solved:
        print(f"median env steps to solved: {statistics.median(r['env_steps'] for r in solved):,.0f}")
        print(f"median wall seconds to solved: {statistics.median(r['wall_s'] for r in solved):.2f}")
    print(f"median tracing (first update minus a typical one) s: {statistics.median(r['trace_s'] for r in rows):.2f}")
    build_s = statistics.median(r["build_s"] for r in rows)
    print(f"median learner build (networks, agent, optimizer slots) s: {build_s:.2f}")


if __name__ == "__main__":
    main()
