"""Every observation and action kind, end to end: the corridor (tests/corridor.py) as pixels, as a Dict, with
MultiDiscrete actions and with masked actions, each trained through the driver to its optimum and its export served
in a fresh process as TF Serving loads it, with one named input per observation part in that part's dtype."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_driver, write_config
from tests.corridor import CELLS, START, Corridor
from tests.export.fresh_process import serve

KINDS = {  # name: (env kwargs, optimal return)
    "pixels": ({"observation": "pixels", "actions": "discrete"}, 1.0),
    "dict": ({"observation": "dict", "actions": "discrete"}, 1.0),
    "multi_discrete": ({"observation": "dict", "actions": "multi_discrete"}, 2.0),
    "masked": ({"observation": "masked", "actions": "discrete"}, 1.0),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One run directory per kind, trained until the optimum (or 20k env steps)."""
    out = {}
    for name, (kwargs, optimum) in KINDS.items():
        work = tmp_path_factory.mktemp(name)
        cfg = write_config(
            work / "corridor.yaml",
            {
                "env": {"id": "tests.corridor:Corridor", "kwargs": kwargs, "num_envs": 8, "max_episode_steps": None},
                "model": {"cnn_dense": 64},
                "train": {
                    "total_env_steps": 20_000,
                    "rollout_steps": 32,
                    "num_minibatches": 4,
                    "learning_rate": 0.001,
                    "entropy_coef": 0.01,
                    "stop_at_return": optimum,
                    "checkpoint_every": 10,
                },
                "evaluate": {"episodes": 10},
            },
        )
        result = run_driver("run", cfg, "--run-dir", work / "run")
        assert result.returncode == 0, result.stderr[-3000:]
        out[name] = work / "run"
    return out


def _version(run: Path) -> Path:
    return Path(json.loads((run / "metrics.json").read_text())["export.path"])


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_learns_its_optimum(runs, kind):
    """A policy that ignores the goal in the observation averages half the optimum at best: 10 greedy episodes at
    the optimum need the pixels, the dict's goal entry, both action dimensions or the mask read right."""
    metrics = json.loads((runs[kind] / "metrics.json").read_text())
    assert metrics["train.solved"], metrics
    assert metrics["eval.mean_return"] == pytest.approx(KINDS[kind][1]), metrics
    assert metrics["export.published"], metrics


def _observation(kind: str, position: int, goal: int, mask=None) -> dict:
    """The serving inputs of one corridor state, unbatched (as lists: a REST request's JSON)."""
    env = Corridor(**KINDS[kind][0])
    env.reset(seed=0)
    env.position, env.goal = position, goal
    obs = env._observation()
    if kind == "pixels":
        return {"observations": obs.tolist()}
    inputs = {"position": obs["position"], "goal": obs["goal"].tolist()}
    if kind == "masked":
        inputs["action_mask"] = (obs["action_mask"] if mask is None else np.asarray(mask)).tolist()
    return inputs


def _batch(observations: list[dict]) -> dict:
    return {k: [o[k] for o in observations] for k in observations[0]}


@pytest.mark.parametrize("kind", ["pixels", "dict", "multi_discrete"])
def test_the_served_policy_heads_for_the_goal_it_is_shown(runs, kind, tmp_path):
    requests = [{"inputs": _batch([_observation(kind, START, goal)])} for goal in (0, CELLS - 1)]
    report, answers = serve(_version(runs[kind]), requests, tmp_path)
    left, right = (answer["action"][0] for answer in answers)
    if kind == "multi_discrete":  # [move right?, code]: the code of each side, moving towards it
        assert left.tolist() == [0, 0] and right.tolist() == [1, 2], answers
    else:
        assert (left, right) == (0, 1), answers


