"""`task: lm` end to end through the driver on a corpus the test writes: data -> sft -> (reward) -> ppo ->
evaluate, config errors, and a PPO run killed with SIGKILL, then stopped with SIGTERM, that resumes each time."""

from __future__ import annotations

import json
import signal

import pytest
import tensorflow as tf

from pipeline.core.tb_reader import accumulator, read_scalars, tags, texts
from tests.conftest import kill_after_checkpoint, lm_config, run_driver, signal_driver


def test_lm_pipeline_raises_the_reward_and_resumes(lm_run):
    run = lm_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sft.val_perplexity"] < metrics["sft.val_perplexity_init"] / 10
    assert metrics["eval.ppo.gold_reward"] > metrics["eval.sft.gold_reward"] + 0.2, metrics
    assert metrics["eval.ppo.kl"] > 0 and metrics["eval.ppo.mean_response_tokens"] > 1
    assert (run / "tokenizer" / "vocab.json").exists()
    # Peak memory after each stage: the process's peak so far, so it never goes down from stage to stage.
    peaks = [metrics[f"memory.{stage}.peak_rss_mib"] for stage in ("sft", "reward", "ppo", "evaluate", "export")]
    assert 100 < peaks[0] and peaks == sorted(peaks)
    ppo_tags = tags(run / "tb" / "ppo")
    for tag in (
        "objective/kl",
        "objective/kl_coef",
        "objective/entropy",
        "objective/scores",
        "objective/rlhf_reward",
        "objective/non_score_reward",
        "policy/approxkl",
        "policy/clipfrac",
        "loss/policy",
        "loss/value",
        "val/clipfrac",
        "val/ratio",
        "val/num_eos_tokens",
        "time/tokens_per_s",
    ):
        assert tag in ppo_tags, tag
    samples = texts(run / "tb" / "evaluate")["eval/samples"]
    assert samples.startswith("| prompt | SFT | PPO |") and samples.count("\n") >= 5
    # ppo.sample_every (10): the batch's first 8 prompts, responses and rewards at iterations 1, 11 and 21.
    assert [event.step for event in accumulator(run / "tb" / "ppo").Tensors("samples")] == [1, 11, 21]
    table = texts(run / "tb" / "ppo")["samples"].splitlines()
    assert table[0] == "| prompt | response | reward |" and len(table) == 2 + 8
    assert all(0.0 <= float(row.rsplit("|", 2)[1]) <= 1.0 for row in table[2:])  # mentions_moon: 0 or 1

    again = run_driver("run", run.parent / "lm.yaml", "--run-dir", run)  # safe to re-run: nothing is trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not training again" in again.stderr and "resumed from" in again.stderr
    assert json.loads((run / "metrics.json").read_text())["ppo.iterations"] == 30


