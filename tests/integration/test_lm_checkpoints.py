"""`model.checkpoint`: a run starts from a checkpoint directory, with its tokenizer and its start-token convention,
through the driver, to a served export. The checkpoints are written here: another run's SFT preset (keras-hub's
layout), and a tiny Llama 3 (rotary positions, grouped-query attention, a start token) in Hugging Face's layout."""

from __future__ import annotations

import json

import pytest

from pipeline.core.tb_reader import texts
from tests.conftest import lm_config, run_driver
from tests.export.fresh_process import serve
from tests.presets import write_huggingface, write_llama3_preset


def test_a_run_starts_from_another_runs_sft_preset_with_a_prompt_file(lm_run, tmp_path):
    preset = lm_run / "preset"  # the SFT stage writes it
    run = tmp_path / "run"
    # Prompts of 1 to 9 words (TRL's {"prompt": ...} rows); those over data.prompt_tokens tokens are left out.
    words = "the cat sees the moon and a dog likes some bread".split()
    prompts = [" ".join(words[: 1 + i % 9]) for i in range(60)]
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": t, "id": i}) + "\n" for i, t in enumerate(prompts))
    )
    result = run_driver(
        "run",
        lm_config(tmp_path, iterations=3),
        "--run-dir",
        run,
        "--set",
        f"model.checkpoint={preset}",
        "--set",
        "sft.epochs=0",
        "--set",
        f"data.prompts={tmp_path / 'prompts.jsonl'}",
        "--set",
        "data.prompt_tokens=6",
        "--set",
        "ppo.sample_every=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, before = (json.loads((r / "metrics.json").read_text()) for r in (run, lm_run))
    # The loaded model is the other run's SFT model: same tokenizer, same held-out text, same perplexity.
    assert metrics["sft.val_perplexity_init"] == pytest.approx(before["sft.val_perplexity"], rel=1e-5)
    assert not (run / "tokenizer").exists()  # the checkpoint's own tokenizer, none trained
    assert metrics["export.version"] == 1 and metrics["ppo.iterations"] == 3
    # PPO and evaluation prompted with the file's prompts, of several lengths, the long ones left out.
    corpus = texts(run / "tb" / "data")["data/corpus"]
    assert "prompts left out (empty, or over data.prompt_tokens) | " in corpus and "| 0 |" not in corpus
    shown = {row.split("|")[1].strip() for row in texts(run / "tb" / "ppo")["samples"].splitlines()[2:]}
    assert shown <= set(prompts) and len({len(t.split()) for t in shown}) > 1
    for row in texts(run / "tb" / "evaluate")["eval/samples"].splitlines()[2:]:
        assert row.split("|")[1].strip() in prompts
    missing = run_driver("check", lm_config(tmp_path), "--set", f"data.prompts={tmp_path / 'none.jsonl'}")
    assert missing.returncode == 2 and "data.prompts: " in missing.stderr and "is not a file" in missing.stderr


def test_a_hugging_face_llama_trains_and_serves_with_its_tokenizer_and_start_token(tmp_path):
    cfg = lm_config(tmp_path, iterations=4)  # writes the corpus
    preset = write_llama3_preset(tmp_path / "llama", (tmp_path / "corpus.txt").read_text().splitlines())
    checkpoint = write_huggingface(preset, tmp_path / "llama-hf")  # config.json, model.safetensors, tokenizer.json
    run = tmp_path / "run"
    result = run_driver(
        "run", cfg, "--run-dir", run, "--set", f"model.checkpoint={checkpoint}", "--set", "sft.epochs=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["sft.val_perplexity"] < metrics["sft.val_perplexity_init"] / 2  # SFT trained the loaded model
    assert json.loads((run / "preset" / "preprocessor.json").read_text())["config"]["add_start_token"]
    report, (greedy, scored) = serve(
        run / "export" / "lm_policy" / "1",
        [
            {"inputs": {"prompts": ["the cat", ""], "temperature": 0.0}},
            {"signature_name": "log_probs", "inputs": {"texts": ["the cat sees"]}},
        ],
        tmp_path,
    )
    assert not [op for op in report["op_types"] if op.startswith("Xla")]
    assert greedy["completions"].shape == (2,)
    vocabulary = json.loads((tmp_path / "llama-vocabulary" / "vocab.json").read_text())
    assert scored["token_ids"][0, 0] == vocabulary["<|begin_of_text|>"]  # the start token, added in the graph
    assert scored["lengths"][0] >= 3

    # LoRA on the checkpoint as it is, its adapters started from a PEFT adapter folder (written here by
    # models.peft: its names and shapes are tested in tests/unit/test_peft_layout.py, transformers + PEFT load it
    # in benchmarks/hf_parity.py --lora-rank); the run writes its own in PEFT's layout.
    from models import checkpoints, lora, peft

    adapters = lora.Adapters(rank=2, alpha=2.0, targets=("query", "value"))
    info = checkpoints.inspect(checkpoint)
    source = checkpoints.load_causal_lm(info)
    lora.enable(source, adapters)
    peft.save(source, adapters, info.family, tmp_path / "start", base_model=str(checkpoint))
    lora_run = ["--set", f"model.checkpoint={checkpoint}", "--set", "sft.epochs=0", "--set", "model.lora_rank=2"]
    warm = run_driver(
        "run",
        cfg,
        "--run-dir",
        tmp_path / "lora",
        *lora_run,
        "--set",
        "ppo.iterations=2",
        "--set",
        f"ppo.warm_start={tmp_path / 'start'}",
    )
    assert warm.returncode == 0 and "warm start from the PEFT adapters" in warm.stderr, warm.stderr[-3000:]
    config = json.loads((tmp_path / "lora" / "peft_adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(checkpoint) and sorted(config["target_modules"]) == [
        "q_proj",
        "v_proj",
    ]


def test_lora_ppo_keeps_its_adapters_apart_resumes_them_and_serves_them_merged(lm_run, tmp_path):
    import numpy as np
    import tensorflow as tf

    from models import lm as lm_lib
    from models import lora
    from pipeline.core.rundir import RunDir
    from pipeline.lm.rewards import load_reward_function
    from pipeline.lm.stages import data as lm_data
    from pipeline.lm.stages import ppo as lm_ppo
    from pipeline.lm.stages import sft

    cfg, run = lm_config(tmp_path, iterations=3, learning_rate=0.01), tmp_path / "run"
    options = ["--set", f"model.checkpoint={lm_run / 'preset'}", "--set", "sft.epochs=0", "--set", "model.lora_rank=4"]
    wrong = run_driver("check", cfg, *options, "--set", "model.lora_targets=[query, feedforward_gate_dense]")
    assert wrong.returncode == 2 and "model.lora_targets: GPT-2 has no feedforward_gate_dense" in wrong.stderr
    result = run_driver("run", cfg, "--run-dir", run, *options)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run / "checkpoints" / "sft").exists()  # the base stays in the preset: no copy of it in the run
    saved = [name for name, _ in tf.train.list_variables(lm_ppo.latest_checkpoint(RunDir(run)))]
    assert [n for n in saved if n.startswith("policy/")] and all(
        "lora_" in n.rsplit(".S", 1)[-1] for n in saved if n.startswith("policy/")
    )
    again = run_driver("run", cfg, "--run-dir", run, *options, "--set", "ppo.iterations=6")
    assert again.returncode == 0 and "resumed from" in again.stderr, again.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["ppo.iterations"] == 6 and metrics["export.version"] == 2

    # The served (merged) policy answers as the adapted policy restored here, which is not the base.
    run_dir = RunDir(run)
    config = run_dir.load_config()
    data = lm_data.run(config, run_dir)
    learner, _ = lm_ppo.run(
        config,
        run_dir,
        data,
        sft.run(config, run_dir, data)[0],
        load_reward_function(config.reward.function),
        train=False,
    )
    text = "the cat sees the moon"
    ids = tf.constant([[int(t) for t in data.tokenizer(text)]])

    def log_probs():
        return lm_lib.token_log_probs(lm_lib.forward(learner.policy, ids)[0][:, :-1], ids[:, 1:]).numpy()[0]

    adapted = log_probs()
    with lora.adapters_off(learner.policy):
        assert np.abs(log_probs() - adapted).max() > 1e-3
    _, (served,) = serve(
        run / "export" / "lm_policy" / "2", [{"signature_name": "log_probs", "inputs": {"texts": [text]}}], tmp_path
    )
    np.testing.assert_allclose(served["log_probs"][0, 1 : ids.shape[1]], adapted, rtol=1e-4, atol=1e-4)
