"""Greedy evaluation returns of MuJoCo configs over several seeds, beside the RL Zoo's published figures: each run
through the driver in its own process, one after another (never two trainings at once), into OUT/<config>_s<seed>.
Safe to re-run: a finished run directory is read, not trained again; a killed one resumes from its checkpoint.
With --sb3-python, Stable-Baselines3 PPO (in its own venv) trains on the same config's settings too, one run after
ours per seed, into OUT/<config>_sb3_s<seed>, and is evaluated the same way (10 deterministic episodes, observation
statistics frozen, raw returns): the peer on the same environment version and machine, beside the Zoo's figure.

    .venv/bin/python benchmarks/mujoco_scores.py configs/mujoco_hopper.yaml configs/mujoco_halfcheetah.yaml \
        configs/mujoco_walker2d.yaml --seeds 0 1 2 --out runs/mujoco [--sb3-python PEER/bin/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pipeline

# Stable-Baselines3 RL Zoo benchmark.md, PPO, 1M env steps, one run each.
RL_ZOO = {"Hopper": 2410, "HalfCheetah": 5819, "Walker2d": 3479}


def run(config: Path, seed: int, out: Path) -> dict:
    run_dir = out / f"{config.stem}_s{seed}"
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "pipeline", "run", str(config), "--run-dir", str(run_dir)]
        subprocess.run([*cmd, "--set", f"env.seed={seed}"], check=True)
    return json.loads(metrics.read_text())


# The config's settings as SB3's PPO arguments (its semantics: unbounded mean, per-minibatch whitening); evaluated
# as the evaluate stage does. Prints {"eval.mean_return", "eval.std_return", "train.ep_rew_mean", ...}.
SB3 = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize
    cfg, seed = json.loads(sys.argv[1]), int(sys.argv[2])
    e, m, t = cfg["env"], cfg["model"], cfg["train"]
    env = make_vec_env(e["id"], n_envs=e["num_envs"], seed=seed)
    env = VecNormalize(env, norm_obs=t["normalize_observations"], norm_reward=t["normalize_rewards"], gamma=t["gamma"])
    activation = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}
    policy_kwargs = dict(log_std_init=m["init_log_std"], ortho_init=m["ortho_init"],
                         activation_fn=activation[m["activation"]],
                         net_arch=dict(pi=m["actor_layers"], vf=m["value_layers"]),
                         optimizer_kwargs=dict(eps=t["adam_epsilon"]))
    lr = t["learning_rate"]
    learning_rate = (lambda remaining: lr * remaining) if t["lr_schedule"] == "linear" else lr
    batch = e["num_envs"] * t["rollout_steps"]
    model = PPO("MlpPolicy", env, n_steps=t["rollout_steps"], batch_size=batch // t["num_minibatches"],
                n_epochs=t["num_epochs"], learning_rate=learning_rate, clip_range=t["clip_ratio"],
                clip_range_vf=t["value_clip"], normalize_advantage=t["normalize_advantages"],
                ent_coef=t["entropy_coef"], vf_coef=t["value_coef"],
                max_grad_norm=t["max_grad_norm"], gamma=t["gamma"], gae_lambda=t["gae_lambda"],
                target_kl=t["target_kl"], policy_kwargs=policy_kwargs, device="cpu", seed=seed)
    start = time.perf_counter()
    model.learn(t["total_env_steps"])
    wall = time.perf_counter() - start
    env.training, env.norm_reward = False, False
    returns, _ = evaluate_policy(model, env, n_eval_episodes=10, deterministic=True, return_episode_rewards=True)
    print(json.dumps({"eval.mean_return": float(np.mean(returns)), "eval.std_return": float(np.std(returns)),
                      "train.ep_rew_mean": float(np.mean([i["r"] for i in model.ep_info_buffer])),
                      "train.env_steps": model.num_timesteps, "train.wall_seconds": wall}))
    """
)


def run_sb3(python: str, config: Path, seed: int, out: Path) -> dict:
    metrics = out / f"{config.stem}_sb3_s{seed}" / "metrics.json"
    if not metrics.exists():
        cfg = pipeline.load_config(config).to_dict()
        done = subprocess.run(
            [python, "-c", SB3, json.dumps(cfg), str(seed)], check=True, capture_output=True, text=True
        )
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(done.stdout.strip().splitlines()[-1])
    return json.loads(metrics.read_text())


def summary(config: Path, who: str, results: list[dict]) -> dict:
    greedy = [r["eval.mean_return"] for r in results]
    env = next((name for name in RL_ZOO if name.lower() in config.stem), "?")
    return {
        "config": config.name,
        "who": who,
        "greedy_returns": [round(g) for g in greedy],
        "median": round(statistics.median(greedy)),
        "last_training_episodes": [round(r["train.ep_rew_mean"]) for r in results],
        "env_steps_per_s": [round(r["train.env_steps"] / r["train.wall_seconds"]) for r in results],
        "rl_zoo": RL_ZOO.get(env),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/mujoco"))
    parser.add_argument("--sb3-python", help="a venv's python with stable-baselines3 and mujoco installed")
    args = parser.parse_args()
    rows = []
    for config in args.configs:
        ours, peer = [], []
        for seed in args.seeds:
            ours.append(run(config, seed, args.out))
            if args.sb3_python:
                peer.append(run_sb3(args.sb3_python, config, seed, args.out))
        new = [summary(config, "ours", ours)] + ([summary(config, "sb3", peer)] if peer else [])
        for row in new:
            print(json.dumps(row), flush=True)
        rows += new
    (args.out / "scores.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