def test_the_served_masked_policy_never_returns_a_masked_action(runs, tmp_path):
    """Every state, under every mask that leaves an action: also where the favourite without the mask is masked."""
    rng = np.random.default_rng(0)
    states, masks = [], []
    for position in range(CELLS):
        for goal in (0, CELLS - 1):
            for _ in range(6):
                mask = rng.integers(0, 2, 4)
                mask[rng.integers(4)] = 1
                states.append((position, goal))
                masks.append(mask)
            states.append((position, goal))
            masks.append(np.ones(4, int))  # the unmasked favourite
    inputs = _batch([_observation("masked", p, g, m) for (p, g), m in zip(states, masks)])
    _, (answer,) = serve(_version(runs["masked"]), [{"inputs": inputs}], tmp_path)
    actions = answer["action"]
    assert all(mask[a] for a, mask in zip(actions, masks)), [(a, m.tolist()) for a, m in zip(actions, masks)]
    favourites = {state: a for state, a, mask in zip(states, actions, masks) if mask.all()}
    masked_favourite = [a for state, a, mask in zip(states, actions, masks) if not mask[favourites[state]]]
    assert masked_favourite, "no request masked the favourite action: the check above proved less than it says"
    logits = answer["logits"]
    assert (logits[np.asarray(masks) == 0] < -1e30).all()  # a masked value's logit is the lowest float


