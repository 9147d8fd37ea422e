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
from tests.conftest import REPO, lm_config, run_driver
from tests.export.test_export_roundtrip import assert_clean_layout, read_models_config

MODEL = "cartpole_v1"


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
        f"ckpt-{p.pid}" for p in together
    }

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


def test_a_gym_schedule_publishes_keeps_back_a_worse_night_publishes_a_warm_started_one_and_prunes(tmp_path):
    base = tmp_path / "serving"
    nightly = [
        "--set",
        f"export.base_dir={base}",
        "--set",
        "export.bless_tolerance=50",
        "--set",
        "evaluate.episodes=5",
        "--set",
        "export.keep_versions=1",
    ]
    good = run_driver(
        "run",
        REPO / "configs" / "cartpole.yaml",
        "--run-dir",
        tmp_path / "night1",
        *nightly,
        "--set",
        "train.stop_at_return=150",
        "--set",
        "train.total_env_steps=150000",
    )
    assert good.returncode == 0, good.stderr[-3000:]
    night1 = json.loads((tmp_path / "night1" / "metrics.json").read_text())
    assert night1["bless.blessed"] and night1["bless.baseline"] is None and night1["export.version"] == 1
    assert (tmp_path / "night1" / "candidate" / "BLESSED").exists()
    # Night 2 hardly trains: scored on the same episodes as the served version, it falls short and is kept back.
    worse = run_driver(
        "run",
        REPO / "configs" / "cartpole.yaml",
        "--run-dir",
        tmp_path / "night2",
        *nightly,
        "--set",
        "train.total_env_steps=1024",
        "--set",
        "train.rollout_steps=64",
    )
    assert worse.returncode == 3, worse.stderr[-3000:]
    assert "not published:" in worse.stdout and "< the served version's" in worse.stdout
    night2 = json.loads((tmp_path / "night2" / "metrics.json").read_text())
    assert night2["export.published"] is False and night2["bless.baseline"] >= 100 > night2["bless.candidate"]
    marker = json.loads((tmp_path / "night2" / "candidate" / "NOT_BLESSED").read_text())
    assert marker["candidate"] == night2["bless.candidate"] and marker["blessed"] is False
    assert tf_serving.versions(base / MODEL) == [1]  # the base still serves night 1's
    assert (
        run_driver(
            "run",
            REPO / "configs" / "cartpole.yaml",
            "--run-dir",
            tmp_path / "night2",
            *nightly,
            "--set",
            "train.total_env_steps=1024",
            "--set",
            "train.rollout_steps=64",
        ).returncode
        == 3
    )
    assert tf_serving.versions(base / MODEL) == [1]  # and a re-run decides the same
    # Night 3 trains as little as night 2 (gently: a fine-tuning learning rate), but warm-started from the served
    # version: blessed, published.
    warm = run_driver(
        "run",
        REPO / "configs" / "cartpole.yaml",
        "--run-dir",
        tmp_path / "night3",
        *nightly,
        "--set",
        "train.total_env_steps=1024",
        "--set",
        "train.rollout_steps=64",
        "--set",
        "train.learning_rate=1e-5",
        "--set",
        f"train.warm_start={base / MODEL}",
    )
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert f"warm start from {tmp_path / 'night1' / 'checkpoints'}" in warm.stderr
    night3 = json.loads((tmp_path / "night3" / "metrics.json").read_text())
    assert night3["bless.blessed"] and Path(night3["export.path"]) == base / MODEL / "2"
    assert tf_serving.versions(base / MODEL) == [2]  # keep_versions 1: version 1 pruned
    assert tf_serving.export_info(base / MODEL / "2")["run"] == str((tmp_path / "night3").resolve())
    assert read_models_config(base) == {MODEL: (base / MODEL).resolve()}
    assert not (tmp_path / "night3" / "export").exists()
    assert_clean_layout(base)
    # `status` on the base and on a night's run directory, for people and for scripts.
    listed = json.loads(run_driver("status", base, "--json").stdout)
    assert [v["version"] for v in listed["models"][MODEL]] == [2] and listed["publishing"] is None
    assert listed["models"][MODEL][0]["eval"]["eval.mean_return"] == night3["eval.mean_return"]
    assert "TF Serving serves 2" in run_driver("status", base).stdout
    text = run_driver("status", tmp_path / "night3").stdout
    assert "not running; stages done: train, evaluate, export" in text and "progress: 1,024 of 1,024" in text
    assert f"published: {MODEL} version 2 at {base / MODEL / '2'}" in text
    # Re-running night 1 (finished, its version pruned) must not publish its older model as the newest.
    again = run_driver(
        "run",
        REPO / "configs" / "cartpole.yaml",
        "--run-dir",
        tmp_path / "night1",
        *nightly,
        "--set",
        "train.stop_at_return=150",
        "--set",
        "train.total_env_steps=150000",
    )
    assert again.returncode == 0 and "published checkpoint" in again.stderr, again.stderr[-3000:]
    assert tf_serving.versions(base / MODEL) == [2]
    # A warm start from a run with other networks is refused before any work.
    other = run_driver(
        "check",
        REPO / "configs" / "cartpole.yaml",
        "--set",
        f"train.warm_start={base / MODEL}",
        "--set",
        "model.actor_layers=[32]",
    )
    assert other.returncode == 2 and "train.warm_start: model is" in other.stderr, other.stderr[-2000:]


