"""Every stage writes TensorBoard summaries a user can find: read back with TensorBoard's reader and server."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline.core.tb_reader import read_scalars, tags, texts

TRAIN_SCALARS = [
    "rollout/ep_rew_mean",
    "rollout/ep_len_mean",
    "time/fps",
    "train/policy_gradient_loss",
    "train/value_loss",
    "train/entropy_loss",
    "train/approx_kl",
    "train/clip_fraction",
    "train/explained_variance",
    "train/learning_rate",
]


def test_stage_writers_exist(tiny_run):
    stages = {p.name for p in (tiny_run / "tb").iterdir()}
    assert stages == {"environment", "model", "train", "evaluate", "export", "hparams"}


def test_train_scalars_are_sane(tiny_run):
    assert set(TRAIN_SCALARS) <= tags(tiny_run / "tb" / "train")
    steps = read_scalars(tiny_run / "tb" / "train", "time/fps")
    assert sorted(steps) == list(range(128, 1024 + 1, 128)), "x axis is env steps, one point per iteration"
    rew = read_scalars(tiny_run / "tb" / "train", "rollout/ep_rew_mean")
    assert rew and all(8 <= v <= 500 for v in rew.values())  # CartPole returns
    for tag in ("train/approx_kl", "train/clip_fraction", "train/value_loss"):
        assert all(v >= 0 and math.isfinite(v) for v in read_scalars(tiny_run / "tb" / "train", tag).values())
    assert all(0 <= v <= 1 for v in read_scalars(tiny_run / "tb" / "train", "train/clip_fraction").values())
    entropy = read_scalars(tiny_run / "tb" / "train", "train/entropy_loss")
    assert all(-math.log(2) - 1e-4 <= v < 0 for v in entropy.values())  # minus the entropy of 2 actions
    lr = read_scalars(tiny_run / "tb" / "train", "train/learning_rate")
    assert list(lr.values()) == pytest.approx([3e-4] * len(lr))  # the constant schedule
    assert {"train/advantages", "rollout/episode_returns"} <= tags(tiny_run / "tb" / "train")  # histograms


def test_text_stages(tiny_run):
    env_text = texts(tiny_run / "tb" / "environment")
    assert "Discrete(2)" in env_text["environment/spaces"] and "CartPole-v1" in env_text["environment/spaces"]
    assert "observation mean" in env_text["environment/random_policy_statistics"]
    model_text = texts(tiny_run / "tb" / "model")
    assert "trainable parameters" in model_text["model/architecture"]
    export_text = texts(tiny_run / "tb" / "export")
    assert "cartpole_v1" in export_text["export/savedmodel"]
    assert "observations" in export_text["export/serving_default"]


def test_evaluation_and_metrics(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("eval.mean_return", "eval.std_return", "train.env_steps", "train.wall_seconds"):
        assert key in metrics
    assert metrics["train.env_steps"] == 1024 and metrics["eval.episodes"] == 3
    assert metrics["eval.min_return"] <= metrics["eval.mean_return"] <= metrics["eval.max_return"]
    assert read_scalars(tiny_run / "tb" / "evaluate", "eval/mean_return") == {
        1024: pytest.approx(metrics["eval.mean_return"])
    }
    assert "eval/returns" in tags(tiny_run / "tb" / "evaluate")


def test_hparams_link_config_and_metrics(tiny_run):
    hparams_tags = tags(tiny_run / "tb" / "hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "eval.mean_return"} <= hparams_tags


def test_real_tensorboard_server_serves_the_run(tiny_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen(
        [
            str(exe),
            "--logdir",
            str(tiny_run / "tb"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        runs = _get_json(f"http://127.0.0.1:{port}/data/runs", deadline=time.monotonic() + 60)
        assert {"train", "evaluate", "environment"} <= set(runs)
        scalar_tags = _get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", time.monotonic() + 30)
        assert "rollout/ep_rew_mean" in scalar_tags["train"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data = json.loads(response.read())
            if data:
                return data
        except OSError:
            pass
        assert time.monotonic() < deadline, f"TensorBoard did not answer {url}"
        time.sleep(0.5)
