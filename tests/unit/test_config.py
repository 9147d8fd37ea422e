"""Config validation: every bad key or value fails before any work, naming the key and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from pipeline.core import config
from pipeline.gym.config import GymConfig
from pipeline.lm.config import LMConfig
from tests.conftest import REPO, run_driver


def load_yaml(tmp_path, text: str, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return config.load(path, list(overrides))


def test_defaults_are_ppo_usual_not_ppoclipagent():
    t = GymConfig().train
    assert (t.clip_ratio, t.gae_lambda, t.gamma, t.num_epochs) == (0.2, 0.95, 0.99, 10)
    assert t.num_minibatches > 1 and t.max_grad_norm == 0.5


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = config.load(REPO / "configs" / name)
    assert cfg.task in ("gym", "lm")
    assert (cfg.train.total_env_steps if cfg.task == "gym" else cfg.ppo.iterations) > 0
    if cfg.task == "gym":  # what the driver checks before work: the environment can be made (LunarLander: Box2D
        from pipeline.gym.envs import check_environment  # and pygame, which gymnasium's box2d package imports)

        check_environment(cfg.env)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("train:\n  total_steps: 10\n", ["train.total_steps", "total_env_steps"]),
        ("trian:\n  total_env_steps: 10\n", ["trian", "train"]),
        ("train:\n  learning_rate: fast\n", ["train.learning_rate", "number"]),
        ("train:\n  num_epochs: 2.5\n", ["train.num_epochs", "integer"]),
        ("train:\n  num_epochs: true\n", ["train.num_epochs", "integer"]),
        ("train:\n  clip_ratio: 1.5\n", ["train.clip_ratio", "<= 1.0"]),
        ("train:\n  learning_rate: 0\n", ["train.learning_rate", "> 0.0"]),
        ("train:\n  lr_schedule: cosine\n", ["train.lr_schedule", "constant, linear"]),
        ("model:\n  activation: swish\n", ["model.activation", "tanh"]),
        ("model:\n  actor_layers: [64, 0]\n", ["model.actor_layers", ">= 1"]),
        ("model:\n  actor_layers: 64\n", ["model.actor_layers", "list of integers"]),
        ("env:\n  num_envs: 0\n", ["env.num_envs", ">= 1"]),
        (
            "env:\n  num_envs: 3\ntrain:\n  rollout_steps: 5\n  num_minibatches: 4\n",
            ["train.num_minibatches", "divisors of 15"],
        ),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("task: lm\nreward:\n  kind: oracle\n", ["reward.kind", "scorer, learned"]),
        ("task: lm\nreward:\n  preferences: p.jsonl\n", ["reward.preferences", "reward.kind: learned"]),
        ("task: lm\nmodel:\n  lora_targets: [query, q_proj]\n", ["model.lora_targets", "'q_proj'", "attention_output"]),
        ("task: lm\nmodel:\n  lora_targets: query\n", ["model.lora_targets", "list of names"]),
        ("task: lm\nmodel:\n  lora_rank: 4\n  lora_targets: []\n", ["model.lora_targets", "empty", "query"]),
        ("task: lm\nmodel:\n  lora_rank: 0\n", ["model.lora_rank", ">= 1"]),
    ],
)
def test_bad_values_name_the_key_and_the_allowed(tmp_path, text, expected):
    with pytest.raises(config.ConfigError) as err:
        load_yaml(tmp_path, text)
    for fragment in expected:
        assert fragment in str(err.value)


def test_overrides_are_typed_like_yaml(tmp_path):
    cfg = load_yaml(
        tmp_path,
        "train:\n  total_env_steps: 10\n",
        [
            "train.total_env_steps=200000",
            "train.max_grad_norm=null",
            "model.actor_layers=[8, 8]",
            "train.learning_rate=1e-3",
        ],
    )
    assert cfg.train.total_env_steps == 200000 and cfg.train.max_grad_norm is None
    assert cfg.model.actor_layers == [8, 8] and cfg.train.learning_rate == pytest.approx(1e-3)
    for bad, fragment in [
        ("train.nope=1", "train.nope"),
        ("train.num_epochs=x", "integer"),
        ("total_env_steps=5", "section.key"),
        ("train.num_epochs", "key.path=value"),
    ]:
        with pytest.raises(config.ConfigError, match=fragment):
            load_yaml(tmp_path, "{}\n", [bad])


def test_renamed_keys_name_their_new_names_and_old_run_directories_resume_with_the_same_maths(tmp_path):
    with pytest.raises(config.ConfigError, match=r"ppo.kl_target is now ppo.adaptive_kl_target"):
        load_yaml(tmp_path, "task: lm\nppo:\n  kl_target: 6.0\n")
    # A run directory's config.yaml from before the renames: every key written, old names, value_coef for a
    # value loss with a 1/2, and the model's positions derived (prompt 8 + 100 new tokens).
    old = LMConfig().to_dict()
    old["ppo"].update(
        {"max_new_tokens": 100, "value_coef": 0.1, "kl_target": 6.0, "kl_horizon": 5000.0, "clip_value": 0.3}
    )
    for key in ("adaptive_kl_target", "adaptive_kl_horizon", "value_clip"):
        del old["ppo"][key]
    del old["model"]["max_sequence_length"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = config.load(path, run_directory=True)
    assert (cfg.ppo.adaptive_kl_target, cfg.ppo.adaptive_kl_horizon, cfg.ppo.value_clip) == (6.0, 5000.0, 0.3)
    assert cfg.ppo.value_coef == pytest.approx(0.05) and cfg.model.max_sequence_length == 108
    with pytest.raises(config.ConfigError, match="ppo.clip_value is now ppo.value_clip"):
        config.load(path)  # as a user's config, it names the rename


def test_resolved_config_round_trips(tmp_path):
    cfg = load_yaml(tmp_path, "train:\n  total_env_steps: 77\n")
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml(cfg))
    assert config.load(path) == cfg
    assert set(yaml.safe_load(path.read_text())) == {
        "task",
        "env",
        "model",
        "train",
        "evaluate",
        "export",
        "distribute",
    }


def test_driver_exits_2_before_any_work(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  clip_ratio: -1\n")
    result = run_driver("run", bad, "--run-dir", tmp_path / "run")
    assert result.returncode == 2
    assert "train.clip_ratio" in result.stderr and ">" in result.stderr
    assert not (tmp_path / "run").exists(), "a config error must not leave a run directory behind"
    result = run_driver(
        "run", REPO / "configs" / "cartpole.yaml", "--run-dir", tmp_path / "run", "--set", "train.num_epochs=zero"
    )
    assert result.returncode == 2 and "train.num_epochs" in result.stderr
    result = run_driver("run", tmp_path / "missing.yaml")
    assert result.returncode == 2 and "missing.yaml" in result.stderr
    assert run_driver("frobnicate").returncode == 2  # usage error


def test_unknown_environment_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("env:\n  id: NoSuchEnv-v0\n")
    result = run_driver("run", cfg, "--run-dir", tmp_path / "run")
    assert result.returncode == 2 and "env.id" in result.stderr and "NoSuchEnv-v0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_configuration_reference_is_the_one_the_code_generates():
    """docs/configuration.md is `python -m pipeline reference`'s output: regenerate it when a field changes."""
    written = (REPO / "docs" / "configuration.md").read_text()
    assert written == config.reference(), "docs/configuration.md is stale: python -m pipeline reference > it"
    for key in ("env.id", "train.clip_ratio", "ppo.kl_coef", "export.base_dir", "distribute.strategy"):
        assert f"`{key}`" in written


