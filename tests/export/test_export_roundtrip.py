"""The export round trip: what TF Serving would load answers like the trained policy, and is published safely.

tensorflow_model_server is not installable here, so the load test copies how it loads a model
(../shared/STACK.md, "How TF Serving will load an export"): a fresh process that can import only TensorFlow
and TensorFlow Text, with XLA compilation disabled, loading through the TF1 Session loader (the C++
SavedModelBundle path) and calling `serving_default` by its tensor names. Python's `tf.saved_model.load`
is not enough: a SavedModel can load there and still fail in the Session loader, or need XLA at request time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from export import tf_serving
from tests.conftest import run_driver
from tests.export.fresh_process import serve

MODEL_NAME = "cartpole_v1"
VERSION = 1
OUTPUTS = ("action", "value", "logits")
N_OBSERVATIONS = 64
TOLERANCE = 1e-5


# === Helpers ===


def _model_server_config_class():
    """ModelServerConfig from tensorflow_serving/config/model_server_config.proto, the fields we write.

    tensorflow-serving-api is not installed; text_format.Parse on this subset rejects what the server's
    TextFormat parser would reject (syntax errors, unknown fields).
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="model_server_config_subset.proto", package="tensorflow.serving", syntax="proto3"
    )
    string, repeated, message = (
        descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    )
    model_config = file.message_type.add(name="ModelConfig")
    for number, name in ((1, "name"), (2, "base_path"), (4, "model_platform")):
        model_config.field.add(name=name, number=number, type=string)
    config_list = file.message_type.add(name="ModelConfigList")
    config_list.field.add(
        name="config", number=1, type=message, label=repeated, type_name=".tensorflow.serving.ModelConfig"
    )
    server_config = file.message_type.add(name="ModelServerConfig")
    server_config.field.add(
        name="model_config_list", number=1, type=message, type_name=".tensorflow.serving.ModelConfigList"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig"))


ModelServerConfig = _model_server_config_class()


def read_models_config(export_root: Path) -> dict[str, Path]:
    """models.config parsed as TF Serving parses it: {model name: base_path}, checking each entry."""
    parsed = text_format.Parse((export_root / "models.config").read_text(), ModelServerConfig())
    entries = {}
    for entry in parsed.model_config_list.config:
        assert entry.model_platform == "tensorflow", entry
        assert os.path.isabs(entry.base_path), f"TF Serving wants an absolute base_path: {entry.base_path}"
        assert entry.name not in entries, f"duplicate model name {entry.name}"
        entries[entry.name] = Path(entry.base_path)
    return entries


def assert_clean_layout(export_root: Path) -> None:
    """What a server polling the model folder may see: integer version folders only, no staging leftovers."""
    model_dir = export_root / MODEL_NAME
    for child in model_dir.iterdir():
        assert child.is_dir() and re.fullmatch(r"[0-9]+", child.name), f"a server would see {child}"
    staging = export_root / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), f"staging leftovers: {list(staging.iterdir())}"
    assert not list(export_root.glob(".models.config.tmp*")), "a half-written models.config was left"


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A private copy: the stages write TensorBoard events and exports into the run directory they get."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# === Fixtures ===


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    """Observations from a seeded random-action CartPole-v1 rollout, several episodes long."""
    env = gym.make("CartPole-v1")
    env.action_space.seed(123)
    obs, _ = env.reset(seed=123)
    batch = []
    while len(batch) < N_OBSERVATIONS:
        batch.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.asarray(batch, dtype=np.float32)


@pytest.fixture(scope="module")
def served(tiny_run, observations, tmp_path_factory) -> dict:
    """The export's answers, from a fresh process loading it the way TF Serving does."""
    work = tmp_path_factory.mktemp("served")
    report, (outputs,) = serve(
        tiny_run / "export" / MODEL_NAME / str(VERSION),
        [{"signature_name": "serving_default", "inputs": {"observations": observations.tolist()}}],
        work,
    )
    return {"report": report, **outputs}