def test_an_lm_schedule_publishes_keeps_back_a_worse_night_and_publishes_a_warm_started_one(lm_run, tmp_path):
    """Three nights of PPO from one SFT preset into one base, blessed on reward.function through the exports."""
    base = tmp_path / "base"
    config = lm_config(tmp_path, iterations=30)
    nightly = [
        "--set",
        f"model.checkpoint={lm_run / 'preset'}",
        "--set",
        "sft.epochs=0",
        "--set",
        f"export.base_dir={base}",
        "--set",
        "export.bless_tolerance=0.1",
        "--set",
        "export.keep_versions=1",
    ]
    night1 = run_driver("run", config, "--run-dir", tmp_path / "night1", *nightly)
    assert night1.returncode == 0, night1.stderr[-3000:]
    assert tf_serving.versions(base / "lm_policy") == [1]
    # Night 2 does not train at all: the SFT model, scored on the same prompts and seed, falls short.
    night2 = run_driver("run", config, "--run-dir", tmp_path / "night2", *nightly, "--set", "ppo.iterations=0")
    assert night2.returncode == 3, night2.stderr[-3000:]
    scores = json.loads((tmp_path / "night2" / "metrics.json").read_text())
    assert (
        scores["bless.candidate"] < scores["bless.baseline"] - 0.1
        and (tmp_path / "night2" / "candidate" / "NOT_BLESSED").exists()
    )
    assert tf_serving.versions(base / "lm_policy") == [1]
    # Night 3 trains two iterations from the served version's PPO policy: blessed; retention keeps it alone.
    night3 = run_driver(
        "run",
        config,
        "--run-dir",
        tmp_path / "night3",
        *nightly,
        "--set",
        "ppo.iterations=2",
        "--set",
        f"ppo.warm_start={base / 'lm_policy'}",
    )
    assert night3.returncode == 0, night3.stderr[-3000:]
    assert f"ppo: warm start from {(tmp_path / 'night1' / 'checkpoints' / 'ppo').resolve()}" in night3.stderr
    assert tf_serving.versions(base / "lm_policy") == [2]
    assert read_models_config(base) == {"lm_policy": (base / "lm_policy").resolve()}
    other = run_driver(
        "check", config, *nightly, "--set", f"ppo.warm_start={base / 'lm_policy'}", "--set", "model.lora_rank=4"
    )
    assert other.returncode == 2 and "ppo.warm_start: model is" in other.stderr, other.stderr[-2000:]
