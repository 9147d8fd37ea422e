"""Bad input at run time loses nothing: a reward function or an environment that returns garbage, a learner
whose numbers overflow, and a resume that cannot fit its checkpoint stop with a clear error before anything
is written where it could be used (no export, the last good checkpoint stays the latest)."""

from __future__ import annotations

import json
import shutil

import tensorflow as tf

from tests.conftest import lm_config, run_driver, write_config


def _run_lm(tmp_path, function: str, *sets: str):
    cfg = lm_config(tmp_path, reward={"function": f"tests.lm_rewards:{function}"}, checkpoint_every=1)
    run = tmp_path / "run"
    args = [arg for s in ("sft.epochs=0", *sets) for arg in ("--set", s)]
    return run, run_driver("run", cfg, "--run-dir", run, *args)


def _assert_nothing_published(run):
    assert not (run / "export").exists(), "a failed run must not export"
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    assert not any(key.startswith(("eval.", "export.")) for key in metrics), metrics


def test_a_reward_function_with_one_score_per_batch_stops_before_any_update(tmp_path):
    run, result = _run_lm(tmp_path, "one_score_per_batch")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "tests.lm_rewards:one_score_per_batch" in result.stderr
    assert "returned 1 score for 32 completions" in result.stderr
    assert tf.train.latest_checkpoint(str(run / "checkpoints" / "ppo")) is None
    _assert_nothing_published(run)


def test_a_nan_reward_stops_the_run_and_the_last_good_checkpoint_stays_the_latest(tmp_path):
    run, result = _run_lm(tmp_path, "nan_from_third_batch")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "tests.lm_rewards:nan_from_third_batch" in result.stderr and "nan" in result.stderr
    assert tf.train.latest_checkpoint(str(run / "checkpoints" / "ppo")).endswith("ckpt-2")
    _assert_nothing_published(run)


def test_an_environment_returning_nan_stops_the_run_at_that_step(tmp_path):
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "env": {"id": "tests.nan_env:NaNRewardCartPole-v0"},
            "train": {"total_env_steps": 4096, "checkpoint_every": 4},
        },
    )
    run = tmp_path / "run"
    result = run_driver("run", cfg, "--run-dir", run)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "NaNRewardCartPole-v0" in result.stderr and "reward" in result.stderr and "nan" in result.stderr
    # 4 environments x 32 steps per iteration; the rewards turn NaN at step 201, in iteration 7.
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-512")
    _assert_nothing_published(run)


def test_a_learner_whose_numbers_overflow_stops_before_saving_them(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", {"train": {"learning_rate": 1e30, "checkpoint_every": 100}})
    run = tmp_path / "run"
    result = run_driver("run", cfg, "--run-dir", run)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "non-finite" in result.stderr and "train" in result.stderr
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) is None
    _assert_nothing_published(run)


def test_an_sft_model_whose_outputs_overflow_is_not_saved(tmp_path):
    """A learning rate far too high leaves finite weights whose forward pass is not: the SFT checkpoint, which every
    re-run would restore instead of training, is not written."""
    cfg = lm_config(tmp_path)
    run = tmp_path / "run"
    result = run_driver("run", cfg, "--run-dir", run, "--set", "sft.epochs=1", "--set", "sft.learning_rate=1e30")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "sft: non-finite" in result.stderr
    assert tf.train.latest_checkpoint(str(run / "checkpoints" / "sft")) is None
    _assert_nothing_published(run)


# === A resume that cannot fit the checkpoint is a config error, before any work ===


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _event_files(run):
    return sorted(str(p) for p in (run / "tb").rglob("events.*"))


def test_lm_resume_changes_that_cannot_fit_the_checkpoint_exit_2_before_any_work(lm_run, tmp_path):
    run = _copy(lm_run, tmp_path)
    before = _event_files(run)
    for change, key in (
        ("ppo.max_new_tokens=200", "ppo.max_new_tokens"),
        ("ppo.value_model=separate", "ppo.value_model"),
    ):
        result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", change)
        assert result.returncode == 2, (change, result.stderr[-3000:])
        assert key in result.stderr, result.stderr[-3000:]
    assert _event_files(run) == before, "a refused resume must not run a stage"


def test_gym_resume_with_another_observation_normaliser_setting_exits_2(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    before = _event_files(run)
    result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", "train.normalize_observations=false")
    assert result.returncode == 2 and "train.normalize_observations" in result.stderr, result.stderr[-3000:]
    assert _event_files(run) == before