@pytest.fixture(scope="module")
def in_process(tiny_run, observations, tmp_path_factory) -> dict:
    """The same answers from the learner restored in this process from the run's latest checkpoint."""
    import tensorflow as tf

    from pipeline.core.rundir import RunDir
    from pipeline.gym.stages import environment, model

    run = RunDir(copy_run(tiny_run, tmp_path_factory.mktemp("in_process")))
    cfg = run.load_config()
    learner = model.run(cfg, run, environment.run(cfg, run))
    obs = tf.constant(observations)
    return {
        "action": learner.greedy(obs).numpy(),
        "value": learner.value(obs).numpy(),
        "logits": learner.distribution(obs).logits_parameter().numpy(),
        "checkpoints": sorted(p.name for p in run.checkpoints.glob("*.index")),
    }


# === 1. Loaded as TF Serving loads it, it answers like the policy ===


def test_loaded_like_tf_serving(served):
    report = served["report"]
    assert not any(report["project_importable"].values()), report["project_importable"]
    assert report["xla_disabled"], "DisableXlaCompilation() through ctypes did not take effect"
    # __saved_model_init_op is the init op every TF2 SavedModel carries; clients call serving_default only.
    assert set(report["signatures"]) - {"__saved_model_init_op"} == {"serving_default"}, report["signatures"]
    signature = report["signature_defs"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"] == ["observations"] and signature["defaults"] == []
    assert signature["outputs"] == sorted(OUTPUTS)
    assert signature["output_dtypes"]["action"] == "int64"
    xla_ops = [op for op in report["op_types"] if op.startswith("Xla")]
    assert not xla_ops, f"the graph needs XLA ops, which TF Serving refuses by default: {xla_ops}"
    assert served["action"].shape == (N_OBSERVATIONS,) and served["action"].dtype == np.int64
    assert served["value"].shape == (N_OBSERVATIONS,)
    assert served["logits"].shape == (N_OBSERVATIONS, 2)


def test_served_greedy_actions_are_the_policys(served, in_process):
    # The export and this process run other kernels: at a near-tie of the two logits the argmax may differ, and
    # nowhere else (the logits themselves agree to TOLERANCE, below).
    differ = served["action"] != in_process["action"]
    margins = np.abs(in_process["logits"][:, 0] - in_process["logits"][:, 1])
    assert (margins[differ] <= 2 * TOLERANCE).all(), margins[differ]
    assert differ.mean() < 0.1 and len(set(in_process["action"].tolist())) == 2  # both actions occur
    # Greedy is the argmax of the served logits: the outputs agree with one another (one graph, one kernel).
    np.testing.assert_array_equal(served["action"], served["logits"].argmax(-1))


def test_served_values_and_logits_equal_the_policy(served, in_process):
    np.testing.assert_allclose(served["value"], in_process["value"], rtol=TOLERANCE, atol=TOLERANCE)
    np.testing.assert_allclose(served["logits"], in_process["logits"], rtol=TOLERANCE, atol=TOLERANCE)


def test_export_comes_from_the_latest_checkpoint(tiny_run, in_process):
    info = tf_serving.export_info(tiny_run / "export" / MODEL_NAME / str(VERSION))
    assert in_process["checkpoints"], "the run has no checkpoint"
    latest = max(in_process["checkpoints"], key=lambda name: int(re.search(r"(\d+)\.index$", name)[1]))
    assert info["checkpoint"] + ".index" == latest


# === 2. saved_model_cli, TensorFlow's own inspector, reads it ===


def test_saved_model_cli_shows_the_signature(tiny_run, tmp_path):
    cli = Path(sys.executable).parent / "saved_model_cli"
    result = subprocess.run(
        [str(cli), "show", "--dir", str(tiny_run / "export" / MODEL_NAME / str(VERSION)), "--all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert "signature_def['serving_default']" in out, out
    section = out.split("signature_def['serving_default']", 1)[1]
    assert re.search(r"inputs\['observations'\] tensor_info:\s+dtype: DT_FLOAT\s+shape: \(-1, 4\)", section), out
    assert re.search(r"outputs\['action'\] tensor_info:\s+dtype: DT_INT64", section), out
    for output in OUTPUTS:
        assert f"outputs['{output}']" in section, out


# === 3. The layout a server polls ===


def test_export_layout(tiny_run):
    export_root = tiny_run / "export"
    model_dir = export_root / MODEL_NAME
    assert read_models_config(export_root) == {MODEL_NAME: model_dir.resolve()}
    assert tf_serving.versions(model_dir) == [VERSION]
    assert_clean_layout(export_root)
    version_dir = model_dir / str(VERSION)
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables" / "variables.index").is_file()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert Path(metrics["export.path"]) == version_dir
    assert metrics["export.version"] == VERSION and metrics["export.model_name"] == MODEL_NAME
    assert Path(metrics["export.models_config"]) == export_root / "models.config"


# === 4. Publishing is atomic ===


def test_publish_that_fails_midway_leaves_nothing(tmp_path):
    def write_then_fail(path):
        os.makedirs(path)
        Path(path, "saved_model.pb").write_bytes(b"half a model")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError, match="killed while writing"):
        tf_serving.publish(tmp_path, MODEL_NAME, VERSION, write_then_fail, {"checkpoint": "ckpt-1"})
    assert not (tmp_path / MODEL_NAME / str(VERSION)).exists()
    assert tf_serving.versions(tmp_path / MODEL_NAME) == []
    staging = tmp_path / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())


def test_publish_writes_a_version_once(tmp_path):
    def write(path):
        os.makedirs(path)
        Path(path, "saved_model.pb").write_bytes(b"model")

    final = tf_serving.publish(tmp_path, MODEL_NAME, VERSION, write, {"checkpoint": "ckpt-1"})
    assert final == tmp_path / MODEL_NAME / str(VERSION)
    assert (final / "saved_model.pb").read_bytes() == b"model"
    assert tf_serving.export_info(final) == {"checkpoint": "ckpt-1"}
    assert read_models_config(tmp_path) == {MODEL_NAME: (tmp_path / MODEL_NAME).resolve()}
    assert_clean_layout(tmp_path)

    def must_not_run(path):
        raise AssertionError("publish wrote over an existing version")

    with pytest.raises(FileExistsError):
        tf_serving.publish(tmp_path, MODEL_NAME, VERSION, must_not_run, {"checkpoint": "ckpt-2"})
    assert (final / "saved_model.pb").read_bytes() == b"model"
    assert tf_serving.export_info(final) == {"checkpoint": "ckpt-1"}


# === 5. Re-exporting the same checkpoint is a no-op ===


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reexported(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    """`python -m pipeline export` run again on a copy of the finished run; returns it and its version files
    from before."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("reexport"))
    before = _files(run / "export" / MODEL_NAME / str(VERSION))
    result = run_driver("export", run)
    assert result.returncode == 0, result.stderr[-5000:]
    return run, before


def test_reexport_of_the_same_checkpoint_adds_no_version(reexported):
    run, before = reexported
    version_dir = run / "export" / MODEL_NAME / str(VERSION)
    assert tf_serving.versions(run / "export" / MODEL_NAME) == [VERSION]
    assert _files(version_dir) == before, "the existing version was rewritten"
    assert_clean_layout(run / "export")
    metrics = json.loads((run / "metrics.json").read_text())
    assert Path(metrics["export.path"]) == version_dir
    (base_path,) = read_models_config(run / "export").values()  # still parses, one absolute entry...
    assert base_path.name == MODEL_NAME and tf_serving.versions(base_path) == [VERSION]  # ...that a server can load


def test_reexport_points_models_config_at_this_run_directory(reexported):
    run, _ = reexported
    assert read_models_config(run / "export") == {MODEL_NAME: (run / "export" / MODEL_NAME).resolve()}