def test_saved_model_cli_lists_one_input_per_part_in_its_dtype(runs, tmp_path):
    cli = Path(sys.executable).parent / "saved_model_cli"
    expected = {
        "pixels": [("observations", "DT_UINT8", r"\(-1, 12, 12, 3\)")],
        "masked": [
            ("action_mask", "DT_INT32", r"\(-1, 4\)"),
            ("goal", "DT_FLOAT", r"\(-1, 1\)"),
            ("position", "DT_INT64", r"\(-1\)"),
        ],
    }
    for kind, inputs in expected.items():
        result = subprocess.run(
            [str(cli), "show", "--dir", str(_version(runs[kind])), "--tag_set", "serve", "--signature_def",
             "serving_default"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        for name, dtype, shape in inputs:
            assert re.search(rf"inputs\['{name}'\] tensor_info:\s+dtype: {dtype}\s+shape: {shape}", result.stdout), (
                result.stdout
            )
        assert result.stdout.count("tensor_info") == len(inputs) + 3, result.stdout  # action, value, logits


def test_load_policy_takes_named_parts_and_names_what_is_wrong(runs):
    from pipeline import api

    masked = api.load_policy(runs["masked"])
    one = {"position": 4, "goal": np.array([1.0], np.float32), "action_mask": np.array([1, 1, 1, 0], np.int8)}
    assert masked(one) == 2  # at the goal, claim: one observation in, one action out
    batch = {k: np.stack([np.asarray(v)] * 3) for k, v in one.items()}
    assert masked(batch).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match=r"observation keys \['goal', 'position'\]; this policy takes"):
        masked({"position": 4, "goal": [1.0]})
    with pytest.raises(ValueError, match=r"observation 'action_mask' of shape \(1, 3\); this policy takes \[4\]"):
        masked({**one, "action_mask": [1, 1, 1]})
    pixels = api.load_policy(runs["pixels"])
    frame = Corridor().reset(seed=0)[0]
    assert pixels(frame) in (0, 1)
    with pytest.raises(ValueError, match="observation 'observations' is float64; this policy takes uint8"):
        pixels(frame / 255.0)


def test_pixels_warm_start_and_resume(runs, tmp_path):
    """A new run warm-started from the solved pixel run is good from its first rollout (a fresh policy reaches the
    goal a quarter of the time); a finished run given a larger budget resumes from its checkpoint."""
    cfg = runs["pixels"].parent / "corridor.yaml"
    one_iteration = ["--set", "train.total_env_steps=256", "--set", "train.stop_at_return=null"]
    warm = run_driver("run", cfg, "--run-dir", tmp_path / "warm", *one_iteration, "--set",
                      f"train.warm_start={runs['pixels']}")  # fmt: skip
    assert warm.returncode == 0, warm.stderr[-3000:]
    metrics = json.loads((tmp_path / "warm" / "metrics.json").read_text())
    assert metrics["train.env_steps"] == 256 and metrics["train.ep_rew_mean"] > 0.8, metrics

    first = run_driver("run", cfg, "--run-dir", tmp_path / "resumed", *one_iteration)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_driver("run", cfg, "--run-dir", tmp_path / "resumed", *one_iteration[2:], "--set",
                       "train.total_env_steps=512")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "(256 env steps)" in again.stderr, again.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["train.env_steps"] == 512


def test_the_breakout_config_runs_end_to_end_and_serves_uint8_frames(tmp_path):
    """configs/atari_breakout.yaml for one iteration: ale-py's ROM, the preprocessing, whole games reported, an
    export taking [batch, 4, 84, 84] uint8 frames."""
    result = run_driver(
        "run", "configs/atari_breakout.yaml", "--run-dir", tmp_path / "run",
        "--set", "train.total_env_steps=1024", "--set", "evaluate.episodes=1", "--set", "env.max_episode_steps=400",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train.env_steps"] == 1024 and metrics["eval.mean_length"] <= 400
    frames = np.zeros((2, 4, 84, 84), np.uint8)
    _, (answer,) = serve(_version(tmp_path / "run"), [{"inputs": {"observations": frames.tolist()}}], tmp_path)
    assert answer["action"].shape == (2,) and set(answer["action"]) <= {0, 1, 2, 3}


def test_an_evaluation_episode_is_a_video_in_tensorboard_and_the_run_directory(runs):
    """The corridor renders rgb_array frames: its greedy episode (2 moves: 3 frames) is an animated GIF in the
    run's videos/ and in TensorBoard's Images tab, read back with TensorBoard's own reader."""
    from PIL import Image

    from pipeline.core import tb_reader

    metrics = json.loads((runs["pixels"] / "metrics.json").read_text())
    path = Path(metrics["eval.video"])
    assert path.parent == runs["pixels"] / "videos" and path.suffix == ".gif"
    assert Image.open(path).n_frames == 3
    acc = tb_reader.accumulator(runs["pixels"] / "tb" / "evaluate")
    (event,) = acc.Tensors("eval/video")
    width, height, encoded = event.tensor_proto.string_val
    assert encoded == path.read_bytes() and encoded.startswith(b"GIF89a") and (int(width), int(height)) == (12, 12)
    assert acc.SummaryMetadata("eval/video").plugin_data.plugin_name == "images"


class CrashingRender(Corridor):
    """Draws with a renderer that takes its process down (as MuJoCo's EGL did inside the TensorFlow process)."""

    def __init__(self, render_mode=None):
        super().__init__("dict", "discrete", render_mode)

    def render(self):
        os.abort()


def test_a_renderer_that_crashes_ends_the_video_not_the_run(tmp_path):
    import tensorflow as tf

    from pipeline.core import config
    from pipeline.gym import render_worker, video

    cfg = config.from_dict({"env": {"id": "tests.integration.test_spaces:CrashingRender", "num_envs": 1}})
    spaces_ = type("Spaces", (), {})()
    assert video.record(cfg, lambda observations: tf.constant([0]), spaces_) is None
    cfg.env.id = "tests.corridor:Corridor"
    cfg.env.kwargs = {"observation": "dict"}
    from pipeline.gym.envs import make_vector_env
    from pipeline.gym.spaces import spaces_of

    frames = video.record(cfg, lambda observations: tf.constant([1]), spaces_of(make_vector_env(cfg.env)))
    assert len(frames) == 3 and frames[0].shape == (12, 12, 3)  # two moves right: a goal on the left ends it too
    result = subprocess.run(
        [sys.executable, "-c", f"import {render_worker.__name__}, sys; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert result.stdout.strip() == "False", result.stderr[-2000:]  # the rendering process starts without it
