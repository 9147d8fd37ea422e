"""Env steps per second of the whole gym PPO loop (collection and updates) for a config, sync and async
environments side by side in one sitting; with --sb3-python, Stable-Baselines3 PPO on the same environment and
settings in its own venv, for the ratio.

    .venv/bin/python benchmarks/gym_throughput.py configs/atari_breakout.yaml --steps 16384 \
        [--sb3-python PEER/bin/python]

The first iteration (tracing, the first environment resets) is left out of the rate: the loop's figure is the
env steps of iterations 2.. over their wall time, read from the train stage's TensorBoard scalars.

    .venv/bin/python benchmarks/gym_throughput.py --ceiling   # this CPU's float32 GFLOP/s, for the CNN update's share

--ceiling prints what TensorFlow reaches here on one large matmul (the practical float32 peak) and on each of the
Nature CNN's convolutions forward over 256 frames, the figures a PPO update's GFLOP/s is set against.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pipeline

# isort: split
from pipeline.core import tb_reader

REPO = Path(__file__).resolve().parents[1]


def ours(config: str, steps: int, vectorization: str) -> dict:
    cfg = pipeline.load_config(
        config,
        {
            "train.total_env_steps": steps,
            "train.stop_at_return": None,
            "env.vectorization": vectorization,
            "evaluate.episodes": 1,
            "evaluate.video_frames": 0,
            "env.max_episode_steps": 2000,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pipeline.run(cfg, Path(tmp) / "run")
        wall = time.perf_counter() - start
        fps = tb_reader.read_scalars(Path(tmp) / "run" / "tb" / "train", "time/fps")
    rates = [fps[k] for k in sorted(fps)[1:]]  # iteration 1 traces the graphs
    return {"env_steps_per_s": len(rates) / sum(1.0 / r for r in rates), "iterations": len(fps), "wall_s": wall}


SB3 = textwrap.dedent(
    """
    import json, sys, time
    import gymnasium as gym
    import ale_py
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize
    gym.register_envs(ale_py)
    cfg, steps, vec = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    env_cls = SubprocVecEnv if vec == "async" else DummyVecEnv
    vec_kwargs = {"start_method": "fork"} if vec == "async" else None  # a -c script has no module to re-import
    e, t = cfg["env"], cfg["train"]
    if e.get("preprocessing") == "atari":
        env = make_atari_env(e["id"], n_envs=e["num_envs"], seed=0, vec_env_cls=env_cls, vec_env_kwargs=vec_kwargs)
        env = VecFrameStack(env, 4)
        policy = "CnnPolicy"
    else:
        env = make_vec_env(e["id"], n_envs=e["num_envs"], seed=0, vec_env_cls=env_cls, vec_env_kwargs=vec_kwargs)
        if t.get("normalize_rewards"):
            env = VecNormalize(env)
        policy = "MlpPolicy"
    batch = e["num_envs"] * t["rollout_steps"]
    model = PPO(policy, env, n_steps=t["rollout_steps"], batch_size=batch // t["num_minibatches"],
                n_epochs=t["num_epochs"], learning_rate=t["learning_rate"], clip_range=t["clip_ratio"],
                ent_coef=t.get("entropy_coef", 0.0), vf_coef=t.get("value_coef", 0.5), device="cpu", seed=0)
    model.learn(batch)  # the first iteration, as ours is left out
    start = time.perf_counter()
    model.learn(steps - batch, reset_num_timesteps=False)
    print(json.dumps({"env_steps_per_s": (steps - batch) / (time.perf_counter() - start)}))
    """
)


def sb3(python: str, config: str, steps: int, vectorization: str) -> dict:
    cfg = pipeline.load_config(config).to_dict()
    result = subprocess.run(
        [python, "-c", SB3, json.dumps(cfg), str(steps), vectorization], capture_output=True, text=True, cwd=REPO
    )
    if result.returncode:
        return {"error": result.stderr[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def ceiling(repeats: int = 5) -> dict:
    """GFLOP/s of float32 ops on all cores: the best of `repeats` timed runs after a warm-up."""
    import tensorflow as tf

    def best(op, flops):
        fn = tf.function(op)
        fn().numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn().numpy()
            times.append(time.perf_counter() - start)
        return round(flops / min(times) / 1e9, 1)

    n, batch = 4096, 256
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    result = {"matmul_4096": best(lambda: tf.matmul(a, b), 2 * n**3)}
    # The Nature CNN on 84x84x4 frames: (input side, in channels, kernel, stride, out channels) of each layer.
    for i, (side, cin, k, stride, cout) in enumerate([(84, 4, 8, 4, 32), (20, 32, 4, 2, 64), (9, 64, 3, 1, 64)], 1):
        x, w = tf.random.normal([batch, side, side, cin]), tf.random.normal([k, k, cin, cout])
        out = (side - k) // stride + 1
        flops = 2 * batch * out * out * cout * k * k * cin
        result[f"conv{i}_forward"] = best(lambda x=x, w=w, s=stride: tf.nn.conv2d(x, w, s, "VALID"), flops)
    return {"gflops_per_s": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?")
    parser.add_argument("--ceiling", action="store_true", help="this CPU's float32 GFLOP/s (no config needed)")
    parser.add_argument("--steps", type=int, default=16384)
    parser.add_argument("--modes", nargs="+", default=["sync", "async"])
    parser.add_argument("--sb3-python", help="a venv's python with stable-baselines3 (and ale-py) installed")
    parser.add_argument("--only-sb3", action="store_true", help="the peer's figures alone")
    args = parser.parse_args()
    if args.config is None and not args.ceiling:
        parser.error("a config is needed unless --ceiling is given")
    if args.ceiling:
        print(json.dumps(ceiling()))
    for mode in args.modes if args.config else []:
        if not args.only_sb3:
            result = ours(args.config, args.steps, mode)
            print(json.dumps({"config": args.config, "who": "ours", "vectorization": mode, **result}))
            sys.stdout.flush()
        if args.sb3_python:
            print(json.dumps({"config": args.config, "who": "sb3", "vectorization": mode,
                              **sb3(args.sb3_python, args.config, args.steps, mode)}))  # fmt: skip
            sys.stdout.flush()


if __name__ == "__main__":
    main()