def test_learned_reward_model_is_the_proxy_and_the_function_the_gold_reward(tmp_path):
    cfg = lm_config(
        tmp_path,
        reward={"kind": "learned", "pairs": 128, "validation_fraction": 0.25, "jit_compile": False},
        iterations=10,
    )
    run = tmp_path / "run"
    result = run_driver("run", cfg, "--run-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # Pairs: two SFT samples per prompt ranked by "mentions the moon", a separable preference.
    assert metrics["reward.pairs"] == 128 and metrics["reward.train_pairs"] + metrics["reward.held_out_pairs"] == 128
    assert metrics["reward.pair_accuracy"] >= 0.8, metrics
    for stage in ("sft", "ppo"):
        assert metrics[f"eval.{stage}.proxy_reward"] != metrics[f"eval.{stage}.gold_reward"]
    assert metrics["eval.ppo.proxy_reward"] > metrics["eval.sft.proxy_reward"]  # PPO raised what it maximised
    assert "reward/pair_accuracy" in tags(run / "tb" / "reward") and "reward/pairs" in texts(run / "tb" / "reward")
    assert {"objective/scores", "objective/gold_scores"} <= tags(run / "tb" / "ppo")
    built = run / "reward" / "preferences.jsonl"
    assert len(built.read_text().splitlines()) == 128

    checkpoint = (run / "checkpoints" / "reward" / "checkpoint").read_text()
    again = run_driver("run", cfg, "--run-dir", run)  # safe to re-run: the reward model is not trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reward: restored" in again.stderr and "reward: epoch" not in again.stderr
    assert (run / "checkpoints" / "reward" / "checkpoint").read_text() == checkpoint
    rerun = json.loads((run / "metrics.json").read_text())
    assert rerun["reward.pair_accuracy"] == metrics["reward.pair_accuracy"]
    # Same checkpoints and sampling seeds: the restored reward model (normalisation included) scores alike.
    for key in ("eval.sft.proxy_reward", "eval.ppo.proxy_reward"):
        assert rerun[key] == pytest.approx(metrics[key], abs=1e-5), key


def test_lm_config_errors(tmp_path):
    cfg = lm_config(tmp_path)
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "reward.function=tests.lm_rewards:nope")
    assert result.returncode == 2 and "reward.function" in result.stderr and "nope" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "ppo.kl_estimator=k2")
    assert result.returncode == 2 and "ppo.kl_estimator" in result.stderr and "k1, k3" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "ppo.num_minibatches=5")
    assert result.returncode == 2 and "ppo.num_minibatches" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "ppo.gradient_accumulation_steps=3")
    assert result.returncode == 2 and "ppo.gradient_accumulation_steps" in result.stderr and "32" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "model.precision=float16")
    assert result.returncode == 2 and "float32, mixed_bfloat16" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "ppo.top_p=0")
    assert result.returncode == 2 and "ppo.top_p" in result.stderr
    result = run_driver("run", cfg, "--run-dir", tmp_path / "r", "--set", "data.corpus=/no/such/corpus")
    assert result.returncode == 2 and "data.corpus" in result.stderr and "fortunes" in result.stderr
    result = run_driver(
        "run",
        cfg,
        "--run-dir",
        tmp_path / "r",
        "--set",
        "reward.kind=learned",
        "--set",
        "distribute.strategy=mirrored",
        "--set",
        "reward.batch_size=3",
    )
    assert result.returncode == 2 and "reward.batch_size: 3 pairs do not split evenly over 2" in result.stderr
    result = run_driver(
        "run",
        cfg,
        "--run-dir",
        tmp_path / "r",
        "--set",
        "distribute.strategy=mirrored",
        "--set",
        "distribute.cpu_replicas=3",
    )
    assert result.returncode == 2 and "sft.batch_size: 32 documents do not split evenly over 3" in result.stderr
    result = run_driver(
        "run",
        cfg,
        "--run-dir",
        tmp_path / "r",
        "--set",
        "distribute.strategy=mirrored",
        "--set",
        "ppo.num_minibatches=8",
        "--set",
        "ppo.gradient_accumulation_steps=4",
    )
    assert result.returncode == 2 and "ppo.num_minibatches: minibatches of 4 sequences" in result.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before any work
    bad = tmp_path / "prefs.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    result = run_driver(
        "run", cfg, "--run-dir", tmp_path / "r", "--set", "reward.kind=learned", "--set", f"reward.preferences={bad}"
    )
    assert result.returncode == 2 and "reward.preferences" in result.stderr
    assert "prefs.jsonl:1: missing key 'rejected'" in result.stderr


