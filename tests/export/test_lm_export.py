"""The LM export, asked the way TF Serving would ask it: prompt strings in, completions out, with only stock ops.

A fresh process that cannot import the project loads the SavedModel with XLA disabled through the Session
loader, and answers REST-style requests. Its greedy completions, prompts of different lengths in one batch,
must be greedy decodes of the policy restored in this process, up to near-ties (tests/greedy.py: the export and
this process run other kernels, so an exact token-for-token match is not a property of a correct export).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.export.fresh_process import serve
from tests.greedy import near_greedy_path_exists

PROMPTS = ["the cat", "my friend likes", "a", "the bird finds the", ""]
MODEL_NAME, VERSION = "lm_policy", 1


@pytest.fixture(scope="module")
def version_dir(lm_run) -> Path:
    return lm_run / "export" / MODEL_NAME / str(VERSION)


@pytest.fixture(scope="module")
def in_process(lm_run):
    """The run's PPO policy and tokenizer, restored in this process from its latest checkpoint."""
    import tensorflow as tf

    from models import lm as lm_lib
    from pipeline.core.rundir import RunDir
    from pipeline.lm.rewards import load_reward_function
    from pipeline.lm.stages import data as lm_data
    from pipeline.lm.stages import ppo as lm_ppo
    from pipeline.lm.stages import sft

    run = RunDir(lm_run)
    cfg = run.load_config()
    data = lm_data.run(cfg, run)
    learner, _ = lm_ppo.run(
        cfg, run, data, sft.run(cfg, run, data)[0], load_reward_function(cfg.reward.function), train=False
    )
    completions = []
    for prompt in PROMPTS:
        ids = [int(t) for t in data.tokenizer(prompt)] or [data.eos_id]
        sequence = lm_lib.sample(
            learner.policy,
            tf.constant([ids], tf.int32),
            cfg.ppo.max_new_tokens,
            0.0,
            tf.constant([0, 0], tf.int64),
            eos_id=data.eos_id,
        ).numpy()
        completions.append(data.decode(sequence[:, len(ids) :])[0])
    text_ids = [int(t) for t in data.tokenizer(PROMPTS[1])]
    logits, _ = lm_lib.forward(learner.policy, tf.constant([text_ids]))
    log_probs = lm_lib.token_log_probs(logits[:, :-1], tf.constant([text_ids[1:]])).numpy()[0]

    def writes_greedily(prompt: str, text: str) -> bool:
        ids = [int(t) for t in data.tokenizer(prompt)] or [data.eos_id]
        next_logits = lambda seq: lm_lib.forward(learner.policy, tf.constant([seq]))[0][0, -1].numpy()  # noqa: E731
        return near_greedy_path_exists(
            next_logits, ids, text, lambda t: data.decode([t])[0] if t else "", data.eos_id, cfg.ppo.max_new_tokens
        )

    return {
        "completions": completions,
        "text_ids": text_ids,
        "log_probs": log_probs,
        "writes_greedily": writes_greedily,
    }


@pytest.fixture(scope="module")
def served(version_dir, tmp_path_factory):
    """One fresh serving process answers every request these tests make."""
    sampled = {"prompts": PROMPTS * 4, "seed": 7, "max_new_tokens": 3}
    report, answers = serve(
        version_dir,
        [
            # max_new_tokens and seed left out: TF Serving fills them from the SignatureDef's defaults.
            {"inputs": {"prompts": PROMPTS, "temperature": 0.0}},
            {"inputs": sampled},
            {"inputs": sampled},
            {"inputs": {**sampled, "seed": 8}},
            {"signature_name": "log_probs", "inputs": {"texts": [PROMPTS[1], "a"]}},
        ],
        tmp_path_factory.mktemp("served"),
    )
    return {"report": report, "greedy": answers[0], "sampled": answers[1:4], "log_probs": answers[4]}


def test_loaded_like_tf_serving_with_stock_ops_only(served):
    report = served["report"]
    assert not any(report["project_importable"].values()), report["project_importable"]
    assert report["xla_disabled"]
    assert set(report["signatures"]) - {"__saved_model_init_op"} == {"serving_default", "log_probs"}
    signature = report["signature_defs"]["serving_default"]
    assert signature["inputs"] == ["max_new_tokens", "prompts", "seed", "temperature"]
    assert signature["defaults"] == ["max_new_tokens", "seed", "temperature"]  # all but prompts are optional
    assert signature["output_dtypes"] == {"completions": "string"}
    xla_ops = [op for op in report["op_types"] if op.startswith("Xla")]
    assert not xla_ops, f"the graph needs XLA ops, which TF Serving refuses by default: {xla_ops}"


def test_served_greedy_completions_are_greedy_decodes_of_the_policy(served, in_process):
    for prompt, completion in zip(PROMPTS, served["greedy"]["completions"]):
        assert in_process["writes_greedily"](prompt, str(completion)), (prompt, completion)
    assert any(in_process["completions"])  # not all empty: the comparison means something
    # The check can fail: another completion, or the right one with a token dropped, is not a greedy decode.
    completion = next(str(c) for c in served["greedy"]["completions"] if len(c) > 2)
    prompt = PROMPTS[list(served["greedy"]["completions"]).index(completion)]
    assert not in_process["writes_greedily"](prompt, completion[:-2] + completion[-1])
    assert not in_process["writes_greedily"](prompt, " a tree.")


def test_the_python_api_loads_the_export_of_a_run_directory(lm_run, in_process):
    import pipeline

    policy = pipeline.load_policy(lm_run)  # the run directory's latest export, loaded as a server loads it
    completions = policy(PROMPTS, temperature=0.0)
    assert len(completions) == len(PROMPTS) and policy(PROMPTS[1], temperature=0.0) == completions[1]
    for prompt, completion in zip(PROMPTS, completions):
        assert in_process["writes_greedily"](prompt, completion), (prompt, completion)
    short = policy(PROMPTS, max_new_tokens=1, seed=3, temperature=1.0)
    assert all(len(c) <= max(len(x) for x in completions) for c in short)


def test_sampling_follows_the_seed_and_max_new_tokens(served, in_process):
    first, again, other = (list(answer["completions"]) for answer in served["sampled"])
    assert first == again and first != other
    assert len(first) == 4 * len(PROMPTS)


def test_served_log_probs_equal_the_policy(served, in_process):
    outputs = served["log_probs"]
    n = len(in_process["text_ids"])
    assert outputs["lengths"].tolist() == [n, 1]
    assert outputs["token_ids"][0, :n].tolist() == in_process["text_ids"]
    np.testing.assert_allclose(outputs["log_probs"][0, 1:n], in_process["log_probs"], rtol=1e-5, atol=1e-5)
    assert outputs["log_probs"][0, 0] == 0.0 and not outputs["log_probs"][1].any()


def test_saved_model_cli_shows_both_signatures(version_dir, tmp_path):
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--dir", str(version_dir), "--all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    serving = result.stdout.split("signature_def['serving_default']", 1)[1]
    assert re.search(r"inputs\['prompts'\] tensor_info:\s+dtype: DT_STRING\s+shape: \(-1\)", serving), serving
    assert re.search(r"outputs\['completions'\] tensor_info:\s+dtype: DT_STRING", serving), serving
    assert "signature_def['log_probs']" in result.stdout


def test_models_config_and_export_record(lm_run):
    import json

    metrics = json.loads((lm_run / "metrics.json").read_text())
    assert metrics["export.model_name"] == MODEL_NAME and metrics["export.version"] == VERSION
    assert f'name: "{MODEL_NAME}"' in (lm_run / "export" / "models.config").read_text()