def test_names_and_paths_a_server_or_the_run_cannot_take_are_config_errors(tmp_path):
    """export.model_name becomes a folder under the serving base and a REST path segment: '../../escaped' wrote the
    SavedModel outside the export folder; '', 'a/b' and 'has space' were accepted. --run-dir naming a file ended in
    a FileExistsError traceback."""
    for name in ("../../escaped", "", "a/b", "has space", ".hidden", "-x"):
        with pytest.raises(config.ConfigError, match=r"export.model_name: .* is not allowed; allowed: letters"):
            config.from_dict({"export": {"model_name": name}})
    assert config.from_dict({"export": {"model_name": "cartpole_v1.b-2"}}).export.model_name == "cartpole_v1.b-2"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    result = run_driver("run", REPO / "configs" / "cartpole.yaml", "--run-dir", a_file)
    assert result.returncode == 2 and "a file is there" in result.stderr, result.stderr[-2000:]
    assert a_file.read_text() == "mine\n"


def test_validating_a_config_imports_neither_tensorflow_nor_keras():
    """A config error comes back in a fraction of a second: loading and checking every task's config must not pull
    in TensorFlow or Keras (models.lora's targets, which the LM config lists, once did)."""
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.core import config; "
        "[config.load(p) for p in sys.argv[1:]]; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules))"
    )
    configs = [str(REPO / "configs" / name) for name in ("cartpole.yaml", "lm_sentiment_lora.yaml")]
    result = subprocess.run([sys.executable, "-c", code, *configs], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
