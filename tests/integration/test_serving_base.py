"""One TF Serving model base shared by runs (export.base_dir): versions rise across runs, retention prunes, a
re-run publishes nothing again; publishers that finish together or die mid-write leave only whole versions."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

from export import tf_serving
from tests.conftest import REPO, run_driver, write_config
from tests.export.test_export_roundtrip import assert_clean_layout, read_models_config

MODEL = "cartpole_v1"


def test_runs_publish_rising_versions_into_one_base_and_retention_prunes(tmp_path):
    base = tmp_path / "serving"
    config = write_config(tmp_path / "nightly.yaml", {"export": {"base_dir": str(base), "keep_versions": 1}})
    for night in ("night1", "night2"):
        result = run_driver("run", config, "--run-dir", tmp_path / night)
        assert result.returncode == 0, result.stderr[-3000:]
    night2 = json.loads((tmp_path / "night2" / "metrics.json").read_text())
    assert night2["export.version"] == 2 and Path(night2["export.path"]) == base / MODEL / "2"
    assert tf_serving.versions(base / MODEL) == [2]  # keep_versions 1: version 1 pruned
    assert tf_serving.export_info(base / MODEL / "2")["run"] == str((tmp_path / "night2").resolve())
    assert read_models_config(base) == {MODEL: (base / MODEL).resolve()}
    assert not (tmp_path / "night2" / "export").exists()
    assert_clean_layout(base)
    # `status` on the base and on a night's run directory, for people and for scripts.
    listed = json.loads(run_driver("status", base, "--json").stdout)
    assert [v["version"] for v in listed["models"][MODEL]] == [2] and listed["publishing"] is None
    assert listed["models"][MODEL][0]["eval"]["eval.mean_return"] == night2["eval.mean_return"]
    assert "TF Serving serves 2" in run_driver("status", base).stdout
    text = run_driver("status", tmp_path / "night2").stdout
    assert "not running; stages done: train, evaluate, export" in text and "progress: 1,024 of 1,024" in text
    assert f"published: {MODEL} version 2 at {base / MODEL / '2'}" in text
    # Re-running night 1 (finished, its version pruned) must not publish its older model as the newest.
    again = run_driver("run", config, "--run-dir", tmp_path / "night1")
    assert again.returncode == 0 and "published checkpoint" in again.stderr, again.stderr[-3000:]
    assert tf_serving.versions(base / MODEL) == [2]


def _publish_slowly(base: str, seconds: float, started) -> None:
    def write(path):
        os.makedirs(path)
        Path(path, "saved_model.pb").write_bytes(b"half")
        started.set()
        time.sleep(seconds)
        Path(path, "saved_model.pb").write_bytes(b"whole model")

    tf_serving.publish(Path(base), MODEL, None, write, {"checkpoint": f"ckpt-{os.getpid()}"})


def test_publishers_finishing_together_take_distinct_versions_and_a_killed_one_leaves_no_half(tmp_path):
    context = multiprocessing.get_context("fork")
    events = [context.Event() for _ in range(3)]
    together = [context.Process(target=_publish_slowly, args=(str(tmp_path), 0.5, events[i])) for i in range(2)]
    for process in together:
        process.start()
    for process in together:
        process.join(30)
        assert process.exitcode == 0
    assert tf_serving.versions(tmp_path / MODEL) == [1, 2]
    assert {tf_serving.export_info(tmp_path / MODEL / v)["checkpoint"] for v in ("1", "2")} == {
        f"ckpt-{p.pid}" for p in together}

    killed = context.Process(target=_publish_slowly, args=(str(tmp_path), 30, events[2]))
    killed.start()
    assert events[2].wait(30)  # half written, in staging
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(30)
    assert tf_serving.versions(tmp_path / MODEL) == [1, 2]  # nothing half-written where a server looks
    assert all((tmp_path / MODEL / v / "saved_model.pb").read_bytes() == b"whole model" for v in ("1", "2"))
    # The lock died with it: the next publisher gets version 3 and clears the dead one's staging folder.
    _publish_slowly(str(tmp_path), 0.0, context.Event())
    assert tf_serving.versions(tmp_path / MODEL) == [1, 2, 3]
    assert_clean_layout(tmp_path)


def test_a_worse_night_is_evaluated_against_the_served_version_and_not_published(tmp_path):
    base = tmp_path / "serving"
    nightly = ["--set", f"export.base_dir={base}", "--set", "export.bless_tolerance=50", "--set", "evaluate.episodes=5"]
    good = run_driver("run", REPO / "configs" / "cartpole.yaml", "--run-dir", tmp_path / "night1", *nightly,
                      "--set", "train.stop_at_return=150", "--set", "train.total_env_steps=150000")
    assert good.returncode == 0, good.stderr[-3000:]
    night1 = json.loads((tmp_path / "night1" / "metrics.json").read_text())
    assert night1["bless.blessed"] and night1["bless.baseline"] is None and night1["export.version"] == 1
    assert (tmp_path / "night1" / "candidate" / "BLESSED").exists()
    # Night 2 hardly trains: scored on the same episodes as the served version, it falls short and is kept back.
    worse = run_driver("run", REPO / "configs" / "cartpole.yaml", "--run-dir", tmp_path / "night2", *nightly,
                       "--set", "train.total_env_steps=512", "--set", "train.rollout_steps=64")
    assert worse.returncode == 3, worse.stderr[-3000:]
    assert "not published:" in worse.stdout and "< the served version's" in worse.stdout
    night2 = json.loads((tmp_path / "night2" / "metrics.json").read_text())
    assert night2["export.published"] is False and night2["bless.baseline"] >= 100 > night2["bless.candidate"]
    marker = json.loads((tmp_path / "night2" / "candidate" / "NOT_BLESSED").read_text())
    assert marker["candidate"] == night2["bless.candidate"] and marker["blessed"] is False
    assert tf_serving.versions(base / MODEL) == [1]  # the base still serves night 1's
    assert run_driver("run", REPO / "configs" / "cartpole.yaml", "--run-dir", tmp_path / "night2", *nightly,
                      "--set", "train.total_env_steps=512", "--set", "train.rollout_steps=64").returncode == 3
    assert tf_serving.versions(base / MODEL) == [1]  # and a re-run decides the same
    # Night 3 trains as little as night 2 (gently: a fine-tuning learning rate), but warm-started from the served
    # version: blessed, published.
    warm = run_driver("run", REPO / "configs" / "cartpole.yaml", "--run-dir", tmp_path / "night3", *nightly,
                      "--set", "train.total_env_steps=512", "--set", "train.rollout_steps=64",
                      "--set", "train.learning_rate=1e-5", "--set", f"train.warm_start={base / MODEL}")
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert f"warm start from {tmp_path / 'night1' / 'checkpoints'}" in warm.stderr
    assert json.loads((tmp_path / "night3" / "metrics.json").read_text())["bless.blessed"]
    assert tf_serving.versions(base / MODEL) == [1, 2]
    # A warm start from a run with other networks is refused before any work.
    other = run_driver("check", REPO / "configs" / "cartpole.yaml", "--set", f"train.warm_start={base / MODEL}",
                       "--set", "model.actor_layers=[32]")
    assert other.returncode == 2 and "train.warm_start: model is" in other.stderr, other.stderr[-2000:]


def test_an_lm_candidate_is_scored_by_its_reward_function_through_its_export(lm_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lm_run, run)
    # A floor above what the reward function can give (mentions_moon: 0 or 1): scored, then kept back.
    result = run_driver("run", run / "config.yaml", "--run-dir", run, "--set", f"export.base_dir={tmp_path / 'base'}",
                        "--set", "export.bless_floor=1.5")
    assert result.returncode == 3, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 < metrics["bless.candidate"] <= 1.0 and "below the floor 1.5" in metrics["bless.reason"]
    assert (run / "candidate" / "lm_policy" / "saved_model.pb").exists() and (run / "candidate" / "NOT_BLESSED").exists()
    assert not (tmp_path / "base" / "lm_policy").exists()


def test_an_lm_run_warm_starts_from_another_runs_ppo_policy(lm_run, tmp_path):
    """One PPO iteration from the finished run's PPO policy keeps what that run learned (from the SFT model, one
    iteration does not get there)."""
    before = json.loads((lm_run / "metrics.json").read_text())
    run = tmp_path / "run"
    result = run_driver("run", lm_run / "config.yaml", "--run-dir", run, "--set", f"ppo.warm_start={lm_run}",
                        "--set", "ppo.iterations=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ppo: warm start from {(lm_run / 'checkpoints' / 'ppo').resolve()}" in result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval.ppo.gold_reward"] > before["eval.sft.gold_reward"] + 0.15, (metrics, before)
    assert metrics["eval.ppo.kl"] > 1.0  # far from the reference already: the policy came from the other run
    other = run_driver("check", lm_run / "config.yaml", "--set", f"ppo.warm_start={lm_run}",
                       "--set", "model.hidden_dim=64")
    assert other.returncode == 2 and "ppo.warm_start: model is" in other.stderr, other.stderr[-2000:]