def test_lm_ppo_resumes_after_sigkill_and_after_sigterm(tmp_path):
    cfg, run = lm_config(tmp_path, iterations=60, checkpoint_every=5), tmp_path / "run"
    killed_at = kill_after_checkpoint(["run", cfg, "--run-dir", run], run / "checkpoints" / "ppo")
    saved = int(killed_at.rsplit("-", 1)[1])
    assert 0 < saved < 60

    # Resumed, then stopped by SIGTERM a few iterations on: it checkpoints wherever it stops.
    kl_steps = lambda: sum(len(f) for f in read_scalars(run / "tb" / "ppo", "objective/kl", per_file=True))  # noqa: E731
    logged = kl_steps()
    returncode, stderr = signal_driver(["run", cfg, "--run-dir", run], lambda: kl_steps() >= logged + 2, signal.SIGTERM)
    assert returncode == 143, stderr[-3000:]
    assert f"iteration {saved})" in stderr and "stopped by SIGTERM in ppo at iteration" in stderr
    stopped_at = int(tf.train.latest_checkpoint(str(run / "checkpoints" / "ppo")).rsplit("-", 1)[1])
    assert saved + 2 <= stopped_at < 60 and f"at iteration {stopped_at}," in stderr

    result = run_driver("run", cfg, "--run-dir", run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not training again" in result.stderr and f"iteration {stopped_at})" in result.stderr
    assert json.loads((run / "metrics.json").read_text())["ppo.iterations"] == 60
    first, second, third = read_scalars(run / "tb" / "ppo", "objective/kl", per_file=True)
    assert min(second) == saved + 1 and max(second) == stopped_at  # each curve continues, none restarts
    assert min(third) == stopped_at + 1 and max(third) == 60


def test_grpo_reads_answers_from_prompt_columns_and_evaluates_without_a_reference_in_training(tmp_path):
    """GRPO (beta 0: no reference, no value model) against a reward reading two columns of a prompt file: the
    object each subject should get (`answer`) and the prompt itself (`key`, checked against the prompt the
    function receives: any misalignment of columns and rows in the shuffle, the repeats or the split raises)."""
    subjects, verbs = ["the cat", "a dog", "my friend", "the bird"], ["sees", "likes", "finds"]
    answers = {"the cat": "the moon", "a dog": "the moon", "my friend": "a ball", "the bird": "a ball"}
    rows = [{"prompt": f"{s} {v}", "answer": answers[s], "key": f"{s} {v}"} for s in subjects for v in verbs] * 4
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = lm_config(
        tmp_path,
        reward={"function": "tests.lm_rewards:named_object"},
        algorithm="grpo",
        num_generations=4,
        iterations=20,
        learning_rate=0.003,
    )
    run, base = tmp_path / "run", tmp_path / "base"
    data = [
        "--set",
        f"data.prompts={tmp_path / 'prompts.jsonl'}",
        "--set",
        "data.prompt_tokens=4",
        "--set",
        "data.validation_fraction=0.25",
        "--set",
        f"export.base_dir={base}",
        "--set",
        "export.bless_tolerance=0.1",
    ]
    result = run_driver("run", cfg, "--run-dir", run, *data)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["eval.ppo.gold_reward"] > metrics["eval.sft.gold_reward"] + 0.1, metrics
    assert metrics["eval.ppo.kl"] > 0  # the SFT model rebuilt for evaluation: none was held while training
    ppo_tags = tags(run / "tb" / "ppo")
    for tag in (
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "rewards/named_object/mean",
        "rewards/named_object/std",
        "entropy",
        "clip_ratio/region_mean",
        "completions/mean_length",
        "completions/clipped_ratio",
        "loss/policy",
    ):
        assert tag in ppo_tags, tag
    assert not {"loss/value", "objective/kl", "kl"} & ppo_tags  # no value model, no reference
    assert (base / "lm_policy" / "1" / "saved_model.pb").is_file()

    # A warm start from the served version, blessed against it: both exports scored by the reward function on the
    # held-out prompts with their columns (a misaligned column raises, exit 1).
    night = tmp_path / "night2"
    warm = run_driver(
        "run",
        cfg,
        "--run-dir",
        night,
        *data,
        "--set",
        "ppo.iterations=2",
        "--set",
        f"ppo.warm_start={base / 'lm_policy'}",
    )
    assert warm.returncode in (0, 3) and "warm start from" in warm.stderr, warm.stderr[-3000:]
    scores = json.loads((night / "metrics.json").read_text())
    assert 0.0 <= scores["bless.baseline"] <= 1.0 and 0.0 <= scores["bless.candidate"] <= 1.0
